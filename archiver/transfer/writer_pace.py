"""What sets the pace of a backup's writer now: the network, or storage?

The writer of a backup (`archiver.transfer.part_writer`) spends its time three ways:
waiting for bytes to arrive, handing them to storage (which blocks when an S3
upload or an SFTP server, a slow disk or the hashing threads are behind), or
doing neither for long. `WriterPace` keeps a decaying share of the recent time
spent in each of the first two (a half-life of half a second) and calls the
writer *network-bound* while it waits for bytes more than it waits for storage,
and for more than `MIN_WAITING` of its time.
Only then is reading ahead worth its memory (`archiver.transfer.in_flight`): on a link
that caps each connection the writer mostly waits for bytes, behind an S3 upload
it mostly waits for storage, and bytes read ahead would only wait with it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

HALF_LIFE = 0.5  # seconds
# ...and it must have waited for the network a good part of the time: the first
# bytes of any transfer keep a writer waiting for a moment, which proves nothing.
MIN_WAITING = 0.3

WAITING = "waiting"  # for bytes from the network
STORING = "storing"  # for storage (and the hashing threads) to take them
WORKING = "working"  # neither


class WriterPace:
    """The writer's recent time waiting for the network and for storage."""

    def __init__(
        self,
        on_network_bound: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._on_network_bound = on_network_bound
        self._clock = clock
        self._phase = WORKING
        self._since = clock()
        self._shares = {WAITING: 0.0, STORING: 0.0}
        self._recheck: asyncio.TimerHandle | None = None

    def network_bound(self) -> bool:
        """Whether the writer lately waited for the network, and more than for storage."""
        shares = self._recent()
        return shares[WAITING] > max(shares[STORING], MIN_WAITING)

    def enter(self, phase: str) -> None:
        """The writer starts `WAITING`, `STORING` or `WORKING`."""
        self._shares, self._since = self._recent(), self._clock()
        self._phase = phase
        if phase == WAITING:
            self._check_while_waiting()

    def _check_while_waiting(self) -> None:
        """While the writer waits, tell (now, then every eighth of a second) once the wait
        makes it network-bound: reading ahead may pay again, so what waits may be granted."""
        self._recheck = None
        if self._phase != WAITING or self._on_network_bound is None:
            return
        if self.network_bound():
            self._on_network_bound()
        else:
            self._recheck = asyncio.get_running_loop().call_later(
                HALF_LIFE / 4, self._check_while_waiting
            )

    def _recent(self) -> dict[str, float]:
        decay: float = 0.5 ** ((self._clock() - self._since) / HALF_LIFE)
        return {
            phase: share * decay + (1.0 - decay if phase == self._phase else 0.0)
            for phase, share in self._shares.items()
        }
