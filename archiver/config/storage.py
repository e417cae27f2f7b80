"""Where backups go: the settings of each storage backend, and what makes two of them one place.

A destination (`[storage]`, or one of several `[[storage]]`) is one of these
backends plus the keys every destination has (its name, retention, encryption,
object lock), added in `archiver.config.settings`. The backends themselves take
these classes, so they know nothing of names or policies.
"""

from __future__ import annotations

import os
import posixpath
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, model_validator

from archiver.config.values import Duration, PositiveInt, Section

DEFAULT_DESTINATION = "default"
STORAGE_TYPES = ("local", "s3", "sftp")
_NAME = re.compile(r"[a-z0-9_-]{1,32}")


def check_destination_name(name: str) -> str:
    """The destination's name, or ValueError: [a-z0-9_-], 1 to 32 characters."""
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"{name!r} is not a destination name: 1 to 32 of a-z, 0-9, '_' and '-'"
        )
    return name


def _check_remote_path(path: str) -> str:
    if not path.startswith("/"):
        raise ValueError("must be an absolute path on the server")
    return path


class ObjectLockSettings(Section):
    """`object_lock = {...}` of an S3 destination: what it commits nobody can delete for a while."""

    # GOVERNANCE: users with s3:BypassGovernanceRetention may still delete; COMPLIANCE: nobody,
    # not even the account's root user, until the date has passed.
    mode: Literal["GOVERNANCE", "COMPLIANCE"]
    days: PositiveInt

    @property
    def period(self) -> timedelta:
        """How long each committed object stays locked."""
        return timedelta(days=self.days)


class LocalStorageSettings(Section):
    """`[storage] type = "local"`: a folder on this machine."""

    type: Literal["local"] = "local"
    path: Path = Path("/var/lib/c66-archiver/archive")


class S3StorageSettings(Section):
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
    # Lock each committed backup (data and manifest) for a while: see ObjectLockSettings.
    object_lock: ObjectLockSettings | None = None

    @model_validator(mode="after")
    def _consistent(self) -> S3StorageSettings:
        if (self.access_key_id is None) != (self.secret_access_key_file is None):
            raise ValueError("set access_key_id and secret_access_key_file together")
        if self.sse_kms_key_id and self.server_side_encryption != "aws:kms":
            raise ValueError('sse_kms_key_id needs server_side_encryption = "aws:kms"')
        if self.endpoint_url and not self.endpoint_url.startswith(("http://", "https://")):
            raise ValueError("endpoint_url must start with http:// or https://")
        return self


class SftpStorageSettings(Section):
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


BackendSettings = LocalStorageSettings | S3StorageSettings | SftpStorageSettings


def same_place(first: BackendSettings, second: BackendSettings) -> bool:
    """True when two backends would write into the same objects (or one inside the other)."""
    if isinstance(first, LocalStorageSettings) and isinstance(second, LocalStorageSettings):
        return _nested(os.path.realpath(first.path), os.path.realpath(second.path), os.sep)
    if isinstance(first, S3StorageSettings) and isinstance(second, S3StorageSettings):
        same_bucket = (first.endpoint_url or "aws", first.bucket) == (
            second.endpoint_url or "aws",
            second.bucket,
        )
        return same_bucket and _nested(_prefix(first.prefix), _prefix(second.prefix), "/")
    if isinstance(first, SftpStorageSettings) and isinstance(second, SftpStorageSettings):
        same_server = (first.host.lower(), first.port) == (second.host.lower(), second.port)
        paths = posixpath.normpath(first.path), posixpath.normpath(second.path)
        return same_server and _nested(*paths, "/")
    return False


def place_of(settings: BackendSettings) -> str:
    """Where a backend's root is, as one comparable string with no secret in it: its type and
    folder, bucket and prefix (on which service), or server and path. The state remembers it
    per destination and reads a destination again when it changes."""
    if isinstance(settings, LocalStorageSettings):
        return f"local:{os.path.realpath(settings.path)}"
    if isinstance(settings, S3StorageSettings):
        service = urlsplit(settings.endpoint_url) if settings.endpoint_url else None
        endpoint = f"{service.scheme}://{service.hostname}:{service.port}{service.path}" \
            if service else "aws"
        return f"s3:{endpoint}:{settings.bucket}/{_prefix(settings.prefix)}"
    return (f"sftp:{settings.username}@{settings.host.lower()}:{settings.port}"
            f"{posixpath.normpath(settings.path)}")


def _prefix(prefix: str) -> str:
    """An S3 prefix as a folder: '' for the bucket's root."""
    return prefix.strip("/")


def _nested(first: str, second: str, separator: str) -> bool:
    """Equal, or one a folder inside the other ('' is the root, around everything)."""
    if first == second or not first or not second:
        return True
    first_dir, second_dir = first.rstrip(separator), second.rstrip(separator)
    return (
        first_dir == second_dir
        or second_dir.startswith(first_dir + separator)
        or first_dir.startswith(second_dir + separator)
    )
