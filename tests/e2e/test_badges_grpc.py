"""The badges service as its callers meet it: a real badges process following real identity and
training processes' feeds over gRPC, all three on PostgreSQL (a schema each), called with a
plain grpcio client and the tokens an operator would hand out.

The story is the programme's own: four rider volunteers of 北大街社区 (荷花池街道, 钟楼区, 常州市)
received Golden Bee Knight (金蜂骑士, confirmed volunteer hours) and Green Bee Knight (青蜂骑士,
a grassroots-governance course passed in training).

Cross-service consistency: a badges command naming a rider or organisation it has not heard of
yet reads identity's feed first, so no sleeps are needed for identity's facts. A completion in
training reaches badges only through badges' background follower of training's feed, which
polls every half second: those tests poll (`eventually`) for up to 10 s. governance is not
deployed beside this badges: its follower is pointed at a port nobody listens on and backs off.

Credentials are checked with a verifier written here from RFC 7515 / RFC 8037 and
`cryptography` alone, never with Qiji's own verification code."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from grpc_health.v1 import health_pb2, health_pb2_grpc
from qiji.badges.v1 import badges_service_pb2 as pb
from qiji.feed.v1 import feed_service_pb2 as feed_pb
from qiji.identity.v1 import identity_service_pb2 as ipb
from qiji.training.v1 import training_service_pb2 as tpb

from services.badges import events as badges_events
from services.training import events as training_events
from tests.e2e.client import (
    API,
    DENIED,
    EXISTS,
    INVALID,
    NOT_FOUND,
    PRECONDITION,
    RPC_TIMEOUT,
    SOON,
    Bad,
    Client,
    at,
    call_error,
    create_city,
    create_organisation,
    create_service_space,
    details_of,
    minutes,
    new_request_id,
    on,
    started,
    state,
    unique,
)
from tests.e2e.conftest import REPO, ServiceProcess, caught_up, eventually
from tests.e2e.conftest import new_rider as register_rider

pytestmark = pytest.mark.e2e

BADGES = API["badges"].full_name
GRANTED = badges_events.BADGE_GRANTED
# Principals of badges' own background work (followers, the expiry job): what they store is
# not written by a caller's request.
BACKGROUND_PRINCIPALS = ("badges-follower-of-", "badges-expiry-job")

RANDOM_ID = str(uuid.uuid4())


# ---------------------------------------------------------------------------- helpers


def settled(badges: ServiceProcess, training: ServiceProcess, quiet: float = 1.5,
            timeout: float = 15.0) -> int:
    """Waits until badges has applied what identity and training stored so far: identity's
    and training's feeds are caught up through their request paths, then badges' log must stay
    still for `quiet` seconds (three polls of its follower of training). Returns its last
    position."""
    caught_up(training)
    caught_up(badges)
    deadline = time.monotonic() + timeout
    last, still_since = badges.last_position(), time.monotonic()
    while time.monotonic() - still_since < quiet:
        assert time.monotonic() < deadline, "badges' log did not settle"
        time.sleep(0.25)
        position = badges.last_position()
        if position != last:
            last, still_since = position, time.monotonic()
    return last


def written_by_callers_since(badges: ServiceProcess, position: int
                             ) -> list[feed_pb.StoredEvent]:
    """Events stored after `position` by a caller's request (not by badges' followers)."""
    found = badges.client("service").read_events(from_position=position + 1, limit=1000)
    return [e for e in found.events if not e.principal.startswith(BACKGROUND_PRINCIPALS)]


# ---------------------------------------------------------------------------- identity's side


@dataclass(frozen=True)
class City:
    """常州市/钟楼区/荷花池街道/北大街社区, a platform with a station, and a service space (an
    驿站 at the street where training holds its sessions)."""

    city: str
    district: str
    street: str
    community: str
    platform: str
    station: str
    space: str


@dataclass
class World:
    city: City
    # Every rider this module registered: badges' awards are theirs alone.
    riders: list[str] = field(default_factory=list)


def set_up_city(identity: ServiceProcess) -> City:
    """The module's platform, street office, community and merchant callers act for this
    city's."""
    admin = identity.client("city_admin")
    tree = create_city(admin)
    community = create_organisation(admin, ipb.ORGANISATION_KIND_COMMUNITY, "北大街社区",
                                    tree["street"]).organisation_id
    merchant = create_organisation(admin, ipb.ORGANISATION_KIND_MERCHANT, "北大街面馆",
                                   tree["street"]).organisation_id
    identity.act_for(community=community, merchant=merchant)
    return City(**tree, community=community, space=create_service_space(admin, tree["street"]))


def principal(role: str, organisation: str) -> str:
    """Who the module's caller of `role` acting for `organisation` is (conftest's act_for)."""
    return f"e2e-{role}-{organisation[:8]}"


def new_rider(identity: ServiceProcess, world: World, *, name: str = "王五") -> str:
    """A rider the platform registered and verified on identity."""
    rider_id = register_rider(identity, world.city, name=name)
    world.riders.append(rider_id)
    return rider_id


# ---------------------------------------------------------------------------- training's side


def grassroots_course(training: ServiceProcess, city: City, title: str = "社区议事与基层治理"
                      ) -> str:
    """A published GRASSROOTS_GOVERNANCE (基层治理) course given by the city."""
    admin = training.client("city_admin")
    course_id = admin.DraftCourse(tpb.DraftCourseRequest(
        request_id=new_request_id(), track=tpb.TRACK_GRASSROOTS_GOVERNANCE, title=title,
        description="骑手参与社区治理：随手拍、议事会", hours="1.5",
        formats=[tpb.COURSE_FORMAT_CLASSROOM], provider_id=city.city,
        instructor=tpb.Instructor(name="李书记", kind=tpb.INSTRUCTOR_KIND_OFFICIAL))
    ).course.course_id
    admin.PublishCourse(tpb.PublishCourseRequest(request_id=new_request_id(),
                                                 course_id=course_id))
    return course_id


