"""Full passes into a real S3-compatible server: the simulator upstream, SeaweedFS the archive."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

from archiver.config.settings import Settings, load_settings
from archiver.simulator import Simulator, SimulatorServer
from loopback.seaweedfs import S3Server, multipart_uploads, object_metadata
from tests.conftest import PART_SIZE, Workspace, render_toml, run_cli, run_pass, start_cli

MiB = 1024 * 1024
PREFIX = "backups/"


def write_s3_config(
    workspace: Workspace, server: SimulatorServer, s3_server: S3Server, bucket: str, *uids: str
) -> Path:
    """A config whose `[storage]` is the test bucket (keys from a file)."""
    secret_file = workspace.root / "s3-secret"
    secret_file.write_text(s3_server.secret_key + "\n")
    document: dict[str, Any] = {
        "api": {"base_url": server.base_url, "token_file": str(workspace.token_file)},
        "stacks": [{"uid": uid} for uid in uids],
        "storage": {
            "type": "s3", "bucket": bucket, "prefix": PREFIX,
            "endpoint_url": s3_server.endpoint_url, "access_key_id": s3_server.access_key,
            "secret_access_key_file": str(secret_file), "addressing_style": "path",
            "part_size": 5 * MiB,
        },
        "state": {"path": str(workspace.state)},
        "transfer": {"max_concurrent_downloads": 4, "read_timeout": "5s"},
    }
    workspace.config.write_text(render_toml(document))
    return workspace.config


def s3_settings(
    workspace: Workspace, server: SimulatorServer, s3_server: S3Server, bucket: str, *uids: str
) -> Settings:
    """The settings the program would load from `write_s3_config`."""
    return load_settings(write_s3_config(workspace, server, s3_server, bucket, *uids))


async def bucket_objects(s3_server: S3Server, bucket: str) -> dict[str, bytes]:
    """Every object in the bucket, key -> bytes (test backups are small)."""
    objects: dict[str, bytes] = {}
    async with s3_server.client() as client:
        listing = await client.list_objects_v2(Bucket=bucket)
        for item in listing.get("Contents", []):
            response = await client.get_object(Bucket=bucket, Key=item["Key"])
            async with response["Body"] as body:
                objects[item["Key"]] = await body.read()
    return objects


async def test_a_pass_archives_single_and_multi_part_backups_into_the_bucket(
    sim: Simulator, server: SimulatorServer, workspace: Workspace, s3_server: S3Server,
    s3_bucket: str,
) -> None:
    """Objects land at the contract's keys with manifests; sha256 matches upstream and metadata."""
    sim.add_stack("stack-a")
    single = sim.add_backup("stack-a", db_type="mysql", database_name="shop", size=5000)
    multi_size = 12 * MiB + 777  # 49 upstream parts, 3 S3 parts
    multi = sim.add_backup("stack-a", db_type="postgresql", database_name="big", size=multi_size)
    summary = await run_pass(s3_settings(workspace, server, s3_server, s3_bucket, "stack-a"))

    assert summary.exit_code == 0
    assert summary.archived == 2
    objects = await bucket_objects(s3_server, s3_bucket)
    manifests = {key: json.loads(data) for key, data in objects.items()
                 if key.endswith("/manifest.json")}
    assert len(manifests) == 2
    for key, manifest in manifests.items():
        folder = key.removesuffix("manifest.json")
        assert key.startswith(f"{PREFIX}stack-a/{manifest['db_type']}/{manifest['database_name']}/")
        tar_key = f"{folder}{manifest['database_name']}.tar"
        assert hashlib.sha256(objects[tar_key]).hexdigest() == manifest["sha256"]
        assert manifest["sha256"] == sim.expected_sha256(manifest["backup_id"])
        assert await object_metadata(s3_server, s3_bucket, tar_key) == {
            "sha256": manifest["sha256"]
        }
    by_id = {manifest["backup_id"]: manifest for manifest in manifests.values()}
    assert by_id[single]["size"] == 5000
    assert by_id[multi]["size"] == multi_size
    assert len(by_id[multi]["parts"]) == -(-multi_size // PART_SIZE)
    assert set(objects) == set(manifests) | {
        f"{k.removesuffix('manifest.json')}{m['database_name']}.tar" for k, m in manifests.items()
    }
    assert await multipart_uploads(s3_server, s3_bucket) == []


async def test_a_second_pass_downloads_nothing(
    sim: Simulator, server: SimulatorServer, workspace: Workspace, s3_server: S3Server,
    s3_bucket: str,
) -> None:
    """Once archived in the bucket, a backup is never fetched again."""
    sim.add_stack("stack-a")
    sim.add_backup("stack-a", size=PART_SIZE * 2 + 5)
    settings = s3_settings(workspace, server, s3_server, s3_bucket, "stack-a")
    await run_pass(settings)
    started = sim.stats.downloads_started

    summary = await run_pass(settings)

    assert summary.exit_code == 0
    assert summary.archived == 0
    assert sim.stats.downloads_started == started


async def test_a_cut_download_still_ends_with_a_correct_object_and_no_orphans(
    sim: Simulator, server: SimulatorServer, workspace: Workspace, s3_server: S3Server,
    s3_bucket: str,
) -> None:
    """A download cut mid-body resumes; the object is byte-exact and no multipart upload remains."""
    sim.add_stack("stack-a")
    backup_id = sim.add_backup("stack-a", database_name="cut", size=7 * MiB + 3)
    sim.faults.cut_downloads = 1
    sim.faults.cut_after_bytes = PART_SIZE // 2

    summary = await run_pass(s3_settings(workspace, server, s3_server, s3_bucket, "stack-a"))

    assert summary.exit_code == 0
    assert sim.faults.cut_downloads == 0
    objects = await bucket_objects(s3_server, s3_bucket)
    (tar_key,) = [key for key in objects if key.endswith("/cut.tar")]
    assert hashlib.sha256(objects[tar_key]).hexdigest() == sim.expected_sha256(backup_id)
    assert await multipart_uploads(s3_server, s3_bucket) == []


async def test_check_config_probes_the_bucket_and_names_bad_credentials(
    sim: Simulator, server: SimulatorServer, workspace: Workspace, s3_server: S3Server,
    s3_bucket: str,
) -> None:
    """check-config passes on the real bucket and, with a wrong secret, exits 2 saying why."""
    sim.add_stack("stack-a")
    config = write_s3_config(workspace, server, s3_server, s3_bucket, "stack-a")
    good = await run_cli("--config", str(config), "check-config")
    assert good.code == 0, good.stderr

    (workspace.root / "s3-secret").write_text("not-the-secret\n")
    bad = await run_cli("--config", str(config), "check-config")

    assert bad.code == 2
    assert "credentials" in bad.stderr
    assert s3_bucket in bad.stderr
    assert "not-the-secret" not in bad.stdout + bad.stderr


async def _wait_until(predicate: Any, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


async def test_kill_9_mid_upload_leaves_no_object_and_the_next_pass_finishes_clean(
    sim: Simulator, server: SimulatorServer, workspace: Workspace, s3_server: S3Server,
    s3_bucket: str,
) -> None:
    """kill -9 during a multipart upload: nothing visible; the next pass completes, no orphan."""
    sim.add_stack("stack-a")
    backup_id = sim.add_backup("stack-a", database_name="slow", size=12 * MiB)
    sim.faults.slow_downloads = 48  # every upstream part: the upload stays open for seconds
    sim.faults.slow_bytes_per_second = 2 * MiB
    config = write_s3_config(workspace, server, s3_server, s3_bucket, "stack-a")
    process = await start_cli("--config", str(config), "sync")

    async def upload_started() -> bool:
        return bool(await multipart_uploads(s3_server, s3_bucket))

    await _wait_until(upload_started)
    await asyncio.sleep(1.0)  # some parts uploaded
    process.kill()
    await process.wait()
    assert not [key for key in await bucket_objects(s3_server, s3_bucket) if "slow" in key]

    sim.faults.slow_downloads = 0
    result = await run_cli("--config", str(config), "sync")

    assert result.code == 0, result.stderr
    objects = await bucket_objects(s3_server, s3_bucket)
    (tar_key,) = [key for key in objects if key.endswith("/slow.tar")]
    assert hashlib.sha256(objects[tar_key]).hexdigest() == sim.expected_sha256(backup_id)
    assert await multipart_uploads(s3_server, s3_bucket) == []


async def test_a_download_that_keeps_failing_leaves_no_object_and_no_orphan(
    sim: Simulator, server: SimulatorServer, workspace: Workspace, s3_server: S3Server,
    s3_bucket: str,
) -> None:
    """A backup whose download fails for good is aborted: no half object, no multipart upload."""
    sim.add_stack("stack-a")
    sim.add_backup("stack-a", database_name="broken", size=11 * MiB)
    sim.faults.blob_errors = 30  # every download attempt answers 500, after the upload began
    document = write_s3_config(workspace, server, s3_server, s3_bucket, "stack-a").read_text()
    workspace.config.write_text(document.replace("read_timeout", "max_retries = 1\nread_timeout"))

    summary = await run_pass(load_settings(workspace.config))

    assert summary.exit_code == 1
    assert not [key for key in await bucket_objects(s3_server, s3_bucket) if "broken" in key]
    assert await multipart_uploads(s3_server, s3_bucket) == []
