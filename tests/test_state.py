"""The state store: durable records, the instance lock, and the rebuild from manifests."""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import structlog

from archiver.core.errors import EXIT_LOCKED, ArchiverError, LockHeld, exit_code_for
from archiver.lifecycle.rebuild import rebuild_from_storage
from archiver.model.layout import backup_keys
from archiver.model.manifest import ArchivedBackup, Manifest, PartRecord
from archiver.state.records import RunRecord
from archiver.state.store import StateStore
from archiver.storage.local import LocalStorage
from tests.storage_conformance import sha256_hex, write_upload

REPO_ROOT = Path(__file__).resolve().parents[1]


def archived_record(
    backup_id: int, *, stack_uid: str = "stack", **changes: object
) -> ArchivedBackup:
    """A plausible record whose every field is derived from its id."""
    fields: dict[str, object] = {
        "stack_uid": stack_uid,
        "backup_id": backup_id,
        "db_type": "mysql",
        "database_name": f"db{backup_id}",
        "size": backup_id * 10,
        "sha256": f"{backup_id:064x}",
        "archived_at": "2024-05-01T03:15:00Z",
        "tar_key": f"{stack_uid}/{backup_id}/db.tar",
        "manifest_key": f"{stack_uid}/{backup_id}/manifest.json",
        "backup_date": f"2024-05-{backup_id % 28 + 1:02d}T00:00:00Z",
    }
    fields.update(changes)
    return ArchivedBackup(**fields)  # type: ignore[arg-type]


@pytest.fixture
def state(tmp_path: Path) -> Iterator[StateStore]:
    """A fresh state in a folder."""
    store = StateStore.open(tmp_path / "state")
    yield store
    store.close()


def run_python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter that can import the archiver package."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def mode_of(path: Path) -> int:
    """Permission bits of `path`."""
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("umask", [0o000, 0o077])
def test_open_creates_a_private_folder_and_files(tmp_path: Path, umask: int) -> None:
    """The state folder is 0700 and the database, its WAL and the lock file are 0600."""
    previous = os.umask(umask)
    try:
        store = StateStore.open(tmp_path / "var" / "state")
        store.lock.acquire()
        store.archived.record(archived_record(1))
    finally:
        os.umask(previous)
    try:
        assert store.path == tmp_path / "var" / "state" / "state.sqlite3"
        assert mode_of(tmp_path / "var") == 0o700
        assert mode_of(tmp_path / "var" / "state") == 0o700
        for name in ("state.sqlite3", "state.sqlite3-wal", "state.sqlite3.lock"):
            assert mode_of(tmp_path / "var" / "state" / name) == 0o600
    finally:
        store.close()


def test_a_path_with_a_suffix_is_the_database_file(tmp_path: Path) -> None:
    """`state.db` is the file itself; an existing folder, even with a dot, holds the file."""
    store = StateStore.open(tmp_path / "sub" / "archiver.db")
    store.close()
    assert store.path == tmp_path / "sub" / "archiver.db"
    (tmp_path / "state.d").mkdir()
    store = StateStore.open(tmp_path / "state.d")
    store.close()
    assert store.path == tmp_path / "state.d" / "state.sqlite3"


def test_created_is_true_only_for_a_new_database(tmp_path: Path) -> None:
    """`created` tells the caller to rebuild from manifests, once."""
    first = StateStore.open(tmp_path)
    first.close()
    second = StateStore.open(tmp_path)
    second.close()
    assert (first.created, second.created) == (True, False)


def test_a_corrupt_database_is_a_clear_error(tmp_path: Path) -> None:
    """Garbage in the database file raises ArchiverError naming the file."""
    (tmp_path / "state.sqlite3").write_bytes(b"not a database at all " * 200)
    with pytest.raises(ArchiverError, match=r"state database .*state\.sqlite3 is unreadable"):
        StateStore.open(tmp_path)


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    """A database from a newer program is not touched."""
    StateStore.open(tmp_path).close()
    with sqlite3.connect(tmp_path / "state.sqlite3") as connection:
        connection.execute("PRAGMA user_version = 99")
    with pytest.raises(ArchiverError, match="newer than this program"):
        StateStore.open(tmp_path)


