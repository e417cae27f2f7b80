"""A finding in words: the webhook's JSON event, and a title and text for people.

Every message names its kind, the stack by name and uid, and the backup id
where there is one. Everything upstream said (names, results) is redacted, and
no URL is ever part of a message.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from archiver.core.secrets import redact
from archiver.core.units import human_bytes, human_duration
from archiver.state.findings import LATE, MISSED, SIZE_ANOMALY, UPSTREAM_FAILED, Finding
from archiver.watch.reading import parse_iso

# The `status --json` list each kind is shown in.
SECTIONS = {
    MISSED: "missed",
    LATE: "late",
    UPSTREAM_FAILED: "upstream_failed",
    SIZE_ANOMALY: "size_anomalies",
}
KIND_WORDS = {
    MISSED: "missed backup",
    LATE: "late backups",
    UPSTREAM_FAILED: "backup failed in Cloud 66",
    SIZE_ANOMALY: "backup shrank",
}


def stack_label(stack_uid: str, stack_name: str | None) -> str:
    """`Shop (5999b763...)`, or the uid alone when the name is not known (or is the uid)."""
    return f"{stack_name} ({stack_uid})" if stack_name and stack_name != stack_uid else stack_uid


def finding_event(finding: Finding, stack_name: str | None, hostname: str) -> dict[str, Any]:
    """The webhook's JSON for one finding: `event` says which kind."""
    title, text = describe(finding, stack_name)
    event: dict[str, Any] = {
        "event": finding.kind,
        "hostname": hostname,
        "stack_uid": finding.stack_uid,
        "stack_name": stack_name,
        **finding.details,
        "noticed_at": finding.noticed_at,
        "title": title,
        "message": text,
    }
    return {key: _redacted(value) for key, value in event.items()}


def describe(finding: Finding, stack_name: str | None) -> tuple[str, str]:
    """A title and a paragraph for people: what happened, and what to do."""
    details = finding.details
    stack = stack_label(finding.stack_uid, stack_name)
    series = f"{details.get('db_type')}/{details.get('database_name')}"
    title = f"c66-archiver: {KIND_WORDS.get(finding.kind, finding.kind)} of {stack}"
    if finding.kind == MISSED:
        title += f", backup {details['backup_id']}"
        text = (
            f"Cloud 66 no longer lists backup {details['backup_id']} ({series}, taken "
            f"{_when(details.get('backup_date'))}) of stack {stack}, and it was never "
            "archived: Cloud 66 rotated it away (keep_count) or it was deleted first. "
            f"Acknowledge it with `c66-archiver watch ack {details['backup_id']} "
            f"--stack {finding.stack_uid}`."
        )
    elif finding.kind == LATE:
        limit = human_duration(timedelta(seconds=details["late_after_seconds"]))
        text = (
            f"The newest good backup of {series} of stack {stack} is backup "
            f"{details['newest_backup_id']}, taken {_when(details.get('newest_backup_date'))}: "
            f"older than {limit}, the most this series should go without one. Check its "
            "backup task in Cloud 66 (a deleted database group leaves its last backups behind)."
        )
    elif finding.kind == UPSTREAM_FAILED:
        title += f", backup {details['backup_id']}"
        text = (
            f"Backup {details['backup_id']} of {series} of stack {stack} (taken "
            f"{_when(details.get('backup_date'))}) failed in Cloud 66: "
            f"{details.get('result') or 'no reason given'}. It is the newest backup of its "
            "series: nothing newer is archived until Cloud 66 makes a good one."
        )
    else:
        title += f", backup {details['backup_id']}"
        share = round(100 * details["size"] / details["typical_size"])
        text = (
            f"Backup {details['backup_id']} of {series} of stack {stack} is "
            f"{human_bytes(details['size'])}, {share}% of its typical "
            f"{human_bytes(details['typical_size'])}: a table dropped, or a dump cut short? "
            f"Look inside with `c66-archiver restore {details['backup_id']} "
            f"--stack {finding.stack_uid} -o - | tar -t`."
        )
    return redact(title), redact(text)


def summary(kind: str, entry: dict[str, Any]) -> str:
    """One short line about a finding's `status --json` entry (its stack aside)."""
    series = f"{entry.get('db_type')}/{entry.get('database_name')}"
    if kind == MISSED:
        return (
            f"{series} #{entry['backup_id']} taken {_when(entry.get('backup_date'))}: "
            "gone from Cloud 66, never archived"
        )
    if kind == LATE:
        limit = human_duration(timedelta(seconds=entry["late_after_seconds"]))
        return (
            f"{series}: newest good #{entry['newest_backup_id']} taken "
            f"{_when(entry.get('newest_backup_date'))}, due within {limit}"
        )
    if kind == UPSTREAM_FAILED:
        return (
            f"{series} #{entry['backup_id']} taken {_when(entry.get('backup_date'))}: "
            f"{entry.get('result') or 'no reason given'}"
        )
    return (
        f"{series} #{entry['backup_id']}: {human_bytes(entry['size'])}, "
        f"typically {human_bytes(entry['typical_size'])}"
    )


def digest(events: Sequence[dict[str, Any]]) -> tuple[str, str]:
    """One title and text for many findings (a burst is told in one message, not fifty)."""
    title = f"c66-archiver: {len(events)} new findings about Cloud 66 backups"
    lines = [f"- {event['title'].removeprefix('c66-archiver: ')}" for event in events]
    return title, "\n".join(lines)


def _when(iso_date: object) -> str:
    moment = parse_iso(iso_date) if isinstance(iso_date, str) else None
    return f"{moment:%Y-%m-%d %H:%M} UTC" if moment else "at an unknown time"


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: _redacted(item) for key, item in value.items()}
    return value
