"""Which private key opens the archive: `--identity FILE`, else `[encryption] identity_file`.

Only `restore` and `verify --deep` of encrypted backups need one; archiving
needs public keys alone. A missing or unreadable identity is the user's to fix
(exit 2), named with where it came from.
"""

from __future__ import annotations

from pathlib import Path

from archiver.config.keys import Identity, load_identities
from archiver.config.policies import EncryptionSettings
from archiver.config.settings import Settings
from archiver.core.errors import ConfigError


def identities_for(
    settings: Settings, given: Path | None, own: EncryptionSettings | None = None
) -> list[Identity]:
    """The identities to decrypt with (`--identity`, else the destination's own `identity_file`,
    else `[encryption]`'s); ConfigError (exit 2) when there are none to use."""
    configured = settings.encryption.identity_file if settings.encryption else None
    path = given or (own.identity_file if own else None) or configured
    where = "--identity" if given else f"{settings.source or '<config>'}: identity_file {path}"
    if path is None:
        raise ConfigError(
            "the backup is encrypted: give --identity FILE (an age or OpenSSH private key), "
            "or set [encryption] identity_file"
        )
    try:
        return load_identities(path)
    except ValueError as error:
        raise ConfigError(f"{where}: {error}") from None
