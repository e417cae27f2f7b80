"""A plaintext copy of an encrypted backup, staged for Cloud 66 to import, and its removal.

Cloud 66 cannot read an age file, so `import --backup` of an encrypted backup
decrypts it (streaming, checked against the manifest's sha256) into a staging
object under `c66-archiver-imports/<random>/`, hands Cloud 66 a pre-signed URL of
that object, and leaves an `expires.json` beside it. The first pass after the URL
expired removes the folder. The marker is written first, so even a staging cut
short by a crash is removed; while the copy is being written, a pass's cleanup of
unfinished uploads leaves it alone (`archiver.storage.base.written_beside_passes`),
and takes what a crashed import left of it once idle. This is the one place
plaintext reaches the bucket: deliberately, briefly, at the user's request, behind
a short-lived URL.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from datetime import UTC, datetime, timedelta

import structlog

from archiver.config.keys import Identity
from archiver.core.errors import ConfigError, IntegrityError, StorageError
from archiver.model.layout import safe_component
from archiver.model.manifest import ArchivedBackup, Manifest
from archiver.storage.base import STAGING_FOLDER, Storage, Upload
from archiver.transfer.encryption import AgeStream, CorruptCiphertext, WrongIdentity

log = structlog.get_logger(__name__)

__all__ = ["MARKER", "STAGING_FOLDER", "remove_expired_staging", "stage_plaintext"]

MARKER = "expires.json"


async def stage_plaintext(
    storage: Storage,
    record: ArchivedBackup,
    manifest: Manifest,
    identities: list[Identity],
    expires: timedelta,
) -> str:
    """Decrypt `record` into a staging object; return its key (removed after `expires`)."""
    folder = f"{STAGING_FOLDER}/{secrets.token_hex(8)}"
    expires_at = datetime.now(UTC) + expires
    marker = {"expires_at": expires_at.isoformat(), "backup_id": record.backup_id}
    await storage.write_small(f"{folder}/{MARKER}", json.dumps(marker).encode())
    key = f"{folder}/{safe_component(record.database_name, fallback='backup')}.tar"
    upload = await storage.start_upload(key)
    try:
        size, sha256 = await _decrypt_into(storage, record, identities, upload)
        if (size, sha256) != (manifest.size, manifest.sha256):
            raise IntegrityError("the decrypted backup does not match its manifest")
        await upload.commit(size=size, sha256=sha256)
    except BaseException:
        await upload.abort()
        raise
    return key


async def _decrypt_into(
    storage: Storage, record: ArchivedBackup, identities: list[Identity], upload: Upload
) -> tuple[int, str]:
    """Stream the age file through the decryptor into `upload`; (size, sha256) of the plaintext."""
    segment = await upload.open_segment(0, 0)
    stream = AgeStream.decrypting(identities)
    digest, size = hashlib.sha256(), 0

    async def write(plaintext: bytes) -> None:
        nonlocal size
        if plaintext:
            digest.update(plaintext)
            size += len(plaintext)
            await segment.write(plaintext)

    try:
        async for chunk in storage.read_chunks(record.tar_key):
            await write(await stream.feed(chunk))
        await write(await stream.finish())
    except WrongIdentity:
        raise ConfigError(
            f"the identity cannot decrypt backup {record.backup_id} (encrypted to other keys)"
        ) from None
    except CorruptCiphertext as error:
        raise IntegrityError(str(error)) from None
    finally:
        stream.abort()  # a no-op once it finished; stops the worker otherwise
    await segment.close()
    return size, digest.hexdigest()


async def remove_expired_staging(storage: Storage, now: datetime | None = None) -> int:
    """Remove every staging folder whose URL expired; return how many. Never raises."""
    moment = now or datetime.now(UTC)
    removed = 0
    try:
        markers = [k async for k in storage.list(STAGING_FOLDER) if k.endswith(f"/{MARKER}")]
        for marker in markers:
            if await _expired(storage, marker, moment):
                folder = marker.rpartition("/")[0]
                for key in [k async for k in storage.list(folder)]:
                    await storage.remove(key)
                removed += 1
    except (StorageError, OSError) as error:
        log.warning("could not remove an expired import staging copy", error=str(error))
    return removed


async def _expired(storage: Storage, marker: str, now: datetime) -> bool:
    try:
        document = json.loads(await storage.read_small(marker))
        return datetime.fromisoformat(str(document["expires_at"])) <= now
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return True  # an unreadable marker: nothing should keep plaintext around