def pass_course(training: ServiceProcess, city: City, course_id: str, riders: list[str]
                ) -> str:
    """A real completion: a session the street office holds at its space, starting in a few
    seconds (check-in opens an hour before), the riders enrolled by their platform and checked
    in, and once it has started recorded PASSED by the office. Returns the session id."""
    platform = training.client("platform")
    session = training.client("street_office").ScheduleSession(tpb.ScheduleSessionRequest(
        request_id=new_request_id(), course_id=course_id, service_space_id=city.space,
        start_time=at(SOON), end_time=at(SOON + minutes(30)), capacity=20)).session
    session_id = session.session_id
    for rider_id in riders:
        platform.EnrolRider(tpb.EnrolRiderRequest(request_id=new_request_id(),
                                                  session_id=session_id, rider_id=rider_id))
    host = training.client("street_office")  # records attendance at the session it holds
    for rider_id in riders:
        host.CheckInRider(tpb.CheckInRiderRequest(
            request_id=new_request_id(), session_id=session_id, rider_id=rider_id))
    started(session.start_time)  # a result is recorded from the start on
    for rider_id in riders:
        host.RecordCompletion(tpb.RecordCompletionRequest(
            request_id=new_request_id(), session_id=session_id, rider_id=rider_id,
            result=tpb.COMPLETION_RESULT_PASSED))
    return session_id


# ---------------------------------------------------------------------------- badges' side


def create_class(badges: ServiceProcess, city: City, name: str, criteria: pb.Criteria, *,
                 validity_days: int = 0, description: str = "") -> pb.BadgeClass:
    return badges.client("city_admin").CreateBadgeClass(pb.CreateBadgeClassRequest(
        request_id=new_request_id(), name=name, description=description or name,
        image_url="https://qiji.example.org/badges/knight.png", issuer_id=city.city,
        criteria=criteria, validity_days=validity_days)).badge_class


def honour_class(badges: ServiceProcess, city: City, name: str = "见义勇为骑士",
                 validity_days: int = 0) -> str:
    """A class for manual awards: its criteria (a verified governance report) are never met
    here, since governance is not deployed beside this badges."""
    return create_class(badges, city, unique(name), pb.Criteria(
        min_verified_reports=1, narrative="经街道核实的见义勇为事迹"),
        validity_days=validity_days).badge_class_id


def log_service(badges: ServiceProcess, city: City, rider_id: str, hours: str,
                activity: str = "帮助独居老人") -> str:
    """The platform logs a rider's volunteer service (爱心公益) done this morning."""
    return badges.client("platform").LogVolunteerService(pb.LogVolunteerServiceRequest(
        request_id=new_request_id(), rider_id=rider_id, community_id=city.community,
        activity=activity, start_time=at(-timedelta(hours=3)), hours=hours)).shift.shift_id


def confirm(badges: ServiceProcess, shift_id: str) -> pb.ConfirmVolunteerServiceResponse:
    """The community where the service was done confirms it."""
    return badges.client("community").ConfirmVolunteerService(
        pb.ConfirmVolunteerServiceRequest(request_id=new_request_id(), shift_id=shift_id))


def grant(badges: ServiceProcess, rider_id: str, badge_class_id: str,
          request_id: str | None = None) -> pb.Award:
    return badges.client("street_office").GrantBadge(grant_request(
        rider_id, badge_class_id, request_id)).award


def grant_request(rider_id: str, badge_class_id: str, request_id: str | None = None,
                  reason: str = "在北大街救助落水儿童") -> pb.GrantBadgeRequest:
    return pb.GrantBadgeRequest(
        request_id=request_id or new_request_id(), rider_id=rider_id,
        badge_class_id=badge_class_id, reason=reason,
        evidence=[pb.Evidence(source="news", reference="常州日报-2026-06-05",
                              narrative="常州日报报道")])


def awards_of(badges: ServiceProcess, rider_id: str, include_inactive: bool = False
              ) -> list[pb.Award]:
    return list(badges.client("auditor").ListRiderAwards(pb.ListRiderAwardsRequest(
        rider_id=rider_id, include_inactive=include_inactive)).awards)


def award_of(badges: ServiceProcess, rider_id: str, badge_class_id: str) -> pb.Award | None:
    return next((a for a in awards_of(badges, rider_id)
                 if a.badge_class_id == badge_class_id), None)


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def world(identity: ServiceProcess) -> World:
    return World(city=set_up_city(identity))


@dataclass(frozen=True)
class Knights:
    golden: pb.BadgeClass  # 金蜂骑士: 10 hours of confirmed volunteer service
    green: pb.BadgeClass  # 青蜂骑士: one grassroots-governance course passed


@pytest.fixture(scope="module")
def knights(badges: ServiceProcess, world: World) -> Knights:
    """The city's two knights, issued by 常州市. Every rider's record is checked against every
    class, so these are the only classes in this module that hours or courses can earn."""
    golden = create_class(badges, world.city, "金蜂骑士", pb.Criteria(
        min_volunteer_hours="10", narrative="10 小时经社区确认的志愿服务"),
        description="Golden Bee Knight: 爱心公益志愿服务")
    green = create_class(badges, world.city, "青蜂骑士", pb.Criteria(
        track_requirements=[pb.TrackRequirement(track=pb.TRACK_GRASSROOTS_GOVERNANCE,
                                                courses_passed=1)],
        narrative="完成一门基层治理课程"), description="Green Bee Knight: 基层治理")
    return Knights(golden=golden, green=green)


# ---------------------------------------------------------------------------- the story


