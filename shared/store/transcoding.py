"""Decoding stored events fast: orjson in place of the standard library's JSON decoder.

Rebuilding a read model decodes every stored event, and most of a replay's time was the
library's JSONTranscoder: the pure-Python `json` object hook runs for every JSON object, and
the decoder is three times slower than orjson. Encoding stays the library's: the bytes written
(and the MAC over them) are exactly what they were. Decoding gives the same values: anything
orjson refuses or reads differently (NaN, lone surrogates, integers beyond 64 bits) falls back to
the library's decoder, so a stored event never reads differently."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    Transcoding,
    UUIDAsHex,
)

TYPE_KEY = b'"_type_"'
_DIGITS_AS_ZERO = bytes(ord("0") if 0x30 <= i <= 0x39 else i for i in range(256))
_LONG_NUMBER = b"0" * 19
_ISO = DatetimeAsISO.name
_fromisoformat = datetime.fromisoformat


class FastJSONTranscoder(JSONTranscoder):
    # The timestamps' fast path decodes as DatetimeAsISO does: only while that is the
    # transcoding registered under its name.
    _iso_is_the_library_s = False

    def register(self, transcoding: Transcoding) -> None:
        super().register(transcoding)
        self._iso_is_the_library_s = type(self.names.get(_ISO)) is DatetimeAsISO

    def decode(self, data: bytes) -> Any:
        # orjson reads an integer beyond 64 bits as a float, silently: a state with a run of
        # 19 digits anywhere (a cheap bound on such an integer) takes the library's path.
        if data.translate(_DIGITS_AS_ZERO).find(_LONG_NUMBER) >= 0:
            return super().decode(data)
        try:
            decoded = orjson.loads(data)
        except orjson.JSONDecodeError:
            return super().decode(data)
        # Every transcoded value ({"_type_": name, "_data_": ...}) spells `"_type_"` once in the
        # bytes (inside a JSON string the quotes would be escaped): the count bounds how many
        # there are to find, so the walk stops as soon as it has found them all (usually the
        # event's timestamp, its first field) instead of visiting every nested value.
        # A key spelt with escapes (`"\u005ftype_"`) is the same key to a JSON decoder but not
        # to the count: where the bytes hold any escape there is no bound, and the walk visits
        # everything (-1 never counts down to 0). (`find` of one byte is memchr: cheap.)
        left = -1 if data.find(b"\\") >= 0 else data.count(TYPE_KEY)
        if not left:
            return decoded
        if left == 1 and type(decoded) is dict:
            # The usual event: its timestamp the one transcoded value. (Exactly the walk's
            # answer: one `"_type_"` in the bytes is this one, nothing else is transcoded.)
            stamp = decoded.get("timestamp")
            if (type(stamp) is dict and len(stamp) == 2 and stamp.get("_type_") == _ISO
                    and type(stamp.get("_data_")) is str and self._iso_is_the_library_s):
                decoded["timestamp"] = _fromisoformat(stamp["_data_"])
                return decoded
        try:
            return self._transcoded(decoded, left)
        except _Unusual:
            return super().decode(data)

    def _transcoded(self, decoded: Any, left: int) -> Any:
        if type(decoded) is not dict or (
                len(decoded) == 2 and "_type_" in decoded and "_data_" in decoded):
            return self._walk(decoded, left)[0]
        # An event's state: its fields, the walk's first level inlined, and a transcoded
        # field of a plain value (a timestamp, a UUID) decoded on the spot.
        for key, item in decoded.items():
            kind = type(item)
            if kind is dict:
                data_ = item.get("_data_", item)
                if len(item) == 2 and "_type_" in item and type(data_) is not dict and type(
                        data_) is not list:
                    decoded[key] = self._transcoding(item["_type_"]).decode(data_)
                    left -= 1
                else:
                    decoded[key], left = self._walk(item, left)
            elif kind is list:
                decoded[key], left = self._walk(item, left)
            if not left:
                break
        return decoded

    def _walk(self, value: Any, left: int) -> tuple[Any, int]:
        """`value` with its transcoded parts decoded; and how many may still be left."""
        if type(value) is dict:
            if len(value) == 2 and "_type_" in value and "_data_" in value:
                transcoding = self._transcoding(value["_type_"])
                data, left = self._walk(value["_data_"], left - 1)
                return transcoding.decode(data), left
            for key, item in value.items():
                if not left:
                    break
                if type(item) is dict or type(item) is list:
                    value[key], left = self._walk(item, left)
            return value, left
        if type(value) is list:
            for i, item in enumerate(value):
                if not left:
                    break
                if type(item) is dict or type(item) is list:
                    value[i], left = self._walk(item, left)
            return value, left
        return value, left

    def _transcoding(self, name: Any) -> Transcoding:
        transcoding = self.names.get(name) if type(name) is str else None
        if transcoding is None:
            raise _Unusual  # the library's decoder then reads it, or fails as it fails
        return transcoding


class _Unusual(Exception):
    """A state the fast path does not read the library's way (an unknown transcoding name)."""


def qiji_transcoder() -> FastJSONTranscoder:
    """The transcodings every Qiji application registers (eventsourcing's defaults)."""
    transcoder = FastJSONTranscoder()
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
        transcoder.register(transcoding)
    return transcoder
