"""One pass from the command line: progress on a terminal, a summary line, an exit code.

SIGTERM and SIGINT stop it as they stop the daemon (`archiver.sync.graceful_stop`): no
new work, the grace period for transfers in flight, then out, promptly. A pass that a
stop cut short exits 128 + the signal's number (143 for SIGTERM, 130 for SIGINT), unless
something failed (1) or the token was refused (4): those need the user; a stop does
not, the next pass finishes the job.
"""

from __future__ import annotations

import logging
import signal
import sys

import click

from archiver.config.settings import Settings
from archiver.core.errors import EXIT_OK, exit_code_for_stop
from archiver.core.log import renders_for_people
from archiver.model.summary import PassSummary
from archiver.sync.graceful_stop import GracefulStop
from archiver.sync.progress import PassProgress
from archiver.sync.runtime import Runtime
from archiver.sync.sync_pass import SyncPass


async def run_one_pass(
    settings: Settings, token: str, *, show_progress: bool | None = None, quiet: bool = False
) -> int:
    """Run a pass and return the contract's exit code; print its summary unless `quiet`."""
    stopping = GracefulStop(settings.transfer.grace_period)
    with stopping.on_signals():
        summary = await _archive(settings, token, stopping, show_progress)
    stopped_code = exit_code_for_stop(stopping.signum or signal.SIGTERM)
    if summary is None:  # the grace period ran out: transfers in flight were abandoned
        if not quiet:
            click.echo("stopped: transfers in flight were left for the next pass", err=True)
        return stopped_code
    if not quiet:
        tell_summary(summary)
    if summary.stopped and summary.exit_code == EXIT_OK:
        return stopped_code
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
    summary = await _archive(settings, token, GracefulStop(settings.transfer.grace_period),
                             show_progress)
    assert summary is not None  # nothing asks this stop: the pass ran to its end
    return summary


async def _archive(
    settings: Settings, token: str, stopping: GracefulStop, show_progress: bool | None
) -> PassSummary | None:
    """A pass that `stopping` may stop; None when the stop's grace period ran out."""
    enabled = sys.stderr.isatty() if show_progress is None else show_progress
    async with Runtime(settings, token, stop=stopping.signal) as runtime:
        limit = settings.transfer.bandwidth_limit
        with PassProgress(enabled=enabled, bandwidth_limit=limit) as progress:
            return await stopping.run_pass(SyncPass(runtime, progress=progress).run())
