"""What `backup-task create` and `import` share: Cloud 66's two POSTs, and their answers.

Both need a token with the `admin` scope: a refusal exits 4 with a line naming
it. Cloud 66's `ok: false` exits 1 with its message.
"""

from __future__ import annotations

from typing import Any

import click

from archiver.cloud66.client import PostAnswer
from archiver.core.errors import EXIT_OK, EXIT_PARTIAL, AuthError, ConfigError
from archiver.core.secrets import redact


async def admin_call(call: Any) -> PostAnswer:
    try:
        answer: PostAnswer = await call
    except AuthError as error:
        raise AuthError(
            f"{error}: creating backup tasks and imports needs a token with the admin scope",
            status=error.status,
        ) from None
    return answer


def report(answer: PostAnswer, what: str) -> int:
    if answer.ok:
        click.echo(f"Cloud 66 accepted the {what}: {answer.message or 'ok'}")
        return EXIT_OK
    click.echo(redact(f"Cloud 66 did not accept the {what}: {answer.message}"), err=True)
    return EXIT_PARTIAL


def check_argument(check: Any, option: str) -> None:
    try:
        check()
    except ValueError as error:
        raise ConfigError(f"{option}: {error}") from None
