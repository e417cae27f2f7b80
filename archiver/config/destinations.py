"""A destination as the config describes it: a storage backend plus a name, retention,
encryption and (S3) object lock; `[storage]` alone or several `[[storage]]`.

What two destinations may not share (one place) is `archiver.config.storage.same_place`;
the whole list is checked by `check_destinations`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Discriminator, Tag, field_validator

from archiver.config.policies import DestinationRetention, EncryptionSettings
from archiver.config.storage import (
    DEFAULT_DESTINATION,
    STORAGE_TYPES,
    LocalStorageSettings,
    S3StorageSettings,
    SftpStorageSettings,
    check_destination_name,
    same_place,
)
from archiver.config.values import Section


def _encryption_kind(value: object) -> str | None:
    """`false` turns encryption off here; a table is keys of this destination's own."""
    if value is False:
        return "plaintext"
    if isinstance(value, dict | EncryptionSettings):
        return "keys"
    return None


# Tags of the tagged unions: not keys the user wrote, so left out of error messages.
UNION_TAGS = {"storage": set(STORAGE_TYPES), "encryption": {"plaintext", "keys"}}
DestinationEncryption = Annotated[
    Annotated[Literal[False], Tag("plaintext")] | Annotated[EncryptionSettings, Tag("keys")],
    Discriminator(
        _encryption_kind,
        custom_error_type="encryption",
        custom_error_message="expected a table (e.g. { recipients = [\"age1...\"] }), or false "
        "to store plaintext in this destination",
    ),
]


class _DestinationKeys(Section):
    """What every destination has besides its backend's keys."""

    name: Annotated[str, AfterValidator(check_destination_name)] = DEFAULT_DESTINATION
    retention: DestinationRetention | None = None
    # Overrides [encryption] here: a table of its own, or false for plaintext here.
    encryption: DestinationEncryption | None = None


class _NoObjectLock(Section):
    """Only S3 can lock objects: say so instead of calling the key unknown."""

    object_lock: Any = None

    @field_validator("object_lock")
    @classmethod
    def _refused(cls, value: object) -> None:
        if value is not None:
            raise ValueError("only S3 destinations can lock objects (S3 Object Lock)")


class LocalDestination(_DestinationKeys, _NoObjectLock, LocalStorageSettings):
    """`[storage]` / `[[storage]]` with type = "local"."""


class S3Destination(_DestinationKeys, S3StorageSettings):
    """`[storage]` / `[[storage]]` with type = "s3"."""


class SftpDestination(_DestinationKeys, _NoObjectLock, SftpStorageSettings):
    """`[storage]` / `[[storage]]` with type = "sftp"."""


def _storage_type(value: object) -> str:
    """The `type` key picks the backend; without it, local storage."""
    if isinstance(value, dict):
        return str(value.get("type", "local"))
    return str(getattr(value, "type", "local"))


StorageSettings = Annotated[
    Annotated[LocalDestination, Tag("local")]
    | Annotated[S3Destination, Tag("s3")]
    | Annotated[SftpDestination, Tag("sftp")],
    Discriminator(
        _storage_type,
        custom_error_type="storage_type",
        custom_error_message='type must be one of "local", "s3", "sftp"',
    ),
]


def as_destination_list(value: object) -> object:
    """`[storage]` (one table) is a list of one destination."""
    return [value] if isinstance(value, dict) else value


def check_destinations(destinations: tuple[StorageSettings, ...]) -> None:
    """Names given and unique; no two destinations in one place. ValueError says which."""
    if not destinations:
        raise ValueError("at least one destination is needed")
    if len(destinations) > 1:
        for index, destination in enumerate(destinations):
            if "name" not in destination.model_fields_set:
                raise ValueError(
                    f"each of several destinations needs a name (storage[{index}] has none)"
                )
    seen: dict[str, int] = {}
    for index, destination in enumerate(destinations):
        if destination.name in seen:
            raise ValueError(
                f"two destinations are named {destination.name!r} "
                f"(storage[{seen[destination.name]}] and storage[{index}])"
            )
        seen[destination.name] = index
    for index, destination in enumerate(destinations):
        for other in destinations[:index]:
            if same_place(other, destination):
                raise ValueError(
                    f"destinations {other.name!r} and {destination.name!r} are the same place "
                    "(the same or nested folders, one bucket with overlapping prefixes, "
                    "or one SFTP host and port with nested paths)"
                )
