"""TOML configuration -> frozen, validated settings; the API token from env or files.

Every error names the file and the dotted key, and maps to exit 2.
The token is kept out of `Settings` so that no repr or dump can print it.
"""

from __future__ import annotations

import functools
import os
import re
import tomllib
import zoneinfo
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from archiver.config.destinations import (
    UNION_TAGS,
    LocalDestination,
    StorageSettings,
    as_destination_list,
    check_destinations,
)
from archiver.config.destinations import S3Destination as S3Destination
from archiver.config.destinations import SftpDestination as SftpDestination
from archiver.config.messages import describe_validation_error
from archiver.config.policies import (
    DestinationRetention as DestinationRetention,
)
from archiver.config.policies import (
    EncryptionSettings,
    RetentionOverride,
    RetentionSettings,
)
from archiver.config.transfer import TransferSettings as TransferSettings
from archiver.config.values import CONFIG_FOLDER, Bool, Duration, Int, NonNegativeInt, PositiveInt
from archiver.config.values import Section as _Section
from archiver.config.watch import AppriseUrl, StackWatchSettings, WatchSettings
from archiver.core.errors import ConfigError
from archiver.core.extras import (
    NOTIFY_EXTRA,
    missing_extra_message,
    missing_modules,
    missing_storage_modules,
    needs_extra_message,
)
from archiver.core.units import parse_duration as parse_duration  # re-exported: cli, tests
from archiver.model.retention import RetentionPolicy

DEFAULT_CONFIG_PATH = Path("/etc/c66-archiver/config.toml")
CONFIG_ENV = "C66_ARCHIVER_CONFIG"
TOKEN_ENV = "C66_API_TOKEN"  # noqa: S105 -- the name of the variable, not a token
CREDENTIAL_NAME = "api-token"
DB_TYPES = ("mysql", "postgresql", "redis", "mongodb")

# The crontab shorthands (man 5 crontab), as their five fields; @reboot has no meaning here.
CRON_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


def expand_cron_alias(expression: str) -> str:
    """`@daily` -> `0 0 * * *` (any crontab shorthand); any other line as it is."""
    return CRON_ALIASES.get(expression.strip().lower(), expression)


def check_cron(expression: str) -> str:
    """The cron line (a shorthand such as @daily spelt out), or ValueError saying why it is
    not one (5 fields, crontab rules)."""
    # Only a config with a cron line pays for APScheduler's import (2 MiB resident).
    from apscheduler.triggers.cron import CronTrigger

    expression = expand_cron_alias(expression)
    if expression.startswith("@"):
        raise ValueError(
            f"{expression!r} is not a cron expression: the shorthands are "
            + ", ".join(CRON_ALIASES)
        )
    try:
        CronTrigger.from_crontab(expression, timezone="UTC")
    except ValueError as error:
        raise ValueError(f"{expression!r} is not a cron expression: {error}") from None
    return expression


def _check_timezone(name: str) -> str:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name!r} is not a time zone (e.g. 'UTC', 'Europe/Berlin')") from None
    return name


def check_stack_uid(uid: str) -> str:
    """The stack uid, or ValueError: letters, digits, - and _ only."""
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,128}", uid):
        raise ValueError(f"{uid!r} is not a stack uid (letters, digits, '-' and '_')")
    return uid


CronExpression = Annotated[str, AfterValidator(check_cron)]
StackUid = Annotated[str, AfterValidator(check_stack_uid)]
TimeZone = Annotated[str, AfterValidator(_check_timezone)]
DbType = Literal["mysql", "postgresql", "redis", "mongodb"]
class ApiSettings(_Section):
    """`[api]`: where the Cloud 66 API is and how hard we may use it."""

    base_url: str = "https://app.cloud66.com/api/3"
    token_file: Path | None = None
    account_id: Int | None = None
    requests_per_hour: PositiveInt = 3000
    max_concurrent_requests: PositiveInt = 4
    timeout: Duration = timedelta(seconds=30)
    max_retries: NonNegativeInt = 5
    # Longest we wait on one throttled answer before giving up for this pass.
    max_throttle_wait: Duration = timedelta(minutes=5)

    @model_validator(mode="after")
    def _http_url(self) -> ApiSettings:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        return self


