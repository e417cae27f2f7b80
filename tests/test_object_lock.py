"""Copies no one can delete: S3 Object Lock on a real server (SeaweedFS, which enforces it).

SeaweedFS 4.48 refuses to delete a locked version, turns a plain DELETE on a
versioned bucket into a delete marker, and reports retention on HEAD, as AWS
does. It does not insist on a checksum on PutObjectRetention (AWS does), so
the client side of that is checked here: the request carries one.
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from archiver.config.storage import S3StorageSettings
from archiver.core.errors import ObjectLocked
from archiver.simulator import Simulator, SimulatorServer
from archiver.storage.s3 import S3Storage
from tests.archive_backends import S3_PREFIX, s3_backend
from tests.conftest import Workspace, run_cli
from tests.destinations_helpers import config, near, near_folder, status_json
from tests.s3_fault_proxy import S3FaultProxy
from tests.s3_server import S3Server

START = datetime(2026, 1, 1, 3, 0, tzinfo=UTC)
LOCK = {"mode": "GOVERNANCE", "days": 1}


@pytest.fixture
async def lock_bucket(s3_server: S3Server) -> str:
    """A fresh bucket created with Object Lock enabled (and so versioned)."""
    name = f"c66-lock-{secrets.token_hex(6)}"
    async with s3_server.client() as client:
        await client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name


def _far(s3_server: S3Server, bucket: str, tmp_path: Path, **extra: Any) -> dict[str, Any]:
    secret = tmp_path / "s3-secret"
    secret.write_text(s3_server.secret_key + "\n")
    return {"name": "far", **s3_backend(s3_server, bucket, secret).storage, **extra}


async def _versions(s3_server: S3Server, bucket: str, key: str) -> list[tuple[str, bool]]:
    """(version id, is a delete marker) of exactly `key`."""
    async with s3_server.client() as client:
        listing = await client.list_object_versions(Bucket=bucket, Prefix=key)
    found = [(v["VersionId"], False) for v in listing.get("Versions", []) if v["Key"] == key]
    return found + [(m["VersionId"], True) for m in listing.get("DeleteMarkers", [])
                    if m["Key"] == key]


async def test_a_pass_locks_data_and_manifest_once_the_manifest_is_written(
    sim: Simulator, server: SimulatorServer, workspace: Workspace, s3_server: S3Server,
    lock_bucket: str,
) -> None:
    """Both objects of each copy carry a retain-until about `days` ahead; status shows it."""
    sim.add_backup("stack-a", database_name="shop", size=3000)
    path = config(workspace, server, [
        near(workspace), _far(s3_server, lock_bucket, workspace.root, object_lock=LOCK),
    ])
    before = datetime.now(UTC)

    result = await run_cli("--config", path, "sync")

    assert result.code == 0, result.stderr
    async with s3_server.client() as client:
        listing = await client.list_objects_v2(Bucket=lock_bucket, Prefix=S3_PREFIX)
        keys = sorted(item["Key"] for item in listing["Contents"])
        assert [k.rsplit("/", 1)[1] for k in keys] == ["manifest.json", "shop.tar"]
        for key in keys:
            head = await client.head_object(Bucket=lock_bucket, Key=key)
            assert head["ObjectLockMode"] == "GOVERNANCE"
            until = head["ObjectLockRetainUntilDate"]
            assert before + timedelta(days=1) - timedelta(seconds=2) <= until
            assert until <= datetime.now(UTC) + timedelta(days=1)
    [entry] = (await status_json(path))["archived"]
    near_copy, far_copy = entry["copies"]
    assert near_copy["locked_until"] is None
    assert far_copy["locked_until"] is not None
    assert (await status_json(path))["storage"][1]["object_lock"] is True


async def test_prune_leaves_locked_copies_in_place_and_says_until_when(
    sim: Simulator, server: SimulatorServer, workspace: Workspace, s3_server: S3Server,
    lock_bucket: str,
) -> None:
    """far keeps 1 by its retention, but its other copies are locked: --dry-run --json and
    the real prune list them with locked_until, remove nothing there, and exit 0."""
    ids = [sim.add_backup("stack-a", size=800, backup_date=START + timedelta(days=n))
           for n in range(3)]
    far = _far(s3_server, lock_bucket, workspace.root, object_lock=LOCK,
               retention={"keep_last": 1})
    path = config(workspace, server, [near(workspace, retention={"keep_last": 1}), far])
    assert (await run_cli("--config", path, "sync")).code == 0

    for dry_run in (True, False):
        args = ["prune", "--json", *(["--dry-run"] if dry_run else [])]
        result = await run_cli("--config", path, *args)
        assert result.code == 0, result.stderr
        plan = json.loads(result.stdout)
        removed = {(e["storage"], e["backup_id"]): e["locked_until"] for e in plan["remove"]}
        if dry_run:
            assert {k for k, until in removed.items() if until is None} == {
                ("near", ids[0]), ("near", ids[1])
            }
        assert {k for k, until in removed.items() if until is not None} == {
            ("far", ids[0]), ("far", ids[1])
        }
        assert all(datetime.fromisoformat(until) > datetime.now(UTC)
                   for until in removed.values() if until is not None)
    async with s3_server.client() as client:
        listing = await client.list_objects_v2(Bucket=lock_bucket, Prefix=S3_PREFIX)
    assert sum(item["Key"].endswith(".tar") for item in listing["Contents"]) == 3
    assert not any(item["Key"].endswith("pruned.json") for item in listing["Contents"])
    assert len(list(near_folder(workspace).rglob("*.tar"))) == 1
    document = await status_json(path)
    assert {e["backup_id"]: [c["storage"] for c in e["copies"]] for e in document["archived"]} == {
        ids[0]: ["far"], ids[1]: ["far"], ids[2]: ["near", "far"],
    }


async def test_check_config_fails_when_the_bucket_has_no_object_lock(
    sim: Simulator, server: SimulatorServer, workspace: Workspace, s3_server: S3Server,
    s3_bucket: str, lock_bucket: str,
) -> None:
    """object_lock on a bucket made without it: check-config exits 2 naming the destination;
    on a bucket with it, check-config passes."""
    sim.add_stack("stack-a")
    plain = config(workspace, server, [
        near(workspace), _far(s3_server, s3_bucket, workspace.root, object_lock=LOCK),
    ])
    refused = await run_cli("--config", plain, "check-config")
    assert refused.code == 2
    assert f"storage 'far' s3://{s3_bucket}/" in refused.stderr
    assert f"object_lock: bucket {s3_bucket} has no Object Lock" in refused.stderr
    locked = config(workspace, server, [
        near(workspace), _far(s3_server, lock_bucket, workspace.root, object_lock=LOCK),
    ])
    accepted = await run_cli("--config", locked, "check-config")
    assert accepted.code == 0, accepted.stderr
    assert "Object Lock on" in accepted.stdout


async def _storage(s3_server: S3Server, bucket: str, tmp_path: Path) -> S3Storage:
    values = _far(s3_server, bucket, tmp_path, object_lock=LOCK)
    del values["name"]
    return S3Storage(S3StorageSettings.model_validate(values))


async def test_a_removal_deletes_every_version_and_a_locked_one_is_named(
    s3_server: S3Server, lock_bucket: str, tmp_path: Path
) -> None:
    """On a versioned bucket a removal deletes version by version, leaving no marker and no
    old version; a locked object is refused with its retain-until date, and still reads."""
    storage = await _storage(s3_server, lock_bucket, tmp_path)
    try:
        await storage.write_small("a/free.json", b"1")
        await storage.write_small("a/free.json", b"2")  # a second version
        await storage.remove("a/free.json")
        assert await _versions(s3_server, lock_bucket, f"{S3_PREFIX}a/free.json") == []

        await storage.write_small("a/kept.json", b"keep me")
        until = datetime.now(UTC) + timedelta(hours=3)
        await storage.lock("a/kept.json", until)
        with pytest.raises(ObjectLocked) as caught:
            await storage.remove("a/kept.json")
        assert caught.value.until is not None
        assert abs(caught.value.until - until) < timedelta(seconds=2)
        assert "under S3 Object Lock until" in str(caught.value)
        assert await storage.read_small("a/kept.json") == b"keep me"
        assert [marker for _, marker in
                await _versions(s3_server, lock_bucket, f"{S3_PREFIX}a/kept.json")] == [False]
        info = await storage.stat("a/kept.json")
        assert info is not None
        assert info.locked_until is not None
    finally:
        await storage.aclose()


async def test_the_lock_request_carries_a_checksum(
    s3_server: S3Server, lock_bucket: str, tmp_path: Path
) -> None:
    """PutObjectRetention goes out with x-amz-checksum-* or Content-MD5, as AWS requires
    (SeaweedFS would take it without, so the request itself is looked at)."""
    storage = await _storage(s3_server, lock_bucket, tmp_path)
    seen: list[dict[str, str]] = []

    def look(request: Any, **_: Any) -> None:
        seen.append({k.lower(): str(v) for k, v in request.headers.items()})

    try:
        client = await storage.connected()
        client.meta.events.register("before-send.s3.PutObjectRetention", look)
        await storage.write_small("b/x.json", b"{}")
        await storage.lock("b/x.json", datetime.now(UTC) + timedelta(hours=1))
    finally:
        await storage.aclose()
    [headers] = seen
    assert "content-md5" in headers or any(k.startswith("x-amz-checksum-") for k in headers)


async def test_a_pass_writes_nothing_unlocked_into_a_bucket_without_object_lock(
    sim: Simulator, server: SimulatorServer, workspace: Workspace, s3_server: S3Server,
    s3_bucket: str,
) -> None:
    """object_lock on a bucket made without it: far sits each pass out with one failure that
    names it and why, nothing lands in the bucket, near archives every backup, exit 1."""
    ids = [sim.add_backup("stack-a", database_name=f"db{n}", size=900 + n) for n in range(3)]
    path = config(workspace, server, [
        near(workspace), _far(s3_server, s3_bucket, workspace.root, object_lock=LOCK),
    ])

    for _ in range(2):
        result = await run_cli("--config", path, "sync")

        assert result.code == 1, result.stderr
        [failure] = (await status_json(path))["last_run"]["failed"]
        assert (failure["storage"], failure["backup_id"]) == ("far", None)
        assert f"bucket {s3_bucket} has no Object Lock" in failure["reason"]
        assert "nothing is written there unlocked" in failure["reason"]
        async with s3_server.client() as client:
            listing = await client.list_objects_v2(Bucket=s3_bucket)
        assert listing.get("Contents", []) == []
        document = await status_json(path)
        assert sorted(e["backup_id"] for e in document["archived"]) == ids
        assert all([c["storage"] for c in e["copies"]] == ["near"] for e in document["archived"])


def _is_lock_request(request: web.Request) -> bool:
    """A PutObjectRetention."""
    return request.method == "PUT" and "retention" in request.query


async def test_a_lock_that_fails_is_reported_once_per_copy_in_a_pass(
    sim: Simulator, server: SimulatorServer, workspace: Workspace, s3_server: S3Server,
    lock_bucket: str,
) -> None:
    """With every PutObjectRetention refused, a first pass lists each copy's lock failure once
    (not again from the end-of-pass retry of unlocked copies); the next pass once too."""
    ids = [sim.add_backup("stack-a", database_name=f"db{n}", size=900 + n) for n in range(3)]
    async with S3FaultProxy(s3_server.endpoint_url) as proxy:
        proxied = S3Server(proxy.url, s3_server.access_key, s3_server.secret_key)
        path = config(workspace, server, [
            near(workspace), _far(proxied, lock_bucket, workspace.root, object_lock=LOCK),
        ])
        proxy.refuse = _is_lock_request

        for _ in range(2):
            result = await run_cli("--config", path, "sync")

            assert result.code == 1, result.stderr
            failed = (await status_json(path))["last_run"]["failed"]
            assert sorted((f["backup_id"], f["storage"]) for f in failed) == [
                (backup_id, "far") for backup_id in ids
            ]
            assert all("could not be locked" in f["reason"] for f in failed)
    assert proxy.refused > 0
