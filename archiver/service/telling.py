"""Telling the watch's new findings: once each, to every channel, until each channel took it.

Channels: the webhook (one JSON event a finding), the healthchecks URL's `/log`
endpoint (which changes no check state, so it never fights the success ping),
and each Apprise URL. Findings wait in the state's outbox (queued when noticed);
a channel's message leaves it only once that channel took it, so what a channel
failed to take goes again at the next pass, and a restart changes nothing. A
channel that fails is left alone for the rest of the pass; it never fails the pass.
A burst (more than `DIGEST_ABOVE` waiting) reaches people as one digest message;
the webhook, for machines, always gets one event a finding.
"""

from __future__ import annotations

import asyncio

import structlog

from archiver.config.settings import NotifySettings
from archiver.service.alerts import AlertSender
from archiver.state.findings import Outbox, Queued
from archiver.watch.messages import digest

log = structlog.get_logger(__name__)

WEBHOOK = "webhook"
HEALTHCHECKS = "healthchecks"
DIGEST_ABOVE = 10


class FindingsTeller:
    """Delivers what the outbox holds for each configured channel."""

    def __init__(self, settings: NotifySettings, alerts: AlertSender) -> None:
        self._settings = settings
        self._alerts = alerts

    @property
    def channels(self) -> list[str]:
        """The channel keys configured now (the outbox keys its messages by them)."""
        keys = []
        if self._settings.webhook_url:
            keys.append(WEBHOOK)
        if self._settings.healthchecks_url:
            keys.append(HEALTHCHECKS)
        if self._alerts.apprise is not None:
            keys += self._alerts.apprise.keys
        return keys

    async def deliver(self, outbox: Outbox) -> None:
        """Send every channel what it has not taken yet; channels run side by side."""
        channels = self.channels
        outbox.drop_channels_except(channels)
        await asyncio.gather(*(self._deliver(channel, outbox) for channel in channels))

    async def _deliver(self, channel: str, outbox: Outbox) -> None:
        pending = outbox.pending(channel)
        if not pending:
            return
        if channel != WEBHOOK and len(pending) > DIGEST_ABOVE:
            title, text = digest([entry.event for entry in pending])
            if await self._send_text(channel, title, text):
                outbox.taken(pending)
            else:
                self._left(channel, pending)
            return
        for done, entry in enumerate(pending):
            if not await self._send(channel, entry):
                self._left(channel, pending[done:])
                return
            outbox.taken([entry])

    async def _send(self, channel: str, entry: Queued) -> bool:
        webhook = self._settings.webhook_url
        if channel == WEBHOOK and webhook:
            return await self._alerts.post("webhook", webhook, json_body=entry.event)
        return await self._send_text(channel, entry.event["title"], entry.event["message"])

    async def _send_text(self, channel: str, title: str, text: str) -> bool:
        if channel == HEALTHCHECKS and self._settings.healthchecks_url:
            url = self._settings.healthchecks_url.rstrip("/") + "/log"
            return await self._alerts.post("healthchecks log", url, data=f"{title}\n\n{text}")
        if self._alerts.apprise is not None:
            return await self._alerts.apprise.send(channel, title, text)
        return False

    def _left(self, channel: str, entries: list[Queued]) -> None:
        described = channel
        if self._alerts.apprise is not None and channel.startswith("apprise:"):
            described = self._alerts.apprise.describe(channel)
        log.warning(
            "findings not delivered; sent again at the next pass",
            channel=described,
            waiting=len(entries),
        )
