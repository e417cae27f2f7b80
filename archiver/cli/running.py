"""The commands that run passes: `sync` (one pass) and `demo` (passes against the embedded
simulator); the daemon itself is the group's own invocation (`archiver.cli.app`)."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import click

from archiver.cli.base import CONTEXT, Setup, run


def run_daemon(setup: Setup) -> NoReturn:
    from archiver.service.daemon import Daemon

    settings = setup.settings()
    token = setup.token(settings)
    run(lambda: Daemon(settings, token).run())



@click.command(context_settings=CONTEXT)
@click.pass_obj
def sync(setup: Setup) -> None:
    """Run one pass and exit (the same as --sync-now).

    Archives every Ok backup not archived yet, then prints a one-line summary.
    Exit 0 when everything due was archived, 1 when some backups failed.
    SIGTERM or SIGINT stop it as they stop the daemon (transfers in flight get
    [transfer] grace_period); stopped with work left, it exits 143 or 130.

    \b
    Example (cron, every hour at :15):
      15 * * * *  c66-archiver --config /etc/c66-archiver/config.toml sync
    """
    from archiver.sync.oneshot import run_one_pass

    settings = setup.settings()
    token = setup.token(settings)
    quiet = setup.quiet
    run(lambda: run_one_pass(settings, token, show_progress=False if quiet else None, quiet=quiet))


@click.command(context_settings=CONTEXT)
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("c66-demo"),
    show_default=True,
    help="Where the demo's archive, state and config.toml go.",
)
@click.pass_obj
def demo(setup: Setup, directory: Path) -> None:
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
    run(lambda: run_demo(absolute, quiet=setup.quiet))
