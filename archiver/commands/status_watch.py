"""The watch's section of `c66-archiver status`: shown only when there is something to say."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape

from archiver.watch.messages import SECTIONS, stack_label, summary

# Worst first; the colour of each kind's label.
_SHOWN = (
    ("missed", "missed", "red"),
    ("upstream_failed", "failed upstream", "red"),
    ("late", "late", "yellow"),
    ("size_anomaly", "shrank", "yellow"),
)


def print_watch(watch: dict[str, list[dict[str, Any]]], console: Console) -> None:
    """One line a finding under "Watch over Cloud 66"; nothing at all when all is well."""
    if not any(watch.get(section) for section in SECTIONS.values()):
        return
    console.print("Watch over Cloud 66:", highlight=False)
    for kind, label, colour in _SHOWN:
        for entry in watch.get(SECTIONS[kind], []):
            line = f"{stack_label(entry['stack_uid'], entry.get('stack_name'))} "
            line += summary(kind, entry)
            if kind == "missed":
                ack = f"c66-archiver watch ack {entry['backup_id']} --stack {entry['stack_uid']}"
                line += f" (`{ack}`)"
            console.print(f"  [{colour}]{label}[/{colour}] {escape(line)}", highlight=False)

