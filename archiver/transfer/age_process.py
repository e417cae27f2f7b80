"""Encryption by the `age` binary in a child process, fed and drained by threads.

pyrage holds the GIL while it encrypts, so on two cores the event loop could not
receive while it worked: encrypted backups went at half the plaintext speed.
The `age` CLI (the reference Go implementation) encrypts in a process of its
own instead. Plaintext goes to its stdin from the thread that already hashes
each chunk (`write`, blocking); a reader thread takes the ciphertext from its
stdout, hashes it and hands it on (`deliver`) in order. The event loop only
starts and ends the process. The pipes (1 MiB where the system allows it) are
all that is buffered: when storage is slow, `deliver` blocks, age stops
reading, `write` blocks, and the download stops (back-pressure).

What age writes is an age v1 file exactly as `age -r ... < backup.tar` makes
it. To abandon a stream the process is killed (SIGKILL) before its stdin is
closed, so it never writes the final chunk of a valid-looking but truncated
file; a kill -9 of this process closes the stdin from under age, which then
finds its stdout closed too and dies without anything reaching storage. age
runs in a process group of its own, so a terminal's Ctrl-C reaches only the
archiver, which stops as it always does (systemd units use KillMode=mixed for
the same reason). Every
process started is waited for (no zombie): at the end of the stream, after a
failure, or when killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Sequence
from typing import IO

from archiver.core.errors import ArchiverError, ConfigError

Piece = bytes | bytearray | memoryview
Deliver = Callable[[memoryview], None]

# F_SETPIPE_SZ: bigger pipes mean 16x fewer reads and writes (and wake-ups) per GiB.
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_PIPE_SIZE = 1024 * 1024
_READ_SIZE = 1024 * 1024
_STDERR_KEPT = 2000
# After a broken pipe, how long to wait for age to exit and say why.
_EXIT_WAIT_SECONDS = 10.0


class AgeProcessFailed(ArchiverError):
    """The age process failed or was stopped: nothing it wrote is usable (permanent)."""


def encrypt_command(binary: str, recipients: Sequence[str]) -> list[str]:
    """`age --encrypt -r R1 -r R2 ...`: plaintext on stdin, age v1 on stdout."""
    command = [binary, "--encrypt"]
    for recipient in recipients:
        command += ["--recipient", recipient]
    return command


def works(binary: str, recipients: Sequence[str]) -> str | None:
    """Encrypt nothing to `recipients` once; None when that worked, else why not."""
    try:
        done = subprocess.run(
            encrypt_command(binary, recipients), input=b"", capture_output=True, timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as error:
        return f"{binary} cannot run ({error})"
    if done.returncode != 0 or not done.stdout.startswith(b"age-encryption.org/v1\n"):
        why = done.stderr.decode(errors="replace").strip()[-_STDERR_KEPT:]
        return f"{binary} failed (exit {done.returncode}): {why or 'no output'}"
    return None


def choose_binary(engine: str, recipients: Sequence[str]) -> tuple[str | None, str]:
    """The age binary to encrypt with (None: pyrage), and a line saying why, for logs.

    "pyrage": never the binary. "auto": the `age` on PATH if it encrypts to `recipients`
    (tried once on empty input), else None. "age": the same, but a binary that is
    missing or fails is a ConfigError.
    """
    if engine == "pyrage":
        return None, "pyrage ([encryption] engine = \"pyrage\")"
    binary = shutil.which("age")
    problem = works(binary, recipients) if binary else "no age binary on PATH"
    if problem is None:
        return binary, f"age ({binary})"
    if engine == "age":
        raise ConfigError(f"[encryption] engine = \"age\": {problem}")
    return None, f"pyrage ({problem}; install age to encrypt about twice as fast)"


def _pipes(process: subprocess.Popen[bytes]) -> tuple[IO[bytes], IO[bytes], IO[bytes]]:
    stdin, stdout, stderr = process.stdin, process.stdout, process.stderr
    if stdin is None or stdout is None or stderr is None:
        raise AssertionError("age was started without its three pipes")
    return stdin, stdout, stderr


def _enlarge(descriptor: int) -> None:
    with contextlib.suppress(OSError):  # a lower /proc/sys/fs/pipe-max-size: keep the default
        fcntl.fcntl(descriptor, _F_SETPIPE_SZ, _PIPE_SIZE)


class AgeProcess:
    """One `age --encrypt` child: `write` plaintext (a worker thread), `finish` on the loop.

    `deliver` runs on the reader thread with each piece of ciphertext, in order; the
    view is reused once it returns (copy it to keep it).
    """

    def __init__(self, binary: str, recipients: Sequence[str], deliver: Deliver) -> None:
        self._loop = asyncio.get_running_loop()
        self._deliver = deliver
        self._process = subprocess.Popen(
            encrypt_command(binary, recipients),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            bufsize=0, close_fds=True,
            # Its own process group: a Ctrl-C meant for the archiver (which then lets
            # transfers finish within the grace period) must not kill the encryptor.
            process_group=0,
        )
        self._stdin, self._stdout, self._stderr_pipe = _pipes(self._process)
        for pipe in (self._stdin, self._stdout):
            _enlarge(pipe.fileno())
        self._stderr = b""
        self._killed = False
        self._failure: BaseException | None = None
        # Held while writing, and to close stdin: a descriptor closed under a write could
        # be reused by another file before the next one (plaintext in the wrong place).
        self._stdin_lock = threading.Lock()
        self._stdin_closed = False
        self._reaped = threading.Event()
        self._ended: asyncio.Future[None] = self._loop.create_future()
        self._threads = [
            threading.Thread(target=self._read_stdout, name="c66-age-out", daemon=True),
            threading.Thread(target=self._read_stderr, name="c66-age-err", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self._process.pid

    # -- worker threads ----------------------------------------------------------------------

    def write(self, pieces: Sequence[Piece]) -> None:
        """Hand plaintext to age (blocking while its pipe is full). Never the loop's thread."""
        views = [memoryview(piece) for piece in pieces if len(piece)]
        with self._stdin_lock:
            if self._stdin_closed:
                raise self._failed_while_writing("its input is closed")
            try:
                while views:
                    written = os.writev(self._stdin.fileno(), views)
                    while views and written >= len(views[0]):
                        written -= len(views[0])
                        views.pop(0)
                    if views and written:
                        views[0] = views[0][written:]
            except OSError as error:  # EPIPE: age is gone
                raise self._failed_while_writing(error.strerror or str(error)) from None

    def _failed_while_writing(self, why: str) -> BaseException:
        """What a write that could not go on raises: the cause, once age has ended."""
        self._reaped.wait(_EXIT_WAIT_SECONDS)
        if self._failure is not None:
            return self._failure  # storage refused the ciphertext: that is the cause
        if self._killed:
            return AgeProcessFailed("the encryption was stopped")
        return AgeProcessFailed(self._why(f"age stopped taking data ({why}), "
                                          f"{_exit_status(self._process.returncode)}"))

    def _read_stdout(self) -> None:
        """The reader thread: ciphertext to `deliver` until age closes its stdout."""
        descriptor, buffer = self._stdout.fileno(), bytearray(_READ_SIZE)
        view = memoryview(buffer)
        try:
            while count := os.readv(descriptor, [buffer]):
                self._deliver(view[:count])
        except BaseException as error:  # raised by `finish` (or the next `write`)
            self._failure = error
            self._kill()
        self._process.wait()  # reaped whatever happened
        self._threads[1].join()
        self._close_stdin()
        self._stdout.close()
        self._stderr_pipe.close()
        self._reaped.set()
        self._loop.call_soon_threadsafe(self._end)

    def _read_stderr(self) -> None:
        while chunk := self._stderr_pipe.read(4096):
            self._stderr = (self._stderr + chunk)[-_STDERR_KEPT:]

    # -- on the loop -------------------------------------------------------------------------

    def _end(self) -> None:
        if not self._ended.done():
            self._ended.set_result(None)

    async def finish(self) -> None:
        """End the plaintext; return once every byte of ciphertext was delivered and age
        exited. Raises AgeProcessFailed naming why when it did not end well."""
        self._close_stdin()
        await asyncio.shield(self._ended)
        if self._failure is not None:
            raise self._failure
        code = self._process.returncode
        if self._killed or code != 0:
            raise AgeProcessFailed(self._why(f"age ended ({_exit_status(code)})"))

    def kill(self) -> None:
        """Stop age without letting it end the stream: SIGKILL, never an end of input.

        Returns at once; the reader thread reaps the process and closes the pipes.
        """
        self._kill()

    def _kill(self) -> None:
        self._killed = True
        with contextlib.suppress(ProcessLookupError):
            self._process.kill()

    def _close_stdin(self) -> None:
        with self._stdin_lock:
            self._stdin_closed = True
            with contextlib.suppress(OSError):
                self._stdin.close()

    def _why(self, what: str) -> str:
        said = self._stderr.decode(errors="replace").strip().replace("\n", " ")
        return f"age encryption failed: {what}" + (f": {said}" if said else "")


def _exit_status(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        return f"killed by signal {-code}"
    return f"exit code {code}"
