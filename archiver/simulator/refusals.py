"""Error answers in the simulator's two dialects: Cloud 66's JSON and S3's XML, and the
exception that carries one out of a look-up or check, up to the handler."""

from __future__ import annotations

import secrets

from aiohttp import web


class Refused(Exception):
    """Carries the error answer out of a lookup or check, up to the handler."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


def api_error(status: int, code: str, description: str) -> web.Response:
    """A Cloud 66 API error: ``{"error": code, "error_description": ...}``."""
    return web.json_response({"error": code, "error_description": description}, status=status)


def s3_error(status: int, code: str, message: str) -> web.Response:
    """An S3 error document (``<Error><Code>...``), with a random request id as S3 gives."""
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<RequestId>{secrets.token_hex(8).upper()}</RequestId></Error>"
    )
    return web.Response(status=status, text=body, content_type="application/xml")
