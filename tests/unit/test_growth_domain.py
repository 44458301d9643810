"""Growth paths and plans, pure: what a step asks, what is missing, and steps reached once and
in order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from services.training.domain.growth import (
    GrowthPath,
    GrowthPlan,
    evaluate_path,
    evaluate_step,
)
from shared.errors import FailedPrecondition

T0 = datetime(2026, 6, 5, 9, tzinfo=UTC)
GOVERNANCE = "GRASSROOTS_GOVERNANCE"
CIVIC = "CIVIC_EDUCATION"

VOLUNTEER = {"key": "volunteer", "title": "志愿者", "role": "VOLUNTEER",
             "hours_by_track": {CIVIC: "2"}, "course_ids": [], "pre_job_certified": True}
SOCIAL_WORKER = {"key": "social-worker", "title": "社区社工", "role": "COMMUNITY_SOCIAL_WORKER",
                 "hours_by_track": {GOVERNANCE: "4"}, "course_ids": ["c-mediation"],
                 "pre_job_certified": False}


def completion(course_id: str, track: str, hours: str, result: str = "PASSED",
               minutes: int = 0) -> dict:
    return {"course_id": course_id, "session_id": f"s-{course_id}-{minutes}", "track": track,
            "hours": Decimal(hours), "result": result, "score": None,
            "at": T0 + timedelta(minutes=minutes)}


def test_a_step_says_what_is_missing_in_hours_courses_and_certification():
    done = [completion("c-civic", CIVIC, "1.5"), completion("c-gov", GOVERNANCE, "3")]
    volunteer = evaluate_step(0, VOLUNTEER, done, certified_at=None)
    assert not volunteer.met
    assert volunteer.hours_missing == {CIVIC: Decimal("0.5")}
    assert volunteer.hours_required == {CIVIC: Decimal(2)}
    assert volunteer.pre_job_missing
    worker = evaluate_step(1, SOCIAL_WORKER, done, certified_at=None)
    assert worker.hours_missing == {GOVERNANCE: Decimal(1)}
    assert worker.courses_missing == ("c-mediation",)
    assert not worker.pre_job_missing


def test_failed_completions_count_nothing_and_passed_ones_are_the_evidence():
    done = [completion("c-gov", GOVERNANCE, "4", "FAILED"), completion("c-mediation", "SKILLS",
                                                                        "1", minutes=5)]
    step = evaluate_step(1, SOCIAL_WORKER, done, None)
    assert step.hours_passed == {GOVERNANCE: Decimal(0)}
    assert not step.met
    done.append(completion("c-gov", GOVERNANCE, "4", minutes=10))
    step = evaluate_step(1, SOCIAL_WORKER, done, None)
    assert step.met
    assert [c["course_id"] for c in step.evidence] == ["c-mediation", "c-gov"]


def plan_on(path: GrowthPath) -> GrowthPlan:
    return GrowthPlan(rider_id="r1", growth_path_id=str(path.id), path_version=1,
                      goals="成为社工", tracks=[GOVERNANCE], opened_by="p1")


def advance(plan: GrowthPlan, path: GrowthPath, done: list, certified: datetime | None):
    progress = evaluate_path(path.at(plan.path_version)["steps"], done, certified)
    return plan.advance(progress, certified, T0 + timedelta(days=1))


def test_steps_are_reached_in_path_order_and_each_only_once():
    path = GrowthPath(name="骑手到社工", description="", steps=[VOLUNTEER, SOCIAL_WORKER])
    plan = plan_on(path)
    social_work = [completion("c-gov", GOVERNANCE, "4"), completion("c-mediation", GOVERNANCE,
                                                                     "1")]
    # The second step's training is met, the first's is not: nothing is reached.
    assert advance(plan, path, social_work, None) == []
    done = [*social_work, completion("c-civic", CIVIC, "2")]
    assert advance(plan, path, done, T0) == ["volunteer", "social-worker"]
    assert advance(plan, path, done, T0) == []
    reached = [e for e in plan.collect_events() if type(e).__name__ == "StepReached"]
    assert [(e.step_key, e.path_version) for e in reached] == [("volunteer", 1),
                                                                ("social-worker", 1)]
    assert reached[0].pre_job_certified_at == T0
    assert reached[1].pre_job_certified_at is None
    assert {c["course_id"] for c in reached[1].evidence} == {"c-gov", "c-mediation"}


def test_a_revised_path_keeps_its_old_versions_and_plans_keep_theirs():
    path = GrowthPath(name="v1", description="", steps=[VOLUNTEER])
    path.revise(name="v2", description="", steps=[VOLUNTEER, SOCIAL_WORKER])
    assert path.path_version == 2
    assert path.at(1)["name"] == "v1"
    plan = plan_on(path)
    assert len(path.at(plan.path_version)["steps"]) == 1
    plan.revise("", [], 2)
    with pytest.raises(FailedPrecondition) as error:
        plan.revise("", [], 1)
    assert error.value.reason == "PATH_VERSION_OLDER"


def test_a_closed_plan_reaches_nothing_and_cannot_be_closed_twice():
    path = GrowthPath(name="p", description="", steps=[VOLUNTEER])
    plan = plan_on(path)
    plan.close("换了方向")
    assert advance(plan, path, [completion("c-civic", CIVIC, "2")], T0) == []
    with pytest.raises(FailedPrecondition) as error:
        plan.close("")
    assert error.value.reason == "GROWTH_PLAN_CLOSED"
