"""Server-side copies in an S3 bucket: publishing a completed upload under its final key,
and sealing an interrupted upload's durable parts to copy them into a new one (resume).

S3 has no rename: a finished `<key>.part` reaches `key` by CopyObject (up to 5 GiB) or
a multipart UploadPartCopy (above), carrying `x-amz-meta-sha256`, then goes. S3
cannot read the parts of an unfinished upload either: resuming completes the parts
that follow each other from part 1 into `<key>.part` and copies that object into a
new upload, where `S3Upload.read_back` reads it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from archiver.core.errors import PermanentStorageError
from archiver.storage.s3_bucket import MIN_PART_SIZE, S3Bucket
from archiver.storage.s3_errors import NOT_FOUND, caused_by

MiB = 1024 * 1024
MAX_COPY_OBJECT_SIZE = 5 * 1024 * MiB  # CopyObject's ceiling; above it, multipart copy
COPY_PART_SIZE = 1024 * MiB


async def publish(bucket: S3Bucket, key: str, size: int, sha256: str, etag: str) -> None:
    """Copy the completed `<key>.part` to `key` with `x-amz-meta-sha256`, then delete it.

    A server-side copy: the final key appears whole, at once, with its metadata.
    A crash after the copy leaves only the `.part` object, which the next
    cleanup removes.
    """
    if size <= MAX_COPY_OBJECT_SIZE:
        await bucket.call(
            "copy_object", f"{bucket.location(key)} (publish)", Key=bucket.object_key(key),
            CopySource={"Bucket": bucket.bucket, "Key": bucket.upload_key(key)},
            CopySourceIfMatch=etag, MetadataDirective="REPLACE",
            **bucket.write_options(sha256),
        )
    else:
        await _copy_in_parts(bucket, key, size, sha256, etag)
    await bucket.remove_object(bucket.upload_key(key), f"{bucket.location(key)} (upload)")


async def _copy_in_parts(bucket: S3Bucket, key: str, size: int, sha256: str, etag: str) -> None:
    """Above 5 GiB CopyObject is refused: a multipart copy instead."""
    object_key = bucket.object_key(key)
    source = {"Bucket": bucket.bucket, "Key": bucket.upload_key(key)}
    what = f"{bucket.location(key)} (publish)"
    created = await bucket.call(
        "create_multipart_upload", what, Key=object_key, **bucket.write_options(sha256)
    )
    upload_id = str(created["UploadId"])
    try:
        parts: list[dict[str, Any]] = []
        for number, start in enumerate(range(0, size, COPY_PART_SIZE), start=1):
            end = min(start + COPY_PART_SIZE, size) - 1
            copied = await bucket.call(
                "upload_part_copy", what, Key=object_key, UploadId=upload_id,
                PartNumber=number, CopySourceRange=f"bytes={start}-{end}",
                CopySource=source, CopySourceIfMatch=etag,
            )
            parts.append({"PartNumber": number, "ETag": copied["CopyPartResult"]["ETag"]})
        await bucket.call(
            "complete_multipart_upload", what, Key=object_key, UploadId=upload_id,
            MultipartUpload={"Parts": parts},
        )
    except BaseException:
        await asyncio.shield(bucket.spawn(bucket.abort_multipart(object_key, upload_id)))
        raise


async def seal_durable_parts(bucket: S3Bucket, upload_key: str) -> tuple[int, str] | None:
    """(size, ETag) of `<key>.part` holding the durable parts; None when nothing is."""
    uploads = [
        (str(u["Key"]), str(u["UploadId"]))
        for u in await bucket.multipart_uploads(upload_key) if u["Key"] == upload_key
    ]
    for key, upload_id in uploads[:-1]:  # an older attempt's: the newest one counts
        await bucket.abort_multipart(key, upload_id)
    if uploads:
        _, upload_id = uploads[-1]
        parts = await _contiguous_parts(bucket, upload_key, upload_id)
        if not parts:
            await bucket.abort_multipart(upload_key, upload_id)
            return None
        await bucket.call(
            "complete_multipart_upload", f"s3://{bucket.bucket}/{upload_key} (seal)",
            Key=upload_key, UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e, _ in parts]},
        )
    return await _sealed_object(bucket, upload_key)


async def _contiguous_parts(
    bucket: S3Bucket, upload_key: str, upload_id: str
) -> list[tuple[int, str, int]]:
    """(number, ETag, size) of the completed parts that follow each other from part 1."""
    found = [
        (int(p["PartNumber"]), str(p["ETag"]), int(p["Size"]))
        for p in await bucket.parts(upload_key, upload_id)
    ]
    contiguous = []
    for expected, part in enumerate(sorted(found), start=1):
        if part[0] != expected:
            break
        contiguous.append(part)
    return contiguous


async def _sealed_object(bucket: S3Bucket, upload_key: str) -> tuple[int, str] | None:
    try:
        head = await bucket.call(
            "head_object", f"s3://{bucket.bucket}/{upload_key}", Key=upload_key
        )
    except PermanentStorageError as error:
        if caused_by(error, NOT_FOUND):
            return None
        raise
    size = int(head["ContentLength"])
    return (size, str(head["ETag"])) if size >= MIN_PART_SIZE else None


async def copy_into(
    bucket: S3Bucket, upload_key: str, upload_id: str, size: int, etag: str
) -> dict[int, str]:
    """UploadPartCopy of the sealed object into the new upload, in ranges of 5 MiB+."""
    count = -(-size // COPY_PART_SIZE)
    bounds = [size * n // count for n in range(count + 1)]  # even: each >= 5 MiB
    copied: dict[int, str] = {}
    for number in range(1, count + 1):
        start, end = bounds[number - 1], bounds[number] - 1
        answer = await bucket.call(
            "upload_part_copy", f"s3://{bucket.bucket}/{upload_key} (resume)",
            Key=upload_key, UploadId=upload_id, PartNumber=number,
            CopySource={"Bucket": bucket.bucket, "Key": upload_key},
            CopySourceRange=f"bytes={start}-{end}", CopySourceIfMatch=etag,
        )
        copied[number] = str(answer["CopyPartResult"]["ETag"])
    return copied
