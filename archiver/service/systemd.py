"""systemd's notify protocol, by hand: one datagram to `$NOTIFY_SOCKET` a message.

Written here rather than taken from PyPI because `sdnotify` is unmaintained and
the protocol is a few lines (see sd_notify(3)). Every function is a no-op when
`NOTIFY_SOCKET` is unset (not started by systemd with `Type=notify`), and a
failed send is logged, never raised: the service must not die because its
supervisor's socket is gone.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Mapping

import structlog

from archiver.model.summary import PassSummary

log = structlog.get_logger(__name__)

NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"
WATCHDOG_USEC_ENV = "WATCHDOG_USEC"
WATCHDOG_PID_ENV = "WATCHDOG_PID"

# A send waits at most this long: systemd reads its socket promptly, and a stuck
# receiver must not stall the event loop for longer than this.
_SEND_TIMEOUT_SECONDS = 1.0


def socket_address(value: str) -> str:
    """The address to send to: a leading `@` names an abstract socket (a NUL byte)."""
    return "\0" + value[1:] if value.startswith("@") else value


def send_to_systemd(message: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send one notify message; True when it was sent, False when unset or it failed."""
    env = os.environ if environ is None else environ
    target = env.get(NOTIFY_SOCKET_ENV)
    if not target:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(_SEND_TIMEOUT_SECONDS)
            sock.sendto(message.encode(), socket_address(target))
    except OSError as error:
        log.warning("systemd notify failed", message=message.split("=")[0], error=repr(error))
        return False
    return True


def notify_ready() -> bool:
    """Tell systemd start-up is complete (`Type=notify` units become active)."""
    return send_to_systemd("READY=1")


def notify_status(text: str) -> bool:
    """Set the one-line status `systemctl status` shows."""
    # One message is newline-separated assignments: a newline would start a new one.
    return send_to_systemd("STATUS=" + " ".join(text.splitlines()))


def notify_stopping() -> bool:
    """Tell systemd the service is shutting down (draining)."""
    return send_to_systemd("STOPPING=1")


def notify_watchdog() -> bool:
    """Ping the watchdog: the service is alive."""
    return send_to_systemd("WATCHDOG=1")


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between watchdog pings (half of `WATCHDOG_USEC`), or None when not asked for.

    `WATCHDOG_PID`, when set, names the process that must ping; any other
    process (a child that inherited the environment) must stay quiet.
    """
    env = os.environ if environ is None else environ
    usec = env.get(WATCHDOG_USEC_ENV, "")
    pid = env.get(WATCHDOG_PID_ENV, "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None
    return int(usec) / 1_000_000 / 2


async def _ping_forever(interval: float) -> None:
    while True:
        notify_watchdog()
        await asyncio.sleep(interval)


def start_watchdog(environ: Mapping[str, str] | None = None) -> asyncio.Task[None] | None:
    """Ping the watchdog from the running loop, when systemd asks for it.

    The pings come from an event-loop task on purpose: when the loop is
    blocked the pings stop, and systemd restarts a service that hung.
    """
    interval = watchdog_interval(environ)
    if interval is None:
        return None
    log.debug("systemd watchdog on", ping_every_seconds=interval)
    return asyncio.create_task(_ping_forever(interval), name="systemd-watchdog")


class StatusObserver:
    """A pass observer that keeps `systemctl status` showing what the daemon does."""

    async def pass_started(self) -> None:
        """Show that a pass runs."""
        notify_status("running pass...")

    async def pass_finished(self, summary: PassSummary) -> None:
        """Show the last pass's outcome and when it ended."""
        outcome = {"ok": "ok", "failed": "FAILED"}.get(summary.outcome, summary.outcome)
        notify_status(f"last pass {outcome} at {summary.finished_at}: {summary.one_line()}")
