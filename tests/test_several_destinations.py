"""Several destinations: one download into all of them, each failing alone, filled in later."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

from aiohttp import web

from archiver.simulator import Simulator, SimulatorServer
from tests.archive_backends import ArchiveBackend, s3_backend
from tests.conftest import PART_SIZE, TOKEN, Workspace, run_cli, start_cli
from tests.destinations_helpers import (
    NO_CLOUD66_WORK,
    backend_files,
    cloud66_work,
    config,
    far,
    files_under,
    local,
    near,
    near_folder,
    status_json,
    upstream_bytes,
)
from tests.s3_fault_proxy import S3FaultProxy, is_manifest_put
from tests.s3_server import S3Server

MiB = 1024 * 1024


async def test_one_download_goes_into_every_destination(
    sim: Simulator, server: SimulatorServer, workspace: Workspace, archive_backend: ArchiveBackend
) -> None:
    """Three destinations (two folders and each backend in turn): each byte fetched once,
    one public_url request per part, every destination holding identical copies."""
    multi = sim.add_backup("stack-a", database_name="shop", size=3 * PART_SIZE + 5)  # 4 parts
    single = sim.add_backup("stack-a", database_name="crm", size=1000)
    path = config(workspace, server, [near(workspace), local(workspace, "mid"),
                                      far(archive_backend)])

    result = await run_cli("--config", path, "sync")

    assert result.code == 0, result.stderr
    assert sim.stats.bytes_served == 3 * PART_SIZE + 5 + 1000
    assert sim.stats.public_urls_issued == 4 + 1
    assert sim.stats.api_requests_by_path["list_files"] == 2
    near_tars = files_under(near_folder(workspace), ".tar")
    assert files_under(workspace.root / "mid", ".tar") == near_tars
    assert await backend_files(archive_backend, ".tar") == near_tars
    assert sorted(near_tars.values()) == sorted(
        [upstream_bytes(sim, multi), upstream_bytes(sim, single)]
    )
    document = await status_json(path)
    for entry in document["archived"]:
        assert [copy["storage"] for copy in entry["copies"]] == ["near", "mid", "far"]
        assert entry["location"] == entry["copies"][0]["location"]
        key = next(k for k in near_tars if k.endswith(f"_{entry['backup_id']}/"
                                                        f"{entry['database_name']}.tar"))
        assert entry["copies"][2]["location"] == archive_backend.location(key)
    assert [d["name"] for d in document["storage"]] == ["near", "mid", "far"]
    assert all(d["backups"] == 2 and d["missing"] == 0 for d in document["storage"])


async def test_a_destination_down_for_a_pass_fails_alone_and_is_filled_in_when_back(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """`far` cannot be written (its folder is a file): near archives, the pass exits 1 naming
    far; once far is back, the next pass copies near's copies into it without Cloud 66."""
    ids = [sim.add_backup("stack-a", size=PART_SIZE + 7) for _ in range(2)]
    blocked = workspace.root / "far"
    blocked.write_text("a file where the destination's folder should be")
    path = config(workspace, server, [near(workspace), local(workspace, "far")])

    down = await run_cli("--config", path, "sync")

    assert down.code == 1
    assert "far" in down.stderr
    assert len(files_under(near_folder(workspace), ".tar")) == 2
    failed = (await status_json(path))["last_run"]["failed"]
    assert failed
    assert {entry["storage"] for entry in failed} == {"far"}
    blocked.unlink()
    sim.stats.reset()

    back = await run_cli("--config", path, "sync")

    assert back.code == 0, back.stderr
    assert "filled in 2 from other destinations" in back.stderr
    assert cloud66_work(sim) == NO_CLOUD66_WORK
    near_tars = files_under(near_folder(workspace), ".tar")
    assert files_under(workspace.root / "far", ".tar") == near_tars
    near_manifests = files_under(near_folder(workspace), "manifest.json")
    for key, data in files_under(workspace.root / "far", "manifest.json").items():
        copied, original = json.loads(data), json.loads(near_manifests[key])
        del copied["archived_at"], original["archived_at"]
        assert copied == original
    document = await status_json(path)
    assert [len(entry["copies"]) for entry in document["archived"]] == [2, 2]
    assert sorted(entry["backup_id"] for entry in document["archived"]) == ids


