"""Messages name enum values as the wire does (issue 23). shared/wire.py derives a domain enum's
prefix from its class name, so every domain enum of every service that answers callers must be
named as its proto enum and have that enum's values, in its order; the domain's messages then
use names a caller sends."""

from __future__ import annotations

import importlib
import pkgutil
from enum import StrEnum

import pytest
from qiji.badges.v1 import badges_service_pb2
from qiji.governance.v1 import governance_service_pb2
from qiji.identity.v1 import identity_service_pb2
from qiji.merchants.v1 import merchants_service_pb2
from qiji.training.v1 import training_service_pb2

from services.identity.domain.model import Organisation
from services.identity.domain.values import DepartmentFunction, OrganisationKind
from services.training.domain.values import Track
from shared.errors import Violations
from shared.wire import alternatives, must_be_specified, one_of, unspecified, wire_name, wire_prefix

PROTOS = {"identity": identity_service_pb2, "training": training_service_pb2,
          "merchants": merchants_service_pb2, "badges": badges_service_pb2,
          "governance": governance_service_pb2}


def domain_enums(service: str) -> list[type[StrEnum]]:
    """Every StrEnum defined in a module of services/<service>/domain/."""
    package = importlib.import_module(f"services.{service}.domain")
    found = []
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        found += [value for value in vars(module).values()
                  if isinstance(value, type) and issubclass(value, StrEnum)
                  and value.__module__ == module.__name__]
    return found


ENUMS = [(service, enum) for service in PROTOS for enum in domain_enums(service)]


def test_the_scan_sees_every_services_domain_enums() -> None:
    # Not vacuous: a renamed domain package would otherwise leave the test below passing over
    # nothing.
    assert {service for service, _ in ENUMS} == set(PROTOS)
    assert len(ENUMS) >= 30, len(ENUMS)


@pytest.mark.parametrize(("service", "enum"), ENUMS,
                         ids=[f"{service}.{enum.__name__}" for service, enum in ENUMS])
def test_every_domain_enum_is_named_and_valued_as_its_proto_enum(service, enum) -> None:
    proto = PROTOS[service].DESCRIPTOR.enum_types_by_name.get(enum.__name__)
    assert proto is not None, (
        f"services/{service}: {enum.__name__} has no proto enum of its name, so shared/wire.py "
        f"would name its values wrongly")
    names = [value.name for value in proto.values]
    assert names[0] == unspecified(enum)
    assert names[1:] == [wire_name(member) for member in enum]
    # What a description lists is exactly what the proto names (bar UNSPECIFIED), in its order.
    assert one_of(enum) == "must be one of " + ", ".join(names[1:])


def test_the_prefix_is_the_class_name_in_upper_snake() -> None:
    assert wire_prefix(OrganisationKind) == "ORGANISATION_KIND"
    assert wire_name(OrganisationKind.STREET) == "ORGANISATION_KIND_STREET"
    assert must_be_specified(Track) == "must be specified (not TRACK_UNSPECIFIED)"


def test_several_values_are_listed_by_name_not_as_a_python_list() -> None:
    kinds = [OrganisationKind.STREET, OrganisationKind.CITY]
    assert alternatives(kinds) == "one of ORGANISATION_KIND_CITY, ORGANISATION_KIND_STREET"
    assert alternatives(kinds[:1]) == "ORGANISATION_KIND_STREET"


def check(kind, parent_kind, *, parent_given=True, function=None, name="x"):
    violations = Violations()
    Organisation.check(violations, kind, name, parent_kind, parent_given, function)
    return [(v.field, v.reason, v.description) for v in violations.items]


def test_a_parent_of_a_kind_not_allowed_is_named_by_wire_names() -> None:
    [(field, reason, description)] = check(OrganisationKind.DEPARTMENT,
                                           OrganisationKind.COMMUNITY,
                                           function=DepartmentFunction.PETITIONS)
    assert (field, reason) == ("parent_id", "PARENT_KIND_NOT_ALLOWED")
    assert description == (
        "the parent of an ORGANISATION_KIND_DEPARTMENT must be one of ORGANISATION_KIND_CITY, "
        "ORGANISATION_KIND_DISTRICT, ORGANISATION_KIND_STREET, not an ORGANISATION_KIND_COMMUNITY")


def test_each_rule_of_the_tree_has_its_reason() -> None:
    assert [r for _, r, _ in check(OrganisationKind.DISTRICT, None, parent_given=False)] == [
        "PARENT_REQUIRED"]
    assert [r for _, r, _ in check(OrganisationKind.CITY, OrganisationKind.CITY)] == [
        "PARENT_NOT_ALLOWED"]
    # A parent given that names nothing: its own violation says so, its kind is not judged.
    assert check(OrganisationKind.STREET, None) == []
    assert [r for _, r, _ in check(OrganisationKind.DEPARTMENT, OrganisationKind.CITY)] == [
        "DEPARTMENT_FUNCTION_REQUIRED"]
    assert [r for _, r, _ in check(OrganisationKind.CITY, None, parent_given=False,
                                   function=DepartmentFunction.PETITIONS)] == [
        "DEPARTMENT_FUNCTION_NOT_ALLOWED"]
    assert [(f, r) for f, r, _ in check(None, None, parent_given=False, name="")] == [
        ("name", "FIELD_REQUIRED"), ("kind", "ENUM_VALUE_REQUIRED")]
    assert [(f, r) for f, r, _ in check(OrganisationKind.CITY, None, parent_given=False,
                                        name="长" * 101)] == [("name", "TEXT_TOO_LONG")]
