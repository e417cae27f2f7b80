"""Response bodies received in chunks: straight into buffers, cut, stalled, chunked, slow."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import ipaddress
import json
import os
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
import structlog
from aiohttp import web
from aiohttp.base_protocol import BaseProtocol
from aiohttp.client_proto import ResponseHandler
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from archiver.simulator import Simulator, SimulatorServer
from archiver.transfer import receive
from archiver.transfer.in_flight import InFlight
from archiver.transfer.receive import body_chunks
from tests.conftest import (
    PART_SIZE,
    Workspace,
    archived_sha256s,
    file_sha256,
    run_pass,
    settings_for,
)

KiB = 1024
MiB = 1024 * KiB
BODY = os.urandom(3 * MiB + 777)


_RELEASE: list[asyncio.Event] = []
_PEER_PORTS: list[int] = []  # the client port of each /plain request


async def _paced(request: web.Request, body: bytes, *, stop_at: int | None = None,
                 then: str = "close", pause: float = 0.0) -> web.StreamResponse:
    """Send `body` with a Content-Length in 64 KiB writes; stop early at `stop_at` bytes."""
    response = web.StreamResponse(headers={"Content-Length": str(len(body))})
    await response.prepare(request)
    end = len(body) if stop_at is None else stop_at
    for start in range(0, end, 64 * KiB):
        await response.write(body[start : min(end, start + 64 * KiB)])
        if pause:
            await asyncio.sleep(pause)
    if stop_at is None:
        await response.write_eof()
        return response
    if then == "stall":  # until the test is over
        await asyncio.wait_for(_RELEASE[-1].wait(), timeout=30)
    assert request.transport is not None
    request.transport.close()
    return response


async def _chunked(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    response.enable_chunked_encoding()
    await response.prepare(request)
    for start in range(0, len(BODY), 100_000):
        await response.write(BODY[start : start + 100_000])
    await response.write_eof()
    return response


@pytest.fixture
async def base_url() -> AsyncIterator[str]:
    """A loopback server with one route per kind of body."""
    async def plain(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        _PEER_PORTS.append(request.transport.get_extra_info("peername")[1])
        return await _paced(request, BODY)

    async def cut(request: web.Request) -> web.StreamResponse:
        return await _paced(request, BODY, stop_at=MiB + 5)

    async def stall(request: web.Request) -> web.StreamResponse:
        return await _paced(request, BODY, stop_at=MiB + 5, then="stall")

    async def slow(request: web.Request) -> web.StreamResponse:
        return await _paced(request, BODY[: 4 * 64 * KiB], pause=0.3)

    app = web.Application()
    for path, handler in (("/plain", plain), ("/cut", cut), ("/stall", stall), ("/slow", slow),
                          ("/chunked", _chunked)):
        app.router.add_get(path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    _RELEASE.append(asyncio.Event())
    yield f"http://127.0.0.1:{port}"
    _RELEASE.pop().set()
    await runner.cleanup()


@pytest.fixture(autouse=True)
def _checks_afresh() -> Iterator[None]:
    """Every test checks aiohttp anew and may report its fallback again; and what a test
    made it find (a forced public path) is forgotten after it, not kept for later tests."""
    receive.library_blocker.cache_clear()
    receive._reported.clear()
    yield
    receive.library_blocker.cache_clear()
    receive._reported.clear()


def _owner(piece: object) -> object:
    """The object holding a piece's bytes: itself, or what a memoryview looks into."""
    return piece.obj if isinstance(piece, memoryview) else piece


async def _receive_pieces(url: str) -> list[object]:
    """Every piece of a body as the transfer gets it (memoryviews when taken over)."""
    timeout = aiohttp.ClientTimeout(total=None, sock_read=10)  # a read timer, as downloads have
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as response:
        chunks = body_chunks(response, chunk_size=MiB, read_timeout=5)
        async with contextlib.aclosing(chunks):
            return [piece async for pieces in chunks for piece in pieces]