def test_records_round_trip_in_order(state: StateStore) -> None:
    """record_archived upserts; archived() orders by stack, date, id; forget removes."""
    state.archived.record(archived_record(3, backup_date="2024-01-02T00:00:00Z"))
    state.archived.record(archived_record(9, backup_date="2024-01-01T00:00:00Z"))
    state.archived.record(archived_record(1, stack_uid="another"))
    state.archived.record(archived_record(3, backup_date="2024-01-02T00:00:00Z", size=777))
    assert [(r.stack_uid, r.backup_id) for r in state.archived.all()] == [
        ("another", 1),
        ("stack", 9),
        ("stack", 3),
    ]
    third = archived_record(3, backup_date="2024-01-02T00:00:00Z", size=777)
    assert state.archived.all()[2] == third
    assert state.archived.contains("stack", 9)
    assert not state.archived.contains("stack", 1)
    assert state.archived.ids("stack") == {3, 9}
    state.archived.forget("stack", 9, "default")
    assert state.archived.ids("stack") == {3}


def test_records_survive_reopening(tmp_path: Path) -> None:
    """What was recorded is there after closing and opening again."""
    store = StateStore.open(tmp_path)
    store.archived.record(archived_record(5, backup_date=None))
    store.close()
    store = StateStore.open(tmp_path)
    try:
        assert store.archived.all() == [archived_record(5, backup_date=None)]
    finally:
        store.close()


def test_note_skipped_is_true_only_the_first_time(state: StateStore) -> None:
    """A failed backup is reported once; archiving it clears the note."""
    assert state.runs.note_skipped("stack", 7, "status failed")
    assert not state.runs.note_skipped("stack", 7, "status failed")
    assert state.runs.note_skipped("stack", 8, "status unknown")
    state.archived.record(archived_record(7))
    assert state.runs.note_skipped("stack", 7, "failed again")


def test_runs_and_successes_round_trip(state: StateStore) -> None:
    """last_run is the newest pass; last_success_at is the newest good one."""
    assert state.runs.last() is None
    assert state.runs.last_success_at() is None
    good = RunRecord("2024-05-01T03:00:00Z", "2024-05-01T03:05:00Z", True, 2, 0, [], 1234)
    failed = [{"stack_uid": "stack", "backup_id": 7, "reason": "no space left"}]
    bad = RunRecord("2024-05-01T04:00:00Z", "2024-05-01T04:01:00Z", False, 0, 1, failed, 0)
    state.runs.record(good)
    state.runs.record(bad)
    assert state.runs.last() == bad
    assert state.runs.last_success_at() == datetime(2024, 5, 1, 3, 5, tzinfo=UTC)
    assert state.runs.last_success_at("stack") is None
    state.runs.record_stack_success("stack", datetime(2024, 5, 1, 4, 1, tzinfo=UTC))
    assert state.runs.last_success_at("stack") == datetime(2024, 5, 1, 4, 1, tzinfo=UTC)


def test_api_request_times_round_trip_and_prune(tmp_path: Path) -> None:
    """Request times survive a restart and can be pruned."""
    store = StateStore.open(tmp_path)
    for at in (10.0, 20.5, 30.0):
        store.api_requests.add(at)
    store.close()
    store = StateStore.open(tmp_path)
    try:
        assert store.api_requests.since(since=15.0) == [20.5, 30.0]
        store.api_requests.forget_before(before=25.0)
        assert store.api_requests.since(since=0.0) == [30.0]
    finally:
        store.close()


