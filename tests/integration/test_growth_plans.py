"""Growth paths and riders' growth plans (量身定制) over a real store, with training following a
real identity's log: the city's versioned path, a plan opened for a rider, its progress from
the rider's completions, and each step reached once, on the public feed with its evidence."""

from __future__ import annotations

import json
import threading
from collections import Counter
from datetime import timedelta
from decimal import Decimal

import pytest
from qiji.feed.v1 import public_feed_service_pb2 as fpb

from services.training.application import TrainingApplication
from services.training.domain.growth import GrowthPlanStatus, GrowthRole
from services.training.domain.values import (
    CompletionResult,
    CourseFormat,
    InstructorKind,
    Track,
)
from services.training.growth import StepInput
from services.training.public_events import CATALOGUE
from shared.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from shared.followers import Follower, LocalFeed
from shared.grpc.public_feed import read_public
from tests.city import build_city, in_application
from tests.conftest import MASTER_KEY, as_actor, settings_for
from tests.integration import test_training_app as training_world
from tests.integration.test_training_app import (
    ADMIN,
    PLATFORM,
    Clock,
    enrol,
    new_rider,
    published_course,
    session,
)

# The fixtures of training's own tests: identity and training on the store, a moving clock.
world = training_world.world
clock = training_world.clock

GOV = Track.GRASSROOTS_GOVERNANCE
CIVIC = Track.CIVIC_EDUCATION


def steps(mediation_course: str) -> list[StepInput]:
    """骑手 → 志愿者 → 社区社工: the pre-job certification and civic hours first, then governance
    hours and the mediation course."""
    return [
        StepInput(key="volunteer", title="志愿者", role=GrowthRole.VOLUNTEER,
                  hours_by_track=[(CIVIC, "1.5")], course_ids=[], pre_job_certified=False),
        StepInput(key="social-worker", title="社区社工",
                  role=GrowthRole.COMMUNITY_SOCIAL_WORKER, hours_by_track=[(GOV, "3")],
                  course_ids=[mediation_course], pre_job_certified=False)]


def define_path(w, mediation_course: str) -> str:
    with as_actor(ADMIN):
        return w["training"].define_growth_path(
            name="从骑手到社区社工", description="", steps=steps(mediation_course)
        )["growth_path_id"]


def open_plan(w, rider: str, path: str, **more) -> str:
    with as_actor(PLATFORM):
        return w["training"].open_growth_plan(
            rider_id=rider, growth_path_id=path, path_version=more.get("path_version", 0),
            goals="三年内成为专职社工", tracks=[GOV])["growth_plan_id"]


def pass_course(w, clock, rider: str, course_id: str, start_in_hours: int) -> dict:
    s = session(w, course_id, start_in_hours=start_in_hours)
    enrol(w, s, rider)
    clock.now += timedelta(hours=start_in_hours)
    with as_actor(PLATFORM):
        w["training"].check_in_rider(session_id=s, rider_id=rider)
        return w["training"].record_completion(session_id=s, rider_id=rider,
                                               result=CompletionResult.PASSED, score=None)


def reached(t: TrainingApplication) -> list[str]:
    return [n.topic for n in t.read_log(1, 100_000) if n.topic.endswith("StepReached")]


def public_steps(t: TrainingApplication) -> list[dict]:
    reply = read_public(t, CATALOGUE, fpb.ReadPublicEventsRequest(from_position=1,
                                                                  all_platforms=True))
    return [json.loads(e.event.text_data) for e in reply.events
            if e.event.type == "qiji.training.v1.GrowthStepReached"]


