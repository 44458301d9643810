"""merchants', badges' and governance's public mappings over their real stores: the stored
events (saved here straight from the aggregates, as their commands would) become the documented
CloudEvents, and nothing else of those services' logs does."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from qiji.feed.v1 import public_feed_service_pb2 as pb

from services.badges.application import BadgesApplication
from services.badges.domain.model import Award
from services.badges.public_events import CATALOGUE as BADGES
from services.governance.application import GovernanceApplication
from services.governance.domain.model import Report
from services.governance.public_events import CATALOGUE as GOVERNANCE
from services.merchants.application import MerchantsApplication
from services.merchants.domain.model import CareCampaign, Claim
from services.merchants.public_events import CATALOGUE as MERCHANTS
from shared.grpc.public_feed import read_public
from tests.conftest import MASTER_KEY, badges_key_env, settings_for

NOW = datetime(2026, 6, 5, 9, 0, tzinfo=UTC)
RIDER = str(uuid.uuid4())


def read(app, catalogue) -> list[tuple[str, dict]]:
    """Every public event, as Qiji's relay reads them (every platform's riders); read for no
    organisation at all, none of them is about a rider."""
    reply = read_public(app, catalogue, pb.ReadPublicEventsRequest(from_position=1,
                                                                  all_platforms=True))
    assert reply.next_position == app.last_position() + 1
    nobodys = read_public(app, catalogue, pb.ReadPublicEventsRequest(from_position=1))
    assert not [e for e in nobodys.events if '"rider_id"' in e.event.text_data]
    return [(e.event.type, json.loads(e.event.text_data)) for e in reply.events]


@pytest.fixture
def merchants(store_env):
    app = MerchantsApplication(settings_for("merchants", store_env), MASTER_KEY)
    yield app
    app.close()


def test_a_claim_redeemed_and_reversed_is_public_without_its_code(merchants):
    claim = Claim(code_digest="d" * 64, code_nonce="n", perk_id="p1", merchant_id="m1",
                  rider_id=RIDER, claimed_at=NOW, expires_at=NOW + timedelta(days=1))
    claim.redeem("m1", NOW + timedelta(minutes=5))
    claim.reverse("mistake", NOW + timedelta(minutes=10))
    merchants.save(claim)
    found = read(merchants, MERCHANTS)
    assert [t for t, _ in found] == ["qiji.merchants.v1.PerkClaimed",
                                     "qiji.merchants.v1.PerkRedeemed",
                                     "qiji.merchants.v1.RedemptionReversed"]
    assert all(d["rider_id"] == RIDER and d["perk_id"] == "p1" for _, d in found)
    assert found[2][1]["reversed_time"] == "2026-06-05T09:10:00Z"
    text = json.dumps(found)
    assert "d" * 64 not in text and "mistake" not in text


def test_a_care_package_allocated_and_handed_over_is_public_to_its_riders_platform(merchants):
    """Which campaign and street, and when: never who handed it over (a person's name), nor
    the campaign's sponsors or rules."""
    campaign = CareCampaign(street_id="street-1", name="夏日关爱礼包", description="", stock=1,
                            contents=[], rules=[], rules_version=0)
    campaign.record_donation("d1", "sponsor-1", 1, [], "office", NOW)
    campaign.allocate(RIDER, NOW + timedelta(minutes=1))
    campaign.hand_over(RIDER, "王社工", "office", NOW + timedelta(hours=2))
    merchants.save(campaign)
    found = read(merchants, MERCHANTS)
    assert [t for t, _ in found] == ["qiji.merchants.v1.CarePackageAllocated",
                                     "qiji.merchants.v1.CarePackageHandedOver"]
    assert found[0][1] == {"campaign_id": str(campaign.id), "rider_id": RIDER,
                           "street_id": "street-1", "allocated_time": "2026-06-05T09:01:00Z"}
    assert found[1][1]["handed_over_time"] == "2026-06-05T11:00:00Z"
    assert "王社工" not in json.dumps(found) and "sponsor-1" not in json.dumps(found)


@pytest.fixture
def badges(store_env):
    app = BadgesApplication(settings_for("badges", {**store_env, **badges_key_env()}),
                            MASTER_KEY)
    yield app
    app.close()


def test_an_award_granted_and_revoked_is_public_with_its_rider(badges):
    award = Award(rider_id=RIDER, badge_class_id="golden-bee", criteria_version=1,
                  kind="MANUAL", evidence=[], reason="opening", awarded_by="city",
                  awarded_at=NOW, expires_at=None)
    award.revoke("error", "city", NOW + timedelta(days=1))
    badges.save(award)
    found = read(badges, BADGES)
    assert [t for t, _ in found] == ["qiji.badges.v1.BadgeAwarded",
                                     "qiji.badges.v1.BadgeRevoked"]
    assert found[0][1]["expire_time"] is None
    assert found[1][1] == {"award_id": str(award.id), "rider_id": RIDER,
                           "badge_class_id": "golden-bee",
                           "revoked_time": "2026-06-06T09:00:00Z"}


@pytest.fixture
def governance(store_env):
    app = GovernanceApplication(settings_for("governance", store_env), MASTER_KEY)
    yield app
    app.close()


def test_a_report_submission_stays_inside_the_city(governance):
    report = Report(rider_id=RIDER, kind="ANOMALY", category="ROAD", street_id="s1",
                    latitude=31.8, longitude=119.9, text="a broken manhole at no. 5",
                    attachment_refs=[], observed_at=NOW, submitted_at=NOW)
    governance.save(report)
    assert read(governance, GOVERNANCE) == []
