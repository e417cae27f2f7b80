"""Encryption at rest in the age v1 format, through pyrage (the Rust `rage`), streamed.

What is stored is exactly what `age -r ... < backup.tar > backup.tar.age` would
give, so the standard `age -d -i KEY` decrypts it with no help from this
program. Recipients are age X25519 public keys (`age1...`) and OpenSSH
ed25519/RSA public keys, as `age -r` and `age -R` take them; identities are
age X25519 secret keys (`AGE-SECRET-KEY-1...`) or unencrypted OpenSSH private
keys, as `age -i` takes them.

pyrage's streaming functions pull from a reader and push to a writer, so each
stream runs in a worker thread of its own fed chunk by chunk from the event
loop (`AgeStream`, its reader an `archiver.core.fed_reader.FedReader`): constant
memory whatever the size. pyrage holds the GIL while it works, which costs the
loop a few milliseconds now and then, not a stall. An aborted encryption makes
the reader raise rather than end, so pyrage never writes a valid-looking but
truncated file.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from archiver.config.keys import Identity, Recipient
from archiver.core.fed_reader import ABORT, END, FedReader
from archiver.core.lazy_import import lazy_module

# Loaded on first use: a run without [encryption] or a key never pays for pyrage.
pyrage = lazy_module("pyrage")

FORMAT = "age-v1"

# pyrage raises one DecryptError type for every failure; only rage's message tells a
# wrong key from damaged data. Pinned: tests/test_encryption.py checks it against the
# installed pyrage, so a rewording fails there, not as a damaged-backup report.
NO_MATCHING_KEYS = "No matching keys"


class WrongIdentity(Exception):
    """None of the identities can open the file (it was encrypted to other keys)."""


class CorruptCiphertext(Exception):
    """The encrypted data is damaged or truncated: age's authentication failed."""


class EncryptionFailed(Exception):
    """pyrage could not encrypt (or the stream was aborted); nothing it wrote is usable."""


class _Writer:
    """The file-like sink pyrage writes to: output collected for the event loop."""

    def __init__(self, stream: AgeStream) -> None:
        self._stream = stream

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:
        self._stream.produced(bytes(data))
        return len(data)

    def flush(self) -> None:
        """Nothing buffered here."""


class AgeStream:
    """One encryption or decryption: `feed` chunks in order, then `finish`.

    Each `feed` returns the output that became ready, so the caller writes it on
    while the worker goes on with the chunk just fed (one chunk ahead: pyrage holds
    the GIL while it works, so the loop's own work is done while it waits on the
    previous chunk, not after). Memory stays two or three chunks. `observe`, when
    given, sees every output piece in order on the worker thread (a hash there
    costs the loop nothing: hashlib lets go of the GIL).
    """

    def __init__(
        self,
        work: Callable[[FedReader, _Writer], None],
        observe: Callable[[bytes], None] | None = None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self.inbox: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._observe = observe
        self._output: list[bytes] = []
        self._output_lock = threading.Lock()
        self._taken: asyncio.Future[None] | None = None
        self._done: asyncio.Future[BaseException | None] = self._loop.create_future()
        thread = threading.Thread(target=self._run, args=(work,), daemon=True, name="c66-age")
        thread.start()

    @classmethod
    def encrypting(
        cls, recipients: Sequence[Recipient], observe: Callable[[bytes], None] | None = None
    ) -> AgeStream:
        """Plaintext in, age v1 out; `observe` sees the ciphertext."""
        chosen = list(recipients)
        return cls(lambda reader, writer: pyrage.encrypt_io(reader, writer, chosen), observe)

    @classmethod
    def decrypting(cls, identities: Sequence[Identity]) -> AgeStream:
        """age v1 in, plaintext out."""
        chosen = list(identities)
        return cls(lambda reader, writer: pyrage.decrypt_io(reader, writer, chosen))

    # -- called from the worker thread ---------------------------------------------------

    def _run(self, work: Callable[[FedReader, _Writer], None]) -> None:
        outcome: BaseException | None = None
        try:
            # Before it blocks, the reader says all fed so far is taken: the loop may go on.
            work(FedReader(self.inbox, before_waiting=self.consumed), _Writer(self))
        except BaseException as error:  # handed to the loop, raised there
            outcome = error
        self._loop.call_soon_threadsafe(self._finished, outcome)

    def consumed(self) -> None:
        self._loop.call_soon_threadsafe(self._wake)

    def produced(self, data: bytes) -> None:
        if self._observe is not None:
            self._observe(data)
        with self._output_lock:
            self._output.append(data)

    # -- on the loop -----------------------------------------------------------------------

    def _wake(self) -> None:
        if self._taken is not None and not self._taken.done():
            self._taken.set_result(None)

    def _finished(self, outcome: BaseException | None) -> None:
        self._wake()
        if not self._done.done():
            self._done.set_result(outcome)

    def _take_output(self) -> bytes:
        with self._output_lock:
            output, self._output = self._output, []
        return b"".join(output)

    async def feed(self, chunk: bytes) -> bytes:
        """Hand over the next chunk; return the output made ready so far (maybe empty).

        Waits until the worker has taken the chunk fed before, not this one: `chunk`
        is copied, as the caller may reuse its buffer once this returns.
        """
        if not chunk:
            return b""
        await self._previous_taken()
        self._taken = self._loop.create_future()
        self.inbox.put(bytes(chunk))
        return self._take_output()

    async def _previous_taken(self) -> None:
        if self._taken is not None:
            waiting: set[asyncio.Future[Any]] = {self._taken, self._done}
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if self._done.done():
            self._raise(self._done.result())

    async def finish(self) -> bytes:
        """End the input; return the rest of the output. Raises what went wrong, named."""
        self.inbox.put(END)
        self._raise(await self._done)
        return self._take_output()

    def abort(self) -> None:
        """Stop the worker without producing a valid end (the output is to be thrown away)."""
        self.inbox.put(ABORT)

    @staticmethod
    def _raise(outcome: BaseException | None) -> None:
        if outcome is None:
            return
        if isinstance(outcome, pyrage.DecryptError) and NO_MATCHING_KEYS in str(outcome):
            raise WrongIdentity("none of the identities can decrypt it") from None
        if isinstance(outcome, pyrage.EncryptError):
            raise EncryptionFailed(f"age encryption failed ({outcome})") from None
        if isinstance(outcome, (pyrage.DecryptError, OSError)):
            raise CorruptCiphertext(f"the encrypted data is damaged ({outcome})") from None
        raise outcome


@dataclass(frozen=True)
class AgeEncryption:
    """Whom backups are encrypted to, and by what: the `age` binary when there is one that
    works (`archiver.transfer.age_process`), else pyrage in this process (`AgeStream`)."""

    recipients: tuple[Recipient, ...]  # parsed, for pyrage
    recipient_texts: tuple[str, ...]  # as configured, for `age --recipient`
    age_binary: str | None = None


@dataclass(frozen=True)
class EncryptionInfo:
    """The manifest's `encryption`: the format and the public recipients (never a secret)."""

    format: str
    recipients: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {"format": self.format, "recipients": list(self.recipients)}
