"""S3 Object Lock on our objects: lock after commit, remove by version, say until when.

A bucket with Object Lock is versioned, and on a versioned bucket a plain
DELETE removes nothing: it adds a delete marker and the bytes stay, locked or
not. So on a destination with `object_lock` every removal deletes the key's
versions one by one (and its delete markers), and what S3 refused because of
a lock is reported with its retain-until date (`ObjectLocked`) instead of
being taken for done. Locks are set with PutObjectRetention on the current
version; S3 requires a checksum on that request (botocore sends one).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from archiver.config.storage import ObjectLockSettings
from archiver.core.errors import ObjectLocked, PermanentStorageError
from archiver.storage.s3_errors import NOT_FOUND, caused_by, classify_s3_error

log = structlog.get_logger(__name__)

_LOCKED_CODES = {"AccessDenied", "403", "ObjectLocked", "InvalidRequest"}
_NO_LOCK_CODES = {"ObjectLockConfigurationNotFoundError", "NoSuchObjectLockConfiguration"}


class LockHost(Protocol):
    """What the lock needs from its storage (`S3Storage`)."""

    @property
    def bucket(self) -> str:
        """The bucket's name."""

    async def connected(self) -> Any:
        """The aiobotocore client."""

    async def call(self, operation: str, what: str, **params: Any) -> dict[str, Any]:
        """One S3 operation on the bucket, errors classified."""


class ObjectLocks:
    """Object Lock for one S3 destination (its `object_lock` settings)."""

    def __init__(self, host: LockHost, settings: ObjectLockSettings) -> None:
        self._host = host
        self._settings = settings

    async def lock(self, object_key: str, what: str, until: datetime) -> None:
        """PutObjectRetention on the current version of `object_key`."""
        await self._host.call(
            "put_object_retention", f"{what} (lock)", Key=object_key,
            Retention={"Mode": self._settings.mode, "RetainUntilDate": until},
        )

    async def problem(self) -> str | None:
        """None when the bucket has Object Lock enabled, else what is wrong with it."""
        try:
            answer = await self._host.call(
                "get_object_lock_configuration", f"s3://{self._host.bucket} (object lock)"
            )
        except PermanentStorageError as error:
            if caused_by(error, _NO_LOCK_CODES):
                return (f"bucket {self._host.bucket} has no Object Lock: create the bucket with "
                        "Object Lock enabled (it cannot be turned on for objects it holds)")
            raise
        configuration = answer.get("ObjectLockConfiguration", {})
        if configuration.get("ObjectLockEnabled") != "Enabled":
            return f"bucket {self._host.bucket} has Object Lock turned off"
        if configuration.get("Rule"):
            log.warning(
                "the bucket locks every new object by a default rule: unfinished uploads and "
                "probe objects are locked too; c66-archiver locks what it commits itself",
                bucket=self._host.bucket,
            )
        return None

    async def remove(self, object_key: str, what: str) -> None:
        """Delete every version (and delete marker) of `object_key`; `ObjectLocked` when a
        lock keeps one, naming until when."""
        locked: list[str] = []
        for version_id in await self._versions(object_key, what):
            try:
                await self._host.call(
                    "delete_object", what, Key=object_key, VersionId=version_id
                )
            except PermanentStorageError as error:
                if not caused_by(error, _LOCKED_CODES):
                    raise
                locked.append(version_id)
        if locked:
            until = await self._retained_until(object_key, locked, what)
            when = until.isoformat() if until else "a date S3 did not tell"
            raise ObjectLocked(f"{what} is under S3 Object Lock until {when}", until=until)

    async def _versions(self, object_key: str, what: str) -> list[str]:
        """The version ids (delete markers included) of exactly `object_key`."""
        client = await self._host.connected()
        paginator = client.get_paginator("list_object_versions")
        found: list[str] = []
        try:
            async for page in paginator.paginate(Bucket=self._host.bucket, Prefix=object_key):
                for item in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
                    if item["Key"] == object_key:
                        found.append(str(item["VersionId"]))
        except (ClientError, BotoCoreError) as error:
            raise classify_s3_error(error, f"{what} (versions)") from error
        return found

    async def _retained_until(
        self, object_key: str, version_ids: list[str], what: str
    ) -> datetime | None:
        """The latest retain-until date among the versions a lock kept."""
        dates: list[datetime] = []
        for version_id in version_ids:
            try:
                head = await self._host.call(
                    "head_object", what, Key=object_key, VersionId=version_id
                )
            except PermanentStorageError as error:
                if caused_by(error, NOT_FOUND):
                    continue
                raise
            if isinstance(head.get("ObjectLockRetainUntilDate"), datetime):
                dates.append(head["ObjectLockRetainUntilDate"])
        return max(dates, default=None)


def retain_until(head: dict[str, Any]) -> datetime | None:
    """The retain-until date a HeadObject answer reports, if the object is locked."""
    until = head.get("ObjectLockRetainUntilDate")
    return until if isinstance(until, datetime) else None

