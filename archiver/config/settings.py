"""TOML configuration -> frozen, validated settings; the API token from env or files.

Every error names the file and the dotted key, and maps to exit 2.
The token is kept out of `Settings` so that no repr or dump can print it.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import tomllib
import typing
import zoneinfo
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from archiver.config.keys import parse_recipient, recipients_in_file
from archiver.config.messages import describe_validation_error
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


def _check_remote_path(path: str) -> str:
    if not path.startswith("/"):
        raise ValueError("must be an absolute path on the server")
    return path


@functools.cache
def _path_fields(model: type[BaseModel]) -> frozenset[str]:
    """The names of a section's fields that hold a local path."""
    return frozenset(
        name
        for name, field in model.model_fields.items()
        if field.annotation is Path or Path in typing.get_args(field.annotation)
    )


def _anchored(value: object, folder: Path) -> object:
    """`value` as a path under `folder` when it is a relative path string; else as it was."""
    if not isinstance(value, str | Path) or not str(value):
        return value
    path = Path(value).expanduser()
    return path if path.is_absolute() else folder / path


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
CronExpression = Annotated[str, AfterValidator(check_cron)]
StackUid = Annotated[str, AfterValidator(check_stack_uid)]
TimeZone = Annotated[str, AfterValidator(_check_timezone)]
DbType = Literal["mysql", "postgresql", "redis", "mongodb"]
# Strict: TOML has real integers and booleans, so `true` or "3000" where a
# number belongs is a mistake to report, not something to coerce.
Int = Annotated[int, Field(strict=True)]
Bool = Annotated[bool, Field(strict=True)]
PositiveInt = Annotated[int, Field(gt=0, strict=True)]
NonNegativeInt = Annotated[int, Field(ge=0, strict=True)]


# Validation context key: the folder relative paths in the config are read from.
CONFIG_FOLDER = "config_folder"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False, defer_build=True)

    @model_validator(mode="before")
    @classmethod
    def _paths_from_config_folder(cls, data: Any, info: ValidationInfo) -> Any:
        """A relative path key means relative to the config file's folder, not the cwd.

        Runs before the fields are validated, so validators that read a file
        (`recipients_file`) read the right one. `~` is the user's home, as in a shell.
        """
        folder = (info.context or {}).get(CONFIG_FOLDER)
        if folder is None or not isinstance(data, dict):
            return data
        path_keys = _path_fields(cls)
        return {
            key: _anchored(value, folder) if key in path_keys else value
            for key, value in data.items()
        }


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


def _check_keep_within(within: timedelta) -> timedelta:
    # restic counts keep-within in hours at the finest; a shorter one is almost surely
    # "6m" meant as six months (here: minutes), which would remove nearly everything.
    if timedelta(0) < within < timedelta(hours=1):
        raise ValueError(
            "must be at least 1h, or 0 to turn it off "
            "('m' means minutes: write months as days, e.g. \"180d\")"
        )
    return within


KeepWithin = Annotated[Duration, AfterValidator(_check_keep_within)]
_KEEP_RULES = {field.name for field in dataclasses.fields(RetentionPolicy)}


class RetentionOverride(_Section):
    """`[[stacks]] retention = {...}`: keep_* rules replacing the global ones key by key."""

    keep_last: NonNegativeInt = 0
    keep_hourly: NonNegativeInt = 0
    keep_daily: NonNegativeInt = 0
    keep_weekly: NonNegativeInt = 0
    keep_monthly: NonNegativeInt = 0
    keep_yearly: NonNegativeInt = 0
    keep_within: KeepWithin = timedelta(0)

    def policy(self) -> RetentionPolicy:
        """These rules as a policy for the engine (keep_within 0 means off)."""
        rules = self.model_dump(include=_KEEP_RULES)
        rules["keep_within"] = self.keep_within or None
        return RetentionPolicy(**rules)

    def merged_over(self, base: RetentionOverride | None) -> RetentionOverride:
        """`base` with the keys this override sets replaced, key by key."""
        if base is None:
            return self
        return base.model_copy(update={key: getattr(self, key) for key in self.model_fields_set})


