"""systemd's notify protocol against a real datagram socket, with the daemon as a real process."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from archiver.service import systemd
from archiver.simulator import Simulator, SimulatorServer
from tests.conftest import Workspace, cli_env, start_cli


class NotifyReceiver:
    """What systemd does with `NOTIFY_SOCKET`: a bound datagram socket that collects messages."""

    def __init__(self, sock: socket.socket, address: str) -> None:
        self.sock = sock
        self.address = address  # as it goes into NOTIFY_SOCKET
        self.messages: list[str] = []

    def receive_now(self) -> str:
        """One message that is already waiting (blocking socket, short timeout)."""
        self.sock.settimeout(5)
        return self.sock.recv(4096).decode()

    async def wait_for(self, predicate: Callable[[str], bool], timeout: float = 30) -> str:
        """Collect messages until one matches; fail after `timeout` seconds."""
        self.sock.setblocking(False)
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            while True:
                message = (await loop.sock_recv(self.sock, 4096)).decode()
                self.messages.append(message)
                if predicate(message):
                    return message


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[NotifyReceiver]:
    """A datagram socket bound in tmp_path."""
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        yield NotifyReceiver(sock, str(path))


@pytest.fixture
def abstract_receiver() -> Iterator[NotifyReceiver]:
    """A datagram socket in the abstract namespace, named the way systemd writes it (`@...`)."""
    name = f"c66-archiver-test-{os.getpid()}-{id(object())}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        yield NotifyReceiver(sock, "@" + name)


def test_notify_to_an_abstract_socket(
    abstract_receiver: NotifyReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A leading `@` names an abstract socket: the message arrives there."""
    monkeypatch.setenv("NOTIFY_SOCKET", abstract_receiver.address)
    assert systemd.notify_ready()
    assert abstract_receiver.receive_now() == "READY=1"


def test_notify_to_a_path_and_status_stays_one_line(
    receiver: NotifyReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A STATUS with newlines is sent as one line (a newline would start another assignment)."""
    monkeypatch.setenv("NOTIFY_SOCKET", receiver.address)
    assert systemd.notify_status("first\nsecond")
    assert receiver.receive_now() == "STATUS=first second"


def test_notify_is_a_no_op_without_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not started by systemd: nothing is sent and nothing fails."""
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not systemd.notify_ready()
    assert not systemd.notify_watchdog()


def test_notify_to_a_missing_socket_is_logged_not_raised(tmp_path: Path) -> None:
    """A socket that went away never takes the service down."""
    assert not systemd.send_to_systemd("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "junk"}, None),
        ({"WATCHDOG_USEC": "20000000"}, 10.0),
        ({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid())}, 0.1),
        ({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"}, None),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec_for_our_pid_only(
    environ: dict[str, str], expected: float | None
) -> None:
    """Ping every WATCHDOG_USEC/2; not at all when unset or meant for another process."""
    assert systemd.watchdog_interval(environ) == expected


async def test_daemon_sends_ready_status_watchdog_and_stopping(
    sim: Simulator, server: SimulatorServer, workspace: Workspace, receiver: NotifyReceiver
) -> None:
    """The daemon under Type=notify: READY=1, the pass's STATUS=, WATCHDOG=1 pings, STOPPING=1."""
    sim.add_stack("stack-a")
    sim.add_backup("stack-a", size=3000)
    config = workspace.write_config(server.base_url, [{"uid": "stack-a"}])
    env = cli_env(NOTIFY_SOCKET=receiver.address, WATCHDOG_USEC="200000")
    process = await start_cli("--config", str(config), env=env)
    try:
        await receiver.wait_for(lambda message: message == "READY=1")
        finished = await receiver.wait_for(lambda message: message.startswith("STATUS=last"))
        assert "STATUS=running pass..." in receiver.messages
        assert finished.startswith("STATUS=last pass ok at ")
        assert "archived 1, " in finished
        pings_before = receiver.messages.count("WATCHDOG=1")
        for _ in range(3):  # pings keep coming every 0.1 s while the daemon idles
            await receiver.wait_for(lambda message: message == "WATCHDOG=1", timeout=5)
        assert receiver.messages.count("WATCHDOG=1") >= pings_before + 3
        process.send_signal(signal.SIGTERM)
        await receiver.wait_for(lambda message: message == "STOPPING=1")
        assert await asyncio.wait_for(process.wait(), 20) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert receiver.messages.index("READY=1") < receiver.messages.index(finished)


async def test_daemon_sends_no_watchdog_pings_meant_for_another_pid(
    sim: Simulator, server: SimulatorServer, workspace: Workspace, receiver: NotifyReceiver
) -> None:
    """WATCHDOG_PID naming another process: READY=1 still, but no WATCHDOG=1."""
    sim.add_stack("stack-a")
    config = workspace.write_config(server.base_url, [{"uid": "stack-a"}])
    env = cli_env(NOTIFY_SOCKET=receiver.address, WATCHDOG_USEC="200000", WATCHDOG_PID="1")
    process = await start_cli("--config", str(config), env=env)
    try:
        await receiver.wait_for(lambda message: message.startswith("STATUS=last"))
        await asyncio.sleep(0.5)  # several ping intervals
        process.send_signal(signal.SIGTERM)
        await receiver.wait_for(lambda message: message == "STOPPING=1")
        assert await asyncio.wait_for(process.wait(), 20) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert "READY=1" in receiver.messages
    assert "WATCHDOG=1" not in receiver.messages
