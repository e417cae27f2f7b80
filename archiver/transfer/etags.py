"""When is an S3 ETag the object's MD5? Only when the response proves it.

An ETag is the MD5 of the body only for an object uploaded in one request
without SSE-KMS or SSE-C: multipart uploads give `<md5 of md5s>-N`, and
SSE-KMS (`aws:kms`, `aws:kms:dsse`) or SSE-C objects an opaque value that
merely looks like one. So the MD5 is checked only when the ETag is 32 hex
digits and the response names no encryption or SSE-S3 (`AES256`); any other
ETag is recorded as it is, never checked, and never "fails" a good download.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_PLAIN_MD5 = re.compile(r"[0-9a-f]{32}")
SSE_HEADER = "x-amz-server-side-encryption"
SSE_C_HEADER = "x-amz-server-side-encryption-customer-algorithm"
# Server-side encryption that leaves the ETag the body's MD5.
_MD5_PRESERVING = {"AES256"}


def bare_etag(etag: str | None) -> str | None:
    """The ETag without quotes or a weak marker, as the manifest records it."""
    if not etag:
        return None
    return etag.strip().removeprefix("W/").strip('"')


def md5_from_etag(etag: str | None, headers: Mapping[str, str]) -> str | None:
    """The MD5 the ETag proves, or None when it proves none (multipart, KMS, SSE-C, odd)."""
    value = (bare_etag(etag) or "").lower()
    if not _PLAIN_MD5.fullmatch(value):
        return None  # multipart (`-N`), weak or odd ETags are no MD5
    if SSE_C_HEADER in headers:
        return None
    encryption = headers.get(SSE_HEADER)
    if encryption is not None and encryption not in _MD5_PRESERVING:
        return None  # aws:kms, aws:kms:dsse: the ETag is opaque
    return value
