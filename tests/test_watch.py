"""The watch, pass by pass against the simulator: missed, late, failed upstream, shrunken."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from archiver.config.settings import Settings, load_settings
from archiver.service.status_document import watch_document
from archiver.simulator import Simulator, SimulatorServer
from archiver.state.store import StateStore
from tests.conftest import Workspace, run_pass, settings_for

NOW = datetime.now(UTC).replace(microsecond=0)
MISSED_FIELDS = {"stack_uid", "backup_id", "db_type", "database_name", "backup_date", "noticed_at"}


def _ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


@contextmanager
def _state(workspace: Workspace) -> Iterator[StateStore]:
    state = StateStore.open_existing(workspace.state)
    assert state is not None
    try:
        yield state
    finally:
        state.close()


def _watch(workspace: Workspace) -> dict[str, list[dict[str, Any]]]:
    with _state(workspace) as state:
        return watch_document(state)


async def _pass_that_archives_nothing(sim: Simulator, settings: Settings) -> None:
    """A pass that reads every list but whose downloads all fail (storage host answers 500)."""
    sim.faults.blob_errors = 10_000
    summary = await run_pass(settings)
    sim.faults.blob_errors = 0
    assert summary.archived == 0
    assert summary.exit_code == 1


def _settings(
    workspace: Workspace, server: SimulatorServer, *uids: str, **sections: Any
) -> Settings:
    transfer = {"max_retries": 0, **sections.pop("transfer", {})}
    return settings_for(workspace, server, *uids, transfer=transfer, **sections)


# -- missed ----------------------------------------------------------------------------


async def test_a_backup_rotated_away_before_it_was_archived_is_missed(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """Seen listed, never archived, then rotated away by keep_count: missed, and said once."""
    sim.add_stack("stack-a", "Shop")
    first, *_ = sim.add_series("stack-a", [_ago(3), _ago(2), _ago(1)], sizes=2000)
    settings = _settings(workspace, server, "stack-a")
    await _pass_that_archives_nothing(sim, settings)
    assert sim.set_keep_count("stack-a", 2) == [first]

    summary = await run_pass(settings)

    assert summary.exit_code == 0  # a finding never makes a pass fail
    assert summary.archived == 2
    (missed,) = _watch(workspace)["missed"]
    assert set(missed) == MISSED_FIELDS | {"stack_name"}
    assert (missed["stack_uid"], missed["stack_name"], missed["backup_id"]) == (
        "stack-a", "Shop", first,
    )
    assert (missed["db_type"], missed["database_name"]) == ("mysql", "app_db")
    assert missed["backup_date"] == _ago(3).isoformat().replace("+00:00", "Z")
    again = await run_pass(settings)
    assert again.exit_code == 0
    assert [entry["backup_id"] for entry in _watch(workspace)["missed"]] == [first]


async def test_rotated_backups_that_were_archived_or_pruned_are_not_missed(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """Archived, then pruned by retention or rotated away upstream: never a missed backup."""
    dates = [_ago(days) for days in (4, 3, 2, 1)]
    sim.add_series("stack-a", dates, sizes=1000)
    settings = _settings(
        workspace, server, "stack-a", retention={"keep_last": 2, "after_pass": True}
    )
    first = await run_pass(settings)
    assert (first.archived, first.pruned) == (4, 2)
    sim.set_keep_count("stack-a", 1)

    await run_pass(settings)

    assert _watch(workspace)["missed"] == []


async def test_an_incomplete_or_failed_list_proves_no_disappearance(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """Pagination going backwards or a failed list judges nothing missed; a whole list does."""
    sim.per_page = 2
    first, *_ = sim.add_series("stack-a", [_ago(d) for d in (5, 4, 3, 2, 1)], sizes=500)
    settings = _settings(workspace, server, "stack-a", api={"max_retries": 0})
    await _pass_that_archives_nothing(sim, settings)
    sim.set_keep_count("stack-a", 4)

    sim.faults.looping_pages_stacks = {"stack-a"}
    await run_pass(settings)
    assert _watch(workspace)["missed"] == []
    sim.faults.looping_pages_stacks = set()
    sim.faults.api_errors = 1
    failed = await run_pass(settings)
    assert [f.reason.startswith("could not list backups") for f in failed.failed] == [True]
    assert _watch(workspace)["missed"] == []

    await run_pass(settings)

    assert [entry["backup_id"] for entry in _watch(workspace)["missed"]] == [first]


async def test_backups_outside_the_configured_db_types_are_never_missed(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """A db_type taken out of the config, or never in it, is not judged when it rotates."""
    sim.add_series("stack-a", [_ago(3), _ago(2)], db_type="mysql", database_name="shop")
    sim.add_series("stack-a", [_ago(3), _ago(2)], db_type="redis", database_name="cache")
    sim.add_series("stack-a", [_ago(3), _ago(2)], db_type="mongodb", database_name="events")
    every_type = _settings(workspace, server, "stack-a")
    await _pass_that_archives_nothing(sim, every_type)
    config = workspace.write_config(
        server.base_url, [{"uid": "stack-a", "db_types": ["mysql", "postgresql"]}],
        transfer={"max_retries": 0},
    )
    sim.set_keep_count("stack-a", 1)

    await run_pass(load_settings(config))

    missed = _watch(workspace)["missed"]
    assert [(entry["db_type"], entry["database_name"]) for entry in missed] == [("mysql", "shop")]


# -- late ------------------------------------------------------------------------------


async def test_a_nightly_series_without_a_backup_for_three_days_is_late_until_one_comes(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """Daily backups up to three days ago: late past 2 days; a new backup clears it."""
    ids = sim.add_series("stack-a", [_ago(d) for d in range(10, 2, -1)], sizes=300)
    settings = _settings(workspace, server, "stack-a")
    assert (await run_pass(settings)).exit_code == 0
    (late,) = _watch(workspace)["late"]
    assert late["newest_backup_id"] == ids[-1]
    assert late["newest_backup_date"] == _ago(3).isoformat().replace("+00:00", "Z")
    assert late["late_after_seconds"] == 2 * 86400
    assert (late["stack_uid"], late["db_type"], late["database_name"]) == (
        "stack-a", "mysql", "app_db",
    )
    sim.add_backup("stack-a", size=300, backup_date=NOW)

    await run_pass(settings)

    assert _watch(workspace)["late"] == []


async def test_a_state_rebuilt_from_storage_keeps_a_series_cadence_from_the_archive(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """Cloud 66 keeps two backups; the state is lost: the archived ones still give the
    series its cadence, so it is judged late (and nothing is called missed)."""
    sim.add_series("stack-a", [_ago(d) for d in range(10, 2, -1)], sizes=300)
    settings = _settings(workspace, server, "stack-a")
    assert (await run_pass(settings)).archived == 8
    sim.set_keep_count("stack-a", 2)
    shutil.rmtree(workspace.state)

    await run_pass(settings)

    watch = _watch(workspace)
    assert [entry["late_after_seconds"] for entry in watch["late"]] == [2 * 86400]
    assert watch["missed"] == []


async def test_max_backup_age_per_stack_and_globally_judges_short_histories(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """Two backups cannot be late by inference, but are by max_backup_age; the stack's wins."""
    for uid in ("stack-a", "stack-b", "stack-c"):
        sim.add_series(uid, [_ago(3), _ago(2)], sizes=300)
    config = workspace.write_config(
        server.base_url,
        [
            {"uid": "stack-a"},
            {"uid": "stack-b", "watch": {"max_backup_age": "1d"}},
            {"uid": "stack-c", "watch": {"max_backup_age": "8d"}},
        ],
        watch={"max_backup_age": "36h"},
    )
    await run_pass(load_settings(config))

    late = {entry["stack_uid"]: entry["late_after_seconds"] for entry in _watch(workspace)["late"]}
    assert late == {"stack-a": 36 * 3600, "stack-b": 86400}


