"""A perk's quota ledger (services/merchants/domain/ledger.py) answers every rule as the
ledger of dicts it replaced did, whatever the order of claims, redemptions, lapses and
reversals and however the replicas' clocks disagree; and a command's copy of a perk shares its
ledger instead of copying every code ever issued, without the copy's claims reaching the
cached perk."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.merchants.domain.model import PerkOffer
from services.merchants.domain.values import LimitPeriod, period_start
from shared.store.cache import copy_aggregate

START = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)
RIDERS = ["r1", "r2", "r3"]


def new_offer(period: LimitPeriod, ttl_minutes: int = 30, days: int = 40,
              quota: int = 1_000) -> PerkOffer:
    offer = PerkOffer(
        merchant_id="m", title="免费饮水", kind="FREE_ITEM", percent_off=0, amount_off_fen=0,
        free_item="一瓶水", eligibility="ANY_VERIFIED_RIDER", badge_class_id="",
        total_quota=quota, per_rider_limit=1_000, limit_period=period.value,
        valid_from=START - timedelta(days=1), valid_until=START + timedelta(days=days),
        code_ttl_minutes=ttl_minutes)
    offer.publish()
    return offer


class DictLedger:
    """The ledger as it was (dicts of every code, each question a walk over all of them): the
    oracle the new one is held to."""

    def __init__(self, period: LimitPeriod):
        self.period = period
        self.outstanding: dict[str, dict[str, Any]] = {}
        self.redeemed: dict[str, dict[str, Any]] = {}

    def issued(self, claim_id: str, rider_id: str, at: datetime, expires_at: datetime) -> None:
        self.outstanding[claim_id] = {"rider_id": rider_id, "claimed_at": at,
                                      "expires_at": expires_at}

    def redeemed_code(self, claim_id: str) -> None:
        self.redeemed[claim_id] = self.outstanding.pop(claim_id)

    def returned(self, claim_id: str) -> None:
        self.outstanding.pop(claim_id, None)
        self.redeemed.pop(claim_id, None)

    def remaining(self, quota: int) -> int:
        return quota - len(self.outstanding) - len(self.redeemed)

    def claims_in_period(self, rider_id: str, at: datetime) -> int:
        since = period_start(self.period, at)
        return sum(1 for c in (*self.outstanding.values(), *self.redeemed.values())
                   if c["rider_id"] == rider_id and c["claimed_at"] >= since)

    def expired(self, at: datetime) -> set[str]:
        return {cid for cid, c in self.outstanding.items() if c["expires_at"] <= at}


# A step: claim (a rider, seconds from START: replicas' clocks are not in order), redeem or
# return (lapse or reverse) the n-th code issued so far, or ask about a moment.
steps = st.lists(st.one_of(
    st.tuples(st.just("claim"), st.sampled_from(RIDERS), st.integers(0, 60 * 60 * 24 * 45)),
    st.tuples(st.just("redeem"), st.integers(0, 40)),
    st.tuples(st.just("return"), st.integers(0, 40)),
), max_size=60)


@settings(max_examples=300, deadline=None)
@given(period=st.sampled_from(list(LimitPeriod)), ttl=st.integers(1, 7 * 24 * 60),
       history=steps, asked=st.lists(st.integers(-3600, 60 * 60 * 24 * 50), min_size=1,
                                     max_size=4))
def test_the_ledger_answers_every_rule_as_the_dicts_did(period: LimitPeriod, ttl: int,
                                                        history: list[tuple[Any, ...]],
                                                        asked: list[int]) -> None:
    offer, oracle = new_offer(period, ttl), DictLedger(period)
    issued: list[str] = []
    for step in history:
        if step[0] == "claim":
            claim_id, at = str(uuid.uuid4()), START + timedelta(seconds=step[2])
            expires_at = offer.issue(claim_id, step[1], at)
            oracle.issued(claim_id, step[1], at, expires_at)
            issued.append(claim_id)
        elif issued:
            claim_id = issued[step[1] % len(issued)]
            if step[0] == "redeem":
                if claim_id in oracle.outstanding:
                    offer.note_redeemed(claim_id, START)
                    oracle.redeemed_code(claim_id)
            elif claim_id in oracle.outstanding or claim_id in oracle.redeemed:
                offer.note_returned(claim_id, "LAPSED", START)
                oracle.returned(claim_id)
        assert offer.remaining == oracle.remaining(offer.total_quota)
    for seconds in asked:
        at = START + timedelta(seconds=seconds)
        assert set(offer.expired_outstanding(at)) == oracle.expired(at)
        for rider in RIDERS:
            assert offer.claims_in_period(rider, at) == oracle.claims_in_period(rider, at)
    # Soonest first, so that a lapse sweep gives back the oldest codes' quota first.
    expiries = [offer.ledger.outstanding[c].expires_at
                for c in offer.expired_outstanding(START + timedelta(days=60))]
    assert expiries == sorted(expiries)
    assert len(expiries) == len(oracle.outstanding)


def test_a_perk_rebuilt_from_its_events_has_the_same_ledger() -> None:
    offer = new_offer(LimitPeriod.DAY)
    codes = [str(uuid.uuid4()) for _ in range(30)]
    for n, claim_id in enumerate(codes):
        offer.issue(claim_id, RIDERS[n % 3], START + timedelta(minutes=(n * 37) % 50))
    for claim_id in codes[:10]:
        offer.note_redeemed(claim_id, START)
    for claim_id in (*codes[5:8], *codes[20:25]):
        offer.note_returned(claim_id, "REVERSED", START)
    rebuilt = None
    for stored in offer.collect_events():
        rebuilt = stored.mutate(rebuilt)
    assert isinstance(rebuilt, PerkOffer)
    assert rebuilt.ledger == offer.ledger
    assert (rebuilt.remaining, len(rebuilt.ledger.outstanding), len(rebuilt.ledger.redeemed)) \
        == (1_000 - 22, 15, 7)


def test_a_commands_copy_shares_the_ledger_and_its_claims_stay_its_own() -> None:
    cached = new_offer(LimitPeriod.DAY)
    codes = [str(uuid.uuid4()) for _ in range(500)]
    for n, claim_id in enumerate(codes):
        cached.issue(claim_id, RIDERS[n % 3], START + timedelta(seconds=n))
    cached.collect_events()
    copy = copy_aggregate(cached)
    # Shared as it is: a copy costs the same at 500 codes as at none.
    assert copy.ledger is cached.ledger
    copy.issue(str(uuid.uuid4()), "r1", START + timedelta(minutes=10))
    copy.note_redeemed(codes[0], START)
    copy.note_returned(codes[3], "LAPSED", START)  # r1's, as codes[0] is
    assert (copy.remaining, len(copy.ledger.redeemed)) == (500, 1)
    assert copy.claims_in_period("r1", START) == 167
    assert copy.expired_outstanding(START + timedelta(days=1))[:2] == codes[1:3]
    # The cached perk, which queries render meanwhile, is as it was.
    assert (cached.remaining, len(cached.ledger.redeemed)) == (500, 0)
    assert cached.claims_in_period("r1", START) == 167
    assert {codes[0], codes[3]} <= set(cached.ledger.outstanding)
    assert cached.expired_outstanding(START + timedelta(days=1))[:2] == codes[:2]


def test_a_code_issued_twice_is_refused_rather_than_counted_twice() -> None:
    offer = new_offer(LimitPeriod.DAY)
    offer.issue("c1", "r1", START)
    try:
        offer.issue("c1", "r2", START)
    except ValueError:
        pass
    else:
        raise AssertionError("a code already in the ledger was issued again")
    assert offer.remaining == 999


def test_a_claim_at_the_first_moment_of_the_period_counts_in_it() -> None:
    offer = new_offer(LimitPeriod.DAY)
    midnight = period_start(LimitPeriod.DAY, START + timedelta(days=1))  # the city's midnight
    offer.issue("before", "r1", midnight - timedelta(microseconds=1))
    offer.issue("at", "r1", midnight)
    offer.issue("after", "r1", midnight + timedelta(hours=3))
    assert offer.claims_in_period("r1", midnight + timedelta(hours=5)) == 2
    assert offer.claims_in_period("r1", midnight - timedelta(hours=1)) == 3
    # And a code that expires at the moment asked has expired (as the dicts said: <=).
    assert offer.expired_outstanding(offer.ledger.outstanding["at"].expires_at) == [
        "before", "at"]


def test_codes_expiring_within_one_minute_expire_each_at_its_own_second() -> None:
    offer = new_offer(LimitPeriod.DAY, ttl_minutes=30)
    offer.issue("late", "r1", START + timedelta(seconds=50))
    offer.issue("early", "r2", START + timedelta(seconds=10))
    offer.issue("next", "r3", START + timedelta(seconds=70))
    expiry = START + timedelta(minutes=30)
    assert offer.expired_outstanding(expiry + timedelta(seconds=9)) == []
    assert offer.expired_outstanding(expiry + timedelta(seconds=30)) == ["early"]
    assert offer.expired_outstanding(expiry + timedelta(seconds=50)) == ["early", "late"]
    offer.note_redeemed("early", START)
    assert offer.expired_outstanding(expiry + timedelta(minutes=5)) == ["late", "next"]
    offer.note_returned("late", "LAPSED", START)
    offer.note_returned("next", "LAPSED", START)
    assert offer.expired_outstanding(expiry + timedelta(days=9)) == []
    assert not offer.ledger.expiries.order and not offer.ledger.expiries.minutes
