"""What the entry points read before a command runs joins the command's own findings in one
answer (issue 23): a Timestamp out of range (TIME_INVALID) and an enum number the contract does
not define (ENUM_VALUE_UNKNOWN), at their paths from the request's root, in every RPC of every
service that has such a field, found by walking the request messages' descriptors.

An unknown number is never *_UNSPECIFIED: not a missing value where one is required, and not
"any" in a list's filter or a routing rule. The servicers and applications are called as the
guard calls them (tests/inprocess.py), on one store: what is checked here happens before
anything is read from or written to it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from qiji.governance.v1 import governance_service_pb2 as gpb
from qiji.identity.v1 import identity_service_pb2 as ipb

from shared.errors import InvalidArgument, NotFound, QijiError
from tests.conftest import actor, as_actor, badges_key_env
from tests.inprocess import CallContext, InProcessQiji

UNKNOWN = 4242  # no enum of the contract has a value this high
OUT_OF_RANGE = Timestamp(seconds=10**12)  # the year 33658; Timestamps end with 9999
ADMIN = actor("faults-admin", "city_admin")


def paths(message: Any, want: str, prefix: str = "") -> Iterator[tuple[str, list[Any]]]:
    """Every field of `want` ("enum" or "time") reachable in a message type: its path from the
    root as a violation names it (`rules[0].kind`), and the steps to reach it (field
    descriptors; a repeated one is entered at its first element)."""
    for f in message.fields:
        repeated = is_repeated(f)
        name = prefix + f.name + ("[0]" if repeated else "")
        if want == "enum" and f.enum_type is not None:
            yield name, [f]
        elif want == "time" and f.message_type is not None and (
                f.message_type.full_name == "google.protobuf.Timestamp") and not repeated:
            yield name, [f]
        elif f.message_type is not None and not f.message_type.full_name.startswith(
                "google.") and f.message_type is not message:
            for inner, steps in paths(f.message_type, want, name + "."):
                yield inner, [f, *steps]


def is_repeated(f: Any) -> bool:
    return f.label == f.LABEL_REPEATED if hasattr(f, "label") else f.is_repeated


def build(request_type: Any, steps: list[Any], value: Any) -> Any:
    """A request of `request_type` with `value` at the end of `steps` and nothing else set
    (every message on the way present, every repeated one with one element)."""
    request = request_type()
    target = request
    for f in steps[:-1]:
        target = getattr(target, f.name).add() if is_repeated(f) else getattr(target, f.name)
        if not is_repeated(f):
            target.SetInParent()
    last = steps[-1]
    if is_repeated(last):
        getattr(target, last.name).append(value)
    elif isinstance(value, Timestamp):
        getattr(target, last.name).CopyFrom(value)
    else:
        setattr(target, last.name, value)
    return request


def faults(qiji: InProcessQiji, service: str, path: str, request: Any
           ) -> set[tuple[str, str]] | None:
    """The (field, reason) pairs the RPC refuses `request` with, as the guard would call it;
    None when it is answered (or refused NOT_FOUND: only names of nothing)."""
    handler = qiji.services[service].raw[path].unary_unary
    with as_actor(ADMIN, rpc=path, request=request):
        try:
            handler(request, CallContext(None))
        except InvalidArgument as error:
            return {(v.field, v.reason) for v in error.violations}
        except NotFound:
            return None
        except QijiError as error:
            raise AssertionError(f"{path}: {error.reason} {error.message}") from None
    return None


def cases(want: str) -> list[Any]:
    from google.protobuf import descriptor_pool

    from tests.inprocess import API_NAMES
    found = []
    pool = descriptor_pool.Default()
    services = {**API_NAMES, "audit": "qiji.audit.v1.AuditService"}
    for service, api in services.items():
        for method in pool.FindServiceByName(api).methods:
            for name, steps in paths(method.input_type, want):
                found.append(pytest.param(
                    "identity" if service == "audit" else service, f"/{api}/{method.name}",
                    method.input_type, name, steps, id=f"{method.name}-{name}"))
    return found


@pytest.fixture(scope="module")
def qiji(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessQiji]:
    tmp = tmp_path_factory.mktemp("request-faults")
    q = InProcessQiji({"QIJI_DATA_DIR": str(tmp / "data"), **badges_key_env()},
                      Path(tmp / "tokens.json"))
    yield q
    q.close()


def message_class(descriptor: Any) -> Any:
    from google.protobuf import message_factory
    return message_factory.GetMessageClass(descriptor)


ENUM_CASES = cases("enum")
TIME_CASES = cases("time")


def test_the_sweep_sees_the_fields_it_is_meant_to():
    enums = {c.values[1].rsplit("/", 1)[1] + ":" + c.values[3] for c in ENUM_CASES}
    times = {c.values[1].rsplit("/", 1)[1] + ":" + c.values[3] for c in TIME_CASES}
    assert {"SetRoutingRules:rules[0].kind", "SetRoutingRules:rules[0].category",
            "SetRoutingRules:rules[0].department_functions[0]",
            "SetRoutingRules:deadlines[0].kind", "ListReports:status",
            "DraftCourse:instructor.kind", "OpenMediationCase:parties[0].role",
            "CreateBadgeClass:criteria.track_requirements[0].track",
            "ListVolunteerService:status", "ListServiceSpaces:amenities[0]"} <= enums
    assert len(enums) >= 38, sorted(enums)
    assert {"RecordMediationSession:session.hold_time", "GrantBadge:evidence[0].time",
            "GetStateAsOf:as_of_time", "CreatePerkOffer:valid_from_time",
            "GetTranscript:as_of_time", "SubmitReport:observe_time",
            "LogVolunteerService:start_time", "ListSessions:start_after_time"} <= times
    assert len(times) >= 14, sorted(times)


@pytest.mark.parametrize(("service", "path", "request_type", "field", "steps"), ENUM_CASES)
def test_an_unknown_enum_number_is_refused_at_its_path_with_the_other_faults(
        qiji: InProcessQiji, service: str, path: str, request_type: Any, field: str,
        steps: list[Any]) -> None:
    before = qiji.positions()
    cls = message_class(request_type)
    unspecified = faults(qiji, service, path, build(cls, steps, 0)) or set()
    unknown = faults(qiji, service, path, build(cls, steps, UNKNOWN))
    # Everything the same request with *_UNSPECIFIED there got, but what UNSPECIFIED itself
    # was refused for: that field is refused as unknown instead, in the same answer.
    assert unknown == {f for f in unspecified if f[0] != field} | {
        (field, "ENUM_VALUE_UNKNOWN")}, (unspecified, unknown)
    assert qiji.positions() == before


@pytest.mark.parametrize(("service", "path", "request_type", "field", "steps"), TIME_CASES)
def test_an_unreadable_timestamp_is_refused_at_its_path_with_the_other_faults(
        qiji: InProcessQiji, service: str, path: str, request_type: Any, field: str,
        steps: list[Any]) -> None:
    before = qiji.positions()
    cls = message_class(request_type)
    # The same request with the time left out: the message that holds it still there.
    unset = build(cls, steps, OUT_OF_RANGE)
    holder = unset
    for f in steps[:-1]:
        holder = getattr(holder, f.name)[0] if is_repeated(f) else getattr(holder, f.name)
    holder.ClearField(steps[-1].name)
    without = faults(qiji, service, path, unset) or set()
    unreadable = faults(qiji, service, path, build(cls, steps, OUT_OF_RANGE))
    assert unreadable == {f for f in without if f[0] != field} | {(field, "TIME_INVALID")}, (
        without, unreadable)
    assert qiji.positions() == before


# ---------------------------------------------------------------------------- in particular


def test_a_routing_rule_of_an_unknown_kind_is_refused_not_a_rule_for_every_report(
        qiji: InProcessQiji) -> None:
    """Before, kind 4242 read as REPORT_KIND_UNSPECIFIED: a rule matching every report,
    stored as the city's table. UNSPECIFIED still means any, as the contract says."""
    admin = qiji.token("faults-rules-admin", "city_admin")
    city = qiji.ok("identity", "CreateOrganisation", ipb.CreateOrganisationRequest(
        request_id=str(uuid.uuid4()), kind=ipb.ORGANISATION_KIND_CITY, name="常州市"),
        admin).organisation.organisation_id
    qiji.ok("identity", "CreateOrganisation", ipb.CreateOrganisationRequest(
        request_id=str(uuid.uuid4()), kind=ipb.ORGANISATION_KIND_DEPARTMENT, name="社工站",
        parent_id=city, department_function=ipb.DEPARTMENT_FUNCTION_SOCIAL_WORK), admin)
    before = qiji.positions()
    for rule in (gpb.RoutingRule(name="x", kind=UNKNOWN,
                                 department_functions=[gpb.DEPARTMENT_FUNCTION_SOCIAL_WORK]),
                 gpb.RoutingRule(name="x", category=UNKNOWN,
                                 department_functions=[gpb.DEPARTMENT_FUNCTION_SOCIAL_WORK])):
        refused = qiji.call("governance", "SetRoutingRules", gpb.SetRoutingRulesRequest(
            request_id=str(uuid.uuid4()), rules=[rule]), admin)
        assert (refused.code.name, refused.reason) == ("INVALID_ARGUMENT",
                                                       "ENUM_VALUE_UNKNOWN"), refused
        assert refused.fields in (["rules[0].kind"], ["rules[0].category"])
        assert str(UNKNOWN) in refused.message
    assert qiji.positions() == before
    catch_all = qiji.ok("governance", "SetRoutingRules", gpb.SetRoutingRulesRequest(
        request_id=str(uuid.uuid4()), rules=[gpb.RoutingRule(
            name="any", department_functions=[gpb.DEPARTMENT_FUNCTION_SOCIAL_WORK])]), admin)
    assert catch_all.routing_rules.rules[0].kind == gpb.REPORT_KIND_UNSPECIFIED


