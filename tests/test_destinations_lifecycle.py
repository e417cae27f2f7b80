"""Several destinations: encrypted beside plain, retention, verify and restore per destination."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from archiver.simulator import Simulator, SimulatorServer
from tests.conftest import PART_SIZE, Workspace, file_sha256, run_cli
from tests.destinations_helpers import (
    NO_CLOUD66_WORK,
    age_decrypt,
    age_key,
    cloud66_work,
    config,
    files_under,
    local,
    near,
    near_folder,
    sha256,
    status_json,
    upstream_bytes,
)

START = datetime(2026, 1, 1, 3, 0, tzinfo=UTC)


async def test_an_encrypted_destination_beside_a_plain_one(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """One download: near keeps the plain tar, far an age file the age CLI opens; far never
    holds plaintext; both copies verify."""
    key, public = age_key(workspace.root)
    backup_id = sim.add_backup("stack-a", database_name="shop", size=2 * PART_SIZE + 9)
    path = config(workspace, server, [
        near(workspace, encryption=False),
        local(workspace, "far", encryption={"recipients": [public]}),
    ])

    result = await run_cli("--config", path, "sync")

    assert result.code == 0, result.stderr
    assert sim.stats.bytes_served == 2 * PART_SIZE + 9
    assert sim.stats.public_urls_issued == 3
    plain = upstream_bytes(sim, backup_id)
    [near_tar] = files_under(near_folder(workspace), ".tar").values()
    assert near_tar == plain
    [sealed] = files_under(workspace.root / "far", ".tar.age").values()
    assert not files_under(workspace.root / "far", ".tar")
    assert plain[:4096] not in sealed
    assert age_decrypt(key, sealed) == plain
    [manifest] = files_under(workspace.root / "far", "manifest.json").values()
    document = json.loads(manifest)
    assert document["encryption"]["recipients"] == [public]
    assert (document["sha256"], document["stored_sha256"]) == (sha256(plain), sha256(sealed))
    verify = await run_cli("--config", path, "verify", "--json")
    assert verify.code == 0, verify.stderr
    checked = json.loads(verify.stdout)["checked"]
    assert sorted((c["storage"], c["ok"]) for c in checked) == [("far", True), ("near", True)]


async def test_a_plain_copy_is_encrypted_for_a_new_destination_once_cloud66_dropped_it(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """Cloud 66 no longer lists the backup; near holds it plain: far (encrypted) gets it
    sealed from near's copy, never in plaintext, without Cloud 66."""
    key, public = age_key(workspace.root)
    backup_id = sim.add_backup("stack-a", size=4000)
    only_near = config(workspace, server, [near(workspace)])
    assert (await run_cli("--config", only_near, "sync")).code == 0
    plain = upstream_bytes(sim, backup_id)
    sim.remove_backup(backup_id)
    sim.stats.reset()
    path = config(workspace, server, [
        near(workspace), local(workspace, "far", encryption={"recipients": [public]}),
    ])

    result = await run_cli("--config", path, "sync")

    assert result.code == 0, result.stderr
    assert cloud66_work(sim) == NO_CLOUD66_WORK
    [sealed] = files_under(workspace.root / "far", ".tar.age").values()
    assert age_decrypt(key, sealed) == plain
    assert not files_under(workspace.root / "far", ".tar")


