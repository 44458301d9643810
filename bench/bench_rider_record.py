"""What keeping riders' records costs identity (issue 16): the read model rebuilt from the four
services' feeds when identity starts, its memory, and one rider's record read.

The feeds are in memory (each event sealed with its MAC as a service stores it), so the figures
are the read model's own, not the network's. Per rider: an enrolment and a passed completion
(training: 4 events), a claim redeemed (merchants: 2), a confirmed volunteer shift (badges: 2),
a report submitted, routed and closed (governance: 3) — 11 events.

- rebuild: events applied per second (MAC checked, decoded, applied) beside the raw baseline of
  only checking and decoding the same events (what any reader of the feeds pays);
- memory: the read model's resident growth per rider beside the stored events' own bytes;
- record: µs to answer one rider's record (caught up, rendered) beside the raw baseline of
  decoding that rider's 11 stored events."""

from __future__ import annotations

import gc
import os
import random
import statistics
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from bench.common import Figure, print_figures
from services.badges import events as badges
from services.governance import events as governance
from services.identity.rider_record import RiderRecords
from services.merchants import events as merchants
from services.training import events as training
from shared.continuity import Failure
from shared.followers import UpstreamEvent
from shared.integrity import EventMac
from shared.store import qiji_transcoder

RIDERS = int(os.environ.get("BENCH_RECORD_RIDERS", "20000"))
READS = int(os.environ.get("BENCH_RECORD_READS", "2000"))
KEY = os.urandom(32)
MAC = EventMac(KEY)
T0 = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)


class Feed:
    def __init__(self, name: str) -> None:
        self.name = name
        self.events: list[UpstreamEvent] = []
        self.failure: Failure | None = None
        self._transcoder = qiji_transcoder()

    def add(self, topic: str, originator: uuid.UUID, version: int, **state: Any) -> None:
        content = self._transcoder.encode({**state, "timestamp": T0})
        self.events.append(UpstreamEvent(self.name, len(self.events) + 1, originator, version,
                                         topic, MAC.seal_state(originator, version, topic,
                                                               content)))

    def read(self, start: int, limit: int, topics: Sequence[str], *,
             redial: bool = False) -> list[UpstreamEvent]:
        # Fresh objects, as each read of a FeedService gives: nothing decoded outlives a batch.
        return [UpstreamEvent(e.upstream, e.position, e.originator_id, e.originator_version,
                              e.topic, e.stored_state)
                for e in self.events[start - 1:start - 1 + limit]]

    def wait(self, timeout: float) -> None:
        pass

    @property
    def last_position(self) -> int:
        return len(self.events)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def build() -> tuple[dict[str, Feed], list[str], dict[str, list[UpstreamEvent]]]:
    feeds = {n: Feed(n) for n in ("training", "merchants", "badges", "governance")}
    t, m, b, g = (feeds[n] for n in ("training", "merchants", "badges", "governance"))
    course, session, perk, merchant = (uuid.uuid4() for _ in range(4))
    t.add(training.COURSE_DRAFTED, course, 1, track="SKILLS", title="安全骑行", hours=Decimal(2))
    t.add(training.SESSION_SCHEDULED, session, 1, course_id=str(course),
          service_space_id=str(uuid.uuid4()), starts_at=T0, ends_at=T0, capacity=RIDERS)
    riders, own = [], {}
    for i in range(RIDERS):
        rider = str(uuid.uuid4())
        riders.append(rider)
        start = {n: len(f.events) for n, f in feeds.items()}
        learner, claim, shift, report = (uuid.uuid4() for _ in range(4))
        t.add(training.RIDER_ENROLLED, session, 2 + 2 * i, rider_id=rider, at=T0)
        t.add(training.COMPLETION_RECORDED, session, 3 + 2 * i, rider_id=rider,
              result="PASSED", score=90)
        t.add(training.LEARNER_NOTED, learner, 1, rider_id=rider)
        t.add(training.COURSE_COMPLETED, learner, 2, course_id=str(course),
              session_id=str(session), track="SKILLS", hours=Decimal(2), result="PASSED",
              score=90, at=T0)
        m.add(merchants.CLAIM_ISSUED, claim, 1, code_digest="d", code_nonce=os.urandom(16).hex(),
              perk_id=str(perk), merchant_id=str(merchant), rider_id=rider, claimed_at=T0,
              expires_at=T0 + timedelta(hours=2))
        m.add(merchants.CLAIM_REDEEMED, claim, 2, at=T0)
        b.add(badges.SHIFT_LOGGED, shift, 1, rider_id=rider, community_id=str(merchant),
              activity="助老", started_at=T0, hours=Decimal(2))
        b.add(badges.SHIFT_CONFIRMED, shift, 2)
        g.add(governance.REPORT_SUBMITTED, report, 1, rider_id=rider, kind="EMERGENCY",
              category="FIRE", street_id=str(merchant), latitude=31.7, longitude=119.9,
              text="电动车充电起火", attachment_refs=[], observed_at=T0, submitted_at=T0)
        g.add(governance.REPORT_ROUTED, report, 2, assignments=[
            {"department_id": str(course)}], rules_version=1, rule_name="r",
            unresolved_functions=[], escalation_chain={}, at=T0)
        g.add(governance.REPORT_CLOSED, report, 3, outcome="RESOLVED", at=T0)
        own[rider] = [e for n, f in feeds.items() for e in f.events[start[n]:]]
    return feeds, riders, own


