"""governance's published event contract for other Qiji services: the topics they may follow.

Other services match these strings, never governance's classes; a test keeps them equal to the
classes' topics, so moving a class without `register_topic` fails the build.

REPORT_VERIFIED is the one badges count: a resolved report the street office confirmed. Its
state carries `rider_id`, `street_id`, `kind`, `category` and `at`, so a follower needs nothing
else."""

REPORT_SUBMITTED = "services.governance.domain.model:Report.Submitted"
REPORT_ROUTED = "services.governance.domain.model:Report.Routed"
REPORT_LINKED_AS_DUPLICATE = "services.governance.domain.model:Report.LinkedAsDuplicate"
REPORT_CLOSED = "services.governance.domain.model:Report.Closed"
REPORT_VERIFIED = "services.governance.domain.model:Report.Verified"
REPORT_ESCALATED = "services.governance.domain.model:Report.Escalated"
PLEDGE_SIGNED = "services.governance.domain.model:Participant.PledgeSigned"
MEDIATION_AGREED = "services.governance.domain.model:MediationCase.Agreed"
