"""badges' published event contract, fixed before the service is built so that followers
(merchants: badge-only perks) can be written and tested against it.

An award's Granted event carries `rider_id` and `badge_class_id`; Revoked and Expired carry
neither: they name the award by its id (the event's originator)."""

BADGE_GRANTED = "services.badges.domain.model:Award.Granted"
BADGE_REVOKED = "services.badges.domain.model:Award.Revoked"
BADGE_EXPIRED = "services.badges.domain.model:Award.Expired"

AWARD_TOPICS = (BADGE_GRANTED, BADGE_REVOKED, BADGE_EXPIRED)
