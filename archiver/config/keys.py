"""age keys as users write them: recipients (`age -r`, `age -R`) and identities (`age -i`).

Parsed here, below the settings, so that a bad key is a configuration error
(exit 2) before anything runs; `archiver.transfer.encryption` streams with them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from archiver.core.lazy_import import lazy_module

# Loaded on first use: a config without [encryption] never pays for pyrage.
pyrage = lazy_module("pyrage")
ssh = lazy_module("pyrage", "ssh")
x25519 = lazy_module("pyrage", "x25519")

Recipient = Any  # pyrage.x25519.Recipient | pyrage.ssh.Recipient (no common base type)
Identity = Any  # pyrage.x25519.Identity | pyrage.ssh.Identity


def parse_recipient(text: str) -> Recipient:
    """One public key, as `age -r` takes it; ValueError naming what is wrong."""
    value = text.strip()
    try:
        if value.startswith("age1"):
            return x25519.Recipient.from_str(value)
        if value.startswith(("ssh-ed25519 ", "ssh-rsa ")):
            return ssh.Recipient.from_str(value)
    except pyrage.RecipientError as error:
        raise ValueError(f"{_shorten(value)} is not a valid recipient: {error}") from None
    raise ValueError(
        f"{_shorten(value)} is not a recipient: expected an age public key (age1...) "
        "or an OpenSSH ssh-ed25519 or ssh-rsa public key"
    )


def recipients_in_file(path: Path) -> list[str]:
    """The recipients of a file as `age -R` reads it: one a line, `#` comments, blanks."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def load_identities(path: Path) -> list[Identity]:
    """The identities in a file, as `age -i` reads it; ValueError when it holds none."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ValueError(f"cannot read {path} ({error.strerror})") from None
    text = data.decode("utf-8", errors="replace")
    if "-----BEGIN" in text:
        try:
            return [ssh.Identity.from_buffer(data)]
        except pyrage.IdentityError as error:
            raise ValueError(f"{path}: not a usable SSH private key ({error})") from None
    keys = [line.strip() for line in text.splitlines() if line.strip().startswith("AGE-SECRET")]
    if not keys:
        raise ValueError(f"{path}: no age identity (AGE-SECRET-KEY-1...) and no SSH private key")
    try:
        return [x25519.Identity.from_str(key) for key in keys]
    except pyrage.IdentityError as error:
        raise ValueError(f"{path}: an age identity cannot be read ({error})") from None


def _shorten(value: str) -> str:
    return repr(value if len(value) <= 40 else value[:37] + "...")
