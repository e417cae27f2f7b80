"""One pass from the command line: progress on a terminal, a summary line, an exit code."""

from __future__ import annotations

import sys

import click

from archiver.config.settings import Settings
from archiver.model.summary import PassSummary
from archiver.sync.progress import PassProgress
from archiver.sync.runtime import Runtime
from archiver.sync.sync_pass import SyncPass


async def run_one_pass(settings: Settings, token: str, *, show_progress: bool | None = None) -> int:
    """Run a pass and return the contract's exit code."""
    summary = await archive_once(settings, token, show_progress=show_progress)
    click.echo(summary.one_line(), err=True)
    return summary.exit_code


async def archive_once(
    settings: Settings, token: str, *, show_progress: bool | None = None
) -> PassSummary:
    """Open everything, run one pass with the progress display, close everything."""
    enabled = sys.stderr.isatty() if show_progress is None else show_progress
    async with Runtime(settings, token) as runtime:
        with PassProgress(enabled=enabled) as progress:
            return await SyncPass(runtime, progress=progress).run()
