"""The Cloud 66 client against the simulator on loopback: pages, quirks, retries, errors."""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs
from yarl import URL

from archiver.cloud66.budget import RequestBudget
from archiver.cloud66.client import Cloud66Client
from archiver.config.settings import ApiSettings
from archiver.core.errors import (
    ApiResponseError,
    ApiUnavailable,
    AuthError,
    ThrottledError,
)
from archiver.core.retry import FAST_RETRY_ENV
from archiver.simulator import Simulator, SimulatorServer

TOKEN = "c66-test-token-0123456789abcdef"
STACK = "stack-abc"

MakeClient = Callable[..., Cloud66Client]


@pytest.fixture
def sim(tmp_path: Path) -> Simulator:
    """A simulator with one stack, small parts so multi-part backups are cheap."""
    simulator = Simulator(token=TOKEN, blob_dir=tmp_path / "blobs", part_size=1000)
    simulator.add_stack(STACK, "Shop")
    return simulator


@pytest.fixture
async def server(sim: Simulator) -> AsyncIterator[SimulatorServer]:
    """The simulator served on a loopback port."""
    async with SimulatorServer(sim) as running:
        yield running


@pytest.fixture
async def make_client(server: SimulatorServer) -> AsyncIterator[MakeClient]:
    """Build clients against the simulator (settings overridable); close them afterwards."""
    clients: list[Cloud66Client] = []

    def build(token: str = TOKEN, **settings: Any) -> Cloud66Client:
        api = ApiSettings(base_url=server.base_url, **settings)
        client = Cloud66Client(api, token, budget=RequestBudget(api.requests_per_hour))
        clients.append(client)
        return client

    yield build
    for client in clients:
        await client.aclose()


