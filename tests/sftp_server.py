"""The SFTP tests' server (a pytest plugin, see conftest.py): `loopback.sshd` per session.

Tests log in as a throwaway system user and get a fresh remote folder each.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from loopback import ServerUnavailable
from loopback.sshd import SftpServer, running_sshd

__all__ = ["SftpServer", "sftp_folder", "sftp_server"]


@pytest.fixture(scope="session")
def sftp_server() -> Iterator[SftpServer]:
    """A real sshd on loopback for the whole session, stopped at the end."""
    folder = Path(tempfile.mkdtemp(prefix="c66-sshd-"))
    try:
        with running_sshd(folder) as server:
            yield server
    except ServerUnavailable as missing:
        pytest.skip(str(missing))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def sftp_folder(sftp_server: SftpServer, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A fresh folder owned by the SFTP user (its `archive` child does not exist yet)."""
    stem = re.sub(r"[^A-Za-z0-9_-]", "_", request.node.name)[:40]
    folder = Path(tempfile.mkdtemp(prefix=f"{stem}-", dir=sftp_server.base))
    os.chown(folder, sftp_server.uid, sftp_server.gid)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)
