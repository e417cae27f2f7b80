"""End-to-end passes against the simulator on loopback, in process: plan, transfer, commit."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

from archiver.config.settings import load_settings
from archiver.simulator import Simulator, SimulatorServer
from archiver.state.store import StateStore
from tests.conftest import PART_SIZE, Workspace, file_sha256, run_pass, settings_for


def _date(days_ago: int) -> datetime:
    return datetime(2026, 11, 1, 3, 0, tzinfo=UTC) - timedelta(days=days_ago)


def _manifests(archive: Path) -> list[dict[str, object]]:
    return [json.loads(path.read_text()) for path in sorted(archive.rglob("manifest.json"))]


async def test_first_pass_archives_every_ok_backup_with_layout_and_manifest(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """A pass stores each Ok backup at the contract's path, hash-checked, with its manifest."""
    sim.add_stack("stack-a")
    backup_id = sim.add_backup(
        "stack-a", db_type="mysql", database_name="shop", size=5000, backup_date=_date(1)
    )
    summary = await run_pass(settings_for(workspace, server, "stack-a"))

    assert summary.exit_code == 0
    assert summary.archived == 1
    folder = workspace.archive / "stack-a" / "mysql" / "shop" / f"2026-10-31T030000Z_{backup_id}"
    tar = folder / "shop.tar"
    assert file_sha256(tar) == sim.expected_sha256(backup_id)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["sha256"] == sim.expected_sha256(backup_id)
    assert manifest["size"] == 5000
    assert manifest["backup_id"] == backup_id
    assert manifest["stack_uid"] == "stack-a"
    assert manifest["db_type"] == "mysql"
    assert manifest["database_name"] == "shop"
    assert manifest["backup_date"] == "2026-10-31T03:00:00Z"
    assert manifest["source"]["id"] == backup_id
    assert [part["id"] for part in manifest["parts"]] == ["tar"]
    assert set(manifest) >= {"parts", "archived_at", "source"}


