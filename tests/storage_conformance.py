"""The one conformance suite for the Storage protocol (`archiver.storage.base`).

Every backend runs the same tests: a test module defines a `storage` fixture
(yielding a fresh, empty backend), a `neighbour` fixture (another process's view of
the same place: a second backend object on it) and a class inheriting
`StorageConformance`:

    class TestMyBackendConformance(StorageConformance):
        keeps_data_in_memory = False

The in-memory backend is the reference; local, S3 and SFTP must behave alike.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tracemalloc
from datetime import timedelta
from typing import ClassVar

import pytest

from archiver.core.errors import IntegrityError, PermanentStorageError, StorageError
from archiver.storage.base import PROBE_PREFIX, STAGING_FOLDER, Storage, Upload

MiB = 1024 * 1024
HOSTILE_KEYS = ["../x", "a/../../x", "/abs", "a//b", "a/./b", "a/\x00b", "a\\b", "", "a/"]


async def keys_of(storage: Storage, prefix: str = "") -> list[str]:
    """Every key `list` yields under `prefix`."""
    return [key async for key in storage.list(prefix)]


async def write_upload(upload: Upload, data: bytes, *, chunk: int = 4096) -> None:
    """Write `data` as segment 0 in `chunk`-sized writes and close the segment."""
    segment = await upload.open_segment(0, 0)
    for start in range(0, len(data), chunk):
        await segment.write(data[start : start + chunk])
    await segment.close()


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of `data`."""
    return hashlib.sha256(data).hexdigest()


