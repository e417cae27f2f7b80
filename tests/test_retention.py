"""Retention: the engine against restic `forget` itself, its edge cases, and its config."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.poly1305 import Poly1305

from archiver.config.settings import load_settings, policy_for
from archiver.core.errors import ConfigError
from archiver.model.retention import RetentionPolicy, decide, format_duration

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.toml"
UID = "5999b763474b0eafa5fafb64bff0ba80"
OTHER = "0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e"
STACKS = f'[[stacks]]\nuid = "{UID}"\n\n[[stacks]]\nuid = "{OTHER}"\n'


def at(text: str) -> datetime:
    """A moment in UTC from "2026-11-29 14:00"."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def identity(moment: datetime | None) -> datetime | None:
    return moment


def kept(items: list[datetime], policy: RetentionPolicy) -> dict[datetime, tuple[str, ...]]:
    """The kept moments of a series of moments, with their reasons."""
    return {d.item: d.reasons for d in decide(items, identity, policy) if d.keep}


# -- the engine against restic ---------------------------------------------------

# A messy calendar (UTC), oldest first; no two alike, as restic orders ties its own way.
CALENDAR = [
    at(text)
    for text in (
        "2019-12-29 23:00",  # Sunday of ISO week 2019-W52
        "2019-12-30 10:00",  # Monday: already ISO week 2020-W01, still year 2019
        "2019-12-31 23:59:59",
        "2020-01-01 00:00",
        "2020-01-31 23:30",  # month end, then a month start half an hour later
        "2020-02-01 00:30",
        "2020-02-29 12:00",  # leap day
        "2020-03-01 00:00",
        "2020-05-15 06:00",  # after a ten-week gap: two a day
        "2020-05-15 18:00",
        "2020-05-16 06:00",
        "2020-05-16 18:00",
        "2020-06-30 23:00",
        "2020-12-27 22:00",  # Sunday of 2020-W52
        "2020-12-28 01:00",  # Monday of 2020-W53, the rare 53rd ISO week
        "2020-12-31 23:59:59",
        "2021-01-01 00:00",  # a new year, still ISO week 2020-W53
        "2021-01-03 23:00",  # Sunday: the last moment of 2020-W53
        "2021-01-04 00:00",  # Monday of 2021-W01
        "2021-01-10 08:00",  # hourly runs, two in one hour
        "2021-01-10 08:15",
        "2021-01-10 08:45",
        "2021-01-10 09:00",
        "2021-01-10 10:00",
        "2021-01-10 11:00",
        "2021-01-10 12:00",
        "2021-01-10 13:00",
        "2021-02-28 23:00",  # after another gap: the end of a short month
        "2021-03-01 00:00",
        "2021-03-09 23:00",
        "2021-03-10 00:00",  # exactly 2d before the newest: outside "within 2d"
        "2021-03-10 00:00:01",
        "2021-03-10 12:00",  # exactly 36h before the newest
        "2021-03-11 12:00",
        "2021-03-12 00:00",  # the newest
    )
]

RESTIC_POLICIES = [
    RetentionPolicy(keep_last=5),
    RetentionPolicy(keep_hourly=9),
    RetentionPolicy(keep_daily=12),
    RetentionPolicy(keep_weekly=7),
    RetentionPolicy(keep_monthly=6),
    RetentionPolicy(keep_yearly=2),
    RetentionPolicy(keep_yearly=5),  # more years than the calendar has
    RetentionPolicy(keep_weekly=60),  # more weeks than the calendar has
    RetentionPolicy(keep_within=timedelta(days=2)),
    RetentionPolicy(keep_within=timedelta(hours=36), keep_daily=3),
    RetentionPolicy(keep_last=3, keep_daily=7, keep_weekly=4, keep_monthly=6, keep_yearly=2),
    RetentionPolicy(keep_hourly=3, keep_weekly=2, keep_monthly=30, keep_within=timedelta(days=1)),
]

restic_binary = shutil.which("restic")
needs_restic = pytest.mark.skipif(restic_binary is None, reason="restic is not installed")


