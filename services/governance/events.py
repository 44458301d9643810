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
# An organisation signed the co-building pledge (共建倡议): its state carries
# `organisation_id`, `kind`, `name`, `parent_id` (identity's), `version` and `at`. identity's
# friendly marks count it as a criterion's evidence.
CO_BUILDING_PLEDGE_SIGNED = "services.governance.domain.model:Organisation.CoBuildingPledgeSigned"
MEDIATION_AGREED = "services.governance.domain.model:MediationCase.Agreed"
# The rider's unsatisfied rating reopened a closed report for its street office. Its state
# carries `rider_id`, `street_id`, `was_verified` (badges stop counting a report it had
# verified: REPORT_VERIFIED comes again if the office upholds the outcome) and `at`.
REPORT_REOPENED = "services.governance.domain.model:Report.Reopened"
# The rider rated a closed report's outcome: `rider_id`, `street_id`, `rating` (SATISFIED,
# BASICALLY_SATISFIED, UNSATISFIED), `closed_at` (the closing rated), `department_ids` (whose
# answers it rates), `reopens` and `at`. Transfers between departments: REPORT_TRANSFERRED
# (`department_id`, `to_department_id`, `at`), and the street office's own assignments
# REPORT_ASSIGNED (`department_id`, `at`): the receiving assignment's clocks start at `at`.
REPORT_RATED = "services.governance.domain.model:Report.Rated"
REPORT_TRANSFERRED = "services.governance.domain.model:Report.AssignmentTransferred"
REPORT_ASSIGNED = "services.governance.domain.model:Report.Assigned"
REPORT_OUTCOME_UPHELD = "services.governance.domain.model:Report.OutcomeUpheld"

# A rider's own record (identity's RiderRecords) follows the life of the reports a rider
# submitted (never their text, which stays governance's casework) and the pledges they signed.
# The report is the originator of each: REPORT_SUBMITTED carries `rider_id`, `kind`,
# `category`, `street_id`, `observed_at`, `submitted_at`; REPORT_ROUTED `assignments` (each
# with `department_id`) and `at`; the department's steps carry `department_id` and `at`;
# REPORT_CLOSED `outcome` ("RESOLVED" / "REJECTED") and `at`; REPORT_LINKED_AS_DUPLICATE
# `original_id`. PARTICIPANT_NOTED carries `rider_id`; PLEDGE_SIGNED `rider_id`, `version`,
# `at`.
REPORT_ACKNOWLEDGED = "services.governance.domain.model:Report.Acknowledged"
REPORT_WORK_STARTED = "services.governance.domain.model:Report.WorkStarted"
ASSIGNMENT_RESOLVED = "services.governance.domain.model:Report.AssignmentResolved"
ASSIGNMENT_REJECTED = "services.governance.domain.model:Report.AssignmentRejected"
PARTICIPANT_NOTED = "services.governance.domain.model:Participant.Noted"
# A transfer, an assignment by the street office and a reopening change who works the report
# and its status: REPORT_TRANSFERRED and REPORT_ASSIGNED, REPORT_REOPENED (described above).
REPORT_TOPICS = (REPORT_SUBMITTED, REPORT_ROUTED, REPORT_ACKNOWLEDGED, REPORT_WORK_STARTED,
                 ASSIGNMENT_RESOLVED, ASSIGNMENT_REJECTED, REPORT_CLOSED, REPORT_VERIFIED,
                 REPORT_LINKED_AS_DUPLICATE, REPORT_TRANSFERRED, REPORT_ASSIGNED,
                 REPORT_REOPENED)
# A department gave its outcome on a rider's help request (帮扶): its state carries `rider_id`,
# `kind`, `department_id`, `sealed_outcome` (sealed under the rider's key in governance's own
# key store: only governance opens it) and `at`.
HELP_OUTCOME_GIVEN = "services.governance.domain.help:HelpRequest.OutcomeGiven"

# The city's figures (services/statistics) count help requests and mediation cases, nothing
# said in them: HELP_REQUESTED carries `rider_id`, `kind`, `home_street_id`, `asked_through`
# (where the rider asked: the platform's app or the street office's counter) and
# `requested_at`; HELP_CLOSED `at` (every department gave its outcome). MEDIATION_OPENED
# carries `street_id` and `opened_at`; MEDIATION_AGREED (above), MEDIATION_FAILED and
# MEDIATION_REOPENED `at` (the case is the originator of each).
HELP_REQUESTED = "services.governance.domain.help:HelpRequest.Requested"
HELP_CLOSED = "services.governance.domain.help:HelpRequest.Closed"
MEDIATION_OPENED = "services.governance.domain.model:MediationCase.Opened"
MEDIATION_FAILED = "services.governance.domain.model:MediationCase.Failed"
MEDIATION_REOPENED = "services.governance.domain.model:MediationCase.Reopened"
