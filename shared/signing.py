"""Keys as Qiji configures them: 32 bytes, base64, in a setting or in a file holding them — the
master key, and the Ed25519 seeds the badge issuer and the audit checkpoints sign with. Never
generated per run: what was sealed or signed yesterday must open or verify tomorrow. Only the
embedded default (SQLite) makes the file once, and keeps it."""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path


def load_key(value: str, key_file: os.PathLike[str] | str, *, create: bool, setting: str,
             what: str) -> bytes:
    """32 bytes from `value` (base64) if set, else from `key_file` (made once, mode 0600, when
    `create`); FileNotFoundError naming `setting` when there is none."""
    path = Path(key_file)
    if not value:
        if not path.exists():
            if not create:
                raise FileNotFoundError(
                    f"no {what}: set {setting} (base64 of 32 bytes) or create {path}")
            _make(path)
        value = path.read_text().strip()
    try:
        key = base64.b64decode(value)
    except (binascii.Error, ValueError):
        raise ValueError(f"{setting}: the {what} is not base64") from None
    if len(key) != 32:
        raise ValueError(f"{setting}: the {what} must decode to 32 bytes, not {len(key)}")
    return key


def _make(key_file: Path) -> None:
    # Written under a temporary name and linked into place, so that a second process starting
    # at the same moment never reads a half-written key, and both keep the same one.
    key_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = key_file.with_name(f"{key_file.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(base64.b64encode(os.urandom(32)).decode())
    try:
        os.link(tmp, key_file)
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
