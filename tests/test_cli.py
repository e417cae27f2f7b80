"""The installed program as a user runs it: exit codes, crashes, signals, budget, secrets."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

from archiver.simulator import Simulator, SimulatorServer
from archiver.state.store import StateStore
from tests.conftest import (
    TOKEN,
    CliResult,
    Workspace,
    archived_sha256s,
    cli_env,
    run_cli,
    start_cli,
)


def _no_traceback(result: CliResult) -> None:
    assert "Traceback" not in result.stderr
    assert "Traceback" not in result.stdout


async def _wait_for(predicate: object, timeout: float = 20.0) -> None:
    assert callable(predicate)
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_sync_now_archives_and_exits_zero_with_a_summary_line(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """`--sync-now` runs one pass, prints the summary, exits 0."""
    sim.add_stack("stack-a")
    backup_id = sim.add_backup("stack-a", size=3000)
    config = workspace.write_config(server.base_url, [{"uid": "stack-a"}])
    result = await run_cli("--config", str(config), "--sync-now")
    assert result.code == 0, result.stderr
    assert "archived 1" in result.stderr
    assert archived_sha256s(workspace.archive) == {backup_id: sim.expected_sha256(backup_id)}
    _no_traceback(result)


async def test_config_from_environment_variable_and_token_from_env(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """$C66_ARCHIVER_CONFIG names the config and $C66_API_TOKEN wins over token_file."""
    sim.add_stack("stack-a")
    sim.add_backup("stack-a", size=10)
    config = workspace.write_config(server.base_url, [{"uid": "stack-a"}])
    workspace.token_file.write_text("wrong-token\n")
    env = cli_env(C66_ARCHIVER_CONFIG=str(config), C66_API_TOKEN=TOKEN)
    result = await run_cli("sync", env=env)
    assert result.code == 0, result.stderr


async def test_wrong_token_exits_4_with_one_clear_line(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """A refused token is exit 4 and says so, without echoing the token."""
    sim.add_stack("stack-a")
    config = workspace.write_config(server.base_url, [{"uid": "stack-a"}])
    workspace.token_file.write_text("not-the-right-token-123\n")
    result = await run_cli("--config", str(config), "sync")
    assert result.code == 4
    assert "refused" in result.stderr.lower()
    assert "not-the-right-token-123" not in result.stderr + result.stdout
    _no_traceback(result)


async def test_config_errors_exit_2_naming_file_and_key(workspace: Workspace) -> None:
    """Unknown keys and bad values are exit 2 with the file and the dotted key named."""
    workspace.config.write_text(
        '[api]\nbase_url = "http://127.0.0.1:1/api/3"\n'
        '[[stacks]]\nuid = "abc"\ndb_type = "mysql"\n'
        '[schedule]\ninterval = "often"\n'
    )
    result = await run_cli("--config", str(workspace.config), "sync")
    assert result.code == 2
    assert str(workspace.config) in result.stderr
    assert "stacks[0].db_type: unknown key" in result.stderr
    assert "schedule.interval" in result.stderr
    _no_traceback(result)


async def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    """A config path that does not exist is exit 2, naming it."""
    missing = tmp_path / "nope.toml"
    result = await run_cli("--config", str(missing), "check-config")
    assert result.code == 2
    assert str(missing) in result.stderr
    _no_traceback(result)


async def test_missing_token_exits_2_naming_the_sources(
    server: SimulatorServer, workspace: Workspace
) -> None:
    """No token anywhere is a config error that lists where a token can come from."""
    config = workspace.write_config(server.base_url, [{"uid": "stack-a"}])
    config.write_text(config.read_text().replace(f'token_file = "{workspace.token_file}"\n', ""))
    result = await run_cli("--config", str(config), "sync")
    assert result.code == 2
    assert "C66_API_TOKEN" in result.stderr
    assert "token_file" in result.stderr


async def test_usage_error_exits_2(workspace: Workspace) -> None:
    """An unknown option is a usage error: exit 2."""
    result = await run_cli("--no-such-flag")
    assert result.code == 2


async def test_lock_held_exits_3_at_once(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """A second process on the same state exits 3 immediately."""
    sim.add_stack("stack-a")
    config = workspace.write_config(server.base_url, [{"uid": "stack-a"}])
    holder = StateStore.open(workspace.state)
    holder.lock.acquire()
    try:
        result = await run_cli("--config", str(config), "sync", timeout=20)
    finally:
        holder.lock.release()
        holder.close()
    assert result.code == 3
    assert "lock" in result.stderr.lower()
    assert sim.stats.api_requests == 0
    _no_traceback(result)


async def test_kill_9_mid_transfer_then_a_clean_pass_finishes_the_job(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """kill -9 during a download leaves nothing half-visible; the next pass completes it."""
    sim.add_stack("stack-a")
    done_id = sim.add_backup("stack-a", size=1000)
    config = workspace.write_config(server.base_url, [{"uid": "stack-a"}])
    assert (await run_cli("--config", str(config), "sync")).code == 0
    slow_id = sim.add_backup("stack-a", size=600_000)
    sim.faults.slow_downloads = 1
    sim.faults.slow_bytes_per_second = 100_000
    process = await start_cli("--config", str(config), "sync")
    await _wait_for(lambda: any(p.stat().st_size > 0 for p in workspace.archive.rglob("*.part")))
    process.kill()
    await process.wait()

    assert set(archived_sha256s(workspace.archive)) == {done_id}
    state = StateStore.open(workspace.state)
    assert not state.archived.contains("stack-a", slow_id)
    state.close()
    result = await run_cli("--config", str(config), "sync")
    assert result.code == 0, result.stderr
    assert archived_sha256s(workspace.archive) == {
        done_id: sim.expected_sha256(done_id),
        slow_id: sim.expected_sha256(slow_id),
    }
    assert not list(workspace.archive.rglob("*.part"))


async def test_sigterm_lets_a_transfer_finish_within_the_grace_period(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """SIGTERM: no new work, the download in flight completes, exit 0."""
    sim.add_stack("stack-a")
    backup_id = sim.add_backup("stack-a", size=200_000)  # one part
    sim.faults.slow_downloads = 1
    sim.faults.slow_bytes_per_second = 100_000
    config = workspace.write_config(
        server.base_url, [{"uid": "stack-a"}], transfer={"grace_period": "20s"}
    )
    process = await start_cli("--config", str(config))
    await _wait_for(lambda: sim.stats.downloads_started == 1)
    process.send_signal(signal.SIGTERM)
    code = await asyncio.wait_for(process.wait(), 30)
    assert code == 0
    assert archived_sha256s(workspace.archive) == {backup_id: sim.expected_sha256(backup_id)}


async def test_sigterm_past_the_grace_period_keeps_the_download_to_resume(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """A transfer that outlasts the grace period stops, exit 0; the next pass resumes it."""
    sim.add_stack("stack-a")
    backup_id = sim.add_backup("stack-a", size=250_000)  # one part, 25 s at this pace
    sim.faults.slow_downloads = 1
    sim.faults.slow_bytes_per_second = 10_000
    config = workspace.write_config(
        server.base_url, [{"uid": "stack-a"}], transfer={"grace_period": "1s"}
    )
    process = await start_cli("--config", str(config))
    await _wait_for(lambda: sim.stats.bytes_served >= 20_000)
    process.send_signal(signal.SIGTERM)
    code = await asyncio.wait_for(process.wait(), 15)
    assert code == 0
    [kept] = list(workspace.archive.rglob("*.part"))  # durable, kept for the next pass
    durable = kept.stat().st_size
    assert durable >= 20_000
    assert not list(workspace.archive.rglob("manifest.json"))
    served_before = sim.stats.bytes_served
    result = await run_cli("--config", str(config), "sync")
    assert result.code == 0
    assert "resuming an unfinished upload" in result.stderr
    assert archived_sha256s(workspace.archive) == {backup_id: sim.expected_sha256(backup_id)}
    # Only what was missing (plus what the server still sent into the closed connection).
    assert 250_000 - durable <= sim.stats.bytes_served - served_before <= 250_000 - durable + 16_384
    assert not list(workspace.archive.rglob("*.part"))


async def test_daemon_on_a_one_second_schedule_never_exceeds_the_request_budget(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """A tight schedule waits for the budget instead of being throttled by the API."""
    sim.add_stack("stack-a")
    sim.add_backup("stack-a", size=100)
    sim.requests_per_hour = 6  # the simulated API throttles past this
    config = workspace.write_config(
        server.base_url,
        [{"uid": "stack-a"}],
        api={"requests_per_hour": 6},
        schedule={"interval": "1s"},
        transfer={"grace_period": "1s"},
    )
    process = await start_cli("--config", str(config))
    await _wait_for(lambda: sim.stats.api_requests >= 6)
    await asyncio.sleep(4)  # several more schedule ticks: all must wait for the budget
    process.send_signal(signal.SIGTERM)
    code = await asyncio.wait_for(process.wait(), 20)
    assert code == 0
    assert sim.stats.api_requests == 6
    assert b"throttled" not in await process.stderr.read() if process.stderr else True


async def test_a_daemon_waiting_on_its_request_budget_stops_within_2_s(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """SIGTERM while the pass waits (an hour) for the request budget: exit 0 within 2 s."""
    for uid in ("stack-a", "stack-b", "stack-c"):
        sim.add_stack(uid)
    config = workspace.write_config(
        server.base_url,
        [{"uid": uid} for uid in ("stack-a", "stack-b", "stack-c")],
        api={"requests_per_hour": 2, "max_concurrent_requests": 1},
        transfer={"grace_period": "30s"},
    )
    process = await start_cli("--config", str(config))
    await _wait_for(lambda: sim.stats.api_requests == 2)
    await asyncio.sleep(0.5)  # the third listing is now waiting for the budget
    process.send_signal(signal.SIGTERM)
    started = time.monotonic()
    code = await asyncio.wait_for(process.wait(), 30)
    assert code == 0
    assert time.monotonic() - started < 2.0
    assert sim.stats.api_requests == 2


async def test_a_daemon_in_a_long_retry_wait_stops_within_2_s(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """SIGTERM while the client sleeps out a 300 s Retry-After: exit 0 within 2 s."""
    sim.add_stack("stack-a")
    sim.faults.throttle = 1
    sim.faults.throttle_retry_after = 300
    config = workspace.write_config(
        server.base_url, [{"uid": "stack-a"}], transfer={"grace_period": "30s"}
    )
    process = await start_cli("--config", str(config))
    await _wait_for(lambda: sim.stats.api_requests == 1)
    await asyncio.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    started = time.monotonic()
    code = await asyncio.wait_for(process.wait(), 30)
    assert code == 0
    assert time.monotonic() - started < 2.0


async def test_sigterm_starts_no_queued_backup_while_one_finishes(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """Downloads in flight finish in the grace period; queued backups never start."""
    sim.add_stack("stack-a")
    sim.add_backup("stack-a", size=150_000)  # one part each
    sim.add_backup("stack-a", size=150_000)
    sim.faults.slow_downloads = 2
    sim.faults.slow_bytes_per_second = 100_000
    config = workspace.write_config(
        server.base_url,
        [{"uid": "stack-a"}],
        transfer={"grace_period": "20s", "max_concurrent_downloads": 1},
    )
    process = await start_cli("--config", str(config))
    await _wait_for(lambda: sim.stats.downloads_started == 1)
    process.send_signal(signal.SIGTERM)
    code = await asyncio.wait_for(process.wait(), 30)
    assert code == 0
    assert sim.stats.downloads_started == 1
    assert len(list(workspace.archive.rglob("manifest.json"))) == 1


async def test_status_json_and_table_after_a_pass(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """`status --json` prints the contract's object; `status` prints a readable table."""
    sim.add_stack("stack-a")
    backup_id = sim.add_backup("stack-a", database_name="shop", size=500)
    config = workspace.write_config(server.base_url, [{"uid": "stack-a"}])
    await run_cli("--config", str(config), "sync")

    as_json = await run_cli("--config", str(config), "status", "--json")
    document = json.loads(as_json.stdout)
    assert as_json.code == 0
    (entry,) = document["archived"]
    assert entry["backup_id"] == backup_id
    assert entry["stack_uid"] == "stack-a"
    assert entry["size"] == 500
    assert entry["sha256"] == sim.expected_sha256(backup_id)
    assert Path(entry["location"]).name == "shop.tar"
    assert document["last_run"]["ok"] is True
    table = await run_cli("--config", str(config), "status")
    assert table.code == 0
    assert "shop" in table.stdout
    assert "Last pass" in table.stdout


