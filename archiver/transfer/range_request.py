"""One GET of a file's bytes: the headers it sends, and what its answer must say.

A segment asks for `Range: bytes=a-b` (or `bytes=a-` up to the end), and once the
file's first answer gave an ETag, every later request carries `If-Match` with it:
S3 answers 412 when the object changed since, where `If-Range` would quietly
send the whole new object. `read_answer` checks an answer before a byte of its
body is taken and sorts what can go wrong by what the caller does about it:

- `UrlExpired` (403): ask for a fresh URL;
- `BrokenOff` (5xx, 408, 429, a Content-Range other than asked, a Content-Length
  that disagrees with it): try again from the same byte;
- `ObjectChanged` (412, another ETag or size than the first answer's): the file
  starts over;
- `Unsatisfiable` (416): nothing of the range exists;
- `TransferError` (any other status): give up on the file.
A 200 is returned as an `Answer` that is not `ranged`: the server sent the
whole body; the caller decides what that means where it is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp

from archiver.core.errors import TransferError, UrlExpired
from archiver.transfer.etags import bare_etag

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_UNSATISFIED_RANGE = re.compile(r"bytes \*/(\d+)")


class BrokenOff(Exception):
    """The attempt failed in a way a new attempt from the same byte can fix."""


class ObjectChanged(Exception):
    """The file is no longer the one the first answer described."""


class Unsatisfiable(Exception):
    """416: the server has none of the bytes asked for; `total` is its size, if it said."""

    def __init__(self, total: int | None) -> None:
        super().__init__("the server answered 416 (range not satisfiable)")
        self.total = total


@dataclass(frozen=True)
class Expected:
    """What the file's first answer established, held against every later one."""

    total: int | None
    etag: str | None


@dataclass(frozen=True)
class Answer:
    """An accepted answer's headers: which bytes its body holds, and of what file."""

    ranged: bool  # 206: the bytes asked for; else 200: the whole file from byte 0
    start: int
    end: int | None  # exclusive; None when the length is unknown (a chunked 200)
    total: int | None  # the file's size, when the answer tells it
    etag: str | None  # as sent (quoted): If-Match needs it so
    headers: Mapping[str, str]


def request_headers(
    start: int, end: int | None, *, ranged: bool, etag: str | None
) -> dict[str, str]:
    """`Range` for bytes `[start, end)` (to the end when `end` is None), `If-Match` with `etag`."""
    headers: dict[str, str] = {}
    if ranged:
        last = "" if end is None else str(end - 1)
        headers["Range"] = f"bytes={start}-{last}"
    if etag:
        headers["If-Match"] = etag
    return headers


async def read_answer(
    response: aiohttp.ClientResponse, *, start: int, end: int | None, expected: Expected | None
) -> Answer:
    """Check the answer to a request for bytes `[start, end)` (see the module's docstring)."""
    status = response.status
    if status == 403:
        await _raise_for_forbidden(response)
    if status >= 500 or status in (408, 429):
        raise BrokenOff(f"storage host answered {status}")
    if status == 412:
        raise ObjectChanged("the file changed upstream (412 Precondition Failed)")
    if status == 416:
        match = _UNSATISFIED_RANGE.fullmatch(response.headers.get("Content-Range", ""))
        raise Unsatisfiable(int(match.group(1)) if match else None)
    etag = response.headers.get("ETag")
    if status == 200:
        length = response.content_length
        return Answer(False, 0, length, length, etag, response.headers)
    if status != 206:
        raise TransferError(f"download answered HTTP {status}")
    answer = _ranged_answer(response, start, end, etag)
    if expected is not None:
        _check_same_file(answer, expected)
    return answer


def _ranged_answer(
    response: aiohttp.ClientResponse, start: int, end: int | None, etag: str | None
) -> Answer:
    match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
    if match is None:
        raise BrokenOff("a ranged answer without a valid Content-Range")
    first, last = int(match.group(1)), int(match.group(2))
    total = None if match.group(3) == "*" else int(match.group(3))
    if first != start:
        raise BrokenOff(f"the ranged answer starts at byte {first}, not at {start} as asked")
    if last < first or (end is not None and last >= end) or (total is not None and last >= total):
        raise BrokenOff(f"the ranged answer holds bytes {first}-{last}, not those asked for")
    length = response.content_length
    if length is not None and length != last - first + 1:
        raise BrokenOff(
            f"the ranged answer's Content-Length ({length}) disagrees with its "
            f"Content-Range ({first}-{last})"
        )
    return Answer(True, first, last + 1, total, etag, response.headers)


def _check_same_file(answer: Answer, expected: Expected) -> None:
    if expected.etag and bare_etag(answer.etag) != bare_etag(expected.etag):
        raise ObjectChanged("the file changed upstream (its ETag is not the first answer's)")
    if expected.total is not None and answer.total is not None and answer.total != expected.total:
        raise ObjectChanged(
            f"the file changed upstream (its size went from {expected.total} "
            f"to {answer.total} bytes)"
        )


async def _raise_for_forbidden(response: aiohttp.ClientResponse) -> None:
    """A pre-signed URL refused: expired (the usual case) or otherwise spoilt.

    Either way the cure is a fresh URL, which the caller fetches (a bounded
    number of times).
    """
    body = (await response.text(errors="replace"))[:2000]
    code = re.search(r"<Code>([^<]+)</Code>", body)
    expired = "expired" in body.lower()
    reason = "expired" if expired else (code.group(1) if code else "HTTP 403")
    raise UrlExpired(f"download URL refused ({reason})")