def main() -> list[Figure]:
    feeds, riders, own = build()
    events = [e for f in feeds.values() for e in f.events]
    stored = sum(len(e.stored_state) for e in events)
    transcoder = qiji_transcoder()

    started = time.perf_counter()
    for e in events:
        MAC.check(e.originator_id, e.originator_version, e.topic, e.stored_state)
        transcoder.decode(e.stored_state)
    raw_rate = len(events) / (time.perf_counter() - started)

    gc.collect()
    before = rss_bytes()
    records = RiderRecords(feeds, check_mac=MAC.check, master_key=KEY,
                           clock=lambda: T0 + timedelta(hours=1))
    started = time.perf_counter()
    records.catch_up()
    rebuild_rate = len(events) / (time.perf_counter() - started)
    gc.collect()
    grown = rss_bytes() - before

    sample = random.Random(16).sample(riders, min(READS, len(riders)))
    reads, raws = [], []
    for rider in sample:
        t0 = time.perf_counter()
        record = records.record(rider)
        reads.append((time.perf_counter() - t0) * 1e6)
        t0 = time.perf_counter()
        for e in own[rider]:
            transcoder.decode(e.stored_state)
        raws.append((time.perf_counter() - t0) * 1e6)
        assert record.reports and record.claims and record.completions
    reads.sort()
    raws.sort()

    def pct(values: list[float], p: float) -> float:
        return values[min(len(values) - 1, int(len(values) * p))]

    print(f"{RIDERS:,} riders, {len(events):,} events ({stored / 1e6:.0f} MB stored), "
          f"resident growth {grown / 1e6:.0f} MB")
    figures = [
        Figure(f"rider records rebuilt ({len(events):,} events)", rebuild_rate, raw_rate,
               "events/s", baseline_name="check+decode"),
        Figure("rider records memory per rider (bytes)", grown / RIDERS, stored / RIDERS,
               "bytes", baseline_name="stored events"),
        Figure("GetRiderRecord read model, p50 (µs)", statistics.median(reads),
               statistics.median(raws), "µs", baseline_name="decode own"),
        Figure("GetRiderRecord read model, p99 (µs)", pct(reads, 0.99), pct(raws, 0.99), "µs",
               baseline_name="decode own"),
    ]
    print_figures("A rider's own record: identity's read model of four services' feeds",
                  figures)
    return figures


if __name__ == "__main__":
    main()
