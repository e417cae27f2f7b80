"""A destination whose place changed under the same name is read again where it is now."""

from __future__ import annotations

from archiver.model.backup_identity import identity_of
from archiver.model.manifest import Manifest, Tombstone
from archiver.simulator import Simulator, SimulatorServer
from tests.archive_backends import ArchiveBackend
from tests.conftest import Workspace, run_cli
from tests.destinations_helpers import (
    NO_CLOUD66_WORK,
    backend_files,
    cloud66_work,
    config,
    far,
    local,
    near,
    status_json,
)

BACKUPS = 4


def _storage(document: dict[str, object], name: str) -> dict[str, object]:
    entries = document["storage"]
    assert isinstance(entries, list)
    return next(entry for entry in entries if entry["name"] == name)


async def test_a_destination_pointed_at_an_empty_place_is_filled_in(
    sim: Simulator, server: SimulatorServer, workspace: Workspace,
    archive_backend: ArchiveBackend,
) -> None:
    """`far` moved to an empty folder, bucket or server: the next pass fills it from `near`,
    and status counts what is really there, nothing downloaded from Cloud 66."""
    for _ in range(BACKUPS):
        sim.add_backup("stack-a", size=1500)
    before = config(workspace, server, [near(workspace), local(workspace, "far")])
    assert (await run_cli("--config", before, "sync")).code == 0
    after = config(workspace, server, [near(workspace), far(archive_backend)])
    sim.stats.reset()

    result = await run_cli("--config", after, "sync")

    assert result.code == 0, result.stderr
    assert f"filled in {BACKUPS} from other destinations" in result.stderr
    assert cloud66_work(sim) == NO_CLOUD66_WORK
    assert len(await backend_files(archive_backend, "manifest.json")) == BACKUPS
    document = await status_json(after)
    assert {key: _storage(document, "far")[key] for key in ("backups", "missing")} == {
        "backups": BACKUPS, "missing": 0,
    }
    far_locations = {c["location"] for e in document["archived"] for c in e["copies"]
                     if c["storage"] == "far"}
    tars = [key for key in await archive_backend.keys() if key.endswith(".tar")]
    assert far_locations == {archive_backend.location(key) for key in tars}


async def test_a_destination_moved_with_its_files_is_read_back_as_it_was(
    sim: Simulator, server: SimulatorServer, workspace: Workspace,
) -> None:
    """`far`'s folder moved and its path changed with it: the pass reads the same copies back,
    copies and downloads nothing, and the tombstone of a pruned backup still holds there."""
    ids = [sim.add_backup("stack-a", size=1500) for _ in range(BACKUPS)]
    before = config(workspace, server, [near(workspace), local(workspace, "far")])
    assert (await run_cli("--config", before, "sync")).code == 0
    [pruned_id] = ids[:1]
    [(manifest_path, manifest)] = [
        (path, manifest) for path in (workspace.root / "far").rglob("manifest.json")
        if (manifest := Manifest.from_json(path.read_bytes())).backup_id == pruned_id
    ]
    (manifest_path.parent / "pruned.json").write_bytes(Tombstone(
        **identity_of(manifest), pruned_at="2026-01-01T00:00:00Z", policy="test",
        file=manifest.file,
    ).to_json())
    (workspace.root / "far").rename(workspace.root / "moved")
    after = config(workspace, server, [near(workspace), local(workspace, "far", path=str(
        workspace.root / "moved"))])
    sim.stats.reset()

    result = await run_cli("--config", after, "sync")

    assert result.code == 0, result.stderr
    assert "destination moved since the state read it" in result.stderr
    assert "filled in" not in result.stderr
    assert cloud66_work(sim) == NO_CLOUD66_WORK
    document = await status_json(after)
    assert {key: _storage(document, "far")[key] for key in ("backups", "missing")} == {
        "backups": BACKUPS - 1, "missing": 0,
    }
