"""A partner's profile (多方资源): what it takes to register one, and a revision that replaces
category and offers while the registration stays in the history."""

from __future__ import annotations

from services.identity.domain.model import Partner
from services.identity.domain.values import MAX_OFFERS, OfferKind, PartnerCategory
from shared.errors import Violations


def test_a_profile_needs_a_category_and_one_to_twenty_described_offers():
    violations = Violations()
    Partner.check(violations, None, [(None, "x"), (OfferKind.PERKS, "  ")])
    assert {(v.field, v.reason) for v in violations.items} == {
        ("category", "ENUM_VALUE_REQUIRED"), ("offers[0].kind", "ENUM_VALUE_REQUIRED"),
        ("offers[1].description", "FIELD_REQUIRED")}
    none, many = Violations(), Violations()
    Partner.check(none, PartnerCategory.ENTERPRISE, [])
    Partner.check(many, PartnerCategory.ENTERPRISE,
                  [(OfferKind.PERKS, "优惠")] * (MAX_OFFERS + 1))
    assert [v.field for v in none.items] == [v.field for v in many.items] == ["offers"]


def test_offers_are_stored_stripped_in_the_order_given():
    violations = Violations()
    stored = Partner.check(violations, PartnerCategory.UNIVERSITY,
                           [(OfferKind.COURSES, " 思政课 "), (OfferKind.COURSES, "技能课")])
    assert not violations.items
    assert stored == [{"kind": "COURSES", "description": "思政课"},
                      {"kind": "COURSES", "description": "技能课"}]


def test_a_revision_replaces_category_and_offers_as_a_new_version():
    partner = Partner(organisation_id="o", category="UNIVERSITY",
                      offers=[{"kind": "COURSES", "description": "思政课"}])
    partner.revise(PartnerCategory.INDUSTRY_ASSOCIATION,
                   [{"kind": "DONATIONS", "description": "关爱礼包"}])
    assert (partner.category, partner.offers, partner.version) == (
        PartnerCategory.INDUSTRY_ASSOCIATION, [{"kind": "DONATIONS", "description": "关爱礼包"}],
        2)
    assert Partner.create_id("o") == Partner.create_id("o") != Partner.create_id("p")
