"""The SFTP backend against a real OpenSSH server: the conformance suite plus SFTP-only tests."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import os
import signal
import stat
import tomllib
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncssh
import pytest
from structlog.testing import capture_logs

from archiver.config.storage import SftpStorageSettings
from archiver.core.errors import (
    PermanentStorageError,
    StorageError,
    StorageFull,
    TransientStorageError,
)
from archiver.storage import open_storage, sftp_connection
from archiver.storage.base import SegmentWriter
from archiver.storage.sftp import SftpStorage
from archiver.storage.sftp_errors import classify_sftp_error
from loopback.sshd import SftpServer
from tests.conftest import REPO_ROOT, file_sha256, wait_until
from tests.storage_conformance import StorageConformance, keys_of, sha256_hex, write_upload
from tests.tmpfs import mount_tmpfs, unmount

MiB = 1024 * 1024


@pytest.fixture
async def storage(sftp_server: SftpServer, sftp_folder: Path) -> AsyncIterator[SftpStorage]:
    """A fresh backend on a remote folder that does not exist yet."""
    backend = SftpStorage(sftp_server.settings(sftp_folder / "archive"))
    yield backend
    await backend.aclose()


@pytest.fixture
async def neighbour(
    sftp_server: SftpServer, sftp_folder: Path
) -> AsyncIterator[SftpStorage]:
    """Another process's view of the same remote folder: a second backend (connection) on it."""
    backend = SftpStorage(sftp_server.settings(sftp_folder / "archive"))
    yield backend
    await backend.aclose()


class TestSftpConformance(StorageConformance):
    """The SFTP backend passes the whole suite against a real sshd."""


def mode_of(path: Path) -> int:
    """Permission bits of `path` (not following a final symlink)."""
    return stat.S_IMODE(os.lstat(path).st_mode)


def part_files(root: Path) -> list[Path]:
    """Every `*.part` file under `root` on the server's disk."""
    return sorted(root.rglob("*.part"))


async def write_mebibytes(segment: SegmentWriter, count: int) -> None:
    """Write `count` MiB of zeros to `segment` and close it (a write's error may surface
    only there: writes are in flight)."""
    for _ in range(count):
        await segment.write(bytes(MiB))
    await segment.close()


@pytest.fixture
def tmpfs(sftp_folder: Path) -> Iterator[Path]:
    """A mount point inside the remote folder, unmounted afterwards."""
    mount_point = sftp_folder / "mnt"
    mount_point.mkdir()
    yield mount_point
    unmount(mount_point)


def mount_user_tmpfs(mount_point: Path, server: SftpServer, size: str) -> None:
    """Mount a tiny tmpfs owned by the SFTP user, or skip where mounting is not allowed."""
    mount_tmpfs(mount_point, f"size={size},mode=0700,uid={server.uid},gid={server.gid}")


async def test_open_storage_picks_the_sftp_backend(
    sftp_server: SftpServer, sftp_folder: Path
) -> None:
    """`[storage] type = "sftp"` settings open an SftpStorage."""
    with ThreadPoolExecutor(max_workers=1) as executor:
        backend = open_storage(sftp_server.settings(sftp_folder), executor=executor)
        assert isinstance(backend, SftpStorage)
        await backend.aclose()


async def test_files_are_0600_and_folders_0700_under_a_permissive_umask(
    sftp_server: SftpServer, sftp_folder: Path
) -> None:
    """With the server's umask at 0000, parts, files, manifests and folders are 0600/0700."""
    root = sftp_folder / "deep" / "archive"
    backend = SftpStorage(sftp_server.settings(root))
    try:
        upload = await backend.start_upload("s/mysql/db/b_1/db.tar")
        [part] = part_files(root)
        assert mode_of(part) == 0o600
        await write_upload(upload, b"data")
        await upload.commit(size=4, sha256=sha256_hex(b"data"))
        await backend.write_small("s/mysql/db/b_1/manifest.json", b"{}")
    finally:
        await backend.aclose()
    for file in ("db.tar", "manifest.json"):
        assert mode_of(root / "s/mysql/db/b_1" / file) == 0o600
    for folder in (sftp_folder / "deep", root, root / "s", root / "s/mysql/db/b_1"):
        assert mode_of(folder) == 0o700