async def test_a_new_destination_is_filled_in_from_the_archive_without_cloud66(
    sim: Simulator, server: SimulatorServer, workspace: Workspace, archive_backend: ArchiveBackend
) -> None:
    """Added to a full archive, a destination (each backend) gets every backup copied from
    the others: no file list, no public_url, no blob request; one of them Cloud 66 no longer
    even lists."""
    ids = [sim.add_backup("stack-a", size=size) for size in (PART_SIZE * 2 + 1, 700, 0)]
    only = config(workspace, server, [near(workspace)])
    assert (await run_cli("--config", only, "sync")).code == 0
    sim.remove_backup(ids[0])  # rotated away upstream: only the archive has it now
    sim.stats.reset()
    both = config(workspace, server, [near(workspace), far(archive_backend)])

    result = await run_cli("--config", both, "sync")

    assert result.code == 0, result.stderr
    assert cloud66_work(sim) == NO_CLOUD66_WORK
    near_tars = files_under(near_folder(workspace), ".tar")
    assert await backend_files(archive_backend, ".tar") == near_tars
    document = await status_json(both)
    assert sorted(e["backup_id"] for e in document["archived"]) == ids
    assert all([c["storage"] for c in e["copies"]] == ["near", "far"] for e in document["archived"])
    sim.stats.reset()
    again = await run_cli("--config", both, "sync")
    assert again.code == 0, again.stderr
    assert "archived 0, already had 2" in again.stderr
    assert cloud66_work(sim) == NO_CLOUD66_WORK


