"""`c66-archiver watch ack BACKUP_ID [--stack UID]`: a missed backup, acknowledged.

A missed backup is listed (status, the page, /metrics' unacknowledged count)
until someone says they know. Runs beside a daemon: it takes no lock and
changes one row (a pass never changes an acknowledged one).
"""

from __future__ import annotations

import click

from archiver.config.settings import Settings
from archiver.core.errors import EXIT_OK, ConfigError
from archiver.model.manifest import utc_now_iso
from archiver.state.store import StateStore
from archiver.watch.messages import stack_label


async def acknowledge_missed(settings: Settings, backup_id: int, stack_uid: str | None) -> int:
    """Acknowledge one missed backup; exit 2 when the id is unknown or ambiguous."""
    state = StateStore.open_existing(settings.state.path)
    if state is None:
        where = settings.state.path
        raise ConfigError(f"backup {backup_id} is not a missed backup: no state at {where}")
    try:
        found = state.findings.missed(backup_id, stack_uid)
        of_stack = f" of stack {stack_uid}" if stack_uid else ""
        if not found:
            raise ConfigError(
                f"backup {backup_id}{of_stack} is not a missed backup "
                "(`c66-archiver status` lists them)"
            )
        stacks = sorted({finding.stack_uid for finding in found})
        if len(stacks) > 1:
            raise ConfigError(
                f"backup {backup_id} is a missed backup of several stacks ({', '.join(stacks)}): "
                "name one with --stack"
            )
        finding = found[0]
        label = stack_label(finding.stack_uid, state.stack_names.names().get(finding.stack_uid))
        if finding.acknowledged_at is not None:
            when = finding.acknowledged_at
            click.echo(f"missed backup {backup_id} of {label} was acknowledged already ({when})")
            return EXIT_OK
        state.findings.acknowledge(finding, utc_now_iso())
    finally:
        state.close()
    click.echo(f"acknowledged: missed backup {backup_id} of {label}")
    return EXIT_OK
