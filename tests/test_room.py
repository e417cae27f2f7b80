"""The room ledger: which backups that ran out of room get one more try in the pass."""

from __future__ import annotations

from archiver.core.errors import StorageFull
from archiver.sync.room import RoomLedger

FULL = StorageFull("no space left on /archive")


def test_room_given_back_after_a_failure_earns_it_another_try() -> None:
    """A small backup fails, then a big partial of 3 MiB goes: the small one may fit now."""
    ledger: RoomLedger[str] = RoomLedger()
    ledger.ran_out("small", FULL, lacked=40_000)
    ledger.gave_back("small", 260_000)  # its own partial does not make room for itself
    ledger.gave_back("big", 3_000_000)
    ledger.ran_out("big", FULL, lacked=3_100_000)
    again, given_up = ledger.take()
    assert again == ["small"]
    assert given_up == [("big", FULL)]


def test_room_it_already_had_does_not_count() -> None:
    """Room given back before a backup failed was there while it ran: no second try."""
    ledger: RoomLedger[str] = RoomLedger()
    ledger.gave_back("other", 5_000_000)
    ledger.ran_out("big", FULL, lacked=1_000)
    assert ledger.take() == ([], [("big", FULL)])


def test_too_little_room_given_back_earns_nothing() -> None:
    """Room given back that is less than what the backup lacked cannot make it fit."""
    ledger: RoomLedger[str] = RoomLedger()
    ledger.ran_out("big", FULL, lacked=2_000_000)
    ledger.gave_back("small", 300_000)
    assert ledger.take() == ([], [("big", FULL)])


def test_unknown_lacks_try_again_last_and_each_backup_once() -> None:
    """Smallest lack first, unknown lacks last; `take` forgets, so a backup gets one more try."""
    ledger: RoomLedger[str] = RoomLedger()
    ledger.ran_out("unknown", FULL, lacked=None)
    ledger.ran_out("medium", FULL, lacked=500_000)
    ledger.ran_out("tiny", FULL, lacked=10)
    ledger.gave_back("big", 4_000_000)
    assert ledger.take() == (["tiny", "medium", "unknown"], [])
    assert ledger.take() == ([], [])


def test_nothing_given_back_means_no_try_even_for_a_failed_manifest() -> None:
    """A backup that lacked only its manifest's room gets no try unless room came back."""
    ledger: RoomLedger[str] = RoomLedger()
    ledger.ran_out("db", FULL, lacked=0)
    ledger.gave_back("db", 1_048_576)  # its own data, taken back
    assert ledger.take() == ([], [("db", FULL)])