async def test_files_are_0600_and_folders_0700_whatever_the_umask(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """Archive files are created 0600 and folders 0700 even with a permissive umask."""
    import os

    sim.add_stack("stack-a")
    sim.add_backup("stack-a", size=100)
    old = os.umask(0)
    try:
        await run_pass(settings_for(workspace, server, "stack-a"))
    finally:
        os.umask(old)
    for path in workspace.archive.rglob("*"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), path


async def test_second_pass_downloads_nothing_and_costs_one_list_call_per_stack_page(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """With nothing new, a pass makes only the list calls: one per stack per page."""
    for uid in ("stack-a", "stack-b"):
        sim.add_stack(uid)
        for index in range(3):
            sim.add_backup(uid, size=2000, backup_date=_date(index))
    sim.add_backup("stack-a", size=10, status=1)  # failed: skipped, costs nothing more
    settings = settings_for(workspace, server, "stack-a", "stack-b")
    first = await run_pass(settings)
    assert first.archived == 6
    sim.stats.reset()

    second = await run_pass(settings)

    assert second.archived == 0
    assert second.exit_code == 0
    assert sim.stats.downloads_started == 0
    assert sim.stats.api_requests == 2
    assert dict(sim.stats.api_requests_by_path) == {"list_backups": 2}


async def test_incremental_pass_fetches_only_the_new_backup(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """A backup that appears after a pass is the only one the next pass downloads."""
    sim.add_stack("stack-a")
    sim.add_backup("stack-a", size=1000, backup_date=_date(2))
    settings = settings_for(workspace, server, "stack-a")
    await run_pass(settings)
    new_id = sim.add_backup("stack-a", size=1500, backup_date=_date(0))
    sim.stats.reset()

    summary = await run_pass(settings)

    assert summary.archived == 1
    assert sim.stats.downloads_started == 1
    assert [m["backup_id"] for m in _manifests(workspace.archive)].count(new_id) == 1


async def test_pagination_past_30_backups_archives_all(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """Every page of the backup list is walked: 65 backups over three pages are all archived."""
    sim.add_stack("stack-a")
    for index in range(65):
        sim.add_backup("stack-a", size=64, backup_date=_date(index))
    summary = await run_pass(settings_for(workspace, server, "stack-a"))

    assert summary.archived == 65
    assert len(_manifests(workspace.archive)) == 65
    assert sim.stats.api_requests_by_path["list_backups"] == 3


async def test_multi_part_backup_is_joined_in_order(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """Parts are joined into one tar whose sha256 is the whole backup's; parts recorded in order."""
    sim.add_stack("stack-a")
    size = PART_SIZE * 3 + 12345
    backup_id = sim.add_backup("stack-a", db_type="postgresql", database_name="big", size=size)
    await run_pass(settings_for(workspace, server, "stack-a"))

    (manifest,) = _manifests(workspace.archive)
    tar = next(workspace.archive.rglob("big.tar"))
    assert tar.stat().st_size == size
    assert file_sha256(tar) == sim.expected_sha256(backup_id) == manifest["sha256"]
    parts = manifest["parts"]
    assert isinstance(parts, list)
    assert [part["id"] for part in parts] == ["tar-aa", "tar-ab", "tar-ac", "tar-ad"]
    assert parts[0]["name"] == "big.tar-aa"
    assert sum(part["size"] for part in parts) == size
    expected_md5 = sim.part_md5s(backup_id)
    assert {part["id"]: part["etag"] for part in parts} == expected_md5
    assert not list(workspace.archive.rglob("*.part"))


async def test_legacy_part_names_join_too(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """Older `.tar.aa` piece names are joined the same way."""
    sim.add_stack("stack-a")
    backup_id = sim.add_backup("stack-a", size=PART_SIZE * 2 + 1, legacy_part_names=True)
    await run_pass(settings_for(workspace, server, "stack-a"))
    tar = next(workspace.archive.rglob("*.tar"))
    assert file_sha256(tar) == sim.expected_sha256(backup_id)


async def test_failed_backups_are_skipped_and_logged_once(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """Status 1 (or unknown) backups are not downloaded, not failures, and warned about once."""
    from structlog.testing import capture_logs

    sim.add_stack("stack-a")
    sim.add_backup("stack-a", size=100, status=1)
    sim.add_backup("stack-a", size=100, status=7)
    ok_id = sim.add_backup("stack-a", size=100, status=0)
    settings = settings_for(workspace, server, "stack-a")
    with capture_logs() as first_logs:
        summary = await run_pass(settings)
    with capture_logs() as second_logs:
        await run_pass(settings)

    assert summary.exit_code == 0
    assert summary.skipped == 2
    assert [m["backup_id"] for m in _manifests(workspace.archive)] == [ok_id]
    skipped_events = [e for e in first_logs if "not Ok" in e["event"]]
    assert len(skipped_events) == 2
    assert not [e for e in second_logs if "not Ok" in e["event"]]


async def test_db_types_filter_limits_what_is_archived(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """`db_types` on a stack archives only those database types."""
    sim.add_stack("stack-a")
    sim.add_backup("stack-a", db_type="mysql", size=10)
    sim.add_backup("stack-a", db_type="redis", size=10)
    sim.add_backup("stack-a", db_type="mongodb", size=10)
    config = workspace.write_config(
        server.base_url, [{"uid": "stack-a", "db_types": ["mysql", "redis"]}]
    )
    summary = await run_pass(load_settings(config))
    assert summary.archived == 2
    assert sorted(str(m["db_type"]) for m in _manifests(workspace.archive)) == ["mysql", "redis"]


async def test_discover_archives_every_visible_stack_but_the_excluded(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """With [discover], stacks come from GET /stacks, minus `exclude`."""
    for uid in ("stack-a", "stack-b", "stack-c"):
        sim.add_stack(uid)
        sim.add_backup(uid, size=10)
    config = workspace.write_config(server.base_url, [])
    text = config.read_text() + '[discover]\nenabled = true\nexclude = ["stack-b"]\n'
    config.write_text(text)
    summary = await run_pass(load_settings(config))
    assert summary.archived == 2
    assert sorted(str(m["stack_uid"]) for m in _manifests(workspace.archive)) == [
        "stack-a",
        "stack-c",
    ]


async def test_hostile_names_never_escape_the_archive(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """Database names with `../..`, slashes, NUL and leading dots stay inside the archive root."""
    sim.add_stack("stack-a")
    hostile = ["../../etc/passwd", "a/b\\c", "nul\x00byte", "..", ".hidden", "/abs"]
    ids = [sim.add_backup("stack-a", database_name=name, size=50) for name in hostile]
    summary = await run_pass(settings_for(workspace, server, "stack-a"))

    assert summary.archived == len(hostile)
    root = workspace.archive.resolve()
    files = [p for p in workspace.root.rglob("*") if p.is_file()]
    archived = [p for p in files if p.suffix in (".tar", ".json")]
    assert all(p.resolve().is_relative_to(root) for p in archived)
    for path in archived:
        relative = path.relative_to(root)
        assert all(not part.startswith(".") for part in relative.parts)
        assert "\x00" not in str(relative)
    assert sorted(int(str(m["backup_id"])) for m in _manifests(workspace.archive)) == sorted(ids)


async def test_manifest_without_state_record_is_adopted_not_downloaded(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """A crash after the manifest but before the state update costs no second download."""
    sim.add_stack("stack-a")
    backup_id = sim.add_backup("stack-a", size=300)
    settings = settings_for(workspace, server, "stack-a")
    await run_pass(settings)
    state = StateStore.open(workspace.state)
    state.archived.forget("stack-a", backup_id, "default")
    state.close()
    sim.stats.reset()

    summary = await run_pass(settings)

    assert sim.stats.downloads_started == 0
    assert summary.already == 1
    state = StateStore.open(workspace.state)
    try:
        assert state.archived.contains("stack-a", backup_id)
    finally:
        state.close()


async def test_status_document_lists_archived_backups_and_last_run(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """The status object carries each archive's location and the last run's outcome."""
    from archiver.service.status_document import status_document

    sim.add_stack("stack-a")
    backup_id = sim.add_backup("stack-a", database_name="db", size=10)
    settings = settings_for(workspace, server, "stack-a")
    await run_pass(settings)
    state = StateStore.open(workspace.state)
    try:
        document = status_document(state, destinations=settings.storage)
    finally:
        state.close()
    (entry,) = document["archived"]
    assert entry["backup_id"] == backup_id
    location = Path(entry["location"])
    assert location.is_absolute()
    assert location == next(workspace.archive.rglob("db.tar")).absolute()
    assert document["last_run"]["ok"] is True
    assert document["last_run"]["archived"] == 1
    assert document["last_run"]["failed"] == []


async def test_discovered_stacks_with_hostile_uids_stay_inside_the_archive(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """A discovered stack uid is upstream data: odd ones are archived under a sanitised folder."""
    sim.add_stack("../escape")
    backup_id = sim.add_backup("../escape", size=10)
    config = workspace.write_config(server.base_url, [])
    config.write_text(config.read_text() + "[discover]\nenabled = true\n")
    summary = await run_pass(load_settings(config))
    assert summary.exit_code == 0, summary.failed
    (manifest_path,) = workspace.archive.rglob("manifest.json")
    assert manifest_path.resolve().is_relative_to(workspace.archive.resolve())
    assert json.loads(manifest_path.read_text())["backup_id"] == backup_id


async def test_discovery_failure_still_archives_the_configured_stacks(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """When GET /stacks fails, the configured stacks are archived and the failure is named."""
    sim.add_stack("stack-a")
    sim.add_backup("stack-a", size=10)
    config = workspace.write_config(
        server.base_url, [{"uid": "stack-a"}], api={"max_retries": 0}
    )
    config.write_text(config.read_text() + "[discover]\nenabled = true\n")
    sim.faults.api_errors = 1  # the first request is GET /stacks
    summary = await run_pass(load_settings(config))
    assert summary.archived == 1
    assert summary.exit_code == 1
    assert "could not list stacks" in summary.failed[0].reason
