"""The Cloud 66 API v3 client: auth, pages, retries, throttling and the URL quirk.

Every request goes through the request budget (never more than
`requests_per_hour` in any trailing hour) and a concurrency semaphore, and is
retried with capped, jittered backoff when the failure is transient. Errors and
logs name the method and path (`GET /stacks/abc/backups?page=2`) but never the
token and never a pre-signed URL.
"""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Literal, TypeVar
from urllib.parse import quote, urlencode

import aiohttp
import structlog
from pydantic import BaseModel, ValidationError
from yarl import URL

from archiver import USER_AGENT
from archiver.cloud66.budget import RequestBudget
from archiver.cloud66.models import Backup, BackupFile, Listing, Stack
from archiver.config.settings import ApiSettings
from archiver.core.errors import (
    ApiError,
    ApiResponseError,
    ApiUnavailable,
    AuthError,
    ThrottledError,
)
from archiver.core.net_errors import describe_connection_error
from archiver.core.retry import Retrier, RetriesExhausted, RetryPolicy
from archiver.core.stopping import StopSignal

log = structlog.get_logger(__name__)

# A server that never stops paging must not keep us busy forever: 1000 pages of
# 30 is 30,000 records, far more than any stack keeps (100 backups by default).
MAX_PAGES = 1000
# A 200 that is not the envelope is most likely a proxy glitch; one more try is
# worth a request, more would burn the budget on a server that is broken.
MALFORMED_RETRIES = 1
# Upstream text (error descriptions, warnings) is cut to this length in messages.
_UPSTREAM_TEXT_LIMIT = 300
# Tokens shorter than this are not scrubbed from upstream text: replacing a
# one-letter test token would garble every message without protecting anything.
_MIN_SCRUB_LENGTH = 8

_RecordT = TypeVar("_RecordT", bound=BaseModel)
_FailureKind = Literal["unavailable", "throttled", "malformed"]
# Told of every request sent: its route template (`/stacks/:id/backups`, never a URL
# or an id) and how it ended ("ok", "error", or a _FailureKind). Used for metrics.
RequestListener = Callable[[str, str], None]


@dataclass(frozen=True)
class _Call:
    """One API request: method, path (segments already quoted), query and JSON body."""

    method: Literal["GET", "POST"]
    path: str
    params: Mapping[str, str]
    body: dict[str, Any] | None = None

    def describe(self) -> str:
        """`GET /stacks/abc/backups?page=2`: how requests are named in errors and logs."""
        query = f"?{urlencode(self.params)}" if self.params else ""
        return f"{self.method} {self.path}{query}"


@dataclass(frozen=True)
class PostAnswer:
    """Cloud 66's answer to a POST: did it accept, and what it said."""

    ok: bool
    message: str


class _Records(list[dict[str, Any]]):
    """The records of every page read; `complete` is False when the walk stopped early."""

    complete: bool = True


@dataclass
class _TransientFailure(Exception):
    """One try failed in a way that may succeed on another try."""

    kind: _FailureKind
    message: str
    status: int | None = None
    retry_after: float | None = None


