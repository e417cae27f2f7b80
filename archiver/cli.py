"""The command line: parse -> load config -> set up logging -> run -> exit code.

Every failure ends as one line on stderr naming its cause, and the contract's
exit code; never a bare traceback.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, NoReturn

import click

from archiver import __version__
from archiver.config import Settings, load_settings, load_token, resolve_config_path
from archiver.errors import EXIT_PARTIAL, ArchiverError, exit_code_for
from archiver.log import add_secret, configure_logging, redact
from archiver.malloc_tuning import tame_malloc
from archiver.startup import startup_done

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
    except ArchiverError as error:
        _fail(str(error), exit_code_for(error))
    except KeyboardInterrupt:
        _fail("interrupted", EXIT_PARTIAL)
    except Exception as error:  # last resort: still one line, never a traceback
        _fail(f"unexpected {type(error).__name__}: {error}", EXIT_PARTIAL)
    sys.exit(code)


class _Setup:
    """Settings and token, loaded once per invocation with errors mapped to exit 2."""

    def __init__(self, config: str | None, log_format: str | None, verbose: bool) -> None:
        self.config_path = resolve_config_path(config)
        self.log_format = log_format
        self.verbose = verbose

    def settings(self) -> Settings:
        try:
            settings = load_settings(self.config_path)
        except ArchiverError as error:
            _fail(str(error), exit_code_for(error))
        self.configure_logging(settings)
        return settings

    def configure_logging(self, settings: Settings | None = None) -> None:
        log_settings = settings.log if settings else None
        configure_logging(
            format=self.log_format or (log_settings.format if log_settings else "auto"),  # type: ignore[arg-type]
            level="debug" if self.verbose else (log_settings.level if log_settings else "info"),
        )

    def token(self, settings: Settings) -> str:
        try:
            token = load_token(settings)
        except ArchiverError as error:
            _fail(str(error), exit_code_for(error))
        add_secret(token)
        return token


@click.group(
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

Exit codes: 0 all archived, 1 some backups failed, 2 usage or config error,
3 another instance holds the state lock, 4 the API refused the token.""",
)
@click.option(
    "--config",
    "config",
    metavar="PATH",
    help="Config file. Default: $C66_ARCHIVER_CONFIG, then /etc/c66-archiver/config.toml.",
)
@click.option("--sync-now", is_flag=True, help="Run one pass and exit instead of the daemon.")
@click.option("--log-format", type=_LOG_FORMATS, help="Log lines as JSON or for humans.")
@click.option("-v", "--verbose", is_flag=True, help="Log debug events too.")
@click.version_option(__version__, prog_name="c66-archiver")
@click.pass_context
def main(
    ctx: click.Context, config: str | None, sync_now: bool, log_format: str | None, verbose: bool
) -> None:
    """Archive Cloud 66 database backups into storage you own.

    Polls the Cloud 66 API for the backups of your stacks, downloads every new
    Ok backup (joining multi-part ones), checks it, and stores it with a
    manifest. Without a subcommand it runs as a daemon; with --sync-now (or
    `sync`) it runs one pass and exits.
    """
    tame_malloc()
    ctx.obj = _Setup(config, log_format, verbose)
    if ctx.invoked_subcommand is None:
        if sync_now:
            ctx.invoke(sync)
        else:
            _run_daemon(ctx.obj)


def _run_daemon(setup: _Setup) -> NoReturn:
    from archiver.daemon import Daemon

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
    from archiver.oneshot import run_one_pass

    settings = setup.settings()
    token = setup.token(settings)
    _run(lambda: run_one_pass(settings, token))


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
    from archiver.status import print_status

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
    from archiver.health import check_health

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
    from archiver.checks import check_everything

    settings = setup.settings()
    token = setup.token(settings)
    _run(lambda: check_everything(settings, token))


@main.command(context_settings=_CONTEXT)
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("c66-demo"),
    show_default=True,
    help="Where the demo's archive and state go.",
)
@click.pass_obj
def demo(setup: _Setup, directory: Path) -> None:
    """Watch it work without a Cloud 66 account.

    Starts the embedded Cloud 66 simulator on loopback with a few stacks (one
    multi-part backup, one failed backup), archives them into DIR/archive with
    the progress display, and prints the status table.

    \b
    Example:
      c66-archiver demo --dir /tmp/c66-demo && ls -R /tmp/c66-demo/archive
    """
    from archiver.demo import run_demo

    setup.configure_logging()
    absolute = directory.absolute()
    _run(lambda: run_demo(absolute))
