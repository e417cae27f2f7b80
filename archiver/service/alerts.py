"""Alerts about passes: healthchecks.io-style pings, a JSON webhook, and Apprise URLs.

A pass observer (see `archiver.service.observers`). Pings go to `<url>/start` when a pass
starts, `<url>` when it succeeds and `<url>/fail` (with the tail of the pass's
log as the body) when it fails, so a dead-man's switch fires when pings stop
or a failure is reported. The webhook gets the pass summary as JSON on failure
(and on success when asked); every Apprise URL gets a failure as a message.
The watch's findings travel the same ways (`archiver.service.telling`).

Each request has the configured timeout and retries; what still fails is
logged at warning naming only the scheme and host (ping URLs carry a secret
uuid) and is never the pass's problem.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Coroutine, Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import structlog

from archiver import USER_AGENT
from archiver.config.settings import NotifySettings
from archiver.core.log_tail import clear_log_tail, log_tail
from archiver.core.retry import Backoff, RetryPolicy, retrying
from archiver.core.secrets import add_secret, redact
from archiver.core.stopping import Stopped, StopSignal
from archiver.model.summary import PassSummary
from archiver.service.apprise_notify import AppriseChannels

log = structlog.get_logger(__name__)

# healthchecks.io keeps the first 100 kB of a ping body; ours stays well below.
_BODY_LIMIT = 10_000
# Short backoff: a receiver that is down now will not be up in 30 s either.
_BACKOFF = Backoff(base=0.5, cap=4.0)


def alerts_configured(settings: NotifySettings) -> bool:
    """True when there is anywhere to send alerts."""
    return bool(settings.healthchecks_url or settings.webhook_url or settings.apprise_urls)


class _AlertFailed(Exception):
    """One alert request failed; the message says why, without the URL."""


class AlertSender:
    """Sends pings and webhooks about passes; never raises, never waits past its bounds."""

    def __init__(
        self,
        settings: NotifySettings,
        *,
        stop: StopSignal | None = None,
        stack_names: Callable[[], Mapping[str, str]] | None = None,
    ) -> None:
        self._settings = settings
        self._stop = stop or StopSignal()
        self._session: aiohttp.ClientSession | None = None
        self._start_ping: asyncio.Task[bool] | None = None
        # Stack names shown beside uids in failure messages (from the state).
        self._stack_names = stack_names or dict
        self.apprise = (
            AppriseChannels(settings.apprise_urls, timeout=settings.timeout.total_seconds())
            if settings.apprise_urls
            else None
        )
        for url in (settings.healthchecks_url, settings.webhook_url):
            if url:
                _register_secret_part(url)

    async def aclose(self) -> None:
        """Wait for a start ping still going, then close the HTTP session."""
        if self._start_ping is not None:
            await asyncio.gather(self._start_ping, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def pass_started(self) -> None:
        """Start a new log tail; send the start ping in the background (the pass goes on)."""
        clear_log_tail()
        url = self._settings.healthchecks_url
        if url:
            self._start_ping = asyncio.create_task(self.post("ping", url.rstrip("/") + "/start"))

    async def pass_finished(self, summary: PassSummary) -> None:
        """Ping success or failure, and call the webhook when it is due."""
        if self._start_ping is not None:  # the start must not arrive after the outcome
            await asyncio.gather(self._start_ping, return_exceptions=True)
            self._start_ping = None
        if summary.outcome == "stopped":
            # Neither a success (backups due were left) nor a failure to page anyone about (a
            # restart): no outcome; a check that no pass succeeds in time alerts on its own.
            log.info("no pass outcome sent: a stop cut the pass short")
            return
        sends: list[Coroutine[Any, Any, object]] = []
        url = self._settings.healthchecks_url
        body = _failure_body(summary, self._stack_names())
        if url:
            base = url.rstrip("/")
            if summary.ok:
                sends.append(self.post("ping", base))
            else:
                sends.append(self.post("ping", base + "/fail", data=body))
        webhook = self._settings.webhook_url
        if webhook and (not summary.ok or self._settings.webhook_on_success):
            sends.append(self.post("webhook", webhook, json_body=pass_document(summary)))
        if self.apprise is not None and not summary.ok:
            title = f"c66-archiver: pass failed on {socket.gethostname()}"
            sends.append(self.apprise.send_all(title, body))
        await asyncio.gather(*sends)

    async def verify_failed(self, failures: list[tuple[str, int, str]], *, checked: int) -> None:
        """`verify` found corrupt, short or missing backups: the fail ping and the webhook."""
        names = self._stack_names()
        lines = [
            f"c66-archiver verify on {socket.gethostname()}: {len(failures)} of {checked} "
            "checked backups are not intact",
            *(
                f"corrupt: {_label(stack, names)} {backup}: {problem}"
                for stack, backup, problem in failures
            ),
        ]
        body = redact("\n".join(lines))[-_BODY_LIMIT:]
        sends: list[Coroutine[Any, Any, object]] = []
        url = self._settings.healthchecks_url
        if url:
            sends.append(self.post("ping", url.rstrip("/") + "/fail", data=body))
        if self.apprise is not None:
            title = f"c66-archiver: verify found {len(failures)} backups not intact"
            sends.append(self.apprise.send_all(title, body))
        if self._settings.webhook_url:
            document = {
                "event": "verify_failed",
                "hostname": socket.gethostname(),
                "checked": checked,
                "failed": [
                    {"stack_uid": stack, "backup_id": backup, "reason": redact(problem)}
                    for stack, backup, problem in failures
                ],
            }
            sends.append(self.post("webhook", self._settings.webhook_url, json_body=document))
        await asyncio.gather(*sends)

    async def post(
        self,
        kind: str,
        url: str,
        *,
        data: str | None = None,
        json_body: dict[str, Any] | None = None,
    ) -> bool:
        """POST `data` or `json_body` to `url` with retries; True when it was taken. A failure
        is a warning, never raised.

        When the process is stopping there is one attempt and no wait for retries.
        """
        retries = self._settings.retries

        async def once() -> None:
            await self._post_once(url, data, json_body)

        try:
            await retrying(
                once, policy=RetryPolicy(retries, _BACKOFF), retry_on=(_AlertFailed,),
                stop=self._stop,
            )
        except (_AlertFailed, Stopped) as problem:
            log.warning(
                f"{kind} failed; the pass is not affected",
                target=_scheme_and_host(url),
                reason=str(problem),
                attempts_allowed=retries + 1,
            )
            return False
        return True

    async def _post_once(
        self, url: str, data: str | None, json_body: dict[str, Any] | None
    ) -> None:
        """One POST; raises _AlertFailed saying why (never with the URL, which holds a secret)."""
        timeout = aiohttp.ClientTimeout(total=self._settings.timeout.total_seconds())
        try:
            async with self._get_session().post(
                url, data=data, json=json_body, timeout=timeout, allow_redirects=True
            ) as response:
                await response.read()
                status = response.status
        except TimeoutError:
            raise _AlertFailed("timed out") from None
        except aiohttp.ClientError as error:
            # The error's text would carry the URL, and with it the secret: name the kind only.
            raise _AlertFailed(type(error).__name__) from None
        if status >= 300:
            raise _AlertFailed(f"HTTP {status}")

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(headers={"User-Agent": USER_AGENT})
        return self._session


def pass_document(summary: PassSummary) -> dict[str, Any]:
    """The webhook's JSON body: the pass summary and where it ran."""
    return {
        "event": "pass_succeeded" if summary.ok else "pass_failed",
        "hostname": socket.gethostname(),
        "started_at": summary.started_at,
        "finished_at": summary.finished_at,
        "ok": summary.ok,
        "archived": summary.archived,
        "skipped": summary.skipped,
        "failed": [failure.as_dict() for failure in summary.failed],
        "bytes": summary.bytes,
        "seconds": round(summary.seconds, 3),
    }