class RetentionSettings(RetentionOverride):
    """`[retention]`: what prune keeps of each series; absent means keep everything."""

    # Prune after a pass without failures (daemon and --sync-now).
    after_pass: Bool = False

    @model_validator(mode="after")
    def _some_rule(self) -> RetentionSettings:
        if self.policy().is_empty():
            raise ValueError(
                "no keep_* rule is set: that would remove every backup, so it is refused "
                "(remove [retention] to keep everything)"
            )
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


class LocalStorageSettings(_Section):
    """`[storage] type = "local"`: a folder on this machine."""

    type: Literal["local"] = "local"
    path: Path = Path("/var/lib/c66-archiver/archive")


class S3StorageSettings(_Section):
    """`[storage] type = "s3"`: a bucket on AWS S3 or any S3-compatible service."""

    type: Literal["s3"]
    bucket: Annotated[str, Field(min_length=3, max_length=63)]
    prefix: str = ""
    region: str | None = None
    endpoint_url: str | None = None
    storage_class: str | None = None
    server_side_encryption: Literal["AES256", "aws:kms"] | None = None
    sse_kms_key_id: str | None = None
    # Credentials: the standard AWS environment variables, or these two keys.
    access_key_id: str | None = None
    secret_access_key_file: Path | None = None
    # Size of each multipart-upload part kept in memory while it uploads (5 MiB minimum).
    # 10,000 parts at most: 8 MiB parts carry objects up to 78 GiB; raise it for bigger.
    part_size: Annotated[int, Field(ge=5 * 1024 * 1024, le=512 * 1024 * 1024)] = 8 * 1024 * 1024
    max_concurrent_part_uploads: PositiveInt = 4
    addressing_style: Literal["auto", "path", "virtual"] = "auto"

    @model_validator(mode="after")
    def _consistent(self) -> S3StorageSettings:
        if (self.access_key_id is None) != (self.secret_access_key_file is None):
            raise ValueError("set access_key_id and secret_access_key_file together")
        if self.sse_kms_key_id and self.server_side_encryption != "aws:kms":
            raise ValueError('sse_kms_key_id needs server_side_encryption = "aws:kms"')
        if self.endpoint_url and not self.endpoint_url.startswith(("http://", "https://")):
            raise ValueError("endpoint_url must start with http:// or https://")
        return self


class SftpStorageSettings(_Section):
    """`[storage] type = "sftp"`: a folder on a server reached over SSH."""

    type: Literal["sftp"]
    host: Annotated[str, Field(min_length=1)]
    port: Annotated[int, Field(gt=0, lt=65536)] = 22
    username: Annotated[str, Field(min_length=1)]
    private_key_file: Path | None = None
    known_hosts_file: Path | None = None
    # Turning host key checks off exposes the archive to a man in the middle; logged loudly.
    insecure_skip_host_key_check: bool = False
    path: Annotated[str, AfterValidator(_check_remote_path)]
    connect_timeout: Duration = timedelta(seconds=15)
    # Writes sent and not yet answered, over every upload: pipelining, and its bound.
    max_concurrent_writes: PositiveInt = 4


_STORAGE_TYPES = ("local", "s3", "sftp")


def _storage_type(value: object) -> str:
    """The `type` key picks the backend; without it, local storage."""
    if isinstance(value, dict):
        return str(value.get("type", "local"))
    return str(getattr(value, "type", "local"))


StorageSettings = Annotated[
    Annotated[LocalStorageSettings, Tag("local")]
    | Annotated[S3StorageSettings, Tag("s3")]
    | Annotated[SftpStorageSettings, Tag("sftp")],
    Discriminator(
        _storage_type,
        custom_error_type="storage_type",
        custom_error_message='type must be one of "local", "s3", "sftp"',
    ),
]


