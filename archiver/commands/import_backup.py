"""`c66-archiver import`: hand Cloud 66 a backup to load, from a URL or from the archive.

An archived backup on S3 is offered through a pre-signed URL; an encrypted one
is first decrypted into a staging copy that a later pass removes once the URL
expired. Nothing secret is ever printed: not the token, not a URL's query (a
pre-signed URL's signature is a key to the backup).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from archiver.commands.admin_posts import admin_call, check_argument, report
from archiver.config.settings import DB_TYPES, Settings, check_stack_uid
from archiver.core.errors import ConfigError
from archiver.core.secrets import add_secret
from archiver.lifecycle.archive import open_archive
from archiver.lifecycle.identity import identities_for
from archiver.lifecycle.import_staging import stage_plaintext
from archiver.lifecycle.restore import find_copies
from archiver.model.layout import ENCRYPTED_SUFFIX
from archiver.model.manifest import Manifest
from archiver.sync.api_client import api_client

# SigV4 pre-signed URLs live at most 7 days.
MAX_URL_LIFETIME = timedelta(days=7)


async def run_import(
    settings: Settings, token: str, *, stack_uid: str, db_type: str, group: int,
    url: str | None, backup_id: int | None, expires: timedelta, identity: Path | None = None,
) -> int:
    """Ask Cloud 66 to fetch a backup from `url`, or from the archive's copy of `backup_id`."""
    check_argument(lambda: check_stack_uid(stack_uid), "--stack")
    if db_type not in DB_TYPES:
        raise ConfigError(f"--db-type {db_type!r}: one of {', '.join(DB_TYPES)}")
    if group < 0:
        raise ConfigError("--group must be a group id (0 or more)")
    if url is not None:
        if not url.startswith(("https://", "http://")):
            raise ConfigError("--url must be an http(s) URL Cloud 66 can reach")
        remote_url, what = url, "the given URL"
    else:
        assert backup_id is not None  # the CLI requires exactly one of --url and --backup
        remote_url, what = await _archived_copy_url(settings, backup_id, expires, identity)
    add_secret(remote_url)  # a pre-signed URL is a key: never in a log line
    async with api_client(settings, token) as client:
        call = client.import_backup(stack_uid, group=group, db_type=db_type, remote_url=remote_url)
        answer = await admin_call(call)
    return report(answer, f"import of {what} into {db_type} group {group} of {stack_uid}")


async def _archived_copy_url(
    settings: Settings, backup_id: int, expires: timedelta, identity: Path | None
) -> tuple[str, str]:
    """A URL Cloud 66 can fetch the archived backup from: S3 only (pre-signed).

    An encrypted backup is first decrypted into a staging copy (see
    `archiver.lifecycle.import_staging`), which a pass removes once the URL expired.
    """
    if not timedelta(minutes=1) <= expires <= MAX_URL_LIFETIME:
        raise ConfigError("--expires must be between 1m and 7d (S3 pre-signed URLs' limit)")
    async with open_archive(settings, lock=False) as archive:
        order = [destination.name for destination in archive.destinations]
        url = None
        # The first destination holding the backup that can give a URL (S3).
        for record in find_copies(archive.state.archived.all(), backup_id, None, order):
            destination = archive.destination(record.storage)
            storage = destination.storage
            if await storage.shareable_url(record.tar_key, expires) is None:
                continue
            key = record.tar_key
            if record.tar_key.endswith(ENCRYPTED_SUFFIX):
                manifest = Manifest.from_json(await storage.read_small(record.manifest_key))
                identities = identities_for(settings, identity, destination.encryption)
                key = await stage_plaintext(storage, record, manifest, identities, expires)
            url = await storage.shareable_url(key, expires)
            break
    if url is None:
        raise ConfigError(
            "no destination holding it has a URL Cloud 66 can fetch from (only S3 gives one): "
            f"restore it (`c66-archiver restore {backup_id} -o FILE`), put FILE where Cloud 66 "
            "can download it over HTTPS, then `c66-archiver import --url URL`"
        )
    until = (datetime.now(UTC) + expires).strftime("%Y-%m-%d %H:%M UTC")
    return url, f"archived backup {backup_id} (its URL valid until {until})"