async def _receive(
    url: str, *, chunk_size: int = MiB, read_timeout: float | None = 10.0
) -> tuple[list[bytes], BaseException | None]:
    """Every chunk received (as bytes), and the error that ended the body, if any."""
    received: list[bytes] = []
    session = aiohttp.ClientSession(auto_decompress=False)
    async with session, session.get(url) as response:
        chunks = body_chunks(response, chunk_size=chunk_size, read_timeout=read_timeout)
        try:
            async with contextlib.aclosing(chunks):
                async for pieces in chunks:
                    received.append(b"".join(pieces))
        except (aiohttp.ClientPayloadError, TimeoutError) as error:
            return received, error
    return received, None


async def test_a_plain_body_arrives_whole_in_chunks_of_the_asked_size(base_url: str) -> None:
    """Content-Length bodies are taken over: exact bytes, full chunks but the last."""
    received, error = await _receive(f"{base_url}/plain")
    assert error is None
    assert b"".join(received) == BODY
    assert [len(chunk) for chunk in received[:-1]] == [MiB] * (len(received) - 1)
    assert len(received[-1]) == len(BODY) % MiB


async def test_a_cut_body_yields_what_arrived_then_raises(base_url: str) -> None:
    """The peer closes mid-body: every byte sent is handed out, then ClientPayloadError."""
    received, error = await _receive(f"{base_url}/cut")
    assert isinstance(error, aiohttp.ClientPayloadError)
    assert b"".join(received) == BODY[: MiB + 5]


async def test_a_stalled_body_ends_after_the_read_timeout(base_url: str) -> None:
    """No data for read_timeout seconds: what arrived is kept, then TimeoutError."""
    began = asyncio.get_running_loop().time()
    received, error = await _receive(f"{base_url}/stall", read_timeout=0.5)
    assert isinstance(error, TimeoutError)
    assert b"".join(received) == BODY[: MiB + 5]
    assert asyncio.get_running_loop().time() - began < 5


async def test_a_slow_consumer_is_not_a_stalled_peer(base_url: str) -> None:
    """Reading pauses while the consumer is busy; that silence never trips the timeout."""
    received = []
    async with aiohttp.ClientSession() as session, session.get(f"{base_url}/plain") as response:
        chunks = body_chunks(response, chunk_size=256 * KiB, read_timeout=0.3)
        async with contextlib.aclosing(chunks):
            async for pieces in chunks:
                received.append(b"".join(pieces))
                await asyncio.sleep(0.1)  # 13 chunks: 1.3 s, far past the timeout
    assert b"".join(received) == BODY


async def test_a_slow_body_is_handed_out_before_its_chunk_fills(base_url: str) -> None:
    """A trickle reaches the consumer every FLUSH_AFTER_SECONDS, not once per chunk."""
    received, error = await _receive(f"{base_url}/slow", chunk_size=8 * MiB)
    assert error is None
    assert b"".join(received) == BODY[: 4 * 64 * KiB]
    assert len(received) >= 2
    assert receive.FLUSH_AFTER_SECONDS < 1


async def test_a_chunked_body_goes_through_aiohttp(base_url: str) -> None:
    """No Content-Length: aiohttp reads it, gathered into chunks; the bytes are the same."""
    received, error = await _receive(f"{base_url}/chunked")
    assert error is None
    assert b"".join(received) == BODY
    assert all(len(chunk) >= MiB for chunk in received[:-1])


async def _plain_on(session: aiohttp.ClientSession, url: str, *, stop_after: int = 0) -> bytes:
    """GET `url` through a takeover; with `stop_after`, stop after that many chunks."""
    received = b""
    async with session.get(url) as response:
        chunks = body_chunks(response, chunk_size=MiB, read_timeout=5)
        async with contextlib.aclosing(chunks):
            count = 0
            async for pieces in chunks:
                received += b"".join(pieces)
                count += 1
                if count == stop_after:
                    break
    return received


