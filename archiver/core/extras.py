"""Optional parts of the install (pip extras): which feature needs which, and the fix.

The core install is what a local archive needs. S3 (aiobotocore and botocore,
31 MB) and SFTP (asyncssh and cryptography, 16 MB) come with
`c66-archiver[s3]` and `c66-archiver[sftp]`; notifications through Apprise
(`[notify] apprise_urls`: apprise with requests, oauthlib, markdown and PyYAML,
about 15 MB) with `c66-archiver[notify]`; `[all]` brings every one. A config
that names a feature whose extra is missing is a configuration error (exit 2)
that says which line to run, found before anything is attempted: whether a
module is installed is asked of the import system without importing it.
"""

from __future__ import annotations

import importlib.util
import shlex
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Extra:
    """One pip extra: its name and the top-level modules it installs that we import."""

    name: str
    modules: tuple[str, ...]


# Storage type -> the extra its backend needs. `local` needs nothing beyond the core.
STORAGE_EXTRAS = {
    "s3": Extra("s3", ("aiobotocore", "botocore")),
    "sftp": Extra("sftp", ("asyncssh", "cryptography")),
}
# `[notify] apprise_urls`: Slack, e-mail, Telegram, ... through Apprise.
NOTIFY_EXTRA = Extra("notify", ("apprise",))
ALL_EXTRAS = (*STORAGE_EXTRAS.values(), NOTIFY_EXTRA)


def is_installed(module: str) -> bool:
    """Whether `module` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent that fails, or a module set to None
        return False


def missing_modules(extra: Extra) -> list[str]:
    """The modules of `extra` that are not installed (none when it is)."""
    return [module for module in extra.modules if not is_installed(module)]


def install_line(extra: Extra) -> str:
    """The command that adds `extra` to the environment this program runs from."""
    return f"{shlex.quote(sys.executable)} -m pip install 'c66-archiver[{extra.name}]'"


def needs_extra_message(what: str, extra: Extra, missing: list[str]) -> str:
    """`<what> needs the optional [x] part ...; install it with: ...`."""
    return (
        f"{what} needs the optional [{extra.name}] part of c66-archiver, which is not "
        f"installed (missing: {', '.join(missing)}); install it with: {install_line(extra)}"
    )


def missing_extra_message(storage_type: str, missing: list[str]) -> str:
    """What to tell a user whose config needs a backend that is not installed."""
    return needs_extra_message(
        f'storage type "{storage_type}"', STORAGE_EXTRAS[storage_type], missing
    )


def missing_storage_modules(storage_type: str) -> list[str]:
    """The modules the backend of `storage_type` needs that are not installed."""
    extra = STORAGE_EXTRAS.get(storage_type)
    return [] if extra is None else missing_modules(extra)
