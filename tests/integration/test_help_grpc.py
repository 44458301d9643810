"""Help requests (帮扶) through the real guard, in one process, on SQLite and PostgreSQL: who
may ask, who may read, and what each reader sees of what was said. A rider of platform A asks
help with a wage dispute; only the departments given the request and the city admin read the
words; A's street office and an auditor see that things happened; another platform, another
department and another street office are refused; A's platform hears the outcome, B's never."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import text_format
from qiji.governance.v1 import governance_service_pb2 as gpb
from qiji.identity.v1 import identity_service_pb2 as ipb

from services.platform.application import PlatformFeed
from shared.grpc.upstream import LocalUpstream
from tests.city import build_city, in_process
from tests.conftest import badges_key_env, pg_env
from tests.inprocess import SPECS, InProcessQiji

WORDS = "老板拖欠我三个月工资，张某说不给就不给"
CASEWORKER = "王社工"
NOTE = "需要律师代理讨薪"
OUTCOME = "已代理仲裁，工资已追回"


def rid() -> str:
    return str(uuid.uuid4())


def shown(message: Any) -> str:
    return text_format.MessageToString(message, as_utf8=True) if message is not None else ""


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def city(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp(f"help-{request.param}")
    env = {"QIJI_DATA_DIR": str(tmp / "data"), "QIJI_POSTGRES_POOL_SIZE": "2",
           **badges_key_env()}
    if request.param == "postgres":
        env.update(pg_env(request.getfixturevalue("postgres_db"), f"t_{uuid.uuid4().hex[:12]}"))
    q = InProcessQiji(env, Path(tmp / "tokens.json"))
    admin = q.token("help-admin", "city_admin")
    made = build_city(in_process(q, admin), ("district",))
    c: dict[str, Any] = {"q": q, "admin": admin,
                         "auditor": q.token("help-auditor", "auditor"), **made.as_dict()}
    c["legal_aid"] = made.add("legal_aid", "DEPARTMENT", "钟楼区法律援助中心", "district",
                              "LEGAL_AID")
    c["union"] = made.add("union", "DEPARTMENT", "常州市总工会", "city", "TRADE_UNION")
    for t in ("a", "b"):
        # Each tenant's street with its social-work department, and its platform and station.
        tenant = build_city(made.make, also=("department",), label=t, within=made.as_dict())
        c[f"street_{t}"], c[f"social_{t}"] = tenant.street, tenant.department
        c[f"platform_{t}"], station = tenant.platform, tenant.station
        c[f"platform_{t}_token"] = q.token(f"platform-{t}", "platform",
                                           organisation_id=c[f"platform_{t}"])
        c[f"office_{t}_token"] = q.token(f"office-{t}", "street_office",
                                         organisation_id=c[f"street_{t}"])
        c[f"social_{t}_token"] = q.token(f"social-{t}", "department",
                                         organisation_id=c[f"social_{t}"])
        c[f"rider_{t}"] = q.ok("identity", "RegisterRider", ipb.RegisterRiderRequest(
            request_id=rid(), platform_id=c[f"platform_{t}"], platform_rider_id=f"R-{t}",
            name=f"骑手{t}", phone=f"1390000000{'ab'.index(t)}",
            home_street_id=c[f"street_{t}"], station_id=station),
            c[f"platform_{t}_token"]).rider.rider_id
        q.ok("identity", "VerifyRider", ipb.VerifyRiderRequest(
            request_id=rid(), rider_id=c[f"rider_{t}"]), c[f"platform_{t}_token"])
    for d in ("legal_aid", "union"):
        c[f"{d}_token"] = q.token(f"dept-{d}", "department", organisation_id=c[d])
    q.sync()
    try:
        yield c
    finally:
        q.close()


def ask(c: dict[str, Any], kind: int = gpb.HELP_KIND_HARDSHIP, who: str = "platform_a_token",
        rider: str = "rider_a") -> Any:
    return c["q"].ok("governance", "RequestHelp", gpb.RequestHelpRequest(
        request_id=rid(), rider_id=c[rider], kind=kind, text=WORDS,
        contact_preference=gpb.CONTACT_CHANNEL_PHONE), c[who]).help_request


def worked(c: dict[str, Any]) -> str:
    """A's rider's hardship request: social work A names a caseworker, refers to legal aid,
    which gives its outcome, and gives its own: closed."""
    q = c["q"]
    help_id = ask(c).help_request_id
    at = {"help_request_id": help_id}
    social, legal = c["social_a_token"], c["legal_aid_token"]
    q.ok("governance", "AssignCaseworker", gpb.AssignCaseworkerRequest(
        department_id=c["social_a"], caseworker_name=CASEWORKER, **at), social)
    q.ok("governance", "RecordHelpContact", gpb.RecordHelpContactRequest(
        request_id=rid(), department_id=c["social_a"], channel=gpb.CONTACT_CHANNEL_PHONE,
        note=NOTE, **at), social)
    q.ok("governance", "RecordHelpReferral", gpb.RecordHelpReferralRequest(
        request_id=rid(), department_id=c["social_a"], to_department_id=c["legal_aid"],
        note=NOTE, **at), social)
    q.ok("governance", "AssignCaseworker", gpb.AssignCaseworkerRequest(
        department_id=c["legal_aid"], caseworker_name="赵律师", **at), legal)
    q.ok("governance", "GiveHelpOutcome", gpb.GiveHelpOutcomeRequest(
        department_id=c["legal_aid"], outcome=OUTCOME, **at), legal)
    closed = q.ok("governance", "GiveHelpOutcome", gpb.GiveHelpOutcomeRequest(
        department_id=c["social_a"], outcome="已申请临时救助", **at), social).help_request
    assert closed.status == gpb.HELP_STATUS_CLOSED
    return help_id


def get(c: dict[str, Any], help_id: str, token: str) -> Any:
    return c["q"].call("governance", "GetHelpRequest",
                       gpb.GetHelpRequestRequest(help_request_id=help_id), token)


def test_a_labour_dispute_asked_at_the_counter_goes_to_the_union_and_legal_aid(city) -> None:
    h = ask(city, gpb.HELP_KIND_LABOUR_DISPUTE, who="office_a_token")
    assert [(a.department_id, a.department_function) for a in h.assignments] == [
        (city["union"], gpb.DEPARTMENT_FUNCTION_TRADE_UNION),
        (city["legal_aid"], gpb.DEPARTMENT_FUNCTION_LEGAL_AID)]
    # The office that took it at the counter sees that it was asked, not what was said.
    assert WORDS not in shown(h) and h.text == f"[withheld: {len(WORDS)} characters]"
    assert h.assignments[0].outcome_due_time.seconds - h.request_time.seconds == 15 * 86400


def test_a_street_office_asks_only_for_its_own_residents(city) -> None:
    q = city["q"]
    before = q.positions()
    refused = q.call("governance", "RequestHelp", gpb.RequestHelpRequest(
        request_id=rid(), rider_id=city["rider_a"], kind=gpb.HELP_KIND_HARDSHIP, text=WORDS),
        city["office_b_token"])
    assert (refused.code, refused.reason) == (grpc.StatusCode.PERMISSION_DENIED,
                                              "OUT_OF_SCOPE")
    refused = q.call("governance", "RequestHelp", gpb.RequestHelpRequest(
        request_id=rid(), rider_id=city["rider_a"], kind=gpb.HELP_KIND_HARDSHIP, text=WORDS),
        city["platform_b_token"])
    assert (refused.code, refused.reason) == (grpc.StatusCode.PERMISSION_DENIED,
                                              "OUT_OF_SCOPE")
    assert q.positions() == before


def test_what_was_said_is_read_by_the_requests_departments_and_the_city_admin_only(
        city) -> None:
    help_id = worked(city)
    secrets = (WORDS, CASEWORKER, NOTE, "赵律师", "张某")
    for token in ("social_a_token", "legal_aid_token", "admin"):
        h = get(city, help_id, city[token]).response.help_request
        assert (h.text, h.assignments[0].caseworker_name, h.contacts[0].note,
                h.referrals[0].note, h.assignments[1].outcome) == (
            WORDS, CASEWORKER, NOTE, NOTE, OUTCOME), token
    for token in ("office_a_token", "auditor", "platform_a_token"):
        answer = get(city, help_id, city[token])
        assert answer.ok, (token, answer)
        text = shown(answer.response)
        assert not [s for s in secrets if s in text], token
        h = answer.response.help_request
        # The facts are there: which departments, in what state, when.
        assert [a.status for a in h.assignments] == [
            gpb.HELP_ASSIGNMENT_STATUS_OUTCOME_GIVEN] * 2
    # The rider's own platform reads the outcome it carries to the rider; the office not.
    assert get(city, help_id, city["platform_a_token"]).response.help_request.assignments[
        1].outcome == OUTCOME
    assert OUTCOME not in shown(get(city, help_id, city["office_a_token"]).response)
    for token in ("office_b_token", "platform_b_token", "social_b_token", "union_token"):
        refused = get(city, help_id, city[token])
        assert (refused.code, refused.reason) == (grpc.StatusCode.PERMISSION_DENIED,
                                                  "OUT_OF_SCOPE"), token
        assert WORDS not in refused.message
    history = city["q"].ok("governance", "GetHelpRequestHistory",
                           gpb.GetHelpRequestHistoryRequest(help_request_id=help_id),
                           city["auditor"]).entries
    assert "HelpRequest.Referred" in [e.event_type for e in history]
    assert not [s for s in (*secrets, OUTCOME) if s in " ".join(shown(e) for e in history)]
    refused = city["q"].call("governance", "GetHelpRequestHistory",
                             gpb.GetHelpRequestHistoryRequest(help_request_id=help_id),
                             city["platform_a_token"])
    assert refused.code is grpc.StatusCode.PERMISSION_DENIED


def test_another_department_can_neither_work_nor_list_the_request(city) -> None:
    q = city["q"]
    help_id = ask(city).help_request_id
    before = q.positions()
    for token, department in (("social_b_token", city["social_b"]),
                              ("social_b_token", city["social_a"])):
        refused = q.call("governance", "AssignCaseworker", gpb.AssignCaseworkerRequest(
            help_request_id=help_id, department_id=department, caseworker_name="冒名"),
            city[token])
        assert (refused.code, refused.reason) == (grpc.StatusCode.PERMISSION_DENIED,
                                                  "OUT_OF_SCOPE")
    assert q.positions() == before
    theirs = q.ok("governance", "ListHelpRequests", gpb.ListHelpRequestsRequest(),
                  city["social_b_token"]).help_requests
    assert help_id not in [h.help_request_id for h in theirs]
    mine = q.ok("governance", "ListHelpRequests", gpb.ListHelpRequestsRequest(),
                city["social_a_token"]).help_requests
    assert help_id in [h.help_request_id for h in mine]
    assert all(h.home_street_id == city["street_a"] for h in mine)
    everyone = q.ok("governance", "ListHelpRequests", gpb.ListHelpRequestsRequest(),
                    city["auditor"]).help_requests
    assert help_id in [h.help_request_id for h in everyone]
    assert WORDS not in " ".join(shown(h) for h in everyone)
    # Statistics: a department its own, counted without a word said.
    refused = q.call("governance", "GetHelpStatistics", gpb.GetHelpStatisticsRequest(
        department_id=city["social_a"]), city["social_b_token"])
    assert refused.code is grpc.StatusCode.PERMISSION_DENIED
    rows = q.ok("governance", "GetHelpStatistics", gpb.GetHelpStatisticsRequest(
        department_id=city["social_a"]), city["social_a_token"]).statistics
    assert {r.department_id for r in rows} == {city["social_a"]}
    assert sum(r.assigned for r in rows) >= 1


def test_the_outcome_reaches_the_riders_platform_and_the_rating_comes_back(city) -> None:
    q = city["q"]
    help_id = worked(city)
    mine = [e for e in feed_of(city, city["platform_a"]) if help_id in e.text_data]
    assert len(mine) == 2 and any(OUTCOME in e.text_data for e in mine)
    assert not [e for e in mine if WORDS in e.text_data or CASEWORKER in e.text_data]
    assert not [e for e in feed_of(city, city["platform_b"]) if help_id in e.text_data]

    rated = q.ok("governance", "RateHelpOutcome", gpb.RateHelpOutcomeRequest(
        help_request_id=help_id, rating=gpb.SATISFACTION_RATING_SATISFIED),
        city["platform_a_token"]).help_request
    assert rated.satisfaction == gpb.SATISFACTION_RATING_SATISFIED
    twice = q.call("governance", "RateHelpOutcome", gpb.RateHelpOutcomeRequest(
        help_request_id=help_id, rating=gpb.SATISFACTION_RATING_UNSATISFIED),
        city["platform_a_token"])
    assert (twice.code, twice.reason) == (grpc.StatusCode.ALREADY_EXISTS, "HELP_ALREADY_RATED")
    other = q.call("governance", "RateHelpOutcome", gpb.RateHelpOutcomeRequest(
        help_request_id=help_id, rating=gpb.SATISFACTION_RATING_UNSATISFIED),
        city["platform_b_token"])
    assert (other.code, other.reason) == (grpc.StatusCode.PERMISSION_DENIED, "OUT_OF_SCOPE")
    unknown = q.call("governance", "RateHelpOutcome", gpb.RateHelpOutcomeRequest(
        help_request_id=help_id, rating=9), city["platform_a_token"])
    assert (unknown.code, unknown.reason) == (grpc.StatusCode.INVALID_ARGUMENT,
                                              "ENUM_VALUE_UNKNOWN")


def feed_of(c: dict[str, Any], organisation: str) -> list[Any]:
    """The HelpOutcomeGiven events the platform gateway gives `organisation`."""
    upstreams = {name: LocalUpstream(svc.app, SPECS[name].public_events)
                 for name, svc in c["q"].services.items()}
    reader = PlatformFeed(upstreams)
    positions, found = reader.decode_cursor(""), []
    while True:
        page = reader.read(positions, 200, ["qiji.governance.v1.HelpOutcomeGiven"],
                           organisation)
        found += [e for e, _ in page.events]
        positions = page.positions
        if page.caught_up:
            return found


def test_asked_at_the_counter_the_platform_never_hears_of_it(city) -> None:
    """A rider asks at the street office about a dispute with their platform: the platform
    cannot read the request, its feed carries no outcome, and the rider rates at the counter."""
    q = city["q"]
    h = ask(city, gpb.HELP_KIND_LABOUR_DISPUTE, who="office_a_token")
    assert h.asked_through == gpb.HELP_CHANNEL_STREET_OFFICE
    at = {"help_request_id": h.help_request_id}
    for department in ("union", "legal_aid"):
        q.ok("governance", "AssignCaseworker", gpb.AssignCaseworkerRequest(
            department_id=city[department], caseworker_name=CASEWORKER, **at),
            city[f"{department}_token"])
        q.ok("governance", "GiveHelpOutcome", gpb.GiveHelpOutcomeRequest(
            department_id=city[department], outcome=OUTCOME, **at), city[f"{department}_token"])
    refused = get(city, h.help_request_id, city["platform_a_token"])
    assert (refused.code, refused.reason) == (grpc.StatusCode.PERMISSION_DENIED,
                                              "OUT_OF_SCOPE")
    assert not [e for e in feed_of(city, city["platform_a"]) if h.help_request_id in e.text_data]
    before = q.positions()
    refused = q.call("governance", "RateHelpOutcome", gpb.RateHelpOutcomeRequest(
        rating=gpb.SATISFACTION_RATING_UNSATISFIED, **at), city["platform_a_token"])
    assert (refused.code, refused.reason) == (grpc.StatusCode.PERMISSION_DENIED,
                                              "OUT_OF_SCOPE")
    assert q.positions() == before
    rated = q.ok("governance", "RateHelpOutcome", gpb.RateHelpOutcomeRequest(
        rating=gpb.SATISFACTION_RATING_BASICALLY_SATISFIED, **at),
        city["office_a_token"]).help_request
    assert rated.satisfaction == gpb.SATISFACTION_RATING_BASICALLY_SATISFIED
    # Asked in the app, it is rated in the app: the office does not rate in the rider's stead.
    in_app = worked(city)
    elsewhere = q.call("governance", "RateHelpOutcome", gpb.RateHelpOutcomeRequest(
        help_request_id=in_app, rating=gpb.SATISFACTION_RATING_UNSATISFIED),
        city["office_a_token"])
    assert (elsewhere.code, elsewhere.reason) == (grpc.StatusCode.FAILED_PRECONDITION,
                                                  "RATE_WHERE_ASKED")


def test_the_help_routing_is_the_city_admins_to_set_and_its_officials_to_read(city) -> None:
    from google.protobuf.duration_pb2 import Duration
    q = city["q"]
    route = gpb.HelpRoute(kind=gpb.HELP_KIND_PSYCHOLOGICAL,
                          department_functions=[gpb.DEPARTMENT_FUNCTION_SOCIAL_WORK],
                          acknowledge_within=Duration(seconds=4 * 3600),
                          resolve_within=Duration(seconds=5 * 86400))
    before = q.positions()
    refused = q.call("governance", "SetHelpRouting", gpb.SetHelpRoutingRequest(
        routes=[route]), city["social_a_token"])
    assert refused.code is grpc.StatusCode.PERMISSION_DENIED
    assert q.positions() == before
    set_ = q.ok("governance", "SetHelpRouting", gpb.SetHelpRoutingRequest(routes=[route]),
                city["admin"]).help_routing
    assert len(set_.routes) == 6 and set_.version >= 1
    for token in ("social_a_token", "office_a_token", "auditor"):
        read = q.ok("governance", "GetHelpRouting", gpb.GetHelpRoutingRequest(),
                    city[token]).help_routing
        [psychological] = [r for r in read.routes if r.kind == gpb.HELP_KIND_PSYCHOLOGICAL]
        assert (psychological.acknowledge_within.seconds, read.version) == (
            4 * 3600, set_.version)
    unknown = q.call("governance", "SetHelpRouting", gpb.SetHelpRoutingRequest(
        routes=[gpb.HelpRoute(kind=42, department_functions=[9])]), city["admin"])
    assert unknown.code is grpc.StatusCode.INVALID_ARGUMENT
    assert set(unknown.fields) >= {"routes[0].kind", "routes[0].department_functions[0]"}
