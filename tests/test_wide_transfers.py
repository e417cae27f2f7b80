"""Wide transfers: a file as Range segments over several streams, parts side by side, every
guarantee per segment (cuts, expiry, a changed object, servers that bend Range), in order."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from archiver.config.settings import LocalDestination
from archiver.core.retry import RetryPolicy
from archiver.simulator import Simulator, SimulatorServer
from archiver.storage.base import Storage
from archiver.storage.destinations import Destination
from archiver.sync.runtime import Runtime
from archiver.sync.sync_pass import SyncPass
from archiver.transfer.download import Downloader, PartFacts, PartSource
from archiver.transfer.fan_out import FanOut
from archiver.transfer.in_flight import InFlight
from archiver.transfer.join import BackupJoiner, KnownPart
from archiver.transfer.segment_fetch import FIRST_READ
from tests.archive_backends import ArchiveBackend
from tests.conftest import (
    PART_SIZE,
    TOKEN,
    Workspace,
    archived_sha256s,
    run_pass,
    settings_for,
)
from tests.memory_storage import MemoryStorage, MemoryUpload

KiB = 1024
MiB = 1024 * KiB
SEGMENT = 64 * KiB
SIZE = 200_000  # one part of four segments: 64 KiB x 3 and 3,392 bytes


def wide(**extra: Any) -> dict[str, Any]:
    """`[transfer]` with four streams of 64 KiB segments (and these overrides)."""
    return {"streams_per_file": 4, "segment_size": SEGMENT, **extra}


def segment_ranges(size: int, segment: int = SEGMENT) -> list[str]:
    """The Range headers of a file's segments, in order."""
    return [
        f"bytes={start}-{min(size, start + segment) - 1}" for start in range(0, size, segment)
    ]