def test_a_second_holder_of_the_lock_gets_lock_held(tmp_path: Path) -> None:
    """Within one process a second store cannot take the lock; exit code 3."""
    first = StateStore.open(tmp_path)
    second = StateStore.open(tmp_path)
    try:
        first.lock.acquire()
        first.lock.acquire()  # taking it again is harmless
        with pytest.raises(LockHeld, match=f"pid {os.getpid()}") as caught:
            second.lock.acquire()
        assert exit_code_for(caught.value) == EXIT_LOCKED == 3
        first.lock.release()
        second.lock.acquire()
    finally:
        first.close()
        second.close()


LOCK_SCRIPT = """
import sys
from pathlib import Path
from archiver.core.errors import LockHeld, exit_code_for
from archiver.state.store import StateStore
state = StateStore.open(Path(sys.argv[1]))
try:
    state.lock.acquire()
except LockHeld as error:
    print(error, file=sys.stderr)
    sys.exit(exit_code_for(error))
state.close()
"""


def test_a_second_process_is_refused_the_lock(tmp_path: Path) -> None:
    """Another process exits 3 naming our pid while we hold the lock, and 0 once we release."""
    store = StateStore.open(tmp_path)
    store.lock.acquire()
    try:
        refused = run_python(LOCK_SCRIPT, str(tmp_path))
        assert refused.returncode == 3, refused.stderr
        assert "another c66-archiver instance holds the state lock" in refused.stderr
        assert f"(pid {os.getpid()})" in refused.stderr
        store.lock.release()
        allowed = run_python(LOCK_SCRIPT, str(tmp_path))
        assert allowed.returncode == 0, allowed.stderr
    finally:
        store.close()


WRITER_SCRIPT = """
import sys
from pathlib import Path
from archiver.state.store import StateStore
from tests.test_state import archived_record
state = StateStore.open(Path(sys.argv[1]))
for backup_id in range(1_000_000):
    state.archived.record(archived_record(backup_id))
    if backup_id == 100:
        print("writing", flush=True)
"""


def test_kill_9_during_writes_leaves_a_consistent_database(tmp_path: Path) -> None:
    """After SIGKILL mid-write the DB opens, passes integrity_check, and holds whole records."""
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER_SCRIPT, str(tmp_path)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "writing"
        os.kill(writer.pid, signal.SIGKILL)
    finally:
        writer.wait(timeout=30)
    assert writer.returncode == -signal.SIGKILL
    store = StateStore.open(tmp_path)
    try:
        records = store.archived.all()
        ids = sorted(record.backup_id for record in records)
        assert len(ids) > 100
        # Transactions are serial: every committed record is there, with no gaps.
        assert ids == list(range(len(ids)))
        assert all(record == archived_record(record.backup_id) for record in records)
    finally:
        store.close()
    with sqlite3.connect(tmp_path / "state.sqlite3") as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def statements_of(store: StateStore, action: object) -> list[str]:
    """The SQL statements `action()` runs on the store's connection."""
    seen: list[str] = []
    connection = store.database._connection  # the only way to watch what SQLite runs
    connection.set_trace_callback(seen.append)
    try:
        action()  # type: ignore[operator]
    finally:
        connection.set_trace_callback(None)
    return seen


def test_recording_costs_the_same_however_big_the_state(state: StateStore) -> None:
    """record_archived runs a fixed set of statements, and lookups use the primary key."""
    small = statements_of(state, lambda: state.archived.record(archived_record(1)))
    with state.database.transaction() as cursor:  # bulk fill: one fsync instead of 20,000
        for backup_id in range(2, 20_000):
            record = archived_record(backup_id)
            cursor.execute(
                "INSERT INTO archived VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (record.stack_uid, backup_id, record.db_type, record.database_name, record.size,
                 record.sha256, record.archived_at, record.backup_date),
            )
            cursor.execute(
                "INSERT INTO copies VALUES (?, ?, ?, ?, ?, ?, NULL)",
                (record.stack_uid, backup_id, record.storage, record.tar_key,
                 record.manifest_key, record.archived_at),
            )
    big = statements_of(state, lambda: state.archived.record(archived_record(20_001)))
    # BEGIN, upsert the backup and the copy, end the transfer and the commit records, clear
    # the skip note, COMMIT
    assert len(small) == len(big) == 7
    connection = state.database._connection
    for query in (
        "SELECT 1 FROM copies WHERE stack_uid = 'stack' AND backup_id = 5",
        "SELECT DISTINCT backup_id FROM copies WHERE stack_uid = 'stack'",
        "SELECT backup_id, storage FROM copies WHERE stack_uid = 'stack'",
        "DELETE FROM skipped WHERE stack_uid = 'stack' AND backup_id = 5",
        "DELETE FROM commits WHERE stack_uid = 'stack' AND backup_id = 5",
    ):
        plan = " ".join(row[-1] for row in connection.execute(f"EXPLAIN QUERY PLAN {query}"))
        assert plan.startswith("SEARCH"), plan


