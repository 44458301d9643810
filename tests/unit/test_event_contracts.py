"""Published topics other services follow must stay equal to the classes that store them."""

from eventsourcing.utils import get_topic

from services.identity import events
from services.identity.domain.model import Organisation, Rider, ServiceSpace


def test_identity_topics_name_the_classes_that_store_those_events():
    assert events.RIDER_REGISTERED == get_topic(Rider.Registered)
    assert events.RIDER_VERIFIED == get_topic(Rider.Verified)
    assert events.RIDER_SUSPENDED == get_topic(Rider.Suspended)
    assert events.RIDER_REINSTATED == get_topic(Rider.Reinstated)
    assert events.RIDER_LEFT == get_topic(Rider.Left)
    assert events.ORGANISATION_CREATED == get_topic(Organisation.Created)
    assert events.SERVICE_SPACE_OPENED == get_topic(ServiceSpace.Opened)
    assert events.SERVICE_SPACE_FACILITIES_UPDATED == get_topic(ServiceSpace.FacilitiesUpdated)


def test_training_topics_name_the_classes_that_store_those_events():
    from services.training import events as training_events
    from services.training.domain.model import Learner

    assert training_events.LEARNER_NOTED == get_topic(Learner.Noted)
    assert training_events.COURSE_COMPLETED == get_topic(Learner.CourseCompleted)
    assert training_events.PRE_JOB_CERTIFIED == get_topic(Learner.PreJobCertified)


def test_badges_topics_name_the_classes_that_store_those_events():
    from services.badges import events as badge_events
    from services.badges.domain.model import Award

    assert badge_events.BADGE_GRANTED == get_topic(Award.Granted)
    assert badge_events.BADGE_REVOKED == get_topic(Award.Revoked)
    assert badge_events.BADGE_EXPIRED == get_topic(Award.Expired)
    assert badge_events.BADGE_GROWN == get_topic(Award.GrownInto)
    assert badge_events.AWARD_PRESENTED == get_topic(Award.Presented)


def test_badges_recognition_topics_name_the_classes_that_store_them():
    from services.badges import events as badge_events
    from services.badges.domain.recognition import Recognition

    assert badge_events.RECOGNITION_CONFERRED == get_topic(Recognition.Conferred)
    assert badge_events.RECOGNITION_REVOKED == get_topic(Recognition.Revoked)


def test_the_topics_a_riders_record_follows_name_the_classes_that_store_them():
    """identity's RiderRecords matches these strings: a class moved without register_topic
    would leave a rider's record silently short."""
    from services.badges import events as badge_events
    from services.badges.domain.model import BadgeClass, VolunteerShift
    from services.governance import events as governance_events
    from services.governance.domain.model import Participant, Report
    from services.merchants import events as merchant_events
    from services.merchants.domain.model import CareCampaign, Claim, Merchant, PerkOffer
    from services.training import events as training_events
    from services.training.domain.model import Course, TrainingSession

    expected = {
        training_events.COURSE_DRAFTED: Course.Drafted,
        training_events.SESSION_SCHEDULED: TrainingSession.Scheduled,
        training_events.RIDER_ENROLLED: TrainingSession.RiderEnrolled,
        training_events.ENROLMENT_WITHDRAWN: TrainingSession.EnrolmentWithdrawn,
        training_events.ENROLMENT_CANCELLED: TrainingSession.EnrolmentCancelled,
        training_events.RIDER_CHECKED_IN: TrainingSession.RiderCheckedIn,
        training_events.NO_SHOW_RECORDED: TrainingSession.NoShowRecorded,
        training_events.COMPLETION_RECORDED: TrainingSession.CompletionRecorded,
        merchant_events.MERCHANT_APPLIED: Merchant.Applied,
        merchant_events.PERK_CREATED: PerkOffer.Created,
        merchant_events.CLAIM_ISSUED: Claim.Issued,
        merchant_events.CLAIM_REDEEMED: Claim.Redeemed,
        merchant_events.CLAIM_REVERSED: Claim.Reversed,
        merchant_events.CLAIM_LAPSED: Claim.Lapsed,
        merchant_events.CLAIM_FROZEN: Claim.Frozen,
        merchant_events.CLAIM_UNFROZEN: Claim.Unfrozen,
        merchant_events.CAMPAIGN_LAUNCHED: CareCampaign.Launched,
        merchant_events.PACKAGE_ALLOCATED: CareCampaign.PackageAllocated,
        merchant_events.PACKAGE_HANDED_OVER: CareCampaign.PackageHandedOver,
        badge_events.SHIFT_LOGGED: VolunteerShift.Logged,
        badge_events.SHIFT_CONFIRMED: VolunteerShift.Confirmed,
        badge_events.SHIFT_REJECTED: VolunteerShift.Rejected,
        badge_events.BADGE_CLASS_CREATED: BadgeClass.Created,
        governance_events.REPORT_SUBMITTED: Report.Submitted,
        governance_events.REPORT_ROUTED: Report.Routed,
        governance_events.REPORT_ACKNOWLEDGED: Report.Acknowledged,
        governance_events.REPORT_WORK_STARTED: Report.WorkStarted,
        governance_events.ASSIGNMENT_RESOLVED: Report.AssignmentResolved,
        governance_events.ASSIGNMENT_REJECTED: Report.AssignmentRejected,
        governance_events.REPORT_CLOSED: Report.Closed,
        governance_events.REPORT_VERIFIED: Report.Verified,
        governance_events.REPORT_LINKED_AS_DUPLICATE: Report.LinkedAsDuplicate,
        governance_events.PARTICIPANT_NOTED: Participant.Noted,
        governance_events.PLEDGE_SIGNED: Participant.PledgeSigned,
    }
    assert {topic: get_topic(cls) for topic, cls in expected.items()} == {
        topic: topic for topic in expected}


