"""`c66-archiver demo`: the whole flow against the embedded simulator, no account needed.

It leaves `DIR/config.toml` behind, so every command can then be tried on the
demo's archive (`c66-archiver --config DIR/config.toml status`, `verify`,
`restore`, `prune`); its paths are relative to it, so the folder can move.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import click

from archiver.commands.status import print_status
from archiver.config.settings import Settings, load_settings
from archiver.core.private_files import FILE_MODE, make_private_folders
from archiver.core.secrets import add_secret
from archiver.simulator import Simulator, SimulatorServer, populate_demo
from archiver.sync.oneshot import archive_once, tell_summary

_DEMO_PART_SIZE = 4 * 1024 * 1024
CONFIG_NAME = "config.toml"

_CONFIG = """\
# Written by `c66-archiver demo`: the demo's archive, for trying every command on it.
#   c66-archiver --config {config} status --all
# Relative paths are relative to this file's folder.

[api]
# The simulator the demo ran; it is gone now, so `sync` with this file fails.
# With a real account, remove base_url and give a token (config.example.toml).
base_url = "{base_url}"

{stacks}
[storage]
type = "local"
path = "archive"

[state]
path = "state"

# What `prune` keeps: try `prune --dry-run` first. The demo's own pass prunes
# nothing (after_pass is off by default).
[retention]
keep_last = 1
"""


def write_demo_config(directory: Path, base_url: str, stack_uids: list[str]) -> Path:
    """Write `directory/config.toml` (0600) for the demo's archive; return its path."""
    make_private_folders(directory)
    config = directory / CONFIG_NAME
    stacks = "".join(f'[[stacks]]\nuid = "{uid}"\n\n' for uid in stack_uids)
    config.write_text(_CONFIG.format(config=config, base_url=base_url, stacks=stacks))
    config.chmod(FILE_MODE)
    return config


def demo_settings(directory: Path, base_url: str, stack_uids: list[str]) -> Settings:
    """The settings of `directory/config.toml`, written first: a config like a user's."""
    return load_settings(write_demo_config(directory, base_url, stack_uids))


async def run_demo(directory: Path, *, quiet: bool = False) -> int:
    """Serve a few stacks from the simulator, archive them, print the status; exit code.

    `directory` must be absolute: the config made from it outlives the current folder.
    `quiet` (-q): no progress display.
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
        summary = await archive_once(settings, token, show_progress=False if quiet else None)
    tell_summary(summary)
    await print_status(settings, as_json=False, show_all=True)
    click.echo(_next_steps(directory), err=True)
    return summary.exit_code


def _next_steps(directory: Path) -> str:
    config = directory / CONFIG_NAME
    command = f"c66-archiver --config {config}"
    return f"""
The archive is in {directory / 'archive'}; run the demo again: nothing is downloaded twice.
Try the other commands on it:
  {command} status --all
  {command} verify --deep
  {command} restore 7 -o /tmp/          # -> /tmp/events.tar
  {command} prune --dry-run
Then copy config.example.toml, set your stacks and token, and run check-config."""