# -- upstream failed -------------------------------------------------------------------


async def test_a_failed_newest_backup_is_found_with_its_result_until_a_good_one_follows(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """The newest backup failed in Cloud 66: found with backup_result; an older failure is not."""
    sim.add_backup("stack-a", size=10, status=1, backup_date=_ago(3), result="old trouble")
    sim.add_backup("stack-a", size=300, backup_date=_ago(2))
    failed_id = sim.add_backup(
        "stack-a", size=10, status=1, backup_date=_ago(1),
        result="mysqldump: Got error 2013: Lost connection to MySQL server during query",
    )
    settings = _settings(workspace, server, "stack-a")
    summary = await run_pass(settings)
    assert summary.exit_code == 0
    (failed,) = _watch(workspace)["upstream_failed"]
    assert failed["backup_id"] == failed_id
    assert failed["result"].startswith("mysqldump: Got error 2013")
    assert failed["backup_date"] == _ago(1).isoformat().replace("+00:00", "Z")
    sim.add_backup("stack-a", size=300, backup_date=NOW)

    await run_pass(settings)

    assert _watch(workspace)["upstream_failed"] == []


# -- size anomalies --------------------------------------------------------------------


async def test_a_dump_that_shrank_to_a_third_is_a_size_anomaly_from_what_was_archived(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """Four dumps of 100 kB then one of 30 kB: flagged with the archived sizes."""
    dates = [_ago(d) for d in (5, 4, 3, 2, 1)]
    *_, newest = sim.add_series("stack-a", dates, sizes=[100_000, 100_000, 98_000, 102_000, 30_000])
    settings = _settings(workspace, server, "stack-a")

    await run_pass(settings)

    (anomaly,) = _watch(workspace)["size_anomalies"]
    assert (anomaly["backup_id"], anomaly["size"], anomaly["typical_size"]) == (
        newest, 30_000, 100_000,
    )
    assert (anomaly["db_type"], anomaly["database_name"]) == ("mysql", "app_db")


async def test_no_size_anomaly_without_three_earlier_backups_or_above_the_ratio(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """Two earlier dumps are too little history; 60 percent of typical is above 0.5."""
    sim.add_series("stack-a", [_ago(3), _ago(2), _ago(1)], sizes=[100_000, 100_000, 10_000])
    sim.add_series(
        "stack-b", [_ago(d) for d in (4, 3, 2, 1)], sizes=[100_000, 100_000, 100_000, 60_000]
    )
    await run_pass(_settings(workspace, server, "stack-a", "stack-b"))
    assert _watch(workspace)["size_anomalies"] == []


async def test_a_stronger_shrink_ratio_flags_less(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """shrink_ratio = 0.25: a dump at 30 percent of typical is no longer an anomaly."""
    sizes = [100_000, 100_000, 100_000, 30_000]
    sim.add_series("stack-a", [_ago(d) for d in (4, 3, 2, 1)], sizes=sizes)
    await run_pass(_settings(workspace, server, "stack-a", watch={"shrink_ratio": 0.25}))
    assert _watch(workspace)["size_anomalies"] == []


# -- on and off ------------------------------------------------------------------------


async def test_all_is_well_gives_empty_lists_and_watch_off_forgets_what_it_found(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """Fresh regular backups find nothing; [watch] enabled = false clears earlier findings."""
    sim.add_series("stack-a", [_ago(d) for d in (3, 2, 1)], sizes=300)
    sim.add_series("stack-b", [_ago(9), _ago(8), _ago(7)], sizes=300)
    await run_pass(_settings(workspace, server, "stack-a"))
    assert _watch(workspace) == {
        "missed": [], "late": [], "upstream_failed": [], "size_anomalies": [],
    }
    await run_pass(_settings(workspace, server, "stack-a", "stack-b"))
    assert [entry["stack_uid"] for entry in _watch(workspace)["late"]] == ["stack-b"]

    await run_pass(_settings(workspace, server, "stack-a", "stack-b", watch={"enabled": False}))

    assert all(entries == [] for entries in _watch(workspace).values())


async def test_a_stack_taken_out_of_the_config_takes_its_findings_along(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """Late backups of a stack no longer configured stop being listed at the next pass."""
    sim.add_series("stack-a", [_ago(d) for d in (3, 2, 1)], sizes=300)
    sim.add_series("stack-b", [_ago(9), _ago(8), _ago(7)], sizes=300)
    await run_pass(_settings(workspace, server, "stack-a", "stack-b"))
    assert [entry["stack_uid"] for entry in _watch(workspace)["late"]] == ["stack-b"]

    await run_pass(_settings(workspace, server, "stack-a"))

    assert _watch(workspace)["late"] == []
