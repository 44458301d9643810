"""The consumer's opaque cursor: for each service, the log position to read next. Encoded as
URL-safe base64 of a small versioned JSON document; anything else is an invalid argument."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping

from shared.errors import FieldViolation, InvalidArgument

VERSION = 1
MAX_POSITION = 2**63 - 1
MAX_CURSOR_LENGTH = 1024


def encode(positions: Mapping[str, int]) -> str:
    """Positions at their start (1) are left out, so the empty cursor is the beginning."""
    kept = {s: p for s, p in sorted(positions.items()) if p > 1}
    raw = json.dumps({"v": VERSION, "p": kept}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str, services: Iterable[str], *, field: str = "cursor") -> dict[str, int]:
    """The positions a cursor holds (1 for a service it does not name); the empty cursor is the
    beginning of every log."""
    known = set(services)
    positions = dict.fromkeys(known, 1)
    if not cursor:
        return positions
    try:
        if len(cursor) > MAX_CURSOR_LENGTH:
            raise ValueError("too long")
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(data, dict) or data.get("v") != VERSION or not isinstance(
                data.get("p"), dict):
            raise ValueError("not a cursor")
        for service, position in data["p"].items():
            if (service not in known or type(position) is not int
                    or not 1 <= position <= MAX_POSITION):
                raise ValueError("not a cursor")
            positions[service] = position
    except (ValueError, binascii.Error, UnicodeDecodeError, RecursionError):
        raise InvalidArgument([FieldViolation(
            field, "not a cursor this feed gave out; start again with an empty cursor",
            "CURSOR_INVALID")]
        ) from None
    return positions
