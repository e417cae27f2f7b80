"""The status page at `/`: rendered by a real daemon, loaded in headless Chromium."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import struct
import zlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from archiver.config.settings import load_settings
from archiver.core.secrets import add_secret
from archiver.model.manifest import ArchivedBackup
from archiver.service.health import evaluate
from archiver.service.page import day_classes, freshness, render_page
from archiver.service.status_document import status_document
from archiver.simulator import Simulator, SimulatorServer
from archiver.state.records import RunRecord
from archiver.state.store import StateStore
from tests.conftest import REPO_ROOT, TOKEN, Workspace, run_pass
from tests.daemon_process import (
    free_port,
    http_get,
    running_daemon,
    wait_for_metric,
)

CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (scripts/test.sh installs it)"
)
# The flags that keep a headless Chromium quiet, offline and out of the user's profile.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)
PHONE = (390, 844)
DESKTOP = (1280, 900)
SCREENSHOT = REPO_ROOT / "docs" / "status-page.png"
PAGE_BACKGROUND = (0xF6, 0xF7, 0xF9)  # --bg of the page's inline style sheet

GREEN = "5999b763474b0eafa5fafb64bff0ba80"  # daily backups, one day missing
STALE = "7d1e6f0c2a9b4e8f9c3d5a1b2e4f6a8c"  # archived until 3 days ago, now failing
NEW = "a1b2c3d4e5f60718293a4b5c6d7e8f90"  # failing since it was added
ODD = "f00dcafe0000000000000000000000ff"  # a database name that is HTML
HOSTILE_NAME = "<img src=x onerror=alert(1)>"


# -- a small DOM of what Chromium rendered ---------------------------------------------


@dataclass
class Node:
    """One element of the dumped DOM: its tag, attributes, text (descendants') and children."""

    tag: str
    attrs: dict[str, str]
    children: list[Node] = field(default_factory=list)
    text: str = ""

    def all(self, tag: str | None = None, **attrs: str) -> list[Node]:
        """Every descendant with this tag (any when None) whose attributes include `attrs`."""
        found = []
        for child in self.children:
            wanted = {key.replace("_", "-"): value for key, value in attrs.items()}
            if (tag is None or child.tag == tag) and all(
                child.attrs.get(k) == v for k, v in wanted.items()
            ):
                found.append(child)
            found.extend(child.all(tag, **attrs))
        return found

    def one(self, tag: str | None = None, **attrs: str) -> Node:
        (node,) = self.all(tag, **attrs)
        return node


class _DomBuilder(HTMLParser):
    _VOID = frozenset({"meta", "link", "br", "img", "input", "hr", "source", "wbr"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self._open = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {key: value or "" for key, value in attrs})
        self._open[-1].children.append(node)
        if tag not in self._VOID:
            self._open.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._open[-1].children.append(Node(tag, {key: value or "" for key, value in attrs}))

    def handle_endtag(self, tag: str) -> None:
        while len(self._open) > 1:
            if self._open.pop().tag == tag:
                break

    def handle_data(self, data: str) -> None:
        for node in self._open:
            node.text += data


def parse_dom(text: str) -> Node:
    builder = _DomBuilder()
    builder.feed(text)
    builder.close()
    return builder.root


# -- Chromium and its screenshots -------------------------------------------------------


async def _chromium(url: str, profile: Path, screenshot: Path, size: tuple[int, int]) -> str:
    """Load `url` in headless Chromium at `size`; save a screenshot; return the rendered DOM."""
    assert CHROMIUM is not None
    process = await asyncio.create_subprocess_exec(
        CHROMIUM,
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        f"--window-size={size[0]},{size[1]}",
        f"--screenshot={screenshot}",
        "--dump-dom",
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode(errors="replace")[-2000:]
    return stdout.decode()


def _png_size_and_first_pixel(path: Path) -> tuple[tuple[int, int], tuple[int, int, int]]:
    """(width, height) and the top-left pixel's RGB of an 8-bit RGB or RGBA PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    assert (depth, colour) in ((8, 2), (8, 6)), (depth, colour)
    chunks, offset = [], 8
    while offset < len(data):
        length, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if kind == b"IDAT":
            chunks.append(data[offset + 8 : offset + 8 + length])
        offset += 12 + length
    raw = zlib.decompressobj().decompress(b"".join(chunks), 16)
    # Row 0, pixel 0: every PNG filter predicts 0 there, so the bytes are the pixel.
    red, green, blue = raw[1:4]
    return (width, height), (red, green, blue)


# -- the scenario -----------------------------------------------------------------------


@dataclass
class Scenario:
    """What the simulator holds: per stack, the UTC days its backups were taken."""

    days: dict[str, Counter[date]]
    archived: int
    today: date  # the day the backups were dated from (not the page's: midnight may pass)


def _add_daily(sim: Simulator, uid: str, now: datetime, ages: list[int], **options: Any) -> None:
    for age in ages:
        sim.add_backup(uid, size=200 + age, backup_date=now - timedelta(days=age), **options)


async def _four_stacks(sim: Simulator, server: SimulatorServer, workspace: Workspace) -> Scenario:
    """GREEN daily but 6 days ago; STALE archived until 3 days ago and now failing;
    NEW failing from the start; ODD one backup of a database named like HTML."""
    now = datetime.now(UTC).replace(microsecond=0)
    _add_daily(sim, GREEN, now, [age for age in range(20) if age != 6], database_name="shop")
    _add_daily(sim, GREEN, now, [1, 4, 7, 10], db_type="redis", database_name="cache")
    _add_daily(sim, STALE, now, list(range(3, 15)), db_type="postgresql", database_name="api")
    _add_daily(sim, ODD, now, [2], database_name=HOSTILE_NAME)
    sim.add_stack(NEW)
    # A first pass archives the history; then STALE's last success is moved 3 days back.
    first = workspace.write_config(server.base_url, [{"uid": u} for u in (GREEN, STALE, ODD)])
    assert (await run_pass(load_settings(first))).ok
    state = StateStore.open(workspace.state)
    state.runs.record_stack_success(STALE, now - timedelta(days=3))
    records = state.archived.all()
    state.close()
    sim.faults.malformed_json_stacks = {STALE, NEW}
    days: dict[str, Counter[date]] = {}
    for record in records:
        taken = datetime.fromisoformat(record.backup_date or record.archived_at)
        days.setdefault(record.stack_uid, Counter())[taken.astimezone(UTC).date()] += 1
    return Scenario(days, len(records), now.date())


def _daemon_config(
    workspace: Workspace, server: SimulatorServer, port: int, **http: object
) -> Path:
    return workspace.write_config(
        server.base_url,
        [{"uid": uid} for uid in (GREEN, STALE, NEW, ODD)],
        http={"listen": f"127.0.0.1:{port}", **http},
        schedule={"interval": "1h"},
        transfer={"grace_period": "1s"},
    )


# -- the tests --------------------------------------------------------------------------


@needs_chromium
async def test_chromium_renders_every_stack_with_freshness_history_and_failures(
    sim: Simulator, server: SimulatorServer, workspace: Workspace, tmp_path: Path
) -> None:
    """A daemon's page, loaded in Chromium, shows each stack's facts, freshness and 30 days."""
    scenario = await _four_stacks(sim, server, workspace)
    port = free_port()
    async with running_daemon(_daemon_config(workspace, server, port), port) as base:
        await wait_for_metric(base, "c66_archiver_passes_total", {"result": "failed"}, 1)
        status, _ = await http_get(f"{base}/")
        assert status == 200
        phone = tmp_path / "status-page-phone.png"
        dom_text = await _chromium(f"{base}/", tmp_path / "profile", phone, PHONE)
        await _chromium(f"{base}/", tmp_path / "profile", tmp_path / "desktop.png", DESKTOP)
    print(f"screenshots: {phone} {tmp_path / 'desktop.png'}")  # the test's artefacts
    dom = parse_dom(dom_text)

    cards = {node.attrs["data-stack-uid"]: node for node in dom.all("article")}
    assert {uid: card.attrs["data-freshness"] for uid, card in cards.items()} == {
        GREEN: "fresh",
        STALE: "stale",
        NEW: "attention",
        ODD: "fresh",
    }
    for uid, card in cards.items():
        _assert_history(card, scenario.days.get(uid, Counter()))
    # The missing day stands out, and so does the day after STALE's last backup.
    assert _day(cards[GREEN], scenario.today - timedelta(days=6)).attrs["class"] == "day-none"
    assert _day(cards[STALE], scenario.today - timedelta(days=2)).attrs["class"] == "day-none"
    assert (
        cards[GREEN]
        .one("dd", **{"class": "archived"})
        .text.startswith(f"{sum(scenario.days[GREEN].values())} · ")
    )
    assert cards[NEW].one("dd", **{"class": "last-success"}).text == "never"
    assert "could not list backups" in cards[STALE].one("ul", **{"class": "failures"}).text
    # The watch: STALE's daily series has had no backup for 3 days (late after 2 days).
    assert cards[STALE].one("ul", **{"class": "watch"}).text.startswith("late: postgresql/api")
    assert cards[GREEN].all("ul", **{"class": "watch"}) == []
    assert dom.one("span", id="health").text == "unhealthy"  # a stack is stale

    assert dom.one("div", id="total-stacks").one("dd").text == "4"
    assert dom.one("div", id="total-backups").one("dd").text == str(scenario.archived)
    assert dom.one("div", id="total-failures").one("dd").text == "2"
    last_pass = dom.one("p", id="last-pass").text
    assert last_pass.startswith("failures finished ")

    # Upstream text is shown as text, never as markup; nothing runs; nothing secret shows.
    assert (
        cards[ODD].one("dd", **{"class": "last-backup"}).text.startswith(f"mysql/{HOSTILE_NAME} #")
    )
    assert dom.all("img") == []
    assert dom.all("script") == []
    assert TOKEN not in dom_text
    assert not re.search(r"\?[\w.-]+=", dom_text), "a query string is on the page"

    (width, height), corner = _png_size_and_first_pixel(phone)
    assert (width, height) == PHONE
    assert corner == PAGE_BACKGROUND  # the inline style applied: the CSP's hash matches it
    if os.environ.get("C66_UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(phone, SCREENSHOT)


def _day(card: Node, day: date) -> Node:
    """The element for `day` in the card's 30-day history."""
    return card.one(data_day=day.isoformat())


def _assert_history(card: Node, expected: Counter[date]) -> None:
    """30 days, oldest first, ending today; each day's count as archived."""
    days = [node for node in card.one("svg").all() if "data-day" in node.attrs]
    assert len(days) == 30
    shown = [date.fromisoformat(node.attrs["data-day"]) for node in days]
    assert shown == [shown[-1] - timedelta(days=29 - n) for n in range(30)]
    assert {day: int(node.attrs["data-count"]) for day, node in zip(shown, days, strict=True)} == {
        day: expected.get(day, 0) for day in shown
    }


async def test_page_headers_forbid_scripts_and_page_false_turns_it_off(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """`/` is HTML under a no-script CSP; with `page = false` it is 404 and /metrics stays."""
    sim.add_backup(GREEN, size=100)
    port = free_port()
    config = workspace.write_config(
        server.base_url, [{"uid": GREEN}], http={"listen": f"127.0.0.1:{port}"}
    )
    async with running_daemon(config, port) as base:
        await wait_for_metric(base, "c66_archiver_passes_total", {"result": "ok"}, 1)
        headers, body = await _get_with_headers(f"{base}/")
    assert headers["Content-Type"].startswith("text/html")
    assert headers["Content-Security-Policy"].startswith("default-src 'none'; style-src 'sha256-")
    assert f'data-stack-uid="{GREEN}"' in body

    port = free_port()
    config = workspace.write_config(
        server.base_url, [{"uid": GREEN}], http={"listen": f"127.0.0.1:{port}", "page": False}
    )
    async with running_daemon(config, port) as base:
        await wait_for_metric(base, "c66_archiver_passes_total", {"result": "ok"}, 1)
        assert (await http_get(f"{base}/"))[0] == 404


async def _get_with_headers(url: str) -> tuple[dict[str, str], str]:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        return dict(response.headers), await response.text()


def test_upstream_strings_are_escaped_and_secrets_redacted(tmp_path: Path) -> None:
    """A stack uid, database name and failure reason carrying markup and secrets render inert."""
    secret = "s3cr3t-" + os.urandom(6).hex()
    add_secret(secret)
    state = StateStore.open(tmp_path / "state")
    uid = '"><script>alert(1)</script>'
    state.archived.record(
        ArchivedBackup(
            stack_uid=uid,
            backup_id=7,
            db_type="mysql",
            database_name="<b>shop</b>",
            size=10,
            sha256="0" * 64,
            archived_at=datetime.now(UTC).isoformat(),
            tar_key=f"x?token={secret}/k",
            manifest_key="m",
        )
    )
    reason = f"GET https://s3.example/b/k?X-Amz-Signature=abc123&X-Amz-Credential=AKIA {secret}"
    failure = {"stack_uid": uid, "backup_id": 8, "reason": reason}
    now = datetime.now(UTC)
    state.runs.record(RunRecord(now.isoformat(), now.isoformat(), False, 0, 0, [failure], 0))
    settings = load_settings(_minimal_config(tmp_path))
    health = evaluate(settings, state, now)
    page = render_page(status_document(state, destinations=settings.storage, now=now), health,
                       now=now)
    state.close()
    assert "<script>" not in page
    assert "<b>shop" not in page
    assert "&lt;script&gt;" in page
    assert "&lt;b&gt;shop&lt;/b&gt;" in page
    assert secret not in page
    assert "abc123" not in page
    assert "AKIA" not in page
    assert "[REDACTED]" in page
    assert "/archive/x" not in page  # where a backup lives is not the page's business


def _minimal_config(tmp_path: Path) -> Path:
    config = tmp_path / "config.toml"
    config.write_text(f'[[stacks]]\nuid = "a"\n[state]\npath = "{tmp_path / "state"}"\n')
    return config


def test_freshness_is_green_amber_red_against_max_age() -> None:
    """fresh within max_age; attention with failures or no success yet; stale past max_age."""
    now = datetime(2026, 11, 30, 12, tzinfo=UTC)
    max_age = timedelta(hours=2)

    def stack(ago: timedelta | None, failures: int = 0) -> dict[str, object]:
        at = (now - ago).isoformat() if ago is not None else None
        return {"last_success_at": at, "failures": [{"reason": "x"}] * failures}

    assert freshness(stack(timedelta(hours=2)), max_age, now) == "fresh"
    assert freshness(stack(timedelta(hours=1), failures=1), max_age, now) == "attention"
    assert freshness(stack(None), max_age, now) == "attention"
    assert freshness(stack(timedelta(hours=2, seconds=1)), max_age, now) == "stale"
    assert freshness(stack(timedelta(days=3), failures=1), max_age, now) == "stale"


def test_history_marks_gaps_only_after_the_first_backup_and_not_today() -> None:
    """Days before the first backup are `before`; an empty day after it `none`; today `today`."""
    today = date(2026, 11, 30)
    days = Counter({today - timedelta(days=10): 2, today - timedelta(days=8): 1})
    classes = {day: kind for day, _, kind in day_classes(days, today)}
    assert len(classes) == 30
    assert classes[today - timedelta(days=29)] == "before"
    assert classes[today - timedelta(days=11)] == "before"
    assert classes[today - timedelta(days=10)] == "some"
    assert classes[today - timedelta(days=9)] == "none"
    assert classes[today - timedelta(days=1)] == "none"
    assert classes[today] == "today"
    counts = {day: count for day, count, _ in day_classes(days, today)}
    assert counts[today - timedelta(days=10)] == 2


def test_history_draws_days_retention_pruned_as_pruned_not_as_gaps() -> None:
    """A day whose backups prune removed is `pruned`; it also counts as the stack's start."""
    today = date(2026, 11, 30)
    days = Counter({today - timedelta(days=1): 1})
    pruned = {today - timedelta(days=20), today - timedelta(days=5)}
    classes = {day: kind for day, _, kind in day_classes(days, today, pruned)}
    assert classes[today - timedelta(days=21)] == "before"
    assert classes[today - timedelta(days=20)] == "pruned"
    assert classes[today - timedelta(days=19)] == "none"
    assert classes[today - timedelta(days=5)] == "pruned"
    assert classes[today - timedelta(days=1)] == "some"