async def test_a_whole_body_hands_its_connection_back_for_the_next_get(base_url: str) -> None:
    """After a body taken over and received whole, the next GET reuses the connection (no
    new handshake per segment), and still gets every byte right."""
    async with aiohttp.ClientSession() as session:
        for _ in range(3):
            assert await _plain_on(session, f"{base_url}/plain") == BODY
    assert len(set(_PEER_PORTS[-3:])) == 1


async def test_a_body_left_early_or_cut_never_goes_back_to_the_pool(base_url: str) -> None:
    """A body the consumer stopped reading, or one cut short, closes its connection: the next
    GET gets a fresh one and a whole body."""
    async with aiohttp.ClientSession() as session:
        assert len(await _plain_on(session, f"{base_url}/plain", stop_after=1)) == MiB
        with pytest.raises(aiohttp.ClientPayloadError):
            await _plain_on(session, f"{base_url}/cut")
        assert await _plain_on(session, f"{base_url}/plain") == BODY
    assert _PEER_PORTS[-1] != _PEER_PORTS[-2]


async def test_a_stalled_download_resumes_and_completes(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """A body that stops moving is cut after transfer.read_timeout and resumed with Range."""
    sim.add_stack("stack-a")
    backup_id = sim.add_backup("stack-a", size=200_000)
    sim.faults.slow_downloads = 1
    sim.faults.slow_bytes_per_second = 1  # one byte a second: a stall for a 0.4 s timeout
    settings = settings_for(workspace, server, "stack-a", transfer={"read_timeout": 0.4})
    summary = await run_pass(settings)
    assert summary.exit_code == 0
    assert archived_sha256s(workspace.archive) == {backup_id: sim.expected_sha256(backup_id)}


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A throwaway certificate and key for 127.0.0.1."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))
    return cert_path, key_path


async def test_a_body_over_tls_is_taken_over_too(tmp_path: Path) -> None:
    """Pre-signed URLs are https: the takeover works on a TLS transport, bytes exact."""
    cert, key = _self_signed(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    client_context = ssl.create_default_context(cafile=str(cert))

    async def plain(request: web.Request) -> web.StreamResponse:
        return await _paced(request, BODY)

    app = web.Application()
    app.router.add_get("/plain", plain)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context)
    await site.start()
    port = runner.addresses[0][1]
    try:
        connector = aiohttp.TCPConnector(ssl=client_context)
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get(f"https://127.0.0.1:{port}/plain") as response,
        ):
            assert response.connection is not None
            assert response.connection.transport is not None
            assert response.connection.transport.get_extra_info("sslcontext") is not None
            chunks = body_chunks(response, chunk_size=MiB, read_timeout=5)
            async with contextlib.aclosing(chunks):
                received = [pieces async for pieces in chunks]
    finally:
        await runner.cleanup()
    assert b"".join(b"".join(pieces) for pieces in received) == BODY
    # Taken over: whole receive buffers, not aiohttp's pieces (bytes objects).
    assert all(isinstance(piece, memoryview) for pieces in received[1:] for piece in pieces)


def _armed_pause(self: ResponseHandler) -> None:
    """An aiohttp whose pause_reading() no longer cancels the read timer."""
    BaseProtocol.pause_reading(self)


