"""Typed records of what the Cloud 66 API returns.

They tolerate nulls and ignore unknown fields, because newer servers add
fields and older ones leave some empty. Upstream strings are data, never paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

BACKUP_STATUS_OK = 0


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, defer_build=True)


class Stack(_Record):
    """One stack, as `GET /stacks` lists it."""

    uid: str
    name: str | None = None
    environment: str | None = None


class Backup(_Record):
    """One managed backup, as `GET /stacks/:id/backups` lists it."""

    id: int
    db_type: str | None = None
    database_name: str | None = None
    backup_date_iso: datetime | None = None
    backup_status: int | None = None
    backup_result: str | None = None
    restore_status: int | None = None
    verify_status: int | None = None
    storage_path: str | None = None
    file_base: str | None = None
    # The record exactly as received, for the manifest's `source`.
    raw: dict[str, Any] = Field(default_factory=dict, exclude=True)

    @property
    def is_ok(self) -> bool:
        """Only status 0 is a finished, good backup; anything else is skipped."""
        return self.backup_status == BACKUP_STATUS_OK

    @classmethod
    def from_api(cls, record: dict[str, Any]) -> Backup:
        """Build from a raw API record, keeping the raw record."""
        return cls.model_validate({**record, "raw": record})


class BackupFile(_Record):
    """One file (piece) of a backup: id `tar` or `tar-aa`, `tar-ab`, ..."""

    id: str
    name: str | None = None


_ItemT = TypeVar("_ItemT")


@dataclass(frozen=True)
class Listing(Generic[_ItemT]):
    """A list read from the API, and whether it is the whole list.

    `complete` is False when pagination went backwards, hit the page cap, or a
    record had to be skipped: what is missing from `items` may still exist.
    (A page that failed raises instead: there is no listing at all.)
    """

    items: list[_ItemT]
    complete: bool