class StackSettings(_Section):
    """`[[stacks]]`: one stack to archive."""

    uid: StackUid
    db_types: tuple[DbType, ...] | None = None
    group: Int | str | None = None
    # keep_* rules for this stack's series, key by key over [retention].
    retention: RetentionOverride | None = None
    # The watch's thresholds for this stack, over [watch].
    watch: StackWatchSettings | None = None


class DiscoverSettings(_Section):
    """`[discover]`: archive every stack the token can see."""

    enabled: Bool = False
    db_types: tuple[DbType, ...] | None = None
    exclude: tuple[StackUid, ...] = ()


class ScheduleSettings(_Section):
    """`[schedule]`: when the daemon runs a pass."""

    interval: Duration | None = None
    cron: CronExpression | None = None
    jitter: Duration = timedelta(0)
    timezone: TimeZone = "UTC"
    # A pass that could not start on time still runs if it is this late at most.
    misfire_grace_time: Duration = timedelta(minutes=10)

    @model_validator(mode="after")
    def _one_trigger(self) -> ScheduleSettings:
        if self.interval is not None and self.cron is not None:
            raise ValueError("set either interval or cron, not both")
        if self.interval is not None and self.interval.total_seconds() < 1:
            raise ValueError("interval must be at least 1s")
        return self

    @property
    def effective_interval(self) -> timedelta | None:
        """The interval in force: the configured one, or 1h when neither is set."""
        if self.cron is not None:
            return self.interval
        return self.interval or timedelta(hours=1)


class StateSettings(_Section):
    """`[state]`: where the record of archived backups lives."""

    path: Path = Path("/var/lib/c66-archiver/state")


class LogSettings(_Section):
    """`[log]`: how events are written to stderr."""

    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


def _check_listen(listen: str) -> str:
    host, separator, port = listen.rpartition(":")
    # Port 0 asks the system for a free port (tests); the daemon logs the one it got.
    if not separator or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"{listen!r} is not host:port, e.g. \"127.0.0.1:9466\"")
    return listen


