"""A perk's snapshot (shared/snapshots.py): what it holds, read back through the store's own
transcoder, is the perk its events made — every attribute, the ledger's indexes included, in
the same order — whatever the history; and when snapshots are taken."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.merchants.domain.model import PerkOffer
from shared.snapshots import MIN_STEP, STEP_SHARE, crosses_step, snapshot_step
from tests.snapshots import through_the_store

START = datetime(2026, 12, 1, 8, tzinfo=UTC)
RIDERS = [str(uuid.UUID(int=n)) for n in range(1, 6)]

# A step of a perk's life: ("issue", rider, seconds later), ("redeem", which outstanding),
# ("return", which code), ("pause",), ("publish",).
steps = st.lists(st.one_of(
    st.tuples(st.just("issue"), st.sampled_from(RIDERS), st.integers(0, 7200)),
    st.tuples(st.just("redeem"), st.integers(0, 50)),
    st.tuples(st.just("return"), st.integers(0, 50)),
    st.tuples(st.sampled_from(["pause", "publish"]))), max_size=80)


def new_perk(ttl_minutes: int = 90) -> PerkOffer:
    perk = PerkOffer(merchant_id=str(uuid.uuid4()), title="骑手食堂 \"午餐\"",
                     kind="FREE_ITEM", percent_off=0, amount_off_fen=0, free_item="一份午餐",
                     eligibility="ANY_VERIFIED_RIDER", badge_class_id="", total_quota=1000,
                     per_rider_limit=1000, limit_period="DAY", valid_from=START,
                     valid_until=START + timedelta(hours=30), code_ttl_minutes=ttl_minutes)
    perk.publish()
    return perk


def lived(history: list[tuple[Any, ...]]) -> PerkOffer:
    perk = new_perk()
    at = START
    for n, step in enumerate(history):
        if step[0] == "issue":
            at += timedelta(seconds=step[2])
            perk.issue(f"claim-{n}", step[1], at)
        elif step[0] == "redeem" and perk.ledger.outstanding:
            codes = sorted(perk.ledger.outstanding)
            perk.note_redeemed(codes[step[1] % len(codes)], at)
        elif step[0] == "return" and perk.ledger.in_use():
            codes = sorted([*perk.ledger.outstanding, *perk.ledger.redeemed])
            perk.note_returned(codes[step[1] % len(codes)], "lapsed", at)
        elif step[0] == "pause" and perk.status.value == "PUBLISHED":
            perk.pause()
        elif step[0] == "publish" and perk.status.value == "PAUSED":
            perk.publish()
    perk.collect_events()
    return perk


@settings(max_examples=150, deadline=None)
@given(steps)
def test_a_snapshot_reads_back_as_the_perk_its_events_made(history: list[tuple[Any, ...]]):
    perk = lived(history)
    back = through_the_store(perk)
    assert list(vars(back)) == list(vars(perk))
    assert vars(back) == vars(perk)
    # And it goes on as the perk would: the indexes agree with what the events built.
    later = perk.ledger.expired(START + timedelta(days=2))
    assert back.ledger.expired(START + timedelta(days=2)) == later
    for rider in RIDERS:
        assert back.claims_in_period(rider, START + timedelta(hours=20)) == \
            perk.claims_in_period(rider, START + timedelta(hours=20))


def test_a_snapshot_of_another_format_is_passed_over(monkeypatch: pytest.MonkeyPatch):
    snapshot = PerkOffer.Snapshot.take(lived([("issue", RIDERS[0], 5)]))
    assert snapshot.usable()
    monkeypatch.setattr(PerkOffer, "SNAPSHOT_FORMAT", PerkOffer.SNAPSHOT_FORMAT + 1)
    assert not snapshot.usable()


def test_a_field_added_without_a_snapshot_form_fails_the_snapshot_not_silently():
    perk = lived([("issue", RIDERS[0], 5)])
    perk.__dict__["new_field"] = {"a": 1}
    with pytest.raises(TypeError, match="new_field"):
        PerkOffer.Snapshot.take(perk)


def test_snapshots_come_often_while_young_and_a_sixteenth_of_the_history_apart_later():
    taken, last = [], 0
    for version in range(1, 1_200_001):
        if crosses_step(version - 1, version):
            taken.append(version)
            last = version
        # Never more events after the newest snapshot than a step: at least MIN_STEP, at
        # most about a sixteenth of the history.
        assert version - last < max(MIN_STEP, version // STEP_SHARE * 2)
    assert taken[:2] == [MIN_STEP, 2 * MIN_STEP]
    # A million events: about a hundred snapshots in all, each replacing the one before.
    assert 90 <= len(taken) <= 130
    assert snapshot_step(1_000_000) == 32_768
    # A save of several events at once that passes a step takes one.
    assert crosses_step(MIN_STEP - 2, MIN_STEP + 3) and not crosses_step(5, 9)


def test_a_service_has_a_snapshot_store_when_it_names_kinds_that_take_snapshots():
    from services.identity.application import IdentityApplication
    from services.merchants.application import MerchantsApplication
    from services.merchants.domain.model import Merchant
    from shared.store.application import StoredApplication

    assert MerchantsApplication.is_snapshotting_enabled
    assert not IdentityApplication.is_snapshotting_enabled
    with pytest.raises(TypeError, match="Merchant, which defines no Snapshot"):
        type("Wrong", (StoredApplication,), {"snapshot_kinds": (Merchant,)})