async def test_location_is_an_sftp_url_with_the_absolute_path(
    sftp_server: SftpServer, storage: SftpStorage, sftp_folder: Path
) -> None:
    """location() is sftp://user@host:port/absolute/path/key."""
    expected = (
        f"sftp://{sftp_server.username}@127.0.0.1:{sftp_server.port}"
        f"{sftp_folder}/archive/s/db.tar"
    )
    assert storage.location("s/db.tar") == expected


async def test_wrong_host_key_fails_the_probe_naming_the_host_key(
    sftp_server: SftpServer, sftp_folder: Path, tmp_path: Path
) -> None:
    """A server whose key is not the known one is refused, and probe says 'host key'."""
    impostor = asyncssh.generate_private_key("ssh-ed25519").export_public_key()
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_bytes(f"[127.0.0.1]:{sftp_server.port} ".encode() + impostor)
    backend = SftpStorage(sftp_server.settings(sftp_folder, known_hosts_file=str(known_hosts)))
    try:
        with pytest.raises(PermanentStorageError, match=r"host key of 127\.0\.0\.1:\d+"):
            await backend.probe()
    finally:
        await backend.aclose()


async def test_unknown_user_key_fails_the_probe_naming_authentication(
    sftp_server: SftpServer, sftp_folder: Path, tmp_path: Path
) -> None:
    """A key the server does not authorise fails the probe with 'authentication'."""
    stranger = tmp_path / "stranger_ed25519"
    asyncssh.generate_private_key("ssh-ed25519").write_private_key(str(stranger))
    backend = SftpStorage(sftp_server.settings(sftp_folder, private_key_file=str(stranger)))
    try:
        with pytest.raises(PermanentStorageError, match="authentication as"):
            await backend.probe()
    finally:
        await backend.aclose()


async def test_refused_connection_fails_the_probe_naming_host_and_port(
    sftp_server: SftpServer, sftp_folder: Path
) -> None:
    """Nothing listening on the port: probe names host:port."""
    backend = SftpStorage(sftp_server.settings(sftp_folder, port=1))
    try:
        with pytest.raises(PermanentStorageError, match=r"cannot connect to 127\.0\.0\.1:1\b"):
            await backend.probe()
    finally:
        await backend.aclose()


async def test_insecure_mode_connects_and_logs_a_loud_warning(
    sftp_server: SftpServer, sftp_folder: Path, tmp_path: Path
) -> None:
    """insecure_skip_host_key_check accepts any host key and warns at connect."""
    empty_known_hosts = tmp_path / "known_hosts"
    empty_known_hosts.write_text("")
    settings = sftp_server.settings(
        sftp_folder, known_hosts_file=str(empty_known_hosts), insecure_skip_host_key_check=True
    )
    backend = SftpStorage(settings)
    try:
        with capture_logs() as logs:
            await backend.probe()
    finally:
        await backend.aclose()
    warnings = [entry for entry in logs if entry["log_level"] == "warning"]
    assert any("host key checking is OFF" in entry["event"] for entry in warnings)


async def test_permission_denied_on_the_path_is_permanent_and_named(
    sftp_server: SftpServer, sftp_folder: Path
) -> None:
    """A folder the user may not write: PermanentStorageError 'permission denied on sftp://...'."""
    if sftp_server.uid == 0:
        pytest.skip("logged in as root, who may write anywhere")
    locked = sftp_folder / "locked"
    locked.mkdir(mode=0o755)  # owned by root: the SFTP user may read, not write
    backend = SftpStorage(sftp_server.settings(locked))
    try:
        with pytest.raises(PermanentStorageError, match=f"permission denied on sftp://.*{locked}"):
            await backend.write_small("manifest.json", b"{}")
        with pytest.raises(PermanentStorageError, match="is not usable: permission denied"):
            await backend.probe()
    finally:
        await backend.aclose()


