"""How sizes and durations are written for people (`11.3 MiB`, `1h02m`) and read from them
(`"16MiB"`, `"1h30m"`)."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta

_BYTE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def human_bytes(count: int) -> str:
    """`512 B`, `11.3 MiB`, `2.0 TiB`: binary units, one decimal."""
    value = float(count)
    for unit in _BYTE_UNITS:
        if value < 1024 or unit == _BYTE_UNITS[-1]:
            return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} B"  # unreachable: the last unit always returns


def human_duration(delta: timedelta) -> str:
    """`1h02m`, `5m03s`, `12s`: short and exact enough for an operator."""
    seconds = max(0, int(delta.total_seconds()))
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{seconds:02d}s"
    return f"{seconds}s"


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: object) -> timedelta:
    """Parse "90s", "5m", "1h30m", "1d" or a number of seconds into a timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("expected a duration like '30s', '5m' or '1h'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and value.strip():
        text = value.strip().replace(" ", "")
        if _DURATION_PART.sub("", text):
            raise ValueError(f"{value!r} is not a duration like '30s', '5m', '1h30m'")
        seconds = sum(
            float(number) * _UNIT_SECONDS[unit] for number, unit in _DURATION_PART.findall(text)
        )
    else:
        raise ValueError("expected a duration like '30s', '5m' or '1h'")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return timedelta(seconds=seconds)


_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]iB|B)?", re.IGNORECASE)
_UNIT_BYTES = {"b": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}


def parse_byte_size(value: object, *, per_second: bool = False) -> int:
    """A byte count (an integer) or a string with a binary unit: `16MiB`, `1.5 GiB`, `"0"`.

    Decimal units (`MB`) and bare letters (`M`) are refused rather than guessed at:
    `50M` means MiB to rclone and MB to others. With `per_second`, a trailing `/s`
    is allowed (`50MiB/s`).
    """
    if isinstance(value, bool):
        raise ValueError("expected a size like 16777216 or \"16MiB\"")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    if not isinstance(value, str):
        raise ValueError("expected a size like 16777216 or \"16MiB\"")
    text = value.strip()
    if per_second:
        text = text.removesuffix("/s").strip()
    match = _SIZE.fullmatch(text)
    if match is None:
        raise ValueError(
            f"{value!r} is not a size: write a byte count or a number with a binary unit "
            "(KiB, MiB, GiB), e.g. \"16MiB\""
        )
    number, unit = match.groups()
    return int(float(number) * _UNIT_BYTES[(unit or "B").lower()])


def at_least(minimum: int) -> Callable[[int], int]:
    """A check that a size is at least `minimum` bytes (for validators)."""

    def check(size: int) -> int:
        if size < minimum:
            raise ValueError(f"must be at least {human_bytes(minimum)}")
        return size

    return check
