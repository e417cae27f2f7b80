"""`[transfer]`: how downloads run, wide transfers included (contract.md "Wide transfers").

Apart from `archiver.config.settings` so that it stays readable: the connection
limits, timeouts and retries, and the keys of segmented ranged downloads
(`streams_per_file`, `segment_size`, `in_flight`, `bandwidth_limit`).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from pydantic import AfterValidator, Field, ValidationInfo, field_validator

from archiver.config.values import (
    Bool,
    ByteSize,
    BytesPerSecond,
    Duration,
    NonNegativeInt,
    PositiveInt,
    Section,
)
from archiver.core.units import at_least, human_bytes


class TransferSettings(Section):
    """`[transfer]`: how downloads run."""

    max_concurrent_downloads: PositiveInt = 4
    chunk_size: Annotated[int, Field(ge=64 * 1024, le=64 * 1024 * 1024, strict=True)] = 1024 * 1024
    connect_timeout: Duration = timedelta(seconds=15)
    read_timeout: Duration = timedelta(seconds=60)
    # Failures in a row *without progress* before a file's download gives up: an attempt
    # that brought new bytes resets the count, so a download that keeps advancing goes on.
    max_retries: NonNegativeInt = 5
    # ...but once a file's download has broken off, it must finish within this long.
    max_retry_time: Duration = timedelta(hours=6)
    # Check each download's MD5 against S3's ETag (when the ETag is a plain MD5): the
    # only end-to-end check against the source, and the costliest hash per byte.
    verify_etag: Bool = True
    # On SIGTERM, transfers in flight get this long to finish before they are abandoned.
    grace_period: Duration = timedelta(seconds=30)
    # Ranged GETs in flight for one file (1: one plain GET, as before).
    streams_per_file: Annotated[int, Field(ge=1, le=64, strict=True)] = 4
    segment_size: Annotated[ByteSize, AfterValidator(at_least(64 * 1024))] = 16 * 1024 * 1024
    # Bytes received but not yet written, over all downloads.
    in_flight: Annotated[ByteSize, AfterValidator(at_least(1024 * 1024))] = 32 * 1024 * 1024
    # Bytes per second over all downloads; 0: no cap.
    bandwidth_limit: BytesPerSecond = 0

    @field_validator("in_flight")
    @classmethod
    def _room_for_chunks(cls, in_flight: int, info: ValidationInfo) -> int:
        chunk = info.data.get("chunk_size")
        if chunk is not None and in_flight < 2 * chunk:
            raise ValueError(f"must hold at least two chunks (chunk_size is {human_bytes(chunk)})")
        return in_flight

    @field_validator("bandwidth_limit")
    @classmethod
    def _some_bandwidth(cls, limit: int) -> int:
        if 0 < limit < 1024:
            raise ValueError('must be "0" (no cap) or at least "1KiB" (per second)')
        return limit
