"""Which backup a record is about: the five fields every record of one carries.

An archived backup, its manifest, a pruned one and its tombstone all start with
stack_uid, backup_id, db_type, database_name and backup_date. They are carried
from one record to the next, and read from JSON, here and nowhere else: as
keyword arguments (`Tombstone(**identity_of(pruned), ...)`) or JSON entries.
"""

from __future__ import annotations

from typing import Any, Protocol, TypedDict


class BackupIdentity(TypedDict):
    """The five fields, as keyword arguments of any record that has them (or JSON)."""

    stack_uid: str
    backup_id: int
    db_type: str
    database_name: str
    backup_date: str | None


class Identified(Protocol):
    """Any record that carries the five fields."""

    @property
    def stack_uid(self) -> str: ...
    @property
    def backup_id(self) -> int: ...
    @property
    def db_type(self) -> str: ...
    @property
    def database_name(self) -> str: ...
    @property
    def backup_date(self) -> str | None: ...


def identity_of(record: Identified) -> BackupIdentity:
    """The five fields of `record`, in their order."""
    return BackupIdentity(
        stack_uid=record.stack_uid,
        backup_id=record.backup_id,
        db_type=record.db_type,
        database_name=record.database_name,
        backup_date=record.backup_date,
    )


def identity_from_json(document: dict[str, Any], *, names_required: bool = True) -> BackupIdentity:
    """The five fields of a JSON document; KeyError, ValueError or TypeError when it has none.

    `names_required=False`: a missing db_type or database_name reads as "" (tombstones
    written before they carried them).
    """
    if names_required:
        db_type, database_name = document["db_type"], document["database_name"]
    else:
        db_type, database_name = document.get("db_type", ""), document.get("database_name", "")
    return BackupIdentity(
        stack_uid=str(document["stack_uid"]),
        backup_id=int(document["backup_id"]),
        db_type=str(db_type),
        database_name=str(database_name),
        backup_date=document.get("backup_date"),
    )
