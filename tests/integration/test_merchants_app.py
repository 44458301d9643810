"""merchants over a real store, following identity in-process and a test badges upstream."""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from eventsourcing.utils import get_topic

from services.badges import events as badge_events
from services.identity.application import IdentityApplication
from services.identity.domain.values import OrganisationKind
from services.merchants.application import CareItem, CareRuleInput, MerchantsApplication
from services.merchants.badge_classes import BadgeClassDirectory
from services.merchants.domain.model import CareCampaign
from services.merchants.domain.values import (
    CareRuleKind,
    ClaimStatus,
    Eligibility,
    LimitPeriod,
    MerchantAmenity,
    PerkKind,
)
from services.merchants.service import LapseJob
from shared import audit
from shared.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from shared.followers import Follower, LocalFeed, UpstreamEvent
from tests.city import build_city, in_application
from tests.conftest import (
    MASTER_KEY,
    actor,
    as_actor,
    settings_for,
    store_as_released,
    stored_state,
)
from tests.fakes import FailedCall

ADMIN = actor("city", "city_admin")
PLATFORM = actor("platform-co", "platform")
OFFICE = actor("hehuachi-office", "street_office")


class Clock:
    """merchants' clock, moved by the test; starts at the real now, as identity's events do."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now


class ListFeed:
    """A test upstream holding events under the badges contract's topics (badges is not built
    yet): the follower reads it exactly as it would read the real feed."""

    name = "badges"
    failure = None  # a list is never out of order

    def __init__(self) -> None:
        self.events: list[UpstreamEvent] = []

    def award(self, rider_id: str, badge_class_id: str) -> str:
        award_id = uuid.uuid4()
        self._add(badge_events.BADGE_GRANTED, award_id,
                  {"rider_id": rider_id, "badge_class_id": badge_class_id})
        return str(award_id)

    def badge_class(self, name: str = "金蜂骑士") -> str:
        """A class badges created: what a perk for badge holders must name."""
        badge_class_id = uuid.uuid4()
        self._add(badge_events.BADGE_CLASS_CREATED, badge_class_id, {"name": name})
        return str(badge_class_id)

    def revoke(self, award_id: str) -> None:
        self._add(badge_events.BADGE_REVOKED, uuid.UUID(award_id), {"reason": "test"})

    def _add(self, topic: str, award_id: uuid.UUID, state: dict) -> None:
        state = {**state, "timestamp": datetime.now(UTC)}
        self.events.append(UpstreamEvent("badges", len(self.events) + 1, award_id, 1, topic,
                                         stored_state(award_id, 1, topic, state)))

    def read(self, from_position, limit, topics, *, redial=False):
        return [e for e in self.events[from_position - 1:][:limit]
                if not topics or e.topic in topics]

    def wait(self, timeout):
        pass

    @property
    def last_position(self):
        return len(self.events)


@pytest.fixture
def world(store_env):
    clock = Clock()
    identity = IdentityApplication(settings_for("identity", store_env), MASTER_KEY)
    merchants = MerchantsApplication(settings_for("merchants", store_env), MASTER_KEY,
                                     clock=clock)
    follower = Follower(merchants, LocalFeed(identity), merchants.follow_identity,
                        topics=MerchantsApplication.IDENTITY_TOPICS)
    merchants.identity_follower = follower
    badges = ListFeed()
    badge_follower = Follower(merchants, badges, merchants.follow_badges,
                              topics=MerchantsApplication.BADGES_TOPICS)
    merchants.badge_classes = BadgeClassDirectory(badges)
    city = build_city(in_application(identity), also=("merchant",))
    district, street, platform, station = city.district, city.street, city.platform, city.station
    shop = city.merchant
    other_shop = city.add("other_shop", "MERCHANT", "北大街便利店", "street")
    w = dict(identity=identity, merchants=merchants, follower=follower, badges=badges,
             badge_follower=badge_follower, clock=clock, street=street, platform=platform,
             station=station, shop=shop, other_shop=other_shop, district=district, riders=0)
    for merchant_id in (shop, other_shop):
        with as_actor(actor("m", "merchant", organisation_id=merchant_id)):
            merchants.apply_merchant(merchant_id=merchant_id, name="店", street_id=street,
                                     category="restaurant", latitude=31.78, longitude=119.95,
                                     address="北大街", amenities=[MerchantAmenity.DRINKING_WATER])
        with as_actor(OFFICE):
            merchants.approve_merchant(merchant_id=merchant_id)
    yield w
    merchants.close()
    identity.close()


def shop_actor(w, key="shop"):
    return actor(f"merchant-{key}", "merchant", organisation_id=w[key])


def new_rider(w, *, verify=True) -> str:
    w["riders"] += 1
    with as_actor(PLATFORM):
        rider_id = w["identity"].register_rider(
            platform_id=w["platform"], platform_rider_id=f"R{w['riders']}", name="骑手",
            phone="13812345678", national_id="", home_street_id=w["street"],
            station_id=w["station"])["rider_id"]
        if verify:
            w["identity"].verify_rider(rider_id=rider_id)
    w["follower"].run_once()
    return rider_id


def perk(w, *, quota=10, limit=1, period=LimitPeriod.DAY, ttl=30, badge="", key="shop") -> str:
    now = w["clock"]()
    with as_actor(shop_actor(w, key)):
        perk_id = w["merchants"].create_perk_offer(
            merchant_id=w[key], title="骑手免费饮水", kind=PerkKind.FREE_ITEM, percent_off=0,
            amount_off_fen=0, free_item="一瓶水",
            eligibility=Eligibility.BADGE_HOLDERS if badge else Eligibility.ANY_VERIFIED_RIDER,
            badge_class_id=badge, total_quota=quota, per_rider_limit=limit, limit_period=period,
            valid_from=now - timedelta(hours=1), valid_until=now + timedelta(days=30),
            code_ttl_minutes=ttl)["perk_id"]
        w["merchants"].publish_perk_offer(perk_id=perk_id)
    return perk_id


def claim(w, perk_id, rider_id):
    with as_actor(PLATFORM):
        result = w["merchants"].claim_perk(perk_id=perk_id, rider_id=rider_id)
        return w["merchants"].claim(result["claim_id"])


def redeem(w, code, key="shop"):
    with as_actor(shop_actor(w, key)):
        return w["merchants"].redeem_code(merchant_id=w[key], code=code)


def test_a_rider_claims_a_code_and_the_merchant_redeems_it_once(world):
    p = perk(world, quota=5)
    c = claim(world, p, new_rider(world))
    assert c.status is ClaimStatus.ISSUED and len(c.code.replace("-", "")) == 16
    redeem(world, c.code.lower())  # typed in lower case at the till: still the code
    with pytest.raises(FailedPrecondition) as error:
        redeem(world, c.code)
    assert error.value.reason == "CODE_ALREADY_REDEEMED"
    offer = world["merchants"].perk(p)
    assert (offer.remaining, offer.outstanding, offer.redeemed) == (4, 0, 1)


def test_codes_are_refused_precisely(world):
    p = perk(world)
    c = claim(world, p, new_rider(world))
    with pytest.raises(NotFound) as made_up:
        redeem(world, "0000-0000-0000-0000")
    # At another merchant's counter the code is no code at all: saying whose it is would
    # confirm that it is valid.
    with pytest.raises(NotFound) as elsewhere:
        redeem(world, c.code, key="other_shop")
    assert (elsewhere.value.reason, elsewhere.value.message) == (made_up.value.reason,
                                                                  made_up.value.message)
    world["clock"].now += timedelta(minutes=31)
    with pytest.raises(FailedPrecondition) as error:
        redeem(world, c.code)
    assert error.value.reason == "CODE_EXPIRED"


def test_the_code_is_not_in_the_store(world, store_env):
    c = claim(world, perk(world), new_rider(world))
    raw = b"".join(n.state for n in world["merchants"].read_log(1, 10_000))
    assert c.code.replace("-", "").encode() not in raw
    assert c.code.encode() not in raw


def test_per_rider_limit_holds_within_the_period_and_resets_after(world):
    p = perk(world, limit=2, period=LimitPeriod.DAY)
    rider = new_rider(world)
    claim(world, p, rider)
    claim(world, p, rider)
    with pytest.raises(FailedPrecondition) as error:
        claim(world, p, rider)
    assert error.value.reason == "RIDER_LIMIT_REACHED"
    world["clock"].now += timedelta(days=1)
    claim(world, p, rider)


def test_an_expired_code_lapses_and_gives_its_quota_back(world):
    p = perk(world, quota=1, ttl=10)
    first = claim(world, p, new_rider(world))
    with pytest.raises(FailedPrecondition) as error:
        claim(world, p, new_rider(world))
    assert error.value.reason == "QUOTA_EXHAUSTED"
    world["clock"].now += timedelta(minutes=11)
    assert LapseJob(world["merchants"]).run_once() == 1
    assert LapseJob(world["merchants"]).run_once() == 0
    assert world["merchants"].claim(first.claim_id).status is ClaimStatus.LAPSED
    assert world["merchants"].perk(p).remaining == 1
    claim(world, p, new_rider(world))


def test_a_claim_past_expiry_frees_quota_even_before_the_lapse_job_runs(world):
    p = perk(world, quota=1, ttl=10)
    claim(world, p, new_rider(world))
    world["clock"].now += timedelta(minutes=11)
    claim(world, p, new_rider(world))  # the first code lapses inside this claim's save
    assert world["merchants"].perk(p).remaining == 0


def test_a_redemption_reversed_in_time_gives_quota_back_and_not_later(world):
    p = perk(world, quota=3)
    c = claim(world, p, new_rider(world))
    redeem(world, c.code)
    with as_actor(shop_actor(world)):
        world["merchants"].reverse_redemption(claim_id=c.claim_id, reason="till mistake")
    assert world["merchants"].perk(p).remaining == 3
    c2 = claim(world, p, new_rider(world))
    redeem(world, c2.code)
    world["clock"].now += timedelta(minutes=61)
    with as_actor(shop_actor(world)), pytest.raises(FailedPrecondition) as error:
        world["merchants"].reverse_redemption(claim_id=c2.claim_id, reason="late")
    assert error.value.reason == "REVERSAL_WINDOW_CLOSED"


def test_the_audit_of_a_perk_shows_every_redemption_with_the_quota_after(world):
    p = perk(world, quota=3, limit=5)
    rider = new_rider(world)
    claims = []
    for _ in range(3):
        claims.append(claim(world, p, rider))
        redeem(world, claims[-1].code)
    with as_actor(shop_actor(world)):
        world["merchants"].reverse_redemption(claim_id=claims[1].claim_id, reason="收银误操作")
    with as_actor(ADMIN):
        rows, _ = world["merchants"].redemptions(merchant_id="", perk_id=p, page_size=10,
                                                 page_token="")
        with pytest.raises(NotFound):
            world["merchants"].redemptions(merchant_id="", perk_id=str(uuid.uuid4()),
                                           page_size=10, page_token="")
    assert [r["remaining_after"] for r in rows] == [2, 1, 0]
    assert {r["rider_id"] for r in rows} == {rider}
    # The reversal gave the quota back: 1 left after it.
    assert [(r["reversed"], r.get("remaining_after_reversal")) for r in rows] == [
        (False, None), (True, 1), (False, None)]


def test_a_suspended_riders_codes_are_frozen_until_reinstatement(world):
    p = perk(world)
    rider = new_rider(world)
    c = claim(world, p, rider)
    with as_actor(ADMIN):
        world["identity"].suspend_rider(rider_id=rider, reason="complaint")
    world["follower"].run_once()
    assert world["merchants"].claim(c.claim_id).status is ClaimStatus.FROZEN
    with pytest.raises(FailedPrecondition) as error:
        redeem(world, c.code)
    assert error.value.reason == "CLAIM_FROZEN"
    with pytest.raises(FailedPrecondition) as error:
        claim(world, perk(world, key="other_shop"), rider)
    assert error.value.reason == "RIDER_NOT_ACTIVE"
    with as_actor(ADMIN):
        world["identity"].reinstate_rider(rider_id=rider, reason="cleared")
    world["follower"].run_once()
    redeem(world, c.code)


def test_a_suspended_merchant_cannot_redeem_and_the_code_waits_for_its_reinstatement(world):
    """#22: a merchant the street office suspended went on redeeming the codes it had issued."""
    p = perk(world)
    c = claim(world, p, new_rider(world))
    with as_actor(OFFICE):
        world["merchants"].suspend_merchant(merchant_id=world["shop"], reason="投诉核查中")
    with pytest.raises(FailedPrecondition) as error:
        redeem(world, c.code)
    assert error.value.reason == "MERCHANT_NOT_APPROVED"
    assert world["merchants"].claim(c.claim_id).status is ClaimStatus.ISSUED  # nothing written
    with as_actor(OFFICE):
        world["merchants"].reinstate_merchant(merchant_id=world["shop"], reason="核查完毕")
    redeem(world, c.code)
    assert world["merchants"].claim(c.claim_id).status is ClaimStatus.REDEEMED


