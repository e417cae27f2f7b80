"""Secrets kept out of every line: registered values, URL query strings, signing parameters.

The API token, storage keys and Apprise URLs are registered with `add_secret`
as they are read; `redact` replaces them, any URL's query string (pre-signed
URLs carry their signature there) and bearer tokens wherever they appear.
"""

from __future__ import annotations

import re
import threading

from structlog.typing import EventDict, WrappedLogger

REDACTED = "[REDACTED]"

# Characters that end a query string or a parameter value. Quotes, angle
# brackets and backslashes end them so that a URL inside a repr
# (`URL('https://...')`) or inside already JSON-escaped text is cut cleanly;
# ESC ends them so that console colour codes survive.
_STOP = r"\s\"'<>`\\\x1b"
_URL_QUERY = re.compile(rf"(https?://[^{_STOP}?#]*)\?[^{_STOP}]*", re.IGNORECASE)
_SIGNING_PARAMETER = re.compile(
    rf"((?:X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token|AWSAccessKeyId|Signature)=)"
    rf"[^&{_STOP}]+",
    re.IGNORECASE,
)
_BEARER = re.compile(r"(\bBearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE)

_secrets_lock = threading.Lock()
_secrets: frozenset[str] = frozenset()
_secret_pattern: re.Pattern[str] | None = None


def add_secret(secret: str) -> None:
    """Register a value (the API token, a storage key) to be replaced wherever it appears."""
    global _secrets, _secret_pattern
    secret = secret.strip()
    if not secret:
        return
    with _secrets_lock:
        if secret in _secrets:
            return
        secrets = _secrets | {secret}
        # Longest first, so a secret that contains another is replaced whole.
        ordered = sorted(secrets, key=len, reverse=True)
        pattern = re.compile("|".join(re.escape(item) for item in ordered))
        # Readers take the pattern without the lock: one assignment is atomic.
        _secrets, _secret_pattern = secrets, pattern


def redact(text: str) -> str:
    """`text` without registered secrets, URL query strings, signing parameters or bearer tokens."""
    pattern = _secret_pattern
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    text = _URL_QUERY.sub(rf"\1?{REDACTED}", text)
    text = _SIGNING_PARAMETER.sub(rf"\1{REDACTED}", text)
    return _BEARER.sub(rf"\1{REDACTED}", text)


def _redact_value(value: object) -> object:
    """Redact strings at any depth; other scalars pass; any other object becomes redacted text."""
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, dict):
        return {key: _redact_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact_value(item) for item in value]
    # An object (exception, URL, path) would be rendered by its str or repr,
    # which may carry a URL: render it here, where we can still redact it.
    return redact(str(value))


def redact_event(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Processor: redact every value of the event dict, nested ones and tracebacks included."""
    return {key: _redact_value(value) for key, value in event_dict.items()}