async def wait_for(check: Callable[[], bool], timeout: float = 30) -> None:
    """Until `check()` holds (polled; the simulator runs on this loop)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


@pytest.fixture
def big_sim(tmp_path: Path) -> Simulator:
    """A simulator whose backups are one part up to 16 MiB."""
    return Simulator(token=TOKEN, blob_dir=tmp_path / "blobs", part_size=16 * MiB)


@pytest.fixture
async def big_server(big_sim: Simulator) -> AsyncIterator[SimulatorServer]:
    """`big_sim` serving on loopback."""
    async with SimulatorServer(big_sim) as running:
        yield running


async def archive(
    sim: Simulator, server: SimulatorServer, workspace: Workspace, **transfer: Any
) -> None:
    """One pass over stack-a with wide transfer settings; it must archive everything."""
    summary = await run_pass(settings_for(workspace, server, "stack-a", transfer=wide(**transfer)))
    assert summary.exit_code == 0, summary.failed


def assert_exact(sim: Simulator, workspace: Workspace, *backup_ids: int) -> None:
    """The archive holds exactly these backups, byte for byte."""
    assert archived_sha256s(workspace.archive) == {
        backup_id: sim.expected_sha256(backup_id) for backup_id in backup_ids
    }


async def test_a_file_comes_as_consecutive_ranges_over_four_streams(
    big_sim: Simulator, big_server: SimulatorServer, workspace: Workspace
) -> None:
    """Four 64 KiB ranges, all four GETs open at once, written in order: the archive is exact."""
    backup_id = big_sim.add_backup("stack-a", size=SIZE)
    held = asyncio.Event()
    big_sim.faults.hold["tar"] = held  # every body stops half-way until the four are open
    settings = settings_for(workspace, big_server, "stack-a", transfer=wide())
    run = asyncio.create_task(run_pass(settings))
    await wait_for(lambda: big_sim.stats.active_downloads == 4)
    held.set()
    assert (await run).exit_code == 0
    assert sorted(big_sim.stats.blob_ranges) == sorted(segment_ranges(SIZE))
    assert big_sim.stats.if_match_requests == 3  # every GET after the first
    assert big_sim.stats.bytes_served == SIZE
    assert_exact(big_sim, workspace, backup_id)


async def test_a_file_smaller_than_a_segment_is_one_get(
    big_sim: Simulator, big_server: SimulatorServer, workspace: Workspace
) -> None:
    """A 50 KB file under 64 KiB segments: one ranged GET answered with all of it."""
    backup_id = big_sim.add_backup("stack-a", size=50_000)
    await archive(big_sim, big_server, workspace)
    assert big_sim.stats.blob_ranges == [f"bytes=0-{SEGMENT - 1}"]
    assert_exact(big_sim, workspace, backup_id)


async def test_one_stream_per_file_is_one_plain_get(
    big_sim: Simulator, big_server: SimulatorServer, workspace: Workspace
) -> None:
    """streams_per_file = 1: one GET without Range, as before wide transfers."""
    backup_id = big_sim.add_backup("stack-a", size=SIZE)
    await archive(big_sim, big_server, workspace, streams_per_file=1)
    assert big_sim.stats.blob_ranges == [None]
    assert_exact(big_sim, workspace, backup_id)


async def test_cut_segments_go_on_from_their_last_byte(
    big_sim: Simulator, big_server: SimulatorServer, workspace: Workspace
) -> None:
    """Three bodies cut after 10,000 bytes: each goes on with Range from there, nothing twice."""
    backup_id = big_sim.add_backup("stack-a", size=SIZE)
    big_sim.faults.cut_downloads = 3
    big_sim.faults.cut_after_bytes = 10_000
    await archive(big_sim, big_server, workspace)
    planned = segment_ranges(SIZE)
    resumed = [r for r in big_sim.stats.blob_ranges if r not in planned]
    assert len(resumed) == 3
    ends = {int(r.rsplit("-", 1)[1]): int(r.split("=")[1].split("-")[0]) for r in planned}
    for header in resumed:  # 10,000 bytes (or twice that) into a segment, to its end
        first, last = (int(n) for n in header.removeprefix("bytes=").split("-"))
        assert (first - ends[last]) in (10_000, 20_000, 30_000)
    assert big_sim.stats.bytes_served == SIZE
    assert_exact(big_sim, workspace, backup_id)


async def test_urls_expiring_between_segments_are_asked_for_once(
    big_sim: Simulator, big_server: SimulatorServer, workspace: Workspace
) -> None:
    """Every URL expires once the first body started: the other segments share one new URL."""
    backup_id = big_sim.add_backup("stack-a", size=SIZE)
    big_sim.faults.expire_urls_after_gets = 1
    await archive(big_sim, big_server, workspace)
    assert big_sim.stats.api_requests_by_path["get_file"] == 2
    assert big_sim.stats.blob_refusals >= 1  # some segment found the URL expired
    assert_exact(big_sim, workspace, backup_id)


@pytest.mark.parametrize("ignore_if_match", [False, True], ids=["412", "206 with another ETag"])
async def test_an_etag_that_changes_between_segments_starts_the_file_over(
    big_sim: Simulator, big_server: SimulatorServer, workspace: Workspace, ignore_if_match: bool
) -> None:
    """A later segment finds the object changed (412, or another ETag): the file restarts."""
    backup_id = big_sim.add_backup("stack-a", size=SIZE)
    big_sim.faults.changed_etags = 1
    big_sim.faults.ignore_if_match = ignore_if_match
    await archive(big_sim, big_server, workspace, streams_per_file=2)
    assert big_sim.stats.blob_ranges.count(segment_ranges(SIZE)[0]) == 2  # from its first byte
    assert_exact(big_sim, workspace, backup_id)


async def test_a_backup_replaced_mid_download_is_archived_as_it_is_now(
    big_sim: Simulator, big_server: SimulatorServer, workspace: Workspace
) -> None:
    """The file is replaced while four segments are open: the archive holds only the new one."""
    size = 10 * SEGMENT
    backup_id = big_sim.add_backup("stack-a", size=size, seed=1)
    taken = big_sim.find_backup(backup_id)
    assert taken is not None
    held = asyncio.Event()
    big_sim.faults.hold["tar"] = held
    settings = settings_for(workspace, big_server, "stack-a", transfer=wide())
    run = asyncio.create_task(run_pass(settings))
    await wait_for(lambda: big_sim.stats.active_downloads == 4)
    big_sim.remove_backup(backup_id)  # the open bodies still send the old bytes
    big_sim.add_backup("stack-a", size=size, seed=2, backup_id=backup_id,
                       backup_date=taken.backup_date)
    held.set()
    assert (await run).exit_code == 0
    assert_exact(big_sim, workspace, backup_id)
    [manifest] = workspace.archive.rglob("manifest.json")
    [part] = json.loads(manifest.read_text())["parts"]
    assert part["etag"] == big_sim.part_md5s(backup_id)["tar"]


async def test_a_server_that_ignores_range_gets_one_stream(
    big_sim: Simulator, big_server: SimulatorServer, workspace: Workspace
) -> None:
    """A 200 to the first Range is the whole file: no other GET is made."""
    backup_id = big_sim.add_backup("stack-a", size=SIZE)
    big_sim.faults.ignore_range = 1
    await archive(big_sim, big_server, workspace)
    assert big_sim.stats.blob_ranges == [segment_ranges(SIZE)[0]]
    assert big_sim.stats.downloads_started == 1
    assert_exact(big_sim, workspace, backup_id)


async def test_a_200_to_a_later_range_starts_the_file_over_with_one_stream(
    big_sim: Simulator, big_server: SimulatorServer, workspace: Workspace
) -> None:
    """Range honoured once, then ignored: the file starts over as one plain GET."""
    backup_id = big_sim.add_backup("stack-a", size=SIZE)
    big_sim.faults.ranged_faults_after = 1
    big_sim.faults.ignore_range = 1
    await archive(big_sim, big_server, workspace)
    assert big_sim.stats.blob_ranges[-1] is None
    assert_exact(big_sim, workspace, backup_id)


async def test_a_416_inside_the_file_is_an_attempt_that_failed(
    big_sim: Simulator, big_server: SimulatorServer, workspace: Workspace
) -> None:
    """One 416 for a range the file has is retried, never taken as the file's end."""
    backup_id = big_sim.add_backup("stack-a", size=SIZE)
    big_sim.faults.ranged_faults_after = 1
    big_sim.faults.unsatisfiable_ranges = 1
    await archive(big_sim, big_server, workspace)
    assert sorted(set(big_sim.stats.blob_ranges)) == sorted(segment_ranges(SIZE))
    assert len(big_sim.stats.blob_ranges) == 5
    assert_exact(big_sim, workspace, backup_id)