def test_badge_only_perks_follow_awards_and_revocations(world):
    golden_bee = world["badges"].badge_class()
    p = perk(world, badge=golden_bee)
    rider = new_rider(world)
    with pytest.raises(FailedPrecondition) as error:
        claim(world, p, rider)
    assert error.value.reason == "BADGE_REQUIRED"
    award = world["badges"].award(rider, golden_bee)
    world["badge_follower"].run_once()
    with as_actor(PLATFORM):
        open_now, _ = world["merchants"].perks_for_rider(rider_id=rider, street_id="",
                                                          page_size=10, page_token="")
    assert p in [o.perk_id for o in open_now]
    claim(world, p, rider)
    world["badges"].revoke(award)
    world["badge_follower"].run_once()
    world["badge_follower"].run_once()
    with as_actor(PLATFORM):
        open_now, _ = world["merchants"].perks_for_rider(rider_id=rider, street_id="",
                                                          page_size=10, page_token="")
    assert p not in [o.perk_id for o in open_now]


def test_care_packages_never_exceed_stock_nor_go_twice_to_one_rider(world):
    with as_actor(OFFICE):
        campaign = world["merchants"].create_care_campaign(
            street_id=world["street"], name="夏日关爱礼包", description="", stock=2)["campaign_id"]
        a, b, c = new_rider(world), new_rider(world), new_rider(world)
        world["merchants"].allocate_care_package(campaign_id=campaign, rider_id=a)
        with pytest.raises(AlreadyExists):
            world["merchants"].allocate_care_package(campaign_id=campaign, rider_id=a)
        world["merchants"].allocate_care_package(campaign_id=campaign, rider_id=b)
        with pytest.raises(FailedPrecondition) as error:
            world["merchants"].allocate_care_package(campaign_id=campaign, rider_id=c)
        assert error.value.reason == "OUT_OF_STOCK"
        world["merchants"].record_hand_over(campaign_id=campaign, rider_id=a,
                                            handed_over_by="王社工")
    view = world["merchants"].campaign(campaign)
    assert view.handed_over == 1
    with as_actor(OFFICE):
        # Who handed it over is a person's name: the street office sees it, the masking table
        # shows an auditor its first character.
        assert world["merchants"].campaign(campaign).allocations[a]["handed_over_by"] == "王社工"
    with as_actor(actor("auditor", "auditor")):
        assert world["merchants"].campaign(campaign).allocations[a]["handed_over_by"] == "王**"
    assert view.allocations[a]["recorded_by"] == "hehuachi-office"