async def test_a_full_disk_is_a_permanent_no_space_error(
    sftp_server: SftpServer, tmpfs: Path
) -> None:
    """ENOSPC on the server (a 2 MiB tmpfs) raises StorageFull 'no space left' by the segment's
    close at the latest (writes are in flight), and abort cleans up."""
    mount_user_tmpfs(tmpfs, sftp_server, "2m")
    backend = SftpStorage(sftp_server.settings(tmpfs))
    try:
        upload = await backend.start_upload("s/db.tar")
        segment = await upload.open_segment(0, 0)
        with pytest.raises(StorageFull, match=f"no space left on sftp://.*{tmpfs}"):
            await write_mebibytes(segment, 4)
        await upload.abort()
        assert part_files(tmpfs) == []
        assert await backend.remove_incomplete() == 0
    finally:
        await backend.aclose()


async def test_a_refused_write_is_no_space_even_once_room_is_back(
    sftp_server: SftpServer, tmpfs: Path
) -> None:
    """A write the server refused with its bare 'Failure' is StorageFull even when another
    upload gave room back before the failure was looked at (so it is never kept to resume);
    a bare 'Failure' of anything else, with room, is not."""
    mount_user_tmpfs(tmpfs, sftp_server, "2m")
    backend = SftpStorage(sftp_server.settings(tmpfs))
    try:
        upload = await backend.start_upload("s/db.tar")
        segment = await upload.open_segment(0, 0)
        with pytest.raises(StorageFull) as full:
            await write_mebibytes(segment, 4)
        refusal = full.value.__cause__
        assert type(refusal) is asyncssh.SFTPFailure  # OpenSSH names no errno
        await upload.abort()  # the room comes back before anyone looks
        location = backend.location("s/db.tar")
        classified = backend.connection.classified
        assert type(await classified(refusal, location, writing=True)) is StorageFull
        assert type(await classified(refusal, location)) is TransientStorageError
    finally:
        await backend.aclose()


async def test_an_abandoned_upload_is_invisible_and_cleaned_by_remove_incomplete(
    sftp_server: SftpServer, sftp_folder: Path
) -> None:
    """A process that dies mid-upload leaves only a .part: hidden, then removed next pass."""
    root = sftp_folder / "archive"
    crashed = SftpStorage(sftp_server.settings(root))
    await write_upload(await crashed.start_upload("s/a.tar"), b"partial")
    await crashed.write_small("s/kept.json", b"{}")
    await crashed.aclose()  # the upload is never committed or aborted, as in a crash
    assert len(part_files(root)) == 1
    backend = SftpStorage(sftp_server.settings(root))
    try:
        assert await keys_of(backend) == ["s/kept.json"]
        assert await backend.stat("s/a.tar") is None
        assert await backend.remove_incomplete() == 1
        assert part_files(root) == []
        assert sorted(path.name for path in (root / "s").iterdir()) == ["kept.json"]
    finally:
        await backend.aclose()


async def test_a_dropped_connection_is_reopened_once(
    sftp_server: SftpServer, storage: SftpStorage
) -> None:
    """Killing the server side of the session mid-upload: the next write reconnects and lands."""
    first, second = os.urandom(100_000), os.urandom(100_000)
    upload = await storage.start_upload("s/db.tar")
    segment = await upload.open_segment(0, 0)
    await segment.write(first)
    sessions = sftp_server.session_pids()
    assert sessions, "the test's SSH session should be a child of sshd"
    for pid in sessions:
        os.kill(pid, signal.SIGKILL)  # a session process of the sshd this test started
    await segment.write(second)
    await segment.close()
    await upload.commit(size=200_000, sha256=sha256_hex(first + second))
    assert await storage.read_small("s/db.tar") == first + second


