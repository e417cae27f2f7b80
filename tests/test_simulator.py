"""The simulator behaves like the Cloud 66 API v3 and S3 where the archiver relies on them:
the envelope and pagination, bearer auth, the twice-encoded pre-signed URL, S3's signature
and expiry errors, Range and ETags, and the faults that can be switched on.

Every test talks real HTTP over loopback with aiohttp; nothing is mocked.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yarl

from archiver.simulator import CHUNK_SIZE, Simulator, SimulatorServer, populate_demo
from archiver.simulator.content import block
from archiver.simulator.documents import backup_json

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DOC_FIELDS = (
    "id",
    "server_uid",
    "db_type",
    "database_name",
    "file_base",
    "backup_date_iso",
    "backup_status",
    "backup_result",
    "restore_status",
    "restore_result",
    "created_at_iso",
    "updated_at_iso",
    "verify_status",
    "verify_result",
    "storage_path",
    "skip_tables",
    "backup_size",
)  # the doc sample's fields
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def sim(tmp_path: Path) -> Simulator:
    return Simulator(token=TOKEN, blob_dir=tmp_path / "blobs", part_size=1000)


@pytest.fixture
async def server(sim: Simulator) -> AsyncIterator[SimulatorServer]:
    async with SimulatorServer(sim) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield session


async def api(
    http: aiohttp.ClientSession, server: SimulatorServer, path: str, **params: str
) -> tuple[int, Any]:
    async with http.get(server.base_url + path, headers=AUTH, params=params) as resp:
        return resp.status, await resp.json(content_type=None)


async def public_url(
    http: aiohttp.ClientSession, server: SimulatorServer, stack: str, bid: int, fid: str
) -> str:
    status, body = await api(http, server, f"/stacks/{stack}/backups/{bid}/files/{fid}")
    assert status == 200
    assert body["response"]["ok"] is True
    url: str = body["response"]["public_url"]
    return url


def once_decoded(url: str) -> yarl.URL:
    """What a correct client sends: %25 -> % once, no re-encoding."""
    return yarl.URL(url.replace("%25", "%"), encoded=True)


async def fetch(
    http: aiohttp.ClientSession, url: yarl.URL, headers: dict[str, str] | None = None
) -> tuple[int, bytes, Any]:
    async with http.get(url, headers=headers) as resp:
        return resp.status, await resp.read(), resp.headers


def md5(data: bytes) -> Any:
    return hashlib.md5(data, usedforsecurity=False)


async def read_until_cut(
    http: aiohttp.ClientSession, url: yarl.URL, headers: dict[str, str], received: bytearray
) -> int:
    """Read a response into ``received`` until it ends or breaks; return the status."""
    async with http.get(url, headers=headers) as resp:
        async for chunk in resp.content.iter_any():
            received += chunk
        return resp.status


def joined(sim: Simulator, bid: int) -> bytes:
    return b"".join(p.read_bytes() for p in sim.backup_content_path(bid))


# ----------------------------------------------------------------- API envelope


async def test_pagination_walks_65_backups_in_three_pages(
    sim: Simulator, server: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    """65 backups come back as pages of 30, 30, 5, newest first, `next` null on the last."""
    start = datetime(2025, 1, 1, tzinfo=UTC)
    for n in range(65):
        sim.add_backup("stk", size=10, backup_date=start + timedelta(hours=n))
    seen: list[int] = []
    for page in (1, 2, 3):
        status, body = await api(http, server, "/stacks/stk/backups.json", page=str(page))
        assert status == 200
        assert body["count"] == 65
        pag = body["pagination"]
        assert pag["current"] == page
        assert pag["per_page"] == 30
        assert pag["pages"] == 3
        assert pag["count"] == 65
        assert pag["next"] == (page + 1 if page < 3 else None)
        assert pag["previous"] == (page - 1 if page > 1 else None)
        seen += [b["id"] for b in body["response"]]
    assert seen == list(range(65, 0, -1))
    assert sim.stats.api_requests_by_path["list_backups"] == 3


async def test_backup_record_has_documented_and_extra_fields(
    sim: Simulator, server: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    """A backup carries every field of the doc sample plus an unknown one; .json works."""
    bid = sim.add_backup("stk", db_type="postgresql", database_name="shop")
    for suffix in ("", ".json"):
        status, body = await api(http, server, f"/stacks/stk/backups/{bid}{suffix}")
        assert status == 200
        record = body["response"]
        for key in DOC_FIELDS:
            assert key in record
        assert record["id"] == bid
        assert record["db_type"] == "postgresql"
        assert record["restore_result"] is None
        assert record["backup_size"] == 0
        assert record["logical_backup"] is False


async def test_stacks_listing_and_db_type_filter(
    sim: Simulator, server: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    """GET /stacks lists stacks; db_type filters backups and group is accepted."""
    sim.add_stack("a", "Alpha", "staging")
    sim.add_backup("a", db_type="mysql")
    sim.add_backup("a", db_type="redis")
    status, body = await api(http, server, "/stacks")
    assert status == 200
    assert body["response"][0]["uid"] == "a"
    assert body["response"][0]["environment"] == "staging"
    _, body = await api(http, server, "/stacks/a/backups", db_type="redis", group="g1")
    assert [b["db_type"] for b in body["response"]] == ["redis"]


async def test_missing_or_wrong_token_is_refused_401(
    server: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    """No token or a wrong one gets 401 unauthenticated."""
    for headers in ({}, {"Authorization": "Bearer nope"}):
        async with http.get(server.base_url + "/stacks", headers=headers) as resp:
            assert resp.status == 401
            assert (await resp.json())["error"] == "unauthenticated"


async def test_wrong_account_header_is_forbidden(tmp_path: Path) -> None:
    """With account_id set, another X-Account value gets 403 and the right one passes."""
    sim = Simulator(token=TOKEN, blob_dir=tmp_path, account_id=7)
    async with SimulatorServer(sim) as srv, aiohttp.ClientSession() as http:
        for account, expected in (("8", 403), ("7", 200)):
            headers = {**AUTH, "X-Account": account}
            async with http.get(srv.base_url + "/stacks", headers=headers) as resp:
                assert resp.status == expected


async def test_unknown_stack_and_backup_are_404(
    sim: Simulator, server: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    """Unknown stacks, backups, files and paths answer 404 not_found in JSON."""
    bid = sim.add_backup("stk")
    for path in (
        "/stacks/nope/backups",
        f"/stacks/stk/backups/{bid + 1}",
        f"/stacks/stk/backups/{bid}/files/zzz",
        "/nothing/here",
    ):
        status, body = await api(http, server, path)
        assert (status, body["error"]) == (404, "not_found"), path


# ----------------------------------------------------------------- public_url


async def test_double_encoded_url_works_only_when_decoded_once(
    sim: Simulator, server: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    """The URL arrives %-encoded twice; decoded once it downloads, as received it is 403."""
    bid = sim.add_backup("stk", size=500)
    url = await public_url(http, server, "stk", bid, "tar")
    assert "%253D" in url
    assert "%252F" in url or "%252B" in url
    status, body, _ = await fetch(http, once_decoded(url))
    assert status == 200
    assert body == joined(sim, bid)
    for as_received in (yarl.URL(url, encoded=True), yarl.URL(url)):
        status, body, _ = await fetch(http, as_received)
        assert status == 403
        assert b"<Code>SignatureDoesNotMatch</Code>" in body
    assert sim.stats.downloads_started == 1
    assert sim.stats.blob_refusals == 2


async def test_tampered_signature_is_refused(
    sim: Simulator, server: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    """A URL for another file, or without its query, does not pass."""
    bid = sim.add_backup("stk", size=2500)
    url = str(once_decoded(await public_url(http, server, "stk", bid, "tar-aa")))
    status, body, _ = await fetch(http, yarl.URL(url.replace("tar-aa", "tar-ab"), encoded=True))
    assert status == 403
    assert b"SignatureDoesNotMatch" in body
    status, body, _ = await fetch(http, yarl.URL(url.split("?")[0], encoded=True))
    assert status == 403
    assert b"AccessDenied" in body


async def test_expired_url_gets_access_denied(
    sim: Simulator, server: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    """An expired URL is 403 'Request has expired'; the fault counts down to a good URL."""
    bid = sim.add_backup("stk", size=100)
    sim.faults.expired_urls = 1
    expired = await public_url(http, server, "stk", bid, "tar")
    assert sim.faults.expired_urls == 0
    status, body, _ = await fetch(http, once_decoded(expired))
    assert status == 403
    assert b"<Code>AccessDenied</Code>" in body
    assert b"Request has expired" in body
    fresh = await public_url(http, server, "stk", bid, "tar")
    assert (await fetch(http, once_decoded(fresh)))[0] == 200


async def test_url_lifetime_is_enforced(tmp_path: Path) -> None:
    """A URL used after url_lifetime has passed is refused as expired."""
    sim = Simulator(token=TOKEN, blob_dir=tmp_path, url_lifetime=1.0)
    bid = sim.add_backup("stk", size=10)
    async with SimulatorServer(sim) as srv, aiohttp.ClientSession() as http:
        url = once_decoded(await public_url(http, srv, "stk", bid, "tar"))
        await asyncio.sleep(2.1)
        status, body, _ = await fetch(http, url)
        assert status == 403
        assert b"Request has expired" in body


async def test_non_ascii_digits_are_refused_not_an_error(
    sim: Simulator, server: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    """`page=²` is a 400 and `Expires=²` a 403: "²".isdigit() is True but int() refuses it."""
    bid = sim.add_backup("stk", size=10)
    status, body = await api(http, server, "/stacks", page="²")
    assert status == 400
    assert body["error"] == "bad_request"
    url = once_decoded(await public_url(http, server, "stk", bid, "tar"))
    tampered = str(url).replace(f"Expires={url.query['Expires']}", "Expires=%C2%B2")
    status, body, _ = await fetch(http, yarl.URL(tampered, encoded=True))
    assert status == 403
    assert b"<Code>AccessDenied</Code>" in body


async def test_head_is_refused(
    sim: Simulator, server: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    """HEAD on a pre-signed GET URL answers 403, as S3 does."""
    bid = sim.add_backup("stk", size=100)
    url = once_decoded(await public_url(http, server, "stk", bid, "tar"))
    async with http.head(url) as resp:
        assert resp.status == 403
    assert sim.stats.downloads_started == 0


# ----------------------------------------------------------------- blob ranges


async def test_range_requests_give_206_with_content_range(
    sim: Simulator, server: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    """bytes=N- and bytes=N-M give 206, the right slice and Content-Range; ETag is the MD5."""
    bid = sim.add_backup("stk", size=900)
    data = joined(sim, bid)
    url = once_decoded(await public_url(http, server, "stk", bid, "tar"))
    status, body, headers = await fetch(http, url)
    assert status == 200
    assert headers["Content-Length"] == "900"
    assert headers["ETag"] == f'"{md5(data).hexdigest()}"'
    assert headers["Accept-Ranges"] == "bytes"
    status, body, headers = await fetch(http, url, {"Range": "bytes=100-"})
    assert (status, body) == (206, data[100:])
    assert headers["Content-Range"] == "bytes 100-899/900"
    status, body, headers = await fetch(http, url, {"Range": "bytes=10-19"})
    assert (status, body, headers["Content-Range"]) == (206, data[10:20], "bytes 10-19/900")
    status, _, headers = await fetch(http, url, {"Range": "bytes=900-"})
    assert status == 416
    assert headers["Content-Range"] == "bytes */900"


async def test_if_range_mismatch_gives_full_200(
    sim: Simulator, server: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    """If-Range with the current ETag keeps the 206; another ETag gets the full 200."""
    bid = sim.add_backup("stk", size=900)
    data = joined(sim, bid)
    etag = f'"{md5(data).hexdigest()}"'
    url = once_decoded(await public_url(http, server, "stk", bid, "tar"))
    status, body, _ = await fetch(http, url, {"Range": "bytes=500-", "If-Range": etag})
    assert (status, body) == (206, data[500:])
    status, body, _ = await fetch(http, url, {"Range": "bytes=500-", "If-Range": '"other"'})
    assert (status, body) == (200, data)


# ----------------------------------------------------------------- content


async def test_parts_split_join_and_hash(
    sim: Simulator, server: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    """2500 bytes at part_size 1000 gives tar-aa/ab/ac whose downloads join to the sha256."""
    bid = sim.add_backup("stk", size=2500, database_name="shop")
    _, body = await api(http, server, f"/stacks/stk/backups/{bid}/files")
    assert body["response"] == [
        {"id": "tar-aa", "name": "shop.tar-aa"},
        {"id": "tar-ab", "name": "shop.tar-ab"},
        {"id": "tar-ac", "name": "shop.tar-ac"},
    ]
    sizes = [p.stat().st_size for p in sim.backup_content_path(bid)]
    assert sizes == [1000, 1000, 500]
    digest = hashlib.sha256()
    for entry in body["response"]:
        url = once_decoded(await public_url(http, server, "stk", bid, entry["id"]))
        status, chunk, headers = await fetch(http, url)
        assert status == 200
        assert headers["ETag"] == f'"{md5(chunk).hexdigest()}"'
        digest.update(chunk)
    assert digest.hexdigest() == sim.expected_sha256(bid)
    assert sim.stats.downloads_completed == 3
    assert sim.stats.bytes_served == 2500


async def test_single_part_and_legacy_names(
    sim: Simulator, server: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    """One part is id 'tar'; legacy backups name their parts '.tar.aa'."""
    one = sim.add_backup("stk", size=1000, database_name="db")
    legacy = sim.add_backup("stk", size=1001, database_name="db", legacy_part_names=True)
    _, body = await api(http, server, f"/stacks/stk/backups/{one}/files")
    assert body["response"] == [{"id": "tar", "name": "db.tar"}]
    _, body = await api(http, server, f"/stacks/stk/backups/{legacy}/files")
    assert [f["name"] for f in body["response"]] == ["db.tar.aa", "db.tar.ab"]


def test_content_is_deterministic_and_seeded(tmp_path: Path) -> None:
    """The same seed gives the same bytes; another seed or position gives other bytes."""
    sim = Simulator(blob_dir=tmp_path, part_size=5_000_000)
    a = sim.add_backup("s", size=3_000_000, seed=42)
    b = sim.add_backup("s", size=3_000_000, seed=42)
    c = sim.add_backup("s", size=3_000_000, seed=43)
    assert sim.expected_sha256(a) == sim.expected_sha256(b) != sim.expected_sha256(c)
    data = joined(sim, a)
    mib = 1 << 20
    assert data[:mib] != data[mib : 2 * mib]  # blocks differ: shifted data is detected
    assert hashlib.sha256(data).hexdigest() == sim.expected_sha256(a)


def test_every_generated_block_is_exactly_one_mib() -> None:
    """Blocks keep their length whatever the rotation, so offsets and sizes stay exact."""
    base = bytes(range(256)) * (CHUNK_SIZE // 256)
    near_edge = [i for i in range(200_000) if (i * 7919 + 1) % CHUNK_SIZE > CHUNK_SIZE - 9][:5]
    for index in [0, 1, 2, 1023, *near_edge]:
        assert len(block(base, index)) == CHUNK_SIZE


async def test_add_backup_async_serves_while_generating(
    sim: Simulator, server: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    """add_backup_async reserves ids in order and the API keeps answering meanwhile."""
    first, second = await asyncio.gather(
        sim.add_backup_async("stk", size=3000), sim.add_backup_async("stk", size=10)
    )
    assert (first, second) == (1, 2)
    assert sorted(sim.backup_ids("stk")) == [1, 2]
    assert (await api(http, server, "/stacks/stk/backups"))[1]["count"] == 2


async def test_remove_backup_hides_it_everywhere(
    sim: Simulator, server: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    """A removed backup is gone from the API and its URL answers 404 NoSuchKey."""
    bid = sim.add_backup("stk", size=10)
    url = once_decoded(await public_url(http, server, "stk", bid, "tar"))
    sim.remove_backup(bid)
    assert (await api(http, server, f"/stacks/stk/backups/{bid}"))[0] == 404
    status, body, _ = await fetch(http, url)
    assert status == 404
    assert b"NoSuchKey" in body


# ----------------------------------------------------------------- faults


async def test_api_errors_fault_counts_down(
    sim: Simulator, server: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    """api_errors=2 gives two HTML 500s, then normal answers."""
    sim.faults.api_errors = 2
    for _ in range(2):
        async with http.get(server.base_url + "/stacks", headers=AUTH) as resp:
            assert resp.status == 500
            assert resp.content_type == "text/html"
    assert sim.faults.api_errors == 0
    assert (await api(http, server, "/stacks"))[0] == 200
    assert sim.stats.api_requests == 3


async def test_throttle_fault_with_retry_after(
    sim: Simulator, server: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    """throttle answers 503 throttled, with Retry-After when configured, then recovers."""
    sim.faults.throttle = 1
    sim.faults.throttle_retry_after = 2.5
    async with http.get(server.base_url + "/stacks", headers=AUTH) as resp:
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "2.5"
        assert (await resp.json())["error"] == "throttled"
    assert (await api(http, server, "/stacks"))[0] == 200


async def test_requests_per_hour_limit(
    sim: Simulator, server: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    """Past requests_per_hour in the trailing hour the API answers 503 throttled."""
    sim.requests_per_hour = 3
    statuses = [(await api(http, server, "/stacks"))[0] for _ in range(4)]
    assert statuses == [200, 200, 200, 503]
    assert len(sim.stats.api_request_times) == 4
    assert sim.stats.api_request_times == sorted(sim.stats.api_request_times)


async def test_malformed_json_only_for_chosen_stack(
    sim: Simulator, server: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    """A stack in malformed_json_stacks gets a broken 200 body on every listing; others don't."""
    sim.add_backup("bad")
    sim.add_backup("good")
    sim.faults.malformed_json_stacks.add("bad")
    for _ in range(2):
        async with http.get(server.base_url + "/stacks/bad/backups", headers=AUTH) as resp:
            assert resp.status == 200
            with pytest.raises(json.JSONDecodeError):
                json.loads(await resp.text())
    assert (await api(http, server, "/stacks/good/backups"))[0] == 200


