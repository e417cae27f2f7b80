"""The command line: parse -> load config -> set up logging -> run -> exit code.

Every failure ends as one line on stderr naming its cause, and the contract's
exit code; never a bare traceback.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn

import click

from archiver import __version__
from archiver.config.settings import (
    DB_TYPES,
    Settings,
    load_settings,
    load_token,
    parse_duration,
    resolve_config_path,
)
from archiver.core.errors import EXIT_PARTIAL, ArchiverError, exit_code_for
from archiver.core.log import configure_logging
from archiver.core.malloc_tuning import tame_malloc
from archiver.core.secrets import add_secret, redact
from archiver.core.startup import startup_done
from archiver.core.terminal import EXIT_CLOSED_PIPE, silence_closed_stdout

_CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
_LOG_FORMATS = click.Choice(["auto", "json", "console"])


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"c66-archiver: error: {redact(message)}", err=True)
    sys.exit(code)


def _run(coroutine_factory: Callable[[], Coroutine[Any, Any, int]]) -> NoReturn:
    """Run a coroutine to its exit code, turning every error into one line."""
    startup_done()  # the command's imports are done: freeze them, resume the GC
    try:
        code = asyncio.run(coroutine_factory())
        sys.stdout.flush()  # here, where a reader that went away can still be caught
    except BrokenPipeError:
        # `status --json | head -c5`: the reader had enough. Not an error of ours.
        silence_closed_stdout()
        sys.exit(EXIT_CLOSED_PIPE)
    except ArchiverError as error:
        _fail(str(error), exit_code_for(error))
    except KeyboardInterrupt:
        _fail("interrupted", EXIT_PARTIAL)
    except Exception as error:  # last resort: still one line, never a traceback
        _fail(f"unexpected {type(error).__name__}: {error}", EXIT_PARTIAL)
    sys.exit(code)


def _storage_option(what: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    help_text = f"Only the destination named NAME ([[storage]] name). Default: {what}."
    return click.option("--storage", "storage", metavar="NAME", help=help_text)


class _Setup:
    """The global options, then settings and token loaded once with errors mapped to exit 2.

    The global options may come before or after the subcommand: each occurrence
    updates this one object (`_GLOBAL_OPTIONS`), and nothing reads them before the
    subcommand runs.
    """

    def __init__(self) -> None:
        self.config: str | None = None
        self.log_format: str | None = None
        self.verbose = False
        self.quiet = False

    @property
    def config_path(self) -> Path:
        """`--config`, else $C66_ARCHIVER_CONFIG, else the default path."""
        return resolve_config_path(self.config)

    def settings(self) -> Settings:
        self.log_level(None)  # -v with -q is a usage error before anything is read
        try:
            settings = load_settings(self.config_path)
        except ArchiverError as error:
            _fail(str(error), exit_code_for(error))
        self.configure_logging(settings)
        return settings

    def log_level(self, settings: Settings | None) -> str:
        """-v: debug; -q: warnings and errors only; else the config's level."""
        if self.verbose and self.quiet:
            raise click.UsageError("-v/--verbose and -q/--quiet cannot be combined")
        if self.verbose:
            return "debug"
        if self.quiet:
            return "warning"
        return settings.log.level if settings else "info"

    def configure_logging(self, settings: Settings | None = None) -> None:
        log_settings = settings.log if settings else None
        configure_logging(
            format=self.log_format or (log_settings.format if log_settings else "auto"),  # type: ignore[arg-type]
            level=self.log_level(settings),
        )

    def token(self, settings: Settings) -> str:
        try:
            token = load_token(settings)
        except ArchiverError as error:
            _fail(str(error), exit_code_for(error))
        add_secret(token)
        return token


