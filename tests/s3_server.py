"""The S3 tests' server (a pytest plugin, see conftest.py): `loopback.seaweedfs` per session.

One SeaweedFS server runs per test session; each test gets a bucket of its own.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from loopback import ServerUnavailable
from loopback.seaweedfs import S3Server, running_seaweedfs

__all__ = ["S3Server", "s3_bucket", "s3_server"]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One SeaweedFS server for the whole session, stopped at the end."""
    try:
        with running_seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as running:
            yield running.server
    except ServerUnavailable as missing:
        pytest.skip(str(missing))


@pytest.fixture
async def s3_bucket(s3_server: S3Server) -> str:
    """A fresh, empty bucket on the test server for one test (the server goes at session end)."""
    name = f"c66-test-{secrets.token_hex(6)}"
    async with s3_server.client() as client:
        await client.create_bucket(Bucket=name)
    return name