async def test_warning_header_when_set(
    sim: Simulator, server: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    """Simulator.warning is sent as X-Cloud66-Warning on API answers, only when set."""
    async with http.get(server.base_url + "/stacks", headers=AUTH) as resp:
        assert "X-Cloud66-Warning" not in resp.headers
    sim.warning = "API v3 is deprecated"
    async with http.get(server.base_url + "/stacks", headers=AUTH) as resp:
        assert resp.headers["X-Cloud66-Warning"] == "API v3 is deprecated"


async def test_cut_download_fault(
    sim: Simulator, server: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    """cut_downloads sends half the bytes then drops: the client sees a payload error."""
    bid = sim.add_backup("stk", size=1000)
    sim.faults.cut_downloads = 1
    url = once_decoded(await public_url(http, server, "stk", bid, "tar"))
    received = bytearray()
    with pytest.raises(aiohttp.ClientPayloadError, match="received 500 of 1000"):
        await read_until_cut(http, url, {}, received)
    assert bytes(received) == joined(sim, bid)[:500]
    assert sim.faults.cut_downloads == 0
    assert (await fetch(http, url))[0] == 200
    assert sim.stats.downloads_started == 2
    assert sim.stats.downloads_completed == 1


async def test_cut_after_bytes_on_a_range(
    sim: Simulator, server: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    """cut_after_bytes cuts a ranged answer after exactly that many bytes of the range."""
    bid = sim.add_backup("stk", size=1000)
    sim.faults.cut_downloads = 1
    sim.faults.cut_after_bytes = 123
    url = once_decoded(await public_url(http, server, "stk", bid, "tar"))
    received = bytearray()
    with pytest.raises(aiohttp.ClientPayloadError, match="received 123 of 800"):
        await read_until_cut(http, url, {"Range": "bytes=200-"}, received)
    assert bytes(received) == joined(sim, bid)[200:323]


async def test_blob_errors_fault(
    sim: Simulator, server: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    """blob_errors answers 500 for the next N blob GETs and then serves."""
    bid = sim.add_backup("stk", size=10)
    sim.faults.blob_errors = 1
    url = once_decoded(await public_url(http, server, "stk", bid, "tar"))
    assert (await fetch(http, url))[0] == 500
    assert (await fetch(http, url))[0] == 200
    assert sim.faults.blob_errors == 0
    assert sim.stats.downloads_started == 1


async def test_slow_downloads_are_paced_and_counted_concurrently(
    sim: Simulator, server: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    """slow_downloads paces bytes to slow_bytes_per_second; overlapping streams are counted."""
    bid = sim.add_backup("stk", size=1000)
    sim.faults.slow_downloads = 2
    sim.faults.slow_bytes_per_second = 2000
    url = once_decoded(await public_url(http, server, "stk", bid, "tar"))
    began = time.monotonic()
    results = await asyncio.gather(fetch(http, url), fetch(http, url))
    assert time.monotonic() - began >= 0.4  # 1000 bytes at 2000 B/s
    assert all(r[0] == 200 and r[1] == joined(sim, bid) for r in results)
    assert sim.stats.max_concurrent_downloads == 2
    assert sim.faults.slow_downloads == 0
    sim.stats.reset()
    assert sim.stats.downloads_started == 0
    assert sim.stats.api_requests == 0


# ----------------------------------------------------------------- demo & process


def test_populate_demo_shape(tmp_path: Path) -> None:
    """populate_demo makes 3 stacks, all four db types, a multi-part and a failed backup."""
    sim = Simulator(blob_dir=tmp_path, part_size=4 << 20)
    populate_demo(sim)
    stacks = {"demo-shop-prod", "demo-api-staging", "demo-analytics"}
    ids = [bid for uid in stacks for bid in sim.backup_ids(uid)]
    records = [backup_json(b) for uid in stacks for b in sim.sorted_backups(uid)]
    assert {r["db_type"] for r in records} == {"mysql", "postgresql", "redis", "mongodb"}
    assert [r["backup_status"] for r in records].count(1) == 1
    assert max(len(sim.backup_content_path(bid)) for bid in ids) == 3


async def test_module_runs_as_a_process(tmp_path: Path) -> None:
    """`python -m archiver.simulator` prints its JSON line, serves, and stops on SIGTERM."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "archiver.simulator", "--port", "0",
        "--blob-dir", str(tmp_path), "--token", TOKEN, "--stacks", "3",
        "--backups-per-stack", "4", "--backup-size", "2000", "--part-size", "1000",
        "--multipart-backup-size", "2500", "--failed-backup",
        stdout=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        info = json.loads(line)
        assert info["base_url"] == f"http://127.0.0.1:{info['port']}/api/3"
        async with aiohttp.ClientSession(headers=AUTH) as http:
            async with http.get(info["base_url"] + "/stacks") as resp:
                assert (await resp.json())["count"] == 3
            async with http.get(info["base_url"] + "/stacks/stack-1/backups") as resp:
                backups = (await resp.json())["response"]
        assert len(backups) == 6
        assert [b["backup_status"] for b in backups].count(1) == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