def test_four_rider_volunteers_become_golden_and_green_bee_knights(
        identity: ServiceProcess, training: ServiceProcess, badges: ServiceProcess,
        world: World, knights: Knights) -> None:
    city = world.city
    auditor = badges.client("auditor")

    # The classes, as the city created them.
    golden = auditor.GetBadgeClass(pb.GetBadgeClassRequest(
        badge_class_id=knights.golden.badge_class_id)).badge_class
    assert golden == knights.golden
    assert (golden.name, golden.issuer_id, golden.criteria_version) == ("金蜂骑士", city.city, 1)
    assert golden.criteria.min_volunteer_hours == "10"
    assert list(knights.green.criteria.track_requirements) == [
        pb.TrackRequirement(track=pb.TRACK_GRASSROOTS_GOVERNANCE, courses_passed=1)]
    listed = auditor.ListBadgeClasses(pb.ListBadgeClassesRequest(page_size=500)).badge_classes
    assert {knights.golden.badge_class_id, knights.green.badge_class_id} <= {
        c.badge_class_id for c in listed}

    # Four riders registered and verified on identity, at once known to badges.
    riders = [new_rider(identity, world, name=n) for n in ("张伟", "李强", "王芳", "赵磊")]

    # 金蜂骑士: the platform logs service, the community confirms; the award is made by the
    # confirmation that reaches 10 hours, and only by it.
    golden_awards: dict[str, pb.Award] = {}
    for rider_id in riders:
        first = log_service(badges, city, rider_id, "6", "陪伴独居老人")
        confirmed = confirm(badges, first)
        assert confirmed.shift.status == pb.SHIFT_STATUS_CONFIRMED
        assert list(confirmed.award_ids) == []
        second = log_service(badges, city, rider_id, "4", "社区消防巡查")
        logged = badges.client("street_office").ListVolunteerService(
            pb.ListVolunteerServiceRequest(rider_id=rider_id))
        assert logged.confirmed_hours == "6"
        assert {s.shift_id: s.status for s in logged.shifts} == {
            first: pb.SHIFT_STATUS_CONFIRMED, second: pb.SHIFT_STATUS_LOGGED}
        reached = confirm(badges, second)
        assert len(reached.award_ids) == 1, reached
        award = auditor.GetAward(pb.GetAwardRequest(award_id=reached.award_ids[0])).award
        assert (award.rider_id, award.badge_class_id) == (rider_id, golden.badge_class_id)
        assert (award.kind, award.status, award.criteria_version) == (
            pb.AWARD_KIND_AUTOMATIC, pb.AWARD_STATUS_ACTIVE, 1)
        assert award.awarded_by == principal("community", city.community)
        assert sorted((e.source, e.reference) for e in award.evidence) == sorted(
            [("badges", first), ("badges", second)])
        assert badges.client("platform").ListVolunteerService(pb.ListVolunteerServiceRequest(
            rider_id=rider_id)).confirmed_hours == "10"
        golden_awards[rider_id] = award

    # 青蜂骑士: a real grassroots-governance course in training; badges learns of the
    # completions from training's feed and awards them in the background.
    course_id = grassroots_course(training, city)
    pass_course(training, city, course_id, riders)
    green_awards = {r: eventually(lambda r=r: award_of(badges, r, knights.green.badge_class_id),
                                  f"青蜂骑士 for rider {r}") for r in riders}

    completed = training.client("service").all_events(topics=list(training_events.LEARNER_TOPICS))
    learner_of = {state(e)["rider_id"]: e.originator_id for e in completed
                  if e.topic == training_events.LEARNER_NOTED}
    for rider_id, award in green_awards.items():
        assert (award.kind, award.status) == (pb.AWARD_KIND_AUTOMATIC, pb.AWARD_STATUS_ACTIVE)
        assert award.awarded_by == "badges-follower-of-training"
        assert [(e.source, e.reference) for e in award.evidence] == [("training", course_id)]
        position = award.evidence[0].position
        assert position > 0
        # The position is that of the completion in training's own log.
        stored = training.client("service").read_events(from_position=position, limit=1).events
        assert stored and stored[0].position == position
        assert stored[0].topic == training_events.COURSE_COMPLETED
        assert stored[0].originator_id == learner_of[rider_id]
        assert (state(stored[0])["course_id"], state(stored[0])["result"]) == (course_id,
                                                                               "PASSED")
        held = {a.badge_class_id for a in awards_of(badges, rider_id)}
        assert held == {knights.golden.badge_class_id, knights.green.badge_class_id}

    # Why does rider R hold badge B: both explained, with the criteria version they met.
    rider_id = riders[0]
    why = auditor.ExplainAward(pb.ExplainAwardRequest(
        rider_id=rider_id, badge_class_id=knights.golden.badge_class_id))
    assert why.award == golden_awards[rider_id]
    assert why.badge_class.name == "金蜂骑士"
    assert why.criteria.min_volunteer_hours == "10"
    assert "金蜂骑士" in why.explanation
    assert golden_awards[rider_id].award_id in why.explanation
    assert "10 hours of confirmed volunteer service" in why.explanation
    assert principal("community", city.community) in why.explanation
    for evidence in golden_awards[rider_id].evidence:
        assert evidence.reference in why.explanation
    why = auditor.ExplainAward(pb.ExplainAwardRequest(
        rider_id=rider_id, badge_class_id=knights.green.badge_class_id))
    assert why.award == green_awards[rider_id]
    assert list(why.criteria.track_requirements) == list(
        knights.green.criteria.track_requirements)
    assert "青蜂骑士" in why.explanation
    assert "1 course(s) passed in GRASSROOTS_GOVERNANCE" in why.explanation
    assert f"training {course_id} (log position {green_awards[rider_id].evidence[0].position})" \
        in why.explanation

    # Who holds 金蜂骑士: page by page, every holder once.
    for badge_class_id, awards in ((knights.golden.badge_class_id, golden_awards),
                                   (knights.green.badge_class_id, green_awards)):
        pages, token = [], ""
        while True:
            page = auditor.ListBadgeHolders(pb.ListBadgeHoldersRequest(
                badge_class_id=badge_class_id, page_size=3, page_token=token))
            assert 0 < len(page.awards) <= 3
            pages.append(list(page.awards))
            token = page.next_page_token
            if not token:
                break
        assert len(pages) >= 2
        held = [a for page in pages for a in page]
        assert len({a.award_id for a in held}) == len(held)
        assert all(a.badge_class_id == badge_class_id for a in held)
        by_rider = {a.rider_id: a for a in held}
        assert set(riders) <= set(by_rider)
        assert all(by_rider[r] == awards[r] for r in riders)


# ---------------------------------------------------------------------------- bad input