class Cloud66Client:
    """Read-only access to the stacks, backups and backup files of a Cloud 66 account."""

    def __init__(
        self,
        settings: ApiSettings,
        token: str,
        *,
        budget: RequestBudget,
        session: aiohttp.ClientSession | None = None,
        stop: StopSignal | None = None,
        on_request: RequestListener | None = None,
    ) -> None:
        self._settings = settings
        self._on_request = on_request
        self._token = token
        self._budget = budget
        self._session = session
        self._owns_session = session is None
        self._stop = stop or StopSignal()
        self._retry_policy = RetryPolicy(retries=settings.max_retries)
        self._semaphore = asyncio.Semaphore(settings.max_concurrent_requests)
        self._base_url = settings.base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=settings.timeout.total_seconds())
        self._warnings_seen: set[str] = set()
        self.requests_made = 0

    def __repr__(self) -> str:
        # Never show the token, whatever prints this object.
        return f"Cloud66Client(base_url={self._base_url!r}, requests_made={self.requests_made})"

    async def __aenter__(self) -> Cloud66Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP session if this client created it (a passed-in one is the caller's)."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    # -- the API ---------------------------------------------------------------

    async def list_stacks(self) -> list[Stack]:
        """Every stack the token can see (all pages)."""
        return (await self.read_stacks()).items

    async def read_stacks(self) -> Listing[Stack]:
        """Every stack the token can see, and whether the list was read whole."""
        records = await self._list_all("/stacks", {})
        stacks = _build(Stack, records, "/stacks")
        return Listing(stacks, records.complete and len(stacks) == len(records))

    async def list_backups(
        self, stack_uid: str, *, db_type: str | None = None, group: int | str | None = None
    ) -> list[Backup]:
        """Every backup of a stack, newest first (all pages), optionally filtered."""
        return (await self.read_backups(stack_uid, db_type=db_type, group=group)).items

    async def read_backups(
        self, stack_uid: str, *, db_type: str | None = None, group: int | str | None = None
    ) -> Listing[Backup]:
        """`list_backups`, saying whether the list was read whole (for the watch)."""
        path = f"/stacks/{_segment(stack_uid)}/backups"
        params = {"db_type": db_type, "group": None if group is None else str(group)}
        records = await self._list_all(path, {k: v for k, v in params.items() if v is not None})
        backups: list[Backup] = []
        for record in records:
            try:
                backups.append(Backup.from_api(record))
            except ValidationError as error:
                _log_skipped(path, record, error)
        return Listing(backups, records.complete and len(backups) == len(records))

    async def list_files(self, stack_uid: str, backup_id: int) -> list[BackupFile]:
        """Every file (piece) of a backup, in the order to join them (all pages)."""
        path = f"/stacks/{_segment(stack_uid)}/backups/{backup_id}/files"
        return _build(BackupFile, await self._list_all(path, {}), path)

    async def public_url(self, stack_uid: str, backup_id: int, file_id: str) -> str:
        """A fresh pre-signed download URL, its double `%`-encoding undone once.

        Send it without re-encoding: `yarl.URL(url, encoded=True)`. It is valid
        for minutes only: ask right before each download or resume.
        """
        path = f"/stacks/{_segment(stack_uid)}/backups/{backup_id}/files/{_segment(file_id)}"
        envelope = await self._get_envelope(path, {})
        response = envelope["response"]
        raw_url = response.get("public_url") if isinstance(response, dict) else None
        if not isinstance(raw_url, str) or not raw_url.startswith(("https://", "http://")):
            # Do not quote the value: it could be a URL with its signature.
            raise ApiResponseError(f"malformed JSON from GET {path}: no public_url in the response")
        # The API encodes the query twice (%2F -> %252F). The official Go client
        # replaces every "%25" with "%" in a single pass; doing it again, or a full
        # unquote, would break signatures that contain a real "%25".
        return raw_url.replace("%25", "%")

    async def create_backup_task(self, stack_uid: str, params: dict[str, Any]) -> PostAnswer:
        """POST /stacks/:id/backups: a backup task (db_type, frequency, keep_count, ...)."""
        return await self._post_backups(stack_uid, params)

    async def import_backup(
        self, stack_uid: str, *, group: int, db_type: str, remote_url: str
    ) -> PostAnswer:
        """POST /stacks/:id/backups with remote_url: Cloud 66 fetches the backup from it."""
        params = {"group": group, "db_type": db_type, "remote_url": remote_url}
        return await self._post_backups(stack_uid, params)

    async def _post_backups(self, stack_uid: str, params: dict[str, Any]) -> PostAnswer:
        path = f"/stacks/{_segment(stack_uid)}/backups"
        envelope = await self._envelope(_Call("POST", path, {}, body=params))
        response = envelope["response"]
        if not isinstance(response, dict) or not isinstance(response.get("ok"), bool):
            raise ApiResponseError(f"malformed JSON from POST {path}: no 'ok' in the response")
        message = response.get("message")
        text = self._upstream_text(message) if isinstance(message, str) else ""
        return PostAnswer(ok=response["ok"], message=text)

    # -- pages -----------------------------------------------------------------

    async def _list_all(self, path: str, params: Mapping[str, str]) -> _Records:
        """Walk `pagination.next` from page 1 and return every record of every page.

        The records are marked incomplete when the walk stopped early (pagination
        going backwards, or the page cap): absence from them proves nothing.
        """
        records = _Records()
        page = 1
        for _ in range(MAX_PAGES):
            query = {**params, "page": str(page)}
            envelope = await self._get_envelope(path, query)
            records.extend(_page_records(envelope, _describe(path, query)))
            next_page = _next_page(envelope)
            if next_page is None:
                return records
            if next_page <= page:
                # A server that repeats pages would loop forever; what we have is complete
                # as far as the server can tell us.
                log.warning("API pagination went backwards; stopping", request=path, page=page)
                records.complete = False
                return records
            page = next_page
        log.warning("API pagination exceeded the page cap; stopping", request=path, pages=MAX_PAGES)
        records.complete = False
        return records

    # -- one request, with retries ---------------------------------------------

    async def _get_envelope(self, path: str, params: Mapping[str, str]) -> dict[str, Any]:
        """GET a path and return the `{"response": ...}` envelope, retrying transient failures."""
        return await self._envelope(_Call("GET", path, params))

    async def _envelope(self, call: _Call) -> dict[str, Any]:
        """Send `call` and return its envelope, retrying what may be retried."""
        path = call.path
        request = call.describe()
        retrier = Retrier(self._retry_policy, stop=self._stop)
        throttle_waited = 0.0
        while True:
            try:
                envelope = await self._try_once(call, request)
            except ApiError:
                self._report(path, "error")
                raise
            except _TransientFailure as failure:
                self._report(path, failure.kind)
                if call.method != "GET" and failure.kind != "throttled":
                    # A POST that may have been carried out must not be sent twice.
                    raise _give_up(failure, f"{failure.message} (not retried: "
                                   "it may or may not have been carried out)") from None
                wait = self._wait_before_retry(retrier, failure, throttle_waited)
                if failure.kind == "throttled":
                    throttle_waited += wait
                log.warning(
                    "Cloud 66 API request failed; retrying",
                    request=request,
                    reason=failure.message,
                    attempt=retrier.failures,
                    wait_seconds=round(wait, 3),
                )
                await retrier.sleep(wait)
            else:
                self._report(path, "ok")
                return envelope

    def _report(self, path: str, result: str) -> None:
        if self._on_request is not None:
            self._on_request(_route(path), result)

    def _wait_before_retry(
        self, retrier: Retrier, failure: _TransientFailure, throttle_waited: float
    ) -> float:
        """Seconds to wait before the next try, or raise the error that ends the request."""
        retries = MALFORMED_RETRIES if failure.kind == "malformed" else None
        try:
            retrier.failed(failure.message, retries=retries)
        except RetriesExhausted as exhausted:
            raise _give_up(failure, str(exhausted)) from None
        if failure.kind != "throttled":
            return retrier.backoff_delay()
        # Retry-After is the server's word and is slept as asked (not shortened in
        # fast-retry test mode); throttled waits never add up past max_throttle_wait.
        wait = failure.retry_after if failure.retry_after is not None else retrier.backoff_delay()
        max_wait = self._settings.max_throttle_wait.total_seconds()
        if throttle_waited + wait > max_wait:
            raise _give_up(
                failure,
                f"{failure.message} (waiting {wait:.1f}s more would exceed max_throttle_wait "
                f"({max_wait:g}s))",
            ) from None
        return wait

    async def _try_once(self, call: _Call, request: str) -> dict[str, Any]:
        """Send one request and interpret the answer; raise _TransientFailure or an ApiError."""
        url = URL(self._base_url + call.path, encoded=True).with_query(call.params or None)
        async with self._stop.holding(self._semaphore):
            await self._stop.unless_stopped(self._budget.acquire())
            self.requests_made += 1
            try:
                async with self._get_session().request(
                    call.method,
                    url,
                    json=call.body,
                    headers=self._headers(),
                    timeout=self._timeout,
                    allow_redirects=False,  # a redirect could carry the token elsewhere
                    raise_for_status=False,
                ) as response:
                    body = await response.read()
                    status = response.status
                    retry_after = _retry_after_seconds(response.headers.get("Retry-After"))
                    self._note_warning(response.headers.get("X-Cloud66-Warning"), request)
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as error:
                failure = f"{request}: {describe_connection_error(error)}"
                raise _TransientFailure("unavailable", failure) from None
            except TimeoutError:
                raise _TransientFailure("unavailable", f"{request}: timed out") from None
        return self._interpret(status, body, retry_after, request)

    def _interpret(
        self, status: int, body: bytes, retry_after: float | None, request: str
    ) -> dict[str, Any]:
        """The envelope of a good answer; otherwise raise what the status means."""
        payload = _parse_json(body)
        if 200 <= status < 300:
            if isinstance(payload, dict) and "response" in payload:
                return payload
            if isinstance(payload, dict) and "public_url" in payload:
                # The reference lists the file answer bare; every server seen wraps it.
                return {"response": payload}
            why = "not JSON" if payload is _NOT_JSON else "no 'response' in the envelope"
            message = f"malformed JSON from {request}: {why}"
            raise _TransientFailure("malformed", message, status=status)
        raise self._error_for(status, payload, retry_after, request)

    def _error_for(
        self, status: int, payload: object, retry_after: float | None, request: str
    ) -> Exception:
        """Classify a non-2xx answer as retryable (throttled, unavailable) or final."""
        code, description = self._error_fields(payload)
        detail = f"{status} {code or 'error'}" + (f": {description}" if description else "")
        if status in (401, 402, 403):
            # 402 (trial expired) is in the same family: no request will work until a human acts.
            return AuthError(
                f"Cloud 66 API refused the token ({detail}) on {request}", status=status
            )
        if status == 429 or (status == 503 and code == "throttled"):
            message = f"Cloud 66 API throttled {request} ({detail})"
            return _TransientFailure("throttled", message, status=status, retry_after=retry_after)
        if status == 408 or (status >= 500 and code != "not_implemented"):
            message = f"Cloud 66 API unavailable: {request} answered {detail}"
            return _TransientFailure("unavailable", message, status=status)
        if status == 404:
            return ApiResponseError(
                f"Cloud 66 API: not found: {request} answered {detail} "
                "(is the stack uid, backup id or file id right?)",
                status=status,
            )
        return ApiResponseError(f"Cloud 66 API rejected {request}: {detail}", status=status)

    # -- helpers that need the token or the session ----------------------------

    def _get_session(self) -> aiohttp.ClientSession:
        """The session, created on first use (it must be created inside the event loop)."""
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._settings.max_concurrent_requests)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    def _headers(self) -> dict[str, str]:
        """Headers of one request; a fresh Request-Id each time, as the official client sends."""
        headers = {
            "Authorization": f"Bearer {self._token}",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
            "Request-Id": str(uuid.uuid4()),
        }
        if self._settings.account_id is not None:
            headers["X-Account"] = str(self._settings.account_id)
        return headers

    def _note_warning(self, warning: str | None, request: str) -> None:
        """Log an X-Cloud66-Warning once per distinct text (it repeats on every answer)."""
        if not warning:
            return
        text = self._upstream_text(warning)
        if text not in self._warnings_seen:
            self._warnings_seen.add(text)
            log.warning("Cloud 66 API warning", warning=text, request=request)

    def _error_fields(self, payload: object) -> tuple[str | None, str | None]:
        """`error` and `error_description` of an error body, when it has them."""
        if not isinstance(payload, dict):
            return None, None
        code, description = payload.get("error"), payload.get("error_description")
        return (
            self._upstream_text(code) if isinstance(code, str) else None,
            self._upstream_text(description) if isinstance(description, str) else None,
        )

    def _upstream_text(self, text: str) -> str:
        """Upstream text made safe for messages and logs: short, and never the token."""
        if len(self._token) >= _MIN_SCRUB_LENGTH:
            text = text.replace(self._token, "[token]")
        return text[:_UPSTREAM_TEXT_LIMIT]


