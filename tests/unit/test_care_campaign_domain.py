"""Care packages (关爱礼包) on the domain alone: contents, sponsors' gifts and the eligibility
rules a campaign copied from the city's set, each refusal naming its rule."""

from datetime import UTC, datetime, timedelta

import pytest

from services.merchants.domain.model import CareCampaign, CareEligibilityRules, RiderFacts
from shared.errors import AlreadyExists, FailedPrecondition

NOW = datetime(2026, 6, 5, 9, 0, tzinfo=UTC)
STREET = "street-hehuachi"
GOLDEN_BEE = "golden-bee"

ACTIVE = {"name": "在岗骑手", "kind": "RIDER_ACTIVE", "days": 0, "badge_class_id": ""}
OF_STREET = {"name": "本街道骑手", "kind": "HOME_STREET", "days": 0, "badge_class_id": ""}
NEW = {"name": "新骑手", "kind": "NEW_RIDER", "days": 30, "badge_class_id": ""}
BEE = {"name": "金蜂骑士", "kind": "HOLDS_BADGE", "days": 0, "badge_class_id": GOLDEN_BEE}


def rider(ident: str = "r1", *, active: bool = True, street: str = STREET,
          registered_days_ago: int | None = 3, badges: tuple[str, ...] = ()) -> RiderFacts:
    registered = None if registered_days_ago is None else NOW - timedelta(
        days=registered_days_ago)
    return RiderFacts(ident, active, street, registered, frozenset(badges))


def campaign(*rules: dict, stock: int = 2) -> CareCampaign:
    return CareCampaign(street_id=STREET, name="夏日关爱礼包", description="", stock=stock,
                        contents=[{"item": "矿泉水", "quantity": 6}], rules=list(rules),
                        rules_version=1 if rules else 0)


def refusal(c: CareCampaign, facts: RiderFacts) -> tuple[str, str] | None:
    try:
        c.check_eligible(facts, NOW)
    except FailedPrecondition as error:
        return error.reason, error.metadata.get("rule", "")
    return None


def test_a_campaign_without_rules_takes_any_rider_as_before():
    c = campaign()
    assert refusal(c, rider(active=False, street="elsewhere", registered_days_ago=None)) is None


def test_each_rule_refuses_with_its_own_reason_and_name():
    c = campaign(ACTIVE, OF_STREET, NEW, BEE)
    assert refusal(c, rider(active=False)) == ("RIDER_NOT_ACTIVE", "在岗骑手")
    assert refusal(c, rider(street="other-street")) == ("RIDER_NOT_OF_STREET", "本街道骑手")
    assert refusal(c, rider(registered_days_ago=31)) == ("RIDER_NOT_NEW", "新骑手")
    # A rider whose registration time identity never told is not known to be new.
    assert refusal(c, rider(registered_days_ago=None)) == ("RIDER_NOT_NEW", "新骑手")
    assert refusal(c, rider()) == ("BADGE_REQUIRED", "金蜂骑士")
    assert refusal(c, rider(registered_days_ago=30, badges=(GOLDEN_BEE,))) is None


def test_allocation_checks_stock_before_rules_and_rules_before_allocating():
    c = campaign(OF_STREET, stock=1)
    with pytest.raises(FailedPrecondition) as error:
        c.allocate("r1", NOW, rider("r1", street="other"))
    assert error.value.reason == "RIDER_NOT_OF_STREET" and not c.allocations
    c.allocate("r2", NOW, rider("r2"))
    with pytest.raises(AlreadyExists):
        c.allocate("r2", NOW, rider("r2"))
    with pytest.raises(FailedPrecondition) as error:
        c.allocate("r3", NOW, rider("r3", street="other"))
    assert error.value.reason == "OUT_OF_STOCK"


def test_sponsors_packages_add_to_the_stock_and_items_are_recorded_as_given():
    c = campaign(stock=0)
    assert c.remaining == 0 and not c.is_open_to(rider(), NOW)
    c.record_donation("d1", "sponsor-shop", 2, [], "office", NOW)
    c.record_donation("d2", "sponsor-assoc", 0, [{"item": "雨衣", "quantity": 50}], "office",
                      NOW)
    assert (c.stock, c.remaining) == (2, 2)
    assert [(d["sponsor_id"], d["packages"], d["items"]) for d in c.donations] == [
        ("sponsor-shop", 2, []), ("sponsor-assoc", 0, [{"item": "雨衣", "quantity": 50}])]
    assert c.is_open_to(rider(), NOW)


def test_the_list_for_a_rider_uses_the_rules_allocation_applies():
    c = campaign(NEW, stock=1)
    assert c.is_open_to(rider("r1"), NOW)
    assert not c.is_open_to(rider("old", registered_days_ago=400), NOW)
    c.allocate("r1", NOW, rider("r1"))
    assert not c.is_open_to(rider("r1"), NOW)  # theirs already
    assert not c.is_open_to(rider("r2"), NOW)  # none left


def test_an_old_launch_event_reads_with_no_contents_and_no_rules():
    state = {"street_id": STREET, "name": "旧礼包", "description": "", "stock": 3}
    CareCampaign.Launched.upcast_v1_v2(state)
    assert (state["contents"], state["rules"], state["rules_version"]) == ([], [], 0)


def test_the_city_set_names_its_rules_and_each_change_is_a_version():
    rules = CareEligibilityRules(rules=[ACTIVE, NEW])
    assert rules.named("新骑手") == NEW and rules.named("nothing") is None
    rules.change(rules=[ACTIVE])
    assert rules.version == 2 and rules.named("新骑手") is None