@dataclass(frozen=True)
class Scene:
    """What the bad-input table needs: a rider holding a badge, a revoked award, a confirmed
    shift."""

    city: City
    holder: str
    honour: str  # a class `holder` holds (manual award)
    golden: str  # 金蜂骑士, which `holder` (2 confirmed hours) does not hold
    revoked_award: str
    confirmed_shift: str
    logged_shift: str  # logged at the city's community, not yet confirmed
    # Another street of the city, and a community of it: their callers act for neither the
    # riders nor the community above.
    other_street: str
    other_community: str


@pytest.fixture(scope="module")
def scene(identity: ServiceProcess, training: ServiceProcess, badges: ServiceProcess,
          world: World, knights: Knights) -> Scene:
    holder, other = new_rider(identity, world), new_rider(identity, world)
    honour = honour_class(badges, world.city)
    grant(badges, holder, honour)
    revoked = grant(badges, other, honour).award_id
    badges.client("city_admin").RevokeAward(pb.RevokeAwardRequest(
        request_id=new_request_id(), award_id=revoked, reason="核实有误"))
    shift = log_service(badges, world.city, holder, "2")
    assert list(confirm(badges, shift).award_ids) == []
    logged = log_service(badges, world.city, other, "1")
    admin = identity.client("city_admin")
    other_street = create_organisation(admin, ipb.ORGANISATION_KIND_STREET, "南大街街道",
                                       world.city.district).organisation_id
    other_community = create_organisation(admin, ipb.ORGANISATION_KIND_COMMUNITY, "南大街社区",
                                          other_street).organisation_id
    settled(badges, training)
    return Scene(city=world.city, holder=holder, honour=honour,
                 golden=knights.golden.badge_class_id, revoked_award=revoked,
                 confirmed_shift=shift, logged_shift=logged, other_street=other_street,
                 other_community=other_community)


def caller(badges: ServiceProcess, scene: Scene, who: str) -> Client:
    """A role's caller, or the caller of the other street's office or community."""
    if who == "other_street_office":
        return badges.client_for("street_office", scene.other_street)
    if who == "other_community":
        return badges.client_for("community", scene.other_community)
    return badges.client(who)


Build = Callable[[Scene], Any]


def criteria(**fields: Any) -> Build:
    return on(pb.CreateBadgeClassRequest, name="不可能骑士", issuer_id=lambda s: s.city.city,
              criteria=pb.Criteria(**fields))


def volunteer(**fields: Any) -> Build:
    values: dict[str, Any] = {"rider_id": lambda s: s.holder,
                              "community_id": lambda s: s.city.community,
                              "activity": "社区巡查", "start_time": lambda s: at(-minutes(90)),
                              "hours": "2"}
    values.update(fields)
    return on(pb.LogVolunteerServiceRequest, **values)


def unreadable_second_evidence(s: Scene) -> pb.GrantBadgeRequest:
    request = grant_request(s.holder, s.honour)
    request.evidence.add(narrative="目击者证言").time.seconds = 10**12  # after 9999-12-31
    return request


GRASSROOTS = pb.TrackRequirement(track=pb.TRACK_GRASSROOTS_GOVERNANCE, courses_passed=1)