async def test_a_copy_gone_bad_is_not_copied_on(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """A source copy that no longer matches its manifest is not used: a backup Cloud 66 still
    lists is downloaded again for the new destination; one it no longer lists is reported."""
    listed = sim.add_backup("stack-a", database_name="listed", size=5000)
    dropped = sim.add_backup("stack-a", database_name="dropped", size=5000)
    only_near = config(workspace, server, [near(workspace)])
    assert (await run_cli("--config", only_near, "sync")).code == 0
    for tar in near_folder(workspace).rglob("*.tar"):
        data = bytearray(tar.read_bytes())
        data[100] ^= 0x01  # bit rot in both copies
        tar.write_bytes(bytes(data))
    sim.remove_backup(dropped)
    sim.stats.reset()
    path = config(workspace, server, [near(workspace), local(workspace, "far")])

    result = await run_cli("--config", path, "sync")

    assert result.code == 1
    assert sim.stats.bytes_served == 5000  # the listed one, downloaded afresh for far
    [far_tar] = files_under(workspace.root / "far", ".tar").values()
    assert far_tar == upstream_bytes(sim, listed)
    [failure] = (await status_json(path))["last_run"]["failed"]
    assert (failure["backup_id"], failure["storage"]) == (dropped, "far")
    assert "Cloud 66 no longer lists it" in failure["reason"]
    assert "the copy in 'near' could not be used" in failure["reason"]
    assert "encrypted" not in failure["reason"]  # no encryption anywhere: not the cause


async def test_a_copy_deleted_by_hand_is_filled_in_again_by_the_next_pass(
    sim: Simulator, server: SimulatorServer, workspace: Workspace, archive_backend: ArchiveBackend
) -> None:
    """A copy deleted from a destination (each backend as `far`) behind the archiver's back:
    the next pass notices its manifest is gone and copies it back from near, with no Cloud 66
    download; status counts it in far again."""
    backup_id = sim.add_backup("stack-a", database_name="shop", size=PART_SIZE + 11)
    path = config(workspace, server, [near(workspace), far(archive_backend)])
    assert (await run_cli("--config", path, "sync")).code == 0
    far_keys = [k for k in await archive_backend.keys() if f"_{backup_id}/" in k]
    assert len(far_keys) == 2  # the tar and its manifest
    for key in far_keys:
        await archive_backend.delete(key)
    sim.stats.reset()

    again = await run_cli("--config", path, "sync")

    assert again.code == 0, again.stderr
    assert "filled in 1 from other destinations" in again.stderr
    assert cloud66_work(sim) == NO_CLOUD66_WORK
    assert await backend_files(archive_backend, ".tar") == files_under(
        near_folder(workspace), ".tar"
    )
    document = await status_json(path)
    assert [c["storage"] for c in document["archived"][0]["copies"]] == ["near", "far"]
    assert {d["name"]: d["missing"] for d in document["storage"]} == {"near": 0, "far": 0}


async def test_a_pass_counts_as_archived_only_the_backups_that_gained_a_copy(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """Filling in a new destination while one backup's only copy went bad: last_run.archived
    counts the backups filled in, not the one that failed beside them."""
    good = [sim.add_backup("stack-a", database_name=f"db{n}", size=3000 + n) for n in range(5)]
    bad = sim.add_backup("stack-a", database_name="rotten", size=4000)
    only_near = config(workspace, server, [near(workspace)])
    assert (await run_cli("--config", only_near, "sync")).code == 0
    [rotten] = near_folder(workspace).rglob("rotten.tar")
    data = bytearray(rotten.read_bytes())
    data[100] ^= 0x01
    rotten.write_bytes(bytes(data))
    sim.remove_backup(bad)
    path = config(workspace, server, [near(workspace), local(workspace, "far")])

    result = await run_cli("--config", path, "sync")

    assert result.code == 1
    last_run = (await status_json(path))["last_run"]
    assert last_run["archived"] == len(good)
    assert [(f["backup_id"], f["storage"]) for f in last_run["failed"]] == [(bad, "far")]
    assert "filled in 5 from other destinations" in result.stderr


async def test_a_pass_where_every_destination_fails_claims_nothing_already_had(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """Both destinations sit under a file: nothing is archived, and the summary does not call
    the failed backups 'already had'."""
    sim.add_backup("stack-a", size=2000)
    blocker = workspace.root / "blocker"
    blocker.write_text("a file where folders should be")
    path = config(workspace, server, [
        {"name": "near", "type": "local", "path": str(blocker / "near")},
        {"name": "far", "type": "local", "path": str(blocker / "far")},
    ])

    result = await run_cli("--config", path, "sync")

    assert result.code == 1
    assert "archived 0, already had 0," in result.stderr
    assert {f["storage"] for f in (await status_json(path))["last_run"]["failed"]} == {
        "near", "far"
    }


async def test_a_state_rebuilt_from_several_destinations_knows_every_copy(
    sim: Simulator, server: SimulatorServer, workspace: Workspace, archive_backend: ArchiveBackend
) -> None:
    """With the state deleted, every destination's manifests rebuild it (each copy where it
    is); a copy one destination lost is filled in from the other, nothing downloaded."""
    ids = [sim.add_backup("stack-a", size=1200) for _ in range(3)]
    path = config(workspace, server, [near(workspace), far(archive_backend)])
    assert (await run_cli("--config", path, "sync")).code == 0
    shutil.rmtree(workspace.state)
    lost = next(p for p in near_folder(workspace).rglob("manifest.json") if f"_{ids[1]}" in str(p))
    shutil.rmtree(lost.parent)  # near lost one backup's folder while the state was away
    sim.stats.reset()

    result = await run_cli("--config", path, "sync")

    assert result.code == 0, result.stderr
    assert sim.stats.bytes_served == 0
    assert sim.stats.blob_requests == 0
    assert "filled in 1 from other destinations" in result.stderr
    document = await status_json(path)
    assert {e["backup_id"]: [c["storage"] for c in e["copies"]] for e in document["archived"]} == {
        backup_id: ["near", "far"] for backup_id in ids
    }


async def test_kill_9_mid_transfer_resumes_every_destination(
    tmp_path: Path, workspace: Workspace, archive_backend: ArchiveBackend
) -> None:
    """Killed mid-download into a folder and each backend: the next pass resumes where the
    destination with the fewest durable bytes stopped, and both end whole."""
    sim = Simulator(token=TOKEN, blob_dir=tmp_path / "blobs", part_size=4 * MiB)
    backup_id = sim.add_backup("stack-a", database_name="shop", size=14 * MiB)
    sim.faults.slow_downloads = 100
    sim.faults.slow_bytes_per_second = 4 * MiB
    async with SimulatorServer(sim) as server:
        path = config(workspace, server, [near(workspace), far(archive_backend)],
                      transfer={"max_concurrent_downloads": 1})
        process = await start_cli("--config", path, "sync")
        deadline = asyncio.get_running_loop().time() + 60
        while sim.stats.bytes_served < 7 * MiB:
            assert asyncio.get_running_loop().time() < deadline, "timed out"
            await asyncio.sleep(0.02)
        process.kill()
        await process.wait()
        sim.faults.slow_downloads = 0
        result = await run_cli("--config", path, "sync")
    assert result.code == 0, result.stderr
    assert "resuming an unfinished upload" in result.stderr
    expected = upstream_bytes(sim, backup_id)
    assert list(files_under(near_folder(workspace), ".tar").values()) == [expected]
    assert list((await backend_files(archive_backend, ".tar")).values()) == [expected]
    refetched = sim.stats.bytes_served - 14 * MiB
    allowed = (5 if archive_backend.name == "s3" else 0) * MiB + 4 * MiB
    assert refetched <= allowed, refetched


async def test_a_manifest_one_destination_refuses_takes_back_only_that_copy(
    sim: Simulator, server: SimulatorServer, workspace: Workspace, s3_server: S3Server,
    s3_bucket: str,
) -> None:
    """far (S3 behind a proxy) refuses the manifest as a full bucket would: far's data leaves
    its final name again, near keeps its copy, the pass exits 1 naming far; once far takes
    writes, the next pass fills it from near without Cloud 66."""
    backup_id = sim.add_backup("stack-a", database_name="shop", size=7000)
    secret = workspace.root / "s3-secret"
    secret.write_text(s3_server.secret_key + "\n")
    stored = s3_backend(s3_server, s3_bucket, secret)  # to look, past the proxy
    async with S3FaultProxy(s3_server.endpoint_url) as proxy:
        proxied = S3Server(proxy.url, s3_server.access_key, s3_server.secret_key)
        path = config(workspace, server, [near(workspace), far(s3_backend(proxied, s3_bucket,
                                                                          secret))])
        proxy.refuse = is_manifest_put

        refused = await run_cli("--config", path, "sync")

        assert refused.code == 1
        assert await stored.keys() == []  # the data went back out of its final name
        [near_tar] = files_under(near_folder(workspace), ".tar").values()
        assert near_tar == upstream_bytes(sim, backup_id)
        [failure] = (await status_json(path))["last_run"]["failed"]
        assert (failure["backup_id"], failure["storage"]) == (backup_id, "far")
        assert "manifest" in failure["reason"]
        proxy.refuse = None
        sim.stats.reset()

        healed = await run_cli("--config", path, "sync")

    assert healed.code == 0, healed.stderr
    assert cloud66_work(sim) == NO_CLOUD66_WORK
    assert list((await backend_files(stored, ".tar")).values()) == [near_tar]


def _is_data_put(request: web.Request) -> bool:
    """The PutObject that publishes a small backup's data under its final key."""
    return (request.method == "PUT" and request.path.endswith(".tar")
            and "uploadId" not in request.query)


async def test_a_destination_writes_its_manifest_without_waiting_for_the_others_commit(
    sim: Simulator, server: SimulatorServer, workspace: Workspace, s3_server: S3Server,
    s3_bucket: str,
) -> None:
    """While far's data commit is held, near already has its manifest beside its final .tar."""
    backup_id = sim.add_backup("stack-a", database_name="shop", size=7000)
    secret = workspace.root / "s3-secret"
    secret.write_text(s3_server.secret_key + "\n")
    async with S3FaultProxy(s3_server.endpoint_url) as proxy:
        proxied = S3Server(proxy.url, s3_server.access_key, s3_server.secret_key)
        path = config(workspace, server, [near(workspace), far(s3_backend(proxied, s3_bucket,
                                                                          secret))])
        proxy.hold = _is_data_put
        process = await start_cli("--config", path, "sync")
        try:
            await asyncio.wait_for(proxy.held.wait(), 60)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            while not files_under(near_folder(workspace), "manifest.json"):
                assert loop.time() < deadline, "near's manifest waited for far's commit"
                await asyncio.sleep(0.02)
            [tar] = files_under(near_folder(workspace), ".tar").values()
            assert tar == upstream_bytes(sim, backup_id)
        finally:
            proxy.release(forward=True)
            await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0
    assert [c["storage"] for c in (await status_json(path))["archived"][0]["copies"]] == [
        "near", "far"
    ]
