"""`c66-archiver backup-task create`: ask Cloud 66 to run managed backups of a stack.

Arguments are checked before anything is sent (exit 2, nothing sent). The POST
needs a token with the `admin` scope (see `archiver.commands.admin_posts`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from archiver.commands.admin_posts import admin_call, check_argument, report
from archiver.config.settings import (
    DB_TYPES,
    Settings,
    check_cron,
    check_stack_uid,
    expand_cron_alias,
)
from archiver.core.errors import ConfigError
from archiver.sync.api_client import api_client


@dataclass(frozen=True)
class BackupTask:
    """The parameters of a backup task, checked."""

    stack_uid: str
    db_types: str  # "all" or a comma list
    frequency: str | None = None
    keep_count: int | None = None
    gzip: bool | None = None
    excluded_tables: str | None = None
    run_on_replica: bool | None = None

    def params(self) -> dict[str, Any]:
        """The POST's body: only what was given, so Cloud 66's defaults apply to the rest."""
        values = {
            "db_type": self.db_types, "frequency": self.frequency, "keep_count": self.keep_count,
            "gzip": self.gzip, "excluded_tables": self.excluded_tables,
            "run_on_replica_server": self.run_on_replica,
        }
        return {name: value for name, value in values.items() if value is not None}


def checked_task(
    stack_uid: str, db_types: str, frequency: str | None, keep_count: int | None,
    gzip: bool | None, excluded_tables: str | None, run_on_replica: bool | None,
) -> BackupTask:
    """A BackupTask, or a ConfigError (exit 2) naming the argument that is wrong."""
    check_argument(lambda: check_stack_uid(stack_uid), "--stack")
    types = [item.strip() for item in db_types.split(",")]
    if db_types.strip() != "all" and not all(item in DB_TYPES for item in types):
        raise ConfigError(f"--db-type {db_types!r}: a comma list of {', '.join(DB_TYPES)}, or all")
    if frequency is not None:
        frequency = expand_cron_alias(frequency)  # Cloud 66 gets five fields, not @daily
        check_argument(lambda: check_cron(frequency), "--frequency")
    if keep_count is not None and keep_count < 1:
        raise ConfigError("--keep-count must be at least 1")
    tables = None
    if excluded_tables is not None:
        names = [name.strip() for name in excluded_tables.split(",")]
        if not all(names):
            raise ConfigError(f"--excluded-tables {excluded_tables!r}: a comma list of names")
        tables = ",".join(names)
    joined = "all" if db_types.strip() == "all" else ",".join(types)
    return BackupTask(stack_uid, joined, frequency, keep_count, gzip, tables, run_on_replica)


async def run_backup_task_create(settings: Settings, token: str, task: BackupTask) -> int:
    """Send the task; exit 0 when Cloud 66 accepted it, 1 when it said not ok."""
    async with api_client(settings, token) as client:
        answer = await admin_call(client.create_backup_task(task.stack_uid, task.params()))
    return report(answer, f"backup task for {task.db_types} on stack {task.stack_uid}")
