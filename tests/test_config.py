"""Configuration: TOML -> validated settings, errors naming file and key, token sources."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from archiver.config.settings import (
    CONFIG_ENV,
    DEFAULT_CONFIG_PATH,
    TOKEN_ENV,
    DestinationRetention,
    LocalDestination,
    RetentionSettings,
    S3Destination,
    Settings,
    SftpDestination,
    load_settings,
    load_token,
    parse_duration,
    resolve_config_path,
)
from archiver.config.storage import ObjectLockSettings
from archiver.core.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.toml"
UID = "5999b763474b0eafa5fafb64bff0ba80"
MINIMAL = f'[[stacks]]\nuid = "{UID}"\n'


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def config_error(tmp_path: Path, text: str) -> str:
    """Load `text` as a config file, expect a ConfigError, return its message."""
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    message = str(caught.value)
    assert str(path) in message
    return message


# -- validation ---------------------------------------------------------------


def test_minimal_config_gets_defaults(tmp_path: Path) -> None:
    """One stack is enough; every other key takes its documented default."""
    settings = load_settings(write_config(tmp_path, MINIMAL))
    assert settings.stacks[0].uid == UID
    assert settings.api.base_url == "https://app.cloud66.com/api/3"
    assert settings.api.requests_per_hour == 3000
    assert settings.schedule.effective_interval == timedelta(hours=1)
    assert settings.storage == (LocalDestination(),)
    assert settings.storage[0].name == "default"
    assert settings.source == write_config(tmp_path, MINIMAL)


def test_wide_transfer_defaults_and_sizes_with_binary_units(tmp_path: Path) -> None:
    """The [transfer] defaults of the contract; sizes as byte counts or with KiB/MiB/GiB."""
    defaults = load_settings(write_config(tmp_path, MINIMAL)).transfer
    assert (defaults.streams_per_file, defaults.segment_size) == (4, 16 * 1024 * 1024)
    assert (defaults.in_flight, defaults.bandwidth_limit) == (32 * 1024 * 1024, 0)
    text = MINIMAL + (
        '[transfer]\nsegment_size = "1.5 MiB"\nin_flight = 67108864\n'
        'bandwidth_limit = "50MiB/s"\nstreams_per_file = 8\n'
    )
    transfer = load_settings(write_config(tmp_path, text)).transfer
    assert transfer.segment_size == 3 * 512 * 1024
    assert transfer.in_flight == 64 * 1024 * 1024
    assert transfer.bandwidth_limit == 50 * 1024 * 1024
    assert transfer.streams_per_file == 8


def test_a_size_in_decimal_units_is_refused_with_the_accepted_form(tmp_path: Path) -> None:
    """`50MB` could mean MB or MiB: refused, naming the key and the binary units."""
    message = config_error(tmp_path, MINIMAL + '[transfer]\nbandwidth_limit = "50MB"\n')
    assert "transfer.bandwidth_limit: '50MB' is not a size" in message
    assert "KiB, MiB, GiB" in message


def test_unknown_top_level_key_is_named(tmp_path: Path) -> None:
    """An unknown top-level key is an error naming the file and the key."""
    message = config_error(tmp_path, MINIMAL + "bogus = 1\n")
    assert "bogus: unknown key" in message


def test_unknown_section_is_named(tmp_path: Path) -> None:
    """An unknown section is an error naming it."""
    message = config_error(tmp_path, MINIMAL + "[notify_me]\nx = 1\n")
    assert "notify_me: unknown key" in message


def test_unknown_nested_key_has_dotted_path(tmp_path: Path) -> None:
    """An unknown key inside an array of tables is named with its index: stacks[0].db_type."""
    message = config_error(tmp_path, MINIMAL + 'db_type = ["mysql"]\n')
    assert "stacks[0].db_type: unknown key" in message


def test_unknown_storage_key_hides_the_discriminator(tmp_path: Path) -> None:
    """In [storage] the key is storage.<key>, without pydantic's internal tag."""
    message = config_error(tmp_path, MINIMAL + '[storage]\ntype = "local"\npth = "/x"\n')
    assert "storage.pth: unknown key" in message