async def test_read_back_works_but_is_not_called_cheap(storage: SftpStorage) -> None:
    """SFTP reads back over the connection (for a resume), so it does not claim to be cheap."""
    assert storage.supports_read_back is False
    upload = await storage.start_upload("x.tar")
    await write_upload(upload, b"0123456789")
    assert await upload.read_back(3, 4) == b"3456"
    await upload.abort()


def test_the_example_sftp_block_is_a_valid_configuration() -> None:
    """The commented-out SFTP [storage] block in config.example.toml validates once uncommented."""
    text = (REPO_ROOT / "config.example.toml").read_text()
    block = text.split("# [storage]\n# type = \"sftp\"\n", 1)[1].split("\n\n", 1)[0]
    lines = [line.removeprefix("# ") for line in block.splitlines()]
    document = tomllib.loads('type = "sftp"\n' + "\n".join(lines))
    settings = SftpStorageSettings.model_validate(document)
    assert settings.insecure_skip_host_key_check is False
    assert settings.path.startswith("/")


async def test_several_writes_are_in_flight_and_a_stalled_server_holds_the_writer(
    sftp_server: SftpServer, sftp_folder: Path
) -> None:
    """With the server stalled, `max_concurrent_writes` writes return and the next one waits
    (memory stays at those chunks); once the server goes on, every byte lands in order."""
    root = sftp_folder / "archive"
    backend = SftpStorage(sftp_server.settings(root, max_concurrent_writes=3))
    digest, returned = hashlib.sha256(), 0
    try:
        upload = await backend.start_upload("s/db.tar")
        segment = await upload.open_segment(0, 0)

        async def write_all() -> None:
            nonlocal returned
            for _ in range(16):
                chunk = os.urandom(MiB)
                digest.update(chunk)
                await segment.write(chunk)
                del chunk
                returned += 1
            await segment.close()

        tracemalloc.start()
        try:
            with sftp_server.stalled():
                writer = asyncio.create_task(write_all())
                await wait_until(lambda: returned >= 3)
                for _ in range(25):  # time enough for a fourth write, were one let through
                    await asyncio.sleep(0.02)
                assert (returned, writer.done()) == (3, False)
                _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 12 * MiB  # the writes in flight and asyncssh's copies of them
        await asyncio.wait_for(writer, 60)
        await upload.commit(size=16 * MiB, sha256=digest.hexdigest())
    finally:
        await backend.aclose()
    assert file_sha256(root / "s/db.tar") == digest.hexdigest()


async def test_writes_in_flight_when_the_connection_drops_are_sent_again(
    sftp_server: SftpServer, storage: SftpStorage, sftp_folder: Path
) -> None:
    """Three writes sent to a stalled server whose session is then killed: after one
    reconnect they go again, in order, and the file is whole."""
    chunks = [os.urandom(MiB) for _ in range(6)]
    upload = await storage.start_upload("s/db.tar")
    segment = await upload.open_segment(0, 0)
    with sftp_server.stalled():
        for chunk in chunks[:3]:
            await segment.write(chunk)  # sent; no answer can come
        for pid in sftp_server.session_tree():
            os.kill(pid, signal.SIGKILL)  # a session process of the sshd this test started
    with capture_logs() as logs:
        for chunk in chunks[3:]:
            await segment.write(chunk)
        await segment.close()
    await upload.commit(size=6 * MiB, sha256=sha256_hex(b"".join(chunks)))
    assert (sftp_folder / "archive/s/db.tar").read_bytes() == b"".join(chunks)
    assert any("reconnecting once" in entry["event"] for entry in logs)


