"""Encryption at rest for secrets and private keys (Fernet: AES-128-CBC with HMAC-SHA256)."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from gatehouse.private_files import make_private_directory


def load_or_create_key(path: Path) -> bytes:
    """`$GATEHOUSE_ENCRYPTION_KEY`, else a key file made on first start, readable by its owner only."""
    configured = os.environ.get("GATEHOUSE_ENCRYPTION_KEY")
    if configured:
        return configured.encode()
    if path.exists():
        return path.read_bytes().strip()
    make_private_directory(path.parent)
    key = Fernet.generate_key()
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(key)
    return key


def configured_key(path: Path) -> bytes:
    """`$GATEHOUSE_ENCRYPTION_KEY`, else the registry's key file on this machine; a process other than
    the registry never makes a key of its own (it could decrypt nothing the registry encrypted)."""
    configured = os.environ.get("GATEHOUSE_ENCRYPTION_KEY")
    if configured:
        return configured.encode()
    try:
        return path.read_bytes().strip()
    except OSError:
        raise SystemExit(
            "error: no encryption key: set GATEHOUSE_ENCRYPTION_KEY to the registry's key "
            f"(or run this process with the registry's GATEHOUSE_HOME, which keeps it in {path})"
        ) from None


class Cipher:
    def __init__(self, key: bytes) -> None:
        try:
            self._fernet = Fernet(key)
        except ValueError:
            raise SystemExit(
                "error: the encryption key is not a Fernet key (32 url-safe base64 bytes); "
                "make one with "
                "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key())'`"
            ) from None

    def encrypt(self, plaintext: str) -> bytes:
        return self._fernet.encrypt(plaintext.encode())

    def decrypt(self, ciphertext: bytes) -> str:
        try:
            return self._fernet.decrypt(ciphertext).decode()
        except InvalidToken:
            raise ValueError("a stored secret cannot be decrypted with this encryption key") from None