@pytest.fixture
def fast_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shrink our own backoff delays so retry tests run in milliseconds."""
    monkeypatch.setenv(FAST_RETRY_ENV, "1")


# -- pages and records --------------------------------------------------------------


async def test_list_backups_walks_every_page(sim: Simulator, make_client: MakeClient) -> None:
    """65 backups at 30 a page come back complete, newest first, in exactly 3 list requests."""
    ids = [sim.add_backup(STACK, database_name=f"db{n}") for n in range(65)]
    client = make_client()
    backups = await client.list_backups(STACK)
    assert [backup.id for backup in backups] == sim.backup_ids(STACK)
    assert sorted(backup.id for backup in backups) == sorted(ids)
    assert sim.stats.api_requests_by_path["list_backups"] == 3
    assert client.requests_made == sim.stats.api_requests == 3


async def test_list_backups_passes_the_db_type_filter(
    sim: Simulator, make_client: MakeClient
) -> None:
    """db_type reaches the server: only the requested type is listed."""
    sim.add_backup(STACK, db_type="mysql")
    redis_id = sim.add_backup(STACK, db_type="redis")
    backups = await make_client().list_backups(STACK, db_type="redis", group=1)
    assert [backup.id for backup in backups] == [redis_id]


async def test_records_tolerate_nulls_and_unknown_fields(
    sim: Simulator, make_client: MakeClient
) -> None:
    """Null fields and fields we do not know (logical_backup) parse; the raw record is kept."""
    backup_id = sim.add_backup(STACK, db_type=None, database_name=None)  # type: ignore[arg-type]
    (backup,) = await make_client().list_backups(STACK)
    assert backup.id == backup_id
    assert backup.db_type is None
    assert backup.database_name is None
    assert backup.is_ok
    assert backup.raw["logical_backup"] is False
    assert backup.raw["restore_result"] is None


async def test_list_stacks_and_files(sim: Simulator, make_client: MakeClient) -> None:
    """Stacks list with their uid and name; a 2.5-part backup lists its pieces in order."""
    sim.add_stack("stack-two", "Two")
    backup_id = sim.add_backup(STACK, database_name="big", size=2500)
    client = make_client()
    stacks = await client.list_stacks()
    assert {(stack.uid, stack.name) for stack in stacks} == {(STACK, "Shop"), ("stack-two", "Two")}
    files = await client.list_files(STACK, backup_id)
    assert [(f.id, f.name) for f in files] == [
        ("tar-aa", "big.tar-aa"),
        ("tar-ab", "big.tar-ab"),
        ("tar-ac", "big.tar-ac"),
    ]


# -- the public_url quirk -----------------------------------------------------------


async def test_public_url_is_decoded_once_and_downloads(
    sim: Simulator, server: SimulatorServer, make_client: MakeClient
) -> None:
    """The decoded URL downloads the right bytes sent as-is; the URL as the API gives it fails."""
    backup_id = sim.add_backup(STACK, size=700)
    public_url = await make_client().public_url(STACK, backup_id, "tar")
    assert "%25" not in public_url
    expected = b"".join(path.read_bytes() for path in sim.backup_content_path(backup_id))
    async with aiohttp.ClientSession() as session:
        async with session.get(URL(public_url, encoded=True)) as response:
            assert response.status == 200
            assert await response.read() == expected
        raw_url = await _raw_public_url(session, server, backup_id)
        assert "%25" in raw_url
        async with session.get(URL(raw_url, encoded=True)) as response:
            assert response.status == 403
            assert "SignatureDoesNotMatch" in await response.text()


async def _raw_public_url(
    session: aiohttp.ClientSession, server: SimulatorServer, backup_id: int
) -> str:
    """The public_url exactly as the API returns it (to show it cannot be used as is)."""
    url = f"{server.base_url}/stacks/{STACK}/backups/{backup_id}/files/tar"
    async with session.get(url, headers={"Authorization": f"Bearer {TOKEN}"}) as response:
        body = await response.json()
    raw: str = body["response"]["public_url"]
    return raw


# -- retries --------------------------------------------------------------------------


@pytest.mark.usefixtures("fast_retry")
async def test_5xx_is_retried_then_succeeds(sim: Simulator, make_client: MakeClient) -> None:
    """Two HTML 500 pages, then success: the caller sees only the result."""
    sim.add_backup(STACK)
    sim.faults.api_errors = 2
    backups = await make_client(max_retries=3).list_backups(STACK)
    assert len(backups) == 1
    assert sim.stats.api_requests_by_path["list_backups"] == 3


@pytest.mark.usefixtures("fast_retry")
async def test_5xx_beyond_max_retries_is_api_unavailable(
    sim: Simulator, make_client: MakeClient
) -> None:
    """A server that keeps failing gives ApiUnavailable after 1 + max_retries tries."""
    sim.faults.api_errors = 100
    with pytest.raises(ApiUnavailable, match=f"GET /stacks/{STACK}/backups") as caught:
        await make_client(max_retries=2).list_backups(STACK)
    assert caught.value.status == 500
    assert sim.stats.api_requests == 3


@pytest.mark.usefixtures("fast_retry")
async def test_connection_refused_is_api_unavailable() -> None:
    """Nothing listening on the port: retried, then ApiUnavailable naming the request."""
    with socket.socket() as probe:  # a port that was free a moment ago and is closed now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    api = ApiSettings(base_url=f"http://127.0.0.1:{port}/api/3", max_retries=1)
    async with Cloud66Client(api, TOKEN, budget=RequestBudget(100)) as client:
        with pytest.raises(ApiUnavailable, match="GET /stacks"):
            await client.list_stacks()
        assert client.requests_made == 2


@pytest.mark.usefixtures("fast_retry")
async def test_server_that_never_answers_times_out_as_api_unavailable() -> None:
    """A server that accepts and stays silent hits settings.timeout, is retried, then fails."""
    silent: list[asyncio.StreamWriter] = []

    async def hold_open(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        silent.append(writer)  # keep the connection open, never answer

    listener = await asyncio.start_server(hold_open, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    api = ApiSettings(base_url=f"http://127.0.0.1:{port}/api/3", timeout="0.2s", max_retries=1)
    async with listener, Cloud66Client(api, TOKEN, budget=RequestBudget(100)) as client:
        with pytest.raises(ApiUnavailable, match=r"GET /stacks\?page=1: timed out"):
            await client.list_stacks()
        assert client.requests_made == 2
        for writer in silent:
            writer.close()


async def test_throttled_with_retry_after_waits_as_asked(
    sim: Simulator, make_client: MakeClient
) -> None:
    """503 throttled with Retry-After: 0.3 is retried no sooner than 0.3 s later."""
    sim.faults.throttle = 2
    sim.faults.throttle_retry_after = 0.3
    stacks = await make_client().list_stacks()
    assert [stack.uid for stack in stacks] == [STACK]
    times = sim.stats.api_request_times
    assert len(times) == 3
    assert all(later - earlier >= 0.28 for earlier, later in itertools.pairwise(times))


async def test_throttled_longer_than_max_throttle_wait_gives_up_at_once(
    sim: Simulator, make_client: MakeClient
) -> None:
    """A Retry-After beyond max_throttle_wait raises ThrottledError without waiting."""
    sim.faults.throttle = 1
    sim.faults.throttle_retry_after = 600
    with pytest.raises(ThrottledError, match="max_throttle_wait") as caught:
        await make_client(max_throttle_wait="1m").list_stacks()
    assert caught.value.retry_after == 600
    assert sim.stats.api_requests == 1


@pytest.mark.usefixtures("fast_retry")
async def test_throttled_without_retry_after_backs_off_then_gives_up(
    sim: Simulator, make_client: MakeClient
) -> None:
    """Throttled with no Retry-After: backoff, max_retries more tries, then ThrottledError."""
    sim.faults.throttle = 100
    with pytest.raises(ThrottledError, match=f"GET /stacks/{STACK}/backups"):
        await make_client(max_retries=2).list_backups(STACK)
    assert sim.stats.api_requests == 3


async def test_sim_side_rate_limit_is_reported_as_throttled(
    sim: Simulator, make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the server's hourly limit every answer is 503 throttled: ThrottledError."""
    monkeypatch.setenv(FAST_RETRY_ENV, "1")
    sim.requests_per_hour = 2
    client = make_client(max_retries=1)
    await client.list_stacks()
    await client.list_stacks()
    with pytest.raises(ThrottledError):
        await client.list_stacks()


