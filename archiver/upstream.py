"""The way back into Cloud 66: `backup-task create` and `import`, its two POSTs.

Arguments are checked before anything is sent (exit 2, nothing sent). Both need
a token with the `admin` scope: a refusal exits 4 with a line naming it. Cloud
66's `ok: false` exits 1 with its message. Nothing secret is ever printed: not
the token, not a URL's query (a pre-signed URL's signature is a key to the
backup).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from archiver.archive import open_archive
from archiver.cloud66.budget import RequestBudget
from archiver.cloud66.client import Cloud66Client, PostAnswer
from archiver.config import DB_TYPES, Settings, check_cron, check_stack_uid
from archiver.errors import EXIT_OK, EXIT_PARTIAL, AuthError, ConfigError
from archiver.import_staging import stage_plaintext
from archiver.keys import identities_for
from archiver.layout import ENCRYPTED_SUFFIX
from archiver.log import add_secret, redact
from archiver.manifest import Manifest
from archiver.restore import find_backup

# SigV4 pre-signed URLs live at most 7 days.
MAX_URL_LIFETIME = timedelta(days=7)


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
    _check(lambda: check_stack_uid(stack_uid), "--stack")
    types = [item.strip() for item in db_types.split(",")]
    if db_types.strip() != "all" and not all(item in DB_TYPES for item in types):
        raise ConfigError(f"--db-type {db_types!r}: a comma list of {', '.join(DB_TYPES)}, or all")
    if frequency is not None:
        _check(lambda: check_cron(frequency), "--frequency")
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
    async with _client(settings, token) as client:
        answer = await _admin_call(client.create_backup_task(task.stack_uid, task.params()))
    return _report(answer, f"backup task for {task.db_types} on stack {task.stack_uid}")


async def run_import(
    settings: Settings, token: str, *, stack_uid: str, db_type: str, group: int,
    url: str | None, backup_id: int | None, expires: timedelta, identity: Path | None = None,
) -> int:
    """Ask Cloud 66 to fetch a backup from `url`, or from the archive's copy of `backup_id`."""
    _check(lambda: check_stack_uid(stack_uid), "--stack")
    if db_type not in DB_TYPES:
        raise ConfigError(f"--db-type {db_type!r}: one of {', '.join(DB_TYPES)}")
    if group < 0:
        raise ConfigError("--group must be a group id (0 or more)")
    if url is not None:
        if not url.startswith(("https://", "http://")):
            raise ConfigError("--url must be an http(s) URL Cloud 66 can reach")
        remote_url, what = url, "the given URL"
    else:
        assert backup_id is not None  # the CLI requires exactly one of --url and --backup
        remote_url, what = await _archived_copy_url(settings, backup_id, expires, identity)
    add_secret(remote_url)  # a pre-signed URL is a key: never in a log line
    async with _client(settings, token) as client:
        call = client.import_backup(stack_uid, group=group, db_type=db_type, remote_url=remote_url)
        answer = await _admin_call(call)
    return _report(answer, f"import of {what} into {db_type} group {group} of {stack_uid}")


async def _archived_copy_url(
    settings: Settings, backup_id: int, expires: timedelta, identity: Path | None
) -> tuple[str, str]:
    """A URL Cloud 66 can fetch the archived backup from: S3 only (pre-signed).

    An encrypted backup is first decrypted into a staging copy (see
    `archiver.import_staging`), which a pass removes once the URL expired.
    """
    if not timedelta(minutes=1) <= expires <= MAX_URL_LIFETIME:
        raise ConfigError("--expires must be between 1m and 7d (S3 pre-signed URLs' limit)")
    async with open_archive(settings, lock=False) as archive:
        record = find_backup(archive.state.archived(), backup_id, None)
        storage = archive.storage
        probe = await storage.shareable_url(record.tar_key, expires)
        key = record.tar_key
        if probe is not None and record.tar_key.endswith(ENCRYPTED_SUFFIX):
            manifest = Manifest.from_json(await storage.read_small(record.manifest_key))
            identities = identities_for(settings, identity)
            key = await stage_plaintext(storage, record, manifest, identities, expires)
        url = await storage.shareable_url(key, expires)
    if url is None:
        raise ConfigError(
            f"storage type {settings.storage.type!r} has no URL Cloud 66 can fetch from: "
            f"restore it (`c66-archiver restore {backup_id} -o FILE`), put FILE where Cloud 66 "
            "can download it over HTTPS, then `c66-archiver import --url URL`"
        )
    until = (datetime.now(UTC) + expires).strftime("%Y-%m-%d %H:%M UTC")
    return url, f"archived backup {backup_id} (its URL valid until {until})"


def _client(settings: Settings, token: str) -> Cloud66Client:
    budget = RequestBudget(settings.api.requests_per_hour)
    return Cloud66Client(settings.api, token, budget=budget)


async def _admin_call(call: Any) -> PostAnswer:
    try:
        answer: PostAnswer = await call
    except AuthError as error:
        raise AuthError(
            f"{error}: creating backup tasks and imports needs a token with the admin scope",
            status=error.status,
        ) from None
    return answer


def _report(answer: PostAnswer, what: str) -> int:
    if answer.ok:
        click.echo(f"Cloud 66 accepted the {what}: {answer.message or 'ok'}")
        return EXIT_OK
    click.echo(redact(f"Cloud 66 did not accept the {what}: {answer.message}"), err=True)
    return EXIT_PARTIAL


def _check(check: Any, option: str) -> None:
    try:
        check()
    except ValueError as error:
        raise ConfigError(f"{option}: {error}") from None
