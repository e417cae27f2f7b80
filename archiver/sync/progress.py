"""A live progress display for one pass, on a terminal.

One row a backup in flight, and a totals row (bytes, rate, ETA, and the
bandwidth limit when one is set) once there is a first backup: a pass with
nothing to do shows no bars at all. Sizes and rates are in binary units
(MiB, MiB/s), as the summary line writes them. The
display is transient: when the pass ends the bars go, and what stays on the
screen is the log (one line a backup archived, then the summary). rich
redraws on its own thread a few times a second, so `advance` (called for
every chunk) only moves counters. Disabled (the daemon, non-terminal runs),
every method is a cheap no-op.

Logging while the display is live: rich swaps `sys.stderr` for a proxy that
prints whole lines above the bars. `archiver.core.log.configure_logging()`
without an explicit `stream` writes to the current `sys.stderr` at each
line, so log lines land above the display instead of through it. Anything
else that prints while the display is live should print through
`PassProgress.console`.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from archiver.core.units import human_bytes

if TYPE_CHECKING:  # rich is imported only for a display that shows (2 MiB resident)
    from rich.console import Console
    from rich.progress import Progress, ProgressColumn, TaskID


__all__ = ["PassProgress"]


def _binary_speed_column() -> ProgressColumn:
    """`241.1 MiB/s`: rich's own speed column counts in decimal MB."""
    from rich.progress import ProgressColumn, Task
    from rich.text import Text

    class BinarySpeedColumn(ProgressColumn):
        def render(self, task: Task) -> Text:
            speed = task.finished_speed or task.speed
            text = "?" if speed is None else f"{human_bytes(int(speed))}/s"
            return Text(text, style="progress.data.speed")

    return BinarySpeedColumn()


@dataclass
class _Row:
    """One backup's row and what it adds to the totals."""

    task_id: TaskID
    total: int | None
    done: int = 0


class PassProgress:
    """Progress bars for the backups of one pass; a context manager.

    Keys are the caller's (e.g. "<stack_uid>/<backup_id>"). Unknown keys are
    ignored: a progress display must never break a transfer.
    """

    def __init__(
        self, enabled: bool, console: Console | None = None, *, bandwidth_limit: int = 0
    ) -> None:
        # `[transfer] bandwidth_limit` (bytes/s, 0: none): named in the totals row.
        self._limit = f", limit {human_bytes(bandwidth_limit)}/s" if bandwidth_limit else ""
        self._rows: dict[str, _Row] = {}
        self._finished = 0
        self._failed = 0
        # Bytes moved by rows already taken off the display.
        self._settled_bytes = 0
        self._progress: Progress | None = None
        self.console: Console | None = None  # set when enabled
        # The totals row, added with the first backup.
        self._totals: TaskID | None = None
        if not enabled:
            return
        from rich.console import Console

        self.console = console if console is not None else Console(stderr=True)
        # Off the terminal the bars would only add noise to a log file.
        if self.console.is_terminal:
            self._progress = self._build(self.console)

    @staticmethod
    def _build(console: Console) -> Progress:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        return Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            _binary_speed_column(),
            TimeRemainingColumn(),
            console=console,
            # The log lines above the bars tell what was done; the bars only what is going on.
            transient=True,
        )

    @property
    def enabled(self) -> bool:
        """Whether anything is displayed."""
        return self._progress is not None

    def __enter__(self) -> PassProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def add_backup(self, key: str, description: str, total: int | None) -> None:
        """Show a row for a backup; `total` in bytes, None until known. Re-adding restarts it."""
        if self._progress is None:
            return
        old = self._rows.pop(key, None)
        if old is not None:
            # A retry: the first attempt's bytes were moved, so they stay in the totals.
            self._progress.remove_task(old.task_id)
            self._settled_bytes += old.done
        if self._totals is None:
            self._totals = self._progress.add_task(self._totals_description(), total=None)
        from rich.markup import escape

        task_id = self._progress.add_task(escape(description), total=total)
        self._rows[key] = _Row(task_id, total)
        self._update_totals()

    def set_total(self, key: str, total: int) -> None:
        """Set a backup's size once the first response tells it."""
        row = self._rows.get(key)
        if self._progress is None or row is None:
            return
        row.total = total
        self._progress.update(row.task_id, total=total)
        self._update_totals()

    def advance(self, key: str, nbytes: int) -> None:
        """Count `nbytes` more transferred for a backup (called per chunk: counters only)."""
        row = self._rows.get(key)
        if self._progress is None or row is None:
            return
        row.done += nbytes
        self._progress.advance(row.task_id, nbytes)
        self._advance_totals(nbytes)
        if row.total is None:
            # The totals row counts an unknown size as what has arrived so far.
            self._update_totals()

    def finish(self, key: str, ok: bool) -> None:
        """Take a backup's row off the display; a failure's missing bytes leave the totals."""
        row = self._rows.pop(key, None)
        if self._progress is None or row is None:
            return
        self._progress.remove_task(row.task_id)
        if ok:
            self._finished += 1
        else:
            self._failed += 1
        # The bytes a row moved stay in the totals, but a failed download's
        # remainder no longer counts as due.
        self._settled_bytes += row.done
        self._update_totals()

    def _advance_totals(self, nbytes: int) -> None:
        if self._progress is not None and self._totals is not None:
            self._progress.advance(self._totals, nbytes)

    def _update_totals(self) -> None:
        """Recompute the totals row's size and label: a sum over the few rows in flight."""
        if self._progress is None or self._totals is None:
            return
        in_flight = sum(
            row.total if row.total is not None else row.done for row in self._rows.values()
        )
        self._progress.update(
            self._totals,
            total=self._settled_bytes + in_flight,
            description=self._totals_description(),
        )

    def _totals_description(self) -> str:
        label = f"[bold]total[/bold] ({self._finished} done"
        if self._failed:
            label += f", [red]{self._failed} failed[/red]"
        return label + f", {len(self._rows)} active{self._limit})"
