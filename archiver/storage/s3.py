"""An S3 bucket (AWS or any S3-compatible service) as archive storage.

Big files go up as one streamed multipart upload (`s3_upload`). A multipart upload
of `key` is made under `<key>.part`, never under the final key: completing it does
not publish it. The sha256 is known only at the end, so it cannot go on
CreateMultipartUpload: on commit the completed `<key>.part` is copied server side to
`key` with the metadata (`x-amz-meta-sha256`), by CopyObject up to 5 GiB and by a
multipart UploadPartCopy above, then deleted. Objects under 5 MiB are written with
one PutObject that carries it. The manifest, written last, records the sha256 as well.

An upload cut short (a crash, a stop) is resumed by sealing its contiguous completed
parts into the `<key>.part` object and copying that server side into a new upload.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Collection
from datetime import datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from archiver.config.storage import S3StorageSettings
from archiver.core.errors import PermanentStorageError
from archiver.storage import s3_leftovers
from archiver.storage.base import (
    LEFTOVER_IDLE,
    PART_SUFFIX,
    READ_CHUNK_SIZE,
    ObjectInfo,
    ResumedUpload,
    check_key,
    probe_round_trip,
)
from archiver.storage.s3_bucket import S3Bucket, normalised_prefix
from archiver.storage.s3_copies import copy_into, seal_durable_parts
from archiver.storage.s3_errors import NOT_FOUND, caused_by, classify_s3_error
from archiver.storage.s3_lock import retain_until
from archiver.storage.s3_upload import S3Upload

__all__ = ["S3Storage", "normalised_prefix"]


class S3Storage:
    """The Storage protocol on an S3 bucket (see `archiver.storage.base` and this module).

    Its calls go through `S3Bucket`; the server-side copies are `s3_copies`', the
    cleanup `s3_leftovers`', a multipart upload an `S3Upload`.
    """

    supports_read_back = False

    def __init__(self, settings: S3StorageSettings) -> None:
        self.settings = settings
        self._s3 = S3Bucket(settings)

    @property
    def bucket(self) -> str:
        """The bucket's name."""
        return self._s3.bucket

    async def connected(self) -> Any:
        """The aiobotocore client (for the modules and tests that look past the protocol)."""
        return await self._s3.connected()

    def location(self, key: str) -> str:
        """`s3://<bucket>/<prefix><key>`."""
        return self._s3.location(key)

    async def start_upload(self, key: str) -> S3Upload:
        """Abort unfinished uploads of `key`, then create a fresh multipart upload."""
        s3, upload_key = self._s3, self._s3.upload_key(key)
        for stale in await s3.multipart_uploads(upload_key):
            if stale["Key"] == upload_key:
                await s3.abort_multipart(upload_key, str(stale["UploadId"]))
        return await self._new_upload(key)

    async def _new_upload(self, key: str) -> S3Upload:
        s3, upload_key = self._s3, self._s3.upload_key(key)
        response = await s3.call(
            "create_multipart_upload", s3.location(key), Key=upload_key, **s3.write_options()
        )
        return S3Upload(s3, key, upload_key, str(response["UploadId"]))

    async def resume_upload(self, key: str) -> ResumedUpload | None:
        """Continue an unfinished upload of `key` from its completed parts (ListParts).

        S3 cannot read the parts of an unfinished upload, and the caller must hash
        the durable bytes again: so the parts that follow each other from part 1 are
        completed into the `<key>.part` object (not the final key: nothing is
        published), and a new multipart upload starts with those bytes copied from
        it server side (UploadPartCopy), readable through `read_back` until commit.
        """
        upload_key = self._s3.upload_key(key)
        sealed = await seal_durable_parts(self._s3, upload_key)
        if sealed is None:
            return None
        size, etag = sealed
        upload = await self._new_upload(key)
        try:
            copied = await copy_into(self._s3, upload_key, upload.upload_id, size, etag)
        except BaseException:
            await asyncio.shield(self._s3.spawn(upload.abort()))
            raise
        upload.resumed_from(size, copied, etag)
        return ResumedUpload(upload, size)

    async def write_small(self, key: str, data: bytes) -> None:
        """PutObject: replaces the old object atomically."""
        await self._s3.put(key, data)

    async def read_small(self, key: str) -> bytes:
        """GetObject whole; FileNotFoundError when there is no such key."""
        response = await self._get_object(key)
        async with response["Body"] as body:
            data: bytes = await body.read()
        return data

    async def read_chunks(
        self, key: str, *, chunk_size: int = READ_CHUNK_SIZE
    ) -> AsyncGenerator[bytes, None]:
        """GetObject, streamed; FileNotFoundError when there is no such key."""
        response = await self._get_object(key)
        pending = bytearray()
        async with response["Body"] as body:
            try:
                async for piece in body.iter_chunks(chunk_size):
                    pending += piece
                    while len(pending) >= chunk_size:  # whole chunks, as the protocol says
                        yield bytes(pending[:chunk_size])
                        del pending[:chunk_size]
            except (TimeoutError, ClientError, BotoCoreError, OSError) as error:
                raise classify_s3_error(error, f"{self.location(key)} (read)") from error
        if pending:
            yield bytes(pending)

    async def _get_object(self, key: str) -> dict[str, Any]:
        try:
            return await self._s3.call(
                "get_object", self.location(key), Key=self._s3.object_key(key)
            )
        except PermanentStorageError as error:
            if caused_by(error, NOT_FOUND):
                raise FileNotFoundError(self.location(key)) from None
            raise

    async def stat(self, key: str) -> ObjectInfo | None:
        """HeadObject: the size of a completed object, or None."""
        object_key = self._s3.object_key(key)
        try:
            response = await self._s3.call("head_object", self.location(key), Key=object_key)
        except PermanentStorageError as error:
            if caused_by(error, NOT_FOUND):
                return None
            raise
        return ObjectInfo(
            key=key, size=int(response["ContentLength"]), locked_until=retain_until(response)
        )

    async def list(self, prefix: str = "") -> AsyncIterator[str]:
        """ListObjectsV2, paginated: keys under the folder `prefix`, relative to ours."""
        trimmed = prefix.strip("/")
        start = self._s3.prefix + (f"{check_key(trimmed)}/" if trimmed else "")
        what = f"s3://{self.bucket}/{start} (list)"
        async for item in self._s3.pages("list_objects_v2", what, "Contents", Prefix=start):
            key = str(item["Key"])[len(self._s3.prefix) :]
            if not key.endswith(PART_SUFFIX):  # a finished upload not yet published
                yield key

    async def shareable_url(self, key: str, expires: timedelta) -> str | None:
        """A pre-signed GET URL of the object, valid for `expires` (SigV4 allows 7 days)."""
        client = await self._s3.connected()
        url: str = await client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": self._s3.object_key(key)},
            ExpiresIn=int(expires.total_seconds()),
        )
        return url

    async def remove(self, key: str) -> None:
        """DeleteObject; S3 answers a missing key with success too. With object_lock, every
        version goes (`ObjectLocked` when a lock keeps one: see `archiver.storage.s3_lock`)."""
        await self._s3.remove_object(self._s3.object_key(key), self.location(key))

    async def lock(self, key: str, until: datetime) -> None:
        """Lock the object `key` until `until` (object_lock's mode); see `Lockable`."""
        if self._s3.locks is None:
            raise PermanentStorageError(f"{self.location(key)}: object_lock is not configured")
        await self._s3.locks.lock(self._s3.object_key(key), self.location(key), until)

    async def lock_problem(self) -> str | None:
        """None when the bucket has Object Lock on, else why not."""
        if self._s3.locks is None:
            return "object_lock is not configured"
        return await self._s3.locks.problem()

    async def remove_incomplete(
        self, keep: Collection[str] = (), *, idle_for: timedelta = LEFTOVER_IDLE
    ) -> int:
        """Abort every unfinished multipart upload under our prefix (and delete every
        unpublished `.part` object) but those of keys in `keep` and another process's
        probe or staging copy while it is written (see `Storage.remove_incomplete`);
        return how many."""
        return await s3_leftovers.remove_incomplete(self._s3, keep, idle_for)

    async def probe(self) -> None:
        """Put, get and delete a probe object; the error names what failed."""
        where = f"bucket {self.bucket} at {self.settings.endpoint_url or 'AWS'}"
        await probe_round_trip(self, where)

    async def aclose(self) -> None:
        """Let aborts in flight finish, then close the client's connections."""
        await self._s3.aclose()