async def test_a_server_that_keeps_answering_416_fails_the_backup(
    big_sim: Simulator, big_server: SimulatorServer, workspace: Workspace
) -> None:
    """416 to every range after the first: the backup fails naming the 416, nothing archived."""
    big_sim.add_backup("stack-a", size=SIZE)
    big_sim.faults.ranged_faults_after = 1
    big_sim.faults.unsatisfiable_ranges = 1000
    settings = settings_for(workspace, big_server, "stack-a", transfer=wide(max_retries=2))
    summary = await run_pass(settings)
    assert summary.exit_code == 1
    [failure] = summary.failed
    assert "416" in failure.reason
    assert not list(workspace.archive.rglob("manifest.json"))


@pytest.mark.parametrize("lies", [False, True], ids=["honest", "lying"])
async def test_a_short_206_is_never_taken_for_the_whole_range(
    big_sim: Simulator, big_server: SimulatorServer, workspace: Workspace, lies: bool
) -> None:
    """Half of the range sent: an honest Content-Range gets the rest asked for, a lying one
    (all of the range, half the length) is refused unread and asked again."""
    backup_id = big_sim.add_backup("stack-a", size=SIZE)
    big_sim.faults.short_ranges = 2
    big_sim.faults.short_range_lies = lies
    await archive(big_sim, big_server, workspace)
    assert len(big_sim.stats.blob_ranges) == 4 + 2
    if not lies:
        assert big_sim.stats.bytes_served == SIZE
    assert_exact(big_sim, workspace, backup_id)


