"""Secrets at rest: what the service must keep but never show (a tool server's headers).

Why encrypt at all: a tool server's headers usually carry its credentials (an
``Authorization`` header). A database backup, a replica or a support dump must not hand them
out, and no API answer ever returns them; only the service itself, when it calls the server,
needs them in clear. So they are stored sealed with Fernet (AES-128-CBC with an HMAC-SHA256:
a token that cannot be read, or changed unnoticed, without the key).

The key lives outside the database, or sealing would protect nothing:

- ``AICHATS_SECRET_KEY`` (any string; SHA-256 of it is the key), the setting for deployments
  where several machines share one database, which must all hold the same key;
- else a random key generated on first use into ``<AICHATS_FILES_DIR>/secret.key``, readable
  by the service's user only (0600). It is written under a temporary name and linked into
  place, which fails if the file already exists: two processes starting at once both end up
  with the one key that won, never with two keys or with a half-written file.

Changing the key makes what was sealed unreadable (:class:`UnsealError`): tool servers must
then be registered again.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from aichats.config import Settings

KEY_FILE = "secret.key"


class UnsealError(Exception):
    """A token this key did not seal (the key changed since, or the token was altered)."""


class Sealer:
    """Sealing with one key: what a service is given (services do not read settings).

    The key is read (or, from the key file, generated) on the first seal or unseal, not
    before: a turn or a listing that meets no sealed header touches no key file."""

    def __init__(self, key: Callable[[], str]) -> None:
        self._key = key
        self._fernet: Fernet | None = None

    @property
    def fernet(self) -> Fernet:
        if self._fernet is None:
            self._fernet = _fernet(self._key())
        return self._fernet

    def seal(self, text: str) -> str:
        """``text`` encrypted and authenticated, as ASCII."""
        return self.fernet.encrypt(text.encode()).decode("ascii")

    def unseal(self, token: str) -> str:
        """The text :meth:`seal` sealed into ``token``; :class:`UnsealError` if this key did not seal it."""
        try:
            return self.fernet.decrypt(token.encode("ascii")).decode()
        except (InvalidToken, UnicodeError):
            raise UnsealError(
                "it was sealed with another key (AICHATS_SECRET_KEY, or the key file, changed since)"
            ) from None


def sealer(settings: Settings) -> Sealer:
    """The service's :class:`Sealer`: its key from ``AICHATS_SECRET_KEY``, else from the key file."""
    return Sealer(lambda: _key_material(settings))


def seal(settings: Settings, text: str) -> str:
    """``text`` encrypted and authenticated with the service's key, as ASCII."""
    return sealer(settings).seal(text)


def unseal(settings: Settings, token: str) -> str:
    """The text :func:`seal` sealed into ``token``; :class:`UnsealError` if this key did not seal it."""
    return sealer(settings).unseal(token)


def _key_material(settings: Settings) -> str:
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value()
    return _key_file(str(Path(settings.files_dir).resolve() / KEY_FILE))


@lru_cache(maxsize=16)
def _fernet(material: str) -> Fernet:
    """The Fernet of a key material: its SHA-256 is the key, in the URL-safe base64 Fernet takes."""
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(material.encode()).digest()))


@lru_cache(maxsize=16)
def _key_file(path: str) -> str:
    """The key in ``path``, generated there first if the file does not exist yet."""
    target = Path(path)
    try:
        return _read_key(target)
    except FileNotFoundError:
        pass
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_urlsafe(32) + "\n")
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temporary, target)  # atomic, and never replaces a key another process linked first
        except FileExistsError:
            pass
    finally:
        temporary.unlink(missing_ok=True)
    return _read_key(target)


def _read_key(path: Path) -> str:
    key = path.read_text().strip()
    if not key:
        raise RuntimeError(f"the key file {path} is empty; remove it to have a new key generated")
    return key
