"""A TCP relay on loopback that behaves like a distant link: latency each way, a rate cap.

Loopback answers in microseconds, so a client that waits for every answer before
sending more looks as fast there as one that keeps requests in flight. Put this
relay between a client and a server (the benchmark's SFTP runs do) and each
direction gets `delay` seconds of one-way latency and at most `rate` bytes per
second per connection. What the relay holds per direction is bounded (`_HELD`),
so a slow receiver still pushes back on the sender as a real link would.

    python -m loopback.slow_link --to 127.0.0.1:2222 --delay 0.010 --rate 50000000
    # prints the port it listens on, then relays until SIGTERM
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections import deque

_READ = 256 * 1024
# At most this much is held per direction: enough for 64 MiB/s at 50 ms, still bounded.
_HELD = 8 * 1024 * 1024


class _Direction:
    """One way of one connection: bytes read, held for `delay`, written at most at `rate`."""

    def __init__(self, delay: float, rate: float | None) -> None:
        self._delay = delay
        self._rate = rate
        self._queue: deque[tuple[float, bytes]] = deque()
        self._held = 0
        self._changed = asyncio.Event()

    async def receive(self, reader: asyncio.StreamReader) -> None:
        loop = asyncio.get_running_loop()
        while data := await reader.read(_READ):
            while self._held >= _HELD:  # the far end is slow: stop reading (back-pressure)
                self._changed.clear()
                await self._changed.wait()
            self._queue.append((loop.time() + self._delay, data))
            self._held += len(data)
            self._changed.set()
        self._queue.append((loop.time() + self._delay, b""))
        self._changed.set()

    async def send(self, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        free_at = loop.time()  # when the rate cap lets the next byte go
        while True:
            while not self._queue:
                self._changed.clear()
                await self._changed.wait()
            due, data = self._queue.popleft()
            if not data:
                with contextlib.suppress(OSError):
                    writer.write_eof()
                return
            start = max(due, free_at)
            if start > loop.time():
                await asyncio.sleep(start - loop.time())
            writer.write(data)
            await writer.drain()
            self._held -= len(data)
            self._changed.set()
            if self._rate:
                free_at = max(free_at, start) + len(data) / self._rate


class SlowLink:
    """The relay: `await start()` gives the port; connections go to `target`."""

    def __init__(self, target: tuple[str, int], *, delay: float, rate: float | None) -> None:
        self._target = target
        self._delay = delay
        self._rate = rate
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        """Listen on a free loopback port; return it."""
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop listening (connections in progress end with their ends)."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(*self._target)
        except OSError:
            client_w.close()
            return
        up, down = _Direction(self._delay, self._rate), _Direction(self._delay, self._rate)
        jobs = [
            up.receive(client_r), up.send(server_w), down.receive(server_r), down.send(client_w)
        ]
        try:
            await asyncio.gather(*jobs)
        except (OSError, asyncio.IncompleteReadError):
            pass  # one end went away: close both
        finally:
            for writer in (client_w, server_w):
                writer.close()


async def _serve(target: tuple[str, int], delay: float, rate: float | None) -> None:
    link = SlowLink(target, delay=delay, rate=rate)
    print(await link.start(), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await link.close()


def main(argv: list[str] | None = None) -> int:
    """Relay to --to HOST:PORT with --delay seconds each way and an optional --rate."""
    parser = argparse.ArgumentParser(prog="python -m loopback.slow_link", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--to", required=True, help="HOST:PORT to relay to")
    parser.add_argument("--delay", type=float, default=0.0, help="one-way latency, seconds")
    parser.add_argument("--rate", type=float, default=0.0, help="bytes/s each way (0: no cap)")
    args = parser.parse_args(argv)
    host, _, port = args.to.rpartition(":")
    asyncio.run(_serve((host, int(port)), args.delay, args.rate or None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
