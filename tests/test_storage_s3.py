"""The S3 backend against a real S3-compatible server (SeaweedFS on loopback).

The conformance suite first, then what only S3 can show: multipart uploads
that never outlive an abort, a cancellation or a cleanup pass; metadata;
bounded memory with real part sizes; and what `probe` says when keys or the
bucket are wrong.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from archiver.config.storage import S3StorageSettings
from archiver.core.errors import PermanentStorageError, TransientStorageError
from archiver.storage.s3 import S3Storage
from loopback.seaweedfs import S3Server, multipart_uploads, object_metadata
from tests.storage_conformance import StorageConformance, keys_of, sha256_hex, write_upload

MiB = 1024 * 1024


def settings_for(
    server: S3Server, bucket: str, tmp_path: Path, **overrides: Any
) -> S3StorageSettings:
    """S3 settings for the test server, keys from a file as a user would give them."""
    secret_file = tmp_path / "s3-secret"
    secret_file.write_text(overrides.pop("secret_key", server.secret_key) + "\n")
    values: dict[str, Any] = {
        "type": "s3",
        "bucket": bucket,
        "prefix": "archive/",
        "endpoint_url": server.endpoint_url,
        "access_key_id": server.access_key,
        "secret_access_key_file": secret_file,
        "part_size": 5 * MiB,
        "max_concurrent_part_uploads": 1,
        "addressing_style": "path",
    }
    values.update(overrides)
    return S3StorageSettings.model_validate(values)


@pytest.fixture
async def storage(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> AsyncIterator[S3Storage]:
    """A fresh backend on an empty bucket; 5 MiB parts, one in flight (the suite's memory bound)."""
    backend = S3Storage(settings_for(s3_server, s3_bucket, tmp_path))
    yield backend
    await backend.aclose()


@pytest.fixture
async def neighbour(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> AsyncIterator[S3Storage]:
    """Another process's view of the same bucket and prefix: a second backend on it."""
    backend = S3Storage(settings_for(s3_server, s3_bucket, tmp_path))
    yield backend
    await backend.aclose()


class TestS3Conformance(StorageConformance):
    """The S3 backend passes the whole suite."""


async def no_uploads_left(server: S3Server, bucket: str) -> None:
    """Assert the bucket holds no unfinished multipart upload."""
    assert await multipart_uploads(server, bucket) == []


async def test_abort_leaves_no_multipart_upload(
    storage: S3Storage, s3_server: S3Server, s3_bucket: str
) -> None:
    """After abort, with parts already uploaded, the server lists no multipart upload."""
    upload = await storage.start_upload("s/db.tar")
    segment = await upload.open_segment(0, 0)
    for _ in range(12):
        await segment.write(os.urandom(MiB))
    assert len(await multipart_uploads(s3_server, s3_bucket)) == 1
    await upload.abort()
    await upload.abort()
    await no_uploads_left(s3_server, s3_bucket)
    assert await keys_of(storage) == []


async def test_a_cancelled_upload_task_leaves_no_multipart_upload(
    storage: S3Storage, s3_server: S3Server, s3_bucket: str
) -> None:
    """Cancelling a writer mid-segment (parts in flight) and aborting as the joiner does
    leaves nothing, even when the abort itself is cancelled half way."""
    started = asyncio.Event()

    async def archive() -> None:
        upload = await storage.start_upload("s/cancelled.tar")
        try:
            segment = await upload.open_segment(0, 0)
            while True:
                await segment.write(os.urandom(MiB))
                started.set()
        except BaseException:
            abort = asyncio.ensure_future(upload.abort())
            await asyncio.sleep(0)
            abort.cancel()  # a second cancellation must not stop the abort
            raise

    task = asyncio.create_task(archive())
    await started.wait()
    await asyncio.sleep(0.5)  # let a few parts go up
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await storage.aclose()  # waits for the shielded abort
    await no_uploads_left(s3_server, s3_bucket)


async def test_remove_incomplete_clears_leftovers_of_a_crashed_process(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    """Uploads a dead process left (with parts) are aborted by the next pass's cleanup."""
    crashed = S3Storage(settings_for(s3_server, s3_bucket, tmp_path))
    for key in ("a/1.tar", "b/2.tar"):
        upload = await crashed.start_upload(key)
        segment = await upload.open_segment(0, 0)
        await segment.write(os.urandom(6 * MiB))
    await crashed.aclose()  # never committed nor aborted, as in a kill -9
    assert len(await multipart_uploads(s3_server, s3_bucket)) == 2
    backend = S3Storage(settings_for(s3_server, s3_bucket, tmp_path))
    try:
        assert await backend.remove_incomplete() == 2
        assert await backend.remove_incomplete() == 0
    finally:
        await backend.aclose()
    await no_uploads_left(s3_server, s3_bucket)


async def test_remove_incomplete_stays_inside_the_prefix(
    storage: S3Storage, s3_server: S3Server, s3_bucket: str
) -> None:
    """Multipart uploads outside our prefix belong to someone else and are left alone."""
    async with s3_server.client() as client:
        other = await client.create_multipart_upload(Bucket=s3_bucket, Key="elsewhere/x")
        assert await storage.remove_incomplete() == 0
        await client.abort_multipart_upload(
            Bucket=s3_bucket, Key="elsewhere/x", UploadId=other["UploadId"]
        )


async def stream_object(storage: S3Storage, key: str, mebibytes: int) -> tuple[str, int]:
    """Write `mebibytes` MiB in 1 MiB chunks and commit; return (sha256, tracemalloc peak)."""
    digest = hashlib.sha256()
    upload = await storage.start_upload(key)
    tracemalloc.start()
    try:
        segment = await upload.open_segment(0, 0)
        for _ in range(mebibytes):
            chunk = os.urandom(MiB)
            digest.update(chunk)
            await segment.write(chunk)
            del chunk
        await segment.close()
        await upload.commit(size=mebibytes * MiB, sha256=digest.hexdigest())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return digest.hexdigest(), peak


@pytest.mark.parametrize(("part_mib", "in_flight"), [(5, 2), (16, 2)])
async def test_memory_is_bounded_by_parts_in_flight(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path, part_mib: int, in_flight: int
) -> None:
    """96 MiB streams in about part_size x (in flight + 1), far below the object's size."""
    backend = S3Storage(settings_for(
        s3_server, s3_bucket, tmp_path, part_size=part_mib * MiB,
        max_concurrent_part_uploads=in_flight,
    ))
    try:
        sha256, peak = await stream_object(backend, "big/big.tar", 96)
        print(f"part {part_mib} MiB x {in_flight} in flight: peak {peak / MiB:.1f} MiB")
        assert peak < (in_flight + 1) * part_mib * MiB + 8 * MiB
        assert await object_metadata(s3_server, s3_bucket, "archive/big/big.tar") == {
            "sha256": sha256
        }
        info = await backend.stat("big/big.tar")
        assert info is not None
        assert info.size == 96 * MiB
    finally:
        await backend.aclose()


async def test_sha256_is_object_metadata_small_and_multipart(
    storage: S3Storage, s3_server: S3Server, s3_bucket: str
) -> None:
    """x-amz-meta-sha256 is set on a one-PutObject upload and on a completed multipart one."""
    small = b"small object"
    upload = await storage.start_upload("m/small.tar")
    await write_upload(upload, small)
    await upload.commit(size=len(small), sha256=sha256_hex(small))
    metadata = await object_metadata(s3_server, s3_bucket, "archive/m/small.tar")
    assert metadata == {"sha256": sha256_hex(small)}
    large = os.urandom(11 * MiB)
    upload = await storage.start_upload("m/large.tar")
    await write_upload(upload, large, chunk=MiB)
    await upload.commit(size=len(large), sha256=sha256_hex(large))
    metadata = await object_metadata(s3_server, s3_bucket, "archive/m/large.tar")
    assert metadata == {"sha256": sha256_hex(large)}
    assert await storage.read_small("m/large.tar") == large


async def test_multi_segment_join_with_small_tails_and_rewind(
    storage: S3Storage, s3_server: S3Server, s3_bucket: str
) -> None:
    """Segments whose tails are under S3's 5 MiB minimum join byte-exact, even after a
    rewind in the middle segment that had parts uploaded already."""
    pieces = [os.urandom(size) for size in (7 * MiB + 3, 6 * MiB + 11, 2 * MiB + 5)]
    upload = await storage.start_upload("j/joined.tar")
    offset = 0
    for index, piece in enumerate(pieces):
        segment = await upload.open_segment(index, offset)
        if index == 1:
            for _ in range(7):
                await segment.write(os.urandom(MiB))  # a download that broke off
            await segment.rewind()
        for start in range(0, len(piece), MiB):
            await segment.write(piece[start : start + MiB])
        await segment.close()
        offset += len(piece)
    whole = b"".join(pieces)
    await upload.commit(size=len(whole), sha256=sha256_hex(whole))
    assert await storage.read_small("j/joined.tar") == whole
    await no_uploads_left(s3_server, s3_bucket)


ODD_KEYS = ["s/with space/db name.tar", "s/ünïcødé/数据库.tar", "s/a+b=c,d;e'f~(1).tar"]


@pytest.mark.parametrize("key", ODD_KEYS)
async def test_odd_but_safe_keys_round_trip(storage: S3Storage, key: str) -> None:
    """Spaces, unicode and punctuation survive upload, stat, list, read and remove."""
    upload = await storage.start_upload(key)
    await write_upload(upload, b"odd")
    await upload.commit(size=3, sha256=sha256_hex(b"odd"))
    assert await keys_of(storage) == [key]
    assert await storage.read_small(key) == b"odd"
    await storage.remove(key)
    assert await storage.stat(key) is None


async def test_location_is_an_s3_url_with_the_prefix(storage: S3Storage, s3_bucket: str) -> None:
    """location() is s3://<bucket>/<prefix><key>."""
    assert storage.location("s/db.tar") == f"s3://{s3_bucket}/archive/s/db.tar"


async def test_keys_are_listed_relative_to_the_prefix(
    storage: S3Storage, s3_server: S3Server, s3_bucket: str
) -> None:
    """Objects outside the prefix are invisible; listed keys drop the prefix."""
    async with s3_server.client() as client:
        await client.put_object(Bucket=s3_bucket, Key="other/x.json", Body=b"{}")
    await storage.write_small("s/manifest.json", b"{}")
    assert await keys_of(storage) == ["s/manifest.json"]
    assert await storage.stat("x.json") is None


async def test_storage_class_and_encryption_are_accepted(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    """StorageClass and SSE go on PutObject, CreateMultipartUpload and the metadata copy."""
    backend = S3Storage(settings_for(
        s3_server, s3_bucket, tmp_path, storage_class="STANDARD_IA",
        server_side_encryption="AES256",
    ))
    try:
        await backend.write_small("c/manifest.json", b"{}")
        data = os.urandom(6 * MiB)
        upload = await backend.start_upload("c/db.tar")
        await write_upload(upload, data, chunk=MiB)
        await upload.commit(size=len(data), sha256=sha256_hex(data))
        assert await backend.read_small("c/db.tar") == data
        metadata = await object_metadata(s3_server, s3_bucket, "archive/c/db.tar")
        assert metadata == {"sha256": sha256_hex(data)}
    finally:
        await backend.aclose()


async def test_probe_names_rejected_credentials(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    """A wrong secret fails the SigV4 check: probe says 'credentials', never the secret."""
    backend = S3Storage(settings_for(s3_server, s3_bucket, tmp_path, secret_key="wrong-secret"))
    try:
        with pytest.raises(PermanentStorageError, match="credentials") as caught:
            await backend.probe()
    finally:
        await backend.aclose()
    assert "wrong-secret" not in str(caught.value)
    assert s3_bucket in str(caught.value)


async def test_probe_names_an_unknown_access_key(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    """An access key the server does not know fails probe with 'credentials'."""
    backend = S3Storage(settings_for(s3_server, s3_bucket, tmp_path, access_key_id="nosuchkey"))
    try:
        with pytest.raises(PermanentStorageError, match="credentials"):
            await backend.probe()
    finally:
        await backend.aclose()


async def test_probe_names_a_missing_bucket(s3_server: S3Server, tmp_path: Path) -> None:
    """A bucket that does not exist fails probe with 'bucket does not exist'."""
    backend = S3Storage(settings_for(s3_server, "c66-no-such-bucket", tmp_path))
    try:
        with pytest.raises(PermanentStorageError, match="bucket does not exist"):
            await backend.probe()
    finally:
        await backend.aclose()


async def test_an_unreachable_endpoint_is_named(s3_bucket: str, s3_server: S3Server,
                                                tmp_path: Path) -> None:
    """No server on the port: operations are transient errors, probe says 'unreachable'."""
    backend = S3Storage(settings_for(
        s3_server, s3_bucket, tmp_path, endpoint_url="http://127.0.0.1:9",
    ))
    try:
        with pytest.raises(TransientStorageError, match="unreachable"):
            await backend.stat("x")
        with pytest.raises(PermanentStorageError, match="unreachable"):
            await backend.probe()
    finally:
        await backend.aclose()


async def test_uploads_live_under_a_part_key_until_published(
    storage: S3Storage, s3_server: S3Server, s3_bucket: str
) -> None:
    """A multipart upload is made at `<key>.part`; commit publishes `key`; the .part is gone."""
    data = os.urandom(6 * MiB)
    upload = await storage.start_upload("p/db.tar")
    await write_upload(upload, data, chunk=MiB)
    [listed] = await multipart_uploads(s3_server, s3_bucket)
    assert listed["Key"] == "archive/p/db.tar.part"
    await upload.commit(size=len(data), sha256=sha256_hex(data))
    async with s3_server.client() as client:
        listing = await client.list_objects_v2(Bucket=s3_bucket, Prefix="archive/")
    assert [item["Key"] for item in listing["Contents"]] == ["archive/p/db.tar"]
    assert await multipart_uploads(s3_server, s3_bucket) == []


async def test_a_completed_but_unpublished_part_is_hidden_and_cleaned_up(
    storage: S3Storage, s3_server: S3Server, s3_bucket: str
) -> None:
    """A `.part` object (a crash between completion and publication) is not listed, then removed."""
    async with s3_server.client() as client:
        await client.put_object(Bucket=s3_bucket, Key="archive/p/db.tar.part", Body=b"half")
    assert await keys_of(storage) == []
    assert await storage.stat("p/db.tar") is None
    assert await storage.remove_incomplete() == 1
    async with s3_server.client() as client:
        listing = await client.list_objects_v2(Bucket=s3_bucket, Prefix="archive/")
    assert listing.get("Contents", []) == []
