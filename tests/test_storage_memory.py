"""The in-memory reference backend against the Storage conformance suite."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.memory_storage import MemoryStorage
from tests.storage_conformance import StorageConformance, sha256_hex, write_upload


@pytest.fixture
async def storage() -> AsyncIterator[MemoryStorage]:
    """A fresh, empty in-memory backend."""
    backend = MemoryStorage()
    yield backend
    await backend.aclose()


@pytest.fixture
def neighbour(storage: MemoryStorage) -> MemoryStorage:
    """Another process's view of the same place: memory has only the one."""
    return storage


class TestMemoryConformance(StorageConformance):
    """The reference backend passes the whole suite."""

    keeps_data_in_memory = True


async def test_commit_keeps_the_sha256(storage: MemoryStorage) -> None:
    """The memory backend keeps the sha256 given at commit, for tests above storage."""
    upload = await storage.start_upload("a.tar")
    await write_upload(upload, b"abc")
    await upload.commit(size=3, sha256=sha256_hex(b"abc"))
    assert storage.sha256_of("a.tar") == sha256_hex(b"abc")
    assert storage.location("a.tar") == "memory://a.tar"
