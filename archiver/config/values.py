"""The value types every settings section is built from: durations, strict numbers, sections.

Apart from `archiver.config.settings` so that the storage settings
(`archiver.config.storage`) can use them without importing the whole configuration.
"""

from __future__ import annotations

import functools
import typing
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, model_validator

from archiver.core.units import parse_byte_size, parse_duration

Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
# A byte count, or a string with a binary unit ("16MiB"); per second, "/s" may follow.
ByteSize = Annotated[int, BeforeValidator(parse_byte_size)]
BytesPerSecond = Annotated[int, BeforeValidator(lambda v: parse_byte_size(v, per_second=True))]
# Strict: TOML has real integers and booleans, so `true` or "3000" where a
# number belongs is a mistake to report, not something to coerce.
Int = Annotated[int, Field(strict=True)]
Bool = Annotated[bool, Field(strict=True)]
PositiveInt = Annotated[int, Field(gt=0, strict=True)]
NonNegativeInt = Annotated[int, Field(ge=0, strict=True)]


# Validation context key: the folder relative paths in the config are read from.
CONFIG_FOLDER = "config_folder"


@functools.cache
def _path_fields(model: type[BaseModel]) -> frozenset[str]:
    """The names of a section's fields that hold a local path."""
    return frozenset(
        name
        for name, field in model.model_fields.items()
        if field.annotation is Path or Path in typing.get_args(field.annotation)
    )


def _anchored(value: object, folder: Path) -> object:
    """`value` as a path under `folder` when it is a relative path string; else as it was."""
    if not isinstance(value, str | Path) or not str(value):
        return value
    path = Path(value).expanduser()
    return path if path.is_absolute() else folder / path


class Section(BaseModel):
    """A TOML table: unknown keys are errors, and the result is frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False, defer_build=True)

    @model_validator(mode="before")
    @classmethod
    def _paths_from_config_folder(cls, data: Any, info: ValidationInfo) -> Any:
        """A relative path key means relative to the config file's folder, not the cwd.

        Runs before the fields are validated, so validators that read a file
        (`recipients_file`) read the right one. `~` is the user's home, as in a shell.
        """
        folder = (info.context or {}).get(CONFIG_FOLDER)
        if folder is None or not isinstance(data, dict):
            return data
        path_keys = _path_fields(cls)
        return {
            key: _anchored(value, folder) if key in path_keys else value
            for key, value in data.items()
        }
