"""The pass progress display: rows per backup, totals, and silence off a terminal."""

from __future__ import annotations

import io
import re

from rich.console import Console

from archiver.sync.progress import PassProgress


def _plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", text)


def _terminal() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=True, width=120), buffer


def test_rows_show_bytes_and_totals_on_a_terminal() -> None:
    """On a terminal, backups get rows and the totals row counts bytes and finished backups."""
    console, buffer = _terminal()
    with PassProgress(enabled=True, console=console) as progress:
        progress.add_backup("a", "stack-a mysql #1", total=None)
        progress.set_total("a", 2 * 1024 * 1024)
        progress.advance("a", 1024 * 1024)
        progress.add_backup("b", "stack-b redis #2", total=1024)
        progress.advance("b", 1024)
        progress.finish("b", ok=True)
        progress.advance("a", 1024 * 1024)
        progress.finish("a", ok=True)
    output = _plain(buffer.getvalue())
    assert progress.enabled
    assert "stack-a mysql #1" in output
    assert "2 done" in output
    final = [render for render in output.split("\r") if render.strip()][-1]
    assert "total (2 done, 0 active)" in final
    # 1 KiB + 2 MiB, in the binary units of the summary line; the rate too.
    assert "2.0/2.0 MiB" in final
    assert re.search(r"\d B/s|[KMGT]iB/s", final)
    assert " MB" not in output
    assert "MB/s" not in output


def test_a_pass_with_nothing_to_do_leaves_no_bar() -> None:
    """No backup added: no totals row is ever drawn (no `0/? bytes` bar left behind)."""
    console, buffer = _terminal()
    with PassProgress(enabled=True, console=console) as progress:
        assert progress.enabled
    output = _plain(buffer.getvalue())
    assert "total" not in output
    assert "bytes" not in output


def test_failed_backups_are_counted_in_the_totals_row() -> None:
    """A failed backup is shown as failed in the totals label."""
    console, buffer = _terminal()
    with PassProgress(enabled=True, console=console) as progress:
        progress.add_backup("a", "stack-a mysql #1", total=100)
        progress.advance("a", 10)
        progress.finish("a", ok=False)
    assert "1 failed" in buffer.getvalue()


def test_disabled_or_off_terminal_prints_nothing() -> None:
    """Disabled, or on a non-terminal stream, the display is silent and calls are no-ops."""
    for enabled, console in (
        (False, _terminal()[0]),
        (True, Console(file=io.StringIO(), force_terminal=False)),
    ):
        with PassProgress(enabled=enabled, console=console) as progress:
            progress.add_backup("a", "x", total=10)
            progress.advance("a", 10)
            progress.advance("unknown-key", 10)
            progress.finish("a", ok=True)
        assert not progress.enabled
        assert console.file.getvalue() == ""  # type: ignore[attr-defined]


def test_the_totals_row_names_the_bandwidth_limit() -> None:
    """With `[transfer] bandwidth_limit`, the totals row says the cap in force."""
    console, buffer = _terminal()
    with PassProgress(enabled=True, console=console, bandwidth_limit=50 * 1024 * 1024) as progress:
        progress.add_backup("a", "stack-a mysql #1", total=100)
        progress.advance("a", 100)
        progress.finish("a", ok=True)
    final = [r for r in _plain(buffer.getvalue()).split("\r") if r.strip()][-1]
    assert "total (1 done, 0 active, limit 50.0 MiB/s)" in final
