"""Events stored before business areas (商圈) existed decode as "in no area": a merchant's
Applied v2, identity's note of a merchant's standing v1, and the friendly-mark criteria's Set
v1 (the community's). Decoded through the library's mapper with Qiji's transcoder, as a
service reads its own log, from the state an older release stored."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from eventsourcing.persistence import Mapper, StoredEvent

from services.identity.domain.friendly import FriendlyMarkCriteria, MerchantStanding
from services.merchants.domain.model import Merchant
from shared.store import qiji_transcoder

AT = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
STREET = str(uuid.uuid4())
AREA = str(uuid.uuid4())


def _as_older(event: Any, class_version: int, drop: str) -> Any:
    """`event` as an older release stored it: without the field `drop`, at class_version."""
    mapper = Mapper(transcoder=qiji_transcoder())
    stored = mapper.to_stored_event(event)
    state = json.loads(stored.state)
    del state[drop]
    state["class_version"] = class_version
    older = StoredEvent(originator_id=stored.originator_id,
                        originator_version=stored.originator_version, topic=stored.topic,
                        state=json.dumps(state).encode())
    return mapper.to_domain_event(older)


def test_a_merchant_that_applied_before_business_areas_is_in_none():
    merchant = Merchant(merchant_id=str(uuid.uuid4()), name="荷花池面馆", street_id=STREET,
                        category="餐饮", latitude=31.78, longitude=119.95, address="",
                        amenities=[], opening_hours=[], business_area_id=AREA)
    applied = merchant.collect_events()[0]
    old = _as_older(applied, 2, "business_area_id")
    assert old.business_area_id == ""
    assert old.mutate(None).business_area_id == ""
    # A v1 event (no hours either) goes through both upcasters.
    state: dict[str, Any] = {"merchant_id": "m", "name": "n", "street_id": STREET}
    Merchant.Applied.upcast_v1_v2(state)
    Merchant.Applied.upcast_v2_v3(state)
    assert (state["opening_hours"], state["business_area_id"]) == ([], "")


def test_a_standing_noted_before_business_areas_is_in_none():
    standing = MerchantStanding(merchant_id="m", street_id=STREET, name="荷花池面馆",
                                business_area_id=AREA)
    old = _as_older(standing.collect_events()[0], 1, "business_area_id")
    assert old.mutate(None).business_area_id == ""


def test_criteria_set_before_business_areas_are_the_communitys():
    criteria = FriendlyMarkCriteria(criteria={"min_friendly_merchants": 1}, at=AT,
                                    area_kind="COMMUNITY")
    assert criteria.id == FriendlyMarkCriteria.ID  # the id the community's always had
    old = _as_older(criteria.collect_events()[0], 1, "area_kind")
    assert old.mutate(None).area_kind == "COMMUNITY"
    business = FriendlyMarkCriteria(criteria={}, at=AT, area_kind="BUSINESS_AREA")
    assert business.id not in (FriendlyMarkCriteria.ID, None)

