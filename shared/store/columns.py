"""A save's columns as PostgreSQL binary arrays, built in one pass.

The group-commit statement (shared/store/recorder.py) sends each column of a batch as one array
parameter. psycopg's generic list dumper looks, on every call and for every list, for the
element type, a dumper for it and the array's type (`_find_list_element`, `get_key`,
`upgrade`), then dumps element by element through that dumper: about 38 µs of CPU for the four
arrays of a two-event save on this machine, against 9 µs for what is here (bench/bench_store.py
prints both, as saves per second). The element type of each column is known in advance, so
the array is written directly in PostgreSQL's binary array format (arrayfuncs.c `array_send`):
dimensions, lower bound, the element type's oid, then each element as its length and bytes, or
a length of -1 for NULL."""

from __future__ import annotations

import struct
import uuid
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import psycopg
from psycopg.adapt import Dumper
from psycopg.pq import Format

_HEADER = struct.Struct("!iiIii")  # ndim = 1, has-nulls, element oid, length, lower bound = 1
_EMPTY = struct.Struct("!iiI")  # ndim = 0, no nulls, element oid
_LENGTH = struct.Struct("!i")
_NULL = _LENGTH.pack(-1)


class Column(list[Any]):
    """One column's values, to be sent as one binary array of `element` (a subclass per
    PostgreSQL type, below)."""

    element: ClassVar[str]
    element_oid: ClassVar[int]
    array_oid: ClassVar[int]

    @staticmethod
    def encode(value: Any) -> bytes:
        raise NotImplementedError


def _uuid(value: Any) -> bytes:
    return (value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))).bytes


class UuidColumn(Column):
    element, element_oid, array_oid = "uuid", 2950, 2951
    encode = staticmethod(_uuid)


class BigintColumn(Column):
    element, element_oid, array_oid = "bigint", 20, 1016

    @staticmethod
    def encode(value: Any) -> bytes:
        return int(value).to_bytes(8, "big", signed=True)


class TextColumn(Column):
    element, element_oid, array_oid = "text", 25, 1009

    @staticmethod
    def encode(value: Any) -> bytes:
        return (value if isinstance(value, str) else str(value)).encode()


class ByteaColumn(Column):
    element, element_oid, array_oid = "bytea", 17, 1001

    @staticmethod
    def encode(value: Any) -> bytes:
        return bytes(value)


COLUMNS: dict[str, type[Column]] = {c.element: c for c in
                                    (UuidColumn, BigintColumn, TextColumn, ByteaColumn)}


def column(element: str, values: Iterable[Any]) -> list[Any]:
    """`values` as a column of PostgreSQL type `element`: one of COLUMNS, or a plain list that
    psycopg dumps its own way for any other type."""
    kind = COLUMNS.get(element)
    return kind(values) if kind is not None else list(values)


def array(column: Column) -> bytes:
    if not column:
        return _EMPTY.pack(0, 0, column.element_oid)
    encode: Callable[[Any], bytes] = column.encode
    pack = _LENGTH.pack
    parts = [_NULL if v is None else pack(len(b := encode(v))) + b for v in column]
    nulls = 1 if any(v is None for v in column) else 0
    return _HEADER.pack(1, nulls, column.element_oid, len(column), 1) + b"".join(parts)


def _dumper(kind: type[Column]) -> type[Dumper]:
    class ColumnDumper(Dumper):
        format = Format.BINARY
        oid = kind.array_oid

        def dump(self, obj: Any) -> bytes:
            return array(obj)

    ColumnDumper.__name__ = f"{kind.__name__}Dumper"
    return ColumnDumper


def register(adapters: Any = None) -> None:
    """Teaches psycopg (every connection, unless `adapters` is given) to send the columns
    above as binary arrays. Only these classes are affected: a plain list is dumped as before."""
    target = adapters if adapters is not None else psycopg.adapters
    for kind in COLUMNS.values():
        target.register_dumper(kind, _dumper(kind))


register()
