"""A real daemon process with [http], and reading what it serves: shared by the service tests."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import start_cli


def free_port() -> int:
    """A loopback port that is free now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value, from the Prometheus text format."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def http_get(url: str) -> tuple[int, str]:
    """GET `url`: (status, body text)."""
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


async def wait_for_metric(base: str, name: str, labels: dict[str, str], at_least: float) -> str:
    """Poll /metrics until the sample reaches `at_least`; return the page."""
    key = (name, tuple(sorted(labels.items())))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            status, text = await http_get(f"{base}/metrics")
        except aiohttp.ClientConnectionError:
            status, text = 0, ""
        if status == 200 and metric_samples(text).get(key, 0) >= at_least:
            return text
        await asyncio.sleep(0.1)
    raise AssertionError(f"{name}{labels} never reached {at_least}")


@asynccontextmanager
async def running_daemon(config: Path, port: int) -> AsyncIterator[str]:
    """A daemon process serving [http] on `port`; yields its base URL; SIGTERM -> exit 0."""
    process = await start_cli("--config", str(config))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 30)
    assert code == 0
