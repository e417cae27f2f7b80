"""One S3 bucket under one prefix, through one aiobotocore client: the calls every part of
the S3 backend makes (`s3` the Storage protocol, `s3_upload`, `s3_copies`, `s3_leftovers`,
`s3_lock`), with botocore's errors classified and the keys named under our prefix."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import structlog
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from archiver.config.storage import S3StorageSettings
from archiver.core.errors import ConfigError, PermanentStorageError
from archiver.core.retry import Backoff, RetryPolicy, retrying
from archiver.storage.base import PART_SUFFIX, check_final_key, check_key
from archiver.storage.s3_errors import NO_UPLOAD, caused_by, classify_s3_error
from archiver.storage.s3_lock import ObjectLocks

log = structlog.get_logger(__name__)

MIN_PART_SIZE = 5 * 1024 * 1024  # S3's floor for every part but the last (copied ones too)

# An abort is confirmed with ListParts, and repeated while the upload is still listed.
_ABORT_POLICY = RetryPolicy(retries=2, backoff=Backoff(base=0.2, cap=1.0))


class _StillListed(Exception):
    """The multipart upload is still listed after an abort."""


def normalised_prefix(prefix: str) -> str:
    """'' or a folder-like prefix ending in '/' (so 'backups' means 'backups/...')."""
    trimmed = prefix.strip("/")
    return f"{check_key(trimmed)}/" if trimmed else ""


def read_secret(path: Path | None) -> str | None:
    """The secret access key in `path` (None: none configured); ConfigError naming the key."""
    if path is None:
        return None
    try:
        return path.read_text().strip()
    except OSError as error:
        raise ConfigError(
            f"storage.secret_access_key_file {path}: cannot read ({error.strerror})"
        ) from None


def client_config(settings: S3StorageSettings) -> AioConfig:
    """botocore's settings for our client: SigV4, its own retries, a pool for the parts."""
    return AioConfig(
        # SigV4 everywhere, pre-signed URLs included (botocore would sign those with
        # the deprecated SigV2 in us-east-1).
        signature_version="s3v4",
        retries={"max_attempts": 5, "mode": "standard"},
        connect_timeout=15,
        read_timeout=120,
        max_pool_connections=max(10, 2 * settings.max_concurrent_part_uploads),
        s3={"addressing_style": settings.addressing_style},
        # New botocore sends CRC checksums by default; several S3-compatible
        # services reject them. Send and check them only where S3 requires it.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )


class S3Bucket:
    """Calls on one bucket under one prefix (the `UploadHost` of `s3_upload`, the
    `LockHost` of `s3_lock`); background aborts are waited for on `aclose`."""

    def __init__(self, settings: S3StorageSettings) -> None:
        self.settings = settings
        self._bucket = settings.bucket
        self.prefix = normalised_prefix(settings.prefix)
        self._secret = read_secret(settings.secret_access_key_file)
        self._stack = AsyncExitStack()
        self._client: Any = None
        self._client_lock = asyncio.Lock()
        self._background: set[asyncio.Future[None]] = set()
        # Part uploads in flight across all uploads of this storage.
        self.part_upload_limit = asyncio.Semaphore(settings.max_concurrent_part_uploads)
        # With object_lock: committed objects are locked, and removals go version by version.
        self.locks = ObjectLocks(self, settings.object_lock) if settings.object_lock else None

    @property
    def bucket(self) -> str:
        """The bucket's name."""
        return self._bucket

    @property
    def part_size(self) -> int:
        """Bytes per part of a multipart upload."""
        return self.settings.part_size

    async def connected(self) -> Any:
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
                        config=client_config(self.settings), **credentials,
                    )
                )
            return self._client

    async def call(self, operation: str, what: str, **params: Any) -> dict[str, Any]:
        """Run one S3 operation on our bucket; botocore errors become StorageErrors."""
        client = await self.connected()
        try:
            response: dict[str, Any] = await getattr(client, operation)(
                Bucket=self._bucket, **params
            )
        except (ClientError, BotoCoreError) as error:
            raise classify_s3_error(error, what) from error
        return response

    async def pages(
        self, operation: str, what: str, listed: str, **params: Any
    ) -> AsyncIterator[dict[str, Any]]:
        """The `listed` entries of every page of a paginated S3 listing on our bucket."""
        paginator = (await self.connected()).get_paginator(operation)
        try:
            async for page in paginator.paginate(Bucket=self._bucket, **params):
                for entry in page.get(listed, []):
                    yield entry
        except (ClientError, BotoCoreError) as error:
            raise classify_s3_error(error, what) from error

    def spawn(self, work: Any) -> asyncio.Future[None]:
        """Run `work` in a task that `aclose` waits for (aborts must not be lost)."""
        task: asyncio.Future[None] = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def object_key(self, key: str) -> str:
        """The bucket's key of our `key`."""
        return self.prefix + check_final_key(key)

    def upload_key(self, key: str) -> str:
        """Where an unfinished upload of `key` lives: never under the final key."""
        return self.object_key(key) + PART_SUFFIX

    def location(self, key: str) -> str:
        """`s3://<bucket>/<prefix><key>`."""
        return f"s3://{self._bucket}/{self.object_key(key)}"

    def write_options(self, sha256: str | None = None) -> dict[str, Any]:
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

    async def multipart_uploads(self, object_prefix: str) -> list[dict[str, Any]]:
        """ListMultipartUploads under `object_prefix`, every page: Key, UploadId, Initiated."""
        what = f"s3://{self._bucket}/{object_prefix} (list uploads)"
        return [
            upload async for upload in
            self.pages("list_multipart_uploads", what, "Uploads", Prefix=object_prefix)
        ]

    async def parts(self, upload_key: str, upload_id: str) -> list[dict[str, Any]]:
        """ListParts of an unfinished upload, every page: PartNumber, ETag, Size, LastModified."""
        what = f"s3://{self._bucket}/{upload_key} (parts)"
        return [
            part async for part in
            self.pages("list_parts", what, "Parts", Key=upload_key, UploadId=upload_id)
        ]

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

    async def put(self, key: str, data: bytes, *, sha256: str | None = None) -> None:
        """One PutObject: atomic on S3 (readers see the old or the new object)."""
        await self.call(
            "put_object", self.location(key), Key=self.object_key(key), Body=data,
            **self.write_options(sha256),
        )

    async def remove_object(self, object_key: str, what: str) -> None:
        """Delete `object_key` (every version of it on a destination with object_lock)."""
        if self.locks is not None:
            await self.locks.remove(object_key, what)
        else:
            await self.call("delete_object", what, Key=object_key)

    async def aclose(self) -> None:
        """Let aborts in flight finish, then close the client's connections."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self._stack.aclose()
        self._client = None