async def test_the_takeover_is_used_on_the_tested_aiohttp(base_url: str) -> None:
    """On the aiohttp the cap allows, every check passes: pieces are our own buffers."""
    assert receive.library_blocker() is None
    pieces = await _receive_pieces(f"{base_url}/plain")
    assert b"".join(bytes(piece) for piece in pieces) == BODY  # type: ignore[call-overload]
    assert any(isinstance(piece, memoryview) for piece in pieces)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("version", "is not the 3.14.x"),
        ("attribute", "ResponseHandler has no _drop_timeout_in_a_later_aiohttp"),
        ("timer", "left the read timer armed"),
        ("forced", "C66_ARCHIVER_PUBLIC_RECEIVE=1"),
    ],
)
async def test_a_changed_aiohttp_is_read_through_its_public_api_and_said_once(
    change: str, reason: str, base_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A precondition fails (version, attribute, timer): exact bytes via aiohttp, one warning."""
    if change == "version":
        monkeypatch.setattr(aiohttp, "__version__", "3.15.0")
    elif change == "attribute":  # as if a release renamed one (deleting breaks aiohttp itself)
        needed = (*receive._PROTOCOL_ATTRIBUTES, "_drop_timeout_in_a_later_aiohttp")
        monkeypatch.setattr(receive, "_PROTOCOL_ATTRIBUTES", needed)
    elif change == "timer":
        monkeypatch.setattr(ResponseHandler, "pause_reading", _armed_pause)
    else:
        monkeypatch.setenv(receive.PUBLIC_RECEIVE_ENV, "1")
    with structlog.testing.capture_logs() as logs:
        first = await _receive_pieces(f"{base_url}/plain")
        second = await _receive_pieces(f"{base_url}/plain")
    for pieces in (first, second):
        assert b"".join(pieces) == BODY  # type: ignore[arg-type]
        # aiohttp's bytes (a piece split at a chunk's end is a view of them), not our buffers
        assert all(isinstance(_owner(piece), bytes) for piece in pieces)
    warnings = [entry for entry in logs if entry["log_level"] == "warning"]
    assert len(warnings) == 1
    assert reason in warnings[0]["reason"]


async def test_a_pass_on_the_public_path_archives_exact_bytes_and_hashes(
    sim: Simulator,
    server: SimulatorServer,
    workspace: Workspace,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The fallback end to end: a 3-part backup joined, sha256 and each part's hash right."""
    monkeypatch.setenv(receive.PUBLIC_RECEIVE_ENV, "1")
    sim.add_stack("stack-a")
    backup_id = sim.add_backup("stack-a", size=2 * PART_SIZE + 12_345)
    settings = settings_for(workspace, server, "stack-a")
    with structlog.testing.capture_logs() as logs:
        summary = await run_pass(settings)
    assert summary.exit_code == 0
    assert archived_sha256s(workspace.archive) == {backup_id: sim.expected_sha256(backup_id)}
    manifest = json.loads(next(workspace.archive.rglob("manifest.json")).read_text())
    assert len(manifest["parts"]) == 3
    tar = next(workspace.archive.rglob("*.tar"))
    assert file_sha256(tar) == manifest["sha256"]
    joined = tar.read_bytes()
    offset = 0
    for part in manifest["parts"]:
        piece = joined[offset : offset + part["size"]]
        assert hashlib.sha256(piece).hexdigest() == part["sha256"]
        offset += part["size"]
    assert any(entry.get("reason") == "C66_ARCHIVER_PUBLIC_RECEIVE=1" for entry in logs)


async def test_the_public_path_never_hands_out_more_than_a_chunk_s_room(
    base_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through aiohttp, pieces that overrun a chunk are split at its end (views, no copy):
    every chunk holds at most chunk_size, the room it took, and all the room comes back."""
    monkeypatch.setenv(receive.PUBLIC_RECEIVE_ENV, "1")
    budget = InFlight(4 * MiB, head_room=2 * MiB)
    share = budget.share()
    chunk_size = 100_000  # no multiple of aiohttp's pieces: most chunks end mid-piece
    sizes: list[int] = []
    async with aiohttp.ClientSession() as session, session.get(f"{base_url}/plain") as response:
        chunks = body_chunks(response, chunk_size=chunk_size, read_timeout=5, share=share)
        async with contextlib.aclosing(chunks):
            async for pieces in chunks:
                sizes.append(sum(len(piece) for piece in pieces))
                share.release(sizes[-1])
    assert sum(sizes) == len(BODY)
    assert max(sizes) <= chunk_size
    assert sizes.count(chunk_size) >= len(BODY) // chunk_size - 5  # mostly full chunks
    assert budget.used == 0
