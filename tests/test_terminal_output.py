"""What a person sees at an 80-column terminal: status tables that fit, a pass's progress and
log in one unit system, one line a backup, the summary once, no noise."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from archiver.commands.status import backups_table, render_status, stacks_table
from archiver.core.units import human_bytes
from archiver.simulator import Simulator, SimulatorServer
from tests.conftest import Workspace
from tests.terminal import plain, run_on_terminal

UID_A = "5999b763474b0eafa5fafb64bff0ba80"
UID_B = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def _archived(uid: str, backup_id: int, database: str, hours_ago: int) -> dict[str, Any]:
    taken = (NOW - timedelta(hours=hours_ago)).isoformat()
    return {
        "stack_uid": uid, "backup_id": backup_id, "db_type": "postgresql",
        "database_name": database, "backup_date": taken, "size": 123_456_789,
        "sha256": "0" * 64, "location": f"/var/lib/c66-archiver/archive/{uid}/x.tar",
        "archived_at": taken, "verified_at": NOW.isoformat(), "verify_ok": True,
        "verify_problem": None,
    }


def _stack(
    uid: str, name: str | None, last: dict[str, Any] | None, failures: int
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "stack_uid": uid, "archived_count": 1234, "archived_bytes": 5 * 1024**4,
        "last_backup": last, "last_backup_age_seconds": 3 * 3600 if last else None,
        "last_success_at": (NOW - timedelta(minutes=5)).isoformat() if last else None,
        "failures": [{"stack_uid": uid, "backup_id": None, "reason": "x"}] * failures,
        "last_verified_at": None if failures else NOW.isoformat(), "corrupt": 0,
    }
    if name:
        entry["stack_name"] = name
    return entry


def _squash(text: str) -> str:
    return "".join(text.split())


def _rows(table: Table, width: int) -> list[list[str]]:
    """Each row's cells, whole and without spaces: drawn with ASCII rules between rows, the
    pieces of a wrapped cell joined again (so a folded uid reads as one)."""
    table.box, table.show_lines = box.ASCII, True
    console = Console(width=width, record=True, color_system=None)
    console.print(table)
    rows: list[list[str]] = []
    current: list[list[str]] = []
    for line in console.export_text().splitlines():
        if line.startswith("+") or line.startswith("|-"):
            if current:
                rows.append([_squash("".join(piece)) for piece in zip(*current, strict=True)])
            current = []
        elif line.startswith("|"):
            current.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def _drawn(table: Table, width: int = 80) -> str:
    console = Console(width=width, record=True, color_system=None)
    console.print(table)
    return console.export_text()


def test_the_stacks_table_fits_80_columns_with_real_uids_and_names() -> None:
    """32-character uids, names, long databases: nothing cut with an ellipsis, every fact whole."""
    stacks = [
        _stack(UID_A, "Shop (production)",
               {"backup_id": 4711, "db_type": "postgresql", "database_name": "shop_production",
                "backup_date": (NOW - timedelta(hours=3)).isoformat(), "archived_at": ""}, 0),
        _stack(UID_B, None, None, 2),
    ]
    drawn = _drawn(stacks_table(stacks, timedelta(hours=2), NOW))
    assert "…" not in drawn
    assert max(len(line) for line in drawn.splitlines()) <= 80
    assert "stale" not in drawn
    assert "more than" not in drawn
    header, first, second = _rows(stacks_table(stacks, timedelta(hours=2), NOW), 80)
    assert header == ["stack", "lastbackup", "archived", "success", "verified"]
    assert first[0] == _squash(f"Shop (production){UID_A}")
    assert first[1] == _squash("postgresql/shop_production #4711 Nov 29 09:00, 3h00m ago")
    assert first[2] == _squash("1234, 5.0 TiB")
    assert first[3] == _squash("5m00s ago")
    assert second[0] == UID_B
    assert second[3] == _squash("never 2 failed")


def test_the_stale_caption_shows_only_when_a_stack_is_stale() -> None:
    """The caption explains red; it is there only when some stack has not succeeded recently."""
    stack = _stack(UID_A, None, None, 0)
    stack["last_success_at"] = (NOW - timedelta(hours=5)).isoformat()
    drawn = _drawn(stacks_table([stack], timedelta(hours=2), NOW))
    assert "no success for more than 2h00m" in drawn


def test_the_backups_table_fits_80_columns_grouped_by_stack() -> None:
    """--all at 80 columns: each stack named once, ids, short dates and sizes whole."""
    archived = [
        _archived(UID_A, 4710, "shop_production", 27),
        _archived(UID_A, 4711, "shop_production", 3),
        _archived(UID_B, 99, "analytics", 400 * 24),
    ]
    table = backups_table(archived, {UID_A: "Shop"}, NOW)
    drawn = _drawn(table)
    assert "…" not in drawn
    assert max(len(line) for line in drawn.splitlines()) <= 80
    header, *rows = _rows(backups_table(archived, {UID_A: "Shop"}, NOW), 80)
    assert header == ["stack", "backup", "taken", "size", "verified"]
    assert [row[0] for row in rows] == [UID_B, f"Shop{UID_A}", ""]  # in uid order
    assert rows[1][1] == _squash("#4710 postgresql/shop_production")
    assert [row[2] for row in rows] == ["2025-10-25", "Nov2809:00", "Nov2909:00"]
    assert rows[1][3] == _squash("117.7 MiB")


def test_a_stack_level_failure_names_no_backup() -> None:
    """A failure without a backup id reads `failed stack X: reason`, never `backup None`."""
    document = {
        "stacks": [], "archived": [], "last_verify": None,
        "last_run": {
            "started_at": NOW.isoformat(), "finished_at": NOW.isoformat(), "ok": False,
            "archived": 0, "skipped": 0, "bytes": 0,
            "failed": [
                {"stack_uid": "no-such-stack", "backup_id": None, "reason": "not found"},
                {"stack_uid": "stack-a", "backup_id": 7, "reason": "HTTP 500"},
            ],
        },
    }
    console = Console(width=80, record=True, color_system=None)
    render_status(document, console, max_age=timedelta(hours=2))
    text = console.export_text()
    assert "failed stack no-such-stack: not found" in text
    assert "failed stack stack-a backup 7: HTTP 500" in text
    assert "None" not in text


async def test_a_pass_at_an_80_column_terminal(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """One line a backup (binary units, no sha256), the summary once; a pass with nothing to
    do draws no bar; -v adds no asyncio selector line; status then has no stale caption."""
    sim.add_stack(UID_A)
    sizes = {sim.add_backup(UID_A, size=size): size for size in (300_000, 2 * 1024 * 1024)}
    config = str(workspace.write_config(server.base_url, [{"uid": UID_A}]))
    code, output = await run_on_terminal("--config", config, "sync")
    assert code == 0, output
    lines = plain(output).replace("\r\n", "\n").replace("\r", "\n").splitlines()
    for backup_id, size in sizes.items():
        (line,) = [line for line in lines if f"#{backup_id} " in line and "archived" in line]
        expected = rf"\d\d:\d\d:\d\d backup archived {UID_A} mysql #{backup_id} "
        assert re.fullmatch(expected + re.escape(human_bytes(size)), line.strip()), line
        assert len(line.rstrip()) <= 80
    text = "\n".join(lines)
    assert text.count("archived 2, already had 0") == 1
    assert "sha256" not in text
    assert not re.search(r"\d (MB|kB)\b|MB/s|kB/s", text)

    code, output = await run_on_terminal("--config", config, "-v", "sync")
    text = plain(output)
    assert code == 0, text
    assert "total (" not in text
    assert "bytes" not in text
    assert "Using selector" not in text
    assert text.count("archived 0, already had 2") == 1

    code, output = await run_on_terminal("--config", config, "status")
    text = plain(output)
    assert code == 0, text
    assert "…" not in text
    assert "more than" not in text
    assert UID_A[:12] in text  # folded whole over two lines (the table tests check it)
    assert UID_A[-8:] in text


def test_the_prune_and_verify_tables_fit_80_columns() -> None:
    """prune's and verify's tables, real uids and long reasons: nothing cut, lines within 80."""
    from archiver.commands.prune import _table as prune_table
    from archiver.commands.verify import _table as verify_table
    from archiver.lifecycle.prune import Verdict
    from archiver.lifecycle.verify import CheckResult
    from archiver.model.manifest import ArchivedBackup

    def record(uid: str, backup_id: int) -> ArchivedBackup:
        return ArchivedBackup(
            stack_uid=uid, backup_id=backup_id, db_type="postgresql",
            database_name="shop_production", size=123_456_789, sha256="0" * 64,
            archived_at="", tar_key=f"cloud66/{uid}/shop.tar", manifest_key="m",
            backup_date="2026-11-27T03:00:00Z",
        )

    reasons = ("last 1", "daily 2026-11-27", "weekly 2026-W48", "monthly 2026-11")
    verdicts = [Verdict(record(UID_A, 8), reasons, "p"), Verdict(record(UID_A, 1), (), "p"),
                Verdict(record(UID_B, 3), ("last 1",), "p")]
    results = [CheckResult(record(UID_A, 8), None),
               CheckResult(record(UID_B, 3), "got 1000 bytes, the manifest says 123456789")]
    for table in (prune_table(verdicts), verify_table(results)):
        drawn = _drawn(table)
        assert "…" not in drawn
        assert max(len(line) for line in drawn.splitlines()) <= 80
    prune_rows = _rows(prune_table(verdicts), 80)
    assert prune_rows[1][3] == _squash("keep: " + ", ".join(reasons))
    assert [row[0] for row in prune_rows[1:]] == [UID_A, "", UID_B]
    verify_rows = _rows(verify_table(results), 80)
    assert verify_rows[1][4] == _squash("got 1000 bytes, the manifest says 123456789")