def test_a_plan_climbs_its_path_from_the_riders_completions_each_step_once(world, clock):
    t = world["training"]
    civic = published_course(world, CIVIC, "1.5")
    governance = published_course(world, GOV, "2")
    mediation = published_course(world, GOV, "1")
    path = define_path(world, mediation)
    rider = new_rider(world)
    plan = open_plan(world, rider, path)
    view = t.growth_plan(plan)
    assert view.status is GrowthPlanStatus.OPEN and view.path_version == 1
    assert [s.met for s in view.progress] == [False, False]
    assert view.progress[1].hours_missing == {GOV.value: Decimal(3)}
    assert view.progress[1].courses_missing == (mediation,)

    pass_course(world, clock, rider, governance, 2)
    pass_course(world, clock, rider, mediation, 2)
    # The second step's training is met, but the path is climbed in order.
    view = t.growth_plan(plan)
    assert [s.met for s in view.progress] == [False, True]
    assert view.reached == {}
    assert reached(t) == []

    pass_course(world, clock, rider, civic, 2)
    view = t.growth_plan(plan)
    assert list(view.reached) == ["volunteer", "social-worker"]
    assert view.reached["social-worker"]["path_version"] == 1
    assert len(reached(t)) == 2
    # Another completion changes nothing reached.
    pass_course(world, clock, rider, published_course(world, GOV, "1"), 2)
    assert len(reached(t)) == 2

    # On the public feed, for the rider's platform: the path version and the evidence used.
    published = public_steps(t)
    assert [p["step_key"] for p in published] == ["volunteer", "social-worker"]
    worker = published[1]
    assert (worker["rider_id"], worker["growth_plan_id"], worker["growth_path_id"],
            worker["path_version"], worker["role"]) == (
        rider, plan, path, 1, "COMMUNITY_SOCIAL_WORKER")
    assert len(worker["completed_session_ids"]) == 2
    stored = [e for e in t.read_log(1, 100_000) if e.topic.endswith("StepReached")]
    evidence = t.to_domain_event(stored[1]).evidence
    assert {c["course_id"] for c in evidence} == {governance, mediation}
    assert {c["session_id"] for c in evidence} == set(worker["completed_session_ids"])
    assert "三年内" not in json.dumps(published)  # the goals stay inside Qiji


def test_training_passed_before_the_plan_counts_and_a_step_is_reached_as_it_opens(
        world, clock):
    t = world["training"]
    civic = published_course(world, CIVIC, "1.5")
    path = define_path(world, published_course(world, GOV, "1"))
    rider = new_rider(world)
    pass_course(world, clock, rider, civic, 2)
    plan = open_plan(world, rider, path)
    assert list(t.growth_plan(plan).reached) == ["volunteer"]
    with pytest.raises(AlreadyExists) as error:
        open_plan(world, rider, path)
    assert error.value.reason == "GROWTH_PLAN_ALREADY_OPEN"
    assert [p.growth_plan_id for p in t.list_growth_plans(rider_id=rider)] == [plan]


def test_a_revised_path_is_a_new_version_and_a_plan_moves_to_it_only_when_revised(
        world, clock):
    t = world["training"]
    mediation = published_course(world, GOV, "1")
    path = define_path(world, mediation)
    rider = new_rider(world)
    plan = open_plan(world, rider, path)
    easier = [StepInput(key="volunteer", title="志愿者", role=GrowthRole.VOLUNTEER,
                        hours_by_track=[], course_ids=[mediation], pre_job_certified=False)]
    with as_actor(ADMIN):
        t.revise_growth_path(growth_path_id=path, name="v2", description="", steps=easier)
    assert t.growth_path(path).path_version == 2
    assert t.list_growth_paths(page_size=0, page_token="")[0][0].name == "v2"
    pass_course(world, clock, rider, mediation, 2)
    # Still on version 1, which asks civic hours first.
    assert t.growth_plan(plan).reached == {}
    with as_actor(PLATFORM):
        t.revise_growth_plan(growth_plan_id=plan, goals="先做志愿者", tracks=[GOV, CIVIC],
                             path_version=2)
    view = t.growth_plan(plan)
    assert view.path_version == 2 and view.goals == "先做志愿者"
    assert view.reached["volunteer"]["path_version"] == 2
    with as_actor(PLATFORM), pytest.raises(FailedPrecondition) as error:
        t.revise_growth_plan(growth_plan_id=plan, goals="", tracks=[], path_version=1)
    assert error.value.reason == "PATH_VERSION_OLDER"


def test_a_closed_plan_reaches_no_further_step(world, clock):
    t = world["training"]
    civic = published_course(world, CIVIC, "1.5")
    path = define_path(world, published_course(world, GOV, "1"))
    rider = new_rider(world)
    plan = open_plan(world, rider, path)
    with as_actor(PLATFORM):
        t.close_growth_plan(growth_plan_id=plan, reason="转岗")
    pass_course(world, clock, rider, civic, 2)
    assert t.growth_plan(plan).reached == {}
    assert t.growth_plan(plan).status is GrowthPlanStatus.CLOSED
    with as_actor(PLATFORM), pytest.raises(FailedPrecondition) as error:
        t.close_growth_plan(growth_plan_id=plan, reason="")
    assert error.value.reason == "GROWTH_PLAN_CLOSED"
    # A new plan on the same path may then be opened.
    assert open_plan(world, rider, path) != plan


