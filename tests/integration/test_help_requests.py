"""Help requests (帮扶) over a real store (SQLite and PostgreSQL), following a real identity
application's log in-process, on a clock the test moves: a rider asks, the request goes to the
departments its kind calls for, a caseworker follows it up, the rider hears the outcome and
rates it; what was said stays with the rider's departments and dies with the rider's key."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from services.governance.domain.help import HelpRequest
from services.governance.domain.values import (
    ContactChannel,
    DeadlineKind,
    DepartmentFunction,
    HelpAssignmentStatus,
    HelpKind,
    HelpStatus,
    SatisfactionRating,
)
from services.governance.help_application import HelpRouteInput
from services.governance.help_deadlines import HelpDeadlineScheduler
from services.governance.public_events import CATALOGUE
from services.identity.application import IdentityApplication
from services.identity.domain.values import DepartmentFunction as IdentityFunction
from services.identity.domain.values import OrganisationKind
from shared.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from shared.public_feed import Fact
from tests.city import build_city, in_application
from tests.conftest import MASTER_KEY, actor, as_actor, settings_for
from tests.integration import test_governance_app as governance_world
from tests.integration.test_governance_app import (
    ADMIN,
    PLATFORM,
    department,
    new_rider,
    open_governance,
    racing_city,
    topics,
)

# governance's world (a city, a district with two streets and their departments, a platform)
# and its clock, as the governance tests have them.
world = governance_world.world
clock = governance_world.clock

WORDS = "老板拖欠我三个月工资，张某说不给就不给"
AUDITOR = actor("auditor", "auditor")


def office(w, street="street"):
    return actor(f"office-{street}", "street_office", organisation_id=w[street])


def add_department(w, key, name, parent, function) -> str:
    with as_actor(ADMIN):
        w[key] = w["identity"].create_organisation(
            kind=OrganisationKind.DEPARTMENT, name=name, parent_id=w[parent],
            department_function=function)["organisation_id"]
    w["governance"].catch_up_upstream()  # the follower keeps up so in a running service
    return w[key]


def ask(w, rider, kind=HelpKind.HARDSHIP, text=WORDS, who=PLATFORM, request_id="", **more):
    with as_actor(who, rpc="RequestHelp", request_id=request_id,
                  request=f"{rider}{kind}{text}".encode()):
        return w["governance"].request_help(rider_id=rider, kind=kind, text=text, **more)


def act(w, name, help_id, step, **fields):
    with as_actor(department(w, name), rpc=step, request_id=fields.pop("request_id", "")):
        return getattr(w["governance"], step)(help_request_id=help_id, department_id=w[name],
                                              **fields)


def seen(w, help_id, who):
    with as_actor(who):
        return w["governance"].help_request(help_id)


def rate(w, help_id, rating):
    with as_actor(PLATFORM):
        return w["governance"].rate_help_outcome(help_request_id=help_id, rating=rating)


# ---------------------------------------------------------------------------- routing


def test_hardship_goes_to_the_social_work_nearest_the_riders_home_with_its_clocks(world,
                                                                                 clock):
    help_id = ask(world, new_rider(world))["help_request_id"]
    h = world["governance"].help_request(help_id)
    [a] = h.assignments
    assert (a["department_id"], a["department_function"], a["status"]) == (
        world["social"], "SOCIAL_WORK", HelpAssignmentStatus.ROUTED)
    assert (a["due"]["ACKNOWLEDGE"] - clock.now, a["due"]["RESOLVE"] - clock.now) == (
        timedelta(hours=24), timedelta(days=7))
    assert (h.home_street_id, h.status) == (world["street"], HelpStatus.OPEN)


def test_legal_aid_goes_to_legal_aid_where_the_city_has_it_else_social_work(world):
    rider = new_rider(world)
    first = world["governance"].help_request(
        ask(world, rider, HelpKind.LEGAL_AID)["help_request_id"])
    assert [a["department_id"] for a in first.assignments] == [world["social"]]
    add_department(world, "legal_aid", "钟楼区法律援助中心", "district",
                   IdentityFunction.LEGAL_AID)
    second = world["governance"].help_request(
        ask(world, rider, HelpKind.LEGAL_AID)["help_request_id"])
    assert [(a["department_id"], a["department_function"]) for a in second.assignments] == [
        (world["legal_aid"], "LEGAL_AID")]


def test_a_labour_dispute_goes_to_the_trade_union_and_legal_aid_that_exist(world):
    rider = new_rider(world)
    add_department(world, "union", "常州市总工会", "city", IdentityFunction.TRADE_UNION)
    only_union = world["governance"].help_request(
        ask(world, rider, HelpKind.LABOUR_DISPUTE)["help_request_id"])
    assert [a["department_id"] for a in only_union.assignments] == [world["union"]]
    add_department(world, "legal_aid", "钟楼区法律援助中心", "district",
                   IdentityFunction.LEGAL_AID)
    both = world["governance"].help_request(
        ask(world, rider, HelpKind.WORK_INJURY)["help_request_id"])
    assert [(a["department_id"], a["department_function"]) for a in both.assignments] == [
        (world["union"], "TRADE_UNION"), (world["legal_aid"], "LEGAL_AID")]
    # Complex kinds get 15 days for the outcome.
    a = both.assignments[0]
    assert a["due"]["RESOLVE"] - a["routed_at"] == timedelta(days=15)


def test_without_social_work_a_help_request_is_refused_and_nothing_is_written(store_env,
                                                                           clock):
    identity = IdentityApplication(settings_for("identity", store_env), MASTER_KEY)
    governance = open_governance(store_env, clock, identity)
    try:
        city = build_city(in_application(identity))
        street, platform, station = city.street, city.platform, city.station
        city.add("police", "DEPARTMENT", "公安", "district", "PUBLIC_SECURITY")
        w = {"identity": identity, "governance": governance, "street": street,
             "platform": platform, "station": station, "riders": 0}
        rider = new_rider(w)
        governance.catch_up_upstream()
        before = governance.last_position()
        with pytest.raises(FailedPrecondition) as refused:
            ask(w, rider)
        assert refused.value.reason == "NO_HELP_ROUTE"
        assert governance.last_position() == before
    finally:
        governance.close()
        identity.close()


def test_the_city_admin_routes_a_kind_otherwise_and_old_requests_keep_theirs(world, clock):
    rider = new_rider(world)
    old = ask(world, rider)["help_request_id"]
    add_department(world, "legal_aid", "钟楼区法律援助中心", "district",
                   IdentityFunction.LEGAL_AID)
    with as_actor(ADMIN):
        version = world["governance"].set_help_routing(routes=[HelpRouteInput(
            HelpKind.HARDSHIP, [DepartmentFunction.LEGAL_AID, DepartmentFunction.SOCIAL_WORK],
            timedelta(hours=2), timedelta(days=3))])["version"]
    new = world["governance"].help_request(ask(world, rider)["help_request_id"])
    assert (new.routing_version, [a["department_id"] for a in new.assignments]) == (
        version, [world["legal_aid"], world["social"]])
    assert new.assignments[0]["due"]["RESOLVE"] - clock.now == timedelta(days=3)
    kept = world["governance"].help_request(old)
    assert (kept.routing_version, [a["department_id"] for a in kept.assignments]) == (
        0, [world["social"]])
    routing = world["governance"].help_routing()
    # Kinds left out keep the defaults.
    assert (routing.version, routing.routes["LEGAL_AID"]["functions"],
            routing.routes["HARDSHIP"]["acknowledge"]) == (version, ["LEGAL_AID"], 7200)
    assert world["governance"].help_routing(0).version == version
    with pytest.raises(NotFound):
        world["governance"].help_routing(version + 1)
    before = world["governance"].last_position()
    with pytest.raises(InvalidArgument) as bad:
        with as_actor(ADMIN):
            world["governance"].set_help_routing(routes=[HelpRouteInput(
                HelpKind.OTHER, [], timedelta(hours=2), timedelta(hours=1))])
    assert [(v.field, v.reason) for v in bad.value.violations] == [
        ("routes[0].department_functions", "FIELD_REQUIRED"),
        ("routes[0].resolve_within", "RESOLVE_WITHIN_NOT_AFTER_ACKNOWLEDGE_WITHIN")]
    assert world["governance"].last_position() == before


# ---------------------------------------------------------------------------- bad input


def test_bad_input_is_told_field_by_field_and_nothing_is_written(world):
    rider = new_rider(world)
    unverified = new_rider(world, verify=False)
    world["governance"].catch_up_upstream()
    before = world["governance"].last_position()
    with pytest.raises(InvalidArgument) as bad:
        with as_actor(PLATFORM):
            world["governance"].request_help(rider_id=rider, kind=None, text=" " * 3)
    assert [(v.field, v.reason) for v in bad.value.violations] == [
        ("kind", "ENUM_VALUE_REQUIRED"), ("text", "FIELD_REQUIRED")]
    with pytest.raises(InvalidArgument) as long:
        ask(world, rider, text="长" * 2001)
    assert long.value.reason == "TEXT_TOO_LONG"
    with pytest.raises(FailedPrecondition) as inactive:
        ask(world, unverified)
    assert inactive.value.reason == "RIDER_NOT_ACTIVE"
    assert world["governance"].last_position() == before


def test_a_referral_to_itself_or_to_no_department_is_refused(world):
    help_id = ask(world, new_rider(world))["help_request_id"]
    act(world, "social", help_id, "assign_caseworker", caseworker_name="王社工")
    before = world["governance"].last_position()
    with pytest.raises(InvalidArgument) as itself:
        act(world, "social", help_id, "record_help_referral",
            to_department_id=world["social"], note="")
    assert itself.value.reason == "REFERRAL_TO_ITSELF"
    with pytest.raises(InvalidArgument) as street:
        act(world, "social", help_id, "record_help_referral",
            to_department_id=world["street"], note="")
    assert street.value.reason == "ORGANISATION_KIND_NOT_ALLOWED"
    with pytest.raises(NotFound):
        act(world, "social", help_id, "record_help_referral",
            to_department_id="5d0c1f3e-4a6b-4e0f-9b7d-2c8e1a9f6b55", note="")
    assert world["governance"].last_position() == before


# ---------------------------------------------------------------------------- the story


def test_a_caseworker_follows_up_refers_and_the_rider_rates_the_outcome(world, clock):
    add_department(world, "legal_aid", "钟楼区法律援助中心", "district",
                   IdentityFunction.LEGAL_AID)
    help_id = ask(world, new_rider(world), contact_preference=ContactChannel.PHONE
                  )["help_request_id"]
    with pytest.raises(FailedPrecondition) as early:
        act(world, "social", help_id, "give_help_outcome", outcome="已解决")
    assert early.value.reason == "HELP_ASSIGNMENT_ROUTED"
    clock.now += timedelta(hours=1)
    act(world, "social", help_id, "assign_caseworker", caseworker_name="王社工")
    with pytest.raises(FailedPrecondition) as twice:
        act(world, "social", help_id, "assign_caseworker", caseworker_name="李社工")
    assert twice.value.reason == "HELP_ASSIGNMENT_CASEWORKER_ASSIGNED"
    act(world, "social", help_id, "record_help_contact", channel=ContactChannel.PHONE,
        contacted_at=None, note="电话联系，骑手情绪稳定")
    clock.now += timedelta(hours=1)
    act(world, "social", help_id, "record_help_referral", to_department_id=world["legal_aid"],
        note="需要律师代理讨薪")
    with pytest.raises(FailedPrecondition) as again:
        act(world, "social", help_id, "record_help_referral",
            to_department_id=world["legal_aid"], note="")
    assert again.value.reason == "HELP_ALREADY_ASSIGNED"
    h = world["governance"].help_request(help_id)
    referred = h.assignments[1]
    # The department referred to gets clocks of its own, from the referral.
    assert (referred["department_id"], referred["referred_by"],
            referred["due"]["ACKNOWLEDGE"]) == (world["legal_aid"], world["social"],
                                                clock.now + timedelta(hours=24))
    act(world, "social", help_id, "give_help_outcome", outcome="已申请临时救助")
    assert world["governance"].help_request(help_id).status is HelpStatus.OPEN
    with pytest.raises(FailedPrecondition) as not_yet:
        rate(world, help_id, SatisfactionRating.SATISFIED)
    assert not_yet.value.reason == "HELP_REQUEST_OPEN"
    act(world, "legal_aid", help_id, "assign_caseworker", caseworker_name="赵律师")
    act(world, "legal_aid", help_id, "give_help_outcome", outcome="已代理仲裁，工资已追回")
    closed = world["governance"].help_request(help_id)
    assert (closed.status, closed.closed_at) == (HelpStatus.CLOSED, clock.now)
    clock.now += timedelta(days=7)
    rate(world, help_id, SatisfactionRating.BASICALLY_SATISFIED)
    with pytest.raises(AlreadyExists) as rated:
        rate(world, help_id, SatisfactionRating.SATISFIED)
    assert rated.value.reason == "HELP_ALREADY_RATED"
    assert world["governance"].help_request(help_id).satisfaction == {
        "rating": "BASICALLY_SATISFIED", "at": clock.now}


def test_a_rating_after_seven_days_is_refused_and_nothing_is_written(world, clock):
    help_id = ask(world, new_rider(world))["help_request_id"]
    act(world, "social", help_id, "assign_caseworker", caseworker_name="王社工")
    act(world, "social", help_id, "give_help_outcome", outcome="已送去关爱礼包")
    clock.now += timedelta(days=7, seconds=1)
    before = world["governance"].last_position()
    with pytest.raises(FailedPrecondition) as late:
        rate(world, help_id, SatisfactionRating.UNSATISFIED)
    assert late.value.reason == "RATING_WINDOW_CLOSED"
    assert world["governance"].last_position() == before


# ---------------------------------------------------------------------------- confidential


def test_only_the_departments_and_the_city_admin_read_what_was_said(world):
    help_id = ask(world, new_rider(world))["help_request_id"]
    act(world, "social", help_id, "assign_caseworker", caseworker_name="王社工")
    act(world, "social", help_id, "record_help_contact", channel=ContactChannel.HOME_VISIT,
        contacted_at=None, note="上门走访张某家")
    act(world, "social", help_id, "give_help_outcome", outcome="已协调发放工资")
    for reader in (department(world, "social"), ADMIN):
        h = seen(world, help_id, reader)
        assert (h.text, h.assignments[0]["caseworker_name"], h.contacts[0]["note"],
                h.assignments[0]["outcome"]) == (
            WORDS, "王社工", "上门走访张某家", "已协调发放工资")
    for outsider in (office(world), AUDITOR, PLATFORM):
        h = seen(world, help_id, outsider)
        shown = repr(h)
        assert WORDS not in shown and "王社工" not in shown and "张某" not in shown
        assert h.text == f"[withheld: {len(WORDS)} characters]"
        assert h.assignments[0]["status"] is HelpAssignmentStatus.OUTCOME_GIVEN
    # The rider's platform reads the outcome it carries to the rider, nothing else.
    assert seen(world, help_id, PLATFORM).assignments[0]["outcome"] == "已协调发放工资"
    assert seen(world, help_id, office(world)).assignments[0]["outcome"] != "已协调发放工资"
    with as_actor(AUDITOR):
        history = world["governance"].help_request_history(help_id)
    assert [e.event_type for e in history] == [
        "HelpRequest.Requested", "HelpRequest.Routed", "HelpRequest.CaseworkerAssigned",
        "HelpRequest.ContactRecorded", "HelpRequest.OutcomeGiven", "HelpRequest.Closed"]
    text = repr(history)
    assert WORDS not in text and "王社工" not in text and "上门" not in text
    assert history[0].details["text"] == f"[withheld: {len(WORDS)} characters]"
    # Nothing is stored in clear: the log holds the words sealed.
    raw = b"".join(n.state for n in world["governance"].read_log(1, 100_000))
    assert WORDS.encode() not in raw and "王社工".encode() not in raw


def test_erasing_the_rider_erases_what_was_said_and_keeps_the_facts(world):
    rider = new_rider(world)
    help_id = ask(world, rider)["help_request_id"]
    act(world, "social", help_id, "assign_caseworker", caseworker_name="王社工")
    act(world, "social", help_id, "give_help_outcome", outcome="已协调发放工资")
    with as_actor(ADMIN):
        world["identity"].erase_rider_personal_data(rider_id=rider, reason="本人申请删除")
    world["governance"].catch_up_upstream()
    h = seen(world, help_id, ADMIN)
    assert (h.text, h.assignments[0]["caseworker_name"], h.assignments[0]["outcome"]) == (
        "[erased]", "[erased]", "[erased]")
    assert (h.kind, h.status, h.assignments[0]["department_id"]) == (
        HelpKind.HARDSHIP, HelpStatus.CLOSED, world["social"])
    # Nothing more can be said of the rider, and nothing is written trying.
    before = world["governance"].last_position()
    with pytest.raises(FailedPrecondition) as erased:
        ask(world, rider)
    assert erased.value.reason == "RIDER_PERSONAL_DATA_ERASED"
    assert world["governance"].last_position() == before
    # The feed carries no outcome any more.
    [given] = topics(world["governance"], "HelpRequest.OutcomeGiven")
    assert feed_data(world, given, world["platform"])["outcome"] is None


def _asked_through(w, two, rider, help_id):
    """What two lets be said of the rider now: RequestHelp's refusal, and whether it wrote."""
    before = two.last_position()
    with pytest.raises(FailedPrecondition) as refused:
        ask({**w, "governance": two}, rider)
    return refused.value.reason, two.last_position() == before


