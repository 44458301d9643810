"""How the domain names enum values in messages meant for callers: as the wire does.

A domain enum value `STREET` travels as `ORGANISATION_KIND_STREET` (buf style: every value of
proto enum `OrganisationKind` carries the prefix `ORGANISATION_KIND_`; shared/grpc/convert.py
strips and adds it). A caller reading a field violation must find there the name it sends, so
the domain renders its values with this, without importing protobuf. Which prefix each domain
enum has is declared beside the enum (its values module) and checked against the generated
protos by tests/unit/test_wire_names.py."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


def wire_name(value: StrEnum | str, prefix: str) -> str:
    """`wire_name(OrganisationKind.STREET, "ORGANISATION_KIND")` → "ORGANISATION_KIND_STREET"."""
    return f"{prefix}_{value}"


def wire_names(values: Iterable[StrEnum | str], prefix: str) -> str:
    """Several values for a message, sorted: "ORGANISATION_KIND_CITY, ORGANISATION_KIND_STREET";
    never a Python list's repr."""
    return ", ".join(sorted(wire_name(v, prefix) for v in values))


def one_of(values: Iterable[StrEnum | str], prefix: str) -> str:
    """"ORGANISATION_KIND_CITY" for one value, "one of A, B" for several."""
    names = sorted(wire_name(v, prefix) for v in values)
    return names[0] if len(names) == 1 else "one of " + ", ".join(names)