async def test_a_server_hung_until_the_keepalive_gives_up_leaves_no_unretrieved_failure(
    sftp_server: SftpServer, sftp_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writes in flight to a hung server fail by keepalive, go again on a new connection, the
    file is whole, and asyncio is never left a failed task nobody looked at."""
    monkeypatch.setattr(sftp_connection, "KEEPALIVE_INTERVAL", 0.2)
    unretrieved: list[dict[str, object]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, context: unretrieved.append(context))
    backend = SftpStorage(sftp_server.settings(sftp_folder / "archive"))
    chunks = [os.urandom(MiB) for _ in range(6)]
    try:
        upload = await backend.start_upload("s/db.tar")
        segment = await upload.open_segment(0, 0)
        with capture_logs() as logs, sftp_server.stalled():
            for chunk in chunks:
                await segment.write(chunk)  # the last ones wait for the keepalive to give up
            await segment.close()
        await upload.commit(size=6 * MiB, sha256=sha256_hex(b"".join(chunks)))
    finally:
        await backend.aclose()
    gc.collect()  # a failed task nobody retrieved is reported when it is collected
    assert (sftp_folder / "archive/s/db.tar").read_bytes() == b"".join(chunks)
    assert any("reconnecting once" in entry["event"] for entry in logs)
    assert [context["message"] for context in unretrieved] == []


async def test_a_read_from_a_server_hung_until_the_keepalive_gives_up_fails_cleanly(
    sftp_server: SftpServer, sftp_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A streamed read cut by the keepalive ends in one StorageError, asyncio is never left a
    failed read nobody looked at, and a read on a live server is exact to the last byte."""
    monkeypatch.setattr(sftp_connection, "KEEPALIVE_INTERVAL", 0.2)
    unretrieved: list[dict[str, object]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, context: unretrieved.append(context))
    data = os.urandom(6 * MiB + 12345)  # not a whole number of blocks: the end is short
    (sftp_folder / "archive/s").mkdir(parents=True)
    (sftp_folder / "archive/s/db.tar").write_bytes(data)
    backend = SftpStorage(sftp_server.settings(sftp_folder / "archive"))
    try:
        assert b"".join([c async for c in backend.read_chunks("s/db.tar")]) == data
        chunks = backend.read_chunks("s/db.tar", chunk_size=MiB)
        await anext(chunks)
        with sftp_server.stalled(), pytest.raises(StorageError):
            async for _ in chunks:
                pass
        await chunks.aclose()
    finally:
        await backend.aclose()
    gc.collect()  # a failed task nobody retrieved is reported when it is collected
    assert [context["message"] for context in unretrieved] == []


async def test_a_suspended_upload_keeps_only_the_acknowledged_bytes_of_the_last_attempt(
    storage: SftpStorage,
) -> None:
    """A segment that started over after 3 MiB and wrote 1 MiB: suspend cuts the file back
    to that 1 MiB, so a resume trusts nothing of the abandoned attempt."""
    fresh = os.urandom(MiB)
    upload = await storage.start_upload("s/db.tar")
    segment = await upload.open_segment(0, 0)
    for _ in range(3):
        await segment.write(os.urandom(MiB))
    await segment.rewind()
    await segment.write(fresh)
    await upload.suspend()
    resumed = await storage.resume_upload("s/db.tar")
    assert resumed is not None
    assert resumed.durable == MiB
    assert await resumed.upload.read_back(0, MiB) == fresh
    await resumed.upload.abort()


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ("No space left on device", StorageFull),  # servers that pass strerror on (SFTPGo, ...)
        ("Disk quota exceeded", StorageFull),
        ("write failed: ENOSPC", StorageFull),
        ("Failure", TransientStorageError),  # OpenSSH's bare failure: the free space decides
    ],
)
def test_the_words_of_a_no_space_failure_are_pinned(
    reason: str, kind: type[Exception]
) -> None:
    """A bare SSH_FX_FAILURE is a full destination when its text says so; only then."""
    classified = classify_sftp_error(asyncssh.SFTPFailure(reason), "sftp://host/archive/x")
    assert type(classified) is kind