def _shown_by(w, two, rider, help_id):
    with as_actor(ADMIN):
        h = two.help_request(help_id)
    return h.text, h.assignments[0]["caseworker_name"], h.assignments[0]["outcome"]


def _history_of(w, two, rider, help_id):
    with as_actor(ADMIN):
        history = repr(two.help_request_history(help_id))
    return WORDS in history, "王社工" in history, "[erased]" in history


def _carried_by(w, two, rider, help_id):
    [given] = topics(two, "HelpRequest.OutcomeGiven")
    return feed_data({"governance": two}, given, w["platform"])["outcome"]


@pytest.mark.parametrize(("path", "after_erasure"), [
    (_asked_through, ("RIDER_PERSONAL_DATA_ERASED", True)),
    (_shown_by, ("[erased]", "[erased]", "[erased]")),
    (_history_of, (False, False, True)),
    (_carried_by, None),
], ids=["RequestHelp", "GetHelpRequest", "history", "feed"])
def test_a_replica_that_opened_a_riders_words_keeps_none_once_another_followed_the_erasure(
        world, clock, path, after_erasure):
    """Crypto-shredding across governance's replicas: only the replica leading the follower
    of identity destroys the rider's key. Another that opened the rider's words before holds
    that key in its cache; each way it has of opening or sealing them must say "erased" from
    then on, not use that key: the erasure it learns from governance's own log says so. Each
    way is tried first, on a cache that still holds the key."""
    rider = new_rider(world)
    help_id = ask(world, rider)["help_request_id"]
    act(world, "social", help_id, "assign_caseworker", caseworker_name="王社工")
    act(world, "social", help_id, "give_help_outcome", outcome="已协调发放工资")
    two = open_governance(world["env"], clock, world["identity"])
    try:
        with as_actor(ADMIN):
            assert two.help_request(help_id).text == WORDS  # opened: the key in two's cache
        with as_actor(ADMIN):
            world["identity"].erase_rider_personal_data(rider_id=rider, reason="本人申请删除")
        world["governance"].catch_up_upstream()  # the leader follows the erasure
        assert path(world, two, rider, help_id) == after_erasure
        # And nothing opens from two's cache any more, whichever way came first.
        assert two.vault.open(rider, two.view(help_id, HelpRequest, "help_request").sealed_text
                              ) == "[erased]"
    finally:
        two.close()


