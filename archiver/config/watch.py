"""The watch's settings: `[watch]`, a stack's `watch = {...}`, and `[notify] apprise_urls`.

Kept apart from `archiver.config.settings`, which includes them. An Apprise URL
is checked by Apprise itself when the config is read (it must be one Apprise can
send to), and registered as a secret right away: Slack webhook tokens, mail
passwords and bot tokens live in these URLs, so none may reach a log line. A bad
one is named by its position and scheme, never by the URL. Apprise comes with the
`[notify]` extra: without it a URL cannot be parsed here, and the config check that
follows validation (`settings_from_dict`) says which line installs it (exit 2).
"""

from __future__ import annotations

import logging
import re
from datetime import timedelta
from typing import Annotated

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from archiver.core.extras import NOTIFY_EXTRA, install_line, missing_modules
from archiver.core.secrets import add_secret
from archiver.core.units import parse_duration

DEFAULT_SHRINK_RATIO = 0.5
# Pieces of an Apprise URL shorter than this are not registered on their own (the
# whole URL always is): replacing "json" or a port everywhere would garble every line.
_MIN_SECRET_PIECE = 8
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]{0,31})://")
_HOSTNAME = re.compile(r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")


def _positive_duration(value: object) -> timedelta:
    duration = parse_duration(value)
    if duration <= timedelta(0):
        raise ValueError("must be longer than 0s, e.g. \"26h\" or \"8d\"")
    return duration


MaxBackupAge = Annotated[timedelta, BeforeValidator(_positive_duration)]
# Strictly between 0 and 1: 1 or more would flag every backup, 0 none.
ShrinkRatio = Annotated[float, Field(gt=0, lt=1, strict=True)]


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class StackWatchSettings(_Table):
    """`[[stacks]] watch = { max_backup_age = "8d" }`: this stack's thresholds."""

    # Replaces [watch] max_backup_age (and the inference) for this stack's series.
    max_backup_age: MaxBackupAge | None = None


class WatchSettings(_Table):
    """`[watch]`: judge Cloud 66's backups (missed, late, failed, shrunken); on by default."""

    enabled: Annotated[bool, Field(strict=True)] = True
    # A series is late when its newest good backup is older; unset: inferred per series.
    max_backup_age: MaxBackupAge | None = None
    # A newest backup smaller than this times the typical size is a size anomaly.
    shrink_ratio: ShrinkRatio = DEFAULT_SHRINK_RATIO


def url_scheme(url: str) -> str:
    """`slack` for `slack://...`; `?` when the text has no scheme."""
    match = _SCHEME.match(url.strip())
    return match.group(1).lower() if match else "?"


def check_apprise_url(url: str) -> str:
    """The URL when Apprise can send to it; else ValueError naming its scheme only."""
    url = url.strip()
    for secret in apprise_secrets(url):
        add_secret(secret)
    if missing_modules(NOTIFY_EXTRA):
        return url  # unparsed: the extra check after validation refuses the config
    if not _apprise_accepts(url):
        scheme = url_scheme(url)
        what = f"a {scheme}:// URL" if scheme != "?" else "text without a scheme://"
        raise ValueError(
            f"Apprise cannot use {what} (an unknown service, or parts missing); "
            "see https://github.com/caronc/apprise/wiki for each service's URL form"
        )
    return url


def _apprise_accepts(url: str) -> bool:
    # Imported here: about a second with its plugins, paid only when URLs are configured.
    try:
        import apprise
    except ImportError as error:  # installed, but a module it needs is not
        raise ValueError(
            f"Apprise cannot be loaded ({error.name or error} is missing); reinstall the "
            f"[notify] extra: {install_line(NOTIFY_EXTRA)}"
        ) from None

    # Apprise logs a URL it cannot parse, whole, before logging is set up: silence it.
    apprise_log = logging.getLogger("apprise")
    was_disabled, apprise_log.disabled = apprise_log.disabled, True
    try:
        return bool(apprise.Apprise().add(url))
    finally:
        apprise_log.disabled = was_disabled


def apprise_secrets(url: str) -> list[str]:
    """What to redact of an Apprise URL: all of it, and its token-like pieces.

    Hostnames, ports and short pieces are left alone: they are rarely secret, and
    redacting them would garble unrelated lines.
    """
    secrets = [url]
    rest = url.split("://", 1)[1] if "://" in url else url
    secrets.append(rest)
    location, _, query = rest.partition("?")
    if query:
        secrets.append(query)
        secrets += [value for _, _, value in (p.partition("=") for p in query.split("&"))]
    for piece in re.split(r"[/@:]", location):
        if not _HOSTNAME.fullmatch(piece) and not piece.isdigit():
            secrets.append(piece)
    return [secret for secret in secrets if len(secret) >= _MIN_SECRET_PIECE]


AppriseUrl = Annotated[str, AfterValidator(check_apprise_url)]


def describe_apprise_url(index: int, url: str) -> str:
    """`apprise_urls[1] (slack://)`: how logs and check-config name a URL."""
    return f"apprise_urls[{index}] ({url_scheme(url)}://)"
