"""Prometheus metrics on a registry of our own, served by `archiver.service.http` at /metrics.

Counters about passes come from the pass summary (this object is a pass
observer); per-request counts come through the API client's `on_request`
callback (so `cloud66/` never imports this module); transfers are timed by
`SyncPass` with `Metrics.transfer()`. Gauges about the state and the request
budget are read at scrape time, so they are right even after a restart.

Labels carry route templates (`/stacks/:id/backups`), results and stack uids:
never a URL, a token or a key.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from archiver.cloud66.budget import RequestBudget
from archiver.model.summary import PassSummary
from archiver.state.findings import SIZE_ANOMALY
from archiver.state.series_facts import SeriesFacts
from archiver.state.store import StateStore
from archiver.watch.reading import parse_iso

# No `*_created` series beside each counter and histogram: nothing reads them, and they
# double the series a scrape stores (the process start time is process_start_time_seconds).
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in prometheus_client

PREFIX = "c66_archiver"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Backups take seconds to hours: buckets from 1 s to 4 h.
_TRANSFER_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0)


class Metrics:
    """Every metric of one process, on a dedicated registry; also a pass observer."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # process_start_time_seconds lets an alert give a new daemon the same start-up
        # grace as /readyz; the rest (CPU, RSS, fds) is what any exporter offers.
        ProcessCollector(registry=self.registry)
        self._passes = self._counter(
            "passes", "Passes run, by result (ok, failed, or stopped with backups left due).",
            ["result"],
        )
        self._archived = self._counter("backups_archived", "Backups archived.")
        self._failed = self._counter("backups_failed", "Backups (or stacks) that failed a pass.")
        self._bytes = self._counter("bytes_archived", "Bytes of backups archived.")
        self._last_pass_seconds = Gauge(
            f"{PREFIX}_last_pass_duration_seconds",
            "How long the last pass took.",
            registry=self.registry,
        )
        self._transfer_seconds = Histogram(
            f"{PREFIX}_transfer_duration_seconds",
            "Seconds to download and store one backup (successful transfers).",
            buckets=_TRANSFER_BUCKETS,
            registry=self.registry,
        )
        self._in_flight = Gauge(
            f"{PREFIX}_transfers_in_flight",
            "Backups being transferred now.",
            registry=self.registry,
        )
        self._requests = self._counter(
            "api_requests", "Cloud 66 API requests, by route and result.", ["route", "result"]
        )
        self._throttles = self._counter(
            "api_throttles", "Cloud 66 API answers that throttled us, by route.", ["route"]
        )
        self._copy_failures = self._counter(
            "storage_copy_failures",
            "Copies a destination failed to take in a pass (or passes it sat out), by destination.",
            ["storage"],
        )
        self._max_age = Gauge(
            f"{PREFIX}_max_age_seconds",
            "The [http] max_age in force: older last successes are stale.",
            registry=self.registry,
        )

    def _counter(self, name: str, documentation: str, labels: Iterable[str] = ()) -> Counter:
        return Counter(f"{PREFIX}_{name}", documentation, labels, registry=self.registry)

    def bind(
        self, state: StateStore, budget: RequestBudget, destinations: Sequence[str] = ()
    ) -> None:
        """Read the state and the request budget at every scrape (per destination: these)."""
        for name in destinations:  # every destination's series exists from the start, at 0
            self._copy_failures.labels(storage=name)
        self.registry.register(_LiveCollector(state, budget, destinations))

    def set_max_age(self, seconds: float) -> None:
        """Publish max_age, so alert rules and dashboards judge freshness as /readyz does."""
        self._max_age.set(seconds)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)

    # -- feeds ---------------------------------------------------------------------------

    def api_request(self, route: str, result: str) -> None:
        """The API client's `on_request` callback: one request sent and how it ended."""
        self._requests.labels(route=route, result=result).inc()
        if result == "throttled":
            self._throttles.labels(route=route).inc()

    @contextmanager
    def transfer(self) -> Iterator[None]:
        """Count a backup in flight while the block runs; time it when it succeeds."""
        started = time.monotonic()
        self._in_flight.inc()
        try:
            yield
        finally:
            self._in_flight.dec()
        self._transfer_seconds.observe(time.monotonic() - started)

    async def pass_started(self) -> None:
        """Nothing to count until the pass ends."""

    async def pass_finished(self, summary: PassSummary) -> None:
        """Count the pass and what it archived."""
        self._passes.labels(result=summary.outcome).inc()
        self._archived.inc(summary.archived)
        self._bytes.inc(summary.bytes)
        self._failed.inc(len(summary.failed))
        for failure in summary.failed:
            if failure.storage is not None:
                self._copy_failures.labels(storage=failure.storage).inc()
        self._last_pass_seconds.set(summary.seconds)


