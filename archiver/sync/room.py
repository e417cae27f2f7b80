"""Room a pass's failed uploads give back, and which out-of-room failures it may cure.

When the destination fills up, the backups that fail are often not the ones that do
not fit: a big backup's partial upload takes the room while a small one is writing,
the small one fails, then the big one fails too and its partial goes. The small one
would fit now. So the pass notes what each removed partial gave back (bytes) and,
for each backup that ran out of room, how many bytes it still lacked. Once the
backups in flight are done, a backup gets one more try when other backups gave back
at least what it lacked *after* it failed (room it had while it ran did not save
it). The tries run one at a time, the smallest lack first, so nothing else competes
for the room; a backup that failed alone with room to spare for others is not tried
again (it does not fit).

A partial that failed for lack of room is always removed, never kept to resume: it
would hold the room every other backup needs, and it can only be finished once room
appears, when a fresh download fits as well.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from archiver.core.errors import StorageFull

T = TypeVar("T")


@dataclass(frozen=True)
class _RanOut(Generic[T]):
    owner: T
    error: StorageFull
    lacked: int | None  # bytes it still needed when it failed; None when unknown
    mark: int  # how many give-backs had happened when it failed


class RoomLedger(Generic[T]):
    """One pass's give-backs and out-of-room failures; `T` names a backup (hashable)."""

    def __init__(self) -> None:
        self._given_back: list[tuple[T, int]] = []
        self._ran_out: list[_RanOut[T]] = []

    def gave_back(self, owner: T, size: int) -> None:
        """`owner`'s unfinished upload (or taken-back commit) of `size` bytes left storage."""
        self._given_back.append((owner, size))

    def ran_out(self, owner: T, error: StorageFull, lacked: int | None) -> None:
        """`owner` failed for lack of room, still lacking `lacked` bytes (None: unknown)."""
        self._ran_out.append(_RanOut(owner, error, lacked, len(self._given_back)))

    def _since(self, failure: _RanOut[T]) -> int:
        """Bytes other backups gave back after `failure`."""
        later = self._given_back[failure.mark :]
        return sum(size for owner, size in later if owner != failure.owner)

    def take(self) -> tuple[list[T], list[tuple[T, StorageFull]]]:
        """(worth another try, smallest lack first; given up, with their errors). Forgets
        both: each backup gets at most one more try from what happened so far."""
        again: list[_RanOut[T]] = []
        given_up: list[tuple[T, StorageFull]] = []
        for failure in self._ran_out:
            freed = self._since(failure)
            if freed > 0 and (failure.lacked is None or freed >= failure.lacked):
                again.append(failure)
            else:
                given_up.append((failure.owner, failure.error))
        again.sort(key=lambda failure: (failure.lacked is None, failure.lacked or 0))
        self._ran_out = []
        return [failure.owner for failure in again], given_up