def _check_http_url(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return url


HttpUrl = Annotated[str, AfterValidator(_check_http_url)]


class HttpSettings(_Section):
    """`[http]`: opt-in /metrics, /livez, /readyz and a status page on the daemon's own loop."""

    listen: Annotated[str, AfterValidator(_check_listen)] = "127.0.0.1:9466"
    # /readyz and `health` fail when the last good pass is older. Default: 2x the
    # schedule's interval plus its jitter.
    max_age: Duration | None = None
    # The HTML status page at `/`; /metrics, /livez and /readyz are always served.
    page: Bool = True


class NotifySettings(_Section):
    """`[notify]`: dead-man's-switch pings, a webhook and Apprise URLs: passes and findings."""

    healthchecks_url: HttpUrl | None = None
    webhook_url: HttpUrl | None = None
    webhook_on_success: Bool = False
    timeout: Duration = timedelta(seconds=10)
    retries: NonNegativeInt = 3
    # Any Apprise URL (Slack, Discord, Telegram, e-mail, ntfy, ...): findings and failures.
    apprise_urls: tuple[AppriseUrl, ...] = ()


class Settings(_Section):
    """The whole configuration, validated and frozen."""

    api: ApiSettings = ApiSettings()
    stacks: tuple[StackSettings, ...] = ()
    discover: DiscoverSettings = DiscoverSettings()
    schedule: ScheduleSettings = ScheduleSettings()
    # [storage] (one table, named "default") or [[storage]] (several, each named).
    storage: Annotated[tuple[StorageSettings, ...], BeforeValidator(as_destination_list)] = Field(
        default_factory=lambda: (LocalDestination(),)
    )
    transfer: TransferSettings = TransferSettings()
    state: StateSettings = StateSettings()
    log: LogSettings = LogSettings()
    http: HttpSettings | None = None
    notify: NotifySettings = NotifySettings()
    encryption: EncryptionSettings | None = None
    retention: RetentionSettings | None = None
    watch: WatchSettings = WatchSettings()
    # Where this configuration came from, for error messages.
    source: Path | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _something_to_archive(self) -> Settings:
        if not self.stacks and not self.discover.enabled:
            raise ValueError("no stacks: add a [[stacks]] table or set [discover] enabled = true")
        uids = [stack.uid for stack in self.stacks]
        duplicates = sorted({uid for uid in uids if uids.count(uid) > 1})
        if duplicates:
            raise ValueError(f"stack listed twice in [[stacks]]: {', '.join(duplicates)}")
        return self

    @field_validator("storage")
    @classmethod
    def _destinations(cls, value: tuple[StorageSettings, ...]) -> tuple[StorageSettings, ...]:
        check_destinations(value)
        return value

    @model_validator(mode="after")
    def _no_empty_destination_policy(self) -> Settings:
        overrides = [stack.retention for stack in self.stacks if stack.retention is not None]
        for index, destination in enumerate(self.storage):
            if destination.retention is None:
                continue
            for override in [None, *overrides]:
                base = override.merged_over(self.retention) if override else self.retention
                if destination.retention.merged_over(base).policy().is_empty():
                    raise ValueError(
                        f"storage[{index}].retention: no keep_* rule is left once merged over "
                        "[retention] and the stacks' overrides: that would remove every backup "
                        f"in {destination.name!r}, so it is refused"
                    )
        return self

    @model_validator(mode="after")
    def _no_empty_stack_policy(self) -> Settings:
        for index, stack in enumerate(self.stacks):
            if stack.retention is None:
                continue
            if stack.retention.merged_over(self.retention).policy().is_empty():
                merged = " once merged over [retention]" if self.retention else ""
                raise ValueError(
                    f"stacks[{index}].retention: no keep_* rule is left{merged}: that would "
                    "remove every backup of the stack, so it is refused"
                )
        return self


def policy_for(
    settings: Settings, stack_uid: str, destination: StorageSettings | None = None
) -> RetentionPolicy | None:
    """The retention policy of a stack's series (in a destination); None keeps everything.

    Key by key: [retention], then the stack's override, then the destination's.
    """
    merged: RetentionOverride | None = settings.retention
    override = next((s.retention for s in settings.stacks if s.uid == stack_uid), None)
    for layer in (override, destination.retention if destination else None):
        if layer is not None:
            merged = layer.merged_over(merged)
    return merged.policy() if merged is not None else None


def prunes_after_pass(settings: Settings, destination: StorageSettings) -> bool:
    """Whether a good pass ends by pruning this destination (its after_pass, else [retention]'s)."""
    own = destination.retention.after_pass if destination.retention else None
    if own is not None:
        return own
    return settings.retention.after_pass if settings.retention else False


def encryption_for(settings: Settings, destination: StorageSettings) -> EncryptionSettings | None:
    """The encryption of one destination: its own, none (false), or [encryption]."""
    if destination.encryption is False:
        return None
    return destination.encryption or settings.encryption


def destination_named(settings: Settings, name: str) -> StorageSettings:
    """The destination called `name`; a ConfigError (exit 2) listing the names otherwise."""
    for destination in settings.storage:
        if destination.name == name:
            return destination
    names = ", ".join(repr(destination.name) for destination in settings.storage)
    raise ConfigError(f"--storage {name!r}: no such destination (configured: {names})")


def resolve_config_path(explicit: str | os.PathLike[str] | None) -> Path:
    """`--config`, else `$C66_ARCHIVER_CONFIG`, else /etc/c66-archiver/config.toml."""
    if explicit:
        return Path(explicit)
    from_env = os.environ.get(CONFIG_ENV)
    return Path(from_env) if from_env else DEFAULT_CONFIG_PATH


def load_settings(path: Path) -> Settings:
    """Read and validate a TOML file; every problem is a ConfigError naming file and key."""
    try:
        with path.open("rb") as config_file:
            document = tomllib.load(config_file)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except PermissionError:
        raise ConfigError(f"{path}: permission denied reading the config file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a config file") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    return settings_from_dict(document, source=path)


def settings_from_dict(document: dict[str, Any], *, source: Path | None = None) -> Settings:
    """Validate an already parsed document (used by `load_settings` and the demo)."""
    where = str(source) if source else "<config>"
    context = {CONFIG_FOLDER: source.absolute().parent} if source else None
    try:
        settings = Settings.model_validate(document, context=context)
    except ValidationError as error:
        one_table = isinstance(document.get("storage"), dict)
        raise ConfigError(_describe_validation_error(where, error, one_table)) from None
    _check_extras(settings, where)
    return settings.model_copy(update={"source": source})


def _check_extras(settings: Settings, where: str) -> None:
    """Every extra the config needs is installed: asked before anything is attempted,
    and without importing a backend or Apprise."""
    for index, destination in enumerate(settings.storage):
        missing = missing_storage_modules(destination.type)
        if missing:
            table = "[storage]" if len(settings.storage) == 1 else f"storage[{index}]"
            message = missing_extra_message(destination.type, missing)
            raise ConfigError(f"{where}: {table} {message}")
    missing = missing_modules(NOTIFY_EXTRA) if settings.notify.apprise_urls else []
    if missing:
        message = needs_extra_message("apprise_urls", NOTIFY_EXTRA, missing)
        raise ConfigError(f"{where}: [notify] {message}")


def _describe_validation_error(where: str, error: ValidationError, one_storage: bool) -> str:
    dotted_key = functools.partial(_dotted_key, one_storage=one_storage)
    return describe_validation_error(where, error, root=Settings, dotted_key=dotted_key)


def _dotted_key(location: tuple[int | str, ...], one_storage: bool = False) -> str:
    parts: list[str] = []
    keys = [item for item in location if isinstance(item, str)]
    for position, item in enumerate(location):
        if isinstance(item, int):
            if not (position == 1 and location[0] == "storage" and one_storage):
                parts.append(f"[{item}]")  # ([storage] is one table: no index to show)
        elif position and item in UNION_TAGS.get(_last_key(keys, item), set()):
            pass  # a tagged union's tag is not a key the user wrote
        else:
            parts.append(("." if parts else "") + item)
    return "".join(parts)


def _last_key(keys: list[str], item: str) -> str:
    """The key before `item` among the string parts of an error location."""
    index = keys.index(item)
    return keys[index - 1] if index else ""


def load_token(settings: Settings, environ: dict[str, str] | None = None) -> str:
    """The API token: $C66_API_TOKEN wins, then api.token_file, then the systemd credential."""
    env = os.environ if environ is None else environ
    token = env.get(TOKEN_ENV, "").strip()
    if token:
        return token
    where = settings.source or "<config>"
    if settings.api.token_file is not None:
        return _read_token_file(settings.api.token_file, f"{where}: api.token_file")
    credentials = env.get("CREDENTIALS_DIRECTORY")
    if credentials:
        credential = Path(credentials) / CREDENTIAL_NAME
        if credential.exists():
            return _read_token_file(credential, "systemd credential")
    raise ConfigError(
        f"{where}: no API token: set {TOKEN_ENV}, or api.token_file, "
        f"or a systemd credential named {CREDENTIAL_NAME}"
    )


def _read_token_file(path: Path, described_as: str) -> str:
    try:
        token = path.read_text(encoding="utf-8").rstrip()
    except OSError as error:
        raise ConfigError(f"{described_as}: cannot read {path}: {error.strerror}") from None
    if not token:
        raise ConfigError(f"{described_as}: {path} is empty")
    return token
