"""backup-task create and import: the two POSTs back into Cloud 66, against the simulator."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

from aiohttp import web

from archiver.simulator import Simulator, SimulatorServer
from loopback.seaweedfs import S3Server
from tests.archive_backends import s3_backend
from tests.conftest import TOKEN, Workspace, run_cli

UID = "stack-a"


def _config(workspace: Workspace, server: SimulatorServer, **sections: object) -> str:
    return str(workspace.write_config(server.base_url, [{"uid": UID}], **sections))


async def test_backup_task_create_sends_the_parameters_as_given(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """Every option reaches Cloud 66 with its type; left-out ones are not sent; exit 0."""
    sim.add_stack(UID)
    result = await run_cli(
        "--config", _config(workspace, server), "backup-task", "create", "--stack", UID,
        "--db-type", "mysql, redis", "--frequency", "0 */6 * * *", "--keep-count", "20",
        "--gzip", "--excluded-tables", "logs, sessions", "--no-run-on-replica",
    )
    assert result.code == 0, result.stderr
    assert "Cloud 66 accepted the backup task for mysql,redis on stack stack-a" in result.stdout
    assert sim.backup_tasks == [{
        "stack_uid": UID, "db_type": "mysql,redis", "frequency": "0 */6 * * *",
        "keep_count": 20, "gzip": True, "excluded_tables": "logs,sessions",
        "run_on_replica_server": False,
    }]
    minimal = await run_cli(
        "--config", _config(workspace, server), "backup-task", "create", "--stack", UID,
        "--db-type", "all",
    )
    assert minimal.code == 0
    assert sim.backup_tasks[1]["gzip"] is None  # not sent: Cloud 66's default applies


async def test_bad_arguments_exit_2_and_send_nothing(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """An unreadable cron line, an unknown db type or a bad count: exit 2, no request at all."""
    config = _config(workspace, server)
    cases = [
        (["--db-type", "mysql", "--frequency", "every hour"], "--frequency"),
        (["--db-type", "mysql,oracle"], "--db-type"),
        (["--db-type", "mysql", "--keep-count", "0"], "--keep-count"),
        (["--db-type", "mysql", "--excluded-tables", "a,,b"], "--excluded-tables"),
    ]
    for arguments, named in cases:
        result = await run_cli(
            "--config", config, "backup-task", "create", "--stack", UID, *arguments
        )
        assert result.code == 2, arguments
        assert named in result.stderr
    both = await run_cli(
        "--config", config, "import", "--stack", UID, "--db-type", "mysql", "--group", "1",
        "--url", "https://example.com/x.tar", "--backup", "3",
    )
    assert both.code == 2
    assert sim.stats.api_requests == 0


async def test_a_token_without_the_admin_scope_exits_4_naming_it(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """403 on the POST: exit 4, one line that says the admin scope is needed, no token."""
    sim.add_stack(UID)
    sim.token_scopes = {"public"}
    result = await run_cli(
        "--config", _config(workspace, server), "backup-task", "create", "--stack", UID,
        "--db-type", "all",
    )
    assert result.code == 4
    assert "admin scope" in result.stderr
    assert TOKEN not in result.stderr + result.stdout
    assert sim.backup_tasks == []


async def test_not_ok_exits_1_with_cloud66s_message(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """Cloud 66 answers ok: false: exit 1 and its message on stderr."""
    sim.add_stack(UID)
    sim.faults.post_not_ok = "A backup task for mysql already exists"
    result = await run_cli(
        "--config", _config(workspace, server), "backup-task", "create", "--stack", UID,
        "--db-type", "mysql",
    )
    assert result.code == 1
    assert "did not accept" in result.stderr
    assert "already exists" in result.stderr


async def test_a_post_is_retried_when_throttled_but_never_after_a_5xx(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """Throttled: nothing happened, so it is sent again. A 500: it may have, so it is not."""
    sim.add_stack(UID)
    config = _config(workspace, server)
    sim.faults.throttle = 1
    sim.faults.throttle_retry_after = 0.1
    throttled = await run_cli(
        "--config", config, "backup-task", "create", "--stack", UID, "--db-type", "redis"
    )
    assert throttled.code == 0, throttled.stderr
    assert len(sim.backup_tasks) == 1
    sim.stats.reset()
    sim.faults.api_errors = 1
    failed = await run_cli(
        "--config", config, "backup-task", "create", "--stack", UID, "--db-type", "redis"
    )
    assert failed.code == 1
    assert "may or may not have been carried out" in failed.stderr
    assert sim.stats.api_requests == 1


async def _imported(sim: Simulator) -> None:
    await asyncio.wait_for(sim.imports[-1].done.wait(), 30)


async def test_import_by_url_has_cloud66_fetch_it(
    sim: Simulator, server: SimulatorServer, workspace: Workspace, tmp_path: Path
) -> None:
    """--url: the simulator, like Cloud 66, downloads exactly what the URL serves."""
    sim.add_stack(UID)
    payload = os.urandom(40_000)
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "redis.tar").write_bytes(payload)
    app = web.Application()
    app.router.add_static("/files", tmp_path / "www")
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/files/redis.tar"
    try:
        result = await run_cli(
            "--config", _config(workspace, server), "import", "--stack", UID, "--db-type",
            "redis", "--group", "5", "--url", url,
        )
        assert result.code == 0, result.stderr
        await _imported(sim)
    finally:
        await runner.cleanup()
    [record] = sim.imports
    assert (record.group, record.db_type, record.remote_url) == (5, "redis", url)
    assert (record.status, record.sha256) == (200, hashlib.sha256(payload).hexdigest())


async def test_import_of_an_archived_backup_round_trips_through_s3(
    sim: Simulator, server: SimulatorServer, workspace: Workspace, s3_server: S3Server,
    s3_bucket: str,
) -> None:
    """Archive to SeaweedFS, import --backup: Cloud 66 downloads exactly the archived bytes."""
    secret = workspace.root / "s3-secret"
    secret.write_text(s3_server.secret_key + "\n")
    backend = s3_backend(s3_server, s3_bucket, secret)
    backup_id = sim.add_backup(UID, size=700_000)  # three parts, joined
    config = _config(workspace, server, storage=backend.storage)
    assert (await run_cli("--config", config, "sync")).code == 0
    result = await run_cli(
        "--config", config, "import", "--stack", UID, "--db-type", "mysql", "--group", "7",
        "--backup", str(backup_id), "--expires", "2h",
    )
    assert result.code == 0, result.stderr
    assert f"archived backup {backup_id}" in result.stdout
    await _imported(sim)
    [record] = sim.imports
    assert record.status == 200
    assert (record.size, record.sha256) == (700_000, sim.expected_sha256(backup_id))
    signature = record.remote_url.partition("?")[2]
    assert "X-Amz-Signature" in signature
    assert signature not in result.stdout + result.stderr


async def test_import_of_an_archived_backup_needs_s3(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """Local storage has no URL for Cloud 66: exit 2, saying what to do instead; nothing sent."""
    backup_id = sim.add_backup(UID, size=1000)
    config = _config(workspace, server)
    assert (await run_cli("--config", config, "sync")).code == 0
    sim.stats.reset()
    result = await run_cli(
        "--config", config, "import", "--stack", UID, "--db-type", "mysql", "--group", "1",
        "--backup", str(backup_id),
    )
    assert result.code == 2
    assert "has a URL Cloud 66 can fetch from" in result.stderr
    assert f"c66-archiver restore {backup_id} -o FILE" in result.stderr
    assert sim.stats.api_requests == 0