def test_a_campaigns_packages_are_listed_in_the_order_they_were_allocated(world):
    with as_actor(OFFICE):
        campaign = world["merchants"].create_care_campaign(
            street_id=world["street"], name="冬日关爱礼包", description="",
            stock=12)["campaign_id"]
        riders = [new_rider(world) for _ in range(12)]
        for rider in riders:
            world["merchants"].allocate_care_package(campaign_id=campaign, rider_id=rider)
        assert list(world["merchants"].campaign(campaign).allocations) == riders


def test_an_auditor_reads_a_campaign_and_a_perk_as_of_now_as_fields_masked_as_the_table_says(
        world):
    # Their rolls are immutables.Map and a ledger value, not dicts: the state an auditor is
    # shown must still be fields (not a repr), and a name in them masked.
    with as_actor(OFFICE):
        campaign = world["merchants"].create_care_campaign(
            street_id=world["street"], name="夏日关爱礼包", description="", stock=12)["campaign_id"]
        rider = new_rider(world)
        # Twelve: orders 10 and 11 read as numbers, not as "10" before "2".
        for someone in (rider, *(new_rider(world) for _ in range(11))):
            world["merchants"].allocate_care_package(campaign_id=campaign, rider_id=someone)
        world["merchants"].record_hand_over(campaign_id=campaign, rider_id=rider,
                                            handed_over_by="王社工")
    p = perk(world, quota=5)
    code = claim(world, p, rider)
    later = datetime.now(UTC) + timedelta(seconds=1)
    with as_actor(actor("auditor", "auditor")):
        state = audit.state_as_of(world["merchants"], uuid.UUID(campaign), later)
        offer = audit.state_as_of(world["merchants"], uuid.UUID(p), later)
    allocation = state["allocations"][rider]
    assert allocation["handed_over_by"] == "王**" and allocation["recorded_by"]
    assert "王社工" not in json.dumps(state, default=str, ensure_ascii=False)
    assert offer["ledger"]["outstanding"][code.claim_id]["rider_id"] == rider
    assert offer["ledger"]["redeemed"] == {}
    assert "Map(" not in json.dumps(offer, default=str)
    # The same state reads the same from every process: what a map holds, by key.
    assert len(state["allocations"]) == 12
    assert list(state["allocations"]) == sorted(state["allocations"])
    assert state["allocated_in_order"][0] == rider
    assert list(state["allocated_in_order"]) == list(range(12))