@pytest.mark.parametrize(
    ("snippet", "key"),
    [
        ('[api]\nrequests_per_hour = "lots"\n', "api.requests_per_hour"),
        ("[api]\nrequests_per_hour = 0\n", "api.requests_per_hour"),
        ("[api]\nbase_url = 5\n", "api.base_url"),
        ('[api]\nbase_url = "ftp://x"\n', "api"),
        ("[transfer]\nmax_retries = true\n", "transfer.max_retries"),
        ("[transfer]\nchunk_size = 1\n", "transfer.chunk_size"),
        ('[transfer]\nsegment_size = "16MB"\n', "transfer.segment_size"),
        ('[transfer]\nsegment_size = "1KiB"\n', "transfer.segment_size"),
        ("[transfer]\nstreams_per_file = 0\n", "transfer.streams_per_file"),
        ('[transfer]\nin_flight = "1MiB"\n', "transfer.in_flight"),
        ("[transfer]\nin_flight = true\n", "transfer.in_flight"),
        ('[transfer]\nbandwidth_limit = "fast"\n', "transfer.bandwidth_limit"),
        ("[transfer]\nbandwidth_limit = 100\n", "transfer.bandwidth_limit"),
        ('[log]\nlevel = "loud"\n', "log.level"),
        ('[discover]\nenabled = "yes"\n', "discover.enabled"),
        ('[schedule]\ntimezone = "Mars/Olympus_Mons"\n', "schedule.timezone"),
    ],
)
def test_wrong_type_or_value_names_the_key(tmp_path: Path, snippet: str, key: str) -> None:
    """A value of the wrong type or out of range is an error naming its dotted key."""
    message = config_error(tmp_path, MINIMAL + snippet)
    assert f": {key}: " in message


def test_wrong_type_in_stack_names_index(tmp_path: Path) -> None:
    """A bad db type in the second stack names stacks[1].db_types."""
    text = MINIMAL + '[[stacks]]\nuid = "other"\ndb_types = ["oracle"]\n'
    assert "stacks[1].db_types[0]" in config_error(tmp_path, text)


def test_stack_without_uid_is_missing_key(tmp_path: Path) -> None:
    """A [[stacks]] table without uid says the required key is missing."""
    message = config_error(tmp_path, '[[stacks]]\ndb_types = ["mysql"]\n')
    assert "stacks[0].uid: required key is missing" in message


def test_stack_uid_with_slash_is_rejected(tmp_path: Path) -> None:
    """A uid that could escape a folder name is rejected."""
    assert "stacks[0].uid" in config_error(tmp_path, '[[stacks]]\nuid = "../etc"\n')


def test_duplicate_stack_is_rejected(tmp_path: Path) -> None:
    """The same stack listed twice is an error naming the uid."""
    assert UID in config_error(tmp_path, MINIMAL + MINIMAL)


def test_bad_duration_names_key(tmp_path: Path) -> None:
    """A duration that does not parse names its key and shows the accepted form."""
    message = config_error(tmp_path, MINIMAL + '[schedule]\ninterval = "5 minutes"\n')
    assert "schedule.interval" in message
    assert "'30s'" in message


def test_bad_cron_names_key(tmp_path: Path) -> None:
    """A cron line with the wrong number of fields is an error naming schedule.cron."""
    message = config_error(tmp_path, MINIMAL + '[schedule]\ncron = "* * *"\n')
    assert "schedule.cron" in message
    assert "not a cron expression" in message


def test_interval_and_cron_together_are_rejected(tmp_path: Path) -> None:
    """interval and cron exclude each other."""
    text = MINIMAL + '[schedule]\ninterval = "1h"\ncron = "15 * * * *"\n'
    assert "either interval or cron" in config_error(tmp_path, text)


def test_cron_alone_has_no_interval(tmp_path: Path) -> None:
    """With cron set, there is no implied interval."""
    settings = load_settings(write_config(tmp_path, MINIMAL + '[schedule]\ncron = "15 * * * *"\n'))
    assert settings.schedule.cron == "15 * * * *"
    assert settings.schedule.effective_interval is None


def test_no_stacks_and_no_discover_is_rejected(tmp_path: Path) -> None:
    """A config with nothing to archive is an error that says how to fix it."""
    message = config_error(tmp_path, "[api]\nrequests_per_hour = 100\n")
    assert "[[stacks]]" in message
    assert "[discover]" in message