class TransferSettings(_Section):
    """`[transfer]`: how downloads run."""

    max_concurrent_downloads: PositiveInt = 4
    chunk_size: Annotated[int, Field(ge=64 * 1024, le=64 * 1024 * 1024, strict=True)] = 1024 * 1024
    connect_timeout: Duration = timedelta(seconds=15)
    read_timeout: Duration = timedelta(seconds=60)
    # Failures in a row *without progress* before a file's download gives up: an attempt
    # that brought new bytes resets the count, so a download that keeps advancing goes on.
    max_retries: NonNegativeInt = 5
    # ...but once a file's download has broken off, it must finish within this long.
    max_retry_time: Duration = timedelta(hours=6)
    # Check each download's MD5 against S3's ETag (when the ETag is a plain MD5): the
    # only end-to-end check against the source, and the costliest hash per byte.
    verify_etag: Bool = True
    # On SIGTERM, transfers in flight get this long to finish before they are abandoned.
    grace_period: Duration = timedelta(seconds=30)


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


class EncryptionSettings(_Section):
    """`[encryption]`: store backups as age v1 files for these recipients."""

    # age X25519 public keys (age1...) and OpenSSH ssh-ed25519 / ssh-rsa public keys.
    recipients: tuple[str, ...] = ()
    # A file of recipients, one a line, as `age -R` reads it.
    recipients_file: Path | None = None
    # The private key for `restore` and `verify --deep` (never needed to archive).
    identity_file: Path | None = None
    # What encrypts: "auto" = the `age` binary when one on PATH works, else pyrage in
    # process (about half the speed on two cores: it holds the GIL); "age" = the binary,
    # or the pass refuses to start; "pyrage" = always in process. Same age v1 file.
    engine: Literal["auto", "age", "pyrage"] = "auto"

    @model_validator(mode="after")
    def _readable_recipients(self) -> EncryptionSettings:
        for index, text in enumerate(self.recipients):
            try:
                parse_recipient(text)
            except ValueError as error:
                raise ValueError(f"recipients[{index}]: {error}") from None
        for index, text in enumerate(self.file_recipients()):
            try:
                parse_recipient(text)
            except ValueError as error:
                raise ValueError(f"recipients_file line {index + 1}: {error}") from None
        if not self.all_recipients():
            raise ValueError("no recipients: set recipients or recipients_file")
        return self

    def file_recipients(self) -> list[str]:
        """The recipients in `recipients_file` (none without one)."""
        if self.recipients_file is None:
            return []
        try:
            return recipients_in_file(self.recipients_file)
        except OSError as error:
            raise ValueError(
                f"recipients_file {self.recipients_file}: cannot read ({error.strerror})"
            ) from None

    def all_recipients(self) -> list[str]:
        """Every public recipient, from the list and the file, without repeats."""
        return list(dict.fromkeys([*self.recipients, *self.file_recipients()]))


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
    storage: StorageSettings = Field(default_factory=LocalStorageSettings)
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


def policy_for(settings: Settings, stack_uid: str) -> RetentionPolicy | None:
    """The retention policy of a stack's series; None means keep everything."""
    override = next((s.retention for s in settings.stacks if s.uid == stack_uid), None)
    if override is not None:
        return override.merged_over(settings.retention).policy()
    return settings.retention.policy() if settings.retention else None


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
        raise ConfigError(_describe_validation_error(where, error)) from None
    _check_extras(settings, where)
    return settings.model_copy(update={"source": source})


def _check_extras(settings: Settings, where: str) -> None:
    """Every extra the config needs is installed: asked before anything is attempted,
    and without importing the backend or Apprise."""
    kind = settings.storage.type
    missing = missing_storage_modules(kind)
    if missing:
        raise ConfigError(f"{where}: [storage] {missing_extra_message(kind, missing)}")
    missing = missing_modules(NOTIFY_EXTRA) if settings.notify.apprise_urls else []
    if missing:
        message = needs_extra_message("apprise_urls", NOTIFY_EXTRA, missing)
        raise ConfigError(f"{where}: [notify] {message}")


def _describe_validation_error(where: str, error: ValidationError) -> str:
    return describe_validation_error(where, error, root=Settings, dotted_key=_dotted_key)


def _dotted_key(location: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    previous: int | str | None = None
    for item in location:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif previous == "storage" and item in _STORAGE_TYPES:
            pass  # the discriminator tag is not a key the user wrote
        else:
            parts.append(("." if parts else "") + item)
        previous = item
    return "".join(parts)


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