def _race(n, fn):
    barrier = threading.Barrier(n)
    outcomes: list[str] = []

    def run(i):
        barrier.wait()
        try:
            fn(i)
            outcomes.append("ok")
        except FailedPrecondition as error:
            outcomes.append(error.reason)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return Counter(outcomes)


@pytest.mark.postgres
@pytest.mark.parametrize("store_env", ["postgres"], indirect=True)
def test_two_hundred_concurrent_claims_on_a_quota_of_fifty_give_fifty_codes(world):
    p = perk(world, quota=50)
    riders = [new_rider(world) for _ in range(200)]
    outcome = _race(200, lambda i: claim(world, p, riders[i]))
    assert outcome == {"ok": 50, "QUOTA_EXHAUSTED": 150}
    offer = world["merchants"].perk(p)
    assert (offer.remaining, offer.outstanding) == (0, 50)
    issued = [n for n in world["merchants"].read_log(1, 100_000) if n.topic.endswith(
        "Claim.Issued")]
    assert len(issued) == 50


@pytest.mark.postgres
@pytest.mark.parametrize("store_env", ["postgres"], indirect=True)
def test_twenty_concurrent_redemptions_of_one_code_succeed_once(world):
    c = claim(world, perk(world), new_rider(world))
    outcome = _race(20, lambda i: redeem(world, c.code))
    assert outcome == {"ok": 1, "CODE_ALREADY_REDEEMED": 19}
    redeemed = [n for n in world["merchants"].read_log(1, 100_000)
                if n.topic.endswith("Claim.Redeemed")]
    assert len(redeemed) == 1


