"""Care packages (关爱礼包) over the wire, in-process behind the guard, on both stores: the city's
eligibility set, a sponsor's gift, the rider's platform listing what its rider qualifies for,
and a perk naming a badge class badges never created (issue 22)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from qiji.badges.v1 import badges_service_pb2 as bpb
from qiji.identity.v1 import identity_service_pb2 as ipb
from qiji.merchants.v1 import merchants_service_pb2 as mpb

from tests.city import build_city, in_process
from tests.conftest import badges_key_env
from tests.inprocess import InProcessQiji


@pytest.fixture
def qiji(store_env: dict[str, str], tmp_path: Path) -> Iterator[InProcessQiji]:
    q = InProcessQiji({**store_env, **badges_key_env()}, tmp_path / "tokens.json")
    yield q
    q.close()


def rid() -> str:
    return str(uuid.uuid4())


def test_a_sponsored_campaign_over_the_wire(qiji: InProcessQiji) -> None:
    admin = qiji.token("care-admin", "city_admin")
    made = build_city(in_process(qiji, admin), also=("merchant",))
    street, platform_id, station = made.street, made.platform, made.station
    shop = made.merchant
    far_street = made.add("far_street", "STREET", "西林街道", "district")
    other_platform_id = made.add("other_platform", "PLATFORM", "别家外卖")
    office = qiji.token("care-office", "street_office", organisation_id=street)
    platform = qiji.token("care-platform", "platform", organisation_id=platform_id)
    other_platform = qiji.token("care-other", "platform", organisation_id=other_platform_id)

    def rider(home: str) -> str:
        found = qiji.ok("identity", "RegisterRider", ipb.RegisterRiderRequest(
            request_id=rid(), platform_id=platform_id, platform_rider_id=rid()[:8], name="骑手",
            phone="13812345678", home_street_id=home, station_id=station), platform).rider
        qiji.ok("identity", "VerifyRider", ipb.VerifyRiderRequest(
            request_id=rid(), rider_id=found.rider_id), platform)
        return found.rider_id

    # The city's set: an unknown kind and the reserved HARDSHIP, refused in one answer.
    refused = qiji.call("merchants", "SetCareEligibilityRules", mpb.SetCareEligibilityRulesRequest(
        rules=[mpb.CareEligibilityRule(name="x", kind=99),
               mpb.CareEligibilityRule(name="困难骑手", kind=mpb.CARE_RULE_KIND_HARDSHIP)]), admin)
    assert refused.code is grpc.StatusCode.INVALID_ARGUMENT
    assert refused.fields == ["rules[0].kind", "rules[1].kind"]
    set_ = qiji.ok("merchants", "SetCareEligibilityRules", mpb.SetCareEligibilityRulesRequest(
        rules=[mpb.CareEligibilityRule(name="本街道骑手", kind=mpb.CARE_RULE_KIND_HOME_STREET)]),
        admin).rules
    assert set_.version == 1
    read = qiji.ok("merchants", "GetCareEligibilityRules", mpb.GetCareEligibilityRulesRequest(),
                   platform).rules
    assert [(r.name, r.kind) for r in read.rules] == [
        ("本街道骑手", mpb.CARE_RULE_KIND_HOME_STREET)]

    campaign = qiji.ok("merchants", "CreateCareCampaign", mpb.CreateCareCampaignRequest(
        request_id=rid(), street_id=street, name="荷睦关爱礼包",
        contents=[mpb.CareItem(item="矿泉水", quantity=6)],
        eligibility_rules=["本街道骑手"]), office).campaign
    gift = mpb.RecordCareDonationRequest(request_id=rid(), campaign_id=campaign.campaign_id,
                                         sponsor_id=shop, packages=2)
    qiji.ok("merchants", "RecordCareDonation", gift, office)
    # A retry of the same gift counts once.
    again = qiji.ok("merchants", "RecordCareDonation", gift, office).campaign
    assert (again.stock, again.remaining, len(again.donations)) == (2, 2, 1)
    assert again.donations[0].sponsor_id == shop and again.eligibility_rules_version == 1
    # The sponsor gains nothing on the campaign by giving.
    sponsor = qiji.token("care-shop", "merchant", organisation_id=shop)
    assert qiji.call("merchants", "RecordCareDonation", mpb.RecordCareDonationRequest(
        request_id=rid(), campaign_id=campaign.campaign_id, sponsor_id=shop, packages=1),
        sponsor).code is grpc.StatusCode.PERMISSION_DENIED

    local, far = rider(street), rider(far_street)

    def listed(rider_id: str, token: str = platform) -> list[str]:
        return [c.campaign_id for c in qiji.ok(
            "merchants", "ListCareCampaignsForRider",
            mpb.ListCareCampaignsForRiderRequest(rider_id=rider_id), token).campaigns]
    assert listed(local) == [campaign.campaign_id] and listed(far) == []
    assert qiji.call("merchants", "ListCareCampaignsForRider",
                     mpb.ListCareCampaignsForRiderRequest(rider_id=local),
                     other_platform).code is grpc.StatusCode.PERMISSION_DENIED
    no = qiji.call("merchants", "AllocateCarePackage", mpb.AllocateCarePackageRequest(
        campaign_id=campaign.campaign_id, rider_id=far), office)
    assert (no.code, no.reason, no.metadata.get("rule")) == (
        grpc.StatusCode.FAILED_PRECONDITION, "RIDER_NOT_OF_STREET", "本街道骑手")
    qiji.ok("merchants", "AllocateCarePackage", mpb.AllocateCarePackageRequest(
        campaign_id=campaign.campaign_id, rider_id=local), office)
    assert listed(local) == []


def test_a_perk_for_a_badge_class_badges_never_created_is_not_found(qiji: InProcessQiji) -> None:
    admin = qiji.token("perk-admin", "city_admin")
    made = build_city(in_process(qiji, admin), ("merchant",))
    city, street, shop = made.city, made.street, made.merchant
    qiji.ok("merchants", "ApplyMerchant", mpb.ApplyMerchantRequest(
        request_id=rid(), merchant_id=shop, name="荷花池面馆", street_id=street,
        category="restaurant", location=mpb.Location(latitude=31.78, longitude=119.95)), admin)
    qiji.ok("merchants", "ApproveMerchant", mpb.ApproveMerchantRequest(merchant_id=shop), admin)
    now = datetime.now(UTC)

    def perk(badge_class_id: str) -> Any:
        request = mpb.CreatePerkOfferRequest(
            request_id=rid(), merchant_id=shop, title="金蜂骑士专享", kind=mpb.PERK_KIND_FREE_ITEM,
            free_item="一瓶水", eligibility=mpb.ELIGIBILITY_BADGE_HOLDERS,
            badge_class_id=badge_class_id, total_quota=10, per_rider_limit=1,
            limit_period=mpb.LIMIT_PERIOD_DAY, code_ttl_minutes=30)
        request.valid_from_time.FromDatetime(now - timedelta(hours=1))
        request.valid_until_time.FromDatetime(now + timedelta(days=30))
        return qiji.call("merchants", "CreatePerkOffer", request, admin)
    before = qiji.positions()["merchants"]
    never = perk(rid())
    assert (never.code, never.reason) == (grpc.StatusCode.NOT_FOUND, "BADGE_CLASS_NOT_FOUND")
    assert qiji.positions()["merchants"] == before
    golden = qiji.ok("badges", "CreateBadgeClass", bpb.CreateBadgeClassRequest(
        request_id=rid(), name="金蜂骑士", description="金蜂骑士", issuer_id=city,
        image_url="https://qiji.example.org/badges/golden.png",
        criteria=bpb.Criteria(min_volunteer_hours="100", narrative="百小时志愿服务")),
        admin).badge_class.badge_class_id
    # Created a moment ago: merchants catches up with badges' feed before it says no.
    assert perk(golden).ok
