"""The status page at `/` on the `[http]` listener: what `status` says, as one HTML page.

Rendered here from `archiver.commands.status.status_document` and the health report
/readyz uses, so the page, `status` and /readyz never disagree. One request,
no script and nothing fetched from elsewhere: the style sheet is inline (its
hash is the only source the Content-Security-Policy allows) and each stack's
last 30 days are an inline SVG. Every shown string is redacted
(`archiver.core.secrets.redact`) and HTML-escaped, since stack uids, database names and
failure reasons come from upstream or from error text.

Freshness, per stack:
- fresh (green): every due backup archived within max_age, no failure in the last pass,
  and nothing the watch found (missed, late, failed upstream, shrunken backups);
- attention (amber): failed in the last pass but still within max_age, never archived
  yet, or findings of the watch;
- stale (red): the last success is older than max_age.
The badge at the top sums them up: unhealthy when the archiver itself is (see
`archiver.service.health`) or a stack is stale, attention when a stack needs it,
healthy only when every stack is fresh.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from archiver.core.secrets import redact
from archiver.core.units import human_bytes as human_size
from archiver.core.units import human_duration
from archiver.service.health import HealthReport
from archiver.watch.messages import SECTIONS, summary

HISTORY_DAYS = 30
REFRESH_SECONDS = 60

_STYLE = """
:root{--bg:#f6f7f9;--card:#fff;--ink:#1c2430;--muted:#5d6878;--line:#dde2e8;
--green:#1a7f37;--green-bg:#dafbe1;--amber:#9a6700;--amber-bg:#fff1c2;
--red:#c62828;--red-bg:#ffe1e0;--bar:#3b6fd8}
@media (prefers-color-scheme:dark){:root{--bg:#11151b;--card:#1a2029;--ink:#e6e9ee;
--muted:#9aa5b4;--line:#2c3440;--green:#4ac26b;--green-bg:#12351f;--amber:#e3b341;
--amber-bg:#3a2f0b;--red:#ff7b72;--red-bg:#47191a;--bar:#6f9bf0}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);
font:16px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
main{max-width:60rem;margin:0 auto;padding:1rem}
header{display:flex;flex-wrap:wrap;align-items:center;gap:.5rem 1rem;margin-bottom:1rem}
h1{font-size:1.3rem;margin:0}
h2{font-size:1.05rem;margin:0;overflow-wrap:anywhere;font-family:ui-monospace,monospace}
h3{font-size:1rem;margin:1.5rem 0 .5rem}
p{margin:.25rem 0}
.muted{color:var(--muted);font-size:.875rem}
.pill{display:inline-block;border-radius:999px;padding:.1rem .65rem;font-size:.85rem;
font-weight:600;white-space:nowrap}
.fresh .pill,.pill.ok{background:var(--green-bg);color:var(--green)}
.attention .pill,.pill.warn{background:var(--amber-bg);color:var(--amber)}
.stale .pill,.pill.bad{background:var(--red-bg);color:var(--red)}
.health{flex-basis:100%;margin:0}
.totals{display:grid;grid-template-columns:repeat(auto-fit,minmax(9rem,1fr));gap:.5rem;
margin:0 0 1rem;padding:0}
.totals div{background:var(--card);border:1px solid var(--line);border-radius:.6rem;
padding:.6rem .8rem}
.totals dt{color:var(--muted);font-size:.8rem}
.totals dd{margin:0;font-size:1.25rem;font-weight:600}
.stacks{display:grid;grid-template-columns:repeat(auto-fill,minmax(20rem,1fr));gap:.75rem}
article{background:var(--card);border:1px solid var(--line);border-left:.4rem solid;
border-radius:.6rem;padding:.75rem .9rem}
article.fresh{border-left-color:var(--green)}
article.attention{border-left-color:var(--amber)}
article.stale{border-left-color:var(--red)}
article header{margin:0 0 .4rem;justify-content:space-between;flex-wrap:nowrap;
align-items:flex-start}
.facts{display:grid;grid-template-columns:auto 1fr;gap:.15rem .75rem;margin:0;font-size:.9rem}
.facts dt{color:var(--muted)}
.facts dd{margin:0;overflow-wrap:anywhere}
figure{margin:.6rem 0 0}
figcaption{display:flex;justify-content:space-between;color:var(--muted);font-size:.75rem}
svg.history{display:block;width:100%;height:3rem}
.history .some{fill:var(--bar)}
.history .none{fill:var(--red)}
.history .gap{fill:var(--red-bg)}
.history .before,.history .today{fill:var(--line)}
.history .pruned{fill:var(--muted)}
.destinations figure{margin:.35rem 0 0}
.destinations svg.history{height:1.25rem}
.destinations figcaption .where{font-weight:600;color:var(--ink)}
ul.failures,ul.watch{margin:.5rem 0 0;padding-left:1.1rem;color:var(--red);font-size:.875rem}
ul.watch{color:var(--amber)}
ul.failures li,ul.watch li{overflow-wrap:anywhere}
.uid{display:block;font-size:.75rem;font-weight:400;color:var(--muted)}
footer{margin-top:1.5rem}
"""
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()

# No script runs and nothing loads from anywhere: only the inline style (by its hash)
# and the empty data: favicon. The page shows nothing secret, but it should not leak
# through a referrer or be framed either.
HEADERS = {
    "Content-Security-Policy": (
        f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; img-src data:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}

# `redact` already cuts the query off every URL; error text also names request paths
# (`GET /stacks/x/backups?page=1`): the page shows no query string at all.
_PATH_QUERY = re.compile(r"\?[\w.~%+-]+=[\w.~%+&=/-]*")


def render_page(
    document: dict[str, Any],
    health: HealthReport,
    *,
    now: datetime,
    pruned_days: dict[str, set[date]] | None = None,
    pruned_by_storage: dict[str, dict[str, set[date]]] | None = None,
) -> str:
    """The whole page for a `status_document` and the current health report.

    `pruned_days`: per stack, the days whose backups retention removed; such a day
    is drawn as pruned, not as a gap. `pruned_by_storage`: the same per destination,
    for the strips that show which destinations hold each day's backup.
    """
    stacks = document["stacks"]
    history = _days_by_stack(document["archived"])
    pruned = pruned_days or {}
    holders = _Holders(document, pruned_by_storage or {})
    findings = findings_by_stack(document.get("watch", {}))
    states = [
        freshness(stack, health.max_age, now, findings.get(stack["stack_uid"], []))
        for stack in stacks
    ]
    cards = "".join(
        _stack_card(
            stack, state, history.get(stack["stack_uid"], Counter()), now,
            pruned.get(stack["stack_uid"], set()), findings.get(stack["stack_uid"], []),
            holders.strips(stack["stack_uid"], now),
        )
        for stack, state in zip(stacks, states, strict=True)
    )
    verdict = overall(health, states)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">'
        '<meta name="color-scheme" content="light dark">'
        '<link rel="icon" href="data:,">'
        f"<title>{verdict} · c66-archiver</title><style>{_STYLE}</style></head>"
        f"<body><main>{_header(health, verdict, states)}{_totals(document, stacks)}"
        f'<h3>Stacks</h3><section class="stacks">{cards or _no_stacks()}</section>'
        f"{_last_pass(document['last_run'])}{_footer(health, now)}</main></body></html>"
    )


def _text(value: object) -> str:
    """Shown text: secrets and URL queries redacted, then HTML-escaped (quotes too)."""
    return html.escape(_PATH_QUERY.sub("", redact(str(value))), quote=True)


def overall(health: HealthReport, states: list[str]) -> str:
    """`unhealthy`, `attention` or `healthy`: the badge agrees with every card below it."""
    if not health.ok or "stale" in states:
        return "unhealthy"
    return "attention" if "attention" in states else "healthy"


_VERDICT_CLASS = {"healthy": "ok", "attention": "warn", "unhealthy": "bad"}


def _header(health: HealthReport, verdict: str, states: list[str]) -> str:
    pill = f'<span class="pill {_VERDICT_CLASS[verdict]}">{verdict}</span>'
    why = list(health.reasons if not health.ok else health.notes)
    for state in ("stale", "attention"):
        if count := states.count(state):
            why.append(f"{count} stack{'s' if count != 1 else ''} {state}")
    return (
        f'<header><h1>c66-archiver</h1><span id="health">{pill}</span>'
        f'<p class="health muted">{_text("; ".join(why))}</p></header>'
    )


def _badge(ok: bool, good: str, bad: str) -> str:
    return f'<span class="pill ok">{good}</span>' if ok else f'<span class="pill bad">{bad}</span>'


def _totals(document: dict[str, Any], stacks: list[dict[str, Any]]) -> str:
    run = document["last_run"]
    tiles = [
        ("stacks", "Stacks", str(len(stacks))),
        ("backups", "Backups archived", str(len(document["archived"]))),
        ("bytes", "Archived size", human_size(sum(s["archived_bytes"] for s in stacks))),
        ("failures", "Failed last pass", str(len(run["failed"])) if run else "-"),
    ]
    cells = "".join(
        f'<div id="total-{key}"><dt>{label}</dt><dd>{_text(value)}</dd></div>'
        for key, label, value in tiles
    )
    return f'<dl class="totals">{cells}</dl>'


def _no_stacks() -> str:
    return '<p class="muted">No stack is configured or archived yet.</p>'


# -- one stack --------------------------------------------------------------------------


def freshness(
    stack: dict[str, Any],
    max_age: timedelta,
    now: datetime,
    findings: Iterable[object] = (),
) -> str:
    """`fresh`, `attention` or `stale` (see the module docstring)."""
    if stack["last_success_at"] is None:
        return "attention"
    if now - datetime.fromisoformat(stack["last_success_at"]) > max_age:
        return "stale"
    return "attention" if stack["failures"] or any(True for _ in findings) else "fresh"


def findings_by_stack(watch: dict[str, list[dict[str, Any]]]) -> dict[str, list[str]]:
    """stack uid -> one line per finding of the watch about it."""
    lines: dict[str, list[str]] = {}
    for kind, section in SECTIONS.items():
        for entry in watch.get(section, []):
            lines.setdefault(entry["stack_uid"], []).append(_finding_line(kind, entry))
    return lines


_KIND_LABELS = {
    "missed": "missed",
    "late": "late",
    "upstream_failed": "failed in Cloud 66",
    "size_anomaly": "shrank",
}


def _finding_line(kind: str, entry: dict[str, Any]) -> str:
    return f"{_KIND_LABELS.get(kind, kind)}: {summary(kind, entry)}"


def _stack_card(
    stack: dict[str, Any],
    state: str,
    days: Counter[date],
    now: datetime,
    pruned: set[date],
    findings: list[str],
    destination_strips: str = "",
) -> str:
    uid = _text(stack["stack_uid"])
    name = stack.get("stack_name")
    named = name and name != stack["stack_uid"]
    title = f'{_text(name)}<span class="uid">{uid}</span>' if named else uid
    items = "".join(f"<li>{_text(line)}</li>" for line in findings)
    watch = f'<ul class="watch">{items}</ul>' if items else ""
    return (
        f'<article class="{state}" data-stack-uid="{uid}" data-freshness="{state}">'
        f'<header><h2>{title}</h2><span class="pill">{state}</span></header>'
        f'<dl class="facts">{_stack_facts(stack, now)}</dl>'
        f"{_history(days, now.date(), pruned)}{destination_strips}"
        f"{_failure_list(stack['failures'], in_card=True)}{watch}"
        "</article>"
    )


class _Holders:
    """Which destinations hold each day's backups: one small strip per destination, drawn
    only when there are several (a day another destination holds and this one lacks is a
    red gap in this one's strip)."""

    def __init__(
        self, document: dict[str, Any], pruned_by_storage: dict[str, dict[str, set[date]]]
    ) -> None:
        self._names = [entry["name"] for entry in document.get("storage", [])]
        self._pruned = pruned_by_storage
        self._days: dict[tuple[str, str], Counter[date]] = {}
        for entry in document["archived"]:
            day = _utc(entry["backup_date"] or entry["archived_at"]).date()
            for copy in entry.get("copies", []):
                self._days.setdefault((entry["stack_uid"], copy["storage"]), Counter())[day] += 1

    def strips(self, stack_uid: str, now: datetime) -> str:
        if len(self._names) < 2:
            return ""
        figures = "".join(
            self._strip(stack_uid, name, now.date()) for name in self._names
        )
        return f'<div class="destinations">{figures}</div>'

    def _strip(self, stack_uid: str, name: str, today: date) -> str:
        days = self._days.get((stack_uid, name), Counter())
        pruned = self._pruned.get(name, {}).get(stack_uid, set())
        # From the stack's first archived day in any destination: a day others hold and
        # this destination lacks is a gap here.
        every = [day for (uid, _), held in self._days.items() if uid == stack_uid for day in held]
        classified = day_classes(days, today, pruned, first_day=min(every, default=None))
        peak = max((count for _, count, _ in classified), default=0) or 1
        shapes = "".join(_day_shape(n, *entry, peak) for n, entry in enumerate(classified))
        gaps = sum(1 for *_, kind in classified if kind == "none")
        label = f"{name}: {sum(days.values())} backups held, {gaps} days without one"
        return (
            f'<figure data-storage="{_text(name)}">'
            f'<svg class="history" viewBox="0 0 {HISTORY_DAYS * _SLOT} {_HEIGHT}" '
            f'preserveAspectRatio="none" role="img" aria-label="{_text(label)}">{shapes}</svg>'
            f'<figcaption><span class="where">{_text(name)}</span>'
            f'<span class="gaps">{_text(_gap_caption(gaps))}</span></figcaption></figure>'
        )


def _stack_facts(stack: dict[str, Any], now: datetime) -> str:
    last = stack["last_backup"]
    age = stack["last_backup_age_seconds"]
    rows = [
        ("Last backup", _last_backup(last)),
        ("Taken", _taken(last, age)),
        ("Archived", f"{stack['archived_count']} · {human_size(stack['archived_bytes'])}"),
        ("Last success", _ago(stack["last_success_at"], now)),
        ("Failed", str(len(stack["failures"]))),
    ]
    return "".join(
        f'<dt>{label}</dt><dd class="{label.lower().replace(" ", "-")}">{_text(value)}</dd>'
        for label, value in rows
    )


def _last_backup(last: dict[str, Any] | None) -> str:
    if last is None:
        return "none yet"
    return f"{last['db_type']}/{last['database_name']} #{last['backup_id']}"


def _taken(last: dict[str, Any] | None, age_seconds: int | None) -> str:
    if last is None or age_seconds is None:
        return "-"
    moment = _short_time(last["backup_date"] or last["archived_at"])
    return f"{moment} ({human_duration(timedelta(seconds=age_seconds))} ago)"


def _ago(iso: str | None, now: datetime) -> str:
    if iso is None:
        return "never"
    return f"{human_duration(now - datetime.fromisoformat(iso))} ago"


def _short_time(iso: str) -> str:
    """`2026-11-27 20:15 UTC` from any ISO 8601 time."""
    return f"{_utc(iso):%Y-%m-%d %H:%M} UTC"


def _utc(iso: str) -> datetime:
    moment = datetime.fromisoformat(iso)
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def _failure_list(failures: list[dict[str, Any]], *, in_card: bool = False) -> str:
    if not failures:
        return ""
    items = "".join(f"<li>{_text(_failure_line(failure, in_card))}</li>" for failure in failures)
    return f'<ul class="failures">{items}</ul>'


def _failure_line(failure: dict[str, Any], in_card: bool) -> str:
    """`backup 7: reason` in a stack's card; `stack-a backup 7: reason` under the last pass."""
    where = [] if in_card else [str(failure["stack_uid"]).replace("*", "all stacks")]
    if failure.get("backup_id") is not None:
        where.append(f"backup {failure['backup_id']}")
    if failure.get("storage"):
        where.append(f"in {failure['storage']}")
    return f"{' '.join(where)}: {failure['reason']}" if where else str(failure["reason"])


# -- the 30-day history -----------------------------------------------------------------


def _days_by_stack(archived: Iterable[dict[str, Any]]) -> dict[str, Counter[date]]:
    """stack uid -> backups per UTC day they were taken (else archived)."""
    days: dict[str, Counter[date]] = {}
    for entry in archived:
        day = _utc(entry["backup_date"] or entry["archived_at"]).date()
        days.setdefault(entry["stack_uid"], Counter())[day] += 1
    return days


def day_classes(
    days: Counter[date], today: date, pruned: set[date] | None = None,
    first_day: date | None = None,
) -> list[tuple[date, int, str]]:
    """The last 30 days, oldest first: (day, backups, class).

    `some`: backups that day. `pruned`: none left, because retention removed them.
    `none`: none, on a day the stack was already archived before (the gap to
    notice). `before`: before its first archived backup. `today`: none yet today
    (the day is not over).
    """
    pruned = pruned or set()
    first = first_day or min([*days, *pruned], default=None)
    result = []
    for offset in range(HISTORY_DAYS - 1, -1, -1):
        day = today - timedelta(days=offset)
        count = days.get(day, 0)
        if count:
            kind = "some"
        elif day in pruned:
            kind = "pruned"
        elif day == today:
            kind = "today"
        elif first is None or day < first:
            kind = "before"
        else:
            kind = "none"
        result.append((day, count, kind))
    return result


# Geometry of the SVG's own coordinates; it scales to the card's width.
_SLOT = 10
_BAR = 8
_HEIGHT = 40
_FLOOR = 3  # the thin baseline mark of a day without bars


def _history(days: Counter[date], today: date, pruned: set[date]) -> str:
    classified = day_classes(days, today, pruned)
    peak = max((count for _, count, _ in classified), default=0) or 1
    shapes = "".join(_day_shape(n, *entry, peak) for n, entry in enumerate(classified))
    total = sum(count for _, count, _ in classified)
    gaps = sum(1 for *_, kind in classified if kind == "none")
    label = f"{total} backups in the last {HISTORY_DAYS} days, {gaps} days without one"
    caption = _gap_caption(gaps) if days or pruned else "nothing archived yet"
    return (
        f'<figure><svg class="history" viewBox="0 0 {HISTORY_DAYS * _SLOT} {_HEIGHT}" '
        f'preserveAspectRatio="none" role="img" aria-label="{_text(label)}">{shapes}</svg>'
        f"<figcaption><span>{HISTORY_DAYS} days ago</span>"
        f'<span class="gaps">{_text(caption)}</span><span>today</span>'
        "</figcaption></figure>"
    )


def _gap_caption(gaps: int) -> str:
    if gaps == 0:
        return "no day without a backup"
    return f"{gaps} day{'s' if gaps != 1 else ''} without a backup"


def _day_shape(index: int, day: date, count: int, kind: str, peak: int) -> str:
    x = index * _SLOT + (_SLOT - _BAR) // 2
    title = f"<title>{day.isoformat()}: {count} backup{'s' if count != 1 else ''}</title>"
    attributes = f'data-day="{day.isoformat()}" data-count="{count}"'
    if kind == "pruned":
        title = f"<title>{day.isoformat()}: pruned by the retention policy</title>"
    if kind == "some":
        height = max(_FLOOR * 2, round(_HEIGHT * count / peak))
        return _rect(kind, x, _HEIGHT - height, height, attributes, title)
    if kind == "none":  # a red column behind a red floor: the gap catches the eye
        return (
            f'<g class="day-none" {attributes}>{title}'
            f"{_rect('gap', x, 0, _HEIGHT, '', '')}"
            f"{_rect('none', x, _HEIGHT - _FLOOR * 2, _FLOOR * 2, '', '')}</g>"
        )
    return _rect(kind, x, _HEIGHT - _FLOOR, _FLOOR, attributes, title)


def _rect(kind: str, x: int, y: int, height: int, attributes: str, title: str) -> str:
    return (
        f'<rect class="{kind}" x="{x}" y="{y}" width="{_BAR}" height="{height}" {attributes}>'
        f"{title}</rect>"
    )


def _last_pass(run: dict[str, Any] | None) -> str:
    if run is None:
        return '<h3>Last pass</h3><p id="last-pass">No pass has run yet.</p>'
    # Not ok with nothing listed: cut short (a stop, a refused token), nothing failed.
    outcome = _badge(run["ok"], "ok", "failures" if run["failed"] else "incomplete")
    facts = (
        f"finished {_short_time(run['finished_at'])}, archived {run['archived']}, "
        f"skipped {run['skipped']}, {human_size(run['bytes'])}"
    )
    return (
        f'<h3>Last pass</h3><p id="last-pass">{outcome} {_text(facts)}</p>'
        f"{_failure_list(run['failed'])}"
    )


def _footer(health: HealthReport, now: datetime) -> str:
    return (
        f'<footer class="muted"><p>Rendered {_text(_short_time(now.isoformat()))}; '
        f"reloads every {REFRESH_SECONDS}s. max_age {_text(human_duration(health.max_age))}: "
        "green when every due backup was archived within it, amber after failures in the "
        "last pass (or before the first success) or when the watch found missed, late, "
        "failed or shrunken backups in Cloud 66, red when older. "
        "A red mark in the 30-day strip is a day without a backup.</p></footer>"
    )
