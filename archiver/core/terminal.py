"""Output for people on stdout: tables as wide as the terminal, and a reader that goes away.

`stdout_console` is what every command prints its tables with: the terminal's
width on a terminal; wide lines when piped, so scripts get whole lines. When
the reader closes the pipe early (`status | head -3`), the write raises
`BrokenPipeError`, which the command line turns into a quiet exit 141, as
`cat` or `tar` end under SIGPIPE (`closed_pipe_exit`), instead of rich's own
exit 1.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # rich loads only when a table is printed (a pass does not need it)
    from rich.console import Console

# A pipe closed early: the exit status of a process killed by SIGPIPE (128 + 13).
EXIT_CLOSED_PIPE = 141
# Lines for scripts and files: no wrapping of what a terminal would wrap.
PIPED_WIDTH = 200


@functools.cache
def _pipe_aware_console() -> type[Console]:
    from rich.console import Console

    class PipeAwareConsole(Console):
        """A rich Console whose write to a closed pipe raises BrokenPipeError (rich exits 1)."""

        def on_broken_pipe(self) -> None:
            self.quiet = True
            raise BrokenPipeError

    return PipeAwareConsole


def stdout_console(*, width: int | None = None) -> Console:
    """A console on stdout: the terminal's width, or `PIPED_WIDTH` when piped."""
    console_type = _pipe_aware_console()
    console = console_type(highlight=False, width=width)
    if width is None and not console.is_terminal:
        console = console_type(highlight=False, width=PIPED_WIDTH)
    return console


def silence_closed_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush has nowhere to fail."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no real stdout to replace: nothing will flush there
        pass