def test_a_bad_path_reports_every_fault_in_one_answer(world):
    t = world["training"]
    draft_free = published_course(world, GOV, "1")
    bad = [StepInput(key="", title="", role=None, hours_by_track=[], course_ids=[],
                     pre_job_certified=False),
           StepInput(key="Bad Key", title="x" * 101, role=None,
                     hours_by_track=[(None, "1"), (GOV, "0.3"), (GOV, "abc")],
                     course_ids=["not-a-uuid", draft_free, draft_free],
                     pre_job_certified=False),
           StepInput(key="ok", title="ok", role=None, hours_by_track=[(GOV, "1")],
                     course_ids=[], pre_job_certified=False),
           StepInput(key="ok", title="ok", role=None, hours_by_track=[(GOV, "1")],
                     course_ids=[], pre_job_certified=False)]
    before = t.last_position()
    with as_actor(ADMIN), pytest.raises(InvalidArgument) as error:
        t.define_growth_path(name="", description="d" * 1001, steps=bad)
    found = {(v.field, v.reason) for v in error.value.violations}
    assert found == {
        ("name", "FIELD_REQUIRED"), ("description", "TEXT_TOO_LONG"),
        ("steps[0].key", "FIELD_REQUIRED"), ("steps[0].title", "FIELD_REQUIRED"),
        ("steps[0]", "STEP_EMPTY"),
        ("steps[1].key", "STEP_KEY_INVALID"), ("steps[1].title", "TEXT_TOO_LONG"),
        ("steps[1].track_hours[0].track", "ENUM_VALUE_REQUIRED"),
        ("steps[1].track_hours[1].hours", "HOURS_NOT_QUARTER_HOURS"),
        ("steps[1].track_hours[2].hours", "HOURS_INVALID"),
        ("steps[1].course_ids", "DUPLICATE_VALUE"),
        ("steps[1].course_ids[0]", "INVALID_ID"),
        ("steps[3].key", "DUPLICATE_VALUE")}
    with as_actor(ADMIN), pytest.raises(InvalidArgument) as error:
        t.define_growth_path(name="p", description="", steps=[])
    assert [(v.field, v.reason) for v in error.value.violations] == [
        ("steps", "FIELD_REQUIRED")]
    assert t.last_position() == before


def test_a_bad_plan_reports_every_fault_in_one_answer_before_looking_up_the_rider(world):
    t = world["training"]
    path = define_path(world, published_course(world, GOV, "1"))
    rider = new_rider(world)
    world["follower"].run_once()
    before = t.last_position()
    with as_actor(PLATFORM), pytest.raises(InvalidArgument) as error:
        t.open_growth_plan(rider_id="nope", growth_path_id=path, path_version=7,
                           goals="g" * 501, tracks=[GOV, None, GOV])
    assert {(v.field, v.reason) for v in error.value.violations} == {
        ("rider_id", "INVALID_ID"), ("path_version", "VALUE_OUT_OF_RANGE"),
        ("goals", "TEXT_TOO_LONG"), ("tracks[1]", "ENUM_VALUE_REQUIRED"),
        ("tracks[2]", "DUPLICATE_VALUE")}
    # A path of nothing with another fault: one INVALID_ARGUMENT naming both.
    with as_actor(PLATFORM), pytest.raises(InvalidArgument) as error:
        t.open_growth_plan(rider_id=rider,
                           growth_path_id="5b0b276e-3dca-4072-bc38-1c35fa3f20b2",
                           path_version=-1, goals="", tracks=[])
    assert {(v.field, v.reason) for v in error.value.violations} == {
        ("growth_path_id", "GROWTH_PATH_NOT_FOUND"), ("path_version", "VALUE_OUT_OF_RANGE")}
    # Only a valid request learns that its rider is unknown.
    with as_actor(PLATFORM), pytest.raises(NotFound) as missing:
        t.open_growth_plan(rider_id="5b0b276e-3dca-4072-bc38-1c35fa3f20b2",
                           growth_path_id=path, path_version=0, goals="", tracks=[])
    assert missing.value.reason == "RIDER_NOT_FOUND"
    assert t.last_position() == before


