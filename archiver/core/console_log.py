"""Log lines for a person at a terminal: one short line an event.

JSON lines carry every field, for machines. A person watching a pass wants one
line an event, short enough for 80 columns beside the progress bars: the time,
the event, what it is about (stack, db type, backup id), and the few facts
that matter, sizes in the units of the summary. The bulky fields (sha256,
location, the module that logged) stay in the JSON lines, and show here too
with -v.

    21:30:12 backup archived 5999b763474b0eafa5fafb64bff0ba80 mysql #4711 10.0 MiB
    21:30:12 error: could not archive stack-a #7: download answered HTTP 500
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from structlog.typing import EventDict, WrappedLogger

from archiver.core.units import human_bytes

# What an event is about, in this order: `stack-a mysql #7`.
_SUBJECT = ("stack_uid", "db_type", "backup_id")
# A field that says it all, written after a colon: `pass finished: archived 3, ...`.
_HEADLINES = ("summary", "reason", "error", "problem")
# Facts for machines and -v: kept in the JSON lines, left off a person's line.
_DETAILS = frozenset({"logger", "sha256", "location", "database_name", "files", "ok"})
# Byte counts, written as the summary writes them.
_SIZES = frozenset({"size", "bytes"})

_RESET = "\x1b[0m"
_STYLES = {
    "time": "\x1b[2m",
    "event": "\x1b[1m",
    "debug": "\x1b[34m",
    "warning": "\x1b[33m",
    "error": "\x1b[1;31m",
    "critical": "\x1b[1;31m",
    "key": "\x1b[36m",
}


class HumanRenderer:
    """A structlog renderer: `HH:MM:SS [level: ]event subject[: headline] key=value ...`."""

    def __init__(self, *, colors: bool, verbose: bool) -> None:
        self._colors = colors
        self._verbose = verbose

    def __call__(self, _logger: WrappedLogger, _method: str, event_dict: EventDict) -> str:
        fields = dict(event_dict)
        exception = fields.pop("exception", None)
        stack = fields.pop("stack", None)
        line = " ".join(
            part
            for part in (
                self._paint("time", _clock(fields.pop("timestamp", None))),
                self._level(str(fields.pop("level", "info"))) + self._event(fields),
                _subject(fields),
            )
            if part
        )
        line += _headline(fields)
        rest = self._rest(fields)
        line += f" {rest}" if rest else ""
        for block in (stack, exception):
            if block:
                line += "\n" + str(block)
        return line

    def _event(self, fields: dict[str, Any]) -> str:
        return self._paint("event", str(fields.pop("event", "")))

    def _level(self, level: str) -> str:
        """Nothing for info (most lines); `warning: ` and the like otherwise."""
        if level == "info":
            return ""
        return self._paint(level, f"{level}:") + " "

    def _rest(self, fields: dict[str, Any]) -> str:
        shown = []
        for key in sorted(fields):
            if key in _DETAILS and not self._verbose:
                continue
            value = fields[key]
            if key in _SIZES and isinstance(value, int):
                value = human_bytes(value)
                if key == "size":  # the size of what the subject names: no label needed
                    shown.append(value)
                    continue
            shown.append(f"{self._paint('key', key)}={value}")
        return " ".join(shown)

    def _paint(self, style: str, text: str) -> str:
        if not self._colors or not text:
            return text
        return f"{_STYLES.get(style, '')}{text}{_RESET}"


def _clock(timestamp: object) -> str:
    """`21:30:12` in local time, from the ISO UTC timestamp every event carries."""
    if not isinstance(timestamp, str):
        return ""
    try:
        moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return timestamp
    return moment.astimezone().strftime("%H:%M:%S")


def _subject(fields: dict[str, Any]) -> str:
    """`stack-a mysql #7` from whichever of stack_uid, db_type and backup_id the event has."""
    parts = []
    for key in _SUBJECT:
        value = fields.pop(key, None)
        if value is None:
            continue
        parts.append(f"#{value}" if key == "backup_id" else str(value))
    return " ".join(parts)


def _headline(fields: dict[str, Any]) -> str:
    for key in _HEADLINES:
        value = fields.pop(key, None)
        if value is not None:
            return f": {value}"
    return ""
