"""What the transfer knows of one upstream file: where to get it, what its first answer
said of it, and where a download left by an earlier process goes on."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from archiver.core.errors import IntegrityError
from archiver.transfer.urls import UrlSource


@dataclass(frozen=True)
class PartSource:
    """One upstream file of a backup and how to get a fresh URL for it."""

    id: str
    name: str
    fresh_url: UrlSource


@dataclass(frozen=True)
class PartFacts:
    """What a part's first answer says of it: enough to resume it in another process."""

    size: int | None
    etag: str | None  # as sent (quoted): If-Match needs it so
    md5: str | None  # the MD5 its bytes must have, when the ETag proved one


@dataclass(frozen=True)
class ResumePoint:
    """Where a part left by an earlier process resumes: its first `written` bytes are
    durable (and already fed to the hashes), and `facts` are what its answer said."""

    written: int
    facts: PartFacts


FactsCallback = Callable[[PartFacts], None]
ByteCallback = Callable[[int], None]


class UpstreamChanged(IntegrityError):
    """Permanent for this upload: the file changed upstream since its first bytes came."""