def test_a_rider_verified_a_moment_ago_can_claim_before_the_follower_has_run(world):
    p = perk(world)
    with as_actor(PLATFORM):
        rider = world["identity"].register_rider(
            platform_id=world["platform"], platform_rider_id="fresh", name="骑手",
            phone="13812345678", national_id="", home_street_id=world["street"],
            station_id=world["station"])["rider_id"]
    world["follower"].run_once()  # merchants has heard of the registration only
    with as_actor(PLATFORM):
        world["identity"].verify_rider(rider_id=rider)
    assert claim(world, p, rider).status is ClaimStatus.ISSUED


# ---------------------------------------------------------------------------- one round (issue 23)


def offer_with(w, **changes):
    """CreatePerkOffer for the shop, as `perk` makes it, with `changes`."""
    now = w["clock"]()
    fields = dict(merchant_id=w["shop"], title="骑手免费饮水", kind=PerkKind.FREE_ITEM,
                  percent_off=0, amount_off_fen=0, free_item="一瓶水",
                  eligibility=Eligibility.ANY_VERIFIED_RIDER, badge_class_id="",
                  total_quota=10, per_rider_limit=1, limit_period=LimitPeriod.DAY,
                  valid_from=now - timedelta(hours=1), valid_until=now + timedelta(days=30),
                  code_ttl_minutes=30)
    fields.update(changes)
    with as_actor(ADMIN):
        return w["merchants"].create_perk_offer(**fields)


def test_a_perk_offer_with_six_problems_gets_six_violations_in_one_answer(world):
    """Formats, rules and a reference to nothing, each with its reason, in ONE
    INVALID_ARGUMENT: an integrator fixes them all at once, not one per round."""
    now = world["clock"]()
    never_applied = str(uuid.uuid4())
    before = world["merchants"].last_position()
    with pytest.raises(InvalidArgument) as error:
        offer_with(world, merchant_id=never_applied, title="  ", kind=None, total_quota=0,
                   eligibility=Eligibility.BADGE_HOLDERS, badge_class_id="not-a-uuid",
                   valid_from=now + timedelta(days=2), valid_until=now + timedelta(days=1))
    assert [(v.field, v.reason) for v in error.value.violations] == [
        ("title", "FIELD_REQUIRED"),
        ("kind", "ENUM_VALUE_REQUIRED"),
        ("badge_class_id", "INVALID_ID"),
        ("total_quota", "QUOTA_INVALID"),
        ("valid_until_time", "VALID_UNTIL_BEFORE_VALID_FROM"),
        ("merchant_id", "MERCHANT_NOT_FOUND")]
    assert error.value.reason == "INVALID_ARGUMENT"  # several reasons: each violation has one
    kind = next(v for v in error.value.violations if v.field == "kind")
    # The wire's names, not Python's.
    assert kind.description == ("must be one of PERK_KIND_PERCENT_DISCOUNT, "
                                "PERK_KIND_FIXED_DISCOUNT, PERK_KIND_FREE_ITEM")
    assert world["merchants"].last_position() == before


def test_a_perk_offer_whose_only_fault_is_an_unknown_merchant_is_not_found(world):
    with pytest.raises(NotFound) as error:
        offer_with(world, merchant_id=str(uuid.uuid4()))
    assert error.value.reason == "MERCHANT_NOT_FOUND"


def test_a_perk_for_a_badge_class_badges_never_created_is_refused_and_nothing_written(world):
    """Nobody could ever claim it (issue 22). A class created a moment ago — after the
    directory last looked — is found: a miss catches up with badges' feed first."""
    world["badges"].badge_class("青蜂骑士")
    before = world["merchants"].last_position()
    never_created = str(uuid.uuid4())
    with pytest.raises(NotFound) as error:
        offer_with(world, eligibility=Eligibility.BADGE_HOLDERS, badge_class_id=never_created)
    assert error.value.reason == "BADGE_CLASS_NOT_FOUND"
    assert world["merchants"].last_position() == before
    created_now = world["badges"].badge_class("金蜂骑士")
    assert offer_with(world, eligibility=Eligibility.BADGE_HOLDERS,
                      badge_class_id=created_now)["perk_id"]