def feed_data(w, notification, consumer):
    app = w["governance"]
    fact = Fact(notification.id, notification.originator_id, notification.originator_version,
                notification.topic, app.to_domain_event(notification), consumer)
    return CATALOGUE.types["qiji.governance.v1.HelpOutcomeGiven"].build(app, fact).data


def test_the_outcome_reaches_the_riders_platform_and_never_the_relay(world):
    help_id = ask(world, new_rider(world))["help_request_id"]
    act(world, "social", help_id, "assign_caseworker", caseworker_name="王社工")
    act(world, "social", help_id, "give_help_outcome", outcome="已协调发放工资")
    [given] = topics(world["governance"], "HelpRequest.OutcomeGiven")
    data = feed_data(world, given, world["platform"])
    assert (data["help_request_id"], data["kind"], data["department_id"], data["outcome"]) == (
        help_id, "HARDSHIP", world["social"], "已协调发放工资")
    assert feed_data(world, given, "")["outcome"] is None


# ---------------------------------------------------------------------------- deadlines


def escalations(app) -> list:
    return [app.to_domain_event(n) for n in topics(app, "HelpRequest.Escalated")]


def test_a_missed_caseworker_deadline_escalates_exactly_once_across_a_restart(world, clock):
    help_id = ask(world, new_rider(world))["help_request_id"]
    scheduler = HelpDeadlineScheduler(world["governance"])
    clock.now += timedelta(hours=23, minutes=59, seconds=59)
    assert scheduler.run_once() == 0
    clock.now += timedelta(seconds=1)
    assert scheduler.run_once() == 1
    assert scheduler.run_once() == 0
    [escalated] = escalations(world["governance"])
    assert (escalated.deadline, escalated.level, escalated.escalated_to) == (
        "ACKNOWLEDGE", "DISTRICT", world["district"])

    world["governance"].close()
    reopened = open_governance(world["env"], clock, world["identity"])
    world["governance"] = reopened
    assert HelpDeadlineScheduler(reopened).run_once() == 0
    # A crash between the save and the next look: the request id answers the first escalation.
    again = reopened.escalate_missed_help_deadline(
        help_request_id=help_id, department_id=world["social"],
        deadline=DeadlineKind.ACKNOWLEDGE)
    assert again["level"] == "DISTRICT"
    assert len(escalations(reopened)) == 1
    # The outcome deadline, later, is its own escalation, once: to the city.
    clock.now += timedelta(days=7)
    assert HelpDeadlineScheduler(reopened).run_once() == 1
    assert HelpDeadlineScheduler(reopened).run_once() == 0
    assert [(e.deadline, e.level) for e in escalations(reopened)] == [
        ("ACKNOWLEDGE", "DISTRICT"), ("RESOLVE", "CITY")]
    with as_actor(AUDITOR):
        history = reopened.help_request_history(help_id)
    assert next((e.principal, e.request_id) for e in history
                if e.event_type == "HelpRequest.Escalated") == (
        "governance-help-deadline-scheduler",
        f"help:{help_id}:{world['social']}:ACKNOWLEDGE")


