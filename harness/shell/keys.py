"""Ed25519 key pairs for shells, and reading OpenSSH key text into paramiko keys.

Paramiko can load Ed25519 keys but cannot generate them, so generation goes through the
``cryptography`` library; the private key is written in OpenSSH's own format (``-----BEGIN
OPENSSH PRIVATE KEY-----``), the only one ``ssh -i`` and paramiko both read for Ed25519.

The master only generates key pairs, so :func:`generate_keypair` needs ``cryptography`` alone;
paramiko is imported by the functions that return paramiko keys.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

if TYPE_CHECKING:
    import paramiko


@dataclass(frozen=True)
class KeyPair:
    """One key pair: the private key for the user, the public key for the task."""

    private_pem: str
    """OpenSSH private key format, unencrypted; what ``ssh -i`` reads (write it mode 0600)."""
    public_openssh: str
    """One ``authorized_keys`` line: ``ssh-ed25519 AAAA… comment``."""

    @property
    def fingerprint(self) -> str:
        """``SHA256:…`` as ``ssh-keygen -l`` prints it, for logs that must not show keys."""
        return fingerprint(self.public_openssh)


def fingerprint(public_openssh: str) -> str:
    """The SHA256 fingerprint of an OpenSSH public key line, as ``ssh-keygen -l`` shows it."""
    blob = base64.b64decode(public_openssh.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def generate_keypair(comment: str = "") -> KeyPair:
    """A fresh Ed25519 key pair; ``comment`` (e.g. ``shell-<id>``) ends the public key line."""
    if any(c in comment for c in "\r\n"):
        raise ValueError("a key comment must be a single line")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode("ascii")
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode("ascii")
    )
    if comment.strip():
        public = f"{public} {comment.strip()}"
    return KeyPair(private_pem=private_pem, public_openssh=public)


def load_private_key(private_pem: str) -> paramiko.PKey:
    """A paramiko key from an OpenSSH-format Ed25519 private key (a host key, or a client's)."""
    import paramiko

    try:
        return paramiko.Ed25519Key(file_obj=io.StringIO(private_pem))
    except paramiko.SSHException as e:
        raise ValueError(f"not an unencrypted OpenSSH Ed25519 private key: {e}") from None


def parse_authorized_keys(text: str) -> list[paramiko.PKey]:
    """The public keys in ``authorized_keys`` text: one ``type base64 [comment]`` per line.

    Blank lines and ``#`` comments are skipped. Lines with OpenSSH options before the key type
    (``command="…"``, ``from=…``) are refused rather than ignored: silently dropping a restriction
    would give the key more than its owner meant to give it.
    """
    import paramiko
    from paramiko.pkey import UnknownKeyType

    keys: list[paramiko.PKey] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) < 2:
            raise ValueError(f"authorized key line {number}: expected 'type base64 [comment]'")
        key_type, data = fields[0], fields[1]
        try:
            blob = base64.b64decode(data, validate=True)
            keys.append(paramiko.PKey.from_type_string(key_type, blob))
        except (binascii.Error, ValueError, UnknownKeyType, paramiko.SSHException) as e:
            raise ValueError(
                f"authorized key line {number}: not a public key of a supported type "
                f"({key_type[:40]!r}; key options are not supported): {e}"
            ) from None
    return keys