def _failure_body(summary: PassSummary, names: Mapping[str, str]) -> str:
    """The fail ping's body: the summary line, the failures, then the log's tail."""
    lines = [f"c66-archiver pass failed on {socket.gethostname()}: {summary.one_line()}"]
    lines += [
        f"failed: {_label(f.stack_uid, names)} {f.backup_id}: {f.reason}" for f in summary.failed
    ]
    if summary.auth_error is not None:
        lines.append(f"the API refused the token: {summary.auth_error}")
    lines += ["", "last log lines:", *log_tail()]
    body = redact("\n".join(lines))
    return body if len(body) <= _BODY_LIMIT else body[-_BODY_LIMIT:]


def _label(stack_uid: str, names: Mapping[str, str]) -> str:
    """`Shop (uid)` when the stack's name is known (and differs from its uid), else the uid."""
    name = names.get(stack_uid)
    return f"{name} ({stack_uid})" if name and name != stack_uid else stack_uid


def _scheme_and_host(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}"


def _register_secret_part(url: str) -> None:
    """Redact the path and query of an alert URL wherever they appear (ping uuids, hook keys)."""
    parts = urlsplit(url)
    secret = parts.path.strip("/") + (f"?{parts.query}" if parts.query else "")
    if len(secret) >= 8:  # shorter paths ("/ping") carry no secret; redacting them garbles logs
        add_secret(secret)
        add_secret(parts.path.strip("/"))
