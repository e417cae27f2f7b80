"""The last lines of the current pass, for the failure ping's body and the status page."""

from __future__ import annotations

import collections
import logging


class _TailHandler(logging.Handler):
    """Keeps the last rendered (and redacted) lines, for the failure ping's body."""

    def __init__(self, lines: int) -> None:
        super().__init__()
        self.lines: collections.deque[str] = collections.deque(maxlen=lines)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:  # a line we cannot render is not worth failing the logger
            self.handleError(record)


# The last lines of the current pass; `clear_log_tail` starts a new pass's record.
TAIL_LINES = 50
TAIL = _TailHandler(TAIL_LINES)


def log_tail() -> list[str]:
    """The last lines logged since `clear_log_tail`, oldest first, already redacted."""
    return list(TAIL.lines)


def clear_log_tail() -> None:
    """Forget the recorded lines: a pass is starting."""
    TAIL.lines.clear()