@dataclass(frozen=True)
class Restic:
    """restic run on a throwaway repository."""

    env: dict[str, str]

    def run(self, *args: str) -> str:
        done = subprocess.run(
            [restic_binary or "restic", "--no-cache", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, f"restic {' '.join(args)}: {done.stderr}"
        return done.stdout



def _cheapen_key(repository: Path, password: str) -> None:
    """Re-wrap the repository's master key under scrypt N=1024, r=1, p=1.

    restic derives its key at every run with parameters calibrated to ~0.5s of CPU;
    the fixture runs restic about 50 times. The key file is JSON: scrypt parameters,
    a salt, and the master key as nonce || AES-256-CTR ciphertext || Poly1305-AES MAC,
    under the 64 derived bytes (encryption key, MAC k, MAC r). The MAC check below
    fails loudly if restic ever stores keys differently.
    """
    (path,) = (repository / "keys").iterdir()
    key = json.loads(path.read_bytes())
    sealed = base64.b64decode(key["data"])
    nonce, ciphertext, mac = sealed[:16], sealed[16:-16], sealed[-16:]
    derived = _scrypt(key, password)
    assert _poly1305_aes(derived, nonce, ciphertext) == mac, "restic's key format changed"
    master = _aes_ctr(derived[:32], nonce, ciphertext)
    key.update(N=1024, r=1, p=1, salt=base64.b64encode(os.urandom(64)).decode())
    derived, nonce = _scrypt(key, password), os.urandom(16)
    ciphertext = _aes_ctr(derived[:32], nonce, master)
    sealed = nonce + ciphertext + _poly1305_aes(derived, nonce, ciphertext)
    content = json.dumps({**key, "data": base64.b64encode(sealed).decode()}).encode()
    (repository / "keys" / hashlib.sha256(content).hexdigest()).write_bytes(content)
    path.unlink()


def _scrypt(key: dict[str, Any], password: str) -> bytes:
    salt = base64.b64decode(key["salt"])
    n, r, p = key["N"], key["r"], key["p"]
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=2**30, dklen=64)


def _aes_ctr(key: bytes, nonce: bytes, data: bytes) -> bytes:
    encryptor = Cipher(algorithms.AES(key), modes.CTR(nonce)).encryptor()
    return encryptor.update(data) + encryptor.finalize()


def _poly1305_aes(derived: bytes, nonce: bytes, message: bytes) -> bytes:
    mac_k, mac_r = derived[32:48], derived[48:64]
    # Poly1305-AES: the one-time key is r || AES_k(nonce), one block (hence ECB).
    block = Cipher(algorithms.AES(mac_k), modes.ECB()).encryptor()  # noqa: S305
    return Poly1305.generate_tag(mac_r + block.update(nonce) + block.finalize(), message)


@pytest.fixture(scope="module")
def restic_keeps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[int, set[str]]]:
    """restic's answer for each of RESTIC_POLICIES (by describe()), from one repository
    holding a snapshot per CALENDAR moment, tagged with its index.

    The runs go four at a time (backups share the repository lock; the dry runs take
    none) and happen once for all policies.
    """
    root = tmp_path_factory.mktemp("restic")
    data = root / "data"
    data.write_text("tiny\n")
    restic = Restic(
        {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(root),
            "TZ": "UTC",  # --time is read in local time; buckets are UTC on both sides
            "RESTIC_REPOSITORY": str(root / "repo"),
            "RESTIC_PASSWORD": "throwaway",
        }
    )
    restic.run("init")
    _cheapen_key(root / "repo", restic.env["RESTIC_PASSWORD"])

    def snapshot(index: int) -> None:
        moment = CALENDAR[index].strftime("%Y-%m-%d %H:%M:%S")
        restic.run("backup", "--time", moment, "--host", "h", "--tag", f"i{index:02d}", str(data))

    def forget(policy: RetentionPolicy) -> dict[int, set[str]]:
        return _forget_dry_run(restic, policy)

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(snapshot, range(len(CALENDAR))))
        answers = list(pool.map(forget, RESTIC_POLICIES))
    return {
        policy.describe(): answer for policy, answer in zip(RESTIC_POLICIES, answers, strict=True)
    }


def restic_flags(policy: RetentionPolicy) -> list[str]:
    flags = []
    for rule in ("last", "hourly", "daily", "weekly", "monthly", "yearly"):
        if policy.count(rule):
            flags += [f"--keep-{rule}", str(policy.count(rule))]
    if policy.keep_within is not None:
        flags += ["--keep-within", format_duration(policy.keep_within)]
    return flags


def rules_of(reasons: list[str] | tuple[str, ...]) -> set[str]:
    """The rule names in reasons: "daily snapshot", "daily 2021-01-10" -> "daily"."""
    return {reason.split(" ")[0] for reason in reasons}


