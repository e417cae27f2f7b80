"""Files and folders only we may read: 0600 and 0700 whatever the umask, made durable.

Modes are set explicitly after creation, because the umask can only remove
bits from what `open`/`mkdir` ask for. Used by local storage and the state.
"""

from __future__ import annotations

import os
from pathlib import Path

FILE_MODE = 0o600
FOLDER_MODE = 0o700


def make_private_folders(folder: Path) -> None:
    """Create `folder` and its missing parents, each 0700.

    Only folders created here are chmod'ed: never an existing parent such as /var/lib.
    """
    missing: list[Path] = []
    current = folder
    while not current.is_dir():
        missing.append(current)
        if current == current.parent:
            break
        current = current.parent
    for path in reversed(missing):
        try:
            path.mkdir(mode=FOLDER_MODE)
        except FileExistsError:
            continue  # a concurrent writer made it; its mode is already ours
        os.chmod(path, FOLDER_MODE)


def create_private_file(path: Path, flags: int = os.O_RDWR) -> int:
    """Create a new file 0600 (fails if it exists) and return its descriptor."""
    descriptor = os.open(path, flags | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    try:
        os.fchmod(descriptor, FILE_MODE)
    except OSError:
        os.close(descriptor)
        raise
    return descriptor


def fsync_folder(folder: Path) -> None:
    """Make a rename, a creation or an unlink in `folder` durable."""
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
