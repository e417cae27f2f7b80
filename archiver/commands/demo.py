"""`c66-archiver demo`: the whole flow against the embedded simulator, no account needed."""

from __future__ import annotations

import secrets
from pathlib import Path

import click

from archiver.commands.status import print_status
from archiver.config.settings import Settings, settings_from_dict
from archiver.core.secrets import add_secret
from archiver.simulator import Simulator, SimulatorServer, populate_demo
from archiver.sync.oneshot import archive_once

_DEMO_PART_SIZE = 4 * 1024 * 1024


def demo_settings(directory: Path, base_url: str, stack_uids: list[str]) -> Settings:
    """A configuration like a user's, pointing at the simulator and into `directory`."""
    return settings_from_dict(
        {
            "api": {"base_url": base_url},
            "stacks": [{"uid": uid} for uid in stack_uids],
            "storage": {"type": "local", "path": str(directory / "archive")},
            "state": {"path": str(directory / "state")},
        },
        source=directory / "demo-config",
    )


async def run_demo(directory: Path) -> int:
    """Serve a few stacks from the simulator, archive them, print the status; exit code.

    `directory` must be absolute: the config made from it outlives the current folder.
    """
    token = secrets.token_urlsafe(24)
    add_secret(token)
    simulator = Simulator(token=token, blob_dir=directory / ".simulator", part_size=_DEMO_PART_SIZE)
    populate_demo(simulator)
    async with SimulatorServer(simulator) as server:
        click.echo(
            f"Simulated Cloud 66 API at {server.base_url}; archiving into {directory}", err=True
        )
        settings = demo_settings(directory, server.base_url, simulator.stack_uids())
        summary = await archive_once(settings, token)
    click.echo(summary.one_line(), err=True)
    await print_status(settings, as_json=False, show_all=True)
    click.echo(
        f"\nThe archive is in {directory / 'archive'}; run the demo again: nothing is "
        "downloaded twice.",
        err=True,
    )
    return summary.exit_code
