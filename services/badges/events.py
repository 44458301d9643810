"""badges' published event contract, fixed before the service is built so that followers
(merchants: badge-only perks) can be written and tested against it.

An award's Granted event carries `rider_id` and `badge_class_id`; Revoked and Expired carry
neither: they name the award by its id (the event's originator)."""

BADGE_GRANTED = "services.badges.domain.model:Award.Granted"
BADGE_REVOKED = "services.badges.domain.model:Award.Revoked"
BADGE_EXPIRED = "services.badges.domain.model:Award.Expired"

AWARD_TOPICS = (BADGE_GRANTED, BADGE_REVOKED, BADGE_EXPIRED)
# The ladder and the ceremony (the award is the originator). GrownInto carries `award_id` (the
# higher award it grew into) and `at`; the grown award stays valid, so AWARD_TOPICS' followers
# (merchants' badge-only perks) keep counting it. Presented carries `ceremony_id` and `at`.
BADGE_GROWN = "services.badges.domain.model:Award.GrownInto"
AWARD_PRESENTED = "services.badges.domain.model:Award.Presented"

# A rider's own record (identity's RiderRecords) also follows volunteer service and the names
# of badge classes. SHIFT_LOGGED carries `rider_id`, `community_id`, `activity`, `started_at`,
# `hours` (decimal); SHIFT_CONFIRMED nothing; SHIFT_REJECTED `reason` (the shift is the
# originator). BADGE_CLASS_CREATED carries `name`; an award's Granted also `kind`,
# `awarded_at` and `expires_at`, Revoked `at`.
SHIFT_LOGGED = "services.badges.domain.model:VolunteerShift.Logged"
SHIFT_CONFIRMED = "services.badges.domain.model:VolunteerShift.Confirmed"
SHIFT_REJECTED = "services.badges.domain.model:VolunteerShift.Rejected"
SHIFT_TOPICS = (SHIFT_LOGGED, SHIFT_CONFIRMED, SHIFT_REJECTED)
BADGE_CLASS_CREATED = "services.badges.domain.model:BadgeClass.Created"
# Titles conferred on riders (城市治理合伙人); the recognition is the originator. Conferred carries
# `rider_id`, `title_id`, `conferred_at` and `ends_at`; Revoked `at` (and a reason that stays
# inside Qiji).
RECOGNITION_CONFERRED = "services.badges.domain.recognition:Recognition.Conferred"
RECOGNITION_REVOKED = "services.badges.domain.recognition:Recognition.Revoked"

# Volunteer activities (爱心公益活动): a community's, riders sign up through their platform.
# Published carries the activity's plan (`community_id`, `street_id`, `title`, `kind`,
# `starts_at`, `ends_at`, `service_space_id`, `address`, `places`, `sign_up_deadline`); Revised
# the plan again; Cancelled `reason` and `at`, followed by one SignUpCancelled (`rider_id`) per
# rider who held a place; SignedUp and SignUpWithdrawn `rider_id` and `at`;
# AttendanceRecorded `rider_id`, `hours`, `shift_id` and `at` (the shift's Logged and
# Confirmed follow in the same save).
ACTIVITY_PUBLISHED = "services.badges.domain.activities:VolunteerActivity.Published"
ACTIVITY_REVISED = "services.badges.domain.activities:VolunteerActivity.Revised"
ACTIVITY_CANCELLED = "services.badges.domain.activities:VolunteerActivity.Cancelled"
SIGN_UP_ACCEPTED = "services.badges.domain.activities:VolunteerActivity.SignedUp"
SIGN_UP_WITHDRAWN = "services.badges.domain.activities:VolunteerActivity.SignUpWithdrawn"
SIGN_UP_CANCELLED = "services.badges.domain.activities:VolunteerActivity.SignUpCancelled"
ATTENDANCE_RECORDED = "services.badges.domain.activities:VolunteerActivity.AttendanceRecorded"
