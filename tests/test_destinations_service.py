"""Several destinations in the service: /metrics and the status page, per destination."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from archiver.config.settings import load_settings
from archiver.service.health import evaluate
from archiver.service.page import render_page
from archiver.service.status_document import status_document
from archiver.simulator import Simulator, SimulatorServer
from archiver.state.store import StateStore
from archiver.sync.runtime import Runtime
from archiver.sync.sync_pass import SyncPass
from tests.conftest import TOKEN, Workspace
from tests.destinations_helpers import config, local, near


def _sample(metrics: str, name: str, storage: str) -> float:
    match = re.search(rf'^{name}{{storage="{storage}"}} (\S+)$', metrics, re.MULTILINE)
    assert match, f"{name}{{storage={storage!r}}} not in /metrics"
    return float(match.group(1))


async def test_metrics_carry_a_storage_label(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """Backups, bytes and backups missing per destination; copy failures per destination."""
    sim.add_backup("stack-a", size=1234)
    (workspace.root / "far").write_text("a file where the folder should be")
    path = config(workspace, server, [near(workspace), local(workspace, "far")])
    async with Runtime(load_settings(Path(path)), TOKEN, metrics=True) as runtime:
        summary = await SyncPass(runtime).run()
        await runtime.metrics.pass_finished(summary)
        metrics = runtime.metrics.render().decode()
    prefix = "c66_archiver_storage"
    assert _sample(metrics, f"{prefix}_backups", "near") == 1
    assert _sample(metrics, f"{prefix}_backups", "far") == 0
    assert _sample(metrics, f"{prefix}_bytes", "near") == 1234
    assert _sample(metrics, f"{prefix}_missing_backups", "far") == 1
    assert _sample(metrics, f"{prefix}_missing_backups", "near") == 0
    assert _sample(metrics, f"{prefix}_copy_failures_total", "far") >= 1
    assert _sample(metrics, f"{prefix}_copy_failures_total", "near") == 0


async def test_the_page_shows_which_destinations_hold_each_day(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """A strip per destination: a day near holds and far lacks is a gap in far's strip only."""
    today = datetime.now(UTC).replace(hour=3, minute=0, second=0, microsecond=0)
    earlier, later = today - timedelta(days=3), today - timedelta(days=1)
    first = sim.add_backup("stack-a", size=100, backup_date=earlier)
    sim.add_backup("stack-a", size=100, backup_date=later)
    path = config(workspace, server, [near(workspace), local(workspace, "far")])
    settings = load_settings(Path(path))
    async with Runtime(settings, TOKEN) as runtime:
        assert (await SyncPass(runtime).run()).ok
    state = StateStore.open(workspace.state)
    try:
        state.archived.forget("stack-a", first, "far")  # far lacks the earlier day's backup
        now = datetime.now(UTC)
        document = status_document(state, destinations=settings.storage, now=now)
        page = render_page(document, evaluate(settings, state, now), now=now)
    finally:
        state.close()
    strips = dict(re.findall(r'<figure data-storage="(\w+)">(.*?)</figure>', page))
    assert set(strips) == {"near", "far"}
    earlier_day = f'data-day="{earlier.date().isoformat()}"'
    later_day = f'data-day="{later.date().isoformat()}"'
    assert f'<g class="day-none" {earlier_day}' in strips["far"]
    assert re.search(rf'<rect class="some"[^>]*{earlier_day}', strips["near"])
    assert re.search(rf'<rect class="some"[^>]*{later_day}', strips["far"])
    assert f'<g class="day-none" {earlier_day}' not in strips["near"]


async def test_status_with_several_destinations_fits_80_columns(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """The Destinations table and `--all` name every destination, nothing cut, within 80."""
    from rich.console import Console

    from archiver.commands.status import render_status

    sim.add_backup("stack-a", database_name="shop_production", size=1000)
    path = config(workspace, server, [near(workspace), local(workspace, "offsite-copy")])
    settings = load_settings(Path(path))
    async with Runtime(settings, TOKEN) as runtime:
        assert (await SyncPass(runtime).run()).ok
    state = StateStore.open(workspace.state)
    try:
        document = status_document(state, destinations=settings.storage)
    finally:
        state.close()
    console = Console(width=80, record=True, color_system=None)
    render_status(document, console, max_age=timedelta(hours=2), all=True)
    text = console.export_text()
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "Destinations" in text
    assert "in near, offsite-copy" in text
    table = text[text.index("Destinations"):]
    assert "near" in table
    assert "offsite-copy" in table
