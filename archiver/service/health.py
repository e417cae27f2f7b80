"""One health rule for /readyz and `c66-archiver health`.

Healthy means "a pass succeeded recently": the last pass without failures
finished at most `max_age` ago. `max_age` is `[http] max_age`, or by default
twice the schedule's period plus its jitter (for cron: twice the longest gap
between its fire times over the coming week, so a weekdays-only schedule is not
red every Monday morning).

Before the first good pass there is nothing to be fresh: that is unhealthy,
except inside the daemon's start-up grace (`running_since` at most `max_age`
ago), which /readyz gives and the one-shot `health` command cannot know
(Docker's `--start-period` or a probe's initial delay covers it there).
/readyz adds one more reason: storage that does not take a write.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from archiver.config.settings import Settings
from archiver.core.units import human_duration
from archiver.service.schedule import max_age_for
from archiver.state.store import StateStore


@dataclass(frozen=True)
class HealthReport:
    """Whether the archiver is healthy, and why not."""

    ok: bool
    reasons: list[str]
    last_success_at: datetime | None
    max_age: timedelta
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        """One line for people and logs."""
        if not self.ok:
            return "unhealthy: " + "; ".join(self.reasons)
        return "healthy: " + "; ".join(self.notes)

    def as_dict(self) -> dict[str, Any]:
        """The /readyz JSON body."""
        return {
            "ready": self.ok,
            "reasons": self.reasons,
            "notes": self.notes,
            "last_success_at": self.last_success_at.isoformat() if self.last_success_at else None,
            "max_age_seconds": self.max_age.total_seconds(),
        }


def evaluate(
    settings: Settings,
    state: StateStore,
    now: datetime,
    *,
    running_since: datetime | None = None,
    storage_problem: str | None = None,
) -> HealthReport:
    """Apply the rule: fresh enough (or within start-up grace), and storage writable."""
    max_age = max_age_for(settings)
    last = state.runs.last_success_at()
    reasons: list[str] = []
    notes: list[str] = []
    if last is None:
        if running_since is not None and now - running_since <= max_age:
            notes.append("no pass has succeeded yet; within the start-up grace")
        else:
            reasons.append("no pass has succeeded yet")
    else:
        age = now - last
        described = f"last successful pass finished {human_duration(age)} ago"
        if age > max_age:
            reasons.append(f"{described}, more than max_age {human_duration(max_age)}")
        else:
            notes.append(f"{described} (max_age {human_duration(max_age)})")
    if storage_problem:
        reasons.append(f"storage is not writable: {storage_problem}")
    return HealthReport(not reasons, reasons, last, max_age, notes)


async def check_health(settings: Settings) -> int:
    """`c66-archiver health`: print one line; exit 0 when healthy, else 1."""
    import click

    state = StateStore.open_existing(settings.state.path)
    if state is None:
        # No state, no pass ever ran here; and a health check must not create one.
        click.echo(f"unhealthy: no state at {settings.state.path}: no pass has run yet")
        return 1
    try:
        report = evaluate(settings, state, datetime.now(UTC))
    finally:
        state.close()
    click.echo(report.line())
    return 0 if report.ok else 1
