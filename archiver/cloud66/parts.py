"""The order in which a backup's files join: by their split(1) suffix, never on trust.

Cloud 66 splits a large backup with split(1): file ids `tar-aa`, `tar-ab`, ...
(older backups: `tar.aa`), and the backup is their plain concatenation in
suffix order. The API lists them in that order too, but a list in the wrong
order would join into a wrong file that still hashes cleanly, so the order is
taken from the suffixes, and a list nobody can vouch for is refused: repeated
ids, a mix of naming patterns, unknown ids, or a gap in the two-letter suffixes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from archiver.cloud66.models import BackupFile
from archiver.core.errors import TransferError

_SPLIT_ID = re.compile(r"tar[-.]([a-z]+)")
_ALPHABET = 26


def join_order(files: Sequence[BackupFile]) -> list[BackupFile]:
    """The files in the order to join them; TransferError (that backup fails) when unsure."""
    if len(files) <= 1:
        return list(files)
    ids = [file.id for file in files]
    repeated = sorted({file_id for file_id in ids if ids.count(file_id) > 1})
    if repeated:
        raise TransferError(f"the backup lists file ids more than once ({', '.join(repeated)})")
    suffixes = {file.id: _suffix(file.id) for file in files}
    strays = sorted(file_id for file_id, suffix in suffixes.items() if suffix is None)
    separators = {file_id[3] for file_id in ids if file_id not in strays}
    if len(separators) > 1:
        raise TransferError(
            f"the file ids mix naming patterns ({', '.join(sorted(ids))}): "
            "the order of the pieces cannot be vouched for"
        )
    if strays:
        raise TransferError(
            f"file ids {', '.join(strays)} do not follow the split pattern tar-aa, tar-ab, ...: "
            "the order of the pieces cannot be vouched for"
        )
    ordered = sorted(files, key=lambda file: (len(suffixes[file.id] or ""), suffixes[file.id]))
    _check_no_gap([suffixes[file.id] or "" for file in ordered])
    return ordered


def _suffix(file_id: str) -> str | None:
    match = _SPLIT_ID.fullmatch(file_id)
    return match.group(1) if match else None


def _check_no_gap(suffixes: list[str]) -> None:
    """Two-letter suffixes must run aa, ab, ac, ... without a hole (a missing piece)."""
    if any(len(suffix) != 2 for suffix in suffixes):
        return  # longer suffixes (past 676 pieces) only need their order
    for expected, suffix in enumerate(suffixes):
        number = (ord(suffix[0]) - ord("a")) * _ALPHABET + ord(suffix[1]) - ord("a")
        if number != expected:
            missing = chr(ord("a") + expected // _ALPHABET) + chr(ord("a") + expected % _ALPHABET)
            raise TransferError(f"piece tar-{missing} is missing from the backup's file list")
