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
