"""A real OpenSSH server on loopback, for the SFTP tests and the benchmark.

A throwaway host key and user key, an sshd_config on a free port,
`/usr/sbin/sshd -D -e -f CFG`. Clients log in as a throwaway
system user (so permission checks are real; root as a fallback where useradd
is missing), and get a fresh remote folder each. The SFTP subsystem runs with
umask 0000, the most permissive, so the backend must set its modes itself.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh

from archiver.config.storage import SftpStorageSettings
from loopback import ServerUnavailable, stop_process

SSHD = Path("/usr/sbin/sshd")
TEST_USER = "c66-sftp-test"
_START_TIMEOUT = 15.0


@dataclass(frozen=True)
class SftpServer:
    """A running sshd and what a client needs to reach it."""

    host: str
    port: int
    username: str
    uid: int
    gid: int
    private_key_file: Path
    known_hosts_file: Path
    base: Path  # a folder owned by `username`; per-test folders live inside
    log_file: Path
    process: subprocess.Popen[bytes]

    def settings(self, path: Path | str, **overrides: Any) -> SftpStorageSettings:
        """Storage settings for a folder on this server; `overrides` replace any key."""
        values = {**self.storage_table(path), "connect_timeout": "5s", **overrides}
        return SftpStorageSettings.model_validate(values)

    def storage_table(self, path: Path | str) -> dict[str, Any]:
        """The `[storage]` table of a config file for a folder on this server."""
        return {
            "type": "sftp",
            "host": self.host,
            "port": self.port,
            "username": self.username,
            "private_key_file": str(self.private_key_file),
            "known_hosts_file": str(self.known_hosts_file),
            "path": str(path),
        }

    def session_pids(self) -> list[int]:
        """Per-connection sshd processes (children of the listener)."""
        return _children(self.process.pid)

    def session_tree(self) -> list[int]:
        """Every process of every session: the per-connection sshd and its children (the
        unprivileged one does the session's I/O and runs internal-sftp)."""
        found: list[int] = []
        pending = self.session_pids()
        while pending:
            pid = pending.pop()
            found.append(pid)
            pending.extend(_children(pid))
        return found

    @contextmanager
    def stalled(self) -> Iterator[None]:
        """Every session process stopped (SIGSTOP) inside the block: a server that takes no
        more bytes and answers nothing, as a saturated or hung one; SIGCONT on the way out."""
        stopped: list[int] = []
        for pid in self.session_tree():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
        try:
            yield
        finally:
            for pid in stopped:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)


def _children(pid: int) -> list[int]:
    try:
        listed = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except FileNotFoundError:
        return []
    return [int(child) for child in listed.split()]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _ensure_sshd() -> None:
    """Install Debian's openssh-server when sshd is missing, or say why it cannot be."""
    if SSHD.exists():
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ServerUnavailable(
            "sshd is missing and cannot be installed here (needs root and apt-get)"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "openssh-server"],
    ):
        result = subprocess.run(command, capture_output=True, env=env, check=False)
        if result.returncode != 0:
            raise ServerUnavailable(
                f"cannot install openssh-server: {result.stderr.decode()[-300:]}"
            )


def _test_user() -> pwd.struct_passwd:
    """A throwaway system user to log in as (created once); root if useradd is not there."""
    try:
        return pwd.getpwnam(TEST_USER)
    except KeyError:
        pass
    created = subprocess.run(
        [
            "useradd",
            "--system",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            TEST_USER,
        ],
        capture_output=True,
        check=False,
    )
    if created.returncode != 0:
        return pwd.getpwuid(0)
    # useradd leaves the password '!' (locked), and sshd without PAM refuses locked accounts.
    subprocess.run(["usermod", "-p", "*", TEST_USER], capture_output=True, check=True)
    return pwd.getpwnam(TEST_USER)


def _write_key(path: Path, key: asyncssh.SSHKey) -> None:
    key.write_private_key(str(path))
    path.chmod(0o600)  # sshd ignores a host key that others can read


def _sshd_config(folder: Path, port: int) -> Path:
    config = folder / "sshd_config"
    config.write_text(
        f"Port {port}\n"
        "ListenAddress 127.0.0.1\n"
        f"HostKey {folder / 'host_ed25519'}\n"
        f"AuthorizedKeysFile {folder / 'authorized_keys'}\n"
        f"PidFile {folder / 'sshd.pid'}\n"
        "UsePAM no\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "PubkeyAuthentication yes\n"
        "PermitRootLogin prohibit-password\n"
        "StrictModes no\n"
        "MaxStartups 100\n"
        "LogLevel VERBOSE\n"
        # umask 0000: the backend, not the server, must make files 0600 and folders 0700.
        "Subsystem sftp internal-sftp -u 0000\n"
    )
    return config


def _wait_for_port(process: subprocess.Popen[bytes], port: int, log_file: Path) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerUnavailable(f"sshd exited at start: {log_file.read_text()[-500:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise ServerUnavailable(f"sshd did not answer on port {port}: {log_file.read_text()[-500:]}")


@contextmanager
def running_sshd(folder: Path) -> Iterator[SftpServer]:
    """sshd on a free loopback port with throwaway keys, everything in `folder` (made here).

    Logs in as the throwaway system user, who owns `folder/remote`; stopped at exit.
    Shared by the test fixture and the benchmark; raises ServerUnavailable when sshd cannot run.
    """
    _ensure_sshd()
    user = _test_user()
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)  # sshd reads authorized_keys as the user
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    user_key = asyncssh.generate_private_key("ssh-ed25519")
    _write_key(folder / "host_ed25519", host_key)
    _write_key(folder / "user_ed25519", user_key)
    (folder / "authorized_keys").write_bytes(user_key.export_public_key())
    (folder / "authorized_keys").chmod(0o644)
    port = _free_port()
    known_hosts = folder / "known_hosts"
    known_hosts.write_bytes(f"[127.0.0.1]:{port} ".encode() + host_key.export_public_key())
    base = folder / "remote"
    base.mkdir(mode=0o700)
    os.chown(base, user.pw_uid, user.pw_gid)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
    log_file = folder / "sshd.log"
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            [str(SSHD), "-D", "-e", "-f", str(_sshd_config(folder, port))],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for_port(process, port, log_file)
        yield SftpServer(
            host="127.0.0.1",
            port=port,
            username=user.pw_name,
            uid=user.pw_uid,
            gid=user.pw_gid,
            private_key_file=folder / "user_ed25519",
            known_hosts_file=known_hosts,
            base=base,
            log_file=log_file,
            process=process,
        )
    finally:
        stop_process(process, timeout=10)
