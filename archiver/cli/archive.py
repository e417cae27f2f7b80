"""The archive's commands: `status`, `health`, `check-config`, `prune`, `verify`, `restore`."""

from __future__ import annotations

from pathlib import Path

import click

from archiver.cli.base import CONTEXT, Setup, identity_option, run, storage_option


@click.command(context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout (for scripts).")
@click.option("--all", "show_all", is_flag=True, help="Also list every archived backup.")
@click.pass_obj
def status(setup: Setup, as_json: bool, show_all: bool) -> None:
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
    run(lambda: print_status(settings, as_json=as_json, show_all=show_all))


@click.command(context_settings=CONTEXT)
@click.pass_obj
def health(setup: Setup) -> None:
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
    run(lambda: check_health(settings))


@click.command("check-config", context_settings=CONTEXT)
@click.pass_obj
def check_config(setup: Setup) -> None:
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
    run(lambda: check_everything(settings, token))


@click.command(context_settings=CONTEXT)
@click.option(
    "-n", "--dry-run", is_flag=True, help="Show what would be kept and removed; change nothing."
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout (for scripts).")
@click.option("--wait", is_flag=True, help="While a pass runs, wait for it instead of exit 3.")
@storage_option("every destination, each with its own policy")
@click.pass_obj
def prune(setup: Setup, dry_run: bool, as_json: bool, wait: bool, storage: str | None) -> None:
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
    run(lambda: run_prune(settings, dry_run=dry_run, as_json=as_json, wait=wait, storage=storage))


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


@click.command(context_settings=CONTEXT)
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
@identity_option("With --deep on an encrypted archive: the private key that decrypts it.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout (for scripts).")
@storage_option("every destination's copies")
@click.pass_obj
def verify(
    setup: Setup, subset: tuple[int, int] | None, percent: float | None, deep: bool,
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
    run(
        lambda: run_verify(
            settings, subset=subset, percent=percent, deep=deep, as_json=as_json,
            identity=identity, quiet=setup.quiet, storage=storage,
        )
    )


@click.command(context_settings=CONTEXT)
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
@identity_option(
    "The age or OpenSSH private key of an encrypted archive ([encryption] identity_file)."
)
@storage_option("the first destination (in the config's order) that holds it")
@click.pass_obj
def restore(
    setup: Setup, backup_id: int, stack_uid: str | None, output: str, force: bool,
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
    run(
        lambda: run_restore(
            settings, backup_id, stack_uid=stack_uid, output=output, identity=identity,
            force=force, storage=storage,
        )
    )
