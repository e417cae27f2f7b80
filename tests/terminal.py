"""Run the CLI on a pseudo-terminal of a given size, as a person at an 80-column terminal."""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import re
import struct
import sys
import termios

from tests.conftest import REPO_ROOT, cli_env

_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[a-zA-Z]|\x1b\][^\x07]*\x07")


def plain(text: str) -> str:
    """The text without colours and cursor moves."""
    return _ESCAPES.sub("", text)


async def run_on_terminal(
    *args: str, columns: int = 80, rows: int = 40, timeout: float = 120
) -> tuple[int, str]:
    """`python -m archiver ARGS` with stdout and stderr on one terminal; (exit code, output)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    env = cli_env(TERM="xterm-256color", COLUMNS=str(columns), LINES=str(rows))
    env.pop("NO_COLOR", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "archiver", *args,
        stdin=slave, stdout=slave, stderr=slave, env=env, cwd=str(REPO_ROOT),
    )
    os.close(slave)
    output = bytearray()
    loop = asyncio.get_running_loop()

    def read_all() -> None:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer has closed the terminal
                return
            if not chunk:
                return
            output.extend(chunk)

    try:
        await asyncio.wait_for(loop.run_in_executor(None, read_all), timeout)
        code = await asyncio.wait_for(process.wait(), timeout)
    finally:
        os.close(master)
    return code, output.decode(errors="replace")
