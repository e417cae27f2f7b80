"""The commands about Cloud 66's side: `import` (a backup into a stack), `backup-task create`
and `watch ack` (a missed backup of the watch over Cloud 66)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import click

from archiver.cli.base import CONTEXT, Commands, Setup, fail, identity_option, run
from archiver.config.settings import DB_TYPES, parse_duration
from archiver.core.errors import ArchiverError, exit_code_for


def _parse_expires(
    _ctx: click.Context, _param: click.Parameter, value: str
) -> timedelta:
    try:
        return parse_duration(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


@click.command("import", context_settings=CONTEXT)
@click.option("--stack", "stack_uid", required=True, metavar="UID", help="The stack.")
@click.option(
    "--db-type", required=True, type=click.Choice(DB_TYPES), help="The database type of the backup."
)
@click.option("--group", required=True, type=int, metavar="N", help="The backup group.")
@click.option("--url", metavar="URL", help="Where Cloud 66 downloads the backup (https).")
@click.option(
    "--backup", "backup_id", type=int, metavar="ID",
    help="An archived backup: Cloud 66 gets a pre-signed URL of its copy (S3 storage only).",
)
@click.option(
    "--expires", default="24h", show_default=True, callback=_parse_expires, metavar="DURATION",
    help="How long the pre-signed URL of --backup stays valid (at most 7d).",
)
@identity_option("For an encrypted archive: the key that decrypts a staging copy for Cloud 66.")
@click.pass_obj
def import_(
    setup: Setup, stack_uid: str, db_type: str, group: int, url: str | None,
    backup_id: int | None, expires: timedelta, identity: Path | None,
) -> None:
    """Have Cloud 66 import a backup from a URL: yours, or the archive's own copy.

    Cloud 66 downloads the tar from --url, or, with --backup ID, from a
    pre-signed URL of the archived copy in your S3 bucket (valid for --expires;
    local and SFTP storage cannot give one: restore the file and serve it
    yourself). Needs a token with the admin scope (exit 4 without). Exit 0 when
    Cloud 66 accepted, 1 when it answered not ok, 2 for bad arguments (nothing
    sent). No URL query or signature is ever printed.

    \b
    Examples:
      c66-archiver import --stack UID --db-type mysql --group 5 --backup 4711
      c66-archiver import --stack UID --db-type redis --group 2 --url https://host/redis.tar
    """
    from archiver.commands.import_backup import run_import

    if (url is None) == (backup_id is None):
        raise click.UsageError("give exactly one of --url and --backup")
    settings = setup.settings()
    token = setup.token(settings)
    run(
        lambda: run_import(
            settings, token, stack_uid=stack_uid, db_type=db_type, group=group, url=url,
            backup_id=backup_id, expires=expires, identity=identity,
        )
    )


@click.group("backup-task", cls=Commands, context_settings=CONTEXT)
def backup_task() -> None:
    """Manage Cloud 66 backup tasks (what makes the backups this tool archives)."""


@backup_task.command("create", context_settings=CONTEXT)
@click.option("--stack", "stack_uid", required=True, metavar="UID", help="The stack.")
@click.option(
    "--db-type", "db_types", required=True, metavar="LIST|all",
    help="Comma list of mysql, postgresql, redis, mongodb; or all.",
)
@click.option("--frequency", metavar="CRON", help='A cron line, e.g. "0 */4 * * *".')
@click.option("--keep-count", type=int, metavar="N", help="Backups Cloud 66 keeps.")
@click.option("--gzip/--no-gzip", default=None, help="Compress the dumps.")
@click.option("--excluded-tables", metavar="LIST", help="Comma list of tables to leave out.")
@click.option(
    "--run-on-replica/--no-run-on-replica", default=None,
    help="Run the backup on a replica server when there is one.",
)
@click.pass_obj
def backup_task_create(
    setup: Setup, stack_uid: str, db_types: str, frequency: str | None, keep_count: int | None,
    gzip: bool | None, excluded_tables: str | None, run_on_replica: bool | None,
) -> None:
    """Create a backup task on a stack (POST /stacks/:id/backups).

    Everything is checked before anything is sent: an unknown db type or an
    unreadable cron line exits 2. Options left out take Cloud 66's defaults.
    Needs a token with the admin scope (exit 4 without). Exit 0 when Cloud 66
    accepted, 1 when it answered not ok.

    \b
    Example:
      c66-archiver backup-task create --stack UID --db-type mysql,redis \\
          --frequency "0 */6 * * *" --keep-count 20 --gzip
    """
    from archiver.commands.backup_task import checked_task, run_backup_task_create

    settings = setup.settings()
    try:
        task = checked_task(
            stack_uid, db_types, frequency, keep_count, gzip, excluded_tables, run_on_replica
        )
    except ArchiverError as error:
        fail(str(error), exit_code_for(error))
    token = setup.token(settings)
    run(lambda: run_backup_task_create(settings, token, task))


@click.group("watch", cls=Commands, context_settings=CONTEXT)
def watch() -> None:
    """The watch over Cloud 66: missed, late, failed and shrunken backups.

    Each pass judges the backup lists it reads anyway; `status` (and the status
    page, /metrics) shows what it found, and each new finding is told once to
    the [notify] webhook, healthchecks and Apprise URLs.
    """


@watch.command("ack", context_settings=CONTEXT)
@click.argument("backup_id", type=int)
@click.option("--stack", "stack_uid", metavar="UID", help="The stack, when the id is ambiguous.")
@click.pass_obj
def watch_ack(setup: Setup, backup_id: int, stack_uid: str | None) -> None:
    """Acknowledge a missed backup: it is no longer listed as a finding.

    A missed backup is one Cloud 66 listed, the archiver never archived, and
    Cloud 66 no longer lists (rotated away by keep_count, or deleted). It stays
    in `status` until acknowledged; /metrics keeps counting it. Exit 2 when the
    id is not a missed backup, or is one of several stacks without --stack.
    Takes no lock: works beside the daemon.

    \b
    Example:
      c66-archiver watch ack 4711 --stack 5999b763474b0eafa5fafb64bff0ba80
    """
    from archiver.commands.watch_ack import acknowledge_missed

    settings = setup.settings()
    run(lambda: acknowledge_missed(settings, backup_id, stack_uid))