def test_the_topics_the_partner_register_follows_name_the_classes_that_store_them():
    """identity's PartnerContributions matches these strings: a class moved without
    register_topic would leave a partner's contributions silently short."""
    from services.identity.partners import SOURCES
    from services.merchants import events as merchant_events
    from services.merchants.domain.model import CareCampaign, PerkOffer
    from services.training import events as training_events
    from services.training.domain.model import Course

    expected = {
        training_events.COURSE_DRAFTED: Course.Drafted,
        training_events.COURSE_PUBLISHED: Course.Published,
        training_events.COURSE_RETIRED: Course.Retired,
        merchant_events.PERK_CREATED: PerkOffer.Created,
        merchant_events.PERK_PUBLISHED: PerkOffer.Published,
        merchant_events.PERK_PAUSED: PerkOffer.Paused,
        merchant_events.PERK_WITHDRAWN: PerkOffer.Withdrawn,
        merchant_events.CAMPAIGN_LAUNCHED: CareCampaign.Launched,
        merchant_events.CARE_DONATION_RECORDED: CareCampaign.DonationRecorded,
    }
    assert {t for topics in SOURCES.values() for t in topics} == set(expected)
    for topic, cls in expected.items():
        assert topic == get_topic(cls)


def test_the_topics_friendly_marks_follow_name_the_classes_that_store_them():
    """identity's friendly marks count approved merchants and co-building signatures from
    these strings: a class moved without register_topic would leave a criterion never met."""
    from services.governance import events as governance_events
    from services.governance.domain.model import Organisation as GovernanceOrganisation
    from services.merchants import events as merchant_events
    from services.merchants.domain.model import Merchant

    expected = {
        merchant_events.MERCHANT_APPLIED: Merchant.Applied,
        merchant_events.MERCHANT_APPROVED: Merchant.Approved,
        merchant_events.MERCHANT_REJECTED: Merchant.Rejected,
        merchant_events.MERCHANT_SUSPENDED: Merchant.Suspended,
        merchant_events.MERCHANT_REINSTATED: Merchant.Reinstated,
        merchant_events.MERCHANT_BUSINESS_AREA_NAMED: Merchant.BusinessAreaNamed,
        governance_events.CO_BUILDING_PLEDGE_SIGNED:
            GovernanceOrganisation.CoBuildingPledgeSigned,
    }
    assert {topic: get_topic(cls) for topic, cls in expected.items()} == {
        topic: topic for topic in expected}
