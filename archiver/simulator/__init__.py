"""An embedded Cloud 66 API v3 and S3-like blob host, for the demo, the tests and the benchmark.

One aiohttp application serves the API under ``/api/3`` and the backup files under
``/blobs/``. It reproduces the upstream behaviour the archiver depends on: lists wrapped
in the ``response``/``count``/``pagination`` envelope and cut into pages of ``per_page``;
bearer-token auth (401) and the ``X-Account`` check (403); ``503 throttled`` past
``requests_per_hour``; a file's ``public_url`` pre-signed S3-style (SigV2 query string)
with its query %-encoded twice; S3's XML errors for a bad signature, an expired URL or
an unknown key; single byte ``Range`` requests (206, 416), ``If-Range`` and MD5 ETags.
Faults (5xx, throttling, broken JSON, cut or slow downloads, expired URLs, parts held
at a gate) can be switched on at runtime through :attr:`Simulator.faults`, and every
request is counted in :attr:`Simulator.stats` so tests can assert exact call counts.

Backup content is deterministic pseudo-random bytes written once to ``blob_dir`` (one
file per part), so even a 1 GiB backup never sits in memory and is served with
``sendfile`` when no fault is active.

Modules: ``content`` (the bytes), ``records`` and ``account`` (the account's data),
``api`` and ``documents`` (the Cloud 66 API and its JSON), ``blobs`` (the blob host),
``refusals`` (the error answers of both), ``server`` (the application and its loopback
runner), ``populate`` (the demo data set), ``cadence`` (backup dates, weekdays-only
ones too) and ``cli`` (``python -m archiver.simulator``). What the watch must notice is
there too: ``Account.set_keep_count`` rotates old backups away as a backup task's
``keep_count`` does, ``add_backup(status=1, result=...)`` fails one, and ``add_series``
lays out a cadence with sizes per backup (a shrinking dump).
"""

from __future__ import annotations

from archiver.simulator.cadence import cadence
from archiver.simulator.cli import main
from archiver.simulator.content import CHUNK_SIZE
from archiver.simulator.populate import populate_demo
from archiver.simulator.records import Faults, Gate, SimStats
from archiver.simulator.server import Simulator, SimulatorServer

__all__ = [
    "CHUNK_SIZE",
    "Faults",
    "Gate",
    "SimStats",
    "Simulator",
    "SimulatorServer",
    "cadence",
    "main",
    "populate_demo",
]