async def test_an_encrypted_copy_is_decrypted_for_a_plain_destination_with_the_identity(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """Cloud 66 no longer lists it and near holds it encrypted: without an identity far is
    reported (exit 1, named); with [encryption] identity_file it is decrypted into far."""
    key, public = age_key(workspace.root)
    backup_id = sim.add_backup("stack-a", size=3000)
    sealed_near = near(workspace, encryption={"recipients": [public]})
    first = config(workspace, server, [sealed_near])
    assert (await run_cli("--config", first, "sync")).code == 0
    plain = upstream_bytes(sim, backup_id)
    sim.remove_backup(backup_id)
    plain_far = local(workspace, "far", encryption=False)
    without = config(workspace, server, [sealed_near, plain_far])

    reported = await run_cli("--config", without, "sync")

    assert reported.code == 1
    [failure] = (await status_json(without))["last_run"]["failed"]
    assert (failure["backup_id"], failure["storage"]) == (backup_id, "far")
    assert "identity_file" in failure["reason"]
    assert not files_under(workspace.root / "far", ".tar")
    sim.stats.reset()
    keyed_near = near(workspace, encryption={"recipients": [public], "identity_file": str(key)})
    with_key = config(workspace, server, [keyed_near, plain_far])

    result = await run_cli("--config", with_key, "sync")

    assert result.code == 0, result.stderr
    assert cloud66_work(sim) == NO_CLOUD66_WORK
    [tar] = files_under(workspace.root / "far", ".tar").values()
    assert tar == plain


async def test_each_destination_prunes_by_its_own_retention_and_never_refills_it(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """far keeps the 2 newest, near all 5; what far pruned is never filled in there again,
    not even after the state was deleted and rebuilt from both destinations."""
    ids = [sim.add_backup("stack-a", size=500, backup_date=START + timedelta(days=n))
           for n in range(5)]
    path = config(workspace, server, [
        near(workspace), local(workspace, "far", retention={"keep_last": 2}),
    ])
    assert (await run_cli("--config", path, "sync")).code == 0

    dry = await run_cli("--config", path, "prune", "--dry-run", "--json")
    assert dry.code == 0, dry.stderr
    plan = json.loads(dry.stdout)
    assert sorted((e["storage"], e["backup_id"]) for e in plan["remove"]) == [
        ("far", backup_id) for backup_id in ids[:3]
    ]
    assert {e["storage"] for e in plan["keep"]} == {"near", "far"}
    pruned = await run_cli("--config", path, "prune")
    assert pruned.code == 0, pruned.stderr
    assert len(files_under(workspace.root / "far", ".tar")) == 2
    assert len(files_under(workspace.root / "far", "pruned.json")) == 3
    assert len(files_under(near_folder(workspace), ".tar")) == 5
    for rebuilt in (False, True):
        if rebuilt:
            shutil.rmtree(workspace.state)
        sim.stats.reset()
        result = await run_cli("--config", path, "sync")
        assert result.code == 0, result.stderr
        assert "filled in" not in result.stderr
        assert sim.stats.bytes_served == 0
        assert len(files_under(workspace.root / "far", ".tar")) == 2
        document = await status_json(path)
        held = {e["backup_id"]: [c["storage"] for c in e["copies"]] for e in document["archived"]}
        assert held == {b: ["near"] if b in ids[:3] else ["near", "far"] for b in ids}
        assert [d["missing"] for d in document["storage"]] == [0, 0]


async def test_after_pass_prunes_only_the_destination_that_asks(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """A destination's own after_pass prunes it after each good pass; the other keeps all."""
    for n in range(3):
        sim.add_backup("stack-a", size=300, backup_date=START + timedelta(days=n))
    path = config(workspace, server, [
        near(workspace), local(workspace, "far", retention={"keep_last": 1, "after_pass": True}),
    ])
    result = await run_cli("--config", path, "sync")
    assert result.code == 0, result.stderr
    assert "pruned 2" in result.stderr
    assert len(files_under(workspace.root / "far", ".tar")) == 1
    assert len(files_under(near_folder(workspace), ".tar")) == 3


async def test_verify_and_restore_work_per_destination(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """A bit flipped in far's copy: verify names far and far's file; --storage near finds
    nothing wrong; restore reads near by default and far when asked, and refuses (exit 2)
    a name no destination has."""
    backup_id = sim.add_backup("stack-a", database_name="shop", size=6000)
    path = config(workspace, server, [near(workspace), local(workspace, "far")])
    assert (await run_cli("--config", path, "sync")).code == 0
    [far_tar] = (workspace.root / "far").rglob("shop.tar")
    data = bytearray(far_tar.read_bytes())
    data[10] ^= 0x01
    far_tar.write_bytes(bytes(data))

    verify = await run_cli("--config", path, "verify", "--json")
    assert verify.code == 1
    checked = {c["storage"]: c for c in json.loads(verify.stdout)["checked"]}
    assert checked["near"]["ok"] is True
    assert checked["far"]["problem"] == "sha256 differs from the manifest"
    assert checked["far"]["location"] == str(far_tar)
    only_near = await run_cli("--config", path, "verify", "--storage", "near", "--json")
    assert only_near.code == 0, only_near.stderr
    assert [c["storage"] for c in json.loads(only_near.stdout)["checked"]] == ["near"]
    assert (await status_json(path))["archived"][0]["verify_ok"] is False

    restored = workspace.root / "restored.tar"
    assert (await run_cli("--config", path, "restore", str(backup_id), "-o",
                          str(restored))).code == 0
    assert file_sha256(restored) == sim.expected_sha256(backup_id)
    bad = await run_cli("--config", path, "restore", str(backup_id), "--storage", "far",
                        "-o", str(workspace.root / "from-far.tar"))
    assert bad.code == 1  # far's copy is the damaged one
    for command in (["verify"], ["prune", "--dry-run"],
                    ["restore", str(backup_id), "-o", str(workspace.root / "x.tar")]):
        unknown = await run_cli("--config", path, *command, "--storage", "nowhere")
        assert unknown.code == 2
        assert "--storage 'nowhere': no such destination (configured: 'near', 'far')" in (
            unknown.stderr
        )


async def test_a_copy_deleted_behind_the_archivers_back_is_restored_from_another_and_refilled(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """near's copy deleted by hand: restore reads far's instead; verify names near's missing
    manifest and the state stops claiming that copy; the next pass fills near in again from
    far, with no Cloud 66 download."""
    backup_id = sim.add_backup("stack-a", database_name="shop", size=6000)
    path = config(workspace, server, [near(workspace), local(workspace, "far")])
    assert (await run_cli("--config", path, "sync")).code == 0
    [near_copy] = near_folder(workspace).rglob("shop.tar")
    shutil.rmtree(near_copy.parent)

    restored = workspace.root / "restored.tar"
    restore = await run_cli("--config", path, "restore", str(backup_id), "-o", str(restored))
    assert restore.code == 0, restore.stderr
    assert file_sha256(restored) == sim.expected_sha256(backup_id)
    assert "near" in restore.stderr  # the warning names the destination it skipped

    verify = await run_cli("--config", path, "verify", "--json")
    assert verify.code == 1
    checked = {c["storage"]: c for c in json.loads(verify.stdout)["checked"]}
    assert checked["near"]["problem"] == "the manifest is missing"
    assert checked["far"]["ok"] is True
    document = await status_json(path)
    assert [c["storage"] for c in document["archived"][0]["copies"]] == ["far"]
    assert {d["name"]: d["missing"] for d in document["storage"]} == {"near": 1, "far": 0}
    sim.stats.reset()

    again = await run_cli("--config", path, "sync")

    assert again.code == 0, again.stderr
    assert sim.stats.bytes_served == 0
    assert near_copy.read_bytes() == upstream_bytes(sim, backup_id)
    assert (await run_cli("--config", path, "verify")).code == 0


async def test_a_moved_archive_is_named_where_it_is_now(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """The state keeps keys, not paths: after the archive moved (and the config with it),
    status and verify name the files at their new place, nothing downloaded again."""
    backup_id = sim.add_backup("stack-a", database_name="shop", size=2500)
    before = config(workspace, server, [near(workspace)])
    assert (await run_cli("--config", before, "sync")).code == 0
    moved = workspace.root / "moved"
    near_folder(workspace).rename(moved)
    after = config(workspace, server, [near(workspace, path=str(moved))])
    [tar] = moved.rglob("shop.tar")
    data = bytearray(tar.read_bytes())
    data[7] ^= 0x01
    tar.write_bytes(bytes(data))
    sim.stats.reset()

    [entry] = (await status_json(after))["archived"]
    verify = await run_cli("--config", after, "verify", "--json")

    assert entry["backup_id"] == backup_id
    assert entry["location"] == str(tar)
    assert verify.code == 1
    [checked] = json.loads(verify.stdout)["checked"]
    assert checked["location"] == str(tar)
    assert sim.stats.bytes_served == 0


@pytest.mark.parametrize("several", [False, True])
async def test_an_upgraded_state_reads_and_downloads_nothing_again(
    sim: Simulator, server: SimulatorServer, workspace: Workspace, several: bool
) -> None:
    """A state from before several destinations (schema 3, absolute locations): its rows go
    to the single destination, or to the one whose location they name among several; no
    byte is downloaded again and a new destination is filled from the old one."""
    ids = [sim.add_backup("stack-a", size=900) for _ in range(2)]
    single = config(workspace, server, [near(workspace)])
    assert (await run_cli("--config", single, "sync")).code == 0
    _downgrade_state(workspace.state / "state.sqlite3", near_folder(workspace))
    destinations = [local(workspace, "first"), near(workspace)] if several else [near(workspace)]
    path = config(workspace, server, destinations)
    sim.stats.reset()

    result = await run_cli("--config", path, "sync")

    assert result.code == 0, result.stderr
    assert cloud66_work(sim) == NO_CLOUD66_WORK
    handed = [json.loads(line) for line in result.stderr.splitlines()
              if "state records handed to destination" in line]
    assert [entry["storage"] for entry in handed] == ["near"]  # adopted, not read again
    assert ("already had 0" if several else "already had 2") in result.stderr
    document = await status_json(path)
    names = ["first", "near"] if several else ["near"]
    assert {e["backup_id"]: [c["storage"] for c in e["copies"]] for e in document["archived"]} == {
        backup_id: names for backup_id in ids
    }
    if several:
        assert "filled in 2 from other destinations" in result.stderr


def _downgrade_state(db_path: Path, archive: Path) -> None:
    """Replace the state by one as the single-destination version wrote it (schema 3)."""
    import sqlite3

    from archiver.state.schema import MIGRATIONS

    manifests = [json.loads(p.read_text()) | {"key": p.relative_to(archive).parent.as_posix()}
                 for p in archive.rglob("manifest.json")]
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    connection = sqlite3.connect(db_path, isolation_level=None)
    for script in MIGRATIONS[:3]:
        connection.executescript(script)
    connection.execute("PRAGMA user_version = 3")
    for m in manifests:
        tar_key = f"{m['key']}/{m['file']}"
        connection.execute(
            "INSERT INTO archived VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (m["stack_uid"], m["backup_id"], m["db_type"], m["database_name"], m["size"],
             m["sha256"], str(archive / tar_key), m["archived_at"], tar_key,
             f"{m['key']}/manifest.json", m["backup_date"]),
        )
    connection.close()
