"""Staging copies for Cloud 66 imports: removed by the first pass after their URL expired, and
left alone by a pass's cleanup while they are being written."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from archiver.lifecycle.import_staging import MARKER, STAGING_FOLDER, remove_expired_staging
from archiver.storage.base import PROBE_PREFIX, removable_leftover
from archiver.storage.local import LocalStorage
from tests.storage_conformance import keys_of


async def _staged(storage: LocalStorage, name: str, expires_at: datetime | str) -> None:
    folder = f"{STAGING_FOLDER}/{name}"
    when = expires_at if isinstance(expires_at, str) else expires_at.isoformat()
    await storage.write_small(f"{folder}/{MARKER}", json.dumps({"expires_at": when}).encode())
    await storage.write_small(f"{folder}/shop.tar", b"plaintext")


async def test_only_expired_or_unreadable_staging_folders_go(tmp_path: Path) -> None:
    """Expired: removed whole. Still valid: kept. Unreadable marker: removed (plaintext)."""
    storage = LocalStorage(tmp_path / "archive")
    now = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    await _staged(storage, "old", now - timedelta(minutes=1))
    await _staged(storage, "fresh", now + timedelta(hours=2))
    await _staged(storage, "garbled", "next tuesday")
    await storage.write_small("stack/mysql/db/2026_1/manifest.json", b"{}")
    try:
        assert await remove_expired_staging(storage, now) == 2
        assert await keys_of(storage) == [
            f"{STAGING_FOLDER}/fresh/{MARKER}",
            f"{STAGING_FOLDER}/fresh/shop.tar",
            "stack/mysql/db/2026_1/manifest.json",
        ]
    finally:
        await storage.aclose()


async def test_no_staging_folder_is_nothing_to_do(tmp_path: Path) -> None:
    """An archive that never staged anything: zero removed, nothing touched, no error."""
    storage = LocalStorage(tmp_path / "archive")
    await storage.write_small("a/manifest.json", b"{}")
    try:
        assert await remove_expired_staging(storage) == 0
        assert await keys_of(storage) == ["a/manifest.json"]
    finally:
        await storage.aclose()


def test_another_process_s_unfinished_upload_is_a_leftover_only_once_idle() -> None:
    """Staging and probe names are kept until unwritten for `idle_for` (an unknown age keeps
    them); a backup's leftover, or a staging name below the root, goes at once."""
    now = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    hour = timedelta(hours=1)
    staging = f"{STAGING_FOLDER}/0a1b/shop.tar.part"
    just_written = now - hour + timedelta(seconds=1)
    assert not removable_leftover(staging, just_written, idle_for=hour, now=now)
    assert removable_leftover(staging, now - hour, idle_for=hour, now=now)
    assert not removable_leftover(f"{PROBE_PREFIX}00ff.1a2b.part", None, idle_for=hour, now=now)
    assert removable_leftover("s/mysql/db/2026_1/db.tar.part", now, idle_for=hour, now=now)
    assert removable_leftover(f"s/{STAGING_FOLDER}/db.tar.part", now, idle_for=hour, now=now)
