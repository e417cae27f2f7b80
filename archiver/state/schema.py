"""The state's schema, one migration per version; `PRAGMA user_version` says how many ran.

Only ever append: a database written by an older version is brought up to date
when it is opened; one from a newer version is refused.
"""

from __future__ import annotations

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE archived (
        stack_uid TEXT NOT NULL,
        backup_id INTEGER NOT NULL,
        db_type TEXT NOT NULL,
        database_name TEXT NOT NULL,
        size INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        location TEXT NOT NULL,
        archived_at TEXT NOT NULL,
        tar_key TEXT NOT NULL,
        manifest_key TEXT NOT NULL,
        backup_date TEXT,
        PRIMARY KEY (stack_uid, backup_id)
    );
    CREATE TABLE skipped (
        stack_uid TEXT NOT NULL,
        backup_id INTEGER NOT NULL,
        reason TEXT NOT NULL,
        PRIMARY KEY (stack_uid, backup_id)
    );
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        started_at TEXT NOT NULL,
        finished_at TEXT NOT NULL,
        ok INTEGER NOT NULL,
        archived INTEGER NOT NULL,
        skipped INTEGER NOT NULL,
        failed TEXT NOT NULL,
        bytes INTEGER NOT NULL
    );
    CREATE TABLE stack_success (stack_uid TEXT PRIMARY KEY, at TEXT NOT NULL);
    CREATE TABLE api_requests (at REAL NOT NULL);
    CREATE INDEX api_requests_at ON api_requests (at);
    """,
    # Retention and verify: what was pruned (never downloaded again), what was checked.
    """
    CREATE TABLE pruned (
        stack_uid TEXT NOT NULL,
        backup_id INTEGER NOT NULL,
        db_type TEXT NOT NULL,
        database_name TEXT NOT NULL,
        backup_date TEXT,
        tar_key TEXT NOT NULL,
        manifest_key TEXT NOT NULL,
        pruned_at TEXT NOT NULL,
        complete INTEGER NOT NULL,
        PRIMARY KEY (stack_uid, backup_id)
    );
    CREATE TABLE verified (
        stack_uid TEXT NOT NULL,
        backup_id INTEGER NOT NULL,
        verified_at TEXT NOT NULL,
        ok INTEGER NOT NULL,
        problem TEXT,
        deep INTEGER NOT NULL,
        PRIMARY KEY (stack_uid, backup_id)
    );
    CREATE TABLE verify_runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        finished_at TEXT NOT NULL,
        checked INTEGER NOT NULL,
        failed INTEGER NOT NULL
    );
    """,
    # Transfers under way: what a later pass needs to resume one (its parts so far).
    """
    CREATE TABLE transfers (
        stack_uid TEXT NOT NULL,
        backup_id INTEGER NOT NULL,
        tar_key TEXT NOT NULL,
        started_at TEXT NOT NULL,
        parts TEXT NOT NULL,
        PRIMARY KEY (stack_uid, backup_id)
    );
    """,
    # Commits under way: data about to reach (or at) its final name, its manifest not yet.
    """
    CREATE TABLE commits (
        stack_uid TEXT NOT NULL,
        backup_id INTEGER NOT NULL,
        tar_key TEXT NOT NULL,
        manifest_key TEXT NOT NULL,
        manifest TEXT NOT NULL,
        PRIMARY KEY (stack_uid, backup_id)
    );
    """,
    # The watch over Cloud 66: good backups seen listed (for missed and cadence), each
    # series' judged facts (for metrics), findings, what each channel still has to be
    # told, and the stacks' names (read from GET /stacks at most once a day).
    """
    CREATE TABLE watch_seen (
        stack_uid TEXT NOT NULL,
        backup_id INTEGER NOT NULL,
        db_type TEXT NOT NULL,
        database_name TEXT NOT NULL,
        backup_date TEXT,
        listing TEXT NOT NULL,
        gone INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (stack_uid, backup_id)
    );
    CREATE TABLE watch_series (
        stack_uid TEXT NOT NULL,
        db_type TEXT NOT NULL,
        database_name TEXT NOT NULL,
        newest_backup_id INTEGER,
        newest_backup_date TEXT,
        late_after_seconds REAL,
        late INTEGER NOT NULL,
        upstream_failed INTEGER NOT NULL,
        last_size INTEGER,
        typical_size INTEGER,
        judged_at TEXT NOT NULL,
        PRIMARY KEY (stack_uid, db_type, database_name)
    );
    CREATE TABLE watch_findings (
        kind TEXT NOT NULL,
        identity TEXT NOT NULL,
        stack_uid TEXT NOT NULL,
        backup_id INTEGER,
        details TEXT NOT NULL,
        noticed_at TEXT NOT NULL,
        acknowledged_at TEXT,
        PRIMARY KEY (kind, identity)
    );
    CREATE TABLE watch_outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        channel TEXT NOT NULL,
        kind TEXT NOT NULL,
        identity TEXT NOT NULL,
        event TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE stack_names (
        stack_uid TEXT PRIMARY KEY,
        name TEXT,
        environment TEXT
    );
    CREATE TABLE stack_names_read (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        at TEXT NOT NULL
    );
    """,
    # Several destinations (issue 19): each backup's copies, one row per destination holding
    # it, with keys relative to that destination's root (locations are computed when read,
    # so a moved archive is named where it is now); prunes, checks and unfinished commits per
    # destination; the destinations the state has read. Rows from before belong to the
    # destination '' until the first open with a config hands them to it
    # (`archiver.lifecycle.destinations`).
    """
    CREATE TABLE copies (
        stack_uid TEXT NOT NULL,
        backup_id INTEGER NOT NULL,
        storage TEXT NOT NULL,
        tar_key TEXT NOT NULL,
        manifest_key TEXT NOT NULL,
        archived_at TEXT NOT NULL,
        locked_until TEXT,
        PRIMARY KEY (stack_uid, backup_id, storage)
    );
    INSERT INTO copies (stack_uid, backup_id, storage, tar_key, manifest_key, archived_at)
        SELECT stack_uid, backup_id, '', tar_key, manifest_key, archived_at FROM archived;
    CREATE TABLE legacy_location (location TEXT NOT NULL, tar_key TEXT NOT NULL);
    INSERT INTO legacy_location SELECT location, tar_key FROM archived LIMIT 1;
    CREATE TABLE archived_by_backup (
        stack_uid TEXT NOT NULL,
        backup_id INTEGER NOT NULL,
        db_type TEXT NOT NULL,
        database_name TEXT NOT NULL,
        size INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        archived_at TEXT NOT NULL,
        backup_date TEXT,
        PRIMARY KEY (stack_uid, backup_id)
    );
    INSERT INTO archived_by_backup SELECT stack_uid, backup_id, db_type, database_name, size,
        sha256, archived_at, backup_date FROM archived;
    DROP TABLE archived;
    ALTER TABLE archived_by_backup RENAME TO archived;
    CREATE TABLE pruned_by_storage (
        stack_uid TEXT NOT NULL,
        backup_id INTEGER NOT NULL,
        storage TEXT NOT NULL,
        db_type TEXT NOT NULL,
        database_name TEXT NOT NULL,
        backup_date TEXT,
        tar_key TEXT NOT NULL,
        manifest_key TEXT NOT NULL,
        pruned_at TEXT NOT NULL,
        complete INTEGER NOT NULL,
        PRIMARY KEY (stack_uid, backup_id, storage)
    );
    INSERT INTO pruned_by_storage SELECT stack_uid, backup_id, '', db_type, database_name,
        backup_date, tar_key, manifest_key, pruned_at, complete FROM pruned;
    DROP TABLE pruned;
    ALTER TABLE pruned_by_storage RENAME TO pruned;
    CREATE TABLE verified_by_storage (
        stack_uid TEXT NOT NULL,
        backup_id INTEGER NOT NULL,
        storage TEXT NOT NULL,
        verified_at TEXT NOT NULL,
        ok INTEGER NOT NULL,
        problem TEXT,
        deep INTEGER NOT NULL,
        PRIMARY KEY (stack_uid, backup_id, storage)
    );
    INSERT INTO verified_by_storage SELECT stack_uid, backup_id, '', verified_at, ok, problem,
        deep FROM verified;
    DROP TABLE verified;
    ALTER TABLE verified_by_storage RENAME TO verified;
    CREATE TABLE commits_by_storage (
        stack_uid TEXT NOT NULL,
        backup_id INTEGER NOT NULL,
        storage TEXT NOT NULL,
        tar_key TEXT NOT NULL,
        manifest_key TEXT NOT NULL,
        manifest TEXT NOT NULL,
        PRIMARY KEY (stack_uid, backup_id, storage)
    );
    INSERT INTO commits_by_storage SELECT stack_uid, backup_id, '', tar_key, manifest_key,
        manifest FROM commits;
    DROP TABLE commits;
    ALTER TABLE commits_by_storage RENAME TO commits;
    CREATE TABLE destinations (name TEXT PRIMARY KEY, scanned_at TEXT NOT NULL);
    """,
    # Where each destination was when the state read it (`config.storage.place_of`): a
    # destination whose place changed is read again from where it is now. NULL: read before
    # places were remembered; taken as where it is now (`archiver.lifecycle.destinations`).
    """
    ALTER TABLE destinations ADD COLUMN place TEXT;
    """,
)