def test_discover_alone_is_enough(tmp_path: Path) -> None:
    """[discover] enabled = true stands in for [[stacks]]."""
    settings = load_settings(write_config(tmp_path, "[discover]\nenabled = true\n"))
    assert settings.discover.enabled
    assert settings.stacks == ()


def test_invalid_toml_names_file(tmp_path: Path) -> None:
    """A syntax error is a ConfigError naming the file, not a traceback."""
    assert "not valid TOML" in config_error(tmp_path, "[api\n")


def test_missing_file_is_config_error(tmp_path: Path) -> None:
    """A config path that does not exist is a ConfigError naming it."""
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=re.escape(str(missing))):
        load_settings(missing)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("5m", 300), ("1h30m", 5400), ("1d", 86400), ("250ms", 0.25), (90, 90)],
)
def test_parse_duration(text: str | int, seconds: float) -> None:
    """Durations in the documented forms parse to the right number of seconds."""
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "5", "5 parsecs", "-5s", "1h-", True])
def test_parse_duration_rejects(text: object) -> None:
    """Bare numbers in strings, unknown units, negatives and booleans are not durations."""
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_full_example_loads() -> None:
    """config.example.toml is a valid configuration."""
    settings = load_settings(EXAMPLE)
    assert len(settings.stacks) == 2
    assert settings.schedule.interval == timedelta(hours=1)
    assert settings.transfer.chunk_size == 1024 * 1024


def _example_sections() -> dict[str, str]:
    """The example's text per section name; commented-out sections count."""
    sections: dict[str, str] = {}
    current = ""
    for line in EXAMPLE.read_text(encoding="utf-8").splitlines():
        header = re.fullmatch(r"#?\s*\[\[?(\w+)\]\]?\s*(#.*)?", line.strip())
        if header:
            current = header.group(1)
        sections[current] = sections.get(current, "") + line + "\n"
    return sections


def _section_models() -> dict[str, type[BaseModel]]:
    """Every section model of Settings, by its key (storage: see `_storage_models`)."""
    models: dict[str, type[BaseModel]] = {"storage": LocalDestination}
    for name, field in Settings.model_fields.items():
        annotation: Any = field.annotation
        # tuple[StackSettings, ...] for [[stacks]]; the model itself elsewhere.
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        for candidate in candidates:
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                models.setdefault(name, candidate)
    return models


def test_example_documents_every_key() -> None:
    """Every key of every Settings section appears in its section of config.example.toml."""
    sections = _example_sections()
    missing = []
    for section, model in _section_models().items():
        text = sections.get(section, "")
        if not text:
            missing.append(f"[{section}]")
        for key, field in model.model_fields.items():
            if field.exclude:
                continue
            if not re.search(rf"^#?\s*{key}\s*=", text, re.MULTILINE):
                missing.append(f"{section}.{key}")
    assert not missing, f"config.example.toml does not document: {missing}"


def test_example_documents_every_storage_key() -> None:
    """Every key of every storage type, of object_lock and the one key a destination's
    retention adds to the keep_* rules is in the storage part of config.example.toml."""
    text = _example_sections()["storage"]
    assert set(DestinationRetention.model_fields) - set(RetentionSettings.model_fields) == set()
    models = (LocalDestination, S3Destination, SftpDestination, ObjectLockSettings)
    missing = [
        f"{model.__name__}.{key}"
        for model in models
        for key in model.model_fields
        if not re.search(rf"^#?\s*(#\s*)?{key}\s*=|[{{,]\s*{key}\s*=", text, re.MULTILINE)
    ]
    assert not missing, f"config.example.toml does not document: {missing}"


def test_every_section_is_in_the_example() -> None:
    """Each non-excluded top-level field of Settings is a section the example covers."""
    expected = {name for name, field in Settings.model_fields.items() if not field.exclude}
    assert expected <= set(_section_models())


# -- token --------------------------------------------------------------------


def settings_with_token_file(tmp_path: Path, token_file: Path | None) -> Settings:
    text = MINIMAL if token_file is None else f'[api]\ntoken_file = "{token_file}"\n' + MINIMAL
    return load_settings(write_config(tmp_path, text))


