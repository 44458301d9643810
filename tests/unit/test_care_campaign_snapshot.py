"""A care campaign's snapshot (shared/snapshots.py): what it holds, read back through the store's
own transcoder, is the campaign its events made — every attribute, in the same order, each
package's allocation and hand-over, the allocation order, the donations — whatever the
history."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.merchants.domain.model import CareCampaign
from tests.snapshots import through_the_store

START = datetime(2026, 12, 1, 8, tzinfo=UTC)
RIDERS = [str(uuid.UUID(int=n)) for n in range(1, 40)]

# A step of a campaign's life: ("allocate", which rider, seconds later), ("hand", which
# allocation), ("donate", packages, items).
steps = st.lists(st.one_of(
    st.tuples(st.just("allocate"), st.integers(0, len(RIDERS) - 1), st.integers(0, 7200)),
    st.tuples(st.just("hand"), st.integers(0, 60)),
    st.tuples(st.just("donate"), st.integers(0, 5), st.lists(st.tuples(
        st.sampled_from(["大米", "食用油", "雨衣 \"加厚\""]), st.integers(1, 9)), max_size=3))),
    max_size=80)


def new_campaign() -> CareCampaign:
    return CareCampaign(
        street_id=str(uuid.uuid4()), name="冬日关爱礼包", description="给骑手的冬日礼包",
        stock=10, contents=[{"item": "保温杯", "quantity": 1}],
        rules=[{"name": "在岗骑手", "kind": "RIDER_ACTIVE"},
               {"name": "新骑手", "kind": "NEW_RIDER", "days": 90}], rules_version=3)


def lived(history: list[tuple[Any, ...]]) -> CareCampaign:
    campaign = new_campaign()
    at = START
    for n, step in enumerate(history):
        if step[0] == "allocate":
            at += timedelta(seconds=step[2])
            rider = RIDERS[step[1]]
            if rider not in campaign.allocations and campaign.remaining > 0:
                campaign.allocate(rider, at)
        elif step[0] == "hand":
            waiting = sorted(r for r, a in campaign.allocations.items()
                             if a["handed_over_at"] is None)
            if waiting:
                campaign.hand_over(waiting[step[1] % len(waiting)], "社工小王",
                                   "street-office", at + timedelta(minutes=5))
        else:
            campaign.record_donation(f"donation-{n}", str(uuid.UUID(int=1000 + n)), step[1],
                                     [{"item": i, "quantity": q} for i, q in step[2]],
                                     "street-office", at)
    campaign.collect_events()
    return campaign


@settings(max_examples=150, deadline=None)
@given(steps)
def test_a_snapshot_reads_back_as_the_campaign_its_events_made(history: list[tuple[Any, ...]]):
    campaign = lived(history)
    back = through_the_store(campaign)
    assert list(vars(back)) == list(vars(campaign))
    assert vars(back) == vars(campaign)
    # And it goes on as the campaign would: the office's list in allocation order, the count
    # handed over, the packages left.
    assert [back.allocated_at_order(n) for n in range(len(back.allocations))] == \
        [campaign.allocated_at_order(n) for n in range(len(campaign.allocations))]
    assert (back.handed_over, back.remaining) == (campaign.handed_over, campaign.remaining)


def test_a_field_added_without_a_snapshot_form_fails_the_snapshot_not_silently():
    campaign = lived([("allocate", 0, 5)])
    campaign.__dict__["new_field"] = {"a": 1}
    with pytest.raises(TypeError, match="new_field"):
        CareCampaign.Snapshot.take(campaign)
