"""Every cross-service reaction, end to end, with all five services up at once and wired to
each other's feeds as in production: training, merchants, badges and governance follow the
real identity process; badges follows the real training and governance processes; merchants
follows the real badges process. One tokens file (with a `service` token the followers present)
is shared by all five, each on its own schema of this session's PostgreSQL database.

Each story checks that one reaction happens, and happens exactly once (counted in the
reacting service's own log); one story follows a rider along the whole chain
(identity → training and governance → badges → merchants); the last restarts every process
with SIGTERM and checks that nothing was applied twice."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from qiji.badges.v1 import badges_service_pb2 as bpb
from qiji.feed.v1 import feed_service_pb2 as feed_pb
from qiji.governance.v1 import governance_service_pb2 as gpb
from qiji.identity.v1 import identity_service_pb2 as ipb
from qiji.merchants.v1 import merchants_service_pb2 as mpb
from qiji.training.v1 import training_service_pb2 as tpb

from services.badges import events as badges_events
from services.governance import events as governance_events
from services.training import events as training_events
from shared.auth import add_caller
from tests.conftest import badges_key_env
from tests.e2e.client import (
    PRECONDITION,
    SOON,
    at,
    call_error,
    create_city,
    create_organisation,
    create_service_space,
    minutes,
    new_request_id,
    started,
    state,
)
from tests.e2e.conftest import (
    ClockFile,
    ServiceProcess,
    caught_up,
    eventually,
    new_rider,
    serving,
    start_beside,
)

pytestmark = pytest.mark.e2e

REACTION = 15.0  # seconds a reaction may take (followers poll their upstream every 0.5 s)
TRAINING_MODEL = "services.training.domain.model"
MERCHANTS_MODEL = "services.merchants.domain.model"
BADGES_MODEL = "services.badges.domain.model"
ENROLMENT_CANCELLED = f"{TRAINING_MODEL}:TrainingSession.EnrolmentCancelled"
CLAIM_FROZEN = f"{MERCHANTS_MODEL}:Claim.Frozen"
CLAIM_UNFROZEN = f"{MERCHANTS_MODEL}:Claim.Unfrozen"
BADGE_NOTED = f"{MERCHANTS_MODEL}:RiderStanding.BadgeNoted"
BADGE_FORGOTTEN = f"{MERCHANTS_MODEL}:RiderStanding.BadgeForgotten"
COMPLETION_NOTED = f"{BADGES_MODEL}:RiderRecord.CompletionNoted"
REPORT_NOTED = f"{BADGES_MODEL}:RiderRecord.VerifiedReportNoted"
GRANTED = badges_events.BADGE_GRANTED
REVOKED = badges_events.BADGE_REVOKED
# Hehuachi street, Changzhou. Reports far enough apart never count as duplicates.
LAT, LON = 31.7790, 119.9460


# ---------------------------------------------------------------------------- the deployment


@pytest.fixture(scope="module")
def badges(identity: ServiceProcess, training: ServiceProcess, governance: ServiceProcess,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """badges following the real identity, training and governance processes."""
    yield from serving(start_beside(
        "badges", identity, tmp_path_factory.mktemp("badges-chain"),
        BADGES_TRAINING_ADDRESS=training.address,
        BADGES_GOVERNANCE_ADDRESS=governance.address, **badges_key_env()))


@pytest.fixture(scope="module")
def merchants(identity: ServiceProcess, badges: ServiceProcess,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """merchants following the real identity and badges processes."""
    yield from serving(start_beside("merchants", identity,
                                    tmp_path_factory.mktemp("merchants-chain"),
                                    MERCHANTS_BADGES_ADDRESS=badges.address))


@dataclass(frozen=True)
class Deployment:
    identity: ServiceProcess
    training: ServiceProcess
    governance: ServiceProcess
    badges: ServiceProcess
    merchants: ServiceProcess

    @property
    def all(self) -> list[ServiceProcess]:
        """Upstreams first: the order to start them in."""
        return [self.identity, self.training, self.governance, self.badges, self.merchants]


@pytest.fixture(scope="module")
def qiji(identity: ServiceProcess, training: ServiceProcess, governance: ServiceProcess,
         badges: ServiceProcess, merchants: ServiceProcess) -> Deployment:
    deployment = Deployment(identity, training, governance, badges, merchants)
    # Wired as in production: nobody's follower points at a default port.
    everyone = {s.service: s.address for s in deployment.all}
    wiring = {"training": ["identity"], "governance": ["identity"],
              "badges": ["identity", "training", "governance"],
              "merchants": ["identity", "badges"]}
    for follower, upstreams in wiring.items():
        env = getattr(deployment, follower).env
        for upstream in upstreams:
            assert env[f"{follower.upper()}_{upstream.upper()}_ADDRESS"] == everyone[upstream]
        assert env["QIJI_SERVICE_TOKEN"] == identity.tokens["service"]
        assert env["QIJI_TOKENS_FILE"] == str(identity.tokens_file)
    return deployment


# ---------------------------------------------------------------------------- the city


@dataclass(frozen=True)
class City:
    city: str
    district: str
    street: str
    platform: str
    station: str
    space: str
    social: str  # the street's social-work department: every report is routed to it
    shop: str
    social_token: str  # department, acting for `social`
    office_token: str  # street_office, acting for `street`
    shop_token: str  # merchant, acting for `shop`
    grassroots_course: str
    course_badge: str  # one GRASSROOTS_GOVERNANCE course passed
    report_badge: str  # one verified governance report
    chain_badge: str  # both
    honour_badge: str  # manual awards only (criteria nobody meets here)
    open_perk: str  # any verified rider
    honour_perk: str  # holders of `honour_badge`
    chain_perk: str  # holders of `chain_badge`


def ts(when: Any) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(when)
    return stamp


def badge_class(badges: ServiceProcess, issuer: str, name: str, criteria: bpb.Criteria) -> str:
    return badges.client("city_admin").CreateBadgeClass(bpb.CreateBadgeClassRequest(
        request_id=new_request_id(), name=f"{name}-{uuid.uuid4().hex[:6]}", description=name,
        image_url="https://qiji.example.org/badges/knight.png", issuer_id=issuer,
        criteria=criteria)).badge_class.badge_class_id


def perk(merchants: ServiceProcess, token: str, merchant_id: str, **fields: Any) -> str:
    owner = merchants.client(token=token)
    values: dict[str, Any] = {
        "request_id": new_request_id(), "merchant_id": merchant_id, "title": "骑手免费饮水",
        "kind": mpb.PERK_KIND_FREE_ITEM, "free_item": "一瓶矿泉水",
        "eligibility": mpb.ELIGIBILITY_ANY_VERIFIED_RIDER, "total_quota": 100,
        "per_rider_limit": 5, "limit_period": mpb.LIMIT_PERIOD_DAY,
        "valid_from_time": at(-timedelta(hours=1)), "valid_until_time": at(timedelta(days=30)),
        "code_ttl_minutes": 120, **fields}
    perk_id = owner.CreatePerkOffer(mpb.CreatePerkOfferRequest(**values)).perk_offer.perk_id
    owner.PublishPerkOffer(mpb.PublishPerkOfferRequest(request_id=new_request_id(),
                                                       perk_id=perk_id))
    return perk_id


@pytest.fixture(scope="module")
def city(qiji: Deployment, clock: ClockFile) -> City:
    identity, training, governance = qiji.identity, qiji.training, qiji.governance
    badges, merchants = qiji.badges, qiji.merchants
    admin = identity.client("city_admin")
    tree = create_city(admin)
    street = tree["street"]
    space = create_service_space(admin, street)
    social = create_organisation(
        admin, ipb.ORGANISATION_KIND_DEPARTMENT, "荷花池社工站", street,
        department_function=ipb.DEPARTMENT_FUNCTION_SOCIAL_WORK).organisation_id
    shop = create_organisation(admin, ipb.ORGANISATION_KIND_MERCHANT, "荷花池面馆",
                               street).organisation_id
    tag = uuid.uuid4().hex[:6]
    tokens_file = identity.tokens_file
    social_token = add_caller(tokens_file, f"e2e-social-{tag}", ["department"], social)
    office_token = add_caller(tokens_file, f"e2e-office-{tag}", ["street_office"], street)
    shop_token = add_caller(tokens_file, f"e2e-shop-{tag}", ["merchant"], shop)

    # governance: every report goes to the street's social-work department.
    governance.client("city_admin").SetRoutingRules(gpb.SetRoutingRulesRequest(
        request_id=new_request_id(), rules=[gpb.RoutingRule(
            name="everything", department_functions=[gpb.DEPARTMENT_FUNCTION_SOCIAL_WORK])]))

    # training: a published grassroots-governance course.
    course = training.client("city_admin").DraftCourse(tpb.DraftCourseRequest(
        request_id=new_request_id(), track=tpb.TRACK_GRASSROOTS_GOVERNANCE,
        title="社区议事与基层治理", description="骑手参与社区治理", hours="1.5",
        formats=[tpb.COURSE_FORMAT_CLASSROOM], provider_id=tree["city"],
        instructor=tpb.Instructor(name="李书记", kind=tpb.INSTRUCTOR_KIND_OFFICIAL))
    ).course.course_id
    training.client("city_admin").PublishCourse(tpb.PublishCourseRequest(
        request_id=new_request_id(), course_id=course))

    # badges: the classes riders can earn here.
    grassroots = bpb.TrackRequirement(track=bpb.TRACK_GRASSROOTS_GOVERNANCE, courses_passed=1)
    course_badge = badge_class(badges, tree["city"], "青蜂骑士", bpb.Criteria(
        track_requirements=[grassroots], narrative="完成一门基层治理课程"))
    report_badge = badge_class(badges, tree["city"], "移动探头", bpb.Criteria(
        min_verified_reports=1, narrative="一条经街道核实的随手拍"))
    chain_badge = badge_class(badges, tree["city"], "治理先锋", bpb.Criteria(
        track_requirements=[grassroots], min_verified_reports=1,
        narrative="完成基层治理课程并有一条经核实的随手拍"))
    honour_badge = badge_class(badges, tree["city"], "见义勇为骑士", bpb.Criteria(
        min_volunteer_hours="1000", narrative="人工授予"))

    # merchants: the shop joins and offers three perks.
    merchants.client(token=shop_token).ApplyMerchant(mpb.ApplyMerchantRequest(
        request_id=new_request_id(), merchant_id=shop, name="荷花池面馆", street_id=street,
        category="restaurant",
        location=mpb.Location(latitude=LAT, longitude=LON, address="钟楼区北大街8号"),
        amenities=[mpb.MERCHANT_AMENITY_DRINKING_WATER]))
    merchants.client(token=office_token).ApproveMerchant(mpb.ApproveMerchantRequest(
        request_id=new_request_id(), merchant_id=shop))
    badge_only = {"eligibility": mpb.ELIGIBILITY_BADGE_HOLDERS}
    return City(
        **tree, space=space, social=social, shop=shop, social_token=social_token,
        office_token=office_token, shop_token=shop_token, grassroots_course=course,
        course_badge=course_badge, report_badge=report_badge, chain_badge=chain_badge,
        honour_badge=honour_badge, open_perk=perk(merchants, shop_token, shop),
        honour_perk=perk(merchants, shop_token, shop, badge_class_id=honour_badge, **badge_only),
        chain_perk=perk(merchants, shop_token, shop, badge_class_id=chain_badge, **badge_only))


# ---------------------------------------------------------------------------- helpers


def of(events: list[feed_pb.StoredEvent], **fields: str) -> list[feed_pb.StoredEvent]:
    """The events whose stored state has all of `fields` (`originator_id`: the event's)."""
    def matches(e: feed_pb.StoredEvent) -> bool:
        stored = {**json.loads(e.state), "originator_id": e.originator_id}
        return all(stored.get(k) == v for k, v in fields.items())
    return [e for e in events if matches(e)]


def rider(qiji: Deployment, city: City) -> str:
    """A rider the platform registered and verified on identity, the verification known to
    every follower of identity before the story goes on. (A request naming a rider a follower
    already knows does not catch up with identity: when its background follower has applied
    Rider.Registered but not yet Rider.Verified, a rider verified a moment ago is refused as
    RIDER_NOT_ACTIVE — a read-your-writes gap outside the reactions this module checks.)"""
    rider_id = new_rider(qiji.identity, city)
    for server in (qiji.training, qiji.governance, qiji.badges, qiji.merchants):
        caught_up(server)
    return rider_id


def suspend(identity: ServiceProcess, rider_id: str) -> None:
    identity.client("street_office").SuspendRider(ipb.SuspendRiderRequest(
        request_id=new_request_id(), rider_id=rider_id, reason="投诉核查中"))


def reinstate(identity: ServiceProcess, rider_id: str) -> None:
    identity.client("street_office").ReinstateRider(ipb.ReinstateRiderRequest(
        request_id=new_request_id(), rider_id=rider_id, reason="核查完毕"))


def session(training: ServiceProcess, city: City, start_in: timedelta) -> str:
    """A session of the city's course at the street's rest space, scheduled by the street
    office (a platform schedules only its own courses)."""
    return scheduled(training, city, start_in).session_id


def scheduled(training: ServiceProcess, city: City, start_in: timedelta) -> tpb.Session:
    return training.client(token=city.office_token).ScheduleSession(tpb.ScheduleSessionRequest(
        request_id=new_request_id(), course_id=city.grassroots_course,
        service_space_id=city.space, start_time=at(start_in),
        end_time=at(start_in + minutes(30)), capacity=20)).session


def enrol(training: ServiceProcess, session_id: str, rider_id: str) -> tpb.Session:
    return training.client("platform").EnrolRider(tpb.EnrolRiderRequest(
        request_id=new_request_id(), session_id=session_id, rider_id=rider_id)).session


def enrolment_status(training: ServiceProcess, session_id: str, rider_id: str) -> int:
    found = training.client("auditor").GetSession(tpb.GetSessionRequest(
        session_id=session_id)).session
    return next(e.status for e in found.enrolments if e.rider_id == rider_id)


def pass_course(training: ServiceProcess, city: City, rider_id: str) -> str:
    """A session a few seconds ahead (check-in opens an hour before): enrolled, checked in,
    and once it has started PASSED."""
    sitting = scheduled(training, city, SOON)
    session_id = sitting.session_id
    # The street office hosts the session at its space: it records attendance and results.
    host = training.client(token=city.office_token)
    enrol(training, session_id, rider_id)
    host.CheckInRider(tpb.CheckInRiderRequest(
        request_id=new_request_id(), session_id=session_id, rider_id=rider_id))
    started(sitting.start_time)  # a result is recorded from the start on
    host.RecordCompletion(tpb.RecordCompletionRequest(
        request_id=new_request_id(), session_id=session_id, rider_id=rider_id,
        result=tpb.COMPLETION_RESULT_PASSED))
    return session_id


def verified_report(governance: ServiceProcess, city: City, clock: ClockFile, rider_id: str,
                    lat: float) -> str:
    """The rider reports a road hazard; it is routed to the social-work department, which
    acknowledges, works on and resolves it; the street office verifies it."""
    report = governance.client("platform").SubmitReport(gpb.SubmitReportRequest(
        request_id=new_request_id(), rider_id=rider_id, kind=gpb.REPORT_KIND_ANOMALY_WARNING,
        category=gpb.CATEGORY_ROAD_HAZARD, text="路口井盖缺失",
        observe_time=ts(clock.now - timedelta(minutes=5)),
        location=gpb.Location(street_id=city.street, latitude=lat, longitude=LON))).report
    assert [a.department_id for a in report.assignments] == [city.social], report
    department = governance.client(token=city.social_token)
    common = {"report_id": report.report_id, "department_id": city.social}
    department.AcknowledgeAssignment(gpb.AcknowledgeAssignmentRequest(
        request_id=new_request_id(), **common))
    department.StartAssignmentWork(gpb.StartAssignmentWorkRequest(
        request_id=new_request_id(), note="已派人查看", **common))
    resolved = department.ResolveAssignment(gpb.ResolveAssignmentRequest(
        request_id=new_request_id(), resolution="井盖已补装", **common)).report
    assert resolved.status == gpb.REPORT_STATUS_RESOLVED
    verified = governance.client(token=city.office_token).VerifyReport(gpb.VerifyReportRequest(
        request_id=new_request_id(), report_id=report.report_id, note="街道回访确认")).report
    assert verified.status == gpb.REPORT_STATUS_VERIFIED
    return report.report_id


def awards(badges: ServiceProcess, rider_id: str, include_inactive: bool = False
           ) -> list[bpb.Award]:
    return list(badges.client("auditor").ListRiderAwards(bpb.ListRiderAwardsRequest(
        rider_id=rider_id, include_inactive=include_inactive)).awards)


def award_of(badges: ServiceProcess, rider_id: str, badge_class_id: str) -> bpb.Award | None:
    return next((a for a in awards(badges, rider_id) if a.badge_class_id == badge_class_id),
                None)


def granted(badges: ServiceProcess, rider_id: str, badge_class_id: str = ""
            ) -> list[feed_pb.StoredEvent]:
    """Award.Granted events for the rider (of the class, if given) in badges' log."""
    wanted = {"rider_id": rider_id, **({"badge_class_id": badge_class_id}
                                       if badge_class_id else {})}
    return of(badges.events(GRANTED), **wanted)


def claim(merchants: ServiceProcess, perk_id: str, rider_id: str) -> mpb.Claim:
    return merchants.client("platform").ClaimPerk(mpb.ClaimPerkRequest(
        request_id=new_request_id(), perk_id=perk_id, rider_id=rider_id)).claim


def claim_refusal(merchants: ServiceProcess, perk_id: str, rider_id: str) -> tuple[Any, str]:
    refused = call_error(lambda: claim(merchants, perk_id, rider_id))
    return refused.code, refused.reason


def perks_for(merchants: ServiceProcess, rider_id: str) -> list[str]:
    return [p.perk_id for p in merchants.client("platform").ListPerksForRider(
        mpb.ListPerksForRiderRequest(rider_id=rider_id, page_size=500)).perk_offers]


def claim_status(merchants: ServiceProcess, claim_id: str) -> int:
    return merchants.client("platform").GetClaim(mpb.GetClaimRequest(claim_id=claim_id)
                                                 ).claim.status


def settle(qiji: Deployment, quiet: float = 1.6, timeout: float = 15.0) -> dict[str, int]:
    """Waits until no service's log has moved for `quiet` seconds (three polls of every
    follower) after each follower of identity caught up; returns every log's last position."""
    for server in (qiji.training, qiji.governance, qiji.badges, qiji.merchants):
        caught_up(server)
    deadline = time.monotonic() + timeout

    def positions() -> dict[str, int]:
        return {s.service: s.last_position() for s in qiji.all}
    last, still_since = positions(), time.monotonic()
    while time.monotonic() - still_since < quiet:
        assert time.monotonic() < deadline, "the logs did not settle"
        time.sleep(0.25)
        now = positions()
        if now != last:
            last, still_since = now, time.monotonic()
    return last


# Counts of reaction events, filled in by the stories; compared after the restart.
APPLIED: dict[str, Any] = {}


def counts(qiji: Deployment) -> dict[str, int]:
    """How many reaction events each story's upstream event caused, now."""
    found: dict[str, int] = {}
    for name, (service, topic, fields) in APPLIED.items():
        found[name] = len(of(getattr(qiji, service).events(topic), **fields))
    return found


# ---------------------------------------------------------------------------- the stories


def test_identity_to_training_a_suspended_riders_future_enrolment_is_cancelled_once(
        qiji: Deployment, city: City) -> None:
    rider_id, stays = rider(qiji, city), rider(qiji, city)
    session_id = session(qiji.training, city, timedelta(hours=72))
    enrol(qiji.training, session_id, rider_id)
    assert enrol(qiji.training, session_id, stays).places_taken == 2

    suspend(qiji.identity, rider_id)
    eventually(lambda: enrolment_status(qiji.training, session_id, rider_id)
               == tpb.ENROLMENT_STATUS_CANCELLED, "the enrolment cancelled", timeout=REACTION)
    assert enrolment_status(qiji.training, session_id, stays) == tpb.ENROLMENT_STATUS_ENROLLED

    settle(qiji)
    cancelled = of(qiji.training.events(ENROLMENT_CANCELLED), rider_id=rider_id)
    assert [e.originator_id for e in cancelled] == [session_id]
    APPLIED["training-cancelled"] = ("training", ENROLMENT_CANCELLED, {"rider_id": rider_id})


def test_identity_to_merchants_a_suspended_riders_code_is_frozen_once_then_issued_again(
        qiji: Deployment, city: City) -> None:
    rider_id = rider(qiji, city)
    issued = claim(qiji.merchants, city.open_perk, rider_id)
    assert issued.status == mpb.CLAIM_STATUS_ISSUED

    suspend(qiji.identity, rider_id)
    eventually(lambda: claim_status(qiji.merchants, issued.claim_id) == mpb.CLAIM_STATUS_FROZEN,
               "the suspended rider's code frozen", timeout=REACTION)
    settle(qiji)
    assert len(of(qiji.merchants.events(CLAIM_FROZEN), originator_id=issued.claim_id)) == 1

    reinstate(qiji.identity, rider_id)
    eventually(lambda: claim_status(qiji.merchants, issued.claim_id) == mpb.CLAIM_STATUS_ISSUED,
               "the reinstated rider's code issued again", timeout=REACTION)
    settle(qiji)
    for topic in (CLAIM_FROZEN, CLAIM_UNFROZEN):
        assert len(of(qiji.merchants.events(topic), originator_id=issued.claim_id)) == 1, topic
    APPLIED["merchants-frozen"] = ("merchants", CLAIM_FROZEN, {"originator_id": issued.claim_id})
    APPLIED["merchants-unfrozen"] = ("merchants", CLAIM_UNFROZEN,
                                     {"originator_id": issued.claim_id})


def test_training_to_badges_a_passed_grassroots_course_earns_its_badge_once(
        qiji: Deployment, city: City) -> None:
    rider_id = rider(qiji, city)
    assert awards(qiji.badges, rider_id) == []
    pass_course(qiji.training, city, rider_id)

    award = eventually(lambda: award_of(qiji.badges, rider_id, city.course_badge),
                       "the course badge awarded", timeout=REACTION)
    assert (award.kind, award.status) == (bpb.AWARD_KIND_AUTOMATIC, bpb.AWARD_STATUS_ACTIVE)
    assert [(e.source, e.reference) for e in award.evidence] == [
        ("training", city.grassroots_course)]
    completed = training_events.COURSE_COMPLETED
    position = award.evidence[0].position
    [stored] = qiji.training.client("service").read_events(from_position=position,
                                                            limit=1).events
    assert (stored.position, stored.topic) == (position, completed)

    settle(qiji)
    assert len(granted(qiji.badges, rider_id)) == 1, "only the course badge, once"
    assert [a.badge_class_id for a in awards(qiji.badges, rider_id)] == [city.course_badge]
    APPLIED["badges-course-award"] = ("badges", GRANTED, {"rider_id": rider_id})


def test_governance_to_badges_a_verified_report_earns_its_badge_once(
        qiji: Deployment, city: City, clock: ClockFile) -> None:
    rider_id = rider(qiji, city)
    report_id = verified_report(qiji.governance, city, clock, rider_id, LAT + 0.05)
    published = [e for e in qiji.governance.events(governance_events.REPORT_VERIFIED)
                 if e.originator_id == report_id]
    assert [state(e)["rider_id"] for e in published] == [rider_id]

    award = eventually(lambda: award_of(qiji.badges, rider_id, city.report_badge),
                       "the report badge awarded", timeout=REACTION)
    assert (award.kind, award.status) == (bpb.AWARD_KIND_AUTOMATIC, bpb.AWARD_STATUS_ACTIVE)
    assert [(e.source, e.reference, e.position) for e in award.evidence] == [
        ("governance", report_id, published[0].position)]

    settle(qiji)
    assert len(granted(qiji.badges, rider_id)) == 1, "only the report badge, once"
    assert len(of(qiji.badges.events(REPORT_NOTED), report_id=report_id)) == 1
    APPLIED["badges-report-award"] = ("badges", GRANTED, {"rider_id": rider_id})
    APPLIED["badges-report-noted"] = ("badges", REPORT_NOTED, {"report_id": report_id})


def test_badges_to_merchants_a_badge_only_perk_opens_with_the_award_and_closes_on_revocation(
        qiji: Deployment, city: City) -> None:
    rider_id = rider(qiji, city)
    assert claim_refusal(qiji.merchants, city.honour_perk, rider_id) == (
        PRECONDITION, "BADGE_REQUIRED")
    assert city.honour_perk not in perks_for(qiji.merchants, rider_id)

    award = qiji.badges.client("street_office").GrantBadge(bpb.GrantBadgeRequest(
        request_id=new_request_id(), rider_id=rider_id, badge_class_id=city.honour_badge,
        reason="在北大街救助落水儿童",
        evidence=[bpb.Evidence(source="news", reference="常州日报-2026-06-05",
                               narrative="常州日报报道")])).award
    eventually(lambda: city.honour_perk in perks_for(qiji.merchants, rider_id),
               "the badge-only perk listed for the holder", timeout=REACTION)
    assert claim(qiji.merchants, city.honour_perk, rider_id).status == mpb.CLAIM_STATUS_ISSUED

    qiji.badges.client("city_admin").RevokeAward(bpb.RevokeAwardRequest(
        request_id=new_request_id(), award_id=award.award_id, reason="核实有误"))
    eventually(lambda: city.honour_perk not in perks_for(qiji.merchants, rider_id),
               "the badge-only perk gone with the award", timeout=REACTION)
    assert claim_refusal(qiji.merchants, city.honour_perk, rider_id) == (
        PRECONDITION, "BADGE_REQUIRED")

    settle(qiji)
    assert len(of(qiji.merchants.events(BADGE_NOTED), award_id=award.award_id)) == 1
    assert len(of(qiji.merchants.events(BADGE_FORGOTTEN), award_id=award.award_id)) == 1
    APPLIED["merchants-honour-noted"] = ("merchants", BADGE_NOTED, {"award_id": award.award_id})
    APPLIED["merchants-honour-forgotten"] = ("merchants", BADGE_FORGOTTEN,
                                             {"award_id": award.award_id})


def test_the_whole_chain_course_and_report_earn_a_badge_whose_perk_opens_and_closes_again(
        qiji: Deployment, city: City, clock: ClockFile) -> None:
    rider_id = rider(qiji, city)
    # Before: the perk is for holders of a badge the rider does not hold.
    assert claim_refusal(qiji.merchants, city.chain_perk, rider_id) == (
        PRECONDITION, "BADGE_REQUIRED")
    assert city.chain_perk not in perks_for(qiji.merchants, rider_id)

    # training → badges: the course alone earns the course badge, not the chain badge.
    pass_course(qiji.training, city, rider_id)
    eventually(lambda: award_of(qiji.badges, rider_id, city.course_badge),
               "the course badge awarded", timeout=REACTION)
    assert award_of(qiji.badges, rider_id, city.chain_badge) is None

    # governance → badges: the verified report completes the chain badge's criteria.
    report_id = verified_report(qiji.governance, city, clock, rider_id, LAT + 0.10)
    award = eventually(lambda: award_of(qiji.badges, rider_id, city.chain_badge),
                       "the chain badge awarded", timeout=REACTION)
    assert sorted((e.source, e.reference) for e in award.evidence) == sorted(
        [("training", city.grassroots_course), ("governance", report_id)])
    held = sorted(a.badge_class_id for a in awards(qiji.badges, rider_id))
    assert held == sorted([city.course_badge, city.report_badge, city.chain_badge])

    # badges → merchants: the badge-only perk opens.
    eventually(lambda: city.chain_perk in perks_for(qiji.merchants, rider_id),
               "the chain perk listed for the holder", timeout=REACTION)
    code = claim(qiji.merchants, city.chain_perk, rider_id)
    assert (code.status, code.rider_id) == (mpb.CLAIM_STATUS_ISSUED, rider_id)

    # Revoked on badges: merchants refuses the perk again.
    revoked = qiji.badges.client("city_admin").RevokeAward(bpb.RevokeAwardRequest(
        request_id=new_request_id(), award_id=award.award_id, reason="核实有误")).award
    assert revoked.status == bpb.AWARD_STATUS_REVOKED
    eventually(lambda: city.chain_perk not in perks_for(qiji.merchants, rider_id),
               "the chain perk gone with the award", timeout=REACTION)
    assert claim_refusal(qiji.merchants, city.chain_perk, rider_id) == (
        PRECONDITION, "BADGE_REQUIRED")

    settle(qiji)
    for badge_class_id in (city.course_badge, city.report_badge, city.chain_badge):
        assert len(granted(qiji.badges, rider_id, badge_class_id)) == 1, badge_class_id
    assert len(of(qiji.badges.events(REVOKED), originator_id=award.award_id)) == 1
    assert len(of(qiji.merchants.events(BADGE_NOTED), award_id=award.award_id)) == 1
    assert len(of(qiji.merchants.events(BADGE_FORGOTTEN), award_id=award.award_id)) == 1
    APPLIED["badges-chain-awards"] = ("badges", GRANTED, {"rider_id": rider_id})
    APPLIED["badges-chain-completion"] = ("badges", COMPLETION_NOTED,
                                          {"course_id": city.grassroots_course})
    APPLIED["merchants-chain-noted"] = ("merchants", BADGE_NOTED, {"award_id": award.award_id})
    APPLIED["merchants-chain-forgotten"] = ("merchants", BADGE_FORGOTTEN,
                                            {"award_id": award.award_id})


def grant_honour(qiji: Deployment, city: City, reason: str) -> str:
    """A manual honour badge for a new rider, noted by merchants; returns the award's id."""
    rider_id = rider(qiji, city)
    award = qiji.badges.client("street_office").GrantBadge(bpb.GrantBadgeRequest(
        request_id=new_request_id(), rider_id=rider_id, badge_class_id=city.honour_badge,
        reason=reason, evidence=[bpb.Evidence(source="news", reference="常州日报-2026-06-06",
                                              narrative="常州日报报道")])).award
    eventually(lambda: city.honour_perk in perks_for(qiji.merchants, rider_id),
               "the award reaches merchants", timeout=REACTION)
    return award.award_id


def test_restarting_every_process_applies_nothing_twice(qiji: Deployment, city: City) -> None:
    # A reaction of its own, so that there is something to apply twice however many of the
    # stories above ran before this test (in a shuffled order, maybe none).
    before_restart = grant_honour(qiji, city, "重启前授予")
    APPLIED["merchants-before-restart"] = ("merchants", BADGE_NOTED,
                                           {"award_id": before_restart})
    before_counts = counts(qiji)
    before = settle(qiji)

    # SIGTERM every process, then start them again, upstreams first.
    for server in reversed(qiji.all):
        server.stop()
    for server in qiji.all:
        server.start()

    time.sleep(3.0)  # six polls of every follower, each resuming from its stored position
    after = settle(qiji)
    assert after == before, "a process stored something after the restart"
    assert counts(qiji) == before_counts

    # The restarted followers still follow: a new award reaches merchants once.
    after_restart = grant_honour(qiji, city, "重启后授予")
    settle(qiji)
    assert len(of(qiji.merchants.events(BADGE_NOTED), award_id=after_restart)) == 1
    assert counts(qiji) == before_counts
