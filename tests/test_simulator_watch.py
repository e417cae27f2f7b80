"""What the watch needs of the simulator, and of the client reading it: rotation, failures,
cadences, shrinking dumps, and lists that say whether they were read whole."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from archiver.cloud66.budget import RequestBudget
from archiver.cloud66.client import Cloud66Client
from archiver.config.settings import ApiSettings
from archiver.simulator import Simulator, SimulatorServer, cadence
from archiver.simulator.cli import _parse_args, _populate_from_args
from archiver.simulator.documents import backup_json
from tests.conftest import TOKEN

NIGHT = datetime(2026, 11, 27, 2, tzinfo=UTC)  # a Friday


@pytest.fixture
async def client(server: SimulatorServer) -> AsyncIterator[Cloud66Client]:
    """A Cloud 66 client reading the simulator."""
    api = ApiSettings(base_url=server.base_url, max_retries=0)
    async with Cloud66Client(api, TOKEN, budget=RequestBudget(3000)) as built:
        yield built


def test_keep_count_rotates_each_series_oldest_first(sim: Simulator) -> None:
    """keep_count 2: each series keeps its two newest; a new backup pushes the oldest out."""
    shop = sim.add_series("stack-a", cadence(NIGHT, 4, timedelta(days=1))[::-1])
    cache = sim.add_series("stack-a", [NIGHT], db_type="redis", database_name="cache")
    assert sim.set_keep_count("stack-a", 2) == shop[:2]
    newer = sim.add_backup("stack-a", backup_date=NIGHT + timedelta(days=1))
    assert set(sim.backup_ids("stack-a")) == {newer, shop[3], cache[0]}
    assert sim.find_backup(shop[2]) is None
    assert sim.set_keep_count("stack-a", None) == []


async def test_a_backup_task_with_keep_count_rotates_like_cloud_66(
    sim: Simulator, server: SimulatorServer
) -> None:
    """POST a backup task with keep_count 1: the stack's older backups leave the list."""
    old, new = sim.add_series("stack-a", [NIGHT - timedelta(days=1), NIGHT])
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        url = f"{server.base_url}/stacks/stack-a/backups"
        async with http.post(url, json={"db_type": "mysql", "keep_count": 1}) as answer:
            assert answer.status == 200
    assert sim.backup_ids("stack-a") == [new]
    assert sim.find_backup(old) is None


def test_a_failed_backup_says_its_own_result_or_cloud_66s_usual_one(sim: Simulator) -> None:
    """backup_result: the test's text for a failure, a default mysqldump error, '' when good."""
    chosen = sim.add_backup("stack-a", status=1, result="pg_dump: error: out of memory")
    default = sim.add_backup("stack-a", status=1)
    good = sim.add_backup("stack-a")
    results = {bid: backup_json(sim.find_backup(bid)) for bid in (chosen, default, good)}  # type: ignore[arg-type]
    assert results[chosen]["backup_result"] == "pg_dump: error: out of memory"
    assert results[default]["backup_result"].startswith("mysqldump: Got error 2013")
    assert (results[good]["backup_result"], results[good]["backup_status"]) == ("", 0)


def test_add_series_lays_out_a_shrinking_dump_on_a_weekday_cadence(sim: Simulator) -> None:
    """Sizes follow the dates oldest first; weekends have no backup; failed ones are marked."""
    dates = cadence(NIGHT, 6, timedelta(days=1), weekdays_only=True)[::-1]
    ids = sim.add_series("stack-a", dates, sizes=[100, 100, 100, 100, 100, 30], failed={2})
    backups = [sim.find_backup(backup_id) for backup_id in ids]
    assert [b.size for b in backups if b] == [100, 100, 100, 100, 100, 30]
    assert [b.status for b in backups if b] == [0, 0, 1, 0, 0, 0]
    assert all(b.backup_date.weekday() < 5 for b in backups if b)
    assert [b.backup_date.weekday() for b in backups if b][:2] == [4, 0]  # Friday, Monday
    with pytest.raises(ValueError, match="one size"):
        sim.add_series("stack-a", dates, sizes=[1, 2])


async def test_a_list_read_whole_is_complete_and_a_looping_one_is_not(
    sim: Simulator, client: Cloud66Client
) -> None:
    """Every page read: complete. A last page pointing back to page 1: the same backups,
    but not complete (absence proves nothing)."""
    sim.per_page = 2
    sim.add_series("stack-a", cadence(NIGHT, 5, timedelta(days=1)))
    whole = await client.read_backups("stack-a")
    assert (len(whole.items), whole.complete) == (5, True)
    sim.faults.looping_pages_stacks = {"stack-a"}

    looping = await client.read_backups("stack-a")

    assert (len(looping.items), looping.complete) == (5, False)
    assert sim.stats.api_requests_by_path["list_backups"] == 6


def test_the_simulator_command_line_sets_up_each_scene(tmp_path: Path) -> None:
    """--weekdays-only, --shrink-newest, --fail-newest and --keep-count shape the account."""
    sim = Simulator(token=TOKEN, blob_dir=tmp_path)
    args: argparse.Namespace = _parse_args(
        ["--backups-per-stack", "8", "--backup-size", "1000", "--weekdays-only",
         "--shrink-newest", "0.3", "--fail-newest", "--keep-count", "3"]
    )  # fmt: skip
    _populate_from_args(sim, args)
    backups = sim.sorted_backups("stack-1")
    assert all(b.backup_date.weekday() < 5 for b in backups[2:])
    mysql = [b for b in backups if b.db_type == "mysql"]
    assert len(mysql) == 3  # rotated to keep_count
    assert (mysql[0].status, mysql[1].status, mysql[1].size) == (1, 0, 300)


async def test_a_list_cut_by_the_page_cap_is_not_complete(
    sim: Simulator, client: Cloud66Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server still paging at the cap: what was read is kept, marked incomplete."""
    monkeypatch.setattr("archiver.cloud66.client.MAX_PAGES", 2)
    sim.per_page = 1
    sim.add_series("stack-a", cadence(NIGHT, 3, timedelta(days=1)))

    listing = await client.read_backups("stack-a")

    assert (len(listing.items), listing.complete) == (2, False)


async def test_a_record_that_cannot_be_read_makes_the_list_incomplete() -> None:
    """A backup without an id is skipped (logged), and the list no longer counts as whole."""

    async def broken(request: web.Request) -> web.Response:
        del request
        return web.json_response({"response": [{"db_type": "mysql"}], "pagination": {}})

    app = web.Application()
    app.router.add_get("/api/3/stacks/{uid}/backups", broken)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    api = ApiSettings(base_url=f"http://127.0.0.1:{port}/api/3", max_retries=0)
    try:
        async with Cloud66Client(api, TOKEN, budget=RequestBudget(3000)) as other:
            listing = await other.read_backups("stack-a")
    finally:
        await runner.cleanup()
    assert (listing.items, listing.complete) == ([], False)