def test_work_done_in_time_never_escalates(world, clock):
    help_id = ask(world, new_rider(world))["help_request_id"]
    act(world, "social", help_id, "assign_caseworker", caseworker_name="王社工")
    act(world, "social", help_id, "give_help_outcome", outcome="已解决")
    clock.now += timedelta(days=30)
    assert HelpDeadlineScheduler(world["governance"]).run_once() == 0


# ---------------------------------------------------------------------------- lists, figures


def test_a_departments_list_and_statistics_count_cases_without_content(world, clock):
    add_department(world, "union", "常州市总工会", "city", IdentityFunction.TRADE_UNION)
    rider = new_rider(world)
    hardship = ask(world, rider)["help_request_id"]
    dispute = ask(world, rider, HelpKind.LABOUR_DISPUTE)["help_request_id"]
    act(world, "social", hardship, "assign_caseworker", caseworker_name="王社工")
    act(world, "social", hardship, "give_help_outcome", outcome="已解决")
    rate(world, hardship, SatisfactionRating.SATISFIED)
    clock.now += timedelta(days=2)
    assert HelpDeadlineScheduler(world["governance"]).run_once() == 1  # the union's caseworker
    # (Which rows a department may list at all is the guard's: tests/e2e/test_help_grpc.py.)
    with as_actor(department(world, "union")):
        mine, token = world["governance"].list_help_requests(
            department_id=world["union"], kind=None, status=None, page_size=10, page_token="")
    assert [h.help_request_id for h in mine] == [dispute] and token == ""
    with as_actor(ADMIN):
        everything, _ = world["governance"].list_help_requests(
            department_id=world["social"], kind=None, status=HelpStatus.CLOSED, page_size=10,
            page_token="")
        rows = world["governance"].help_statistics(department_id="", kind=None, start=None,
                                                   end=None)
    assert [h.help_request_id for h in everything] == [hardship]
    assert {(r.department_id, r.kind): (r.assigned, r.outcomes_given, r.open, r.escalations,
                                        r.satisfied) for r in rows} == {
        (world["social"], "HARDSHIP"): (1, 1, 0, 0, 1),
        (world["union"], "LABOUR_DISPUTE"): (1, 0, 1, 1, 0)}
    assert WORDS not in repr(rows)
    with pytest.raises(InvalidArgument) as bad:
        with as_actor(ADMIN):
            world["governance"].help_statistics(department_id="", kind=None,
                                                start=clock.now, end=clock.now)
    assert bad.value.reason == "END_TIME_NOT_AFTER_START_TIME"


# ---------------------------------------------------------------------------- concurrency


@pytest.mark.postgres
def test_two_caseworkers_assigned_at_once_let_exactly_one_through(postgres_env, clock):
    with racing_city(postgres_env, clock, social=IdentityFunction.SOCIAL_WORK) as w:
        help_id = ask(w, new_rider(w))["help_request_id"]

        def assign(n: int) -> Callable[[], Any]:
            def command() -> None:
                with as_actor(department(w, "social"), rpc="AssignCaseworker",
                              request_id=f"clerk-{n}"):
                    w["governance"].assign_caseworker(help_request_id=help_id,
                                                      department_id=w["social"],
                                                      caseworker_name=f"社工{n}")
            return command

        assert w["at_once"](assign(0), assign(1)) == [
            "HELP_ASSIGNMENT_CASEWORKER_ASSIGNED", "ok"]
        assert len(topics(w["governance"], "HelpRequest.CaseworkerAssigned")) == 1