BAD_INPUT = {
    # Unknown ids: NOT_FOUND, naming what was not found.
    "GetAward-unknown-award": Bad(
        "GetAward", "auditor", on(pb.GetAwardRequest, award_id=RANDOM_ID), NOT_FOUND,
        reason="AWARD_NOT_FOUND"),
    "RevokeAward-unknown-award": Bad(
        "RevokeAward", "city_admin",
        on(pb.RevokeAwardRequest, award_id=RANDOM_ID, reason="核实有误"), NOT_FOUND,
        reason="AWARD_NOT_FOUND"),
    "ExportCredential-unknown-award": Bad(
        "ExportCredential", "auditor", on(pb.ExportCredentialRequest, award_id=RANDOM_ID),
        NOT_FOUND, reason="AWARD_NOT_FOUND"),
    "GetBadgeClass-unknown-class": Bad(
        "GetBadgeClass", "merchant", on(pb.GetBadgeClassRequest, badge_class_id=RANDOM_ID),
        NOT_FOUND, reason="BADGE_CLASS_NOT_FOUND"),
    "GrantBadge-unknown-class": Bad(
        "GrantBadge", "street_office",
        lambda s: grant_request(s.holder, RANDOM_ID), NOT_FOUND,
        reason="BADGE_CLASS_NOT_FOUND"),
    "ReviseBadgeCriteria-unknown-class": Bad(
        "ReviseBadgeCriteria", "city_admin",
        on(pb.ReviseBadgeCriteriaRequest, badge_class_id=RANDOM_ID,
           criteria=pb.Criteria(min_volunteer_hours="5")), NOT_FOUND,
        reason="BADGE_CLASS_NOT_FOUND"),
    "ListBadgeHolders-unknown-class": Bad(
        "ListBadgeHolders", "auditor", on(pb.ListBadgeHoldersRequest, badge_class_id=RANDOM_ID),
        NOT_FOUND, reason="BADGE_CLASS_NOT_FOUND"),
    "ExplainAward-unknown-class": Bad(
        "ExplainAward", "auditor",
        on(pb.ExplainAwardRequest, rider_id=lambda s: s.holder, badge_class_id=RANDOM_ID),
        NOT_FOUND, reason="BADGE_CLASS_NOT_FOUND"),
    "ExplainAward-a-badge-the-rider-does-not-hold": Bad(
        "ExplainAward", "auditor",
        on(pb.ExplainAwardRequest, rider_id=lambda s: s.holder,
           badge_class_id=lambda s: s.golden), NOT_FOUND,
        reason="AWARD_NOT_FOUND"),
    "ConfirmVolunteerService-unknown-shift": Bad(
        "ConfirmVolunteerService", "city_admin",
        on(pb.ConfirmVolunteerServiceRequest, shift_id=RANDOM_ID), NOT_FOUND,
        reason="SHIFT_NOT_FOUND"),
    "RejectVolunteerService-unknown-shift": Bad(
        "RejectVolunteerService", "city_admin",
        on(pb.RejectVolunteerServiceRequest, shift_id=RANDOM_ID, reason="无此活动"), NOT_FOUND,
        reason="SHIFT_NOT_FOUND"),
    "GrantBadge-unknown-rider": Bad(
        "GrantBadge", "city_admin", lambda s: grant_request(RANDOM_ID, s.honour), NOT_FOUND,
        reason="RIDER_NOT_FOUND"),
    "LogVolunteerService-unknown-rider": Bad(
        "LogVolunteerService", "community", volunteer(rider_id=RANDOM_ID), NOT_FOUND,
        reason="RIDER_NOT_FOUND"),
    "ListRiderAwards-unknown-rider": Bad(
        "ListRiderAwards", "city_admin", on(pb.ListRiderAwardsRequest, rider_id=RANDOM_ID),
        NOT_FOUND, reason="RIDER_NOT_FOUND"),
    "ListVolunteerService-unknown-rider": Bad(
        "ListVolunteerService", "auditor", on(pb.ListVolunteerServiceRequest,
                                              rider_id=RANDOM_ID),
        NOT_FOUND, reason="RIDER_NOT_FOUND"),
    "LogVolunteerService-unknown-community": Bad(
        "LogVolunteerService", "platform", volunteer(community_id=RANDOM_ID), NOT_FOUND,
        reason="COMMUNITY_NOT_FOUND"),
    "LogVolunteerService-at-a-street-not-a-community": Bad(
        "LogVolunteerService", "street_office",
        volunteer(community_id=lambda s: s.city.street), INVALID, field="community_id",
        reason="ORGANISATION_KIND_NOT_ALLOWED"),
    "CreateBadgeClass-unknown-issuer": Bad(
        "CreateBadgeClass", "city_admin",
        on(pb.CreateBadgeClassRequest, name="无名骑士", issuer_id=RANDOM_ID,
           criteria=pb.Criteria(min_volunteer_hours="5")), NOT_FOUND,
        reason="ORGANISATION_NOT_FOUND"),
    "GetAward-malformed-id": Bad(
        "GetAward", "auditor", on(pb.GetAwardRequest, award_id="not-an-id"), INVALID,
        field="award_id"),
    # Out of the caller's scope, whether or not it exists (AIP-211): PERMISSION_DENIED.
    "RevokeAward-unknown-award-by-a-street-office": Bad(
        "RevokeAward", "street_office",
        on(pb.RevokeAwardRequest, award_id=RANDOM_ID, reason="核实有误"), DENIED,
        reason="OUT_OF_SCOPE"),
    "ConfirmVolunteerService-unknown-shift-by-a-community": Bad(
        "ConfirmVolunteerService", "community",
        on(pb.ConfirmVolunteerServiceRequest, shift_id=RANDOM_ID), DENIED,
        reason="OUT_OF_SCOPE"),
    "LogVolunteerService-unknown-rider-by-a-platform": Bad(
        "LogVolunteerService", "platform", volunteer(rider_id=RANDOM_ID), DENIED,
        reason="OUT_OF_SCOPE"),
    "ListRiderAwards-unknown-rider-by-a-platform": Bad(
        "ListRiderAwards", "platform", on(pb.ListRiderAwardsRequest, rider_id=RANDOM_ID),
        DENIED, reason="OUT_OF_SCOPE"),
    # Service done at a community of another street is that street's, and that community's.
    "ConfirmVolunteerService-by-the-office-of-another-street": Bad(
        "ConfirmVolunteerService", "other_street_office",
        on(pb.ConfirmVolunteerServiceRequest, shift_id=lambda s: s.logged_shift), DENIED,
        reason="OUT_OF_SCOPE"),
    "RejectVolunteerService-by-the-office-of-another-street": Bad(
        "RejectVolunteerService", "other_street_office",
        on(pb.RejectVolunteerServiceRequest, shift_id=lambda s: s.logged_shift,
           reason="不属实"), DENIED, reason="OUT_OF_SCOPE"),
    "ConfirmVolunteerService-by-another-community": Bad(
        "ConfirmVolunteerService", "other_community",
        on(pb.ConfirmVolunteerServiceRequest, shift_id=lambda s: s.logged_shift), DENIED,
        reason="OUT_OF_SCOPE"),
    "GrantBadge-by-the-office-of-another-street": Bad(
        "GrantBadge", "other_street_office", lambda s: grant_request(s.holder, s.golden),
        DENIED, reason="OUT_OF_SCOPE"),
    # State conflicts.
    "GrantBadge-a-badge-the-rider-holds": Bad(
        "GrantBadge", "street_office", lambda s: grant_request(s.holder, s.honour), EXISTS,
        reason="BADGE_ALREADY_HELD"),
    "RevokeAward-twice": Bad(
        "RevokeAward", "street_office",
        on(pb.RevokeAwardRequest, award_id=lambda s: s.revoked_award, reason="再次撤销"),
        PRECONDITION, reason="AWARD_REVOKED"),
    "ConfirmVolunteerService-twice": Bad(
        "ConfirmVolunteerService", "street_office",
        on(pb.ConfirmVolunteerServiceRequest, shift_id=lambda s: s.confirmed_shift),
        PRECONDITION, reason="SHIFT_CONFIRMED"),
    "RejectVolunteerService-a-confirmed-shift": Bad(
        "RejectVolunteerService", "city_admin",
        on(pb.RejectVolunteerServiceRequest, shift_id=lambda s: s.confirmed_shift,
           reason="重复登记"), PRECONDITION, reason="SHIFT_CONFIRMED"),
    # Criteria that could never be met, or name nothing.
    "CreateBadgeClass-empty-criteria": Bad(
        "CreateBadgeClass", "city_admin", criteria(), INVALID, field="criteria"),
    "CreateBadgeClass-100-hours-within-2-days": Bad(
        "CreateBadgeClass", "city_admin", criteria(min_volunteer_hours="100", within_days=2),
        INVALID, field="criteria.min_volunteer_hours"),
    "CreateBadgeClass-unspecified-track": Bad(
        "CreateBadgeClass", "city_admin",
        criteria(track_requirements=[pb.TrackRequirement(courses_passed=1)]), INVALID,
        field="criteria.track_requirements[0].track"),
    "CreateBadgeClass-malformed-course-id": Bad(
        "CreateBadgeClass", "city_admin", criteria(required_course_ids=["not-a-course"]),
        INVALID, field="criteria.required_course_ids[0]"),
    "CreateBadgeClass-a-track-twice": Bad(
        "CreateBadgeClass", "city_admin", criteria(track_requirements=[GRASSROOTS, GRASSROOTS]),
        INVALID, field="criteria.track_requirements[1].track"),
    "CreateBadgeClass-without-a-name": Bad(
        "CreateBadgeClass", "city_admin",
        on(pb.CreateBadgeClassRequest, name=" ", issuer_id=lambda s: s.city.city,
           criteria=pb.Criteria(min_volunteer_hours="5")), INVALID, field="name"),
    "ReviseBadgeCriteria-empty-criteria": Bad(
        "ReviseBadgeCriteria", "city_admin",
        on(pb.ReviseBadgeCriteriaRequest, badge_class_id=lambda s: s.honour,
           criteria=pb.Criteria()), INVALID, field="criteria"),
    # Volunteer service as it could not have happened.
    "LogVolunteerService-0-hours": Bad(
        "LogVolunteerService", "platform", volunteer(hours="0"), INVALID, field="hours"),
    "LogVolunteerService-25-hours": Bad(
        "LogVolunteerService", "platform", volunteer(hours="25"), INVALID, field="hours"),
    "LogVolunteerService-1_5-hours": Bad(
        "LogVolunteerService", "platform", volunteer(hours="1_5"), INVALID, field="hours"),
    "LogVolunteerService-starting-in-the-future": Bad(
        "LogVolunteerService", "platform", volunteer(start_time=lambda s: at(minutes(60))),
        INVALID, field="start_time"),
    "LogVolunteerService-without-a-start": Bad(
        "LogVolunteerService", "platform", volunteer(start_time=None), INVALID,
        field="start_time"),
    # Manual awards need a reason and evidence.
    "GrantBadge-without-a-reason": Bad(
        "GrantBadge", "street_office",
        lambda s: grant_request(s.holder, s.honour, reason=""), INVALID, field="reason"),
    "GrantBadge-without-evidence": Bad(
        "GrantBadge", "street_office",
        on(pb.GrantBadgeRequest, rider_id=lambda s: s.holder, badge_class_id=lambda s: s.honour,
           reason="见义勇为"), INVALID, field="evidence"),
    # An enum number the contract does not define is refused, never read as UNSPECIFIED: as
    # a filter that would be "any status", in criteria "a track is required".
    "ListVolunteerService-unknown-status": Bad(
        "ListVolunteerService", "platform",
        on(pb.ListVolunteerServiceRequest, rider_id=lambda s: s.holder, status=99),
        INVALID, field="status", reason="ENUM_VALUE_UNKNOWN"),
    "CreateBadgeClass-unknown-track": Bad(
        "CreateBadgeClass", "city_admin",
        criteria(track_requirements=[pb.TrackRequirement(track=99, courses_passed=1)]),
        INVALID, field="criteria.track_requirements[0].track"),
    # The whole range a status list number may take, said when one is outside it.
    "GetStatusList-list-number-1000000": Bad(
        "GetStatusList", "merchant",
        on(pb.GetStatusListRequest, issuer_id=lambda s: s.city.city, list_number=1_000_000),
        INVALID, field="list_number", reason="VALUE_OUT_OF_RANGE"),
    # A field of a repeated message is named by its path from the request (AIP-193).
    "GrantBadge-unreadable-time-of-the-second-evidence": Bad(
        "GrantBadge", "street_office", unreadable_second_evidence, INVALID,
        field="evidence[1].time", reason="TIME_INVALID"),
    # Not a credential at all.
    "VerifyCredential-garbage": Bad(
        "VerifyCredential", "merchant", on(pb.VerifyCredentialRequest, credential_jwt="garbage"),
        INVALID, field="credential_jwt"),
}