def test_a_path_naming_a_draft_course_is_refused(world):
    t = world["training"]
    with as_actor(ADMIN):
        draft = t.draft_course(track=GOV, title="调解", description="", hours="1",
                               formats=[CourseFormat.CLASSROOM], provider_id=world["university"],
                               instructor_name="张老师",
                               instructor_kind=InstructorKind.TEACHER)["course_id"]
        with pytest.raises(FailedPrecondition) as error:
            t.define_growth_path(name="p", description="", steps=steps(draft))
    assert error.value.reason == "COURSE_NOT_PUBLISHED"


@pytest.mark.postgres
def test_an_opening_racing_the_completion_that_meets_the_step_reaches_it_exactly_once(
        postgres_env):
    """The plan is opened while the completion that meets its step is recorded, both having
    read the rider's transcript before either stored anything: whichever commits second must
    see the other (StepReached once), never neither (the step missed) nor both (twice)."""
    from services.identity.application import IdentityApplication
    clock = Clock()
    identity = IdentityApplication(settings_for("identity", postgres_env), MASTER_KEY)
    training = TrainingApplication(settings_for("training", postgres_env), MASTER_KEY,
                                   clock=clock)
    try:
        follower = Follower(training, LocalFeed(identity), training.follow_identity,
                            topics=TrainingApplication.IDENTITY_TOPICS)
        training.identity_follower = follower
        w = {"identity": identity, "training": training, "riders": 0}
        city = build_city(in_application(identity), also=("provider",))
        w.update(street=city.street, platform=city.platform, station=city.station,
                 university=city.provider)
        with as_actor(ADMIN):
            w["space"] = identity.create_service_space(
                street_id=w["street"], name="驿站", address="x", amenities=[],
                opening_hours=[])["service_space_id"]
        course = published_course(w, GOV, "3")
        with as_actor(ADMIN):
            path = training.define_growth_path(name="p", description="", steps=[StepInput(
                key="social-worker", title="社区社工", role=GrowthRole.COMMUNITY_SOCIAL_WORKER,
                hours_by_track=[(GOV, "3")], course_ids=[], pre_job_certified=False)]
            )["growth_path_id"]
        riders = [new_rider(w) for _ in range(6)]
        follower.run_once()
        s = session(w, course, start_in_hours=2, capacity=len(riders))
        for rider in riders:
            enrol(w, s, rider)
        clock.now += timedelta(hours=2)
        with as_actor(PLATFORM):
            for rider in riders:
                training.check_in_rider(session_id=s, rider_id=rider)

        # Each command's first read of the rider's learner waits for the other's: both decide
        # on the transcript as it stood before either. A retry after a collision reads afresh.
        meet = {rider: threading.Barrier(2) for rider in riders}
        first_read = threading.local()
        read_learner = training._learner

        def learner_read_by_both(rider_id, *args, **kwargs):
            found = read_learner(rider_id, *args, **kwargs)
            if not getattr(first_read, "done", False):
                first_read.done = True
                meet[rider_id].wait(timeout=10)
            return found
        training._learner = learner_read_by_both
        errors: list[BaseException] = []

        def run(call) -> None:
            try:
                with as_actor(PLATFORM):
                    call()
            except BaseException as error:
                errors.append(error)

        calls = []
        for rider in riders:
            calls += [lambda r=rider: training.open_growth_plan(
                          rider_id=r, growth_path_id=path, path_version=0, goals="", tracks=[]),
                      lambda r=rider: training.record_completion(
                          session_id=s, rider_id=r, result=CompletionResult.PASSED,
                          score=None)]
        threads = [threading.Thread(target=run, args=(c,)) for c in calls]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert Counter(e["rider_id"] for e in public_steps(training)) == dict.fromkeys(riders, 1)
        for rider in riders:
            (plan,) = training.list_growth_plans(rider_id=rider)
            assert list(plan.reached) == ["social-worker"]
    finally:
        training.close()
        identity.close()

def test_no_plan_is_opened_for_a_rider_who_left(world):
    path = define_path(world, published_course(world, GOV, "1"))
    rider = new_rider(world)
    with as_actor(PLATFORM):
        world["identity"].record_rider_left(rider_id=rider, reason="转行")
    world["follower"].run_once()
    with pytest.raises(FailedPrecondition) as error:
        open_plan(world, rider, path)
    assert error.value.reason == "RIDER_LEFT"
    assert world["training"].list_growth_plans(rider_id=rider) == []
