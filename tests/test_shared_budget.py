"""Every process on one state shares one hourly request budget (the API client factory)."""

from __future__ import annotations

import time

from archiver.simulator import Simulator, SimulatorServer
from archiver.state.store import StateStore
from tests.conftest import Workspace, run_cli

UID = "stack-a"
PER_HOUR = 5


def _seed_full_hour(workspace: Workspace, frees_in: float) -> float:
    """A state whose request log holds a full hour's budget; the oldest slot frees in `frees_in`."""
    state = StateStore.open(workspace.state)
    try:
        oldest = time.time() - 3600 + frees_in
        for offset in range(PER_HOUR):
            state.api_requests.add(oldest + offset * 0.001)
    finally:
        state.close()
    return oldest


def _requests_since(workspace: Workspace, since: float) -> list[float]:
    state = StateStore.open(workspace.state)
    try:
        return state.api_requests.since(since)
    finally:
        state.close()


async def test_check_config_waits_for_the_budget_a_daemon_spent_and_records_its_own(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """check-config beside a spent budget waits for a slot, then adds its request to the log."""
    sim.add_stack(UID)
    config = workspace.write_config(
        server.base_url, [{"uid": UID}], api={"requests_per_hour": PER_HOUR}
    )
    oldest = _seed_full_hour(workspace, frees_in=2.0)
    started = time.monotonic()
    result = await run_cli("--config", str(config), "check-config")
    assert result.code == 0, result.stderr
    # A lower bound only: the slot cannot free sooner, however fast or loaded the machine.
    assert time.monotonic() - started >= 1.5
    assert len(_requests_since(workspace, oldest + 3600 - 1)) >= 1


async def test_backup_task_create_spends_the_shared_budget(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """The POSTs record their requests in the state's log, like a pass does."""
    sim.add_stack(UID)
    config = workspace.write_config(server.base_url, [{"uid": UID}])
    _seed_full_hour(workspace, frees_in=1800)  # half an hour ago; the limit is 3,000
    before = time.time()
    result = await run_cli(
        "--config", str(config), "backup-task", "create", "--stack", UID, "--db-type", "all"
    )
    assert result.code == 0, result.stderr
    assert len(_requests_since(workspace, before)) == 1


async def test_check_config_on_a_fresh_install_creates_no_state(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """With no state yet there is no history to respect, and check-config creates none."""
    sim.add_stack(UID)
    config = workspace.write_config(server.base_url, [{"uid": UID}])
    result = await run_cli("--config", str(config), "check-config")
    assert result.code == 0, result.stderr
    assert not workspace.state.exists()