@pytest.mark.parametrize("case", BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_bad_input_is_refused_precisely_and_writes_nothing(
        badges: ServiceProcess, scene: Scene, case: Bad) -> None:
    request = case.request(scene)
    before = badges.last_position()
    case.refused(caller(badges, scene, case.who), request, "badges.qiji")
    assert written_by_callers_since(badges, before) == []


def test_a_grants_unreadable_evidence_time_comes_with_its_other_faults_at_its_path(
        badges: ServiceProcess, scene: Scene) -> None:
    """The time of the second piece of evidence is `evidence[1].time` (AIP-193), and it is
    reported with the empty reason and the unknown class in one answer, not first and
    alone."""
    request = grant_request(scene.holder, RANDOM_ID, reason="")
    request.evidence.add(narrative="目击者证言").time.seconds = 10**12  # after 9999-12-31
    before = badges.last_position()
    refused = call_error(lambda: badges.client("city_admin").GrantBadge(request))
    assert (refused.code, refused.reason) == (INVALID, "INVALID_ARGUMENT"), refused
    assert sorted((f, r) for f, r, _ in refused.violations) == [
        ("badge_class_id", "BADGE_CLASS_NOT_FOUND"), ("evidence[1].time", "TIME_INVALID"),
        ("reason", "FIELD_REQUIRED")], refused
    assert written_by_callers_since(badges, before) == []
    out_of_range = call_error(lambda: badges.client("merchant").GetStatusList(
        pb.GetStatusListRequest(issuer_id=scene.city.city, list_number=1_000_000)))
    assert out_of_range.violations == [("list_number", "VALUE_OUT_OF_RANGE",
                                        "must be 0 to 999999")]


def test_a_credential_that_is_not_a_signed_credential_of_ours_never_verifies(
        badges: ServiceProcess, scene: Scene) -> None:
    """Three dot-separated parts that are not a JWS of ours (a header that is not a JSON
    object, an unknown or malformed key id, no signature): never valid, and never an internal
    error. Every variant is tried before the test says which ones failed."""
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    def header(**fields: Any) -> str:
        return b64(json.dumps(fields).encode())

    kid = json.loads(badges.client("auditor").GetIssuerKeys(
        pb.GetIssuerKeysRequest()).jwks_json)["keys"][0]["kid"]
    payload = b64(json.dumps({"id": f"urn:uuid:{scene.revoked_award}"}).encode())
    variants = {
        "not base64url": "a.b.c",
        "three empty parts": "..",
        "header not json": f"{b64(b'not json')}.{payload}.AAAA",
        "header a json array": f"{b64(b'[]')}.{payload}.AAAA",
        "header json null": f"{b64(b'null')}.{payload}.AAAA",
        "header a json number": f"{b64(b'1')}.{payload}.AAAA",
        "kid a json array": f"{header(alg='EdDSA', kid=[kid])}.{payload}.AAAA",
        "unknown kid": f"{header(alg='EdDSA', kid='someone-else')}.{payload}.AAAA",
        "our kid, short signature": f"{header(alg='EdDSA', kid=kid)}.{payload}.AAAA",
        "our kid, zero signature": f"{header(alg='EdDSA', kid=kid)}.{payload}.{b64(bytes(64))}",
        "alg none, no signature": f"{header(alg='none', kid=kid)}.{payload}.",
    }
    before = badges.last_position()
    wrong: dict[str, str] = {}
    for name, jwt in variants.items():
        try:
            reply = badges.client("merchant").VerifyCredential(
                pb.VerifyCredentialRequest(credential_jwt=jwt))
        except grpc.RpcError as error:
            details = details_of(error)
            if (details.code, details.fields) != (INVALID, ["credential_jwt"]):
                wrong[name] = f"{details.code.name}: {details.message}"
            continue
        if reply.signature_valid or reply.valid or not reply.problems:
            wrong[name] = f"answered {reply}"
    assert wrong == {}
    assert written_by_callers_since(badges, before) == []


# ---------------------------------------------------------------------------- credentials


def independent_verify(jwt: str, jwks_json: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A verifier written from RFC 7515 (compact JWS), RFC 7518 (RS256) and RFC 8037 / 9864
    (Ed25519, OKP keys) with `cryptography` alone: (header, payload) when the signature holds;
    InvalidSignature when not."""
    def unb64(text: str) -> bytes:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))

    header_b64, payload_b64, signature_b64 = jwt.split(".")
    header = json.loads(unb64(header_b64))
    keys = {k["kid"]: k for k in json.loads(jwks_json)["keys"]}
    jwk = keys[header["kid"]]
    signed = f"{header_b64}.{payload_b64}".encode()
    if header["alg"] == "RS256":
        assert jwk["kty"] == "RSA"
        public = rsa.RSAPublicNumbers(int.from_bytes(unb64(jwk["e"]), "big"),
                                      int.from_bytes(unb64(jwk["n"]), "big")).public_key()
        public.verify(unb64(signature_b64), signed, padding.PKCS1v15(), hashes.SHA256())
    else:
        assert header["alg"] == "Ed25519" and (jwk["kty"], jwk["crv"]) == ("OKP", "Ed25519")
        Ed25519PublicKey.from_public_bytes(unb64(jwk["x"])).verify(unb64(signature_b64),
                                                                   signed)
    return header, json.loads(unb64(payload_b64))


CLAIMS = ("iss", "jti", "sub", "nbf", "exp")


def cli_verify(jwt_file: Path, badges: ServiceProcess, token: str) -> subprocess.CompletedProcess:
    """`qiji credential verify` as a user runs it from the repository."""
    python = REPO / ".venv" / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if not k.startswith("QIJI_")}
    return subprocess.run(
        [str(python if python.exists() else sys.executable), "-m", "shared.tools.cli", "credential",
         "verify", str(jwt_file), "--address", f"badges={badges.address}", "--token", token],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=30, check=False)


def test_an_exported_credential_verifies_independently_until_it_is_revoked(
        identity: ServiceProcess, badges: ServiceProcess, world: World, knights: Knights,
        tmp_path: Path) -> None:
    guardian = create_class(badges, world.city, unique("守护骑士"), pb.Criteria(
        min_volunteer_hours="12", narrative="12 小时经社区确认的志愿服务"),
        validity_days=365, description="守护社区的骑手")
    rider_id = new_rider(identity, world, name="陈静")
    made = confirm(badges, log_service(badges, world.city, rider_id, "12")).award_ids
    auditor = badges.client("auditor")
    award = next(a for a in (auditor.GetAward(pb.GetAwardRequest(award_id=i)).award
                             for i in made) if a.badge_class_id == guardian.badge_class_id)

    exported = auditor.ExportCredential(pb.ExportCredentialRequest(award_id=award.award_id))
    jwks = badges.client("merchant").GetIssuerKeys(pb.GetIssuerKeysRequest()).jwks_json
    header, payload = independent_verify(exported.credential_jwt, jwks)
    assert header == {"alg": "RS256", "kid": exported.key_id, "typ": "JWT"}
    assert {k: v for k, v in payload.items() if k not in CLAIMS} == json.loads(
        exported.credential_json)
    assert payload["type"] == ["VerifiableCredential", "OpenBadgeCredential"]
    assert payload["id"] == payload["jti"] == f"urn:uuid:{award.award_id}"
    assert payload["issuer"]["name"] == "常州市"
    assert payload["issuer"]["id"] == payload["iss"] == (
        f"{badges.env['QIJI_ISSUER_URL']}/issuers/{world.city.city}")
    achievement = payload["credentialSubject"]["achievement"]
    assert achievement["name"] == guardian.name
    assert achievement["criteria"]["narrative"] == "12 小时经社区确认的志愿服务"
    assert payload["validFrom"] and payload["validUntil"]
    assert [e["id"] for e in payload["evidence"]] == [
        f"urn:qiji:evidence:badges:{e.reference}" for e in award.evidence]
    assert rider_id not in exported.credential_jwt + exported.credential_json

    # Tampered with: the independent check and badges both say the signature fails.
    head, _body, signature = exported.credential_jwt.split(".")
    forged = dict(payload, name="伪造骑士")
    forged_body = base64.urlsafe_b64encode(
        json.dumps(forged, ensure_ascii=False).encode()).decode().rstrip("=")
    tampered = f"{head}.{forged_body}.{signature}"
    with pytest.raises(InvalidSignature):
        independent_verify(tampered, jwks)
    checked = badges.client("merchant").VerifyCredential(
        pb.VerifyCredentialRequest(credential_jwt=tampered))
    assert (checked.signature_valid, checked.valid) == (False, False)

    checked = badges.client("merchant").VerifyCredential(
        pb.VerifyCredentialRequest(credential_jwt=exported.credential_jwt))
    assert (checked.signature_valid, checked.valid, checked.status, checked.award_id) == (
        True, True, pb.AWARD_STATUS_ACTIVE, award.award_id)
    assert list(checked.problems) == []

    jwt_file = tmp_path / "credential.jwt"
    jwt_file.write_text(exported.credential_jwt + "\n")
    ran = cli_verify(jwt_file, badges, badges.tokens["auditor"])
    assert ran.returncode == 0, ran
    assert ran.stdout.strip().splitlines()[-1] == "VALID", ran.stdout
    assert "signature: valid" in ran.stdout

    revoked = badges.client("street_office").RevokeAward(pb.RevokeAwardRequest(
        request_id=new_request_id(), award_id=award.award_id, reason="志愿时长登记有误"))
    assert revoked.award.status == pb.AWARD_STATUS_REVOKED
    assert revoked.award.revoked_by == principal("street_office", world.city.street)
    # The signature still holds (it covers what was issued); the award no longer stands.
    independent_verify(exported.credential_jwt, jwks)
    checked = badges.client("merchant").VerifyCredential(
        pb.VerifyCredentialRequest(credential_jwt=exported.credential_jwt))
    assert (checked.signature_valid, checked.valid, checked.status) == (
        True, False, pb.AWARD_STATUS_REVOKED)
    assert checked.problems

    ran = cli_verify(jwt_file, badges, badges.tokens["auditor"])
    assert ran.returncode == 1, ran
    assert ran.stdout.strip().splitlines()[-1] == "NOT VALID", ran.stdout
    assert "REVOKED" in ran.stdout


# ---------------------------------------------------------------------------- crashes, retries


def test_a_follower_killed_mid_stream_awards_each_completion_exactly_once(
        identity: ServiceProcess, training: ServiceProcess, badges: ServiceProcess,
        world: World, knights: Knights) -> None:
    green = knights.green.badge_class_id
    riders = [new_rider(identity, world, name=n) for n in ("周杰", "吴敏", "郑浩")]
    course_id = grassroots_course(training, world.city, "骑手议事会实务")

    badges.kill()  # SIGKILL while its followers may be in the middle of identity's events
    try:
        # While badges is down, the three pass the course in training: three completions
        # stored upstream that badges has not seen.
        pass_course(training, world.city, course_id, riders)
    finally:
        badges.start()

    awards = {r: eventually(lambda r=r: award_of(badges, r, green), f"青蜂骑士 for {r}")
              for r in riders}
    settled(badges, training)
    for rider_id, award in awards.items():
        held = awards_of(badges, rider_id, include_inactive=True)
        assert [a.award_id for a in held] == [award.award_id], rider_id
        assert [(e.source, e.reference) for e in award.evidence] == [("training", course_id)]
        assert award.evidence[0].position > 0

    granted = badges.events(GRANTED)
    per_rider = Counter(state(e)["rider_id"] for e in granted)
    assert all(per_rider[r] == 1 for r in riders), per_rider
    # Every Granted event is an award, and every award has exactly one Granted event.
    all_awards = [a.award_id for r in world.riders
                  for a in awards_of(badges, r, include_inactive=True)]
    assert len(all_awards) == len(set(all_awards))
    assert Counter(e.originator_id for e in granted) == Counter(all_awards)


def test_a_retried_grant_answers_the_same_and_writes_nothing_also_after_a_restart(
        identity: ServiceProcess, training: ServiceProcess, badges: ServiceProcess,
        world: World) -> None:
    honour = honour_class(badges, world.city)
    rider_id = new_rider(identity, world, name="孙丽")
    request = grant_request(rider_id, honour)
    first = badges.client("street_office").GrantBadge(request)
    assert first.award.kind == pb.AWARD_KIND_MANUAL
    assert first.award.reason == "在北大街救助落水儿童"
    position = settled(badges, training)

    again = badges.client("street_office").GrantBadge(request)
    assert again == first
    assert written_by_callers_since(badges, position) == []

    badges.restart()
    after = badges.client("street_office").GrantBadge(request)
    assert after == first
    assert written_by_callers_since(badges, position) == []
    reused = call_error(lambda: badges.client("street_office").GrantBadge(
        grant_request(rider_id, honour, request.request_id, reason="另一件事")))
    assert (reused.code, reused.fields) == (INVALID, ["request_id"]), reused
    assert written_by_callers_since(badges, position) == []
    granted = [e for e in badges.events(GRANTED) if state(e)["rider_id"] == rider_id]
    assert [e.originator_id for e in granted] == [first.award.award_id]
    assert [a.award_id for a in awards_of(badges, rider_id, include_inactive=True)] == [
        first.award.award_id]


# ---------------------------------------------------------------------------- standard services


def test_badges_keeps_serving_while_governance_cannot_be_reached(
        badges: ServiceProcess, knights: Knights) -> None:
    """governance's address has nobody listening: its follower backs off and says so in the
    log, and everything else keeps answering."""
    def said_unavailable() -> bool:
        for line in badges.log_path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if (entry.get("event") == "follower.upstream_unavailable"
                    and entry.get("upstream") == "governance"):
                return True
        return False

    eventually(said_unavailable, "badges logs that governance cannot be reached")
    assert badges.running
    assert badges.channel is not None
    health = health_pb2_grpc.HealthStub(badges.channel)
    for name in ("", BADGES):
        assert health.Check(health_pb2.HealthCheckRequest(service=name),
                            timeout=RPC_TIMEOUT).status == health_pb2.HealthCheckResponse.SERVING
    got = badges.client("merchant").GetBadgeClass(pb.GetBadgeClassRequest(
        badge_class_id=knights.golden.badge_class_id)).badge_class
    assert got.name == "金蜂骑士"
    assert json.loads(badges.client("merchant").GetIssuerKeys(
        pb.GetIssuerKeysRequest()).jwks_json)["keys"]
