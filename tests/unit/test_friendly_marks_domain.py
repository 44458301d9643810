"""The friendly mark's pure domain: criteria rules, the evaluation, and the mark's life."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.identity.domain.friendly import (
    CRITERIA_EMPTY,
    FriendlyMark,
    FriendlyMarkStatus,
    check_criteria,
    evaluate,
)
from services.identity.domain.values import Amenity
from shared.errors import FailedPrecondition, Violations

NOW = datetime(2026, 6, 5, 9, 0, tzinfo=UTC)
CRITERIA = {"min_service_spaces": 1, "space_amenities": ["REST", "DRINKING_WATER"],
            "min_friendly_merchants": 2, "co_building_pledge": True,
            "street_attestation": False}


def faults(**fields) -> dict[str, str]:
    violations = Violations()
    check_criteria(violations, amenity_type=Amenity, **{
        "min_service_spaces": 0, "space_amenities": [], "min_friendly_merchants": 0,
        "co_building_pledge": False, "street_attestation": False, **fields})
    return {v.field: v.reason for v in violations.items}


def test_criteria_that_ask_for_nothing_or_too_much_are_refused_at_once():
    assert faults() == {"criteria": CRITERIA_EMPTY}
    assert faults(min_service_spaces=101, space_amenities=[Amenity.REST, Amenity.REST, None],
                  min_friendly_merchants=-1) == {
        "criteria.min_service_spaces": "VALUE_OUT_OF_RANGE",
        "criteria.min_friendly_merchants": "VALUE_OUT_OF_RANGE",
        "criteria.space_amenities[1]": "DUPLICATE_VALUE",
        "criteria.space_amenities[2]": "ENUM_VALUE_REQUIRED"}
    assert faults(space_amenities=[Amenity.REST], street_attestation=True) == {
        "criteria.space_amenities": "VALUE_OUT_OF_RANGE"}
    assert faults(street_attestation=True) == {}


def test_the_evaluation_counts_only_what_meets_each_criterion_and_keeps_the_evidence():
    results = evaluate(
        CRITERIA,
        spaces=[{"id": "s1", "name": "驿站", "amenities": ["REST", "DRINKING_WATER"],
                 "position": 4},
                {"id": "s2", "name": "小驿站", "amenities": ["REST"], "position": 5}],
        merchants=[{"id": "m1", "name": "面馆", "position": 9}], signatures=[],
        attestation="")
    assert [(r["criterion"], r["found"], r["required"], r["met"]) for r in results] == [
        ("SERVICE_SPACES", 1, 1, True), ("FRIENDLY_MERCHANTS", 1, 2, False),
        ("CO_BUILDING_PLEDGE", 0, 1, False)]
    assert results[0]["evidence"] == [{"kind": "service_space", "id": "s1", "name": "驿站",
                                       "source": "identity", "position": 4}]


def test_a_mark_is_awarded_only_when_every_criterion_is_met_then_withdrawn():
    mark = FriendlyMark(area_id="c1", area_kind="COMMUNITY", street_id="s", brand_name="荷睦",
                        attestation="", at=NOW)
    unmet = [{"criterion": "FRIENDLY_MERCHANTS", "required": 2, "found": 1, "met": False,
              "evidence": []}]
    with pytest.raises(FailedPrecondition) as refused:
        mark.award(1, CRITERIA, unmet, NOW)
    assert refused.value.reason == "FRIENDLY_MARK_CRITERIA_NOT_MET"
    assert mark.status is FriendlyMarkStatus.APPLIED
    met = [{**unmet[0], "found": 2, "met": True}]
    mark.award(1, CRITERIA, met, NOW)
    with pytest.raises(FailedPrecondition) as again:
        mark.apply_again("荷睦", "", NOW)
    assert again.value.reason == "FRIENDLY_MARK_AWARDED"
    mark.withdraw("驿站关闭", NOW)
    assert (mark.status, mark.withdrawal_reason) == (FriendlyMarkStatus.WITHDRAWN, "驿站关闭")
    mark.apply_again("荷睦", "大门开放", NOW)
    assert (mark.status, mark.results, mark.attestation) == (
        FriendlyMarkStatus.APPLIED, [], "大门开放")