class _LiveCollector(Collector):
    """Gauges computed at scrape time from the state and the request budget."""

    def __init__(
        self, state: StateStore, budget: RequestBudget, destinations: Sequence[str]
    ) -> None:
        self._state = state
        self._budget = budget
        self._destinations = list(destinations)

    def describe(self) -> list[Metric]:
        """Empty: the registry must not call `collect` (and read the state) when registering."""
        return []

    def collect(self) -> Iterator[Metric]:
        """The budget, the last successes and the state's size, as of now."""
        yield _gauge(
            "request_budget_remaining",
            "API requests that may still be sent in the trailing hour.",
            self._budget.remaining,
        )
        yield _gauge(
            "request_budget_per_hour",
            "The configured API request budget per trailing hour.",
            self._budget.requests_per_hour,
        )
        try:
            yield from self._from_state()
        except sqlite3.ProgrammingError:  # the state closed during shutdown: nothing to say
            return

    def _from_state(self) -> Iterator[Metric]:
        state = self._state
        run = state.runs.last()
        if run is not None:  # from the state, so a restart does not forget a failed pass
            yield _gauge(
                "last_pass_failures",
                "Backups (or stacks) that failed in the last pass; 0 when it succeeded.",
                len(run.failed),
            )
        last = state.runs.last_success_at()
        if last is not None:
            yield _gauge(
                "last_success_timestamp_seconds",
                "When the last pass without failures finished (Unix time).",
                last.timestamp(),
            )
        per_stack = GaugeMetricFamily(
            f"{PREFIX}_stack_last_success_timestamp_seconds",
            "When every due backup of the stack was last archived (Unix time).",
            labels=["stack_uid"],
        )
        for stack_uid, at in sorted(state.runs.stack_successes().items()):
            per_stack.add_metric([stack_uid], at.timestamp())
        yield per_stack
        yield _gauge("state_archived_backups", "Backups in the state.", state.archived.count())
        yield from _destination_gauges(state, self._destinations)
        yield from _verify_gauge_values(state)
        yield from _watch_values(state)
        yield _gauge("state_file_bytes", "Size of the state database.", state.database.size_bytes())


def _destination_gauges(state: StateStore, destinations: Sequence[str]) -> Iterator[Metric]:
    """Per destination: backups and bytes it holds, backups it lacks (to be filled in)."""
    held = state.archived.per_storage()
    families = {
        "backups": GaugeMetricFamily(
            f"{PREFIX}_storage_backups", "Backups a destination holds.", labels=["storage"]
        ),
        "bytes": GaugeMetricFamily(
            f"{PREFIX}_storage_bytes", "Bytes of backups a destination holds.",
            labels=["storage"],
        ),
        "missing": GaugeMetricFamily(
            f"{PREFIX}_storage_missing_backups",
            "Backups other destinations hold that a destination lacks (and did not prune): "
            "filled in by a later pass.",
            labels=["storage"],
        ),
    }
    for name in destinations:
        count, size = held.get(name, (0, 0))
        families["backups"].add_metric([name], count)
        families["bytes"].add_metric([name], size)
        families["missing"].add_metric([name], state.archived.missing_in(name))
    yield from families.values()


