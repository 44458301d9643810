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

from services.merchants import application as merchants_application
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


def test_a_campaign_of_many_packages_answers_in_pages(qiji: InProcessQiji,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A campaign's stock may be 100,000. Its message lists the first 50 packages the caller
    may see and a token for the rest, so that the office's till answers in a message of the same
    size at the 60,000th package as at the first (a whole list was 7.5 MB at 100,000, past what a
    gRPC client takes, and cost half a second to render on every allocation)."""
    admin = qiji.token("care-admin", "city_admin")
    made = build_city(in_process(qiji, admin))
    street, station = made.street, made.station
    other_id = made.add("other_platform", "PLATFORM", "别家外卖")
    other_station = made.add("other_station", "STATION", "西林站", "other_platform")
    office = qiji.token("pages-office", "street_office", organisation_id=street)
    mine = qiji.token("pages-platform", "platform", organisation_id=made.platform)
    theirs = qiji.token("pages-other", "platform", organisation_id=other_id)
    far_office = qiji.token("pages-far", "street_office", organisation_id=made.add(
        "far_street", "STREET", "西林街道", "district"))

    def rider(platform_id: str, at: str, token: str) -> str:
        return qiji.ok("identity", "RegisterRider", ipb.RegisterRiderRequest(
            request_id=rid(), platform_id=platform_id, platform_rider_id=rid()[:8],
            name="骑手", phone="13812345678", home_street_id=street, station_id=at),
            token).rider.rider_id
    # Every tenth rider is the other platform's, spread through the allocation order.
    riders = [rider(other_id, other_station, theirs) if i % 10 == 9
              else rider(made.platform, station, mine)
              for i in range(120)]
    other_riders = riders[9::10]
    campaign_id = qiji.ok("merchants", "CreateCareCampaign", mpb.CreateCareCampaignRequest(
        request_id=rid(), street_id=street, name="冬日关爱礼包", stock=200), office
        ).campaign.campaign_id
    early: tuple[Any, Any] = (None, None)
    for i, rider_id in enumerate(riders):
        allocate = mpb.AllocateCarePackageRequest(request_id=rid(), campaign_id=campaign_id,
                                                  rider_id=rider_id)
        answer = qiji.ok("merchants", "AllocateCarePackage", allocate, office)
        if i == 3:
            early = (allocate, answer)
        # The package this call allocated, whatever page it falls on.
        assert answer.allocation.rider_id == rider_id
        assert answer.allocation.HasField("allocate_time")
        assert not answer.allocation.HasField("hand_over_time")
        assert answer.campaign.allocated == i + 1
        assert len(answer.campaign.allocations) == min(i + 1, 50)
        assert bool(answer.campaign.allocations_next_page_token) == (i + 1 > 50)
    # A retry of an early allocation answers as its first call did, its package included.
    retried = qiji.ok("merchants", "AllocateCarePackage", early[0], office)
    assert retried == early[1] and retried.allocation.rider_id == riders[3]
    handed = qiji.ok("merchants", "RecordHandOver", mpb.RecordHandOverRequest(
        request_id=rid(), campaign_id=campaign_id, rider_id=riders[77],
        handed_over_by="王社工"), office)
    assert (handed.allocation.rider_id, handed.allocation.handed_over_by) == (riders[77],
                                                                              "王社工")
    assert handed.allocation.HasField("hand_over_time")
    assert handed.campaign.handed_over == 1

    def all_pages(token: str, first: Any, page_size: int = 0) -> tuple[list[str], int]:
        seen, pages = [a.rider_id for a in first.allocations], 1
        next_token = first.allocations_next_page_token
        while next_token:
            page = qiji.ok("merchants", "ListCarePackageAllocations",
                           mpb.ListCarePackageAllocationsRequest(
                               campaign_id=campaign_id, page_size=page_size,
                               page_token=next_token), token)
            seen += [a.rider_id for a in page.allocations]
            next_token, pages = page.next_page_token, pages + 1
        return seen, pages

    def campaign(token: str) -> Any:
        return qiji.ok("merchants", "GetCareCampaign", mpb.GetCareCampaignRequest(
            campaign_id=campaign_id), token).campaign
    # The office: every package, in the order it went out, 50 at a time.
    office_view = campaign(office)
    assert office_view.allocated == 120 and len(office_view.allocations) == 50
    assert all_pages(office, office_view) == (riders, 3)
    # The whole list from the first page too, 7 at a time; the hand-over shows on its page.
    from_start = qiji.ok("merchants", "ListCarePackageAllocations",
                         mpb.ListCarePackageAllocationsRequest(campaign_id=campaign_id,
                                                               page_size=7), office)
    assert len(from_start.allocations) == 7
    seen, pages = all_pages(office, mpb.CareCampaign(
        allocations=from_start.allocations,
        allocations_next_page_token=from_start.next_page_token), page_size=7)
    assert (seen, pages) == (riders, 18)
    # Each platform, its own riders only, however the pages fall; the counts stay the city's.
    theirs_view = campaign(theirs)
    assert theirs_view.allocated == 120
    assert all_pages(theirs, theirs_view) == (other_riders, 1)
    # Another street's office reads the campaign's counts, and none of its riders.
    far_view = campaign(far_office)
    assert (far_view.allocated, list(far_view.allocations),
            far_view.allocations_next_page_token) == (120, [], "")
    assert all_pages_of(qiji, far_office, campaign_id) == []
    # A page looks at so many packages at most (2,000, and 500 for the campaign's own
    # message; 25 here): a platform with one rider in ten pages on through fewer rows than it
    # asked for, and misses none.
    monkeypatch.setattr(merchants_application, "ALLOCATIONS_SHOWN_LOOKED_AT", 25)
    bounded = campaign(theirs)
    assert [a.rider_id for a in bounded.allocations] == other_riders[:2]  # of the first 25
    monkeypatch.setattr(merchants_application, "ALLOCATIONS_LOOKED_AT", 25)
    assert all_pages(theirs, bounded) == (other_riders, 5)
    first = qiji.ok("merchants", "ListCarePackageAllocations",
                    mpb.ListCarePackageAllocationsRequest(campaign_id=campaign_id, page_size=5),
                    theirs)
    assert [a.rider_id for a in first.allocations] == other_riders[:2]
    assert all_pages(theirs, mpb.CareCampaign(
        allocations_next_page_token=first.next_page_token), page_size=5)[0] == other_riders[2:]
    mine_view = campaign(mine)
    assert all_pages(mine, mine_view)[0] == [r for r in riders if r not in other_riders]
    # Who handed a package over: clear to the office, masked to a platform.
    assert [a.handed_over_by for a in all_pages_of(qiji, mine, campaign_id)
            if a.rider_id == riders[77]] == ["王**"]

    # Bad pages: refused precisely, and nothing is written.
    another = qiji.ok("merchants", "CreateCareCampaign", mpb.CreateCareCampaignRequest(
        request_id=rid(), street_id=street, name="另一个礼包", stock=1), office
        ).campaign.campaign_id
    before = qiji.positions()
    for request, code, reason, token in (
            (mpb.ListCarePackageAllocationsRequest(
                campaign_id=another, page_token=office_view.allocations_next_page_token),
             grpc.StatusCode.INVALID_ARGUMENT, "PAGE_TOKEN_FILTERS_CHANGED", office),
            (mpb.ListCarePackageAllocationsRequest(campaign_id=campaign_id, page_token="nope"),
             grpc.StatusCode.INVALID_ARGUMENT, "PAGE_TOKEN_INVALID", office),
            (mpb.ListCarePackageAllocationsRequest(campaign_id=campaign_id, page_size=-1),
             grpc.StatusCode.INVALID_ARGUMENT, "PAGE_SIZE_NEGATIVE", office),
            (mpb.ListCarePackageAllocationsRequest(campaign_id="not-an-id"),
             grpc.StatusCode.INVALID_ARGUMENT, None, admin),
            (mpb.ListCarePackageAllocationsRequest(campaign_id=rid()),
             grpc.StatusCode.NOT_FOUND, "CAMPAIGN_NOT_FOUND", admin),
            # A campaign there is none of is no one's: to a tenant, as another's.
            (mpb.ListCarePackageAllocationsRequest(campaign_id=rid()),
             grpc.StatusCode.PERMISSION_DENIED, "OUT_OF_SCOPE", office)):
        refused = qiji.call("merchants", "ListCarePackageAllocations", request, token)
        assert refused.code is code, (request, refused)
        assert reason is None or reason == refused.reason, (request, refused)
    assert qiji.positions() == before


def all_pages_of(qiji: InProcessQiji, token: str, campaign_id: str) -> list[Any]:
    """Every package the caller may see, through ListCarePackageAllocations alone."""
    found: list[Any] = []
    page_token = ""
    while True:
        page = qiji.ok("merchants", "ListCarePackageAllocations",
                       mpb.ListCarePackageAllocationsRequest(
                           campaign_id=campaign_id, page_size=500, page_token=page_token),
                       token)
        found += page.allocations
        page_token = page.next_page_token
        if not page_token:
            return found