def test_a_perk_for_badge_holders_is_refused_as_unavailable_while_badges_is_out_of_reach(
        world):
    """Whether the class exists cannot be guessed: UNAVAILABLE (retry), never accepted."""
    class Down:
        def read(self, *_):
            raise FailedCall(grpc.StatusCode.UNAVAILABLE)
    world["merchants"].badge_classes = BadgeClassDirectory(Down())
    before = world["merchants"].last_position()
    with pytest.raises(Unavailable) as error:
        offer_with(world, eligibility=Eligibility.BADGE_HOLDERS,
                   badge_class_id=str(uuid.uuid4()))
    assert (error.value.reason, error.value.metadata["upstream"]) == (
        "UPSTREAM_UNAVAILABLE", "badges")
    assert world["merchants"].last_position() == before
    # A perk for every verified rider asks badges nothing.
    assert offer_with(world)["perk_id"]


def test_a_single_fault_is_the_error_infos_reason(world):
    with pytest.raises(InvalidArgument) as error:
        offer_with(world, badge_class_id="", eligibility=Eligibility.BADGE_HOLDERS)
    assert [(v.field, v.reason) for v in error.value.violations] == [
        ("badge_class_id", "BADGE_CLASS_REQUIRED")]
    assert error.value.reason == "BADGE_CLASS_REQUIRED"


def test_an_application_naming_wrong_kinds_gets_every_fault_at_once(world):
    """The street that is a merchant, and the merchant that is a street, with the format
    errors: one answer."""
    with pytest.raises(InvalidArgument) as error, as_actor(ADMIN):
        world["merchants"].apply_merchant(
            merchant_id=world["street"], name="", street_id=world["other_shop"],
            category="x" * 51, latitude=91.0, longitude=119.95, address="",
            amenities=[None])
    assert [(v.field, v.reason) for v in error.value.violations] == [
        ("name", "FIELD_REQUIRED"), ("category", "TEXT_TOO_LONG"),
        ("location.latitude", "LOCATION_INVALID"), ("amenities[0]", "ENUM_VALUE_REQUIRED"),
        ("merchant_id", "ORGANISATION_KIND_NOT_ALLOWED"),
        ("street_id", "ORGANISATION_KIND_NOT_ALLOWED")]
    assert [v.description for v in error.value.violations[-2:]] == [
        "must be an ORGANISATION_KIND_MERCHANT, not an ORGANISATION_KIND_STREET",
        "must be an ORGANISATION_KIND_STREET, not an ORGANISATION_KIND_MERCHANT"]


def test_an_organisation_merchants_never_notes_is_of_the_wrong_kind_not_nothing(world):
    """merchants notes only streets and merchants; a district named as a campaign's street is
    still an organisation, of the wrong kind, told as every service tells it — not
    STREET_NOT_FOUND."""
    with pytest.raises(InvalidArgument) as error, as_actor(ADMIN):
        world["merchants"].create_care_campaign(street_id=world["district"], name="礼包",
                                                description="", stock=5)
    assert [(v.field, v.reason, v.description) for v in error.value.violations] == [
        ("street_id", "ORGANISATION_KIND_NOT_ALLOWED",
         "must be an ORGANISATION_KIND_STREET, not an ORGANISATION_KIND_DISTRICT")]


def test_a_claim_naming_an_unknown_perk_and_a_malformed_rider_gets_both(world):
    with pytest.raises(InvalidArgument) as error, as_actor(PLATFORM):
        world["merchants"].claim_perk(perk_id=str(uuid.uuid4()), rider_id="R-1")
    assert [(v.field, v.reason) for v in error.value.violations] == [
        ("rider_id", "INVALID_ID"), ("perk_id", "PERK_NOT_FOUND")]
    with pytest.raises(NotFound) as alone, as_actor(PLATFORM):
        world["merchants"].claim_perk(perk_id=str(uuid.uuid4()), rider_id=new_rider(world))
    assert alone.value.reason == "PERK_NOT_FOUND"


# ------------------------------------------------------------------- care packages (issue 22)

ACTIVE_RULE = CareRuleInput("在岗骑手", CareRuleKind.RIDER_ACTIVE)
STREET_RULE = CareRuleInput("本街道骑手", CareRuleKind.HOME_STREET)


def care_rules(w, *rules):
    with as_actor(ADMIN):
        return w["merchants"].set_care_eligibility_rules(rules=list(rules))["version"]


def care_campaign(w, *, stock=0, rules=(), contents=(("矿泉水", 6), ("藿香正气水", 2))):
    with as_actor(OFFICE):
        return w["merchants"].create_care_campaign(
            street_id=w["street"], name="夏日关爱礼包", description="防暑降温", stock=stock,
            contents=[CareItem(i, q) for i, q in contents],
            eligibility_rules=list(rules))["campaign_id"]


def donate(w, campaign_id, *, packages=0, items=(), sponsor=None):
    with as_actor(OFFICE):
        return w["merchants"].record_care_donation(
            campaign_id=campaign_id, sponsor_id=sponsor or w["shop"], packages=packages,
            items=[CareItem(i, q) for i, q in items])