async def write_backup(storage: LocalStorage, backup_id: int, *, with_tar: bool = True) -> str:
    """Archive a fake backup (tar and manifest) as sync would; return its manifest key."""
    when = datetime(2024, 5, backup_id, 3, 15, tzinfo=UTC)
    keys = backup_keys(
        stack_uid="stack",
        db_type="mysql",
        database_name="shop",
        backup_date=when,
        backup_id=backup_id,
    )
    data = f"backup {backup_id}".encode()
    if with_tar:
        upload = await storage.start_upload(keys.tar)
        await write_upload(upload, data)
        await upload.commit(size=len(data), sha256=sha256_hex(data))
    part = PartRecord(id="1", name="shop.tar", size=len(data), sha256=sha256_hex(data), etag=None)
    manifest = Manifest(
        stack_uid="stack",
        backup_id=backup_id,
        db_type="mysql",
        database_name="shop",
        backup_date=when.isoformat(),
        size=len(data),
        sha256=sha256_hex(data),
        parts=[part],
        archived_at="2024-05-20T00:00:00Z",
        file="shop.tar",
    )
    await storage.write_small(keys.manifest, manifest.to_json())
    return keys.manifest


async def test_rebuild_records_only_manifests_with_their_tar(tmp_path: Path) -> None:
    """Good manifests are recorded; corrupt ones and ones without a tar are skipped and logged."""
    storage = LocalStorage(tmp_path / "archive")
    state = StateStore.open(tmp_path / "state")
    try:
        good = await write_backup(storage, 1)
        await write_backup(storage, 2, with_tar=False)
        corrupt = await write_backup(storage, 3)
        await storage.write_small(corrupt, b'{"stack_uid": "stack", "truncated')
        await storage.write_small("stack/notes.txt", b"not a manifest")
        with structlog.testing.capture_logs() as logs:
            assert await rebuild_from_storage(state, storage, "near", "local:archive") == 1
        [record] = state.archived.all()
        assert (record.backup_id, record.manifest_key) == (1, good)
        assert record.tar_key == good.replace("manifest.json", "shop.tar")
        assert record.storage == "near"
        warnings = sorted(entry["event"] for entry in logs if entry["log_level"] == "warning")
        assert warnings == [
            "manifest without its archive; the backup counts as not archived there",
            "unreadable manifest; its backup counts as not archived there",
        ]
    finally:
        state.close()
        await storage.aclose()


def test_many_processes_opening_a_new_state_at_once_all_succeed(tmp_path: Path) -> None:
    """A daemon creating the state while `status` opens it: one migrates, the others wait."""
    import threading

    from archiver.state.schema import MIGRATIONS

    barrier = threading.Barrier(8)
    errors: list[BaseException] = []
    stores: list[StateStore] = []

    def open_it() -> None:
        barrier.wait()
        try:
            stores.append(StateStore.open(tmp_path / "state"))
        except BaseException as error:  # collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=open_it) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        assert len(stores) == 8
        version = stores[0].database.query("PRAGMA user_version")[0][0]
        assert version == len(MIGRATIONS)
        stores[0].archived.record(archived_record(1))
        assert all(store.archived.count() == 1 for store in stores)
    finally:
        for store in stores:
            store.close()
