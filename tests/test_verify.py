"""verify: subsets, the deep tar check, results in metrics and alerts; restore's refusals."""

from __future__ import annotations

import io
import os
import random
import tarfile
from concurrent.futures import ThreadPoolExecutor

import pytest

from archiver.cloud66.budget import RequestBudget
from archiver.lifecycle.tar_check import TarChecker
from archiver.lifecycle.verify import select_backups, subset_group
from archiver.model.manifest import ArchivedBackup
from archiver.service.metrics import Metrics
from archiver.simulator import Simulator, SimulatorServer
from archiver.state.store import StateStore
from tests.conftest import Workspace, run_cli


def _record(stack_uid: str, backup_id: int) -> ArchivedBackup:
    return ArchivedBackup(stack_uid, backup_id, "mysql", "db", 1, "x", "loc", "t", "k", "m")


def test_subsets_split_the_archive_into_fixed_groups() -> None:
    """N/M for N in 1..M covers every backup exactly once, the same way on every run."""
    records = [_record(f"stack-{s}", backup_id) for s in range(3) for backup_id in range(200)]
    groups = [select_backups(records, subset=(number, 7)) for number in range(1, 8)]
    assert sorted(r.backup_id + 1000 * int(r.stack_uid[-1]) for g in groups for r in g) == sorted(
        r.backup_id + 1000 * int(r.stack_uid[-1]) for r in records
    )
    assert all(40 < len(group) < 130 for group in groups)  # roughly even
    assert groups[2] == select_backups(list(reversed(records)), subset=(3, 7))[::-1]
    assert subset_group(records[0], 7) == subset_group(_record("stack-0", 0), 7)


def test_percent_samples_at_least_one() -> None:
    """--percent 5 of 200 picks 10 distinct backups; of 3 it still picks one."""
    records = [_record("s", backup_id) for backup_id in range(200)]
    chosen = select_backups(records, percent=5, rng=random.Random(1))
    assert len({r.backup_id for r in chosen}) == 10
    assert len(select_backups(records[:3], percent=5, rng=random.Random(1))) == 1


def _tar(members: int = 3, size: int = 70_000) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for index in range(members):
            data = os.urandom(size)
            info = tarfile.TarInfo(f"dump-{index}.sql.gz")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


async def _tar_verdict(data: bytes, chunk: int = 8192) -> str | None:
    with ThreadPoolExecutor(max_workers=2) as executor:
        checker = TarChecker(executor)
        for start in range(0, len(data), chunk):
            await checker.feed(data[start : start + chunk])
        return await checker.finish()


async def test_a_whole_tar_passes_the_deep_check() -> None:
    """A tar written by tarfile, fed in small chunks, is whole."""
    assert await _tar_verdict(_tar()) is None


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda t: t[:100_000], "unexpected end of data"),
        (lambda t: t[: 512 + 70_144], "without the end-of-archive marker"),  # cut at a boundary
        (lambda t: t[:71_000] + bytes([t[71_000] ^ 0xFF]) + t[71_001:], "garbled header"),
        (lambda t: os.urandom(len(t)), "not a readable tar"),
        (lambda t: b"", "not a readable tar"),
    ],
    ids=["cut mid-member", "cut at a member boundary", "garbled header", "noise", "empty"],
)
async def test_the_deep_check_finds_truncated_and_garbled_tars(
    damage: object, expected: str
) -> None:
    """Each damage is named, including the two that tarfile alone takes for a normal end."""
    verdict = await _tar_verdict(damage(_tar()))  # type: ignore[operator]
    assert verdict is not None
    assert expected in verdict


async def test_verify_failures_reach_the_metrics(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """After a verify that found a corrupt backup, /metrics reports it (read from the state)."""
    backup_id = sim.add_backup("stack-a", size=5000)
    config = workspace.write_config(server.base_url, [{"uid": "stack-a"}])
    assert (await run_cli("--config", str(config), "sync")).code == 0
    [tar] = list(workspace.archive.rglob("*.tar"))
    tar.write_bytes(tar.read_bytes()[:-1] + b"X")
    result = await run_cli("--config", str(config), "verify")
    assert result.code == 1
    assert "sha256 differs from the manifest" in result.stdout
    assert "1 corrupt" in result.stdout
    state = StateStore.open(workspace.state)
    try:
        metrics = Metrics()
        metrics.bind(state, RequestBudget(10))
        text = metrics.render().decode()
    finally:
        state.close()
    assert "c66_archiver_verify_failures 1.0" in text
    assert "c66_archiver_last_verify_timestamp_seconds " in text
    assert f"backup {backup_id}" not in text  # labels never carry ids


async def test_restore_refuses_an_unknown_or_ambiguous_id_with_exit_2(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """An id not archived, or archived for two stacks without --stack, exits 2 with one line."""
    sim.add_backup("stack-a", size=1000, backup_id=5)
    sim.add_backup("stack-b", size=1000, backup_id=6)
    config = workspace.write_config(server.base_url, [{"uid": "stack-a"}, {"uid": "stack-b"}])
    assert (await run_cli("--config", str(config), "sync")).code == 0
    unknown = await run_cli("--config", str(config), "restore", "99", "-o", "x.tar")
    assert unknown.code == 2
    assert "no archived backup 99" in unknown.stderr
    wrong_stack = await run_cli(
        "--config", str(config), "restore", "5", "--stack", "stack-b", "-o", "x.tar"
    )
    assert wrong_stack.code == 2
    assert "no archived backup 5 of stack stack-b" in wrong_stack.stderr