async def test_parts_that_finish_out_of_order_are_joined_in_order(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """Part aa is held half-way until ab and ac arrived whole: the join is still exact."""
    backup_id = sim.add_backup("stack-a", size=PART_SIZE * 2 + 1000)  # aa, ab, ac
    held = asyncio.Event()
    sim.faults.hold["tar-aa"] = held
    settings = settings_for(workspace, server, "stack-a", transfer=wide(segment_size="1MiB"))
    run = asyncio.create_task(run_pass(settings))
    await wait_for(lambda: {"tar-ab", "tar-ac"} <= set(sim.stats.completed_files))
    held.set()
    assert (await run).exit_code == 0
    assert sim.stats.completed_files == ["tar-ab", "tar-ac", "tar-aa"] or (
        sim.stats.completed_files == ["tar-ac", "tar-ab", "tar-aa"]
    )
    assert_exact(sim, workspace, backup_id)
    [manifest] = workspace.archive.rglob("manifest.json")
    parts = json.loads(manifest.read_text())["parts"]
    assert [part["id"] for part in parts] == ["tar-aa", "tar-ab", "tar-ac"]
    assert [part["sha256"] for part in parts] == [
        hashlib.sha256(path.read_bytes()).hexdigest() for path in sim.backup_content_path(backup_id)
    ]


async def test_every_backend_takes_a_wide_multi_part_backup(
    sim: Simulator, server: SimulatorServer, workspace: Workspace, archive_backend: ArchiveBackend
) -> None:
    """Three parts in 64 KiB ranges over four streams at once: byte-exact on local, S3 and
    SFTP."""
    backup_id = sim.add_backup("stack-a", database_name="shop", size=PART_SIZE * 2 + 100_000)
    held = asyncio.Event()
    sim.faults.hold["tar-aa"] = held  # the writer waits on the network: streams go wide
    settings = settings_for(
        workspace, server, "stack-a", storage=archive_backend.storage, transfer=wide()
    )
    run = asyncio.create_task(run_pass(settings))
    await wait_for(lambda: sim.stats.active_downloads >= 4)
    held.set()
    summary = await run
    assert summary.exit_code == 0, summary.failed
    assert len(sim.stats.blob_ranges) == 4 + 4 + 2
    [tar] = [key for key in await archive_backend.keys() if key.endswith("/shop.tar")]
    joined = b"".join(path.read_bytes() for path in sim.backup_content_path(backup_id))
    assert await archive_backend.read(tar) == joined
    manifest = json.loads(await archive_backend.read(tar.replace("shop.tar", "manifest.json")))
    assert manifest["sha256"] == sim.expected_sha256(backup_id)


async def test_the_bandwidth_limit_holds_over_all_downloads_together(
    big_sim: Simulator, big_server: SimulatorServer, workspace: Workspace
) -> None:
    """Two 4 MiB backups at once under a 4 MiB/s cap: 8 MiB never come faster than the cap
    (+15%); and not far slower either."""
    for name in ("one", "two"):
        big_sim.add_backup("stack-a", database_name=name, size=4 * MiB)
    limit = 4 * MiB
    started = time.monotonic()
    await archive(big_sim, big_server, workspace, segment_size="1MiB", bandwidth_limit="4MiB")
    elapsed = time.monotonic() - started
    rate = 8 * MiB / elapsed
    # The bucket starts empty, each GET prepays its first read and later reads are charged
    # as they happen, so 8 MiB take at least (8 MiB - what four readers overshoot) / limit:
    # load can only make it slower. That side is exact; the other is a loose sanity check.
    assert rate <= 1.15 * limit, f"{rate / MiB:.2f} MiB/s"
    assert rate >= 0.5 * limit, f"{rate / MiB:.2f} MiB/s"


class _SlowUpload(MemoryUpload):
    """A destination that takes 64 KiB every 5 ms (about 13 MB/s), and says how much
    the downloads held in memory whenever it is written to."""

    def __init__(self, storage: MemoryStorage, key: str, budget: InFlight) -> None:
        super().__init__(storage, key)
        self.budget = budget
        self.held: list[int] = []

    async def write_at(self, chunk: bytes, offset: int) -> None:
        """Write slowly, noting the budget in use."""
        self.held.append(self.budget.used)
        await asyncio.sleep(0.005 * len(chunk) / SEGMENT)
        await super().write_at(chunk, offset)


class _SlowStorage(MemoryStorage):
    def __init__(self, budget: InFlight) -> None:
        super().__init__()
        self.budget = budget
        self.uploads: list[_SlowUpload] = []

    async def start_upload(self, key: str) -> MemoryUpload:
        upload = _SlowUpload(self, key, self.budget)
        self._uploads[key] = upload
        self.uploads.append(upload)
        return upload


async def _public_url(server: SimulatorServer, backup_id: int, file_id: str) -> str:
    """A fresh pre-signed URL from the simulated API, its query decoded once."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    path = f"/stacks/stack-a/backups/{backup_id}/files/{file_id}"
    async with (
        aiohttp.ClientSession(headers=headers) as session,
        session.get(server.base_url + path) as response,
    ):
        answer = await response.json()
    return str(answer["response"]["public_url"]).replace("%25", "%")


async def test_a_slow_destination_holds_the_downloads_back(
    big_sim: Simulator, big_server: SimulatorServer
) -> None:
    """16 MiB in four streams of 4 MiB ranges into storage that takes 13 MB/s, 8 MiB in
    flight allowed: the file being written holds its 4 MiB of room and each segment
    ahead its first read, never the budget (bytes ahead could only wait); exact result."""
    backup_id = big_sim.add_backup("stack-a", size=16 * MiB)
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        downloader = Downloader(
            session, max_files=4, retry_policy=RetryPolicy(retries=2), chunk_size=SEGMENT,
            streams_per_file=4, segment_size=4 * MiB, in_flight=8 * MiB,
        )
        storage = _SlowStorage(downloader.budget)

        async def fresh_url() -> str:
            return await _public_url(big_server, backup_id, "tar")

        joined = await BackupJoiner(downloader, storage).archive(
            "stack-a/backup.tar", [PartSource("tar", "db.tar", fresh_url)],
            on_size=lambda _: None, on_bytes=lambda _: None,
        )
    assert joined.sha256 == big_sim.expected_sha256(backup_id)
    [upload] = storage.uploads
    head_room, first_read = 4 * MiB, FIRST_READ  # (half the budget; segment_fetch's)
    assert max(upload.held) <= downloader.budget.peak <= head_room + 3 * first_read
    assert downloader.budget.used == 0


def _destination(name: str, storage: Storage) -> Destination:
    """A plain destination over `storage`, as the fan-out sees one."""
    return Destination(name, LocalDestination(name=name), storage, None, ())


async def test_a_wide_download_into_two_destinations_goes_at_the_slower_ones_pace(
    big_sim: Simulator, big_server: SimulatorServer
) -> None:
    """Four streams into a fan-out over a fast and a slow destination: both get the exact
    bytes, and the budget holds what one slow destination allows, not more (every write
    waits for both, so the slower one sets the pace and nothing piles up for it)."""
    backup_id = big_sim.add_backup("stack-a", size=16 * MiB)
    key = "stack-a/backup.tar"
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        downloader = Downloader(
            session, max_files=4, retry_policy=RetryPolicy(retries=2), chunk_size=SEGMENT,
            streams_per_file=4, segment_size=4 * MiB, in_flight=8 * MiB,
        )
        fast, slow = MemoryStorage(), _SlowStorage(downloader.budget)
        fan_out = FanOut([_destination("fast", fast), _destination("slow", slow)], key)

        async def fresh_url() -> str:
            return await _public_url(big_server, backup_id, "tar")

        joined = await BackupJoiner(downloader, fan_out).archive(
            key, [PartSource("tar", "db.tar", fresh_url)],
            on_size=lambda _: None, on_bytes=lambda _: None,
        )
    assert joined.sha256 == big_sim.expected_sha256(backup_id)
    expected = b"".join(path.read_bytes() for path in big_sim.backup_content_path(backup_id))
    assert await fast.read_small(key) == expected
    assert await slow.read_small(key) == expected
    [upload] = slow.uploads
    assert max(upload.held) <= downloader.budget.peak <= 4 * MiB + 3 * FIRST_READ
    assert downloader.budget.used == 0


async def test_a_wide_resume_starts_where_the_destination_with_fewest_bytes_stopped(
    big_sim: Simulator, big_server: SimulatorServer
) -> None:
    """Two destinations left 3 MiB and 1 MiB + 12,345 bytes of an upload: four streams of
    256 KiB ranges fetch from the smaller length on, nothing before it, and both end whole
    (the one ahead skips what it holds)."""
    backup_id = big_sim.add_backup("stack-a", size=4 * MiB)
    expected = b"".join(path.read_bytes() for path in big_sim.backup_content_path(backup_id))
    key, smallest = "stack-a/backup.tar", MiB + 12_345
    near, far = MemoryStorage(), MemoryStorage()
    for storage, durable in ((near, 3 * MiB), (far, smallest)):
        upload = await storage.start_upload(key)
        await upload.write_at(expected[:durable], 0)
        await upload.suspend()

    async def fresh_url() -> str:
        return await _public_url(big_server, backup_id, "tar")

    async with aiohttp.ClientSession(auto_decompress=False) as session:
        async with session.get(await fresh_url(), headers={"Range": "bytes=0-0"}) as response:
            etag = response.headers["ETag"]  # what the first answer said, as recorded
            await response.read()
        served_before = big_sim.stats.bytes_served
        big_sim.stats.blob_ranges.clear()
        downloader = Downloader(
            session, max_files=4, retry_policy=RetryPolicy(retries=2), chunk_size=SEGMENT,
            streams_per_file=4, segment_size=256 * KiB,
        )
        fan_out = FanOut([_destination("near", near), _destination("far", far)], key)
        joined = await BackupJoiner(downloader, fan_out).archive(
            key, [PartSource("tar", "db.tar", fresh_url)],
            on_size=lambda _: None, on_bytes=lambda _: None,
            known=[KnownPart("tar", PartFacts(size=len(expected), etag=etag, md5=None))],
        )
    assert joined.sha256 == big_sim.expected_sha256(backup_id)
    assert await near.read_small(key) == expected
    assert await far.read_small(key) == expected
    starts = [int(str(r).removeprefix("bytes=").split("-")[0]) for r in big_sim.stats.blob_ranges]
    assert min(starts) == smallest
    assert len(starts) >= 4  # the rest came as several ranges
    assert big_sim.stats.bytes_served - served_before == len(expected) - smallest


async def test_an_empty_file_is_one_get_and_archived(
    big_sim: Simulator, big_server: SimulatorServer, workspace: Workspace
) -> None:
    """A 0-byte file answers its first range with 416 (nothing there): archived empty."""
    backup_id = big_sim.add_backup("stack-a", size=0)
    await archive(big_sim, big_server, workspace)
    assert big_sim.stats.blob_ranges == [f"bytes=0-{SEGMENT - 1}"]
    assert_exact(big_sim, workspace, backup_id)


async def test_after_cuts_restarts_and_failures_the_budget_is_whole_again(
    big_sim: Simulator, big_server: SimulatorServer, workspace: Workspace
) -> None:
    """Cut bodies, an expired URL, a changed file and a backup that fails for good leave no
    room taken in the in-flight budget (a leak would stall a daemon's later passes)."""
    for name in ("cut", "changed", "lost"):
        big_sim.add_backup("stack-a", database_name=name, size=SIZE)
    big_sim.faults.cut_downloads = 3
    big_sim.faults.changed_etags = 1
    big_sim.faults.expire_urls_after_gets = 5
    settings = settings_for(
        workspace, big_server, "stack-a", transfer=wide(in_flight="2MiB", chunk_size=SEGMENT)
    )
    for path in big_sim.backup_content_path(3):
        path.unlink()  # listed, but its file is gone: 404 for good
    async with Runtime(settings, TOKEN) as runtime:
        summary = await SyncPass(runtime).run()
        budget = runtime.downloader.budget
        assert (summary.archived, len(summary.failed)) == (2, 1)
        assert budget.used == 0
        big_sim.add_backup("stack-a", database_name="bent", size=20 * SEGMENT)
        big_sim.faults.ranged_faults_after = 2  # then 416 for good, segments ahead in flight
        big_sim.faults.unsatisfiable_ranges = 1000
        summary = await SyncPass(runtime).run()
        assert summary.archived == 0
        assert budget.used == 0
        assert 0 < budget.peak <= 2 * MiB + SEGMENT