class StorageConformance:
    """Inherit in a `Test...` class beside a `storage` fixture to check a backend."""

    keeps_data_in_memory: ClassVar[bool] = False
    """True for backends that hold objects in RAM: the bounded-memory test is skipped."""

    async def test_upload_is_invisible_until_commit(self, storage: Storage) -> None:
        """An unfinished upload is not seen by stat, list or read_small; commit shows it whole."""
        data = os.urandom(10_000)
        upload = await storage.start_upload("s/db/backup/db.tar")
        await write_upload(upload, data)
        assert await storage.stat("s/db/backup/db.tar") is None
        assert await keys_of(storage) == []
        with pytest.raises(FileNotFoundError):
            await storage.read_small("s/db/backup/db.tar")
        await upload.commit(size=len(data), sha256=sha256_hex(data))
        info = await storage.stat("s/db/backup/db.tar")
        assert info is not None
        assert (info.key, info.size) == ("s/db/backup/db.tar", len(data))
        assert await keys_of(storage) == ["s/db/backup/db.tar"]
        assert await storage.read_small("s/db/backup/db.tar") == data

    async def test_empty_upload_commits_an_empty_object(self, storage: Storage) -> None:
        """A zero-byte upload commits to an object of size 0."""
        upload = await storage.start_upload("empty.tar")
        await write_upload(upload, b"")
        await upload.commit(size=0, sha256=sha256_hex(b""))
        info = await storage.stat("empty.tar")
        assert info is not None
        assert info.size == 0

    async def test_concurrent_segments_join_at_their_offsets(self, storage: Storage) -> None:
        """Segments written concurrently, interleaved, join in index order."""
        pieces = [os.urandom(size) for size in (70_000, 1, 33_333, 50_000)]
        offsets = [sum(len(piece) for piece in pieces[:index]) for index in range(len(pieces))]
        upload = await storage.start_upload("joined.tar")

        async def write_segment(index: int) -> None:
            segment = await upload.open_segment(index, offsets[index])
            piece = pieces[index]
            for start in range(0, len(piece), 4096):
                await segment.write(piece[start : start + 4096])
                await asyncio.sleep(0)  # let the other segments interleave
            await segment.close()

        await asyncio.gather(*(write_segment(index) for index in reversed(range(len(pieces)))))
        whole = b"".join(pieces)
        await upload.commit(size=len(whole), sha256=sha256_hex(whole))
        assert await storage.read_small("joined.tar") == whole

    async def test_rewind_restarts_the_segment_at_its_offset(self, storage: Storage) -> None:
        """After rewind, what the segment writes replaces what it wrote before."""
        first, second = b"A" * 5000, b"B" * 6000
        upload = await storage.start_upload("rewound.tar")
        head = await upload.open_segment(0, 0)
        await head.write(first)
        await head.close()
        tail = await upload.open_segment(1, len(first))
        await tail.write(b"garbage that a failed download left")
        await tail.rewind()
        await tail.write(second)
        await tail.close()
        await upload.commit(size=len(first) + len(second), sha256=sha256_hex(first + second))
        assert await storage.read_small("rewound.tar") == first + second

    async def test_commit_with_wrong_size_fails_and_abort_cleans_up(self, storage: Storage) -> None:
        """A size mismatch raises IntegrityError, publishes nothing, and abort still works."""
        upload = await storage.start_upload("short.tar")
        await write_upload(upload, b"x" * 100)
        with pytest.raises(IntegrityError):
            await upload.commit(size=101, sha256=sha256_hex(b"x" * 101))
        assert await storage.stat("short.tar") is None
        await upload.abort()
        assert await keys_of(storage) == []
        assert await storage.remove_incomplete() == 0

    async def test_abort_removes_every_trace_and_is_idempotent(self, storage: Storage) -> None:
        """abort leaves nothing to list, stat or clean up, and may be called twice."""
        upload = await storage.start_upload("f/aborted.tar")
        await write_upload(upload, os.urandom(5000))
        await upload.abort()
        await upload.abort()
        assert await storage.stat("f/aborted.tar") is None
        assert await keys_of(storage) == []
        assert await storage.remove_incomplete() == 0

    async def test_abort_after_commit_keeps_the_object(self, storage: Storage) -> None:
        """A `finally: abort()` after a successful commit does not undo it."""
        upload = await storage.start_upload("kept.tar")
        await write_upload(upload, b"kept")
        await upload.commit(size=4, sha256=sha256_hex(b"kept"))
        await upload.abort()
        assert await storage.read_small("kept.tar") == b"kept"

    async def test_start_upload_discards_an_earlier_unfinished_one(self, storage: Storage) -> None:
        """A second start_upload of a key wins; the first can no longer publish or harm it."""
        old = await storage.start_upload("again.tar")
        await write_upload(old, b"old bytes")
        new = await storage.start_upload("again.tar")
        await write_upload(new, b"new bytes")
        await new.commit(size=9, sha256=sha256_hex(b"new bytes"))
        with pytest.raises(StorageError):
            await old.commit(size=9, sha256=sha256_hex(b"old bytes"))
        await old.abort()
        assert await storage.read_small("again.tar") == b"new bytes"
        assert await storage.remove_incomplete() == 0

    async def test_upload_replaces_an_existing_object_on_commit(self, storage: Storage) -> None:
        """Committing over a completed object replaces it; until then the old one is served."""
        await storage.write_small("over.tar", b"previous")
        upload = await storage.start_upload("over.tar")
        await write_upload(upload, b"replacement")
        assert await storage.read_small("over.tar") == b"previous"
        await upload.commit(size=11, sha256=sha256_hex(b"replacement"))
        assert await storage.read_small("over.tar") == b"replacement"

    async def test_read_back_returns_written_bytes(self, storage: Storage) -> None:
        """read_back sees what the segments wrote, before commit."""
        if not storage.supports_read_back:
            pytest.skip("backend does not support read_back")
        data = os.urandom(20_000)
        upload = await storage.start_upload("readback.tar")
        await write_upload(upload, data)
        assert await upload.read_back(0, len(data)) == data
        assert await upload.read_back(1234, 100) == data[1234:1334]
        await upload.abort()

    async def test_write_small_replaces_atomically(self, storage: Storage) -> None:
        """write_small replaces the old content whole and leaves no temporary object."""
        await storage.write_small("m/manifest.json", b'{"v": 1}')
        await storage.write_small("m/manifest.json", b'{"v": 2, "longer": true}')
        assert await storage.read_small("m/manifest.json") == b'{"v": 2, "longer": true}'
        info = await storage.stat("m/manifest.json")
        assert info is not None
        assert info.size == len(b'{"v": 2, "longer": true}')
        assert await keys_of(storage) == ["m/manifest.json"]
        assert await storage.remove_incomplete() == 0

    async def test_read_small_of_a_missing_key_raises_file_not_found(
        self, storage: Storage
    ) -> None:
        """read_small of a missing key raises FileNotFoundError, stat returns None."""
        with pytest.raises(FileNotFoundError):
            await storage.read_small("no/such/manifest.json")
        assert await storage.stat("no/such/manifest.json") is None

    async def test_list_yields_keys_under_a_folder_prefix(self, storage: Storage) -> None:
        """list(prefix) yields the keys inside that folder only (not siblings sharing a stem)."""
        for key in ("a/b/1", "a/b/2", "a/c/3", "ab/4", "top"):
            await storage.write_small(key, key.encode())
        assert sorted(await keys_of(storage)) == ["a/b/1", "a/b/2", "a/c/3", "ab/4", "top"]
        assert sorted(await keys_of(storage, "a")) == ["a/b/1", "a/b/2", "a/c/3"]
        assert sorted(await keys_of(storage, "a/b/")) == ["a/b/1", "a/b/2"]
        assert await keys_of(storage, "missing") == []

    async def test_remove_is_idempotent(self, storage: Storage) -> None:
        """remove deletes, a second remove is fine, and the key can be written again."""
        await storage.write_small("r/s/t.json", b"1")
        await storage.remove("r/s/t.json")
        await storage.remove("r/s/t.json")
        await storage.remove("never/was.json")
        assert await storage.stat("r/s/t.json") is None
        assert await keys_of(storage) == []
        await storage.write_small("r/s/t.json", b"2")
        assert await storage.read_small("r/s/t.json") == b"2"

    async def test_remove_incomplete_clears_leftovers(self, storage: Storage) -> None:
        """remove_incomplete removes unfinished uploads only, and counts them."""
        for key in ("x/1.tar", "x/2.tar"):
            upload = await storage.start_upload(key)
            await write_upload(upload, b"partial")
        done = await storage.start_upload("x/3.tar")
        await write_upload(done, b"complete")
        await done.commit(size=8, sha256=sha256_hex(b"complete"))
        assert await storage.remove_incomplete() == 2
        assert await storage.remove_incomplete() == 0
        assert await keys_of(storage) == ["x/3.tar"]

    @pytest.mark.parametrize("key", HOSTILE_KEYS)
    async def test_hostile_keys_are_refused(self, storage: Storage, key: str) -> None:
        """Keys that could leave the root are refused by every operation."""
        with pytest.raises(PermanentStorageError):
            await storage.write_small(key, b"x")
        with pytest.raises(PermanentStorageError):
            await storage.start_upload(key)
        with pytest.raises(PermanentStorageError):
            await storage.read_small(key)
        with pytest.raises(PermanentStorageError):
            await storage.stat(key)
        with pytest.raises(PermanentStorageError):
            await storage.remove(key)
        with pytest.raises(PermanentStorageError):
            storage.location(key)

    async def test_large_object_streams_in_bounded_memory(self, storage: Storage) -> None:
        """64 MiB written in 1 MiB chunks never holds more than a few chunks in memory."""
        if self.keeps_data_in_memory:
            pytest.skip("backend keeps objects in memory")
        digest = hashlib.sha256()
        upload = await storage.start_upload("big/big.tar")
        tracemalloc.start()
        try:
            segment = await upload.open_segment(0, 0)
            for _ in range(64):
                chunk = os.urandom(MiB)
                digest.update(chunk)
                await segment.write(chunk)
                del chunk
            await segment.close()
            await upload.commit(size=64 * MiB, sha256=digest.hexdigest())
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 16 * MiB
        info = await storage.stat("big/big.tar")
        assert info is not None
        assert info.size == 64 * MiB
        assert sha256_hex(await storage.read_small("big/big.tar")) == digest.hexdigest()

    async def test_read_chunks_streams_the_whole_object_in_order(self, storage: Storage) -> None:
        """read_chunks yields the object's bytes in order, no chunk longer than asked."""
        data = os.urandom(300_001)
        upload = await storage.start_upload("r/db.tar")
        await write_upload(upload, data, chunk=65_536)
        await upload.commit(size=len(data), sha256=sha256_hex(data))
        chunks = [chunk async for chunk in storage.read_chunks("r/db.tar", chunk_size=100_000)]
        assert b"".join(chunks) == data
        assert all(0 < len(chunk) <= 100_000 for chunk in chunks)
        assert [chunk async for chunk in storage.read_chunks("r/db.tar")] == [data]

    async def test_read_chunks_of_an_empty_object_yields_nothing(self, storage: Storage) -> None:
        """An empty object streams as no chunk at all."""
        await storage.write_small("r/empty.tar", b"")
        assert [chunk async for chunk in storage.read_chunks("r/empty.tar")] == []

    async def test_read_chunks_of_a_missing_key_raises_file_not_found(
        self, storage: Storage
    ) -> None:
        """A missing object (or an unfinished upload) is FileNotFoundError, not an empty read."""
        upload = await storage.start_upload("r/unfinished.tar")
        await write_upload(upload, b"not yet")
        for key in ("r/missing.tar", "r/unfinished.tar"):
            with pytest.raises(FileNotFoundError):
                _ = [chunk async for chunk in storage.read_chunks(key)]
        await upload.abort()

    async def test_read_chunks_holds_one_or_two_chunks_in_memory(self, storage: Storage) -> None:
        """Reading 32 MiB in 1 MiB chunks never holds more than a few chunks at once."""
        if self.keeps_data_in_memory:
            pytest.skip("backend keeps objects in memory")
        upload = await storage.start_upload("r/big.tar")
        segment = await upload.open_segment(0, 0)
        digest = hashlib.sha256()
        for _ in range(32):
            chunk = os.urandom(MiB)
            digest.update(chunk)
            await segment.write(chunk)
        await segment.close()
        await upload.commit(size=32 * MiB, sha256=digest.hexdigest())
        read_back = hashlib.sha256()
        tracemalloc.start()
        try:
            async for chunk in storage.read_chunks("r/big.tar", chunk_size=MiB):
                read_back.update(chunk)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert read_back.hexdigest() == digest.hexdigest()
        assert peak < 12 * MiB

    async def test_a_suspended_upload_resumes_from_its_durable_bytes(
        self, storage: Storage
    ) -> None:
        """Suspend after 11 MiB: resume_upload gives back a durable prefix to read and go on."""
        data = os.urandom(12 * MiB + 12345)
        upload = await storage.start_upload("r/db.tar")
        segment = await upload.open_segment(0, 0)
        for start in range(0, 11 * MiB, MiB):
            await segment.write(data[start : start + MiB])
        await upload.suspend()
        resumed = await storage.resume_upload("r/db.tar")
        assert resumed is not None
        durable = resumed.durable
        assert 5 * MiB <= durable <= 11 * MiB  # S3 keeps whole parts only
        prefix = b"".join(
            [await resumed.upload.read_back(at, min(MiB, durable - at))
             for at in range(0, durable, MiB)]
        )
        assert prefix == data[:durable]
        segment = await resumed.upload.open_segment(0, durable)
        for start in range(durable, len(data), MiB):
            await segment.write(data[start : start + MiB])
        await segment.close()
        await resumed.upload.commit(size=len(data), sha256=sha256_hex(data))
        assert await storage.read_small("r/db.tar") == data
        assert await keys_of(storage) == ["r/db.tar"]
        assert await storage.resume_upload("r/db.tar") is None

    async def test_remove_incomplete_keeps_what_will_be_resumed(self, storage: Storage) -> None:
        """Leftovers of keys in `keep` survive the cleanup (and resume); the others go."""
        for key in ("k/kept.tar", "k/gone.tar"):
            upload = await storage.start_upload(key)
            segment = await upload.open_segment(0, 0)
            await segment.write(os.urandom(6 * MiB))
            await upload.suspend()
        assert await storage.remove_incomplete(keep=["k/kept.tar"]) >= 1
        assert await storage.resume_upload("k/gone.tar") is None
        kept = await storage.resume_upload("k/kept.tar")
        assert kept is not None
        assert kept.durable >= 5 * MiB
        await kept.upload.abort()
        assert await storage.remove_incomplete() == 0

    async def test_nothing_to_resume_is_none(self, storage: Storage) -> None:
        """A key never uploaded, or whose upload was aborted, has nothing to resume."""
        assert await storage.resume_upload("n/never.tar") is None
        upload = await storage.start_upload("n/aborted.tar")
        await write_upload(upload, os.urandom(6 * MiB), chunk=MiB)
        await upload.abort()
        assert await storage.resume_upload("n/aborted.tar") is None

    async def test_location_names_the_key(self, storage: Storage) -> None:
        """location() ends with the key, whatever the backend's scheme."""
        assert storage.location("s/mysql/db/2024_1/db.tar").endswith("s/mysql/db/2024_1/db.tar")

    async def test_probe_succeeds_and_leaves_nothing(self, storage: Storage) -> None:
        """probe works on a healthy backend and cleans up after itself."""
        await storage.probe()
        assert await keys_of(storage) == []

    async def test_a_cleanup_never_breaks_a_small_write_in_flight(self, storage: Storage) -> None:
        """remove_incomplete beside probes (small writes, as /readyz runs while a pass cleans
        up) leaves their temp files alone: every probe succeeds, each time."""
        await storage.write_small("a/manifest.json", b"{}")  # a folder for the walk to go into
        for _ in range(40):
            await asyncio.gather(storage.probe(), storage.remove_incomplete())
            await asyncio.gather(storage.remove_incomplete(), storage.probe())
        assert await keys_of(storage) == ["a/manifest.json"]

    async def test_a_cleanup_leaves_what_another_process_is_writing_beside_it(
        self, storage: Storage, neighbour: Storage
    ) -> None:
        """A pass's cleanup beside a check-config probe and an import's staging upload (other
        processes, taking no lock) leaves both to finish; it takes a pass's own leftover."""
        staged = os.urandom(300_000)
        staging = await neighbour.start_upload(f"{STAGING_FOLDER}/0a1b2c3d/shop.tar")
        staging_segment = await staging.open_segment(0, 0)
        await staging_segment.write(staged[:100_000])
        probe = await neighbour.start_upload(f"{PROBE_PREFIX}00ff")
        probe_segment = await probe.open_segment(0, 0)
        await probe_segment.write(b"probe")
        crashed = await neighbour.start_upload("s/db/1/db.tar")  # a stopped pass's leftover
        await write_upload(crashed, b"partial")
        await crashed.suspend()

        assert await storage.remove_incomplete() == 1

        await staging_segment.write(staged[100_000:])
        await staging_segment.close()
        await staging.commit(size=len(staged), sha256=sha256_hex(staged))
        await probe_segment.close()
        await probe.commit(size=5, sha256=sha256_hex(b"probe"))
        assert await neighbour.read_small(f"{STAGING_FOLDER}/0a1b2c3d/shop.tar") == staged
        assert await neighbour.read_small(f"{PROBE_PREFIX}00ff") == b"probe"
        assert await storage.resume_upload("s/db/1/db.tar") is None

    async def test_a_cleanup_takes_another_process_s_leftovers_once_idle(
        self, storage: Storage, neighbour: Storage
    ) -> None:
        """What a crashed probe or import left goes once unwritten for `idle_for`, not
        before; a writer that still held it can then no longer publish it."""
        staging = await neighbour.start_upload(f"{STAGING_FOLDER}/0a1b2c3d/shop.tar")
        await write_upload(staging, b"plaintext")
        probe = await neighbour.start_upload(f"{PROBE_PREFIX}00ff")
        await write_upload(probe, b"probe")

        assert await storage.remove_incomplete(idle_for=timedelta(hours=1)) == 0
        assert await storage.remove_incomplete(idle_for=timedelta(0)) == 2

        with pytest.raises(StorageError):
            await staging.commit(size=9, sha256=sha256_hex(b"plaintext"))
        assert await keys_of(storage) == []
        assert await storage.remove_incomplete(idle_for=timedelta(0)) == 0
