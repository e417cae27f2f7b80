"""One pass from the command line: progress on a terminal, a summary line, an exit code."""

from __future__ import annotations

import logging
import sys

import click

from archiver.config.settings import Settings
from archiver.core.log import renders_for_people
from archiver.model.summary import PassSummary
from archiver.sync.progress import PassProgress
from archiver.sync.runtime import Runtime
from archiver.sync.sync_pass import SyncPass


async def run_one_pass(
    settings: Settings, token: str, *, show_progress: bool | None = None, quiet: bool = False
) -> int:
    """Run a pass and return the contract's exit code; print its summary unless `quiet`."""
    summary = await archive_once(settings, token, show_progress=show_progress)
    if not quiet:
        tell_summary(summary)
    return summary.exit_code


def tell_summary(summary: PassSummary) -> None:
    """The summary line on stderr, unless the log lines a person reads just said it.

    On a terminal the pass's "pass finished" line carries the summary already;
    with JSON logs (cron, a pipe) the person reading stderr gets it once, plainly.
    """
    if renders_for_people() and logging.getLogger().isEnabledFor(logging.INFO):
        return
    click.echo(summary.one_line(), err=True)


async def archive_once(
    settings: Settings, token: str, *, show_progress: bool | None = None
) -> PassSummary:
    """Open everything, run one pass with the progress display, close everything."""
    enabled = sys.stderr.isatty() if show_progress is None else show_progress
    async with Runtime(settings, token) as runtime:
        limit = settings.transfer.bandwidth_limit
        with PassProgress(enabled=enabled, bandwidth_limit=limit) as progress:
            return await SyncPass(runtime, progress=progress).run()
