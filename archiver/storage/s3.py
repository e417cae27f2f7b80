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
from contextlib import AsyncExitStack
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from archiver.config.storage import S3StorageSettings
from archiver.core.errors import (
    ConfigError,
    PermanentStorageError,
)
from archiver.core.retry import Backoff, RetryPolicy, retrying
from archiver.storage.base import (
    PART_SUFFIX,
    READ_CHUNK_SIZE,
    ObjectInfo,
    ResumedUpload,
    check_final_key,
    check_key,
    probe_round_trip,
)
from archiver.storage.s3_errors import NO_UPLOAD, NOT_FOUND, caused_by, classify_s3_error
from archiver.storage.s3_lock import ObjectLocks, retain_until
from archiver.storage.s3_upload import MIN_PART_SIZE, S3Upload

log = structlog.get_logger(__name__)

MiB = 1024 * 1024
MAX_COPY_OBJECT_SIZE = 5 * 1024 * MiB  # CopyObject's ceiling; above it, multipart copy
COPY_PART_SIZE = 1024 * MiB

# An abort is confirmed with ListParts, and repeated while the upload is still listed.
_ABORT_POLICY = RetryPolicy(retries=2, backoff=Backoff(base=0.2, cap=1.0))


class _StillListed(Exception):
    """The multipart upload is still listed after an abort."""


def normalised_prefix(prefix: str) -> str:
    """'' or a folder-like prefix ending in '/' (so 'backups' means 'backups/...')."""
    trimmed = prefix.strip("/")
    return f"{check_key(trimmed)}/" if trimmed else ""