def test_env_token_wins_over_file_and_credential(tmp_path: Path) -> None:
    """C66_API_TOKEN beats api.token_file and the systemd credential."""
    (tmp_path / "file-token").write_text("from-file\n")
    (tmp_path / "api-token").write_text("from-credential\n")
    settings = settings_with_token_file(tmp_path, tmp_path / "file-token")
    environ = {TOKEN_ENV: "from-env", "CREDENTIALS_DIRECTORY": str(tmp_path)}
    assert load_token(settings, environ) == "from-env"


def test_token_file_wins_over_credential(tmp_path: Path) -> None:
    """api.token_file beats $CREDENTIALS_DIRECTORY/api-token."""
    (tmp_path / "file-token").write_text("from-file\n")
    (tmp_path / "api-token").write_text("from-credential\n")
    settings = settings_with_token_file(tmp_path, tmp_path / "file-token")
    assert load_token(settings, {"CREDENTIALS_DIRECTORY": str(tmp_path)}) == "from-file"


def test_credential_used_last(tmp_path: Path) -> None:
    """With no env and no token_file, the systemd credential is read."""
    (tmp_path / "api-token").write_text("from-credential\n")
    settings = settings_with_token_file(tmp_path, None)
    assert load_token(settings, {"CREDENTIALS_DIRECTORY": str(tmp_path)}) == "from-credential"


def test_blank_env_token_falls_through(tmp_path: Path) -> None:
    """A C66_API_TOKEN of only whitespace counts as unset."""
    (tmp_path / "file-token").write_text("from-file")
    settings = settings_with_token_file(tmp_path, tmp_path / "file-token")
    assert load_token(settings, {TOKEN_ENV: "  \n"}) == "from-file"


def test_token_whitespace_is_stripped(tmp_path: Path) -> None:
    """Trailing newlines and spaces around a token are removed, from env and file."""
    (tmp_path / "file-token").write_text("abc123 \r\n\n")
    settings = settings_with_token_file(tmp_path, tmp_path / "file-token")
    assert load_token(settings, {}) == "abc123"
    assert load_token(settings, {TOKEN_ENV: " xyz\n"}) == "xyz"


def test_empty_token_file_is_error(tmp_path: Path) -> None:
    """An empty token file is a ConfigError naming the key and the file."""
    (tmp_path / "file-token").write_text("\n")
    settings = settings_with_token_file(tmp_path, tmp_path / "file-token")
    with pytest.raises(ConfigError, match=r"api\.token_file.*is empty"):
        load_token(settings, {})


def test_unreadable_token_file_is_error(tmp_path: Path) -> None:
    """A token_file that does not exist is a ConfigError, not an OSError."""
    settings = settings_with_token_file(tmp_path, tmp_path / "missing")
    with pytest.raises(ConfigError, match="cannot read"):
        load_token(settings, {})


def test_missing_token_names_all_sources(tmp_path: Path) -> None:
    """With no token anywhere, the error names the env var, token_file and the credential."""
    settings = settings_with_token_file(tmp_path, None)
    with pytest.raises(ConfigError) as caught:
        load_token(settings, {"CREDENTIALS_DIRECTORY": str(tmp_path)})
    message = str(caught.value)
    assert TOKEN_ENV in message
    assert "api.token_file" in message
    assert "api-token" in message


def test_settings_repr_never_holds_token(tmp_path: Path) -> None:
    """The token is not part of Settings: no repr or dump can print it."""
    token = "s3cr3t-token-value"
    (tmp_path / "file-token").write_text(token)
    settings = settings_with_token_file(tmp_path, tmp_path / "file-token")
    assert load_token(settings, {}) == token
    assert token not in repr(settings)
    assert token not in str(settings.model_dump())


# -- config path --------------------------------------------------------------


def test_explicit_config_path_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    """--config beats $C66_ARCHIVER_CONFIG."""
    monkeypatch.setenv(CONFIG_ENV, "/from/env.toml")
    assert resolve_config_path("/from/flag.toml") == Path("/from/flag.toml")


def test_env_config_path_beats_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """$C66_ARCHIVER_CONFIG is used when --config is absent."""
    monkeypatch.setenv(CONFIG_ENV, "/from/env.toml")
    assert resolve_config_path(None) == Path("/from/env.toml")


def test_default_config_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without flag or env, the path is /etc/c66-archiver/config.toml."""
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    assert resolve_config_path(None) == DEFAULT_CONFIG_PATH == Path("/etc/c66-archiver/config.toml")
