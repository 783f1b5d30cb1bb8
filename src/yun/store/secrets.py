"""Secrets at rest: upstream API keys (and upstream URLs that carry credentials) are stored encrypted.

Fernet (AES-128-CBC with HMAC-SHA256, from `cryptography`) with one key per installation: from the
settings (`YUN_SECRETS__KEY`, the same on every gateway that shares a database) or else from a key file
in the data dir, created with mode 0600 at first use. A sealed value is stored as `fernet:<token>`;
anything else is a value written before encryption existed, which `ModelRepository.seal_plaintext`
rewrites at start. A missing, malformed or wrong key is a `SecretKeyError` with a message, never a
traceback.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from yun.errors import SecretKeyError

__all__ = ["SEALED_PREFIX", "SecretBox", "is_sealed", "load_key"]

SEALED_PREFIX = "fernet:"


class SecretBox:
    """Seals and opens short secrets with the installation's key."""

    def __init__(self, key: bytes, source: str) -> None:
        try:
            self._fernet = Fernet(key)
        except (ValueError, TypeError) as exc:
            raise SecretKeyError(
                f"the secrets key from {source} is malformed: it must be 32 bytes in URL-safe base64, as "
                "Fernet.generate_key() from the cryptography package makes"
            ) from exc
        self.source = source
        """Where the key came from, for error messages (never the key itself)."""

    def seal(self, value: str | None) -> str | None:
        if value is None or is_sealed(value):
            return value
        return SEALED_PREFIX + self._fernet.encrypt(value.encode()).decode()

    def open(self, stored: str | None) -> str | None:
        if stored is None or not is_sealed(stored):
            return stored  # written before encryption; sealed at the next start
        try:
            return self._fernet.decrypt(stored[len(SEALED_PREFIX) :].encode()).decode()
        except InvalidToken as exc:
            raise SecretKeyError(
                f"stored secrets cannot be decrypted with the key from {self.source}: it is not the key they "
                "were encrypted with (every gateway sharing a database needs the same YUN_SECRETS__KEY)"
            ) from exc


def is_sealed(stored: str) -> bool:
    return stored.startswith(SEALED_PREFIX)


def load_key(configured: str | None, key_file: Path) -> SecretBox:
    """The box for the configured key, or for the key in `key_file`, which is created (mode 0600) if
    absent. Two processes starting at once end up with the same key: the file appears atomically."""
    if configured:
        return SecretBox(configured.strip().encode(), "YUN_SECRETS__KEY (secrets.key setting)")
    source = f"the key file {key_file}"
    try:
        return SecretBox(key_file.read_bytes().strip(), source)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise SecretKeyError(f"cannot read {source}: {exc.strerror}") from exc
    try:
        key_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        draft = key_file.with_name(f".{key_file.name}.{os.getpid()}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(Fernet.generate_key() + b"\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(draft, key_file)  # fails if another process made the file first: then use theirs
        except FileExistsError:
            pass
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(draft)
        return SecretBox(key_file.read_bytes().strip(), source)
    except OSError as exc:
        raise SecretKeyError(f"cannot create {source}: {exc.strerror}") from exc
