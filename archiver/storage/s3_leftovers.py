"""What a pass's cleanup takes from an S3 bucket: unfinished multipart uploads and
completed but unpublished `.part` objects under our prefix, but those to resume and
what another process is writing beside the pass (`Storage.remove_incomplete`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from datetime import datetime, timedelta
from typing import Any

from archiver.core.errors import PermanentStorageError
from archiver.storage.base import PART_SUFFIX, removable_leftover, written_beside_passes
from archiver.storage.s3_bucket import S3Bucket
from archiver.storage.s3_errors import NO_UPLOAD, caused_by


async def remove_incomplete(bucket: S3Bucket, keep: Collection[str], idle_for: timedelta) -> int:
    """Abort every unfinished multipart upload under our prefix (and delete every
    unpublished `.part` object) but those of keys in `keep` and another process's probe
    or staging copy while it is written; return how many."""
    kept = {bucket.upload_key(key) for key in keep}
    removed = 0
    for upload in await bucket.multipart_uploads(bucket.prefix):
        object_key, upload_id = str(upload["Key"]), str(upload["UploadId"])
        if object_key not in kept and await _upload_is_leftover(bucket, upload, idle_for):
            await bucket.abort_multipart(object_key, upload_id)
            removed += 1
    leftovers = [
        object_key async for object_key, modified in _part_objects(bucket)
        if object_key not in kept
        and removable_leftover(_relative(bucket, object_key), modified, idle_for=idle_for)
    ]
    for object_key in leftovers:  # completed, but never published (a crash in between)
        await bucket.remove_object(object_key, f"s3://{bucket.bucket}/{object_key}")
    return removed + len(leftovers)


def _relative(bucket: S3Bucket, object_key: str) -> str:
    return object_key.removeprefix(bucket.prefix)


async def _upload_is_leftover(
    bucket: S3Bucket, upload: dict[str, Any], idle_for: timedelta
) -> bool:
    """Whether an unfinished multipart upload is to go: when it began, and if that is
    long ago, when its newest part was written (an import's staging copy may take hours)."""
    key = _relative(bucket, str(upload["Key"]))
    if not removable_leftover(key, upload.get("Initiated"), idle_for=idle_for):
        return False
    if not written_beside_passes(key):
        return True
    try:
        parts = await bucket.parts(str(upload["Key"]), str(upload["UploadId"]))
    except PermanentStorageError as error:
        if caused_by(error, NO_UPLOAD):
            return False  # finished or aborted meanwhile: nothing left to remove
        raise
    written = [part["LastModified"] for part in parts if part.get("LastModified")]
    last = max(written, default=upload.get("Initiated"))
    return removable_leftover(key, last, idle_for=idle_for)


async def _part_objects(bucket: S3Bucket) -> AsyncIterator[tuple[str, datetime | None]]:
    """(object key, last modified) of the objects under our prefix that end in `.part`:
    unpublished uploads."""
    what = f"s3://{bucket.bucket}/{bucket.prefix} (list)"
    async for item in bucket.pages("list_objects_v2", what, "Contents", Prefix=bucket.prefix):
        if str(item["Key"]).endswith(PART_SUFFIX):
            yield str(item["Key"]), item.get("LastModified")
