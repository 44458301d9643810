"""training's published event contract for other Qiji services (badges follows it).

Completions and certifications are events of a Learner, whose id is not the rider's: follow
LEARNER_NOTED (it carries `rider_id`) to know whose learner it is. COURSE_COMPLETED carries
`course_id`, `session_id`, `track`, `hours` (decimal), `result` ("PASSED" / "FAILED"), `score`
and `at`; PRE_JOB_CERTIFIED carries `course_ids`, `programme_version` and `at`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

LEARNER_NOTED = "services.training.domain.model:Learner.Noted"
COURSE_COMPLETED = "services.training.domain.model:Learner.CourseCompleted"
PRE_JOB_CERTIFIED = "services.training.domain.model:Learner.PreJobCertified"

LEARNER_TOPICS = (LEARNER_NOTED, COURSE_COMPLETED, PRE_JOB_CERTIFIED)

# A rider's own record (identity's RiderRecords) follows a rider's sessions and the names of
# what they took. RIDER_ENROLLED, RIDER_CHECKED_IN carry `rider_id` and `at`;
# ENROLMENT_WITHDRAWN, NO_SHOW_RECORDED carry `rider_id`; ENROLMENT_CANCELLED `rider_id` and
# `reason`; COMPLETION_RECORDED `rider_id`, `result`, `score`. The session is the originator:
# SESSION_SCHEDULED carries `course_id`, `service_space_id`, `starts_at`, `ends_at` and (from
# its v2) `pair`: {"station_master": {"station_id", "name"}, "teacher": {"provider_id",
# "name"}}, each key only when named (站长+校长; {} upcast for an older session); the course
# is the originator of COURSE_DRAFTED (`track`, `title`, `hours`).
COURSE_DRAFTED = "services.training.domain.model:Course.Drafted"
# identity's partner register follows a course's life (the course is the originator; neither
# carries more): a draft is the provider's own, a published one is what it gave.
COURSE_PUBLISHED = "services.training.domain.model:Course.Published"
COURSE_RETIRED = "services.training.domain.model:Course.Retired"
SESSION_SCHEDULED = "services.training.domain.model:TrainingSession.Scheduled"
RIDER_ENROLLED = "services.training.domain.model:TrainingSession.RiderEnrolled"
ENROLMENT_WITHDRAWN = "services.training.domain.model:TrainingSession.EnrolmentWithdrawn"
ENROLMENT_CANCELLED = "services.training.domain.model:TrainingSession.EnrolmentCancelled"
RIDER_CHECKED_IN = "services.training.domain.model:TrainingSession.RiderCheckedIn"
NO_SHOW_RECORDED = "services.training.domain.model:TrainingSession.NoShowRecorded"
COMPLETION_RECORDED = "services.training.domain.model:TrainingSession.CompletionRecorded"
ENROLMENT_TOPICS = (RIDER_ENROLLED, ENROLMENT_WITHDRAWN, ENROLMENT_CANCELLED, RIDER_CHECKED_IN,
                    NO_SHOW_RECORDED, COMPLETION_RECORDED)
PASSED = "PASSED"

# A rider's growth plan reached a step of its path (services/training/domain/growth.py); the
# plan is the originator. GROWTH_STEP_REACHED carries `step_key`, `step_index`, `title`,
# `role` (a CareerMilestoneKind name, or "" for a step of training only), `path_version`,
# `evidence` (the completions that met it: `course_id`, `session_id`, `track`, `hours`,
# `completed_at`), `pre_job_certified_at` (when the step asked for it) and `at`; follow
# GROWTH_PLAN_OPENED (`rider_id`, `growth_path_id`, `path_version`) to know whose plan it is.
# identity's RecordCareerMilestone stays the official record of the role taken: a street office
# records it once the step is reached (README, "Growth plans").
GROWTH_PLAN_OPENED = "services.training.domain.growth:GrowthPlan.Opened"
GROWTH_STEP_REACHED = "services.training.domain.growth:GrowthPlan.StepReached"


def passed_hours_by_track(completions: Iterable[Mapping[str, Any]]) -> dict[str, Decimal]:
    """A transcript's hours: each passed completion's hours, by track (a failed one counts
    nothing). training's own transcript and a rider's record both count with this."""
    hours: dict[str, Decimal] = {}
    for c in completions:
        if c["result"] == PASSED:
            hours[c["track"]] = hours.get(c["track"], Decimal(0)) + Decimal(c["hours"])
    return hours