def allocate(w, campaign_id, rider_id):
    with as_actor(OFFICE):
        return w["merchants"].allocate_care_package(campaign_id=campaign_id, rider_id=rider_id)


def other_street_rider(w) -> str:
    if "far_street" not in w:
        with as_actor(ADMIN):
            w["far_street"] = w["identity"].create_organisation(
                kind=OrganisationKind.STREET, name="南大街街道", parent_id=w["district"],
                department_function=None)["organisation_id"]
    w["riders"] += 1
    with as_actor(PLATFORM):
        rider_id = w["identity"].register_rider(
            platform_id=w["platform"], platform_rider_id=f"R{w['riders']}", name="骑手",
            phone="13812345678", national_id="", home_street_id=w["far_street"],
            station_id=w["station"])["rider_id"]
        w["identity"].verify_rider(rider_id=rider_id)
    w["follower"].run_once()
    return rider_id


def open_to(w, rider_id):
    with as_actor(PLATFORM):
        found, _ = w["merchants"].campaigns_for_rider(rider_id=rider_id, page_size=50,
                                                      page_token="")
    return [c.campaign_id for c in found]


def test_a_sponsors_packages_go_only_to_riders_who_meet_the_campaigns_rules(world):
    version = care_rules(world, ACTIVE_RULE, STREET_RULE,
                         CareRuleInput("新骑手", CareRuleKind.NEW_RIDER, days=30))
    campaign = care_campaign(world, rules=["在岗骑手", "本街道骑手"])
    # Nothing to give yet: no rider qualifies for a campaign without packages.
    qualified = new_rider(world)
    assert open_to(world, qualified) == []
    donate(world, campaign, packages=2, items=[("雨衣", 20)])
    unverified, elsewhere = new_rider(world, verify=False), other_street_rider(world)
    assert open_to(world, qualified) == [campaign]
    assert open_to(world, unverified) == open_to(world, elsewhere) == []
    before = world["merchants"].last_position()
    for rider_id, reason, rule in ((unverified, "RIDER_NOT_ACTIVE", "在岗骑手"),
                                   (elsewhere, "RIDER_NOT_OF_STREET", "本街道骑手")):
        with pytest.raises(FailedPrecondition) as refused:
            allocate(world, campaign, rider_id)
        assert (refused.value.reason, refused.value.metadata["rule"]) == (reason, rule)
    assert world["merchants"].last_position() == before  # nothing written on a refusal
    allocate(world, campaign, qualified)
    assert open_to(world, qualified) == []  # theirs already
    view = world["merchants"].campaign(campaign)
    assert (view.stock, view.remaining, view.rules_version) == (2, 1, version)
    assert view.contents == [{"item": "矿泉水", "quantity": 6},
                             {"item": "藿香正气水", "quantity": 2}]
    assert [r["name"] for r in view.rules] == ["在岗骑手", "本街道骑手"]
    assert [(d["sponsor_id"], d["packages"], d["items"]) for d in view.donations] == [
        (world["shop"], 2, [{"item": "雨衣", "quantity": 20}])]


def test_a_campaign_keeps_the_rules_it_was_launched_with_when_the_city_changes_its_set(world):
    care_rules(world, CareRuleInput("新骑手", CareRuleKind.NEW_RIDER, days=30))
    campaign = care_campaign(world, stock=5, rules=["新骑手"])
    care_rules(world, CareRuleInput("新骑手", CareRuleKind.NEW_RIDER, days=1))
    rider, later = new_rider(world), new_rider(world)
    world["clock"].now += timedelta(days=10)  # new by the campaign's 30 days, not by 1
    allocate(world, campaign, rider)
    world["clock"].now += timedelta(days=21)
    with pytest.raises(FailedPrecondition) as refused:
        allocate(world, campaign, later)
    assert refused.value.reason == "RIDER_NOT_NEW"
    with as_actor(ADMIN):
        assert world["merchants"].care_eligibility_rules(1).rules[0]["days"] == 30
        assert world["merchants"].care_eligibility_rules().rules[0]["days"] == 1


def test_a_badge_rule_names_a_class_badges_created_and_follows_awards(world):
    with pytest.raises(NotFound) as refused:
        care_rules(world, CareRuleInput("金蜂", CareRuleKind.HOLDS_BADGE,
                                        badge_class_id=str(uuid.uuid4())))
    assert (refused.value.reason, refused.value.resources[0].field) == (
        "BADGE_CLASS_NOT_FOUND", "rules[0].badge_class_id")
    golden_bee = world["badges"].badge_class()
    care_rules(world, CareRuleInput("金蜂", CareRuleKind.HOLDS_BADGE, badge_class_id=golden_bee))
    campaign = care_campaign(world, stock=1, rules=["金蜂"])
    rider = new_rider(world)
    with pytest.raises(FailedPrecondition) as refused:
        allocate(world, campaign, rider)
    assert refused.value.reason == "BADGE_REQUIRED"
    world["badges"].award(rider, golden_bee)
    world["badge_follower"].run_once()
    assert open_to(world, rider) == [campaign]
    allocate(world, campaign, rider)


