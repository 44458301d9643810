"""Keys as Qiji configures them: 32 bytes, base64, in a setting or in a file holding them — the
master key, and the Ed25519 seeds the badge issuer and the audit checkpoints sign with. Never
generated per run: what was sealed or signed yesterday must open or verify tomorrow. Only the
embedded default (SQLite) makes the file once, and keeps it."""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from shared.config import ConfigError
from shared.files import create_once


class KeyMissing(ConfigError, FileNotFoundError):
    """Neither the key's setting nor its file: the process must not start (a configuration
    error to a service, a missing file to the operator's scripts)."""


class BadKey(ConfigError, ValueError):
    """The key is not base64 of 32 bytes (the message never repeats it)."""


def load_key(value: str, key_file: os.PathLike[str] | str, *, create: bool, setting: str,
             what: str) -> bytes:
    """32 bytes from `value` (base64) if set, else from `key_file` (made once, mode 0600, when
    `create`); KeyMissing (a FileNotFoundError) naming `setting` when there is none, BadKey (a
    ValueError) when it is not base64 of 32 bytes: both configuration errors."""
    path = Path(key_file)
    if not value:
        if not path.exists():
            if not create:
                raise KeyMissing(
                    f"no {what}: set {setting} (base64 of 32 bytes) or create {path}")
            # Made once and linked into place: never half-written, the same for all.
            create_once(path, base64.b64encode(os.urandom(32)).decode())
        try:
            value = path.read_text().strip()
        except (OSError, UnicodeDecodeError) as error:
            why = error.strerror if isinstance(error, OSError) else "not base64 text"
            raise BadKey(f"{setting}: the {what}'s file {path} cannot be read: {why}") from None
    try:
        key = base64.b64decode(value)
    except (binascii.Error, ValueError):
        raise BadKey(f"{setting}: the {what} is not base64") from None
    if len(key) != 32:
        raise BadKey(f"{setting}: the {what} must decode to 32 bytes, not {len(key)}")
    return key