def _forget_dry_run(restic: Restic, policy: RetentionPolicy) -> dict[int, set[str]]:
    """restic's kept CALENDAR indices with the rules that kept each (restic 0.14's meaning)."""
    # --no-lock: a dry run changes nothing, and the policies run side by side.
    args = ["forget", "--dry-run", "--no-lock", "--json", "--group-by", ""]
    output = restic.run(*args, *restic_flags(policy))
    (group,) = json.loads(output)
    kept: dict[int, set[str]] = {}
    for reason in group["reasons"]:
        # restic >= 0.16 also keeps the oldest snapshot while a count is left ("oldest
        # daily snapshot"); the contract's rules do not: drop those matches there.
        matches = [m for m in reason["matches"] if not m.startswith("oldest ")]
        if matches:
            kept[int(reason["snapshot"]["tags"][0][1:])] = rules_of(matches)
    return kept


@needs_restic
@pytest.mark.parametrize("policy", RESTIC_POLICIES, ids=lambda p: p.describe())
def test_keeps_what_restic_forget_keeps(
    restic_keeps: dict[str, dict[int, set[str]]], policy: RetentionPolicy
) -> None:
    """On a messy calendar, decide() keeps the same backups as restic, for the same rules."""
    decisions = decide(range(len(CALENDAR)), CALENDAR.__getitem__, policy)
    ours = {d.item: rules_of(d.reasons) for d in decisions if d.keep}
    assert ours == restic_keeps[policy.describe()]


def test_calendar_hits_the_edges() -> None:
    """The restic calendar really holds ISO week 53, a week spanning years and a leap day."""
    weeks = {moment.isocalendar()[:2] for moment in CALENDAR}
    assert (2020, 53) in weeks
    assert CALENDAR[1].year == 2019
    assert CALENDAR[1].isocalendar()[:2] == (2020, 1)
    assert at("2020-02-29 12:00") in CALENDAR
    assert len(set(CALENDAR)) == len(CALENDAR) == len(sorted(CALENDAR))


# -- the engine by hand: what restic cannot check ----------------------------------


def test_reason_strings_name_rule_and_bucket() -> None:
    """Reasons read as documented: calendar rules from hourly to yearly, then last, within."""
    policy = RetentionPolicy(1, 1, 1, 1, 1, 1, timedelta(days=2))
    (decision,) = decide([at("2026-11-29 14:05")], identity, policy)
    assert decision.reasons == (
        "hourly 2026-11-29T14",
        "daily 2026-11-29",
        "weekly 2026-W48",
        "monthly 2026-11",
        "yearly 2026",
        "last 1",
        "within 2d",
    )


def test_contract_example_reasons() -> None:
    """keep_last and keep_daily give the newest backup the contract's example reasons."""
    (newest, same_day, day_before) = decide(
        [at("2026-11-28 09:00"), at("2026-11-29 03:00"), at("2026-11-29 09:00")],
        identity,
        RetentionPolicy(keep_last=1, keep_daily=14),
    )
    assert newest.reasons == ("daily 2026-11-29", "last 1")
    assert (same_day.moment, same_day.keep) == (at("2026-11-29 03:00"), False)
    assert day_before.reasons == ("daily 2026-11-28",)


def test_last_counts_from_the_newest_and_removes_the_rest() -> None:
    """keep_last 3 of 5 keeps the three newest as last 1..3 and removes two, newest first."""
    series = [at(f"2026-11-2{day} 10:00") for day in range(1, 6)]
    decisions = decide(series, identity, RetentionPolicy(keep_last=3))
    assert [d.moment for d in decisions] == sorted(series, reverse=True)
    assert [d.reasons for d in decisions] == [("last 1",), ("last 2",), ("last 3",), (), ()]


def test_a_count_not_used_up_keeps_only_the_buckets_there_are() -> None:
    """keep_yearly 3 with two years keeps the newest of each year, not the series' oldest too."""
    series = [at("2025-03-01 10:00"), at("2025-07-01 10:00"), at("2026-01-05 10:00")]
    assert kept(series, RetentionPolicy(keep_yearly=3)) == {
        at("2026-01-05 10:00"): ("yearly 2026",),
        at("2025-07-01 10:00"): ("yearly 2025",),
    }


def test_equal_moments_keep_input_order() -> None:
    """Of two backups with the same moment, the one given first counts as the newer."""
    first, second = ("a", at("2026-11-29 10:00")), ("b", at("2026-11-29 10:00"))
    for items in ([first, second], [second, first]):
        decisions = decide(items, lambda pair: pair[1], RetentionPolicy(keep_last=1))
        newer, older = items[0][0], items[1][0]
        assert [(d.item[0], d.keep) for d in decisions] == [(newer, True), (older, False)]


