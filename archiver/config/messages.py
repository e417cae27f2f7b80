"""What a config error says: the file, the dotted key, what is wrong, what was given, and for
a key that does not exist the one that was probably meant.

    /etc/c66-archiver/config.toml: transfer.max_concurent_downloads: unknown key
        (did you mean max_concurrent_downloads?)
    /etc/c66-archiver/config.toml: api.requests_per_hour: Input should be a valid integer
        (got "3000")

Values are shown as TOML writes them. A string that looks like a URL shows only its
scheme: webhook and Apprise URLs carry secrets.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

DottedKey = Callable[[tuple[int | str, ...]], str]
# Keys of the root model that are not config keys (where the settings came from).
_NOT_KEYS = frozenset({"source"})
# Keys whose values are secrets: a problem with one never shows the value.
_SECRET_KEYS = frozenset({"apprise_urls", "webhook_url", "healthchecks_url"})
# Problems that are about the key, not about a value the user wrote.
_NO_VALUE = frozenset({"extra_forbidden", "missing"})


def describe_validation_error(
    where: str, error: ValidationError, *, root: type[BaseModel], dotted_key: DottedKey
) -> str:
    """One line a problem: `<file>: <key>: <what is wrong>`."""
    return "\n".join(describe_problem(where, p, root, dotted_key) for p in error.errors())


def describe_problem(
    where: str, problem: ErrorDetails, root: type[BaseModel], dotted_key: DottedKey
) -> str:
    """One problem as a line; a problem of the whole file (no key) names the file only."""
    key = dotted_key(tuple(problem["loc"]))
    message = problem["msg"].removeprefix("Value error, ")
    if problem["type"] == "extra_forbidden":
        message = "unknown key" + _did_you_mean(root, tuple(problem["loc"]))
    elif problem["type"] == "missing":
        message = "required key is missing"
    elif problem["type"] not in _NO_VALUE and "input" in problem and not _secret(problem):
        message += _given(problem["input"], message)
    return f"{where}: {key}: {message}" if key else f"{where}: {message}"


def _secret(problem: ErrorDetails) -> bool:
    """True for text given to a key that holds a secret, when it does not look like a URL
    (whose scheme alone is shown): `hooks.slack.com/services/T0/B0/x` is never repeated."""
    value = problem.get("input")
    in_secret_key = any(part in _SECRET_KEYS for part in problem["loc"])
    return in_secret_key and isinstance(value, str) and "://" not in value


def _given(value: object, message: str) -> str:
    """` (got "3000")`, unless the message already quotes the value."""
    shown = toml_value(value)
    if shown is None or shown in message or repr(value) in message:
        return ""
    return f" (got {shown})"


def toml_value(value: object) -> str | None:
    """A value as TOML writes it, short; None for what cannot be shown usefully (a table:
    the problem is then about the section as a whole)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        if "://" in value:  # a URL may carry a secret: its scheme says enough
            return f'"{value.split("://", 1)[0]}://..."'
        text = value if len(value) <= 60 else value[:57] + "..."
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        # A list of tables ([[storage]]) is about the tables, which the message names.
        scalars = all(isinstance(item, str | int | float | bool) for item in value)
        return "a list" if scalars else None
    return None


def _did_you_mean(root: type[BaseModel], location: tuple[int | str, ...]) -> str:
    """` (did you mean max_concurrent_downloads?)` for a key close to a known one."""
    unknown = location[-1]
    if not isinstance(unknown, str):
        return ""
    known = {name for model in _models_at(root, location[:-1]) for name in model.model_fields}
    if len(location) == 1:
        known -= _NOT_KEYS
    close = difflib.get_close_matches(unknown, sorted(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _models_at(root: type[BaseModel], path: Iterable[int | str]) -> list[type[BaseModel]]:
    """The section models a key path leads to (several where a `type` picks one of them)."""
    models = [root]
    for part in path:
        if isinstance(part, int):
            continue  # an index into an array of tables
        inner = [m for model in models if part in model.model_fields
                 for m in _model_classes(model.model_fields[part].annotation)]
        # Not a field: the tag of a table whose `type` picks its model (storage "s3").
        models = inner or [model for model in models if _tagged(model, part)]
    return models


def _model_classes(annotation: Any) -> list[type[BaseModel]]:
    """The models an annotation holds: through Annotated, unions, optionals and tuples."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _model_classes(arguments[0])
    if origin in (typing.Union, types.UnionType, tuple, list):
        return [model for argument in arguments for model in _model_classes(argument)]
    return []


def _tagged(model: type[BaseModel], tag: str) -> bool:
    field = model.model_fields.get("type")
    return field is not None and tag in typing.get_args(field.annotation)
