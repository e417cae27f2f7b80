"""The value types every settings section is built from: durations, strict numbers, sections.

Apart from `archiver.config.settings` so that the storage settings
(`archiver.config.storage`) can use them without importing the whole configuration.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

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


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
# Strict: TOML has real integers and booleans, so `true` or "3000" where a
# number belongs is a mistake to report, not something to coerce.
Int = Annotated[int, Field(strict=True)]
Bool = Annotated[bool, Field(strict=True)]
PositiveInt = Annotated[int, Field(gt=0, strict=True)]
NonNegativeInt = Annotated[int, Field(ge=0, strict=True)]


class Section(BaseModel):
    """A TOML table: unknown keys are errors, and the result is frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)
