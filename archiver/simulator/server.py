"""The simulated account served over HTTP: :class:`Simulator` builds the one aiohttp
application, :class:`SimulatorServer` runs it on a loopback port."""

from __future__ import annotations

from types import TracebackType

from aiohttp import web

from archiver.simulator.account import Account
from archiver.simulator.api import API_PREFIX, CloudApi
from archiver.simulator.blobs import BlobHost


class Simulator(Account):
    """A simulated account served as one aiohttp application: the API and the blob host."""

    def app(self) -> web.Application:
        """One application: the API under /api/3 and the blobs under /blobs/."""
        api = CloudApi(self)
        app = web.Application(middlewares=[api.middleware()])
        api.add_routes(app.router)
        BlobHost(self).add_routes(app.router)
        return app


class SimulatorServer:
    """Run a :class:`Simulator` on a loopback port for the duration of an ``async with``."""

    def __init__(self, simulator: Simulator, host: str = "127.0.0.1", port: int = 0) -> None:
        self.simulator = simulator
        self.host = host
        self.port = port
        self.base_url = ""
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> SimulatorServer:
        """Start serving; ``port`` is then the bound one and ``base_url`` the API's root."""
        # No access log: it would print pre-signed URLs, signatures included.
        # A short shutdown timeout: a stalled (slow-fault) download must not hold up exit.
        runner = web.AppRunner(
            self.simulator.app(), access_log=None, shutdown_timeout=1.0, handle_signals=False
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.base_url = f"http://{host}:{self.port}{API_PREFIX}"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop serving (downloads still running get a second to end)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
