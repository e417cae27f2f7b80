"""The simulated Cloud 66 API v3, under ``/api/3``: routes, the gate and the handlers.

Every request under the prefix is counted, then needs ``Authorization: Bearer <token>``
(else 401) and, when the account has an id and the request sends ``X-Account``, the
right one (else 403). Over ``requests_per_hour`` in the last hour it is throttled (503
``throttled``, with ``Retry-After`` if set), and the injected faults come next: an HTML
500, a 503, a truncated JSON body. Lists come in Cloud 66's envelope, ``page`` by
``page``; a file's ``public_url`` is pre-signed for the blob host and its query
%-encoded twice, as Cloud 66 returns it. Endpoints are a table in :meth:`CloudApi.routes`.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from aiohttp import web
from aiohttp.typedefs import Middleware

from archiver.simulator.account import Account
from archiver.simulator.blobs import ACCESS_KEY_ID, blob_path, sign
from archiver.simulator.documents import backup_json, envelope, file_json, stack_json
from archiver.simulator.posts import (
    backup_task,
    fetch_import,
    import_request,
    read_params,
    require_admin,
)
from archiver.simulator.records import Backup, Part, Stack
from archiver.simulator.refusals import Refused, api_error

API_PREFIX = "/api/3"
WARNING_HEADER = "X-Cloud66-Warning"
_JSON = r"{ext:(?:\.json)?}"
_SEG = r"[^{}/]+?"  # non-greedy so an optional .json suffix is not swallowed
_STACK = f"/stacks/{{uid:{_SEG}}}"
_BACKUP = _STACK + r"/backups/{bid:\d+}"
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _looping(response: web.Response) -> web.Response:
    """The same page, but a last page that points back to the first (a looping server)."""
    document = json.loads(response.body if isinstance(response.body, bytes) else b"{}")
    pagination = document.get("pagination") or {}
    if pagination.get("next") is None and pagination.get("pages", 1) > 1:
        pagination["next"] = 1
    return web.json_response(document, status=response.status)


class CloudApi:
    """The Cloud 66 API of one account: its endpoints and the gate in front of them."""

    def __init__(self, account: Account) -> None:
        self.account = account

    def routes(self) -> list[tuple[str, str, _Handler, str]]:
        """(method, path under /api/3, handler, route name) of every endpoint."""
        return [
            ("GET", f"/stacks{_JSON}", self._list_stacks, "list_stacks"),
            ("GET", f"{_STACK}/backups{_JSON}", self._list_backups, "list_backups"),
            ("POST", f"{_STACK}/backups{_JSON}", self._post_backups, "post_backups"),
            ("GET", f"{_BACKUP}{_JSON}", self._get_backup, "get_backup"),
            ("GET", f"{_BACKUP}/files{_JSON}", self._list_files, "list_files"),
            ("GET", f"{_BACKUP}/files/{{fid:{_SEG}}}{_JSON}", self._get_file, "get_file"),
        ]

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Register every endpoint; a GET one answers HEAD too (aiohttp's ``add_get``)."""
        for method, path, handler, name in self.routes():
            if method == "GET":
                router.add_get(API_PREFIX + path, handler, name=name)
            else:
                router.add_route(method, API_PREFIX + path, handler, name=name)

    # ------------------------------------------------------------------- the gate

    def middleware(self) -> Middleware:
        """The gate every request under /api/3 passes, and the warning header on its answer."""

        @web.middleware
        async def api_middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
            if not request.path.startswith(API_PREFIX + "/"):
                return await handler(request)
            response = await self._api_gate(request, handler)
            if self.account.warning is not None:
                response.headers[WARNING_HEADER] = self.account.warning
            return response

        return api_middleware

    async def _api_gate(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        """Count the request, then apply auth, the rate limit and the injected faults."""
        self._record_api_request(request)
        # Explicit None checks: aiohttp responses are mappings, so never rely on truthiness.
        refusal = self._check_auth(request)
        if refusal is None:
            refusal = self._check_limits()
        if refusal is not None:
            return refusal
        try:
            return await handler(request)
        except Refused as refused:
            return refused.response
        except web.HTTPException as exc:  # unmatched paths and wrong methods
            code = "not_found" if exc.status == 404 else "bad_request"
            return api_error(exc.status, code, exc.reason)

    def _record_api_request(self, request: web.Request) -> None:
        """Count the request by route, and keep the last hour's in the rate-limit window."""
        now = time.monotonic()
        route_name = request.match_info.route.name or "unknown"
        stats, window = self.account.stats, self.account.api_window
        stats.api_requests += 1
        stats.api_requests_by_path[route_name] += 1
        stats.api_request_times.append(now)
        window.append(now)
        while window and window[0] < now - 3600:
            window.popleft()

    def _check_auth(self, request: web.Request) -> web.Response | None:
        """401 without the bearer token; 403 for an ``X-Account`` that is not the account's."""
        expected = f"Bearer {self.account.token}"
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), expected.encode()):
            return api_error(401, "unauthenticated", "The access token is missing or invalid")
        wanted, account_id = request.headers.get("X-Account"), self.account.account_id
        if account_id is not None and wanted is not None and wanted != str(account_id):
            return api_error(403, "forbidden", "This token cannot access that account")
        return None

    def _check_limits(self) -> web.Response | None:
        """Rate limit first (as upstream), then the one-shot faults, which count down."""
        limit, faults = self.account.requests_per_hour, self.account.faults
        if limit is not None and len(self.account.api_window) > limit:
            return self._throttled()
        if faults.api_errors > 0:
            faults.api_errors -= 1
            html = "<html><body><h1>500 Internal Server Error</h1></body></html>"
            return web.Response(status=500, text=html, content_type="text/html")
        if faults.throttle > 0:
            faults.throttle -= 1
            return self._throttled()
        return None

    def _throttled(self) -> web.Response:
        """Cloud 66's 503 ``throttled``, with ``Retry-After`` when the faults set one."""
        response = api_error(503, "throttled", "Too many requests: rate limit exceeded")
        retry_after = self.account.faults.throttle_retry_after
        if retry_after is not None:
            response.headers["Retry-After"] = f"{retry_after:g}"
        return response

    # --------------------------------------------------------------- the handlers

    async def _list_stacks(self, request: web.Request) -> web.Response:
        """GET /stacks: every stack, paginated."""
        return self._page(request, [stack_json(s) for s in self.account.stacks()])

    async def _list_backups(self, request: web.Request) -> web.Response:
        """GET /stacks/<uid>/backups: newest first, filtered by ``db_type``, paginated."""
        stack = self._find_stack(request)
        if stack.uid in self.account.faults.malformed_json_stacks:
            # A truncated body with a JSON content type, as a proxy cutting the answer gives.
            return web.Response(
                text='{"response": [{"id": 1, "db_type": "mys', content_type="application/json"
            )
        backups = self.account.sorted_backups(stack.uid)
        wanted = request.query.get("db_type", "")
        if wanted and wanted != "all":
            types = {t.strip() for t in wanted.split(",")}
            backups = [b for b in backups if b.db_type in types]
        # `group` is accepted and ignored: the simulator has a single backup group.
        response = self._page(request, [backup_json(b) for b in backups])
        if stack.uid in self.account.faults.looping_pages_stacks:
            response = _looping(response)
        return response

    async def _post_backups(self, request: web.Request) -> web.Response:
        """POST /stacks/<uid>/backups: an import (with remote_url) or a new backup task."""
        stack = self._find_stack(request)
        require_admin(self.account)
        params = await read_params(request)
        refusal = self.account.faults.post_not_ok
        if "remote_url" in params:
            record = import_request(stack.uid, params)
            if refusal is None:
                self.account.imports.append(record)
                self.account.background(fetch_import(record))
            message = "Your external backup queued for upload"
        else:
            task = backup_task(params)
            if refusal is None:
                self.account.backup_tasks.append({"stack_uid": stack.uid, **task})
                if task["keep_count"] is not None:  # the task rotates the stack's backups
                    self.account.set_keep_count(stack.uid, task["keep_count"])
            message = "queued for creation"
        answer = {"ok": False, "message": refusal} if refusal else {"ok": True, "message": message}
        return web.json_response({"response": answer})

    async def _get_backup(self, request: web.Request) -> web.Response:
        """GET /stacks/<uid>/backups/<id>: one backup."""
        backup = self._find_backup(request)
        return web.json_response({"response": backup_json(backup)})

    async def _list_files(self, request: web.Request) -> web.Response:
        """GET /stacks/<uid>/backups/<id>/files: the backup's parts, paginated."""
        backup = self._find_backup(request)
        override = self.account.faults.file_lists.get(backup.id)
        if override is not None:
            by_id = {part.file_id: file_json(part) for part in backup.parts}
            listed = [by_id.get(fid, {"id": fid, "name": f"x.{fid}"}) for fid in override]
            return self._page(request, listed)
        return self._page(request, [file_json(p) for p in backup.parts])

    async def _get_file(self, request: web.Request) -> web.Response:
        """GET /stacks/<uid>/backups/<id>/files/<file id>: a fresh ``public_url``."""
        backup = self._find_backup(request)
        part = next((p for p in backup.parts if p.file_id == request.match_info["fid"]), None)
        if part is None:
            return api_error(404, "not_found", "File not found")
        self.account.stats.public_urls_issued += 1
        url = self._public_url(request, backup, part)
        return web.json_response({"response": {"ok": True, "public_url": url}})

    # ----------------------------------------------------------------- the helpers

    def _page(self, request: web.Request, items: list[dict[str, Any]]) -> web.Response:
        """Wrap a list in Cloud 66's envelope, cutting the requested page out of it."""
        raw = request.query.get("page", "1")
        if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:  # "²".isdigit() is True
            return api_error(400, "bad_request", "page must be a positive integer")
        return web.json_response(envelope(items, int(raw), self.account.per_page))

    def _find_stack(self, request: web.Request) -> Stack:
        """The stack the path names, or Refused with the API's 404."""
        stack = self.account.find_stack(request.match_info["uid"])
        if stack is None:
            raise Refused(api_error(404, "not_found", "Stack not found"))
        return stack

    def _find_backup(self, request: web.Request) -> Backup:
        """The backup the path names, if it is that stack's; else Refused with a 404."""
        stack = self._find_stack(request)
        backup = self.account.find_backup(int(request.match_info["bid"]))
        if backup is None or backup.stack_uid != stack.uid:
            raise Refused(api_error(404, "not_found", "Backup not found"))
        return backup

    def _public_url(self, request: web.Request, backup: Backup, part: Part) -> str:
        """A pre-signed URL whose query is %-encoded twice, as Cloud 66 returns it."""
        expires = int(time.time() + self.account.url_lifetime)
        if self.account.faults.expired_urls > 0:
            self.account.faults.expired_urls -= 1
            expires = int(time.time()) - 60
        # A nonce in the path varies the signature until it holds '/' or '+', so every
        # URL exercises the double-encoding quirk ('=' padding is always there). It
        # starts past the URLs issued before: no two are the same (each can expire alone).
        issued = len(self.account.issued_signatures) * 256
        for nonce in range(issued, issued + 256):
            path = blob_path(backup, part, nonce)
            signature = sign(self.account.signing_secret, path, expires)
            if "/" in signature or "+" in signature:
                break
        self.account.issued_signatures.append(signature)
        twice = quote(quote(signature, safe=""), safe="")
        query = f"AWSAccessKeyId={ACCESS_KEY_ID}&Expires={expires}&Signature={twice}"
        return f"{request.scheme}://{request.host}{path}?{query}"
