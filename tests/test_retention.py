"""Retention: the engine's rules, reasons and edge cases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from archiver.retention import RetentionPolicy, decide


def at(text: str) -> datetime:
    """A moment in UTC from "2026-11-29 14:00"."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def identity(moment: datetime | None) -> datetime | None:
    return moment


def kept(items: list[datetime], policy: RetentionPolicy) -> dict[datetime, tuple[str, ...]]:
    """The kept moments of a series of moments, with their reasons."""
    return {d.item: d.reasons for d in decide(items, identity, policy) if d.keep}


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


def test_oldest_backup_kept_while_a_count_is_left() -> None:
    """A young series keeps its oldest backup while a rule has count left (restic >= 0.16)."""
    series = [at("2025-03-01 10:00"), at("2025-07-01 10:00"), at("2026-01-05 10:00")]
    assert kept(series, RetentionPolicy(keep_yearly=3)) == {
        at("2026-01-05 10:00"): ("yearly 2026",),
        at("2025-07-01 10:00"): ("yearly 2025",),
        at("2025-03-01 10:00"): ("oldest yearly 2025",),
    }
    assert at("2025-03-01 10:00") not in kept(series, RetentionPolicy(keep_yearly=2))


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