def _verify_gauge_values(state: StateStore) -> Iterator[Metric]:
    """The last `verify` run's failures and time; absent before the first, like last success."""
    verify_run = state.verifications.last_run()
    if verify_run is None:
        return
    yield _gauge(
        "verify_failures",
        "Backups found corrupt, short or missing by the last `verify` run.",
        verify_run.failed,
    )
    yield _gauge(
        "last_verify_timestamp_seconds",
        "When the last `verify` run finished (Unix time).",
        datetime.fromisoformat(verify_run.finished_at).timestamp(),
    )


_SERIES_LABELS = ["stack_uid", "db_type", "database_name"]
# name suffix, help text, the value of a series' facts (None: no sample)
_SERIES_GAUGES: tuple[tuple[str, str, Callable[[SeriesFacts], float | None]], ...] = (
    ("newest_backup_timestamp_seconds",
     "When the series' newest good backup in Cloud 66 was taken (Unix time).",
     lambda f: _timestamp(f.newest_backup_date)),
    ("late_after_seconds",
     "How old the series' newest good backup may get before it is late (the watch's threshold).",
     lambda f: f.late_after_seconds),
    ("late", "1 when the series' newest good backup is older than its threshold.",
     lambda f: float(f.late)),
    ("upstream_failed", "1 when the series' newest backup failed in Cloud 66.",
     lambda f: float(f.upstream_failed)),
    ("last_size_bytes", "Archived size of the series' newest good backup.",
     lambda f: f.last_size),
    ("typical_size_bytes",
     "Median archived size of the (up to ten) good backups before the newest.",
     lambda f: f.typical_size),
)  # fmt: skip


def _watch_values(state: StateStore) -> Iterator[Metric]:
    """The watch: per series facts as the last pass judged them, and missed backups."""
    facts = state.series.all()
    findings = state.findings.current()
    shrunk = {(f.stack_uid, f.backup_id) for f in findings if f.kind == SIZE_ANOMALY}
    for suffix, documentation, value_of in _SERIES_GAUGES:
        name = f"{PREFIX}_series_{suffix}"
        family = GaugeMetricFamily(name, documentation, labels=_SERIES_LABELS)
        for fact in facts:
            value = value_of(fact)
            if value is not None:
                family.add_metric([fact.stack_uid, fact.db_type, fact.database_name], value)
        yield family
    anomaly = GaugeMetricFamily(
        f"{PREFIX}_series_size_anomaly",
        "1 when the series' newest good backup is below shrink_ratio times the typical size.",
        labels=_SERIES_LABELS,
    )
    for fact in facts:
        flagged = (fact.stack_uid, fact.newest_backup_id) in shrunk
        anomaly.add_metric([fact.stack_uid, fact.db_type, fact.database_name], float(flagged))
    yield anomaly
    yield from _missed_values(state)
    info = GaugeMetricFamily(
        f"{PREFIX}_stack_info", "A stack's name (from GET /stacks), always 1.",
        labels=["stack_uid", "stack_name"],
    )
    for stack_uid, name in sorted(state.stack_names.names().items()):
        info.add_metric([stack_uid, name], 1.0)
    yield info


def _missed_values(state: StateStore) -> Iterator[Metric]:
    counts = state.findings.missed_counts()
    total = CounterMetricFamily(
        f"{PREFIX}_missed_backups",
        "Backups Cloud 66 no longer lists that were seen but never archived, ever noticed.",
        labels=["stack_uid"],
    )
    for stack_uid, (noticed, _) in sorted(counts.items()):
        total.add_metric([stack_uid], noticed)
    yield total
    yield _gauge(
        "missed_backups_unacknowledged",
        "Missed backups not yet acknowledged with `c66-archiver watch ack`.",
        sum(open_ for _, open_ in counts.values()),
    )


def _timestamp(iso: str | None) -> float | None:
    moment = parse_iso(iso)
    return moment.timestamp() if moment else None


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", documentation, value=value)
