"""Files only their owner may read (mode 0600): keys, tokens, the run directory's settings.
One writer for each way such a file is made, so that none is ever seen half-written or with
a wider mode."""

from __future__ import annotations

import os
import threading
from pathlib import Path


def _temporary(path: Path) -> Path:
    return path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")


def _write_new(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return tmp


def write_private(path: os.PathLike[str] | str, text: str) -> None:
    """Writes `path` whole, mode 0600, replacing what was there (a reader sees the old file or
    the new one, never a part; an older file's wider mode is not kept)."""
    path = Path(path)
    os.replace(_write_new(path, text), path)


def create_once(path: os.PathLike[str] | str, text: str) -> None:
    """Creates `path` (mode 0600) holding `text` unless it exists: when two processes start
    at the same moment, the first one's file is the one both use (a key made twice would
    leave them signing or sealing with different keys)."""
    path = Path(path)
    tmp = _write_new(path, text)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