# -- module helpers ---------------------------------------------------------------

_NOT_JSON = object()


def _parse_json(body: bytes) -> object:
    """The decoded body, or the _NOT_JSON marker (proxies and 5xx pages send HTML)."""
    try:
        return json.loads(body)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
        return _NOT_JSON


def _give_up(failure: _TransientFailure, message: str) -> ApiError:
    """The final error for a failure we stop retrying; `message` says what and why."""
    if failure.kind == "throttled":
        return ThrottledError(message, status=failure.status, retry_after=failure.retry_after)
    if failure.kind == "malformed":
        return ApiResponseError(message, status=failure.status)
    return ApiUnavailable(message, status=failure.status)


def _retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds from now: either delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _segment(value: str) -> str:
    """One path segment, percent-encoded: ids come from upstream and are not trusted."""
    return quote(value, safe="")


def _route(path: str) -> str:
    """`/stacks/abc/backups/7/files` -> `/stacks/:id/backups/:id/files`: ids never in labels."""
    segments = path.strip("/").split("/")
    return "/" + "/".join(s if i % 2 == 0 else ":id" for i, s in enumerate(segments))


def _describe(path: str, params: Mapping[str, str]) -> str:
    """`GET /stacks/abc/backups?page=2`: how requests are named in errors and logs."""
    return f"GET {path}?{urlencode(params)}" if params else f"GET {path}"


