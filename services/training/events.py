"""training's published event contract for other Qiji services (badges follows it).

Completions and certifications are events of a Learner, whose id is not the rider's: follow
LEARNER_NOTED (it carries `rider_id`) to know whose learner it is. COURSE_COMPLETED carries
`course_id`, `session_id`, `track`, `hours` (decimal), `result` ("PASSED" / "FAILED"), `score`
and `at`; PRE_JOB_CERTIFIED carries `course_ids`, `programme_version` and `at`."""

LEARNER_NOTED = "services.training.domain.model:Learner.Noted"
COURSE_COMPLETED = "services.training.domain.model:Learner.CourseCompleted"
PRE_JOB_CERTIFIED = "services.training.domain.model:Learner.PreJobCertified"

LEARNER_TOPICS = (LEARNER_NOTED, COURSE_COMPLETED, PRE_JOB_CERTIFIED)