def test_a_filter_of_an_unknown_number_lists_nothing_and_says_why_with_the_page_faults(
        qiji: InProcessQiji) -> None:
    """Before, status 4242 was no filter: every report listed."""
    admin = qiji.token("faults-list-admin", "city_admin")
    refused = qiji.call("governance", "ListReports", gpb.ListReportsRequest(
        status=UNKNOWN, page_size=-1, page_token="garbage!"), admin)
    assert refused.code.name == "INVALID_ARGUMENT" and refused.response is None
    assert sorted(refused.fields) == ["page_size", "page_token", "status"], refused


def test_a_sessions_faults_are_named_by_their_paths_from_the_request(
        qiji: InProcessQiji) -> None:
    """AIP-193: `session.hold_time`, not `hold_time`; no session at all is `session`, not a
    missing `hold_time`."""
    path = "/qiji.governance.v1.GovernanceService/RecordMediationSession"
    case_id = str(uuid.uuid4())
    assert faults(qiji, "governance", path, gpb.RecordMediationSessionRequest(
        case_id=case_id)) == {("session", "FIELD_REQUIRED")}
    assert faults(qiji, "governance", path, gpb.RecordMediationSessionRequest(
        case_id=case_id, session=gpb.MediationSession(notes="x" * 2001))) == {
        ("session.hold_time", "FIELD_REQUIRED"), ("session.place", "FIELD_REQUIRED"),
        ("session.notes", "TEXT_TOO_LONG")}
