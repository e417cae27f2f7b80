"""`[notify] apprise_urls`: Slack, Discord, Telegram, e-mail, ntfy, Matrix, Teams... via Apprise.

One Apprise object per URL, so each is a channel of its own: what one failed to
take is sent to it again later without repeating it to the others. A URL is
named in logs by its position and scheme only (`apprise_urls[1] (slack://)`):
the URLs hold tokens and passwords, and were registered as secrets when the
config was read. Apprise comes with the `[notify]` extra (the config check refuses
`apprise_urls` without it) and is imported only when a URL is configured (it takes
about a third of a second to load its plugins from bytecode, a second without).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from archiver.config.watch import describe_apprise_url

if TYPE_CHECKING:
    import apprise

log = structlog.get_logger(__name__)

FAILURE = "failure"
WARNING = "warning"


@dataclass(frozen=True)
class _Target:
    key: str  # the channel's key in the outbox: a hash, never the URL
    described: str
    apprise: apprise.Apprise


class AppriseChannels:
    """Every configured Apprise URL, each sent to on its own."""

    def __init__(self, urls: Sequence[str], *, timeout: float) -> None:
        import apprise

        self._timeout = timeout
        self._targets: list[_Target] = []
        for index, url in enumerate(urls):
            target = apprise.Apprise()
            target.add(url)  # checked when the config was read
            described = describe_apprise_url(index, url)
            self._targets.append(_Target(channel_key(url), described, target))

    @property
    def keys(self) -> list[str]:
        """The channel key of each URL, in order."""
        return [target.key for target in self._targets]

    def describe(self, key: str) -> str:
        """`apprise_urls[1] (slack://)` for a channel key."""
        return next((t.described for t in self._targets if t.key == key), "apprise")

    async def send(self, key: str, title: str, body: str, *, kind: str = WARNING) -> bool:
        """Send to one URL; True when Apprise says it was delivered. Never raises."""
        target = next((t for t in self._targets if t.key == key), None)
        if target is None:
            return False
        return await self._send(target, title, body, kind)

    async def send_all(self, title: str, body: str, *, kind: str = FAILURE) -> None:
        """Send to every URL (pass and verify failures); failures are logged only."""
        for target in self._targets:
            await self._send(target, title, body, kind)

    async def _send(self, target: _Target, title: str, body: str, kind: str) -> bool:
        import apprise

        notify_type = apprise.NotifyType.FAILURE if kind == FAILURE else apprise.NotifyType.WARNING
        try:
            result = await target.apprise.async_notify(
                body=body, title=title, notify_type=notify_type,
                body_format=apprise.NotifyFormat.TEXT, timeout=self._timeout,
            )
        except Exception as error:  # a channel's trouble is never the pass's
            log.warning("apprise notification failed", target=target.described,
                        reason=type(error).__name__)
            return False
        if not result:
            status = getattr(result, "status", None)
            reason = getattr(status, "name", None) or "not delivered"
            log.warning("apprise notification failed", target=target.described, reason=reason)
            return False
        return True


def channel_key(url: str) -> str:
    """`apprise:<hash>`: stable whatever the URLs' order, and no secret in the state."""
    return "apprise:" + hashlib.sha256(url.encode()).hexdigest()[:16]
