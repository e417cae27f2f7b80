"""Several destinations in the config: names, what counts as one place, per-destination keys."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from archiver.config.settings import (
    destination_named,
    encryption_for,
    load_settings,
    policy_for,
    prunes_after_pass,
)
from archiver.core.errors import ConfigError

UID = "5999b763474b0eafa5fafb64bff0ba80"
STACK = f'[[stacks]]\nuid = "{UID}"\nretention = {{ keep_daily = 9 }}\n'
AGE = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"


def _load(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "config.toml"
    path.write_text(STACK + text, encoding="utf-8")
    return load_settings(path)


def _error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, text)
    message = str(caught.value)
    assert str(tmp_path / "config.toml") in message
    return message


def _local(name: str, path: Path | str, extra: str = "") -> str:
    return f'[[storage]]\nname = "{name}"\ntype = "local"\npath = "{path}"\n{extra}'


def _s3(name: str, bucket: str, prefix: str = "", extra: str = "") -> str:
    table = f'[[storage]]\nname = "{name}"\ntype = "s3"\nbucket = "{bucket}"\n'
    return f'{table}prefix = "{prefix}"\n{extra}'


def _sftp(name: str, path: str, host: str = "backup.example.com", port: int = 22) -> str:
    return (f'[[storage]]\nname = "{name}"\ntype = "sftp"\nhost = "{host}"\nport = {port}\n'
            f'username = "u"\npath = "{path}"\n')


def test_one_storage_table_is_the_destination_named_default(tmp_path: Path) -> None:
    """`[storage]` alone still works: one destination called "default"."""
    settings = _load(tmp_path, f'[storage]\npath = "{tmp_path / "a"}"\n')
    assert [d.name for d in settings.storage] == ["default"]
    assert settings.storage[0].path == tmp_path / "a"


def test_several_destinations_keep_their_order_and_keys(tmp_path: Path) -> None:
    """`[[storage]]` tables are destinations in the config's order, each with its type's keys."""
    settings = _load(
        tmp_path,
        _local("near", tmp_path / "a")
        + _s3("far", "bucket-one", "cloud66/",
              'object_lock = { mode = "COMPLIANCE", days = 7 }\n')
        + _sftp("remote", "/srv/backups"),
    )
    near, far, remote = settings.storage
    assert (near.name, far.name, remote.name) == ("near", "far", "remote")
    assert far.type == "s3"
    assert far.object_lock is not None
    assert far.object_lock.mode == "COMPLIANCE"
    assert far.object_lock.period == timedelta(days=7)
    assert remote.type == "sftp"
    assert destination_named(settings, "far") is far


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[[storage]]\nname = "a"\npath = "/x/1"\n[[storage]]\nname = "a"\npath = "/x/2"\n',
         "storage: two destinations are named 'a' (storage[0] and storage[1])"),
        ('[[storage]]\nname = "Near Site"\npath = "/x/1"\n',
         "storage[0].name: 'Near Site' is not a destination name"),
        ('[[storage]]\nname = "' + "n" * 33 + '"\npath = "/x/1"\n', "is not a destination name"),
        ('[[storage]]\npath = "/x/1"\n[[storage]]\nname = "b"\npath = "/x/2"\n',
         "each of several destinations needs a name (storage[0] has none)"),
        ('[storage]\npath = "/x/1"\nobject_lock = { mode = "GOVERNANCE", days = 3 }\n',
         "storage.object_lock: only S3 destinations can lock objects"),
        ('[storage]\ntype = "s3"\nbucket = "bkt"\n'
         'object_lock = { mode = "GOVERNANCE", days = 0 }\n',
         "storage.object_lock.days: Input should be greater than 0"),
        ('[storage]\ntype = "s3"\nbucket = "bkt"\n'
         'object_lock = { mode = "GOVERNANCE", days = "30" }\n',
         "storage.object_lock.days: Input should be a valid integer"),
        ('[storage]\ntype = "s3"\nbucket = "bkt"\nobject_lock = { mode = "LEGAL", days = 3 }\n',
         "storage.object_lock.mode"),
        ('[storage]\npath = "/x/1"\nencryption = true\n', "storage.encryption: expected a table"),
        ('[storage]\npath = "/x/1"\nretention = { keep_last = 0 }\n',
         "storage[0].retention: no keep_* rule is left"),
    ],
)
def test_bad_destinations_are_refused_naming_the_key(
    tmp_path: Path, text: str, expected: str
) -> None:
    """Duplicate or odd names, a lock where there is none, bad days: exit 2 with the key,
    and no meaningless '(got a list)' after a problem with the tables themselves."""
    message = _error(tmp_path, text)
    assert expected in message
    assert "(got a list)" not in message


@pytest.mark.parametrize(
    "pair",
    [
        ("near", "/srv/a", "far", "/srv/a"),
        ("near", "/srv/a", "far", "/srv/a/b"),
        ("near", "/srv/a/b/", "far", "/srv/a"),
    ],
)
def test_nested_local_folders_are_one_place(tmp_path: Path, pair: tuple[str, ...]) -> None:
    """The same or nested local folders are the same place: refused."""
    first, first_path, second, second_path = pair
    message = _error(tmp_path, _local(first, first_path) + _local(second, second_path))
    assert f"destinations '{first}' and '{second}' are the same place" in message
    assert "(got a list)" not in message


def test_sibling_folders_are_different_places(tmp_path: Path) -> None:
    """/srv/a and /srv/ab share a prefix of characters, not of folders: allowed."""
    settings = _load(tmp_path, _local("a", "/srv/a") + _local("b", "/srv/ab"))
    assert len(settings.storage) == 2


def test_a_symlink_to_another_destination_is_the_same_place(tmp_path: Path) -> None:
    """A folder reached through a link is the folder itself."""
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    message = _error(tmp_path, _local("a", tmp_path / "real") + _local("b", tmp_path / "link/x"))
    assert "are the same place" in message


@pytest.mark.parametrize(
    ("first", "second", "same"),
    [(("bkt", ""), ("bkt", "x/"), True), (("bkt", "x/"), ("bkt", "x/y"), True),
     (("bkt", "x"), ("bkt", "x/"), True), (("bkt", "x/"), ("bkt", "y/"), False),
     (("bkt", "x/"), ("other", "x/"), False), (("bkt", "ab/"), ("bkt", "a/"), False)],
)
def test_one_bucket_with_overlapping_prefixes_is_one_place(
    tmp_path: Path, first: tuple[str, str], second: tuple[str, str], same: bool
) -> None:
    """Same bucket and overlapping prefixes: refused; other prefixes or buckets: allowed."""
    text = _s3("a", *first) + _s3("b", *second)
    if same:
        assert "destinations 'a' and 'b' are the same place" in _error(tmp_path, text)
    else:
        assert len(_load(tmp_path, text).storage) == 2


def test_one_sftp_host_and_path_is_one_place(tmp_path: Path) -> None:
    """The same SFTP server and (nested) path: refused; another port is another server."""
    assert "are the same place" in _error(
        tmp_path, _sftp("a", "/srv/x") + _sftp("b", "/srv/x/y", host="BACKUP.example.com")
    )
    other_port = _load(tmp_path, _sftp("a", "/srv/x") + _sftp("b", "/srv/x", port=2222))
    assert len(other_port.storage) == 2


def test_retention_is_global_then_stack_then_destination_key_by_key(tmp_path: Path) -> None:
    """[retention] < the stack's override < the destination's, each key on its own."""
    settings = _load(
        tmp_path,
        "[retention]\nkeep_last = 3\nkeep_daily = 5\nkeep_weekly = 4\n"
        + _local("near", tmp_path / "a")
        + _local("far", tmp_path / "b", "retention = { keep_weekly = 0, keep_monthly = 12 }\n"),
    )
    near, far = settings.storage
    near_policy = policy_for(settings, UID, near)
    far_policy = policy_for(settings, UID, far)
    assert near_policy is not None
    assert far_policy is not None
    assert (near_policy.keep_last, near_policy.keep_daily, near_policy.keep_weekly) == (3, 9, 4)
    assert (far_policy.keep_last, far_policy.keep_daily, far_policy.keep_weekly) == (3, 9, 0)
    assert far_policy.keep_monthly == 12
    other = policy_for(settings, "another-stack", far)
    assert other is not None
    assert (other.keep_daily, other.keep_monthly) == (5, 12)


def test_a_destination_can_prune_alone_after_each_pass(tmp_path: Path) -> None:
    """Without [retention], only the destination with rules prunes, and after_pass is its own."""
    settings = _load(
        tmp_path,
        _local("near", tmp_path / "a")
        + _local("far", tmp_path / "b", "retention = { keep_last = 2, after_pass = true }\n"),
    )
    near, far = settings.storage
    assert policy_for(settings, "another-stack", near) is None
    assert prunes_after_pass(settings, far)
    assert not prunes_after_pass(settings, near)


def test_encryption_per_destination_overrides_or_turns_off(tmp_path: Path) -> None:
    """A destination's encryption table replaces [encryption]; false stores plaintext there."""
    settings = _load(
        tmp_path,
        f'[encryption]\nrecipients = ["{AGE}"]\n'
        + _local("plain", tmp_path / "a", "encryption = false\n")
        + _local("same", tmp_path / "b")
        + _local("own", tmp_path / "c", f'encryption = {{ recipients = ["{AGE}"], '
                 f'identity_file = "{tmp_path / "key"}" }}\n'),
    )
    plain, same, own = settings.storage
    assert encryption_for(settings, plain) is None
    assert encryption_for(settings, same) is settings.encryption
    own_encryption = encryption_for(settings, own)
    assert own_encryption is not None
    assert own_encryption.identity_file == tmp_path / "key"


def test_a_storage_name_no_destination_has_is_exit_2(tmp_path: Path) -> None:
    """`--storage NAME` naming no destination: a ConfigError listing the names."""
    settings = _load(tmp_path, _local("near", tmp_path / "a") + _local("far", tmp_path / "b"))
    with pytest.raises(ConfigError, match="--storage 'nowhere': no such destination "
                                          r"\(configured: 'near', 'far'\)"):
        destination_named(settings, "nowhere")