def _next_page(envelope: Mapping[str, Any]) -> int | None:
    """`pagination.next` as a page number, or None when there is no next page."""
    pagination = envelope.get("pagination")
    next_page = pagination.get("next") if isinstance(pagination, dict) else None
    if next_page is None or isinstance(next_page, bool):
        return None
    try:
        return int(next_page)
    except (TypeError, ValueError):
        return None


def _page_records(envelope: Mapping[str, Any], request: str) -> list[dict[str, Any]]:
    """The records of one page; a `response` that is not a list is a malformed answer."""
    response = envelope["response"]
    if response is None:
        return []
    if not isinstance(response, list):
        raise ApiResponseError(f"malformed JSON from {request}: 'response' is not a list")
    return [record for record in response if isinstance(record, dict)]


def _build(model: type[_RecordT], records: list[dict[str, Any]], path: str) -> list[_RecordT]:
    """Validate records, skipping (and logging) any without the fields we need."""
    built: list[_RecordT] = []
    for record in records:
        try:
            built.append(model.model_validate(record))
        except ValidationError as error:
            _log_skipped(path, record, error)
    return built


def _log_skipped(path: str, record: Mapping[str, Any], error: ValidationError) -> None:
    """A record without an id cannot be archived; say so rather than fail the whole list."""
    fields = sorted({str(problem["loc"][0]) for problem in error.errors() if problem["loc"]})
    log.warning(
        "skipping an API record without the fields we need",
        request=f"GET {path}",
        record_id=record.get("id") or record.get("uid"),
        bad_fields=fields,
    )
