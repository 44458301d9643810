"""The rider's record as a read model, without services: events as the feeds deliver them (MAC
and all), applied once, in order, and shown as the rider should see them at the moment asked."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from services.badges import events as badges
from services.identity.rider_record import RiderRecords
from services.merchants import events as merchants
from services.merchants.events import CodeMinter
from shared.context import Actor, RequestContext, acting_as
from shared.followers import UpstreamEvent
from shared.integrity import ALARM, EventMac
from shared.store import qiji_transcoder

KEY = os.urandom(32)
MAC = EventMac(KEY)
T0 = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
RIDER = str(uuid.uuid4())


class Feed:
    """An upstream's log in memory, read as GrpcFeed reads a FeedService."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.events: list[UpstreamEvent] = []
        self.failure = None
        self.reads = 0

    def add(self, topic: str, originator: str, version: int = 1, **state: Any) -> None:
        content = qiji_transcoder().encode({**state, "timestamp": T0})
        ident = uuid.UUID(originator)
        self.events.append(UpstreamEvent(self.name, len(self.events) + 1, ident, version, topic,
                                         MAC.seal_state(ident, version, topic, content)))

    def read(self, start: int, limit: int, topics: Any) -> list[UpstreamEvent]:
        self.reads += 1
        return [e for e in self.events if e.position >= start and e.topic in topics][:limit]

    def wait(self, timeout: float) -> None:
        pass

    @property
    def last_position(self) -> int:
        return len(self.events)


@pytest.fixture
def world() -> dict[str, Any]:
    now = [T0]
    feeds = {name: Feed(name) for name in ("training", "merchants", "badges", "governance")}
    records = RiderRecords(feeds, check_mac=MAC.check, master_key=KEY, clock=lambda: now[0])
    return {"feeds": feeds, "records": records, "now": now}


def test_an_open_code_is_shown_until_it_expires_even_before_merchants_lapses_it(world):
    m = world["feeds"]["merchants"]
    claim, nonce = str(uuid.uuid4()), CodeMinter.new_nonce()
    m.add(merchants.CLAIM_ISSUED, claim, perk_id=str(uuid.uuid4()), merchant_id=str(
        uuid.uuid4()), rider_id=RIDER, code_digest="x", code_nonce=nonce, claimed_at=T0,
        expires_at=T0 + timedelta(hours=2))
    with acting_as(RequestContext(actor=Actor("app", frozenset({"platform"})))):
        [shown] = world["records"].record(RIDER).claims
        assert shown.code == CodeMinter.display(CodeMinter(KEY).code(nonce))
        world["now"][0] = T0 + timedelta(hours=2)
        [expired] = world["records"].record(RIDER).claims
        assert (expired.status, expired.code) == ("ISSUED", "")


def test_an_auditor_reading_a_record_is_shown_no_code(world):
    m = world["feeds"]["merchants"]
    m.add(merchants.CLAIM_ISSUED, str(uuid.uuid4()), perk_id=str(uuid.uuid4()),
          merchant_id=str(uuid.uuid4()), rider_id=RIDER, code_digest="x",
          code_nonce=CodeMinter.new_nonce(), claimed_at=T0, expires_at=T0 + timedelta(hours=2))
    with acting_as(RequestContext(actor=Actor("audit", frozenset({"auditor"})))):
        [claim] = world["records"].record(RIDER).claims
    assert (claim.status, claim.code) == ("ISSUED", "")


def test_an_award_past_its_expiry_reads_expired_and_a_revoked_one_revoked(world):
    b = world["feeds"]["badges"]
    lasting, short = str(uuid.uuid4()), str(uuid.uuid4())
    for award, expires in ((lasting, None), (short, T0 + timedelta(days=1))):
        b.add(badges.BADGE_GRANTED, award, rider_id=RIDER, badge_class_id=str(uuid.uuid4()),
              criteria_version=1, kind="AUTOMATIC", evidence=[], reason="", awarded_by="x",
              awarded_at=T0, expires_at=expires)
    b.add(badges.BADGE_REVOKED, lasting, version=2, reason="r", by="x", at=T0)
    world["now"][0] = T0 + timedelta(days=2)
    statuses = {a.award_id: a.status for a in world["records"].record(RIDER).awards}
    assert statuses == {lasting: "REVOKED", short: "EXPIRED"}


def test_a_green_bee_grown_into_a_golden_bee_reads_grown_not_active(world):
    """As badges' GetAward says: the lower award on the ladder is still true, but no longer the
    rider's current step; long past its expiry date it stays GROWN."""
    b = world["feeds"]["badges"]
    green, golden = str(uuid.uuid4()), str(uuid.uuid4())
    for award in (green, golden):
        b.add(badges.BADGE_GRANTED, award, rider_id=RIDER, badge_class_id=str(uuid.uuid4()),
              criteria_version=1, kind="AUTOMATIC", evidence=[], reason="", awarded_by="x",
              awarded_at=T0, expires_at=T0 + timedelta(days=1))
    b.add(badges.BADGE_GROWN, green, version=2, award_id=golden, at=T0)
    statuses = {a.award_id: a.status for a in world["records"].record(RIDER).awards}
    assert statuses == {green: "GROWN", golden: "ACTIVE"}
    world["now"][0] = T0 + timedelta(days=2)
    statuses = {a.award_id: a.status for a in world["records"].record(RIDER).awards}
    assert statuses == {green: "GROWN", golden: "EXPIRED"}


def test_each_event_counts_once_however_often_the_record_is_read(world):
    b = world["feeds"]["badges"]
    shift = str(uuid.uuid4())
    b.add(badges.SHIFT_LOGGED, shift, rider_id=RIDER, community_id=str(uuid.uuid4()),
          activity="助老", started_at=T0, hours=Decimal("2.5"))
    b.add(badges.SHIFT_CONFIRMED, shift, version=2)
    for _ in range(3):
        record = world["records"].record(RIDER)
    assert record.confirmed_volunteer_hours == Decimal("2.5")
    assert len(record.shifts) == 1


def test_a_forged_event_stops_that_part_and_later_events_wait_behind_it(world):
    b = world["feeds"]["badges"]
    genuine, later = str(uuid.uuid4()), str(uuid.uuid4())
    for shift in (genuine, later):
        b.add(badges.SHIFT_LOGGED, shift, rider_id=RIDER, community_id=str(uuid.uuid4()),
              activity="助老", started_at=T0, hours=Decimal("1"))
    forged = b.events[0]
    b.events[0] = UpstreamEvent(forged.upstream, forged.position, forged.originator_id,
                                forged.originator_version, forged.topic,
                                forged.stored_state.replace(b'"1"', b'"9"'))
    try:
        record = world["records"].record(RIDER)
        badges_part = next(s for s in record.sources if s.service == "badges")
        assert (badges_part.current, badges_part.stopped_at) == (False, 1)
        assert record.shifts == ()
        assert ALARM.stopped_at("badges", "identity.rider-records") == 1
    finally:
        ALARM.intact("badges", "identity.rider-records")


def test_an_unknown_rider_has_an_empty_record_not_someone_elses(world):
    b = world["feeds"]["badges"]
    b.add(badges.SHIFT_LOGGED, str(uuid.uuid4()), rider_id=RIDER,
          community_id=str(uuid.uuid4()), activity="助老", started_at=T0, hours=Decimal("1"))
    record = world["records"].record(str(uuid.uuid4()))
    assert (record.shifts, record.claims, record.reports) == ((), (), ())
