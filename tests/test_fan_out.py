"""One upload into several destinations: same bytes everywhere, each failing alone, slowest pace."""

from __future__ import annotations

import asyncio
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyrage
import pytest

from archiver.config.keys import parse_recipient
from archiver.config.settings import LocalDestination
from archiver.core.errors import PermanentStorageError
from archiver.storage.base import Storage, ThreadWritableSegment
from archiver.storage.destinations import Destination
from archiver.storage.local import LocalStorage
from archiver.transfer.fan_out import FanOut
from tests.archive_backends import s3_backend
from tests.memory_storage import MemoryStorage, MemoryUpload
from tests.s3_server import S3Server

MiB = 1024 * 1024
KEY = "stack/mysql/db/2026-01-01T000000Z_1/db.tar"


def _destination(name: str, storage: Storage, recipients: tuple[Any, ...] = ()) -> Destination:
    return Destination(name, LocalDestination(name=name), storage, None, recipients)


def _local(tmp_path: Path, name: str, executor: ThreadPoolExecutor) -> Destination:
    return _destination(name, LocalStorage(tmp_path / name, executor=executor))


@pytest.fixture
def executor() -> Any:
    with ThreadPoolExecutor(4) as pool:
        yield pool


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def _write_all(fan_out: FanOut, data: bytes, parts: int = 3) -> None:
    """Write `data` as `parts` segments, in order, and commit (as the join does)."""
    upload = await fan_out.start_upload(KEY)
    size = -(-len(data) // parts)
    for index in range(parts):
        segment = await upload.open_segment(index, index * size)
        chunk = data[index * size : (index + 1) * size]
        for start in range(0, len(chunk), 256 * 1024):
            await segment.write(chunk[start : start + 256 * 1024])
        await segment.close()
    await upload.commit(size=len(data), sha256=_sha(data))


class _FullUpload(MemoryUpload):
    """A memory upload that runs out of space after `room` bytes (as a full disk does)."""

    room = 300 * 1024

    async def write_at(self, chunk: bytes, offset: int) -> None:
        if offset + len(chunk) > self.room:
            raise PermanentStorageError("no space left on device")
        await super().write_at(chunk, offset)


class _FullStorage(MemoryStorage):
    """A destination whose disk fills up."""

    async def start_upload(self, key: str) -> MemoryUpload:
        upload = _FullUpload(self, key)
        self._uploads[key] = upload
        return upload


class _GatedUpload(MemoryUpload):
    """Each write waits for the test to let it through: a destination as slow as we say."""

    entered: asyncio.Event
    gate: asyncio.Event

    async def write_at(self, chunk: bytes, offset: int) -> None:
        self.entered.set()
        await self.gate.wait()
        await super().write_at(chunk, offset)


class _GatedStorage(MemoryStorage):
    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()

    async def start_upload(self, key: str) -> MemoryUpload:
        upload = _GatedUpload(self, key)
        upload.entered, upload.gate = self.entered, self.gate
        self._uploads[key] = upload
        return upload


async def test_every_destination_commits_the_same_bytes(
    tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    """Two local folders and a memory store all hold the exact bytes written once."""
    data = os.urandom(3 * MiB + 17)
    memory = MemoryStorage()
    destinations = [_local(tmp_path, "a", executor), _local(tmp_path, "b", executor),
                    _destination("m", memory)]
    fan_out = FanOut(destinations, KEY)

    await _write_all(fan_out, data)

    assert [m.destination.name for m in fan_out.committed()] == ["a", "b", "m"]
    assert (tmp_path / "a" / KEY).read_bytes() == data
    assert (tmp_path / "b" / KEY).read_bytes() == data
    assert await memory.read_small(KEY) == data


async def test_local_destinations_are_written_from_the_hashing_thread(
    tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    """Folders only: the tee's segments take writes from a worker thread (one hand-off)."""
    fan_out = FanOut([_local(tmp_path, "a", executor), _local(tmp_path, "b", executor)], KEY)
    upload = await fan_out.start_upload(KEY)
    segment = await upload.open_segment(0, 0)
    assert isinstance(segment, ThreadWritableSegment)
    await asyncio.to_thread(segment.write_in_thread, [b"abc", memoryview(b"def")])
    await segment.close()
    await upload.commit(size=6, sha256=_sha(b"abcdef"))
    assert (tmp_path / "b" / KEY).read_bytes() == b"abcdef"


async def test_a_destination_that_fills_up_fails_alone(
    tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    """A full destination drops out with its error, its upload gone; the other commits."""
    data = os.urandom(MiB)
    full = _FullStorage()
    fan_out = FanOut([_destination("full", full), _local(tmp_path, "ok", executor)], KEY)

    await _write_all(fan_out, data)

    [failed] = fan_out.failed()
    assert failed.destination.name == "full"
    assert "no space left" in str(failed.error)
    assert full.pending_upload(KEY) is None  # aborted
    assert [m.destination.name for m in fan_out.committed()] == ["ok"]
    assert (tmp_path / "ok" / KEY).read_bytes() == data


async def test_a_destination_that_cannot_start_fails_alone(
    tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    """A destination whose folder cannot be made (its path is a file) fails at the start."""
    (tmp_path / "blocked").write_text("a file where the archive folder should be")
    fan_out = FanOut([_local(tmp_path, "blocked", executor), _local(tmp_path, "ok", executor)],
                     KEY)

    await _write_all(fan_out, b"x" * 1000)

    assert [m.destination.name for m in fan_out.failed()] == ["blocked"]
    assert (tmp_path / "ok" / KEY).read_bytes() == b"x" * 1000


async def test_when_every_destination_fails_the_upload_fails(
    tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    """No destination left: the write raises the first destination's error."""
    fan_out = FanOut([_destination("one", _FullStorage()), _destination("two", _FullStorage())],
                     KEY)
    with pytest.raises(PermanentStorageError, match="no space left"):
        await _write_all(fan_out, os.urandom(MiB))
    assert {m.destination.name for m in fan_out.failed()} == {"one", "two"}


async def test_the_slowest_destination_sets_the_pace(
    tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    """A write returns only when every destination took it: back-pressure from the slowest."""
    slow = _GatedStorage()
    fast = MemoryStorage()
    fan_out = FanOut([_destination("slow", slow), _destination("fast", fast)], KEY)
    upload = await fan_out.start_upload(KEY)
    segment = await upload.open_segment(0, 0)

    writing = asyncio.ensure_future(segment.write(b"first chunk"))
    await slow.entered.wait()
    fast_upload = fast.pending_upload(KEY)
    assert fast_upload is not None
    assert fast_upload.written == b"first chunk"
    assert not writing.done()  # held by the slow destination
    slow.gate.set()
    await writing
    await segment.close()
    await upload.commit(size=11, sha256=_sha(b"first chunk"))
    assert await slow.read_small(KEY) == b"first chunk"


async def test_an_encrypted_destination_gets_ciphertext_beside_the_plaintext(
    tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    """Each destination gets its own stream: plaintext in one, age ciphertext in the other."""
    identity = pyrage.x25519.Identity.generate()
    recipient = parse_recipient(str(identity.to_public()))
    data = os.urandom(MiB + 5)
    sealed = _destination("sealed", LocalStorage(tmp_path / "s", executor=executor), (recipient,))
    fan_out = FanOut([_local(tmp_path, "plain", executor), sealed], KEY)

    await _write_all(fan_out, data)

    plain_member, sealed_member = fan_out.members
    assert sealed_member.key == KEY + ".age"
    stored = (tmp_path / "s" / (KEY + ".age")).read_bytes()
    assert data not in stored
    assert data[:4096] not in stored
    assert pyrage.decrypt(stored, [identity]) == data
    assert sealed_member.stored == (len(stored), _sha(stored))
    assert plain_member.stored is None
    assert (tmp_path / "plain" / KEY).read_bytes() == data


async def _suspended(storage: Storage, data: bytes, length: int) -> None:
    """Leave an unfinished upload of KEY holding the first `length` bytes of `data`."""
    upload = await storage.start_upload(KEY)
    segment = await upload.open_segment(0, 0)
    for start in range(0, length, MiB):
        await segment.write(data[start : min(start + MiB, length)])
    await segment.close()
    await upload.suspend()


async def _resume_and_finish(fan_out: FanOut, data: bytes) -> int:
    resumed = await fan_out.resume_upload(KEY)
    assert resumed is not None
    durable = resumed.durable
    assert await resumed.upload.read_back(0, 1000) == data[:1000]
    segment = await resumed.upload.open_segment(0, durable)
    for start in range(durable, len(data), 700 * 1024):
        await segment.write(data[start : start + 700 * 1024])
    await segment.close()
    await resumed.upload.commit(size=len(data), sha256=_sha(data))
    return durable


async def test_a_resume_starts_where_the_destination_with_fewest_bytes_stopped(
    tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    """Two folders left at 2 MiB and 5 MiB: the download resumes at 2 MiB, both end whole."""
    data = os.urandom(7 * MiB + 3)
    behind, ahead = _local(tmp_path, "behind", executor), _local(tmp_path, "ahead", executor)
    await _suspended(behind.storage, data, 2 * MiB)
    await _suspended(ahead.storage, data, 5 * MiB)

    durable = await _resume_and_finish(FanOut([ahead, behind], KEY), data)

    assert durable == 2 * MiB
    assert (tmp_path / "behind" / KEY).read_bytes() == data
    assert (tmp_path / "ahead" / KEY).read_bytes() == data


async def test_a_resume_into_s3_and_a_folder_that_holds_more(
    tmp_path: Path, executor: ThreadPoolExecutor, s3_server: S3Server, s3_bucket: str
) -> None:
    """S3 keeps whole 5 MiB parts (10 MiB of 11): the folder skips the MiB it holds already."""
    from archiver.config.storage import S3StorageSettings
    from archiver.storage.s3 import S3Storage

    secret = tmp_path / "secret"
    secret.write_text(s3_server.secret_key)
    backend = s3_backend(s3_server, s3_bucket, secret)
    s3 = S3Storage(S3StorageSettings.model_validate(backend.storage))
    data = os.urandom(13 * MiB + 99)
    folder = _local(tmp_path, "folder", executor)
    try:
        await _suspended(s3, data, 11 * MiB)
        await _suspended(folder.storage, data, 11 * MiB + 12345)
        fan_out = FanOut([folder, _destination("s3", s3)], KEY)

        durable = await _resume_and_finish(fan_out, data)

        assert durable == 10 * MiB
        assert await backend.read(KEY) == data
        assert (tmp_path / "folder" / KEY).read_bytes() == data
    finally:
        await s3.aclose()


async def test_nothing_to_resume_in_one_destination_means_a_fresh_start(
    tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    """One destination holds a partial upload, the other nothing: no resume; a fresh upload
    replaces the partial one."""
    data = os.urandom(3 * MiB)
    first, second = _local(tmp_path, "first", executor), _local(tmp_path, "second", executor)
    await _suspended(first.storage, data, 2 * MiB)
    fan_out = FanOut([first, second], KEY)

    assert await fan_out.resume_upload(KEY) is None
    await _write_all(fan_out, data)

    assert (tmp_path / "first" / KEY).read_bytes() == data
    assert not list((tmp_path / "first").rglob("*.part"))
