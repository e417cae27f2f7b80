"""The local folder backend: the conformance suite plus what only a disk can show."""

from __future__ import annotations

import errno
import os
import stat
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from archiver.core.errors import PermanentStorageError, StorageFull, TransientStorageError
from archiver.storage.base import SegmentWriter
from archiver.storage.local import LocalStorage, classify_os_error
from tests.storage_conformance import StorageConformance, keys_of, sha256_hex, write_upload
from tests.tmpfs import mount_tmpfs, unmount

MiB = 1024 * 1024


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[LocalStorage]:
    """A fresh backend on a folder that does not exist yet."""
    backend = LocalStorage(tmp_path / "archive")
    yield backend
    await backend.aclose()


@pytest.fixture
async def neighbour(tmp_path: Path) -> AsyncIterator[LocalStorage]:
    """Another process's view of the same folder: a second backend on it."""
    backend = LocalStorage(tmp_path / "archive")
    yield backend
    await backend.aclose()


class TestLocalConformance(StorageConformance):
    """The local backend passes the whole suite."""


def mode_of(path: Path) -> int:
    """Permission bits of `path` (not following a final symlink)."""
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A mount point for a tiny tmpfs, unmounted afterwards."""
    mount_point = tmp_path / "mnt"
    mount_point.mkdir()
    yield mount_point
    unmount(mount_point)


async def write_mebibytes(segment: SegmentWriter, count: int) -> None:
    """Write `count` MiB of zeros to `segment`."""
    for _ in range(count):
        await segment.write(bytes(MiB))


@pytest.mark.parametrize("umask", [0o000, 0o077, 0o277])
async def test_files_are_0600_and_folders_0700_whatever_the_umask(
    tmp_path: Path, umask: int
) -> None:
    """Parts, committed files, manifests and every folder we create get 0600/0700."""
    root = tmp_path / "deep" / "archive"
    backend = LocalStorage(root)
    previous = os.umask(umask)
    try:
        upload = await backend.start_upload("s/mysql/db/b_1/db.tar")
        assert mode_of(root / "s/mysql/db/b_1/db.tar.part") == 0o600
        await write_upload(upload, b"data")
        await upload.commit(size=4, sha256=sha256_hex(b"data"))
        await backend.write_small("s/mysql/db/b_1/manifest.json", b"{}")
    finally:
        os.umask(previous)
        await backend.aclose()
    for file in ("db.tar", "manifest.json"):
        assert mode_of(root / "s/mysql/db/b_1" / file) == 0o600
    for folder in (tmp_path / "deep", root, root / "s", root / "s/mysql/db/b_1"):
        assert mode_of(folder) == 0o700


async def test_symlinks_out_of_the_root_are_refused(tmp_path: Path) -> None:
    """A symlinked folder or file pointing outside the root is never followed."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    root = tmp_path / "archive"
    root.mkdir()
    (root / "evil").symlink_to(outside)
    (root / "link").symlink_to(outside / "secret")
    backend = LocalStorage(root)
    try:
        with pytest.raises(PermanentStorageError, match="leaves"):
            await backend.write_small("evil/x", b"x")
        with pytest.raises(PermanentStorageError, match="leaves"):
            await backend.start_upload("evil/x.tar")
        with pytest.raises(PermanentStorageError, match="leaves"):
            await backend.read_small("link")
        with pytest.raises(PermanentStorageError, match="leaves"):
            [key async for key in backend.list("evil")]
        assert await keys_of(backend) == []
        assert sorted(os.listdir(outside)) == ["secret"]
    finally:
        await backend.aclose()


async def test_a_full_disk_is_a_permanent_error(tmpfs: Path) -> None:
    """ENOSPC while writing a segment raises StorageFull (permanent) 'no space left'."""
    mount_tmpfs(tmpfs, "size=2m")
    backend = LocalStorage(tmpfs)
    try:
        upload = await backend.start_upload("s/db.tar")
        segment = await upload.open_segment(0, 0)
        with pytest.raises(StorageFull, match="no space left"):
            await write_mebibytes(segment, 4)
        await upload.abort()
        assert await backend.remove_incomplete() == 0
        assert os.listdir(tmpfs) == ["s"]
    finally:
        await backend.aclose()


async def test_a_read_only_filesystem_is_a_permanent_error(tmpfs: Path) -> None:
    """EROFS is classed permanent ('permission denied'), and probe names the root."""
    mount_tmpfs(tmpfs, "ro,size=1m")
    backend = LocalStorage(tmpfs)
    try:
        with pytest.raises(PermanentStorageError, match="permission denied"):
            await backend.write_small("manifest.json", b"{}")
        with pytest.raises(PermanentStorageError, match=f"storage {tmpfs} is not usable"):
            await backend.probe()
    finally:
        await backend.aclose()


