"""What the simulated account holds: its stacks, backups and part files, the faults to
inject and the counters of everything served."""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path


@dataclass
class Gate:
    """Holds the blob GETs of one part file until `opened` is set, so a test can drive the
    order of events: `arrived` is set when the first GET reaches it."""

    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    opened: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Faults:
    """Failures to inject; tests flip these at runtime and counters decrement as they fire."""

    api_errors: int = 0
    throttle: int = 0
    throttle_retry_after: float | None = None
    malformed_json_stacks: set[str] = field(default_factory=set)
    # Stacks whose backup list's last page says `next: 1`: pagination going backwards.
    looping_pages_stacks: set[str] = field(default_factory=set)
    cut_downloads: int = 0
    cut_after_bytes: int | None = None
    slow_downloads: int = 0
    slow_bytes_per_second: int = 1_000_000
    expired_urls: int = 0
    blob_errors: int = 0
    ranged_errors: int = 0  # next N blob GETs with a Range header answer 500 (a stalled resume)
    ignore_range: int = 0  # next N ranged blob GETs answer 200 with the whole object
    # backup id -> the file list to answer instead of the real one, e.g. in the wrong order
    # or with an id twice (each entry: a real part's file id, or a made-up one).
    file_lists: dict[int, list[str]] = field(default_factory=dict)
    post_not_ok: str | None = None  # POSTs answer {"ok": false, "message": this}
    wrong_etags: int = 0  # next N blob answers carry an ETag that is the MD5 of other bytes
    unsatisfiable_ranges: int = 0  # next N ranged blob GETs answer 416
    # Ranged GETs served normally before the ranged faults (ranged_errors, ignore_range,
    # unsatisfiable_ranges, short_ranges) may fire: to hit a later segment of a file.
    ranged_faults_after: int = 0
    # Next N ranged blob GETs send the first half of the range asked for: a 206 whose
    # Content-Range names that half (or, with short_range_lies, still the whole range).
    short_ranges: int = 0
    short_range_lies: bool = False
    # Next N blob GETs carrying If-Match find the object changed: 412, or (with
    # ignore_if_match, like a server that ignores the header) a 206 with another ETag.
    changed_etags: int = 0
    ignore_if_match: bool = False
    # Once this many more blob bodies started, every URL issued so far is refused as
    # expired (403 "Request has expired"), as if they all ran out at that moment.
    expire_urls_after_gets: int | None = None
    # file id -> an event: that file's bodies stop half-way until the event is set.
    hold: dict[str, asyncio.Event] = field(default_factory=dict)
    # (backup id, file id) -> a gate that the blob GETs of that part wait at
    gates: dict[tuple[int, str], Gate] = field(default_factory=dict)


@dataclass
class SimStats:
    """Counters of everything the simulator served, for exact assertions in tests."""

    api_requests: int = 0
    api_requests_by_path: collections.Counter[str] = field(default_factory=collections.Counter)
    api_request_times: list[float] = field(default_factory=list)  # time.monotonic() values
    public_urls_issued: int = 0
    blob_requests: int = 0  # every GET/HEAD on /blobs/, refused ones included
    blob_refusals: int = 0  # 403/404/416 answers from the blob host
    downloads_started: int = 0  # blob GETs that started sending a body (200/206)
    downloads_completed: int = 0  # ... and sent all of it
    bytes_served: int = 0
    active_downloads: int = 0
    max_concurrent_downloads: int = 0
    blob_ranges: list[str | None] = field(default_factory=list)  # each blob GET's Range
    if_match_requests: int = 0  # blob GETs that carried If-Match
    completed_files: list[str] = field(default_factory=list)  # file ids, as bodies ended

    def reset(self) -> None:
        """Zero every counter (the live ``active_downloads`` gauge is kept)."""
        active = self.active_downloads
        fresh = SimStats()
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(fresh, name))
        self.active_downloads = active


@dataclass
class Part:
    """One file of a backup: its API id and name, and the file on disk with its MD5."""

    file_id: str
    name: str
    path: Path
    size: int
    md5: str


@dataclass
class Backup:
    """One backup of a stack's database; its content is the concatenation of its parts."""

    id: int
    stack_uid: str
    db_type: str
    database_name: str
    status: int
    backup_date: datetime
    size: int
    seed: int
    parts: list[Part]
    sha256: str | None = None  # computed lazily from the part files
    result: str | None = None  # backup_result of a failed backup (a default one otherwise)

    @property
    def series(self) -> tuple[str, str, str]:
        """(stack_uid, db_type, database_name): what one backup task rotates."""
        return (self.stack_uid, self.db_type, self.database_name)


@dataclass
class Stack:
    """One stack of the account."""

    uid: str
    name: str
    environment: str
    created_at: datetime


@dataclass
class ImportRecord:
    """An import Cloud 66 was asked for, and what fetching its URL gave."""

    stack_uid: str
    group: int
    db_type: str
    remote_url: str
    status: int | None = None  # the HTTP status of the fetch; None while it runs
    size: int = 0
    sha256: str = ""
    error: str | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