def test_undated_backup_is_kept_and_uses_no_count() -> None:
    """A backup without a date is kept as "undated", listed last, and takes no keep_last slot."""
    series = [None, at("2026-11-28 10:00"), at("2026-11-29 10:00")]
    decisions = decide(series, identity, RetentionPolicy(keep_last=1))
    assert [(d.moment, d.reasons) for d in decisions] == [
        (at("2026-11-29 10:00"), ("last 1",)),
        (at("2026-11-28 10:00"), ()),
        (None, ("undated",)),
    ]


def test_only_undated_backups_are_all_kept() -> None:
    """A series of undated backups loses nothing, whatever the policy."""
    decisions = decide(["x", "y"], lambda _item: None, RetentionPolicy(keep_last=1))
    assert [(d.item, d.reasons) for d in decisions] == [("x", ("undated",)), ("y", ("undated",))]


def test_buckets_are_utc_and_naive_means_utc() -> None:
    """01:00 at UTC+2 on the 30th is the 29th in UTC; a naive moment is taken as UTC."""
    plus_two = datetime(2026, 11, 30, 1, 0, tzinfo=timezone(timedelta(hours=2)))
    (decision,) = decide([plus_two], identity, RetentionPolicy(keep_daily=1))
    assert decision.reasons == ("daily 2026-11-29",)
    assert decision.moment == at("2026-11-29 23:00")
    assert decision.moment.tzinfo == UTC
    (naive,) = decide([datetime(2026, 11, 29, 23, 30)], identity, RetentionPolicy(keep_daily=1))
    assert naive.reasons == ("daily 2026-11-29",)


def test_within_anchors_at_the_newest_backup_not_the_clock() -> None:
    """keep_within counts back from the series' newest backup, even one dated years ahead."""
    series = [at("2099-01-10 00:00"), at("2099-01-08 00:00:01"), at("2099-01-08 00:00")]
    assert set(kept(series, RetentionPolicy(keep_within=timedelta(days=2)))) == set(series[:2])


def test_empty_series_and_empty_policy() -> None:
    """No backups give no decisions; an empty policy is refused rather than removing all."""
    assert decide([], identity, RetentionPolicy(keep_last=1)) == []
    with pytest.raises(ValueError, match="remove every backup"):
        decide([at("2026-11-29 10:00")], identity, RetentionPolicy())


def test_policy_describe_and_checks() -> None:
    """describe() lists the rules that are on; bad counts and durations are refused."""
    policy = RetentionPolicy(keep_last=7, keep_daily=14, keep_within=timedelta(hours=36))
    assert policy.describe() == "last 7, daily 14, within 1d12h"
    assert not policy.is_empty()
    assert RetentionPolicy().is_empty()
    assert RetentionPolicy().describe() == "no rule"
    with pytest.raises(ValueError, match="keep_daily"):
        RetentionPolicy(keep_daily=-1)
    with pytest.raises(ValueError, match="keep_within"):
        RetentionPolicy(keep_within=timedelta(0))


# -- config ---------------------------------------------------------------------


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def policies(tmp_path: Path, text: str) -> tuple[RetentionPolicy | None, RetentionPolicy | None]:
    """The policies of UID and OTHER under a config of STACKS plus `text`."""
    settings = load_settings(write_config(tmp_path, text))
    return policy_for(settings, UID), policy_for(settings, OTHER)


def config_error(tmp_path: Path, text: str) -> str:
    """Load `text`, expect a ConfigError naming the file, return its message."""
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert str(path) in str(caught.value)
    return str(caught.value)


def test_no_retention_keeps_everything(tmp_path: Path) -> None:
    """Without [retention] or overrides no stack has a policy: everything is kept."""
    settings = load_settings(write_config(tmp_path, STACKS))
    assert settings.retention is None
    assert policy_for(settings, UID) is None


def test_global_retention_applies_to_every_stack(tmp_path: Path) -> None:
    """[retention] is every stack's policy, discovered ones too; after_pass is read."""
    text = STACKS + '[retention]\nkeep_last = 7\nkeep_within = "2d"\nafter_pass = true\n'
    settings = load_settings(write_config(tmp_path, text))
    expected = RetentionPolicy(keep_last=7, keep_within=timedelta(days=2))
    assert policy_for(settings, UID) == policy_for(settings, "discovered") == expected
    assert settings.retention is not None
    assert settings.retention.after_pass


