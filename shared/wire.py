"""How the domain names enum values in messages meant for callers: as the wire does.

A domain enum value `OrganisationKind.STREET` travels as `ORGANISATION_KIND_STREET` (buf style:
every value of proto enum `OrganisationKind` carries the prefix `ORGANISATION_KIND_`;
shared/grpc/convert.py strips and adds it). A caller reading a field violation must find there
the name it sends, so the domain renders its values with these, without importing protobuf.

The prefix is the domain enum's class name in UPPER_SNAKE: every domain enum is named as its
proto enum, with the same values in the same order. tests/unit/test_wire_names.py holds every
domain enum of every service to that against the generated protos."""

from __future__ import annotations

import re
from collections.abc import Iterable
from enum import StrEnum

_WORD_START = re.compile(r"(?<!^)(?=[A-Z])")


def wire_prefix(enum: type[StrEnum]) -> str:
    """`OrganisationKind` → "ORGANISATION_KIND"."""
    return _WORD_START.sub("_", enum.__name__).upper()


def wire_name(value: StrEnum) -> str:
    """`OrganisationKind.STREET` → "ORGANISATION_KIND_STREET"."""
    return f"{wire_prefix(type(value))}_{value.value}"


def unspecified(enum: type[StrEnum]) -> str:
    """`OrganisationKind` → "ORGANISATION_KIND_UNSPECIFIED", the zero value a caller leaves."""
    return f"{wire_prefix(enum)}_UNSPECIFIED"


def must_be_specified(enum: type[StrEnum]) -> str:
    """"must be specified (not TRACK_UNSPECIFIED)", for a field left UNSPECIFIED."""
    return f"must be specified (not {unspecified(enum)})"


def one_of(enum: type[StrEnum]) -> str:
    """"must be one of A, B": every value of `enum` in its order (the proto's), for a field
    left UNSPECIFIED."""
    return "must be one of " + ", ".join(wire_name(v) for v in enum)


def alternatives(values: Iterable[StrEnum]) -> str:
    """Some values a rule allows, sorted: "ORGANISATION_KIND_STREET" for one, "one of
    ORGANISATION_KIND_CITY, ORGANISATION_KIND_STREET" for several; never a Python list's repr."""
    names = sorted(wire_name(v) for v in values)
    return names[0] if len(names) == 1 else "one of " + ", ".join(names)


# The contract's resource types (google.api.resource, AIP-123) of what the services' NotFound
# and references call by a kind: "street" → "qiji.city/Organisation" (a street is an
# organisation). What a caller reads in google.rpc.ResourceInfo.resource_type and in a
# REFERENCE_KIND_NOT_ALLOWED description, as the protos' resource_reference annotations name
# it. A kind missing here is shown as itself.
RESOURCE_TYPES = {
    **dict.fromkeys(("organisation", "street", "department", "community", "district",
                     "station", "platform", "education_provider", "business_area"),
                  "qiji.city/Organisation"),
    "rider": "qiji.city/Rider",
    "service_space": "qiji.city/ServiceSpace",
    "consent": "qiji.city/ConsentGrant",
    "course": "qiji.city/Course",
    "session": "qiji.city/Session",
    "merchant": "qiji.city/Merchant",
    "perk": "qiji.city/PerkOffer",
    "claim": "qiji.city/Claim",
    "campaign": "qiji.city/CareCampaign",
    "badge_class": "qiji.city/BadgeClass",
    "award": "qiji.city/Award",
    "shift": "qiji.city/VolunteerShift",
    "award_ceremony": "qiji.city/AwardCeremony",
    "recognition_title": "qiji.city/RecognitionTitle",
    "recognition": "qiji.city/Recognition",
    "report": "qiji.city/Report",
    "mediation_case": "qiji.city/MediationCase",
    "pledge": "qiji.city/Pledge",
    "pledge_version": "qiji.city/Pledge",
    "routing_rules": "qiji.city/RoutingRules",
    "routing_rules_version": "qiji.city/RoutingRules",
}


def resource_type(kind: str) -> str:
    """"street" → "qiji.city/Organisation"; a kind the contract has no type for, as itself."""
    return RESOURCE_TYPES.get(kind, kind)