# -- permanent errors -----------------------------------------------------------------


async def test_wrong_token_is_auth_error_without_retry(
    sim: Simulator, make_client: MakeClient
) -> None:
    """401 is AuthError at once, with the server's description and no token in it."""
    wrong = "wrong-token-9876543210fedcba"
    with capture_logs() as logs, pytest.raises(AuthError, match="401 unauthenticated") as caught:
        await make_client(token=wrong, max_retries=5).list_stacks()
    assert "access token is missing or invalid" in str(caught.value)
    assert sim.stats.api_requests == 1
    _assert_no_secret([wrong, TOKEN], str(caught.value), logs)


async def test_unknown_stack_is_api_response_error(make_client: MakeClient) -> None:
    """404 is ApiResponseError naming the request path, hence the stack."""
    with pytest.raises(ApiResponseError, match="GET /stacks/no-such-stack/backups") as caught:
        await make_client().list_backups("no-such-stack")
    assert caught.value.status == 404


async def test_unknown_backup_is_api_response_error(make_client: MakeClient) -> None:
    """A backup id the stack does not have is a 404 naming stack and backup."""
    with pytest.raises(ApiResponseError, match=f"/stacks/{STACK}/backups/999/files"):
        await make_client().list_files(STACK, 999)


async def test_malformed_json_is_retried_once_then_api_response_error(
    sim: Simulator, make_client: MakeClient
) -> None:
    """A truncated 200 body: one more try, then ApiResponseError 'malformed JSON from GET ...'."""
    sim.faults.malformed_json_stacks.add(STACK)
    with pytest.raises(ApiResponseError, match=f"malformed JSON from GET /stacks/{STACK}/backups"):
        await make_client(max_retries=5).list_backups(STACK)
    assert sim.stats.api_requests_by_path["list_backups"] == 2


