"""The state: what is archived, pruned, under way and checked, and how passes went.

One SQLite file (`archiver.state.database`), read and written through one
table object per job; the instance and pass locks beside it (`archiver.state.lock`).
The manifests in storage remain the source of truth: a missing or new state
is rebuilt from them (`archiver.lifecycle.rebuild`). Persistence only: this
package reads no storage.
"""

from __future__ import annotations

import os
from pathlib import Path

from archiver.core.errors import ArchiverError
from archiver.state.api_requests import RequestLog
from archiver.state.archived import ArchivedBackups
from archiver.state.commits import PendingCommits
from archiver.state.database import Database, state_db_path
from archiver.state.destinations import DestinationRecords
from archiver.state.findings import Findings
from archiver.state.lock import InstanceLock, PassLock
from archiver.state.runs import PassHistory
from archiver.state.seen import SeenBackups
from archiver.state.series_facts import WatchSeries
from archiver.state.stack_names import StackNames
from archiver.state.tombstones import PrunedBackups
from archiver.state.transfers import Transfers
from archiver.state.verifications import Verifications


class StateStore:
    """The state's tables over one database, and its locks (see `archiver.state.lock`)."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.archived = ArchivedBackups(database)
        self.pruned = PrunedBackups(database)
        self.transfers = Transfers(database)
        self.commits = PendingCommits(database)
        self.verifications = Verifications(database)
        self.runs = PassHistory(database)
        self.api_requests = RequestLog(database)
        self.destinations = DestinationRecords(database)
        # The watch over Cloud 66: backups seen listed, judged series, findings, names.
        self.seen = SeenBackups(database)
        self.series = WatchSeries(database)
        self.findings = Findings(database)
        self.stack_names = StackNames(database)
        self.lock = InstanceLock(database.path.with_name(database.path.name + ".lock"))
        self.pass_lock = PassLock(database.path.with_name(database.path.name + ".pass.lock"))

    @classmethod
    def open(cls, path: Path) -> StateStore:
        """Open (creating if needed) the state at `path`; see `state_db_path`."""
        return cls(Database.open(state_db_path(path)))

    @classmethod
    def open_existing(cls, path: Path) -> StateStore | None:
        """The state at `path` if it exists, else None: creates nothing (for readers)."""
        try:
            db_path = state_db_path(path)
            if not db_path.is_file():
                return None
            if not os.access(db_path, os.R_OK | os.W_OK):
                raise PermissionError
        except PermissionError:
            raise ArchiverError(
                f"state {path} cannot be read: permission denied "
                "(run as the user the archiver runs as)"
            ) from None
        return cls(Database.open(db_path))

    @classmethod
    def empty(cls) -> StateStore:
        """A state with nothing in it, in memory: what readers see before the first pass."""
        return cls(Database.in_memory())

    @property
    def path(self) -> Path:
        """The database file."""
        return self.database.path

    @property
    def created(self) -> bool:
        """True when this open created the database (so it is rebuilt from storage)."""
        return self.database.created

    def close(self) -> None:
        """Release the locks and close the database."""
        self.pass_lock.release()
        self.lock.release()
        self.database.close()