def _remember(attribute: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    """A global option's callback: note a value given here (an absent one changes nothing)."""

    def note(ctx: click.Context, _param: click.Parameter, value: Any) -> None:
        if value is not None and value is not False:
            setattr(ctx.ensure_object(_Setup), attribute, value)

    return note


def _global_options() -> list[click.Parameter]:
    """Fresh copies of the options every command takes, before or after its name."""
    common: dict[str, Any] = {"expose_value": False}
    return [
        click.Option(
            ["--config"], metavar="PATH", callback=_remember("config"), **common,
            help="Config file. Default: $C66_ARCHIVER_CONFIG, then /etc/c66-archiver/config.toml.",
        ),
        click.Option(
            ["-v", "--verbose"], is_flag=True, callback=_remember("verbose"), **common,
            help="Log debug events too.",
        ),
        click.Option(
            ["-q", "--quiet"], is_flag=True, callback=_remember("quiet"), **common,
            help="Only warnings and errors; no progress display.",
        ),
        click.Option(
            ["--log-format"], type=_LOG_FORMATS, callback=_remember("log_format"), **common,
            help="Log lines as JSON or for humans (default: for humans on a terminal).",
        ),
    ]


class _Commands(click.Group):
    """A group whose commands (and their subcommands) all take the global options."""

    group_class = type  # `@group.group()` makes a _Commands too

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _add_global_options(self)

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        _add_global_options(cmd)
        super().add_command(cmd, name)


def _add_global_options(command: click.Command) -> None:
    present = {param.name for param in command.params}
    command.params.extend(p for p in _global_options() if p.name not in present)


@click.group(
    cls=_Commands,
    invoke_without_command=True,
    context_settings=_CONTEXT,
    epilog="""\b
Examples:
  c66-archiver demo                          # try it: embedded simulator -> ./c66-demo
  c66-archiver --config /etc/c66-archiver/config.toml check-config
  c66-archiver --sync-now                    # one pass, e.g. from cron
  c66-archiver                               # the daemon: a pass now, then on schedule
  c66-archiver status --json
  c66-archiver health                        # exit 0 when a pass succeeded recently

\b
--config, -v, -q and --log-format work before or after the subcommand.
Shell completion, e.g. in ~/.bashrc (zsh_source, fish_source for those shells):
  eval "$(_C66_ARCHIVER_COMPLETE=bash_source c66-archiver)"

Exit codes: 0 all archived, 1 some backups failed, 2 usage or config error,
3 another instance holds the state lock, 4 the API refused the token.""",
)
@click.option("--sync-now", is_flag=True, help="Run one pass and exit instead of the daemon.")
@click.version_option(__version__, prog_name="c66-archiver")
@click.pass_context
def main(ctx: click.Context, sync_now: bool) -> None:
    """Archive Cloud 66 database backups into storage you own.

    Polls the Cloud 66 API for the backups of your stacks, downloads every new
    Ok backup (joining multi-part ones), checks it, and stores it with a
    manifest. Without a subcommand it runs as a daemon; with --sync-now (or
    `sync`) it runs one pass and exits.
    """
    tame_malloc()
    ctx.ensure_object(_Setup)
    if ctx.invoked_subcommand is None:
        if sync_now:
            ctx.invoke(sync)
        else:
            _run_daemon(ctx.obj)


def _run_daemon(setup: _Setup) -> NoReturn:
    from archiver.service.daemon import Daemon

    settings = setup.settings()
    token = setup.token(settings)
    _run(lambda: Daemon(settings, token).run())


@main.command(context_settings=_CONTEXT)
@click.pass_obj
def sync(setup: _Setup) -> None:
    """Run one pass and exit (the same as --sync-now).

    Archives every Ok backup not archived yet, then prints a one-line summary.
    Exit 0 when everything due was archived, 1 when some backups failed.

    \b
    Example (cron, every hour at :15):
      15 * * * *  c66-archiver --config /etc/c66-archiver/config.toml sync
    """
    from archiver.sync.oneshot import run_one_pass

    settings = setup.settings()
    token = setup.token(settings)
    quiet = setup.quiet
    _run(lambda: run_one_pass(settings, token, show_progress=False if quiet else None, quiet=quiet))


@main.command(context_settings=_CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout (for scripts).")
@click.option("--all", "show_all", is_flag=True, help="Also list every archived backup.")
@click.pass_obj
def status(setup: _Setup, as_json: bool, show_all: bool) -> None:
    """Show per stack the last archived backup, its age and totals; the last pass's failures.

    Reads the state only: needs no token and works while the daemon runs.

    \b
    Examples:
      c66-archiver status
      c66-archiver status --all                   # every archived backup too
      c66-archiver status --json | jq '.stacks[] | {stack_uid, archived_count}'
    """
    from archiver.commands.status import print_status

    settings = setup.settings()
    _run(lambda: print_status(settings, as_json=as_json, show_all=show_all))


@main.command(context_settings=_CONTEXT)
@click.pass_obj
def health(setup: _Setup) -> None:
    """Exit 0 when a pass succeeded recently, else 1; one line on stdout says why.

    The rule is /readyz's: the last pass without failures finished at most
    [http] max_age ago (default: twice the schedule's interval plus jitter).
    Reads the state only: needs no token and works while the daemon runs.

    \b
    Examples:
      c66-archiver --config /etc/c66-archiver/config.toml health
      HEALTHCHECK --start-period=1h CMD ["c66-archiver", "health"]   # Dockerfile
    """
    from archiver.service.health import check_health

    settings = setup.settings()
    _run(lambda: check_health(settings))


@main.command("check-config", context_settings=_CONTEXT)
@click.pass_obj
def check_config(setup: _Setup) -> None:
    """Validate the config, reach the API with the token, and probe the storage.

    Writes, reads back and deletes a probe object in storage. Exit 0 when all
    is well, 2 when something is wrong (the message names it), 4 when the API
    refuses the token.

    \b
    Example:
      C66_API_TOKEN=... c66-archiver --config ./config.toml check-config
    """
    from archiver.commands.check_config import check_everything

    settings = setup.settings()
    token = setup.token(settings)
    _run(lambda: check_everything(settings, token))


@main.command(context_settings=_CONTEXT)
@click.option(
    "-n", "--dry-run", is_flag=True, help="Show what would be kept and removed; change nothing."
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout (for scripts).")
@click.option("--wait", is_flag=True, help="While a pass runs, wait for it instead of exit 3.")
@_storage_option("every destination, each with its own policy")
@click.pass_obj
def prune(setup: _Setup, dry_run: bool, as_json: bool, wait: bool, storage: str | None) -> None:
    """Remove the backups [retention] does not keep (restic `forget` rules, per series).

    Each series (stack, db type, database) keeps the newest backup of each of its
    last keep_daily days, keep_weekly ISO weeks, ... (UTC), the keep_last newest,
    and everything newer than keep_within before its newest backup. A pruned
    backup is never downloaded again, though Cloud 66 may still list it.
    Try --dry-run first: it shows each backup with the rules that keep it.
    Each destination has its own policy ([retention], the stack's, then its own,
    key by key); what S3 Object Lock keeps is listed with its locked_until.

    Runs beside a daemon that sleeps between passes (--dry-run beside anything);
    while a pass is running it exits 3 at once, or waits for it with --wait.
    Exit 0, or 1 when a removal failed. The daemon also prunes by itself after
    each good pass with [retention] after_pass = true.

    \b
    Examples:
      c66-archiver prune -n
      c66-archiver prune --wait
      c66-archiver prune --storage offsite -n
      c66-archiver prune --dry-run --json | jq '.remove | length'
    """
    from archiver.commands.prune import run_prune

    settings = setup.settings()
    _run(lambda: run_prune(settings, dry_run=dry_run, as_json=as_json, wait=wait, storage=storage))


def _parse_subset(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> tuple[int, int] | None:
    if value is None:
        return None
    number, slash, groups = value.partition("/")
    if not slash or not number.isdigit() or not groups.isdigit():
        raise click.BadParameter(f"{value!r} is not N/M, e.g. 1/7")
    if not 1 <= int(number) <= int(groups):
        raise click.BadParameter(f"{value!r}: N must be between 1 and M")
    return int(number), int(groups)


@main.command(context_settings=_CONTEXT)
@click.option(
    "--subset",
    metavar="N/M",
    callback=_parse_subset,
    help="Check only the Nth of M fixed groups (the same backups in a group on every run).",
)
@click.option(
    "--percent",
    type=click.FloatRange(0, 100, min_open=True),
    metavar="P",
    help="Check a random P percent of the backups (at least one).",
)
@click.option("--deep", is_flag=True, help="Also read every tar to its end (slower).")
@click.option(
    "--identity", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
    help="With --deep on an encrypted archive: the private key that decrypts it.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout (for scripts).")
@_storage_option("every destination's copies")
@click.pass_obj
def verify(
    setup: _Setup, subset: tuple[int, int] | None, percent: float | None, deep: bool,
    identity: Path | None, as_json: bool, storage: str | None,
) -> None:
    """Re-read archived backups and check size and sha256 against their manifests.

    A missing object, a short one or a single flipped bit is reported by name
    (stack, backup id, location, what is wrong); exit 1 when any backup is not
    intact, else 0. --deep also reads every tar to its end and fails on a
    truncated or garbled one. Results go to `status`, to /metrics of a running
    daemon, and (on failure) to the [notify] fail ping and webhook. Takes no
    lock: run it beside the daemon, e.g. from a weekly timer.

    \b
    Examples:
      c66-archiver verify                      # everything
      c66-archiver verify --subset 3/7         # one seventh: all of it over a week of days
      c66-archiver verify --percent 5 --deep
      c66-archiver verify --storage offsite    # only the copies in one destination
      c66-archiver verify --json | jq '.checked[] | select(.ok | not)'
    """
    from archiver.commands.verify import run_verify

    if subset is not None and percent is not None:
        raise click.UsageError("--subset and --percent cannot be combined")
    settings = setup.settings()
    _run(
        lambda: run_verify(
            settings, subset=subset, percent=percent, deep=deep, as_json=as_json,
            identity=identity, quiet=setup.quiet, storage=storage,
        )
    )


@main.command(context_settings=_CONTEXT)
@click.argument("backup_id", type=int)
@click.option("--stack", "stack_uid", metavar="UID", help="The stack, when the id is ambiguous.")
@click.option(
    "--output",
    "-o",
    required=True,
    metavar="PATH|DIR|-",
    help="The file to write (renamed into place only when intact), a folder to write "
    "<database_name>.tar into, or - for stdout.",
)
@click.option("--force", is_flag=True, help="Replace a file that is already at the output path.")
@click.option(
    "--identity", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
    help="The age or OpenSSH private key of an encrypted archive ([encryption] identity_file).",
)
@_storage_option("the first destination (in the config's order) that holds it")
@click.pass_obj
def restore(
    setup: _Setup, backup_id: int, stack_uid: str | None, output: str, force: bool,
    identity: Path | None, storage: str | None,
) -> None:
    """Stream an archived backup back out of storage, checking its sha256 as it goes.

    A file is written under a temporary name and renamed to PATH only when its
    size and sha256 match the manifest; on a mismatch nothing is left at PATH
    and the exit code is 1. An existing file is never replaced without --force
    (exit 2). A folder as PATH gets the backup as <database_name>.tar inside it.
    With `-o -` the tar goes to stdout (logs to stderr) and a mismatch found at
    the end exits 1; a reader that stops early (`| head`) ends it quietly. An
    unknown id, or one archived for several stacks without --stack, exits 2.
    Takes no lock, so it runs beside the daemon; works on a fresh machine with
    only the config (the state is rebuilt from storage).

    \b
    Examples:
      c66-archiver restore 4711 -o shop.tar
      c66-archiver restore 4711 -o /srv/restores/        # -> /srv/restores/shop.tar
      c66-archiver restore 4711 --storage offsite -o shop.tar
      c66-archiver restore 4711 --stack 5999b763474b0eafa5fafb64bff0ba80 -o - | tar -x
    """
    from archiver.lifecycle.restore import run_restore

    settings = setup.settings()
    _run(
        lambda: run_restore(
            settings, backup_id, stack_uid=stack_uid, output=output, identity=identity,
            force=force, storage=storage,
        )
    )


def _parse_expires(
    _ctx: click.Context, _param: click.Parameter, value: str
) -> timedelta:
    try:
        return parse_duration(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


@main.command("import", context_settings=_CONTEXT)
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
@click.option(
    "--identity", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
    help="For an encrypted archive: the key that decrypts a staging copy for Cloud 66.",
)
@click.pass_obj
def import_(
    setup: _Setup, stack_uid: str, db_type: str, group: int, url: str | None,
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
    _run(
        lambda: run_import(
            settings, token, stack_uid=stack_uid, db_type=db_type, group=group, url=url,
            backup_id=backup_id, expires=expires, identity=identity,
        )
    )


@main.group("backup-task", context_settings=_CONTEXT)
def backup_task() -> None:
    """Manage Cloud 66 backup tasks (what makes the backups this tool archives)."""


@backup_task.command("create", context_settings=_CONTEXT)
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
    setup: _Setup, stack_uid: str, db_types: str, frequency: str | None, keep_count: int | None,
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
        _fail(str(error), exit_code_for(error))
    token = setup.token(settings)
    _run(lambda: run_backup_task_create(settings, token, task))


@main.group("watch", context_settings=_CONTEXT)
def watch() -> None:
    """The watch over Cloud 66: missed, late, failed and shrunken backups.

    Each pass judges the backup lists it reads anyway; `status` (and the status
    page, /metrics) shows what it found, and each new finding is told once to
    the [notify] webhook, healthchecks and Apprise URLs.
    """


@watch.command("ack", context_settings=_CONTEXT)
@click.argument("backup_id", type=int)
@click.option("--stack", "stack_uid", metavar="UID", help="The stack, when the id is ambiguous.")
@click.pass_obj
def watch_ack(setup: _Setup, backup_id: int, stack_uid: str | None) -> None:
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
    _run(lambda: acknowledge_missed(settings, backup_id, stack_uid))


@main.command(context_settings=_CONTEXT)
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("c66-demo"),
    show_default=True,
    help="Where the demo's archive, state and config.toml go.",
)
@click.pass_obj
def demo(setup: _Setup, directory: Path) -> None:
    """Watch it work without a Cloud 66 account.

    Starts the embedded Cloud 66 simulator on loopback with a few stacks (one
    multi-part backup, one failed backup), archives them into DIR/archive with
    the progress display, and prints the status table. It leaves
    DIR/config.toml, so the other commands can be tried on the demo's archive.

    \b
    Examples:
      c66-archiver demo --dir /tmp/c66-demo && ls -R /tmp/c66-demo/archive
      c66-archiver --config /tmp/c66-demo/config.toml verify --deep
    """
    from archiver.commands.demo import run_demo

    setup.configure_logging()
    absolute = directory.absolute()
    _run(lambda: run_demo(absolute, quiet=setup.quiet))
