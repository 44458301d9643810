"""Messages name enum values as the wire does (issue 23): each domain enum's declared prefix
gives, for every value, a name its proto enum has, and the domain's messages use them."""

from __future__ import annotations

import pytest
from qiji.identity.v1 import identity_service_pb2 as ipb
from qiji.training.v1 import training_service_pb2 as tpb

from services.identity.domain import values as identity_values
from services.identity.domain.model import Organisation, check_opening_hours
from services.identity.domain.values import DepartmentFunction, OrganisationKind
from services.training.domain import values as training_values
from shared.errors import Violations
from shared.wire import one_of, wire_name, wire_names

DOMAINS = [(identity_values, ipb), (training_values, tpb)]


@pytest.mark.parametrize(("values", "pb"), DOMAINS, ids=["identity", "training"])
def test_every_domain_enum_value_renders_as_its_proto_enum_name(values, pb) -> None:
    for enum, prefix in values.WIRE_PREFIXES.items():
        proto = getattr(pb, enum.__name__)
        assert proto.Name(0) == f"{prefix}_UNSPECIFIED"
        for member in enum:
            assert proto.Value(wire_name(member, prefix)), (enum, member)


def test_several_values_are_listed_by_name_not_as_a_python_list() -> None:
    kinds = [OrganisationKind.STREET, OrganisationKind.CITY]
    assert wire_names(kinds, "ORGANISATION_KIND") == (
        "ORGANISATION_KIND_CITY, ORGANISATION_KIND_STREET")
    assert one_of(kinds, "ORGANISATION_KIND") == (
        "one of ORGANISATION_KIND_CITY, ORGANISATION_KIND_STREET")
    assert one_of(kinds[:1], "ORGANISATION_KIND") == "ORGANISATION_KIND_STREET"


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


def test_each_fault_of_opening_hours_has_its_reason() -> None:
    violations = Violations()
    check_opening_hours(violations, [
        {"weekday": 8, "opens": "08:00", "closes": "20:00"},
        {"weekday": 1, "opens": "25:00", "closes": "20:00"},
        {"weekday": 2, "opens": "20:00", "closes": "08:00"},
        {"weekday": 2, "opens": "08:00", "closes": "09:00"},
    ])
    assert [(v.field, v.reason) for v in violations.items] == [
        ("opening_hours[0].weekday", "VALUE_OUT_OF_RANGE"),
        ("opening_hours[1].opens", "TIME_INVALID"),
        ("opening_hours[2].closes", "CLOSES_NOT_AFTER_OPENS"),
        ("opening_hours[3].weekday", "DUPLICATE_VALUE"),
    ]
