"""The long-lived parts of a run, built once from the settings and closed together.

HTTP sessions, the thread pool, the destinations, the state and its lock,
the API client and its request budget. Used by one-shot passes, the daemon and
the demo; `check-config` and the POSTs build only a client (`sync.api_client`).
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from types import TracebackType
from typing import TYPE_CHECKING

import aiohttp
import structlog

from archiver import USER_AGENT
from archiver.cloud66.budget import RequestBudget
from archiver.cloud66.client import Cloud66Client
from archiver.config.keys import parse_recipient
from archiver.config.settings import Settings, encryption_for
from archiver.core.retry import RetryPolicy
from archiver.core.stopping import StopSignal
from archiver.lifecycle.archive import Archive, open_archive
from archiver.lifecycle.vanished import VanishedCopies
from archiver.service.alerts import AlertSender, alerts_configured
from archiver.service.observers import PassObserver
from archiver.state.store import StateStore
from archiver.storage.destinations import Destination
from archiver.sync.api_client import build_client, shared_budget
from archiver.transfer.age_process import choose_binary
from archiver.transfer.download import Downloader
from archiver.transfer.encryption import AgeEncryption

if TYPE_CHECKING:
    from archiver.service.metrics import Metrics

log = structlog.get_logger(__name__)



class Runtime:
    """Everything a pass needs, opened in dependency order and closed in reverse."""

    settings: Settings
    archive: Archive
    state: StateStore
    destinations: tuple[Destination, ...]
    client: Cloud66Client
    downloader: Downloader
    budget: RequestBudget
    observers: list[PassObserver]
    metrics: Metrics | None
    alerts: AlertSender | None

    def __init__(
        self,
        settings: Settings,
        token: str,
        *,
        stop: StopSignal | None = None,
        metrics: bool = False,
    ) -> None:
        """`metrics`: keep Prometheus metrics (the daemon with [http] serves them)."""
        self.settings = settings
        # Set on SIGTERM: every wait (budget, backoff, queue) ends at once.
        self.stop = stop or StopSignal()
        self._token = token
        self._stack = AsyncExitStack()
        # Each encrypting destination's recipients and engine, by name (once opened).
        self.encryptions: dict[str, AgeEncryption] = {}
        # When each destination was last listed for copies deleted behind our back.
        self.vanished = VanishedCopies()
        # Notifications and metrics register here (see archiver.service.observers).
        self.observers = []
        self.metrics = None
        if metrics:  # prometheus_client costs 1.5 MiB resident: only where it is served
            from archiver.service.metrics import Metrics

            self.metrics = Metrics()
        # Also how the watch tells its findings (archiver.sync.watch_step).
        self.alerts = None

    async def __aenter__(self) -> Runtime:
        try:
            await self._open()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()

    async def _open(self) -> None:
        settings = self.settings
        self.encryptions = await asyncio.to_thread(self._age_encryptions)
        workers = 2 + 2 * settings.transfer.max_concurrent_downloads
        self.archive = await self._stack.enter_async_context(
            open_archive(settings, lock=True, workers=workers)
        )
        self.state, self.destinations = self.archive.state, self.archive.destinations
        self.budget = shared_budget(settings, self.state)
        on_request = self.metrics.api_request if self.metrics is not None else None
        self.client = build_client(
            settings, self._token, self.budget, stop=self.stop, on_request=on_request
        )
        self._stack.push_async_callback(self.client.aclose)
        self._add_observers()
        session = self._download_session()
        self._stack.push_async_callback(session.close)
        transfer = settings.transfer
        self.downloader = Downloader(
            session,
            max_files=transfer.max_concurrent_downloads,
            retry_policy=RetryPolicy(
                retries=transfer.max_retries,
                time_limit=transfer.max_retry_time.total_seconds(),
            ),
            stop=self.stop,
            chunk_size=transfer.chunk_size,
            verify_etag=transfer.verify_etag,
            streams_per_file=transfer.streams_per_file,
            segment_size=transfer.segment_size,
            in_flight=transfer.in_flight,
            bandwidth_limit=transfer.bandwidth_limit,
        )

    def _age_encryptions(self) -> dict[str, AgeEncryption]:
        """Each encrypting destination's recipients and engine: the age binary when it
        works (tried once here, once per engine and set of recipients)."""
        chosen: dict[tuple[str, tuple[str, ...]], str | None] = {}
        encryptions = {}
        for destination in self.settings.storage:
            encryption = encryption_for(self.settings, destination)
            if encryption is None:
                continue
            texts = tuple(encryption.all_recipients())
            key = (encryption.engine, texts)
            if key not in chosen:
                chosen[key], engine = choose_binary(encryption.engine, texts)
                fell_back = chosen[key] is None and encryption.engine == "auto"
                (log.warning if fell_back else log.info)(
                    "backups are encrypted", storage=destination.name, engine=engine,
                    recipients=len(texts),
                )
            recipients = tuple(parse_recipient(text) for text in texts)
            encryptions[destination.name] = AgeEncryption(recipients, texts, chosen[key])
        return encryptions

    def _add_observers(self) -> None:
        """Metrics when kept; alerts when [notify] names a target."""
        if self.metrics is not None:
            self.metrics.bind(self.state, self.budget, [d.name for d in self.destinations])
            self.observers.append(self.metrics)
        if alerts_configured(self.settings.notify):
            alerts = AlertSender(
                self.settings.notify, stop=self.stop, stack_names=self.state.stack_names.names
            )
            self._stack.push_async_callback(alerts.aclose)
            self.observers.append(alerts)
            self.alerts = alerts

    def _download_session(self) -> aiohttp.ClientSession:
        transfer = self.settings.transfer
        # Every stream of every file in flight, with room for connections closing.
        limit = transfer.max_concurrent_downloads * transfer.streams_per_file
        return aiohttp.ClientSession(
            # total=None: a big backup takes as long as it takes; sock_read catches stalls.
            timeout=aiohttp.ClientTimeout(
                total=None,
                sock_connect=transfer.connect_timeout.total_seconds(),
                sock_read=transfer.read_timeout.total_seconds(),
            ),
            connector=aiohttp.TCPConnector(limit=limit * 2, limit_per_host=limit),
            # Sizes, hashes and Range offsets are about the stored bytes, never decoded ones.
            auto_decompress=False,
            # aiohttp buffers up to twice this per connection before pausing the socket:
            # what it reads of a body with the headers, before `archiver.transfer.receive`
            # takes the connection over (and each GET takes room for that in the in-flight
            # budget, `segment_fetch.FIRST_READ`); chunked bodies are read through it whole.
            read_bufsize=64 * 1024,
            headers={"User-Agent": USER_AGENT},
        )
