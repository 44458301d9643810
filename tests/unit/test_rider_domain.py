"""The rider's lifecycle, career and consent rules, on the aggregate alone."""

from datetime import UTC, datetime

import pytest

from services.identity.domain.model import Rider
from services.identity.domain.values import CareerMilestoneKind, ConsentScope, RiderStatus
from shared.errors import AlreadyExists, FailedPrecondition, NotFound

NOW = datetime(2026, 6, 5, 9, 0, tzinfo=UTC)


def new_rider() -> Rider:
    return Rider(platform_id="p", platform_rider_id="R1", sealed_name="pd1:x",
                 sealed_phone="pd1:y", sealed_national_id="", home_street_id="s",
                 station_id="st")


def test_a_new_rider_is_registered_and_not_yet_active():
    rider = new_rider()
    assert rider.status is RiderStatus.REGISTERED
    assert rider.verified_at is None


def test_verification_activates_a_registered_rider():
    rider = new_rider()
    rider.verify(at=NOW)
    assert rider.status is RiderStatus.ACTIVE
    assert rider.verified_at == NOW


def test_a_rider_cannot_be_verified_twice():
    rider = new_rider()
    rider.verify(at=NOW)
    with pytest.raises(FailedPrecondition) as error:
        rider.verify(at=NOW)
    assert error.value.reason == "ALREADY_VERIFIED"


def test_verifying_a_suspended_rider_keeps_them_suspended_until_reinstated():
    rider = new_rider()
    rider.suspend("complaint under review")
    rider.verify(at=NOW)
    assert rider.status is RiderStatus.SUSPENDED
    rider.reinstate("cleared")
    assert rider.status is RiderStatus.ACTIVE


def test_reinstating_an_unverified_rider_returns_them_to_registered():
    rider = new_rider()
    rider.suspend("documents missing")
    rider.reinstate("documents supplied")
    assert rider.status is RiderStatus.REGISTERED


def test_only_a_suspended_rider_can_be_reinstated():
    rider = new_rider()
    with pytest.raises(FailedPrecondition) as error:
        rider.reinstate("why")
    assert error.value.reason == "NOT_SUSPENDED"


def test_suspending_twice_is_refused():
    rider = new_rider()
    rider.suspend("one")
    with pytest.raises(FailedPrecondition) as error:
        rider.suspend("two")
    assert error.value.reason == "ALREADY_SUSPENDED"


def test_a_rider_who_left_can_no_longer_change():
    rider = new_rider()
    rider.leave("moved away")
    assert rider.status is RiderStatus.LEFT
    for act in (lambda: rider.verify(at=NOW), lambda: rider.suspend("x"),
                lambda: rider.leave("again"),
                lambda: rider.grant_consent("c1", ConsentScope.PHONE, "org", NOW)):
        with pytest.raises(FailedPrecondition) as error:
            act()
        assert error.value.reason == "RIDER_LEFT"


def test_a_rider_becomes_a_community_social_worker():
    rider = new_rider()
    rider.record_milestone(CareerMilestoneKind.COMMUNITY_SOCIAL_WORKER, "community", NOW,
                           "full-time at Beidajie")
    assert rider.milestones == [{"kind": "COMMUNITY_SOCIAL_WORKER",
                                 "organisation_id": "community", "effective_at": NOW,
                                 "note": "full-time at Beidajie"}]
    with pytest.raises(AlreadyExists):
        rider.record_milestone(CareerMilestoneKind.COMMUNITY_SOCIAL_WORKER, "community", NOW, "")


def test_consent_is_granted_once_and_can_be_withdrawn_then_granted_again():
    rider = new_rider()
    rider.grant_consent("c1", ConsentScope.PHONE, "platform", NOW)
    assert rider.consents_to(ConsentScope.PHONE, "platform")
    with pytest.raises(AlreadyExists):
        rider.grant_consent("c2", ConsentScope.PHONE, "platform", NOW)
    rider.withdraw_consent("c1", NOW)
    assert not rider.consents_to(ConsentScope.PHONE, "platform")
    with pytest.raises(FailedPrecondition):
        rider.withdraw_consent("c1", NOW)
    rider.grant_consent("c3", ConsentScope.PHONE, "platform", NOW)
    assert rider.consents_to(ConsentScope.PHONE, "platform")


def test_withdrawing_an_unknown_consent_is_not_found():
    with pytest.raises(NotFound):
        new_rider().withdraw_consent("nope", NOW)


def test_registrations_of_one_platform_rider_id_share_one_aggregate_id():
    assert Rider.create_id("p", "R1") == Rider.create_id("p", "R1")
    assert Rider.create_id("p", "R1") != Rider.create_id("q", "R1")


def test_state_replays_from_the_events_alone():
    rider = new_rider()
    rider.verify(at=NOW)
    rider.suspend("x")
    rider.grant_consent("c1", ConsentScope.NAME, "org", NOW)
    events = rider.collect_events()
    replayed = None
    for e in events:
        replayed = e.mutate(replayed)
    assert vars(replayed) == vars(rider)