async def test_secrets_never_reach_any_output(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """Token and URL signatures are absent from logs, errors and status, even on faults."""
    sim.add_stack("stack-a")
    sim.add_stack("stack-bad")
    sim.add_backup("stack-a", size=200_000)
    sim.add_backup("stack-bad", size=10)
    sim.faults.cut_downloads = 1
    sim.faults.expired_urls = 1
    sim.faults.malformed_json_stacks = {"stack-bad"}
    sim.warning = "token " + TOKEN + " is deprecated"
    config = workspace.write_config(
        server.base_url, [{"uid": "stack-a"}, {"uid": "stack-bad"}], log={"level": "debug"}
    )
    outputs = [
        await run_cli("--config", str(config), "-v", "sync"),
        await run_cli("--config", str(config), "status"),
        await run_cli("--config", str(config), "status", "--json"),
        await run_cli("--config", str(config), "check-config"),
    ]
    everything = "".join(result.stdout + result.stderr for result in outputs)
    assert outputs[0].code == 1  # the malformed stack fails
    assert TOKEN not in everything
    assert "Signature=" not in everything
    assert "%252F" not in everything
    assert "AWSAccessKeyId=" not in everything


async def test_check_config_reaches_api_and_storage(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """check-config says ok for a good set-up and names an unknown stack as exit 2."""
    sim.add_stack("stack-a")
    config = workspace.write_config(server.base_url, [{"uid": "stack-a"}])
    good = await run_cli("--config", str(config), "check-config")
    assert good.code == 0, good.stderr
    assert "storage" in good.stdout
    config = workspace.write_config(server.base_url, [{"uid": "stack-a"}, {"uid": "ghost"}])
    bad = await run_cli("--config", str(config), "check-config")
    assert bad.code == 2
    assert "ghost" in bad.stderr


async def test_demo_archives_into_its_folder_and_prints_status(tmp_path: Path) -> None:
    """`c66-archiver demo --dir D` archives the simulated stacks and shows the table and
    what the watch found (a dump that shrank, a backup that failed in Cloud 66)."""
    result = await run_cli("demo", "--dir", str(tmp_path / "demo"), timeout=120)
    assert result.code == 0, result.stderr
    manifests = list((tmp_path / "demo" / "archive").rglob("manifest.json"))
    assert len(manifests) == 9
    assert "Archived backups" in result.stdout
    watch = result.stdout.split("Watch over Cloud 66:")[1].split("Archived backups")[0]
    assert "failed upstream API (demo-api-staging) postgresql/api" in watch
    assert "pg_dump: error: connection to server was lost" in watch
    assert "shrank Shop (demo-shop-prod) mysql/shop" in watch
    again = await run_cli("demo", "--dir", str(tmp_path / "demo"), timeout=120)
    assert again.code == 0
    assert "archived 0" in again.stderr


async def test_help_on_every_command_teaches_with_an_example() -> None:
    """Every subcommand's --help shows an example."""
    for command in (
        [], ["sync"], ["status"], ["health"], ["check-config"], ["demo"], ["watch", "ack"]
    ):
        result = await run_cli(*command, "--help")
        assert result.code == 0
        assert "Example" in result.stdout, command


async def test_ticks_missed_during_a_long_pass_run_once_not_many_times(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """A 1 s schedule and a 4 s pass: the missed ticks collapse into one pass, not four."""
    sim.add_stack("stack-a")
    sim.add_backup("stack-a", size=200_000)  # one part, 4 s at this pace
    sim.faults.slow_downloads = 1
    sim.faults.slow_bytes_per_second = 50_000
    config = workspace.write_config(
        server.base_url,
        [{"uid": "stack-a"}],
        schedule={"interval": "1s"},
        transfer={"grace_period": "1s"},
    )
    process = await start_cli("--config", str(config))
    await _wait_for(lambda: sim.stats.downloads_completed == 1)
    await asyncio.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), 20) == 0
    passes = sim.stats.api_requests_by_path["list_backups"]
    assert 2 <= passes <= 3  # the long pass, the one catch-up pass, maybe one regular tick
