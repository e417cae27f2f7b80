"""What a pass promises on every backend (local, S3, SFTP), one test each, run on all three."""

from __future__ import annotations

import json
import shutil

from archiver.simulator import Simulator, SimulatorServer
from archiver.state.store import StateStore
from tests.archive_backends import ArchiveBackend
from tests.conftest import PART_SIZE, Workspace, run_cli


def _config(workspace: Workspace, server: SimulatorServer, backend: ArchiveBackend) -> str:
    path = workspace.write_config(server.base_url, [{"uid": "stack-a"}], storage=backend.storage)
    return str(path)


async def test_a_deleted_state_is_rebuilt_from_storage_and_nothing_is_downloaded_again(
    sim: Simulator, server: SimulatorServer, workspace: Workspace, archive_backend: ArchiveBackend
) -> None:
    """With the state gone, the manifests in storage rebuild it: zero downloads."""
    for _ in range(3):
        sim.add_backup("stack-a", size=PART_SIZE + 10)  # two parts each
    config = _config(workspace, server, archive_backend)
    assert (await run_cli("--config", config, "sync")).code == 0
    shutil.rmtree(workspace.state)
    sim.stats.reset()

    result = await run_cli("--config", config, "sync")

    assert result.code == 0, result.stderr
    assert "archived 0, already had 3" in result.stderr
    assert sim.stats.downloads_started == 0
    state = StateStore.open(workspace.state)
    try:
        assert len(state.archived.all()) == 3
    finally:
        state.close()


async def test_status_json_names_each_object_in_its_backends_form(
    sim: Simulator, server: SimulatorServer, workspace: Workspace, archive_backend: ArchiveBackend
) -> None:
    """`location` is a local path, s3://bucket/key or sftp://user@host:port/path."""
    backup_id = sim.add_backup("stack-a", database_name="shop", size=500)
    config = _config(workspace, server, archive_backend)
    assert (await run_cli("--config", config, "sync")).code == 0

    result = await run_cli("--config", config, "status", "--json")

    assert result.code == 0, result.stderr
    [entry] = json.loads(result.stdout)["archived"]
    [tar] = [key for key in await archive_backend.keys() if key.endswith("/shop.tar")]
    assert entry["backup_id"] == backup_id
    assert entry["location"] == archive_backend.location(tar)
