"""Encryption at rest: streams the age CLI decrypts, keys as age reads them, clear errors."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from archiver.config.keys import load_identities, parse_recipient
from archiver.config.settings import ConfigError, settings_from_dict
from archiver.transfer.encryption import (
    NO_MATCHING_KEYS,
    AgeStream,
    CorruptCiphertext,
    EncryptionFailed,
    WrongIdentity,
)

AGE = shutil.which("age")
AGE_KEYGEN = shutil.which("age-keygen")
needs_age = pytest.mark.skipif(AGE is None or AGE_KEYGEN is None, reason="the age CLI is missing")


def _age_key(folder: Path, name: str = "key.txt") -> tuple[Path, str]:
    """A fresh age identity file and its public key, made by age-keygen itself."""
    assert AGE_KEYGEN is not None
    path = folder / name
    subprocess.run([AGE_KEYGEN, "-o", str(path)], check=True, capture_output=True)
    public = subprocess.run(
        [AGE_KEYGEN, "-y", str(path)], check=True, capture_output=True, text=True
    ).stdout.strip()
    return path, public


def _ssh_key(folder: Path) -> tuple[Path, str]:
    """A fresh unencrypted OpenSSH ed25519 key pair, made by ssh-keygen."""
    path = folder / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True
    )
    return path, (folder / "id_ed25519.pub").read_text().strip()


def age_decrypt(identity: Path, sealed: bytes) -> tuple[int, bytes]:
    """`age -d -i identity` of `sealed`: its exit code and its output."""
    assert AGE is not None
    done = subprocess.run([AGE, "-d", "-i", str(identity)], input=sealed, capture_output=True)
    return done.returncode, done.stdout


async def _through(stream: AgeStream, data: bytes, chunk: int) -> bytes:
    out = [await stream.feed(data[start : start + chunk]) for start in range(0, len(data), chunk)]
    return b"".join(out) + await stream.finish()


@needs_age
@pytest.mark.parametrize("size", [0, 1, 65_535, 65_536, 65_537, 3 * 1024 * 1024 + 7])
async def test_streamed_encryption_is_what_the_age_cli_decrypts(tmp_path: Path, size: int) -> None:
    """Fed in uneven chunks, the output is an age v1 file `age -d -i` opens to the plaintext."""
    key, public = _age_key(tmp_path)
    plaintext = os.urandom(size)
    sealed = await _through(AgeStream.encrypting([parse_recipient(public)]), plaintext, 100_003)
    assert sealed.startswith(b"age-encryption.org/v1\n")
    assert age_decrypt(key, sealed) == (0, plaintext)


@needs_age
async def test_ssh_recipients_and_identities_work_both_ways(tmp_path: Path) -> None:
    """An ssh-ed25519 recipient encrypts; the OpenSSH private key decrypts, streamed."""
    private, public = _ssh_key(tmp_path)
    plaintext = os.urandom(200_000)
    sealed = await _through(AgeStream.encrypting([parse_recipient(public)]), plaintext, 65_536)
    decrypting = AgeStream.decrypting(load_identities(private))
    assert await _through(decrypting, sealed, 50_000) == plaintext


@needs_age
async def test_a_wrong_identity_and_damaged_data_are_told_apart(tmp_path: Path) -> None:
    """Another key: WrongIdentity. One flipped bit in the payload: CorruptCiphertext."""
    _, public = _age_key(tmp_path)
    other, _ = _age_key(tmp_path, "other.txt")
    key = tmp_path / "key.txt"
    sealed = await _through(AgeStream.encrypting([parse_recipient(public)]), os.urandom(9000), 4096)
    with pytest.raises(WrongIdentity):
        await _through(AgeStream.decrypting(load_identities(other)), sealed, 4096)
    damaged = bytearray(sealed)
    damaged[-100] ^= 0x01
    with pytest.raises(CorruptCiphertext):
        await _through(AgeStream.decrypting(load_identities(key)), bytes(damaged), 4096)


def test_pyrage_still_says_no_matching_keys_for_a_wrong_identity() -> None:
    """The installed pyrage words a wrong key as the pinned text, and damage otherwise."""
    import pyrage

    right, wrong = pyrage.x25519.Identity.generate(), pyrage.x25519.Identity.generate()
    sealed = pyrage.encrypt(b"backup", [right.to_public()])
    with pytest.raises(pyrage.DecryptError) as wrong_key:
        pyrage.decrypt(sealed, [wrong])
    assert NO_MATCHING_KEYS in str(wrong_key.value)
    damaged = bytearray(sealed)
    damaged[-3] ^= 0x01
    with pytest.raises(pyrage.DecryptError) as damage:
        pyrage.decrypt(bytes(damaged), [right])
    assert NO_MATCHING_KEYS not in str(damage.value)


@needs_age
async def test_an_aborted_encryption_never_ends_as_a_valid_file(tmp_path: Path) -> None:
    """abort() stops pyrage without the final chunk: the age CLI refuses what was written."""
    key, public = _age_key(tmp_path)
    stream = AgeStream.encrypting([parse_recipient(public)])
    written = await stream.feed(os.urandom(300_000))
    stream.abort()
    with pytest.raises(EncryptionFailed, match="abandoned"):
        await stream.finish()
    code, _ = age_decrypt(key, written)
    assert code != 0


def test_malformed_recipients_are_config_errors_naming_the_key(tmp_path: Path) -> None:
    """A bad recipient (inline or in the file) or none at all: exit-2 errors naming the key."""
    base = {"stacks": [{"uid": "stack-a"}]}
    with pytest.raises(ConfigError, match=r"encryption: recipients\[1\]: 'age1nope'"):
        settings_from_dict({**base, "encryption": {"recipients": [
            "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p", "age1nope"]}})
    listed = tmp_path / "recipients.txt"
    listed.write_text("# ops team\n\nssh-dss AAAAB3NzaC1kc3M=\n")
    with pytest.raises(ConfigError, match="recipients_file line 1: 'ssh-dss"):
        settings_from_dict({**base, "encryption": {"recipients_file": str(listed)}})
    with pytest.raises(ConfigError, match="no recipients"):
        settings_from_dict({**base, "encryption": {}})


def test_identity_files_as_age_reads_them(tmp_path: Path) -> None:
    """age-keygen output (with its comments) and OpenSSH keys load; anything else is refused."""
    if AGE_KEYGEN is None:
        pytest.skip("age-keygen is missing")
    key, _ = _age_key(tmp_path)
    assert len(load_identities(key)) == 1
    private, _ = _ssh_key(tmp_path)
    assert len(load_identities(private)) == 1
    junk = tmp_path / "junk.txt"
    junk.write_text("hello\n")
    with pytest.raises(ValueError, match="no age identity"):
        load_identities(junk)
    with pytest.raises(ValueError, match="cannot read"):
        load_identities(tmp_path / "missing.txt")
    assert hashlib.sha256(key.read_bytes()).hexdigest()  # the key file was not touched
