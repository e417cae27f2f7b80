"""Messages that name their cause: config errors (key, value given, the key meant), hosts that
cannot be reached, crontab shorthands, metrics without series nobody reads."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from archiver.config.settings import settings_from_dict
from archiver.core.errors import ConfigError
from archiver.core.net_errors import describe_connection_error
from archiver.service.metrics import Metrics
from archiver.service.schedule import build_trigger, max_age_for
from tests.conftest import Workspace, run_cli

STACK: dict[str, Any] = {"stacks": [{"uid": "stack-a"}]}


def _problem(document: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        settings_from_dict(document, source=Path("/etc/c66-archiver/config.toml"))
    return str(caught.value)


def test_an_unknown_key_names_the_key_probably_meant() -> None:
    """A misspelt key is unknown, with a `did you mean` for a close known key of its table."""
    message = _problem({**STACK, "transfer": {"max_concurent_downloads": 4}})
    assert message == (
        "/etc/c66-archiver/config.toml: transfer.max_concurent_downloads: unknown key "
        "(did you mean max_concurrent_downloads?)"
    )
    assert "did you mean transfer?" in _problem({**STACK, "transfers": {}})
    assert "did you mean bucket?" in _problem(
        {**STACK, "storage": {"type": "s3", "bucket": "abc", "bukcet": "abc"}}
    )
    assert "did you mean" not in _problem({**STACK, "transfer": {"colour": "blue"}})


def test_a_wrong_type_shows_the_value_given_but_never_a_url() -> None:
    """`(got "3000")` after the problem; a URL shows its scheme only (it may hold a secret)."""
    assert _problem({**STACK, "api": {"requests_per_hour": "3000"}}).endswith(
        'api.requests_per_hour: Input should be a valid integer (got "3000")'
    )
    assert _problem({**STACK, "transfer": {"verify_etag": "yes"}}).endswith('(got "yes")')
    secret = "https://hc-ping.com/0f1e2d3c-secret"
    message = _problem({**STACK, "notify": {"healthchecks_url": [secret]}})
    assert message.endswith("(got a list)")
    message = _problem({**STACK, "notify": {"webhook_on_success": secret}})
    assert '(got "https://...")' in message
    assert "secret" not in message


def test_a_problem_of_the_whole_file_has_no_key_prefix() -> None:
    """No `(top level):` before a problem that is about no single key."""
    message = _problem({})
    assert message == (
        "/etc/c66-archiver/config.toml: no stacks: add a [[stacks]] table or set "
        "[discover] enabled = true"
    )


@pytest.mark.parametrize(
    ("alias", "fields", "max_age_days"),
    [
        ("@hourly", "0 * * * *", 2 / 24),
        ("@daily", "0 0 * * *", 2),
        ("@midnight", "0 0 * * *", 2),
        ("@weekly", "0 0 * * 0", 14),
        ("@monthly", "0 0 1 * *", 62),
        ("@Yearly", "0 0 1 1 *", 732),
        ("@annually", "0 0 1 1 *", 732),
    ],
)
def test_crontab_shorthands_are_schedules(alias: str, fields: str, max_age_days: float) -> None:
    """@daily and friends mean their five fields; max_age follows (a month, a year apart)."""
    settings = settings_from_dict({**STACK, "schedule": {"cron": alias}})
    assert settings.schedule.cron == fields
    assert build_trigger(settings.schedule) is not None
    assert max_age_for(settings).total_seconds() == pytest.approx(max_age_days * 86400)


def test_reboot_is_not_a_schedule() -> None:
    """@reboot has no meaning for a daemon: refused, listing the shorthands there are."""
    message = _problem({**STACK, "schedule": {"cron": "@reboot"}})
    assert "schedule.cron" in message
    assert "@daily" in message


class _NoSuchHost(AbstractResolver):
    """A resolver that answers as DNS does for a name that does not exist."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        raise OSError(socket.EAI_NONAME, "Name or service not known")

    async def close(self) -> None:
        """Nothing to close."""


async def test_a_host_that_does_not_resolve_is_named() -> None:
    """aiohttp's ClientConnectorDNSError reads `cannot resolve host <host> (...)`."""
    connector = aiohttp.TCPConnector(resolver=_NoSuchHost())
    async with aiohttp.ClientSession(connector=connector) as session:
        with pytest.raises(aiohttp.ClientConnectorDNSError) as caught:
            await session.get("https://app.cloud66.example/api/3/stacks?X-Amz-Signature=abc")
    described = describe_connection_error(caught.value)
    assert described == "cannot resolve host app.cloud66.example (Name or service not known)"


async def test_an_unreachable_api_is_named_by_host_and_port(workspace: Workspace) -> None:
    """A pass against a port nobody listens on says which host and port, and why."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = workspace.write_config(f"http://127.0.0.1:{port}/api/3", [{"uid": "stack-a"}])
    result = await run_cli("--config", str(config), "sync")
    assert result.code == 1
    assert f"cannot connect to 127.0.0.1:{port} (Connection refused)" in result.stderr
    assert "ClientConnectorError" not in result.stderr


def test_counters_export_no_created_series() -> None:
    """/metrics has no `*_created` series (prometheus_client's default adds one per counter)."""
    metrics = Metrics()
    metrics.api_request("/stacks", "ok")
    page = metrics.render().decode()
    assert "c66_archiver_api_requests_total" in page
    assert "_created" not in page
