"""What a failed connection says: the host it could not reach, and why, in a few words.

`aiohttp` raises `ClientConnectorDNSError` for a name that does not resolve; its
type name alone ("ClientConnectorDNSError") leaves the reader guessing which
host. These errors carry the host and port only, never a URL's path or query,
so a pre-signed URL's signature cannot leak through them.
"""

from __future__ import annotations

import os

import aiohttp


def describe_connection_error(error: BaseException) -> str:
    """`cannot resolve host app.cloud66.com`, `cannot connect to 10.0.0.5:443 (connection
    refused)`, ...; the error's type name for what has no host to name."""
    if isinstance(error, aiohttp.ClientConnectorDNSError):
        return f"cannot resolve host {error.host} ({_reason(error.os_error)})"
    if isinstance(error, aiohttp.ClientConnectorCertificateError):
        return f"TLS certificate of {error.host}:{error.port} not accepted"
    if isinstance(error, aiohttp.ClientConnectorError):
        return f"cannot connect to {error.host}:{error.port} ({_reason(error.os_error)})"
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    if isinstance(error, aiohttp.ClientPayloadError):
        return "the body was cut short"
    if isinstance(error, TimeoutError):
        return "timed out"
    return type(error).__name__


def _reason(error: OSError) -> str:
    """`Connection refused`, `Name or service not known`: the system's words."""
    if error.errno is not None and error.errno > 0:
        return os.strerror(error.errno)  # asyncio's own text names the address again
    return str(error.strerror or error)
