"""training's public event contract for outside consumers: a rider's completed courses and
pre-job certification (岗前培训). Both are events of a Learner, whose id is not the rider's; the
Learner aggregate names its rider."""

from __future__ import annotations

from typing import Any

from services.training import events as topics
from shared.public_feed import Fact, Mapped, PublicCatalogue, PublicType


def _rider_id(app: Any, fact: Fact) -> str:
    return app.current(fact.originator_id).rider_id


def _completed(app: Any, fact: Fact) -> Mapped:
    e = fact.event
    rider_id = _rider_id(app, fact)
    return Mapped(rider_id, {"rider_id": rider_id, "course_id": e.course_id,
                             "session_id": e.session_id, "track": e.track, "hours": e.hours,
                             "result": e.result, "score": e.score, "completed_time": e.at})


def _certified(app: Any, fact: Fact) -> Mapped:
    e = fact.event
    rider_id = _rider_id(app, fact)
    return Mapped(rider_id, {"rider_id": rider_id, "course_ids": list(e.course_ids),
                             "programme_version": e.programme_version,
                             "certified_time": e.at})


def _step_reached(app: Any, fact: Fact) -> Mapped:
    e = fact.event
    plan = app.current(fact.originator_id)
    return Mapped(plan.rider_id, {
        "rider_id": plan.rider_id, "growth_plan_id": str(fact.originator_id),
        "growth_path_id": plan.growth_path_id, "path_version": e.path_version,
        "step_key": e.step_key, "step_index": e.step_index, "title": e.title,
        "role": e.role,
        # Which completions met the step, by the sessions of the CourseCompleted events the
        # platform already received for its rider: references only. The stored event keeps
        # the whole evidence (courses, tracks, hours, times) for "why this step", years later.
        "completed_session_ids": [c["session_id"] for c in e.evidence],
        "pre_job_certified_time": e.pre_job_certified_at, "reached_time": e.at})


CATALOGUE = PublicCatalogue("training", [
    PublicType("qiji.training.v1.CourseCompleted", topics.COURSE_COMPLETED,
               ("rider_id", "course_id", "session_id", "track", "hours", "result", "score",
                "completed_time"), _completed),
    PublicType("qiji.training.v1.PreJobCertified", topics.PRE_JOB_CERTIFIED,
               ("rider_id", "course_ids", "programme_version", "certified_time"), _certified),
    PublicType("qiji.training.v1.GrowthStepReached", topics.GROWTH_STEP_REACHED,
               ("rider_id", "growth_plan_id", "growth_path_id", "path_version", "step_key",
                "step_index", "title", "role", "completed_session_ids", "pre_job_certified_time",
                "reached_time"), _step_reached),
])
