"""The S3-like blob host: serves the part files at pre-signed URLs under ``/blobs/``.

It answers as S3 does with query-string (SigV2) authentication: a missing or wrong
signature is 403 (``AccessDenied`` / ``SignatureDoesNotMatch``), an expired URL 403
``AccessDenied``, an unknown key 404 ``NoSuchKey``, and HEAD, which a pre-signed GET URL
does not allow, a bare 403. A single byte range is answered 206 with ``Content-Range``,
``If-Range`` is compared with the ETag (the part's quoted MD5), ``If-Match`` too (412
when it differs), and a range beyond the end is 416. Bodies go out with ``sendfile``
unless a fault is due or the account paces each connection (``connection_rate``, plus
``latency`` before each answer: a far-away S3 on loopback).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import time
from typing import IO
from urllib.parse import parse_qsl

from aiohttp import web

from archiver.simulator.account import Account
from archiver.simulator.content import CHUNK_SIZE
from archiver.simulator.records import Backup, Part, SimStats
from archiver.simulator.refusals import Refused, s3_error

BLOB_PREFIX = "/blobs"
ACCESS_KEY_ID = "SIMKEY"
_ROUTE = BLOB_PREFIX + r"/{stack}/backups/{db}/{bid:\d+}/{fid}/{nonce}/{name}"
_PACE_SLACK = 0.05  # seconds a paced body may catch up after the loop was late
_SAFE_SEGMENT = re.compile(r"[^A-Za-z0-9._-]")
_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your key and signing method."
)


def safe_segment(segment: str) -> str:
    """Make upstream-ish strings harmless as one URL path segment."""
    cleaned = _SAFE_SEGMENT.sub("_", segment).lstrip(".")
    return cleaned or "_"


def blob_path(backup: Backup, part: Part, nonce: int) -> str:
    """The path of a part on the blob host; the nonce varies it (and so its signature)."""
    return (
        f"{BLOB_PREFIX}/{safe_segment(backup.stack_uid)}/backups/{safe_segment(backup.db_type)}/"
        f"{backup.id}/{safe_segment(part.file_id)}/n{nonce:x}/{safe_segment(part.name)}"
    )


def sign(secret: bytes, path: str, expires: int) -> str:
    """S3 SigV2 query signature: base64(HMAC-SHA1(secret, "GET\\n<path>\\n<expires>"))."""
    message = f"GET\n{path}\n{expires}".encode()
    return base64.b64encode(hmac.new(secret, message, hashlib.sha1).digest()).decode()


class _Unsatisfiable(Exception):
    """The Range header asks for bytes beyond the object."""


def _parse_range(header: str, total: int) -> tuple[int, int] | None:
    """Parse a single ``bytes=`` range into inclusive (start, end).

    Returns None when the header is not a single byte range: S3 then answers 200 with
    the whole object. Raises _Unsatisfiable for ranges beyond the end (416).
    """
    match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header)
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.group(1), match.group(2)
    if first == "":  # suffix range: the last N bytes
        length = int(last)
        if length == 0 or total == 0:
            raise _Unsatisfiable
        return max(0, total - length), total - 1
    start = int(first)
    end = total - 1 if last == "" else min(int(last), total - 1)
    if last != "" and int(last) < start:
        return None  # syntactically invalid: ignored, as RFC 9110 says
    if start >= total:
        raise _Unsatisfiable
    return start, end


class BlobHost:
    """The blob host of one account: checks pre-signed URLs, then streams the part files."""

    def __init__(self, account: Account) -> None:
        self.account = account

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """GET serves a part; HEAD has its own handler, which refuses it."""
        router.add_get(_ROUTE, self._blob_get, name="blob", allow_head=False)
        router.add_route("HEAD", _ROUTE, self._blob_head, name="blob_head")

    async def _blob_head(self, request: web.Request) -> web.StreamResponse:
        """A pre-signed GET URL does not allow HEAD: S3 answers 403 without a body."""
        self.account.stats.blob_requests += 1
        self.account.stats.blob_refusals += 1
        return web.Response(status=403)

    def _authorize_blob(self, request: web.Request) -> Part:
        """Check the signature and expiry like S3 (decoding the query once), find the part."""
        raw_path, _, raw_query = request.raw_path.partition("?")
        params = dict(parse_qsl(raw_query, keep_blank_values=True))
        self._check_signature(raw_path, params)
        return self._find_part(request)

    def _check_signature(self, raw_path: str, params: dict[str, str]) -> None:
        """Raise Refused with S3's 403 for a missing, wrong or expired signature."""
        signature, expires = params.get("Signature"), params.get("Expires", "")
        expires = expires if expires.isascii() else ""  # "²".isdigit() is True, int() fails
        if params.get("AWSAccessKeyId") is None or signature is None or not expires.isdigit():
            message = "Query-string authentication requires the Signature, Expires and "
            raise Refused(s3_error(403, "AccessDenied", message + "AWSAccessKeyId parameters"))
        good = sign(self.account.signing_secret, raw_path, int(expires))
        if params["AWSAccessKeyId"] != ACCESS_KEY_ID or not hmac.compare_digest(
            good.encode(), signature.encode()
        ):
            raise Refused(s3_error(403, "SignatureDoesNotMatch", _MISMATCH))
        if int(expires) < time.time() or signature in self.account.revoked_signatures:
            raise Refused(s3_error(403, "AccessDenied", "Request has expired"))

    def _find_part(self, request: web.Request) -> Part:
        """The part the path names, or Refused with S3's 404 (also when its file is gone)."""
        backup = self.account.find_backup(int(request.match_info["bid"]))
        fid = request.match_info["fid"]
        parts = backup.parts if backup is not None else []
        part = next((p for p in parts if safe_segment(p.file_id) == fid), None)
        if part is None or not part.path.exists():
            raise Refused(s3_error(404, "NoSuchKey", "The specified key does not exist."))
        return part

    async def _blob_get(self, request: web.Request) -> web.StreamResponse:
        """Serve a part, whole or one range, unless the URL is refused or a fault is due."""
        stats = self.account.stats
        stats.blob_requests += 1
        stats.blob_ranges.append(request.headers.get("Range"))
        if self.account.latency:
            await asyncio.sleep(self.account.latency)  # the round trip of a far-away S3
        try:
            part = self._authorize_blob(request)
        except Refused as refused:
            stats.blob_refusals += 1
            return refused.response
        ranged_faults = self._ranged_faults_apply(request)
        failure = self._injected_error(request, ranged_faults)
        if failure is not None:
            return failure
        gate = self.account.faults.gates.get((int(request.match_info["bid"]), part.file_id))
        if gate is not None:
            gate.arrived.set()
            await gate.opened.wait()
        etag = self._etag(part)
        sent_etag = self._precondition(request, etag)
        span = self._requested_span(request, part, etag, ranged_faults)
        for refusal in (sent_etag, span):  # If-Match is judged before Range, as S3 does
            if isinstance(refusal, web.Response):
                stats.blob_refusals += 1
                return refusal
        assert isinstance(sent_etag, str)
        assert not isinstance(span, web.Response)
        start, count, partial = span
        claimed = count
        if partial and ranged_faults:
            count, claimed = self._shortened(count)
        response = _body_response(part, sent_etag, start, count, partial, claimed)
        response.headers.update(self._encryption_headers())
        self._body_starts()
        return await self._send_body(request, response, part, start, count)

    def _precondition(self, request: web.Request, etag: str) -> str | web.Response:
        """The ETag to answer with, or S3's 412 when If-Match names another one.

        A changed_etags fault makes the object look changed: 412, or with
        ignore_if_match a body that carries the other ETag.
        """
        if_match = request.headers.get("If-Match")
        if if_match is None:
            return etag
        faults = self.account.faults
        self.account.stats.if_match_requests += 1
        changed = faults.changed_etags > 0
        if changed:
            faults.changed_etags -= 1
            other = f'"{hashlib.md5(etag.encode(), usedforsecurity=False).hexdigest()}"'
            if faults.ignore_if_match:
                return other
        if changed or if_match.strip() not in (etag, "*"):
            return s3_error(
                412, "PreconditionFailed",
                "At least one of the pre-conditions you specified did not hold",
            )
        return etag

    def _ranged_faults_apply(self, request: web.Request) -> bool:
        """Whether the faults on ranged GETs may fire on this one (not while
        ranged_faults_after still counts the ranged GETs to serve normally first)."""
        faults = self.account.faults
        if "Range" not in request.headers:
            return False
        if faults.ranged_faults_after > 0:
            faults.ranged_faults_after -= 1
            return False
        return True

    def _shortened(self, count: int) -> tuple[int, int]:
        """(bytes sent, bytes the Content-Range names) of a range: half when short_ranges."""
        faults = self.account.faults
        if faults.short_ranges <= 0 or count < 2:
            return count, count
        faults.short_ranges -= 1
        return count // 2, count if faults.short_range_lies else count // 2

    def _body_starts(self) -> None:
        """Count down expire_urls_after_gets: at zero, every URL issued so far expires."""
        faults = self.account.faults
        if faults.expire_urls_after_gets is None:
            return
        faults.expire_urls_after_gets -= 1
        if faults.expire_urls_after_gets <= 0:
            faults.expire_urls_after_gets = None
            self.account.expire_issued_urls()

    def _etag(self, part: Part) -> str:
        """The part's quoted ETag, as S3 gives it for the bucket's kind of objects.

        The MD5 for plain and SSE-S3 objects; an opaque 32-hex value for SSE-KMS and
        SSE-C ones; `<hex>-N` when the objects were multipart uploads. The faults can
        make it the MD5 of other bytes (a real mismatch).
        """
        account = self.account
        if account.faults.wrong_etags > 0:
            account.faults.wrong_etags -= 1
            return f'"{hashlib.md5(part.md5.encode(), usedforsecurity=False).hexdigest()}"'
        if account.multipart_etags:
            of_parts = hashlib.md5(part.md5.encode() + b"-mp", usedforsecurity=False)
            return f'"{of_parts.hexdigest()}-3"'
        if account.s3_encryption not in (None, "AES256"):
            opaque = hashlib.sha256(part.md5.encode() + account.signing_secret).hexdigest()
            return f'"{opaque[:32]}"'
        return f'"{part.md5}"'

    def _encryption_headers(self) -> dict[str, str]:
        """What S3 says of the object's server-side encryption."""
        mode = self.account.s3_encryption
        if mode is None:
            return {}
        if mode == "sse-c":
            return {"x-amz-server-side-encryption-customer-algorithm": "AES256"}
        return {"x-amz-server-side-encryption": mode}

    def _injected_error(self, request: web.Request, ranged_faults: bool) -> web.Response | None:
        """S3's 500 when a blob_errors fault is due, or a ranged_errors one and a Range is asked."""
        faults = self.account.faults
        if faults.blob_errors > 0:
            faults.blob_errors -= 1
        elif faults.ranged_errors > 0 and ranged_faults:
            faults.ranged_errors -= 1
        else:
            return None
        return s3_error(500, "InternalError", "We encountered an internal error.")

    def _requested_span(
        self, request: web.Request, part: Part, etag: str, ranged_faults: bool
    ) -> tuple[int, int, bool] | web.Response:
        """(start, byte count, is_partial) for the request, or the 416 answer."""
        header = request.headers.get("Range")
        if_range = request.headers.get("If-Range")
        if header is not None and ranged_faults and self.account.faults.ignore_range > 0:
            self.account.faults.ignore_range -= 1
            header = None  # like a proxy that drops Range: the whole object, 200
        if header is None or (if_range is not None and if_range.strip() != etag):
            return 0, part.size, False  # If-Range mismatch: the whole object, 200
        try:
            if ranged_faults and self.account.faults.unsatisfiable_ranges > 0:
                self.account.faults.unsatisfiable_ranges -= 1
                raise _Unsatisfiable
            parsed = _parse_range(header, part.size)
        except _Unsatisfiable:
            response = s3_error(416, "InvalidRange", "The requested range is not satisfiable")
            response.headers["Content-Range"] = f"bytes */{part.size}"
            return response
        if parsed is None:
            return 0, part.size, False
        return parsed[0], parsed[1] - parsed[0] + 1, True

    async def _send_body(
        self,
        request: web.Request,
        response: web.StreamResponse,
        part: Part,
        start: int,
        count: int,
    ) -> web.StreamResponse:
        """Stream the bytes, applying the cut/slow/hold faults and the per-connection rate;
        sendfile when none applies."""
        cut_at, rate = self._take_cut(count), self._take_rate() or self.account.connection_rate
        hold = self.account.faults.hold.get(part.file_id)
        tally = _Tally(self.account.stats, part.file_id)
        try:
            await response.prepare(request)
            source = await asyncio.to_thread(part.path.open, "rb")
            try:
                if cut_at is not None:
                    await _stream(response, source, start, cut_at, rate, tally, last=False)
                    tally.close()
                    _drop_connection(request)
                    return response
                if hold is not None and count > 1:
                    half = count // 2
                    await _stream(response, source, start, half, rate, tally, last=False)
                    await hold.wait()
                    start, count = start + half, count - half
                if rate is None and count > 1:
                    await _sendfile(request, response, source, start, count, tally)
                else:
                    await _stream(response, source, start, count, rate, tally, last=True)
            finally:
                source.close()
            tally.complete()  # no-op unless the body was empty
            await response.write_eof()
            return response
        finally:
            tally.close()

    def _take_cut(self, count: int) -> int | None:
        """Where to cut a body of ``count`` bytes, if a cut_downloads fault is due."""
        faults = self.account.faults
        if faults.cut_downloads <= 0:
            return None
        faults.cut_downloads -= 1
        after = faults.cut_after_bytes
        return min(count, count // 2 if after is None else after)

    def _take_rate(self) -> int | None:
        """The pace in bytes/s, if a slow_downloads fault is due."""
        faults = self.account.faults
        if faults.slow_downloads <= 0:
            return None
        faults.slow_downloads -= 1
        return max(1, faults.slow_bytes_per_second)


def _body_response(
    part: Part, etag: str, start: int, count: int, partial: bool, claimed: int
) -> web.StreamResponse:
    """The 200 (whole part) or 206 (one range: `claimed` bytes named) answer, headers only."""
    response = web.StreamResponse(status=206 if partial else 200)
    response.headers.update({"ETag": etag, "Accept-Ranges": "bytes"})
    response.content_type = "application/x-tar"
    if partial:
        response.headers["Content-Range"] = f"bytes {start}-{start + claimed - 1}/{part.size}"
    response.content_length = count
    return response


async def _sendfile(
    request: web.Request,
    response: web.StreamResponse,
    source: IO[bytes],
    start: int,
    count: int,
    tally: _Tally,
) -> None:
    """Zero-copy fast path, as aiohttp's FileResponse does (headers are already sent).

    The last byte goes through the normal writer after the counters are updated, so
    a client that has the whole body always sees final stats (no race in tests).
    """
    transport = request.transport
    if transport is None:
        raise ConnectionResetError("Connection lost")
    await asyncio.get_running_loop().sendfile(transport, source, start, count - 1)
    tally.sent(count - 1)
    last = await asyncio.to_thread(_read_at, source, start + count - 1, 1)
    tally.sent(len(last))
    tally.complete()
    await response.write(last)


async def _stream(
    response: web.StreamResponse,
    source: IO[bytes],
    start: int,
    count: int,
    rate: int | None,
    tally: _Tally,
    *,
    last: bool,
) -> None:
    """Copy ``count`` bytes from ``start`` in chunks, paced to ``rate`` bytes/s if set.

    With ``last``, the download is tallied complete just before its final chunk goes out.
    """
    chunk = CHUNK_SIZE if rate is None else max(1, min(CHUNK_SIZE, rate // 20))
    due, sent = time.monotonic(), 0
    while sent < count:
        data = await asyncio.to_thread(_read_at, source, start + sent, min(chunk, count - sent))
        if not data:
            break
        sent += len(data)
        tally.sent(len(data))
        if last and sent >= count:
            tally.complete()
        await response.write(data)
        if rate is not None:
            # Pace on a running deadline, so sleeps do not drift; but a reader that held
            # the body back (TCP back-pressure) finds no saved-up time to burst through,
            # as on a real link (a 50 ms allowance covers the loop's own jitter).
            due = max(due, time.monotonic() - _PACE_SLACK) + len(data) / rate
            await asyncio.sleep(max(0.0, due - time.monotonic()))


def _drop_connection(request: web.Request) -> None:
    """End the connection mid-body; close() still flushes what was written."""
    transport = request.transport
    if transport is not None:
        transport.close()


def _read_at(source: IO[bytes], offset: int, size: int) -> bytes:
    """Seek and read in one thread hop."""
    source.seek(offset)
    return source.read(size)


class _Tally:
    """Download accounting for one blob GET; completion is counted exactly once."""

    def __init__(self, stats: SimStats, file_id: str) -> None:
        self.stats = stats
        self.file_id = file_id
        self.open = True
        stats.downloads_started += 1
        stats.active_downloads += 1
        stats.max_concurrent_downloads = max(stats.max_concurrent_downloads, stats.active_downloads)

    def sent(self, size: int) -> None:
        """Count ``size`` more bytes served."""
        self.stats.bytes_served += size

    def complete(self) -> None:
        """Count the download completed (once) and no longer active."""
        if self.open:
            self.stats.downloads_completed += 1
            self.stats.completed_files.append(self.file_id)
            self.close()

    def close(self) -> None:
        """Count the download no longer active (once), completed or not."""
        if self.open:
            self.open = False
            self.stats.active_downloads -= 1
