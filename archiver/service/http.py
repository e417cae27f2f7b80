"""`[http]`: /metrics, /livez, /readyz and the status page at /, served on the daemon's loop.

Served on the same loop as the passes, so /livez answering proves the loop is
not stuck. /readyz applies `archiver.service.health`'s rule and probes the storage
with a write (a success cached a minute, so a scrape every few seconds costs one
probe a minute; a failure only a few seconds, so a storage that heals is ready again
at once). The page (`archiver.service.page`, off with `page = false`) shows the same
health.

    async with HttpServer(settings, runtime) as server:
        print(server.port)   # the real port, also for `listen = "127.0.0.1:0"`
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from types import TracebackType

import structlog
from aiohttp import web

from archiver.config.settings import HttpSettings, Settings
from archiver.core.errors import ConfigError, StorageError
from archiver.core.secrets import redact
from archiver.service.health import HealthReport, evaluate
from archiver.service.metrics import CONTENT_TYPE
from archiver.service.page import HEADERS as PAGE_HEADERS
from archiver.service.page import HISTORY_DAYS, render_page
from archiver.service.schedule import max_age_for
from archiver.service.status_document import status_document
from archiver.storage.base import Storage
from archiver.sync.runtime import Runtime

log = structlog.get_logger(__name__)

# A good probe is reused this long; a failed one only a few seconds (a storage that heals,
# a blip, must not read as broken for a minute). A probe slower than the timeout failed.
PROBE_CACHE_SECONDS = 60.0
PROBE_FAILURE_CACHE_SECONDS = 5.0
PROBE_TIMEOUT_SECONDS = 10.0


class StorageProbe:
    """Whether the storage takes a write, probed at most once per cache period."""

    def __init__(
        self,
        storage: Storage,
        *,
        cache_seconds: float = PROBE_CACHE_SECONDS,
        failure_cache_seconds: float = PROBE_FAILURE_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._storage = storage
        self._cache_seconds = cache_seconds
        self._failure_cache_seconds = min(failure_cache_seconds, cache_seconds)
        self._clock = clock
        self._fresh_until = -float("inf")
        self._problem: str | None = None
        self._lock = asyncio.Lock()

    async def problem(self) -> str | None:
        """None when the storage took a probe write recently, else what went wrong."""
        async with self._lock:  # concurrent scrapes share one probe
            if self._clock() >= self._fresh_until:
                self._problem = await self._probe()
                kept = self._failure_cache_seconds if self._problem else self._cache_seconds
                self._fresh_until = self._clock() + kept
            return self._problem

    async def _probe(self) -> str | None:
        try:
            await asyncio.wait_for(self._storage.probe(), PROBE_TIMEOUT_SECONDS)
        except TimeoutError:
            return f"a probe write took longer than {PROBE_TIMEOUT_SECONDS:g}s"
        except (StorageError, OSError) as error:
            return redact(str(error))
        return None


class HttpServer:
    """The endpoints on `[http] listen`, started and stopped with `async with`."""

    def __init__(self, settings: Settings, runtime: Runtime) -> None:
        assert settings.http is not None, "HttpServer needs an [http] section"
        self._settings = settings
        self._http: HttpSettings = settings.http
        self._runtime = runtime
        # One probe per destination: /readyz fails when any destination takes no write.
        self._probes = [(d.name, StorageProbe(d.storage)) for d in runtime.destinations]
        self._started_at = datetime.now(UTC)
        assert runtime.metrics is not None, "the runtime keeps metrics when [http] is set"
        self._metrics_kept = runtime.metrics
        self._metrics_kept.set_max_age(max_age_for(settings).total_seconds())
        self._runner = web.AppRunner(self._app(), access_log=None, handle_signals=False)
        self.port = 0

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/livez", self._livez)
        app.router.add_get("/readyz", self._readyz)
        if self._http.page:
            app.router.add_get("/", self._page)
        return app

    async def __aenter__(self) -> HttpServer:
        host, _, port = self._http.listen.rpartition(":")
        await self._runner.setup()
        site = web.TCPSite(self._runner, host.strip("[]"), int(port))
        try:
            await site.start()
        except OSError as error:
            await self._runner.cleanup()
            # A port in use or an address not ours is the configuration's fault: exit 2.
            raise ConfigError(
                f"http.listen {self._http.listen}: cannot listen: {error.strerror}"
            ) from None
        self.port = self._bound_port()
        log.info("http endpoints listening", listen=f"{host}:{self.port}")
        return self

    def _bound_port(self) -> int:
        for address in self._runner.addresses:
            return int(address[1])
        return 0

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._runner.cleanup()

    async def _metrics(self, _request: web.Request) -> web.Response:
        body = self._metrics_kept.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def _livez(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _health(self, now: datetime) -> HealthReport:
        return evaluate(
            self._settings,
            self._runtime.state,
            now,
            running_since=self._started_at,
            storage_problem=await self._storage_problem(),
        )

    async def _storage_problem(self) -> str | None:
        """What each destination's probe found wrong (named when there are several)."""
        problems = await asyncio.gather(*(probe.problem() for _, probe in self._probes))
        several = len(self._probes) > 1
        found = [
            f"storage {name!r}: {problem}" if several else problem
            for (name, _), problem in zip(self._probes, problems, strict=True)
            if problem is not None
        ]
        return "; ".join(found) if found else None

    async def _readyz(self, _request: web.Request) -> web.Response:
        report = await self._health(datetime.now(UTC))
        return web.json_response(report.as_dict(), status=200 if report.ok else 503)

    async def _page(self, _request: web.Request) -> web.Response:
        now = datetime.now(UTC)
        configured = [stack.uid for stack in self._settings.stacks]
        document = status_document(
            self._runtime.state, destinations=self._settings.storage, configured=configured,
            now=now,
        )
        since = now - timedelta(days=HISTORY_DAYS)
        pruned = self._runtime.state.pruned.days(since=since)
        per_destination = {
            d.name: self._runtime.state.pruned.days(since=since, storage=d.name)
            for d in self._settings.storage
        }
        body = render_page(
            document, await self._health(now), now=now, pruned_days=pruned,
            pruned_by_storage=per_destination,
        )
        return web.Response(text=body, content_type="text/html", headers=PAGE_HEADERS)


@contextlib.asynccontextmanager
async def serve_http(settings: Settings, runtime: Runtime) -> AsyncIterator[HttpServer | None]:
    """The endpoints while the block runs when `[http]` is configured; nothing otherwise."""
    if settings.http is None:
        yield None
        return
    async with HttpServer(settings, runtime) as server:
        yield server
