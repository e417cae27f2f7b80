"""The pieces of a backup join in split-suffix order, and a list nobody can vouch for is refused."""

from __future__ import annotations

import re

import pytest

from archiver.cloud66.models import BackupFile
from archiver.cloud66.parts import join_order
from archiver.core.errors import TransferError
from archiver.simulator import Simulator, SimulatorServer
from tests.conftest import PART_SIZE, Workspace, archived_sha256s, run_pass, settings_for


def _files(*ids: str) -> list[BackupFile]:
    return [BackupFile(id=file_id, name=f"db.{file_id}") for file_id in ids]


def test_suffix_order_wins_over_list_order() -> None:
    """tar-ac, tar-aa, tar-ab join as aa, ab, ac; the legacy tar.aa form too."""
    assert [f.id for f in join_order(_files("tar-ac", "tar-aa", "tar-ab"))] == [
        "tar-aa", "tar-ab", "tar-ac"
    ]
    assert [f.id for f in join_order(_files("tar.ab", "tar.aa"))] == ["tar.aa", "tar.ab"]
    assert [f.id for f in join_order(_files("tar"))] == ["tar"]


def test_longer_suffixes_sort_after_two_letter_ones() -> None:
    """split's expanding suffixes: ... yz, then zaaa: by length, then by letters."""
    ordered = join_order(_files("tar-zaaa", "tar-yz", "tar-zaab"))
    assert [f.id for f in ordered] == ["tar-yz", "tar-zaaa", "tar-zaab"]


@pytest.mark.parametrize(
    ("ids", "reason"),
    [
        (("tar-aa", "tar-ab", "tar-aa"), "more than once (tar-aa)"),
        (("tar", "tar-aa"), "do not follow the split pattern"),
        (("part-1", "part-2"), "do not follow the split pattern"),
        (("tar-aa", "tar.ab"), "mix naming patterns"),
        (("tar-aa", "tar-ac"), "piece tar-ab is missing"),
    ],
)
def test_lists_nobody_can_vouch_for_are_refused(ids: tuple[str, ...], reason: str) -> None:
    """Repeated ids, strays, mixed patterns and gaps are a clear TransferError."""
    with pytest.raises(TransferError, match=re.escape(reason)):
        join_order(_files(*ids))


async def test_a_shuffled_file_list_still_joins_in_order(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """The API lists the three pieces backwards: the archive is still exactly the backup."""
    backup_id = sim.add_backup("stack-a", size=PART_SIZE * 2 + 500)
    sim.faults.file_lists[backup_id] = ["tar-ac", "tar-ab", "tar-aa"]
    summary = await run_pass(settings_for(workspace, server, "stack-a"))
    assert summary.exit_code == 0
    assert archived_sha256s(workspace.archive) == {backup_id: sim.expected_sha256(backup_id)}


async def test_a_repeated_piece_fails_that_backup_only(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """A list with tar-aa twice fails its backup with a clear reason; the others archive."""
    bad = sim.add_backup("stack-a", size=PART_SIZE * 2 + 500)
    good = sim.add_backup("stack-a", size=1000)
    sim.faults.file_lists[bad] = ["tar-aa", "tar-ab", "tar-aa", "tar-ac"]
    summary = await run_pass(settings_for(workspace, server, "stack-a"))
    assert summary.exit_code == 1
    [failure] = summary.failed
    assert (failure.backup_id, failure.reason) == (
        bad, "the backup lists file ids more than once (tar-aa)"
    )
    assert set(archived_sha256s(workspace.archive)) == {good}
    assert sim.stats.downloads_started == 1