# -- headers, warnings, secrets -------------------------------------------------------


async def test_x_account_header_is_sent(tmp_path: Path) -> None:
    """The simulator refuses a different X-Account (403) and accepts ours: the header is sent."""
    sim = Simulator(token=TOKEN, blob_dir=tmp_path, account_id=42)
    sim.add_stack(STACK)
    async with SimulatorServer(sim) as server:
        right = ApiSettings(base_url=server.base_url, account_id=42)
        wrong = ApiSettings(base_url=server.base_url, account_id=7)
        async with Cloud66Client(right, TOKEN, budget=RequestBudget(10)) as client:
            assert [stack.uid for stack in await client.list_stacks()] == [STACK]
        async with Cloud66Client(wrong, TOKEN, budget=RequestBudget(10)) as client:
            with pytest.raises(AuthError, match="403 forbidden"):
                await client.list_stacks()


async def test_warning_header_is_logged_once(sim: Simulator, make_client: MakeClient) -> None:
    """X-Cloud66-Warning is logged at warning level once, however many answers carry it."""
    sim.warning = "API v3 is deprecated; move to v4"
    client = make_client()
    with capture_logs() as logs:
        await client.list_stacks()
        await client.list_stacks()
    warnings = [entry for entry in logs if entry["event"] == "Cloud 66 API warning"]
    assert len(warnings) == 1
    assert warnings[0]["log_level"] == "warning"
    assert warnings[0]["warning"] == sim.warning
    assert warnings[0]["request"] == "GET /stacks?page=1"


async def test_requests_go_through_the_budget(sim: Simulator, server: SimulatorServer) -> None:
    """Every request sent is recorded by the budget, for the state store to persist."""
    for n in range(35):
        sim.add_backup(STACK, database_name=f"db{n}")
    persisted: list[float] = []
    budget = RequestBudget(100, on_acquire=persisted.append)
    async with Cloud66Client(ApiSettings(base_url=server.base_url), TOKEN, budget=budget) as client:
        await client.list_backups(STACK)
    assert len(persisted) == sim.stats.api_requests == 2
    assert budget.remaining == 98


@pytest.mark.usefixtures("fast_retry")
async def test_token_never_appears_in_errors_or_logs(
    sim: Simulator, make_client: MakeClient
) -> None:
    """Across retries, throttling and errors, neither the token nor a signed URL is logged."""
    backup_id = sim.add_backup(STACK, size=500)
    sim.warning = "heads up"
    sim.faults.api_errors = 1
    sim.faults.throttle = 1
    client = make_client(max_retries=3)
    messages: list[str] = []
    with capture_logs() as logs:
        await client.list_backups(STACK)
        await client.public_url(STACK, backup_id, "tar")
        for failing in (client.list_backups("nope"), client.public_url(STACK, 999, "tar")):
            with pytest.raises(ApiResponseError) as caught:
                await failing
            messages.append(str(caught.value))
    assert any("retrying" in entry["event"] for entry in logs)
    _assert_no_secret([TOKEN, "Signature=", "AWSAccessKeyId"], " ".join(messages), logs)
    assert TOKEN not in repr(client)


def _assert_no_secret(secrets: list[str], text: str, logs: list[dict[str, Any]]) -> None:
    """None of `secrets` is in the text or in any captured log entry."""
    rendered = text + " ".join(repr(entry) for entry in logs)
    for secret in secrets:
        assert secret not in rendered
