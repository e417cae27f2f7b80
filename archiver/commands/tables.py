"""The shape every table of the commands shares: made for 80 columns.

No outer or inner rules; a stack named once (its name over its uid when the
name is known) at the top of its rows; dates short (`Nov 27 20:15` this year,
`2025-11-27` before, UTC). What does not fit wraps inside its cell: nothing is
cut with an ellipsis, and a uid folds whole (it is copied into commands).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TypeVar

from rich import box
from rich.markup import escape
from rich.table import Table

_Row = TypeVar("_Row")


def command_table(title: str, caption: str | None = None) -> Table:
    """An empty table in the common shape."""
    return Table(title=title, caption=caption, box=box.SIMPLE_HEAD, title_justify="left",
                 caption_justify="left", pad_edge=False)


def add_stack_column(table: Table) -> None:
    """The first column: stacks, folded rather than cut."""
    table.add_column("stack", overflow="fold", min_width=16)


def stack_cell(stack_uid: str, name: str | None = None) -> str:
    """The name people know over the uid commands take; the uid alone when no name is known."""
    if name:
        return f"[bold]{escape(name)}[/bold]\n{escape(stack_uid)}"
    return escape(stack_uid)


def short_date(text: str | None, now: datetime | None = None) -> str:
    """`Dec 04 09:25` (UTC) this year, `2025-12-04` before; `-` for none."""
    if not text:
        return "-"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return escape(text)
    now = now or datetime.now(UTC)
    moment = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)
    return f"{moment:%b %d %H:%M}" if moment.year == now.year else f"{moment:%Y-%m-%d}"


def add_grouped_rows(
    table: Table,
    rows: Sequence[_Row],
    stack_of: Callable[[_Row], str],
    cells: Callable[[_Row], list[str]],
    names: dict[str, str] | None = None,
) -> None:
    """One row each, in order; the stack named on the first row of its group, a gap between."""
    names = names or {}
    for index, row in enumerate(rows):
        stack_uid = stack_of(row)
        first = index == 0 or stack_of(rows[index - 1]) != stack_uid
        last_of_group = index + 1 < len(rows) and stack_of(rows[index + 1]) != stack_uid
        table.add_row(
            stack_cell(stack_uid, names.get(stack_uid)) if first else "",
            *cells(row),
            end_section=last_of_group,
        )