def test_bad_care_rules_campaigns_and_donations_are_told_in_one_answer_and_nothing_stored(
        world):
    before = world["merchants"].last_position()
    with pytest.raises(InvalidArgument) as refused:
        care_rules(world, CareRuleInput(" ", None),
                   CareRuleInput("困难骑手", CareRuleKind.HARDSHIP),
                   CareRuleInput("新骑手", CareRuleKind.NEW_RIDER, days=0),
                   CareRuleInput("新骑手", CareRuleKind.HOLDS_BADGE))
    assert [(v.field, v.reason) for v in refused.value.violations] == [
        ("rules[0].name", "FIELD_REQUIRED"), ("rules[0].kind", "ENUM_VALUE_REQUIRED"),
        ("rules[1].kind", "RULE_NOT_YET_FED"), ("rules[2].days", "DAYS_INVALID"),
        ("rules[3].name", "DUPLICATE_VALUE"), ("rules[3].badge_class_id", "BADGE_CLASS_REQUIRED")]
    with pytest.raises(InvalidArgument) as refused:
        care_rules(world)
    assert [(v.field, v.reason) for v in refused.value.violations] == [
        ("rules", "FIELD_REQUIRED")]
    assert world["merchants"].last_position() == before
    care_rules(world, ACTIVE_RULE)
    before = world["merchants"].last_position()
    with pytest.raises(InvalidArgument) as refused, as_actor(OFFICE):
        world["merchants"].create_care_campaign(
            street_id=world["street"], name="礼包", description="", stock=-1,
            contents=[CareItem("水", 0), CareItem("水", 1)],
            eligibility_rules=["在岗骑手", "在岗骑手", "没有的规则"])
    assert [(v.field, v.reason) for v in refused.value.violations] == [
        ("stock", "STOCK_INVALID"), ("contents[0].quantity", "QUANTITY_INVALID"),
        ("contents[1].item", "DUPLICATE_VALUE"), ("eligibility_rules[1]", "DUPLICATE_VALUE"),
        ("eligibility_rules[2]", "CARE_RULE_UNKNOWN")]
    campaign = care_campaign(world)
    before = world["merchants"].last_position()
    with pytest.raises(InvalidArgument) as refused:
        donate(world, campaign)
    assert [(v.field, v.reason) for v in refused.value.violations] == [
        ("packages", "DONATION_EMPTY")]
    with pytest.raises(NotFound) as refused:
        donate(world, campaign, packages=1, sponsor=str(uuid.uuid4()))
    assert refused.value.reason == "ORGANISATION_NOT_FOUND"
    assert world["merchants"].last_position() == before


def test_a_campaign_launched_before_contents_and_rules_reads_with_none(world):
    """Stored as version 1 of the event wrote it: any rider who has not left, as then."""
    campaign_id = uuid.uuid4()
    topic = get_topic(CareCampaign.Launched)
    state = {"street_id": world["street"], "name": "旧礼包", "description": "", "stock": 1,
             "originator_topic": get_topic(CareCampaign),
             "timestamp": "2026-01-01T00:00:00+00:00"}
    app = world["merchants"]
    store_as_released(app, campaign_id, [(topic, state)])
    view = app.campaign(str(campaign_id))
    assert (view.contents, view.rules, view.rules_version, view.donations) == ([], [], 0, [])
    allocate(world, str(campaign_id), new_rider(world, verify=False))


@pytest.mark.postgres
@pytest.mark.parametrize("store_env", ["postgres"], indirect=True)
def test_concurrent_allocations_give_the_exact_stock_and_only_to_riders_who_qualify(world):
    care_rules(world, STREET_RULE)
    campaign = care_campaign(world, stock=5, rules=["本街道骑手"])
    local = [new_rider(world) for _ in range(12)]
    far = [other_street_rider(world) for _ in range(12)]
    riders = [r for pair in zip(local, far, strict=True) for r in pair]
    outcome = _race(len(riders), lambda i: allocate(world, campaign, riders[i]))
    assert outcome["ok"] == 5
    assert outcome["OUT_OF_STOCK"] + outcome["RIDER_NOT_OF_STREET"] == 19
    allocated = set(world["merchants"].campaign(campaign).allocations)
    assert len(allocated) == 5 and allocated <= set(local)
    stored = [n for n in world["merchants"].read_log(1, 100_000)
              if n.topic.endswith("CareCampaign.PackageAllocated")]
    assert len(stored) == 5