class S3Storage:
    """The Storage protocol on an S3 bucket (see `archiver.storage.base` and this module)."""

    supports_read_back = False

    def __init__(self, settings: S3StorageSettings) -> None:
        self.settings = settings
        self._bucket = settings.bucket
        self._prefix = normalised_prefix(settings.prefix)
        self._secret = self._read_secret(settings.secret_access_key_file)
        self._stack = AsyncExitStack()
        self._client: Any = None
        self._client_lock = asyncio.Lock()
        self._background: set[asyncio.Future[None]] = set()
        # Part uploads in flight across all uploads of this storage.
        self.part_upload_limit = asyncio.Semaphore(settings.max_concurrent_part_uploads)
        # With object_lock: committed objects are locked, and removals go version by version.
        self._locks = ObjectLocks(self, settings.object_lock) if settings.object_lock else None

    @property
    def bucket(self) -> str:
        """The bucket's name."""
        return self._bucket

    @staticmethod
    def _read_secret(path: Path | None) -> str | None:
        if path is None:
            return None
        try:
            return path.read_text().strip()
        except OSError as error:
            raise ConfigError(
                f"storage.secret_access_key_file {path}: cannot read ({error.strerror})"
            ) from None

    def _config(self) -> AioConfig:
        concurrency = self.settings.max_concurrent_part_uploads
        return AioConfig(
            # SigV4 everywhere, pre-signed URLs included (botocore would sign those with
            # the deprecated SigV2 in us-east-1).
            signature_version="s3v4",
            retries={"max_attempts": 5, "mode": "standard"},
            connect_timeout=15,
            read_timeout=120,
            max_pool_connections=max(10, 2 * concurrency),
            s3={"addressing_style": self.settings.addressing_style},
            # New botocore sends CRC checksums by default; several S3-compatible
            # services reject them. Send and check them only where S3 requires it.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )

    async def connected(self) -> Any:
        """The aiobotocore client (for the modules that extend this storage)."""
        return await self._connected()

    async def _connected(self) -> Any:
        """The aiobotocore client, created on first use (it needs the running loop)."""
        async with self._client_lock:
            if self._client is None:
                credentials: dict[str, str] = {}
                if self.settings.access_key_id and self._secret is not None:
                    credentials = {
                        "aws_access_key_id": self.settings.access_key_id,
                        "aws_secret_access_key": self._secret,
                    }
                # S3-compatible services often ignore the region but SigV4 needs one.
                default_region = "us-east-1" if self.settings.endpoint_url else None
                region = self.settings.region or default_region
                self._client = await self._stack.enter_async_context(
                    get_session().create_client(
                        "s3", region_name=region, endpoint_url=self.settings.endpoint_url,
                        config=self._config(), **credentials,
                    )
                )
            return self._client

    async def call(self, operation: str, what: str, **params: Any) -> dict[str, Any]:
        """Run one S3 operation on our bucket; botocore errors become StorageErrors."""
        client = await self._connected()
        try:
            response: dict[str, Any] = await getattr(client, operation)(
                Bucket=self._bucket, **params
            )
        except (ClientError, BotoCoreError) as error:
            raise classify_s3_error(error, what) from error
        return response

    def spawn(self, work: Any) -> asyncio.Future[None]:
        """Run `work` in a task that `aclose` waits for (aborts must not be lost)."""
        task: asyncio.Future[None] = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def _object_key(self, key: str) -> str:
        return self._prefix + check_final_key(key)

    def _upload_key(self, key: str) -> str:
        """Where an unfinished upload of `key` lives: never under the final key."""
        return self._object_key(key) + PART_SUFFIX

    @property
    def part_size(self) -> int:
        """Bytes per part of a multipart upload."""
        return self.settings.part_size

    def location(self, key: str) -> str:
        """`s3://<bucket>/<prefix><key>`."""
        return f"s3://{self._bucket}/{self._object_key(key)}"

    def _write_options(self, sha256: str | None = None) -> dict[str, Any]:
        """Storage class, encryption and metadata for objects we create."""
        options: dict[str, Any] = {}
        if self.settings.storage_class:
            options["StorageClass"] = self.settings.storage_class
        if self.settings.server_side_encryption:
            options["ServerSideEncryption"] = self.settings.server_side_encryption
        if self.settings.sse_kms_key_id:
            options["SSEKMSKeyId"] = self.settings.sse_kms_key_id
        if sha256 is not None:
            options["Metadata"] = {"sha256": sha256}
        return options

    async def start_upload(self, key: str) -> S3Upload:
        """Abort unfinished uploads of `key`, then create a fresh multipart upload."""
        upload_key = self._upload_key(key)
        for stale_key, upload_id in await self._multipart_uploads(upload_key):
            if stale_key == upload_key:
                await self.abort_multipart(stale_key, upload_id)
        response = await self.call(
            "create_multipart_upload", self.location(key), Key=upload_key, **self._write_options()
        )
        return S3Upload(self, key, upload_key, str(response["UploadId"]))

    async def resume_upload(self, key: str) -> ResumedUpload | None:
        """Continue an unfinished upload of `key` from its completed parts (ListParts).

        S3 cannot read the parts of an unfinished upload, and the caller must hash
        the durable bytes again: so the parts that follow each other from part 1 are
        completed into the `<key>.part` object (not the final key: nothing is
        published), and a new multipart upload starts with those bytes copied from
        it server side (UploadPartCopy), readable through `read_back` until commit.
        """
        upload_key = self._upload_key(key)
        sealed = await self._seal_durable_parts(upload_key)
        if sealed is None:
            return None
        size, etag = sealed
        created = await self.call(
            "create_multipart_upload", self.location(key), Key=upload_key, **self._write_options()
        )
        upload = S3Upload(self, key, upload_key, str(created["UploadId"]))
        try:
            copied = await self._copy_into(upload_key, str(created["UploadId"]), size, etag)
        except BaseException:
            await asyncio.shield(self.spawn(upload.abort()))
            raise
        upload.resumed_from(size, copied, etag)
        return ResumedUpload(upload, size)

    async def _seal_durable_parts(self, upload_key: str) -> tuple[int, str] | None:
        """(size, ETag) of `<key>.part` holding the durable parts; None when nothing is."""
        uploads = [u for u in await self._multipart_uploads(upload_key) if u[0] == upload_key]
        for key, upload_id in uploads[:-1]:  # an older attempt's: the newest one counts
            await self.abort_multipart(key, upload_id)
        if uploads:
            _, upload_id = uploads[-1]
            parts = await self._contiguous_parts(upload_key, upload_id)
            if not parts:
                await self.abort_multipart(upload_key, upload_id)
                return None
            await self.call(
                "complete_multipart_upload", f"s3://{self._bucket}/{upload_key} (seal)",
                Key=upload_key, UploadId=upload_id,
                MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e, _ in parts]},
            )
        return await self._sealed_object(upload_key)

    async def _contiguous_parts(
        self, upload_key: str, upload_id: str
    ) -> list[tuple[int, str, int]]:
        """(number, ETag, size) of the completed parts that follow each other from part 1."""
        client = await self._connected()
        paginator = client.get_paginator("list_parts")
        found: list[tuple[int, str, int]] = []
        try:
            async for page in paginator.paginate(
                Bucket=self._bucket, Key=upload_key, UploadId=upload_id
            ):
                found.extend(
                    (int(p["PartNumber"]), str(p["ETag"]), int(p["Size"]))
                    for p in page.get("Parts", [])
                )
        except (ClientError, BotoCoreError) as error:
            raise classify_s3_error(error, f"s3://{self._bucket}/{upload_key} (parts)") from error
        contiguous = []
        for expected, part in enumerate(sorted(found), start=1):
            if part[0] != expected:
                break
            contiguous.append(part)
        return contiguous

    async def _sealed_object(self, upload_key: str) -> tuple[int, str] | None:
        try:
            head = await self.call("head_object", f"s3://{self._bucket}/{upload_key}",
                                   Key=upload_key)
        except PermanentStorageError as error:
            if caused_by(error, NOT_FOUND):
                return None
            raise
        size = int(head["ContentLength"])
        return (size, str(head["ETag"])) if size >= MIN_PART_SIZE else None

    async def _copy_into(
        self, upload_key: str, upload_id: str, size: int, etag: str
    ) -> dict[int, str]:
        """UploadPartCopy of the sealed object into the new upload, in ranges of 5 MiB+."""
        count = -(-size // COPY_PART_SIZE)
        bounds = [size * n // count for n in range(count + 1)]  # even: each >= 5 MiB
        copied: dict[int, str] = {}
        for number in range(1, count + 1):
            start, end = bounds[number - 1], bounds[number] - 1
            answer = await self.call(
                "upload_part_copy", f"s3://{self._bucket}/{upload_key} (resume)",
                Key=upload_key, UploadId=upload_id, PartNumber=number,
                CopySource={"Bucket": self._bucket, "Key": upload_key},
                CopySourceRange=f"bytes={start}-{end}", CopySourceIfMatch=etag,
            )
            copied[number] = str(answer["CopyPartResult"]["ETag"])
        return copied

    async def abort_multipart(self, object_key: str, upload_id: str) -> None:
        """Abort an upload; one already gone is fine. Checks it is gone (AWS may keep
        parts that were still uploading during the abort: then it aborts again)."""
        what = f"s3://{self._bucket}/{object_key} (upload abort)"

        async def abort_and_confirm() -> None:
            try:
                await self.call("abort_multipart_upload", what, Key=object_key, UploadId=upload_id)
                await self.call("list_parts", what, Key=object_key, UploadId=upload_id)
            except PermanentStorageError as error:
                if caused_by(error, NO_UPLOAD):
                    return  # gone, as it should be
                raise
            raise _StillListed(what)

        try:
            await retrying(abort_and_confirm, policy=_ABORT_POLICY, retry_on=(_StillListed,))
        except _StillListed:
            log.warning("multipart upload still listed after abort", location=what)

    async def _multipart_uploads(self, object_prefix: str) -> list[tuple[str, str]]:
        """(key, upload id) of every unfinished multipart upload under `object_prefix`."""
        found: list[tuple[str, str]] = []
        client = await self._connected()
        paginator = client.get_paginator("list_multipart_uploads")
        try:
            async for page in paginator.paginate(Bucket=self._bucket, Prefix=object_prefix):
                found.extend((item["Key"], item["UploadId"]) for item in page.get("Uploads", []))
        except (ClientError, BotoCoreError) as error:
            what = f"s3://{self._bucket}/{object_prefix} (list uploads)"
            raise classify_s3_error(error, what) from error
        return found

    async def put(self, key: str, data: bytes, *, sha256: str | None = None) -> None:
        """One PutObject: atomic on S3 (readers see the old or the new object)."""
        await self.call(
            "put_object", self.location(key), Key=self._object_key(key), Body=data,
            **self._write_options(sha256),
        )

    async def publish(self, key: str, size: int, sha256: str, etag: str) -> None:
        """Copy the completed `<key>.part` to `key` with `x-amz-meta-sha256`, then delete it.

        A server-side copy: the final key appears whole, at once, with its metadata.
        A crash after the copy leaves only the `.part` object, which the next
        cleanup removes.
        """
        if size <= MAX_COPY_OBJECT_SIZE:
            await self.call(
                "copy_object", f"{self.location(key)} (publish)", Key=self._object_key(key),
                CopySource={"Bucket": self._bucket, "Key": self._upload_key(key)},
                CopySourceIfMatch=etag, MetadataDirective="REPLACE",
                **self._write_options(sha256),
            )
        else:
            await self._copy_in_parts(key, size, sha256, etag)
        await self.remove_object(self._upload_key(key), f"{self.location(key)} (upload)")

    async def _copy_in_parts(self, key: str, size: int, sha256: str, etag: str) -> None:
        """Above 5 GiB CopyObject is refused: a multipart copy instead."""
        object_key = self._object_key(key)
        source = {"Bucket": self._bucket, "Key": self._upload_key(key)}
        what = f"{self.location(key)} (publish)"
        created = await self.call(
            "create_multipart_upload", what, Key=object_key, **self._write_options(sha256)
        )
        upload_id = str(created["UploadId"])
        try:
            parts = []
            for number, start in enumerate(range(0, size, COPY_PART_SIZE), start=1):
                end = min(start + COPY_PART_SIZE, size) - 1
                copied = await self.call(
                    "upload_part_copy", what, Key=object_key, UploadId=upload_id,
                    PartNumber=number, CopySourceRange=f"bytes={start}-{end}",
                    CopySource=source, CopySourceIfMatch=etag,
                )
                parts.append({"PartNumber": number, "ETag": copied["CopyPartResult"]["ETag"]})
            await self.call(
                "complete_multipart_upload", what, Key=object_key, UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            await asyncio.shield(self.spawn(self.abort_multipart(object_key, upload_id)))
            raise

    async def write_small(self, key: str, data: bytes) -> None:
        """PutObject: replaces the old object atomically."""
        await self.put(key, data)

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
            return await self.call("get_object", self.location(key), Key=self._object_key(key))
        except PermanentStorageError as error:
            if caused_by(error, NOT_FOUND):
                raise FileNotFoundError(self.location(key)) from None
            raise

    async def stat(self, key: str) -> ObjectInfo | None:
        """HeadObject: the size of a completed object, or None."""
        object_key = self._object_key(key)
        try:
            response = await self.call("head_object", self.location(key), Key=object_key)
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
        start = self._prefix + (f"{check_key(trimmed)}/" if trimmed else "")
        client = await self._connected()
        paginator = client.get_paginator("list_objects_v2")
        try:
            async for page in paginator.paginate(Bucket=self._bucket, Prefix=start):
                for item in page.get("Contents", []):
                    key = str(item["Key"])[len(self._prefix) :]
                    if not key.endswith(PART_SUFFIX):  # a finished upload not yet published
                        yield key
        except (ClientError, BotoCoreError) as error:
            raise classify_s3_error(error, f"s3://{self._bucket}/{start} (list)") from error

    async def shareable_url(self, key: str, expires: timedelta) -> str | None:
        """A pre-signed GET URL of the object, valid for `expires` (SigV4 allows 7 days)."""
        client = await self._connected()
        url: str = await client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self._bucket, "Key": self._object_key(key)},
            ExpiresIn=int(expires.total_seconds()),
        )
        return url

    async def remove(self, key: str) -> None:
        """DeleteObject; S3 answers a missing key with success too. With object_lock, every
        version goes (`ObjectLocked` when a lock keeps one: see `archiver.storage.s3_lock`)."""
        await self.remove_object(self._object_key(key), self.location(key))

    async def remove_object(self, object_key: str, what: str) -> None:
        """Delete `object_key` (every version of it on a destination with object_lock)."""
        if self._locks is not None:
            await self._locks.remove(object_key, what)
        else:
            await self.call("delete_object", what, Key=object_key)

    async def lock(self, key: str, until: datetime) -> None:
        """Lock the object `key` until `until` (object_lock's mode); see `Lockable`."""
        if self._locks is None:
            raise PermanentStorageError(f"{self.location(key)}: object_lock is not configured")
        await self._locks.lock(self._object_key(key), self.location(key), until)

    async def lock_problem(self) -> str | None:
        """None when the bucket has Object Lock on, else why not."""
        if self._locks is None:
            return "object_lock is not configured"
        return await self._locks.problem()

    async def remove_incomplete(self, keep: Collection[str] = ()) -> int:
        """Abort every unfinished multipart upload under our prefix (and delete every
        unpublished `.part` object) but those of keys in `keep`; return how many.

        A pass runs alone under the state lock, so every upload under the prefix
        is a leftover of an interrupted one (ours or a crashed process's).
        """
        kept = {self._upload_key(key) for key in keep}
        uploads = [u for u in await self._multipart_uploads(self._prefix) if u[0] not in kept]
        for object_key, upload_id in uploads:
            await self.abort_multipart(object_key, upload_id)
        leftovers = [key async for key in self._part_objects() if key not in kept]
        for object_key in leftovers:  # completed, but never published (a crash in between)
            await self.remove_object(object_key, f"s3://{self._bucket}/{object_key}")
        return len(uploads) + len(leftovers)

    async def _part_objects(self) -> AsyncIterator[str]:
        """Object keys under our prefix that end in `.part`: unpublished uploads."""
        client = await self._connected()
        paginator = client.get_paginator("list_objects_v2")
        try:
            async for page in paginator.paginate(Bucket=self._bucket, Prefix=self._prefix):
                for item in page.get("Contents", []):
                    if str(item["Key"]).endswith(PART_SUFFIX):
                        yield str(item["Key"])
        except (ClientError, BotoCoreError) as error:
            raise classify_s3_error(error, f"s3://{self._bucket}/{self._prefix} (list)") from error

    async def probe(self) -> None:
        """Put, get and delete a probe object; the error names what failed."""
        where = f"bucket {self._bucket} at {self.settings.endpoint_url or 'AWS'}"
        await probe_round_trip(self, where)

    async def aclose(self) -> None:
        """Let aborts in flight finish, then close the client's connections."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self._stack.aclose()
        self._client = None