def test_stack_override_merges_key_by_key(tmp_path: Path) -> None:
    """A stack's retention replaces only the keys it sets; other stacks keep [retention]."""
    text = (
        f'[[stacks]]\nuid = "{UID}"\nretention = {{ keep_daily = 30, keep_within = "0s" }}\n'
        f'[[stacks]]\nuid = "{OTHER}"\n'
        '[retention]\nkeep_last = 7\nkeep_daily = 14\nkeep_within = "2d"\n'
    )
    ours, other = policies(tmp_path, text)
    assert ours == RetentionPolicy(keep_last=7, keep_daily=30)
    assert other == RetentionPolicy(keep_last=7, keep_daily=14, keep_within=timedelta(days=2))


def test_stack_override_without_global(tmp_path: Path) -> None:
    """An override alone is its stack's whole policy (none if empty); other stacks keep all."""
    text = f'[[stacks]]\nuid = "{UID}"\nretention = {{ keep_daily = 30 }}\n'
    text += f'[[stacks]]\nuid = "{OTHER}"\n'
    assert policies(tmp_path, text) == (RetentionPolicy(keep_daily=30), None)
    empty = f'[[stacks]]\nuid = "{UID}"\nretention = {{ keep_daily = 0 }}\n'
    assert "stacks[0].retention: no keep_* rule is left: that" in config_error(tmp_path, empty)


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("[retention]\nkeep_daily = -1\n", "retention.keep_daily: Input should be greater"),
        ('[retention]\nkeep_last = "7"\n', "retention.keep_last: Input should be a valid int"),
        ("[retention]\nkeep_last = 7.0\n", "retention.keep_last: Input should be a valid int"),
        ('[retention]\nkeep_last = 1\nafter_pass = "yes"\n', "retention.after_pass: Input"),
        ('[retention]\nkeep_within = "2 days"\n', "retention.keep_within: '2 days' is not a dur"),
        ('[retention]\nkeep_within = "6m"\n', "retention.keep_within: must be at least 1h"),
        ("[retention]\nkeep_dayly = 7\n", "retention.keep_dayly: unknown key"),
        ("[retention]\n", "retention: no keep_* rule is set: that would remove every backup"),
        ("[retention]\nafter_pass = true\nkeep_last = 0\n", "retention: no keep_* rule is set"),
    ],
)
def test_bad_retention_names_key_and_file(tmp_path: Path, snippet: str, expected: str) -> None:
    """Negative, mistyped, unreadable, unknown or missing rules are errors naming the key."""
    assert expected in config_error(tmp_path, STACKS + snippet)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("{ keep_daily = -3 }", "stacks[0].retention.keep_daily: Input should be greater"),
        ("{ after_pass = true }", "stacks[0].retention.after_pass: unknown key"),
        ("{ keep_last = 0 }", "stacks[0].retention: no keep_* rule is left once merged"),
    ],
)
def test_bad_stack_override_names_key_and_file(
    tmp_path: Path, override: str, expected: str
) -> None:
    """A stack override that is wrong, or that leaves no rule at all, is named by its key."""
    text = f'[[stacks]]\nuid = "{UID}"\nretention = {override}\n[retention]\nkeep_last = 3\n'
    assert expected in config_error(tmp_path, text)


def test_example_retention_block_is_valid(tmp_path: Path) -> None:
    """The example's commented-out [retention] loads, uncommented, as it describes itself."""
    block = EXAMPLE.read_text(encoding="utf-8").split("\n# [retention]\n", 1)[1]
    lines = block.split("\n\n", 1)[0].splitlines()  # up to the next section's text
    keys = [line.removeprefix("# ") for line in lines if not line.startswith("# #")]
    settings = load_settings(write_config(tmp_path, STACKS + "[retention]\n" + "\n".join(keys)))
    policy = policy_for(settings, UID)
    assert policy is not None
    assert policy.describe() == "last 7, daily 14, weekly 8, monthly 12, yearly 3, within 2d"


def test_example_worked_example_holds() -> None:
    """The example's worked example (6-hourly backups, 4/7/4/3) keeps exactly what it lists."""
    newest = at("2026-11-29 18:00")
    series = [newest - timedelta(hours=6 * n) for n in range(4 * 120)]
    policy = RetentionPolicy(keep_last=4, keep_daily=7, keep_weekly=4, keep_monthly=3)
    expected = [newest - timedelta(hours=6 * n) for n in range(4)]
    expected += [at(f"2026-11-{day} 18:00") for day in range(23, 29)]
    expected += [at(f"2026-11-{day} 18:00") for day in ("22", "15", "08")]
    expected += [at("2026-10-31 18:00"), at("2026-09-30 18:00")]
    assert sorted(kept(series, policy)) == sorted(expected)
    assert "keep_monthly = 3 keep 15:" in EXAMPLE.read_text(encoding="utf-8")
