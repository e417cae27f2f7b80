"""What each series keeps and how backups are stored: retention rules and encryption keys.

The sections `[retention]`, the overrides of a stack or a destination, and
`[encryption]` (or a destination's own), apart from `archiver.config.settings` so
that the destinations (`archiver.config.destinations`) can use them.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, model_validator

from archiver.config.keys import parse_recipient, recipients_in_file
from archiver.config.values import Bool, Duration, NonNegativeInt, Section
from archiver.model.retention import RetentionPolicy


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


class RetentionOverride(Section):
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


class DestinationRetention(RetentionOverride):
    """`[[storage]] retention = {...}`: keep_* rules for one destination, key by key over
    [retention] and the stack's (the destination's win)."""

    # Prune this destination after each good pass; unset: [retention] after_pass.
    after_pass: Bool | None = None


class EncryptionSettings(Section):
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
