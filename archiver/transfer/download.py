"""Downloads: what every file's fetch shares, and the fetch of one backup's parts.

A backup's parts are fetched side by side (`archiver.transfer.backup_fetch`), each as
consecutive Range segments over up to `streams_per_file` connections
(`archiver.transfer.part_fetch`, `archiver.transfer.segment_fetch`), and taken by the writer in
order (`archiver.transfer.part_writer`), so storage sees one sequential stream. What all
of them share lives here: the HTTP session, the retry policy and the stop
signal, the in-flight budget (`archiver.transfer.in_flight`: bytes received and not yet
written, over every download), the bandwidth limit (`archiver.core.token_bucket`)
and the file slots (`max_concurrent_downloads` files in flight at once).

Knows nothing of Cloud 66 or of the state: the caller hands it a way to get a
fresh URL for each part.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import aiohttp

from archiver.core.retry import RetryPolicy
from archiver.core.stopping import StopSignal
from archiver.core.token_bucket import TokenBucket
from archiver.transfer.backup_fetch import BackupFetch, PartToFetch
from archiver.transfer.in_flight import InFlight
from archiver.transfer.part_fetch import FetchSettings
from archiver.transfer.part_source import (
    ByteCallback,
    FactsCallback,
    PartFacts,
    PartSource,
    ResumePoint,
    UpstreamChanged,
)
from archiver.transfer.segment_fetch import FIRST_READ, Connection
from archiver.transfer.segments import Window
from archiver.transfer.urls import UrlSource, url_expires_soon
from archiver.transfer.writer_pace import WriterPace

MiB = 1024 * 1024
# What the hashing and writing threads of one file may hold (`archiver.transfer.chunks`): 4 MiB
# keep them busy on loopback (measured), and a sink that is full makes the writer wait
# on storage, which is how its pace tells storage is the slow side (`writer_pace`).
SINK_IN_FLIGHT = 4 * MiB
# What a file being written may hold while storage is the slow side: the sink's, and
# as much again ready behind it.
HEAD_ROOM = 2 * SINK_IN_FLIGHT

__all__ = [
    "ByteCallback",
    "Downloader",
    "FactsCallback",
    "PartFacts",
    "PartSource",
    "PartToFetch",
    "ResumePoint",
    "UpstreamChanged",
    "UrlSource",
    "url_expires_soon",
]


def sink_share(in_flight: int) -> int:
    """What one file's hashing and writing threads may hold, within `in_flight`."""
    return min(SINK_IN_FLIGHT, in_flight // 2)


class Downloader:
    """What every download shares; `backup` starts the fetch of one backup's parts."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        max_files: int,
        retry_policy: RetryPolicy,
        stop: StopSignal | None = None,
        chunk_size: int = MiB,
        verify_etag: bool = True,
        streams_per_file: int = 1,
        segment_size: int = 16 * MiB,
        in_flight: int = 32 * MiB,
        bandwidth_limit: int = 0,
    ) -> None:
        self.stop = stop or StopSignal()
        self.budget = InFlight(
            in_flight,
            head_room=min(HEAD_ROOM, in_flight // 2),
            # ...of which only the sink's is kept from segments ahead: when they may read
            # (the writer waits for the network) the head holds little, and every MiB
            # ahead keeps a stream reading on a link that caps each connection.
            kept_for_heads=sink_share(in_flight),
            # A segment ahead may always have its GET answered and its first read in,
            # so the writer never waits a round trip at a segment's start.
            cushion=max(FIRST_READ, chunk_size),
        )
        self.throttle = TokenBucket(bandwidth_limit) if bandwidth_limit else None
        connection = Connection(session, chunk_size, retry_policy, self.stop, self.throttle)
        self.settings = FetchSettings(
            connection, self.budget, streams_per_file, segment_size, verify_etag
        )
        self.sink_in_flight = sink_share(in_flight)
        # How far ahead of its writer a backup's GETs may start: the span its streams cover.
        self.window_size = streams_per_file * segment_size
        self._slots = asyncio.Semaphore(max_files)

    def backup(
        self, parts: Sequence[PartToFetch], *, base: int, position: int
    ) -> tuple[BackupFetch, Window]:
        """The fetch of `parts` (the first one's byte 0 at `base` in the joined backup) and
        the window its writer moves, from `position` (the first byte it will write)."""
        pace = WriterPace(on_network_bound=self.budget.regrant)
        window = Window(self.window_size, consumed=position, pace=pace)
        fetch = BackupFetch(
            self.settings, self._slots, self.stop, parts, window=window, base=base
        )
        return fetch, window
