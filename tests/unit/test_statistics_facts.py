"""What identity's and training's events count as: each mapper fed the real events those
applications store (their state as the feed delivers it), with the real tenancy directory and a
memory of plain dicts."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from services.identity.application import IdentityApplication
from services.identity.domain.values import Amenity, CareerMilestoneKind, OrganisationKind
from services.statistics.domain import catalogue, identity_facts, training_facts
from services.statistics.domain.facts import Event, Fact
from services.statistics.domain.periods import day_start
from services.training.application import TrainingApplication
from services.training.domain.values import (
    CompletionResult,
    CourseFormat,
    InstructorKind,
    Track,
)
from shared.followers import Follower, LocalFeed
from shared.tenancy import TenancyDirectory
from tests.conftest import MASTER_KEY, actor, as_actor, settings_for

ADMIN = actor("city", "city_admin")


class DictMemory:
    def __init__(self) -> None:
        self.entries: dict[tuple[str, str], Mapping[str, Any]] = {}

    def get(self, kind: str, ident: str) -> Mapping[str, Any] | None:
        return self.entries.get((kind, ident))

    def put(self, kind: str, ident: str, value: Mapping[str, Any]) -> None:
        self.entries[(kind, ident)] = dict(value)


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def apps(tmp_path) -> Iterator[dict[str, Any]]:
    env = {"QIJI_DATA_DIR": str(tmp_path)}
    identity = IdentityApplication(settings_for("identity", env), MASTER_KEY)
    clock = Clock()
    training = TrainingApplication(settings_for("training", env), MASTER_KEY, clock=clock)
    training.identity_follower = Follower(training, LocalFeed(identity),
                                          training.follow_identity,
                                          topics=TrainingApplication.IDENTITY_TOPICS)
    w: dict[str, Any] = {"identity": identity, "training": training, "clock": clock}
    with as_actor(ADMIN):
        def org(name: str, kind: OrganisationKind, parent: str = "") -> str:
            w[name] = identity.create_organisation(kind=kind, name=name, parent_id=parent,
                                                   department_function=None)["organisation_id"]
            return w[name]
        org("street", OrganisationKind.STREET, org("district", OrganisationKind.DISTRICT,
                                                   org("city", OrganisationKind.CITY)))
        org("community", OrganisationKind.COMMUNITY, w["street"])
        org("other street", OrganisationKind.STREET, w["district"])
        org("platform", OrganisationKind.PLATFORM)
        org("station", OrganisationKind.STATION, w["platform"])
        org("provider", OrganisationKind.EDUCATION_PROVIDER)
        w["space"] = identity.create_service_space(
            street_id=w["other street"], name="驿站", address="1 号",
            amenities=[Amenity.REST], opening_hours=[])["service_space_id"]
    yield w
    training.close()
    identity.close()


def _mapped(app: Any, service: str, after: int, directory: Any,
            memory: DictMemory | None = None) -> tuple[list[Fact], int]:
    memory = memory if memory is not None else DictMemory()
    mappers = catalogue.mappers(service)
    found: list[Fact] = []
    last = after
    for e in LocalFeed(app).read(1, 10_000, list(mappers)):
        last = e.position
        event = Event(service, e.position, str(e.originator_id), e.originator_version, e.topic,
                      e.state)
        produced = mappers[e.topic](event, directory, memory)
        if e.position > after:
            found.extend(produced)
    return found, last


def by_measure(facts: list[Fact]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for f in facts:
        totals[f.measure] = totals.get(f.measure, 0) + f.value
    return totals


def register(w: dict[str, Any], n: int) -> str:
    with as_actor(actor("p", "platform", organisation_id=w["platform"])):
        return w["identity"].register_rider(
            platform_id=w["platform"], platform_rider_id=f"R{n}", name="骑手",
            phone="13812345678", national_id="", home_street_id=w["street"],
            station_id=w["station"])["rider_id"]


def test_a_riders_life_counts_registered_verified_suspended_left_and_active(apps):
    identity = apps["identity"]
    rider = register(apps, 1)
    directory = TenancyDirectory(LocalFeed(identity))
    with as_actor(ADMIN):
        identity.verify_rider(rider_id=rider)
        identity.suspend_rider(rider_id=rider, reason="投诉")
        identity.reinstate_rider(rider_id=rider, reason="查明")
        identity.record_rider_left(rider_id=rider, reason="转行")
    facts, _ = _mapped(identity, "identity", 0, directory)
    assert [(f.measure, f.value) for f in facts] == [
        ("riders_registered", 1), ("riders_verified", 1), ("riders_active", 1),
        ("riders_suspended", 1), ("riders_active", -1), ("riders_active", 1),
        ("riders_left", 1), ("riders_active", -1)]
    for f in facts:
        assert (f.where.street_id, f.where.platform_id, f.where.station_id) == (
            apps["street"], apps["platform"], apps["station"])
        assert f.recorded_at.tzinfo is not None


def test_a_rider_suspended_before_verification_is_active_only_once_reinstated(apps):
    identity = apps["identity"]
    rider = register(apps, 2)
    with as_actor(ADMIN):
        identity.suspend_rider(rider_id=rider, reason="资料不全")
        identity.verify_rider(rider_id=rider)  # stays suspended
        identity.reinstate_rider(rider_id=rider, reason="补齐")
    facts, _ = _mapped(identity, "identity", 0, TenancyDirectory(LocalFeed(identity)))
    active = [(f.value, f.effective_at) for f in facts if f.measure == "riders_active"]
    assert [v for v, _ in active] == [1]
    assert by_measure(facts)["riders_verified"] == 1


def test_a_milestone_at_a_community_counts_there_and_space_use_on_its_day(apps):
    identity = apps["identity"]
    rider = register(apps, 3)
    taken = datetime(2026, 3, 5, 2, 0, tzinfo=UTC)
    with as_actor(ADMIN):
        identity.record_career_milestone(
            rider_id=rider, kind=CareerMilestoneKind.COMMUNITY_SOCIAL_WORKER,
            organisation_id=apps["community"], effective_at=taken, note="")
        identity.record_career_milestone(
            rider_id=rider, kind=CareerMilestoneKind.STATION_MASTER,
            organisation_id=apps["station"], effective_at=None, note="")
        day = identity.record_space_use(service_space_id=apps["space"],
                                        amenity=Amenity.REST, count=4, day="")
    facts, _ = _mapped(identity, "identity", 0, TenancyDirectory(LocalFeed(identity)))
    social = next(f for f in facts if f.measure == "riders_became_social_worker")
    assert social.effective_at == taken
    assert (social.where.community_id, social.where.street_id) == (apps["community"], "")
    master = next(f for f in facts if f.measure == "riders_became_station_master")
    assert master.where.street_id == apps["street"]  # no place of its own: home street
    served = next(f for f in facts if f.measure == "space_riders_served")
    assert served.value == 4 and served.where.street_id == apps["other street"]
    # Counted on the city's day it was recorded for, from its first moment.
    assert served.effective_at == day_start(date.fromisoformat(day["day"]))


def test_training_counts_sessions_attendance_completions_hours_and_certification(apps):
    identity, training, clock = apps["identity"], apps["training"], apps["clock"]
    riders = [register(apps, n) for n in (10, 11)]
    with as_actor(ADMIN):
        for r in riders:
            identity.verify_rider(rider_id=r)
    training.identity_follower.run_once()
    with as_actor(ADMIN):
        course = training.draft_course(
            track=Track.GRASSROOTS_GOVERNANCE, title="基层治理", description="", hours="1.5",
            formats=[CourseFormat.CLASSROOM], provider_id=apps["provider"],
            instructor_name="张老师", instructor_kind=InstructorKind.TEACHER)["course_id"]
        training.publish_course(course_id=course)
        training.set_pre_job_courses(course_ids=[course])
        starts = clock.now + timedelta(hours=1)
        session = training.schedule_session(
            course_id=course, service_space_id=apps["space"], starts_at=starts,
            ends_at=starts + timedelta(hours=2), capacity=10)["session_id"]
        for r in riders:
            training.enrol_rider(session_id=session, rider_id=r)
        clock.now = starts + timedelta(minutes=1)
        for r in riders:
            training.check_in_rider(session_id=session, rider_id=r)
        clock.now = starts + timedelta(days=3)  # the results are marked days later
        training.record_completion(session_id=session, rider_id=riders[0],
                                   result=CompletionResult.PASSED, score=95)
        training.record_completion(session_id=session, rider_id=riders[1],
                                   result=CompletionResult.FAILED, score=20)
    facts, _ = _mapped(training, "training", 0, TenancyDirectory(LocalFeed(identity)))
    assert by_measure(facts) == {"training_sessions": 1, "training_enrolments": 2,
                                 "training_attendance": 2, "training_completions": 1,
                                 "training_hours": 90, "riders_certified": 1}
    for f in facts:
        if f.measure != "riders_certified":
            assert f.where.street_id == apps["other street"]  # the session's space's street
            assert f.track == "GRASSROOTS_GOVERNANCE"
        if f.measure in ("training_attendance", "training_completions", "training_hours"):
            assert f.effective_at == starts  # the session's start, not when it was marked
            assert f.where.platform_id == apps["platform"]
    certified = next(f for f in facts if f.measure == "riders_certified")
    assert certified.effective_at == starts + timedelta(days=3)
    assert certified.where.street_id == apps["street"]  # the rider's home street


def test_every_measure_names_its_service_and_the_city():
    measures = catalogue.measures()
    for module in (identity_facts, training_facts):
        for m in module.MEASURES:
            assert measures[m.name] is m
            assert "CITY" in m.dimensions and m.label and m.unit and m.description
    assert measures["training_hours"].scale == 60
    assert measures["riders_active"].kind == "STOCK"