@pytest.mark.parametrize(
    ("code", "expected", "words"),
    [
        (errno.ENOSPC, StorageFull, "no space left"),
        (errno.EDQUOT, StorageFull, "no space left"),
        (errno.EACCES, PermanentStorageError, "permission denied"),
        (errno.EPERM, PermanentStorageError, "permission denied"),
        (errno.EROFS, PermanentStorageError, "permission denied"),
        (errno.EIO, TransientStorageError, "storage error"),
        (errno.ECONNRESET, TransientStorageError, "storage error"),
    ],
)
def test_os_errors_are_classed(code: int, expected: type[Exception], words: str) -> None:
    """A full disk is StorageFull, refusals are permanent, other OS errors transient; the path
    is named."""
    error = classify_os_error(OSError(code, os.strerror(code)), "/archive/x")
    assert type(error) is expected
    assert words in str(error)
    assert "/archive/x" in str(error)


async def test_leftovers_of_a_crashed_process_are_hidden_and_removed(tmp_path: Path) -> None:
    """Parts left by an earlier process are invisible and removed by remove_incomplete."""
    crashed = LocalStorage(tmp_path)
    await write_upload(await crashed.start_upload("s/a.tar"), b"partial")
    (tmp_path / "s" / "manifest.json.1234abcd.part").write_bytes(b"{half")
    await crashed.aclose()  # the uploads are never finished, as in a crash
    backend = LocalStorage(tmp_path)
    try:
        assert await keys_of(backend) == []
        assert await backend.stat("s/a.tar") is None
        assert await backend.remove_incomplete() == 2
        assert list((tmp_path / "s").iterdir()) == []
    finally:
        await backend.aclose()


async def test_part_suffix_is_reserved(storage: LocalStorage) -> None:
    """A key ending in '.part' would be hidden and cleaned up, so it is refused."""
    with pytest.raises(PermanentStorageError, match="reserved"):
        await storage.write_small("a/b.tar.part", b"x")


async def test_location_is_the_absolute_path(storage: LocalStorage) -> None:
    """location() is the absolute path of the final file."""
    assert storage.root.is_absolute()
    assert storage.location("s/db.tar") == str(storage.root / "s" / "db.tar")


async def test_remove_prunes_empty_folders_up_to_the_root(storage: LocalStorage) -> None:
    """Removing the last file of a backup folder removes the empty folders, never the root."""
    await storage.write_small("s/mysql/db/b_1/manifest.json", b"{}")
    await storage.write_small("s/mysql/other.json", b"{}")
    await storage.remove("s/mysql/db/b_1/manifest.json")
    assert sorted(p.name for p in (storage.root / "s" / "mysql").iterdir()) == ["other.json"]
    await storage.remove("s/mysql/other.json")
    assert storage.root.is_dir()
    assert list(storage.root.iterdir()) == []


async def test_a_lent_executor_is_not_shut_down(tmp_path: Path) -> None:
    """aclose stops only an executor the backend created itself."""
    with ThreadPoolExecutor(max_workers=1) as executor:
        backend = LocalStorage(tmp_path, executor=executor)
        await backend.write_small("x", b"1")
        await backend.aclose()
        assert executor.submit(lambda: 42).result() == 42


async def test_writes_go_to_the_dedicated_pool(tmp_path: Path) -> None:
    """Blocking work runs in the backend's own threads, not the event loop's default pool."""
    seen: list[str] = []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="lent-pool") as executor:
        backend = LocalStorage(tmp_path, executor=executor)
        await backend.run(tmp_path, lambda: seen.append(threading.current_thread().name))
        await backend.aclose()
    assert seen[0].startswith("lent-pool")


async def test_abort_after_a_failed_rename_removes_the_part(storage: LocalStorage) -> None:
    """When the rename in commit fails, the error is a StorageError and abort still cleans up."""
    (storage.root / "s" / "db.tar").mkdir(parents=True)  # a folder squats the final name
    upload = await storage.start_upload("s/db.tar")
    await write_upload(upload, b"data")
    with pytest.raises(TransientStorageError, match=r"db\.tar"):
        await upload.commit(size=4, sha256=sha256_hex(b"data"))
    await upload.abort()
    await upload.abort()
    assert sorted(path.name for path in (storage.root / "s").iterdir()) == ["db.tar"]
    assert (storage.root / "s" / "db.tar").is_dir()
