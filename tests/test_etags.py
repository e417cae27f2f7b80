"""An ETag is checked as an MD5 only when the response proves it is one."""

from __future__ import annotations

import json

import pytest

from archiver.simulator import Simulator, SimulatorServer
from archiver.transfer.etags import md5_from_etag
from tests.conftest import PART_SIZE, Workspace, archived_sha256s, run_pass, settings_for

HEX = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    ("etag", "headers", "md5"),
    [
        (f'"{HEX}"', {}, HEX),
        (f'"{HEX.upper()}"', {"x-amz-server-side-encryption": "AES256"}, HEX),
        (f'"{HEX}"', {"x-amz-server-side-encryption": "aws:kms"}, None),
        (f'"{HEX}"', {"x-amz-server-side-encryption": "aws:kms:dsse"}, None),
        (f'"{HEX}"', {"x-amz-server-side-encryption-customer-algorithm": "AES256"}, None),
        (f'"{HEX}-12"', {}, None),
        (f'W/"{HEX}"', {}, HEX),
        (None, {}, None),
    ],
)
def test_only_a_provable_md5_is_an_md5(
    etag: str | None, headers: dict[str, str], md5: str | None
) -> None:
    """No SSE header or AES256 and 32 hex digits: an MD5; KMS, SSE-C, multipart: none."""
    assert md5_from_etag(etag, headers) == md5


@pytest.mark.parametrize("mode", ["aws:kms", "aws:kms:dsse", "sse-c"])
async def test_a_bucket_with_kms_or_sse_c_archives_without_a_false_mismatch(
    sim: Simulator, server: SimulatorServer, workspace: Workspace, mode: str
) -> None:
    """Opaque ETags from SSE-KMS or SSE-C objects are recorded, never checked as MD5s."""
    sim.s3_encryption = mode
    backup_id = sim.add_backup("stack-a", size=PART_SIZE + 10)
    summary = await run_pass(settings_for(workspace, server, "stack-a"))
    assert summary.exit_code == 0
    assert archived_sha256s(workspace.archive) == {backup_id: sim.expected_sha256(backup_id)}


async def test_a_real_mismatch_under_sse_s3_still_fails(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """AES256 keeps the ETag an MD5: an ETag of other bytes is caught and fails the backup."""
    sim.s3_encryption = "AES256"
    sim.add_backup("stack-a", size=1000)
    sim.faults.wrong_etags = 100
    summary = await run_pass(settings_for(workspace, server, "stack-a"))
    assert summary.exit_code == 1
    assert "MD5 does not match the ETag" in summary.failed[0].reason


async def test_a_multipart_style_etag_is_recorded_as_it_is(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """`<hex>-3` is not an MD5: the download is kept and the manifest records the ETag as sent."""
    sim.multipart_etags = True
    sim.add_backup("stack-a", size=1000)
    summary = await run_pass(settings_for(workspace, server, "stack-a"))
    assert summary.exit_code == 0
    [manifest] = workspace.archive.rglob("manifest.json")
    [part] = json.loads(manifest.read_text())["parts"]
    assert part["etag"].endswith("-3")
    assert len(part["etag"]) == 34
