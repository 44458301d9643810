"""A care campaign's snapshots, on both stores, behind the guard: a campaign of many packages
reads first from its newest snapshot after a restart, and answers as its events say;
`qiji audit verify` holds the snapshot to the events, and the catch-up job takes one that a
save did not."""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

import pytest
from qiji.merchants.v1 import merchants_service_pb2 as mpb

from shared import audit
from shared.snapshot_catch_up import SnapshotCatchUp
from shared.store.application import forget_older
from shared.store.cache import project
from tests.inprocess import InProcessQiji
from tests.snapshots import events_read
from tests.tenancy_world import build, rid


@pytest.fixture
def qiji(small_steps: InProcessQiji) -> InProcessQiji:
    return small_steps


class Winter:
    """A street office's campaign: packages allocated, most handed over, a sponsor's gift."""

    def __init__(self, q: InProcessQiji):
        self.q = q
        self.t = build(q).tenants["a"]
        self.office = self.t.tokens["street_office"]
        self.riders = self.t.verified_riders(q, 9, "W", 135_0000_0000)
        self.id = q.ok("merchants", "CreateCareCampaign", mpb.CreateCareCampaignRequest(
            request_id=rid(), street_id=self.t.street, name="冬日关爱礼包", stock=20),
            self.office).campaign.campaign_id
        self.ident = uuid.UUID(self.id)
        self.app: Any = q.apps["merchants"]
        for n, rider in enumerate(self.riders):  # version 1 + 9 allocations + 6 hand-overs
            q.ok("merchants", "AllocateCarePackage", mpb.AllocateCarePackageRequest(
                request_id=rid(), campaign_id=self.id, rider_id=rider), self.office)
            if n % 3:
                q.ok("merchants", "RecordHandOver", mpb.RecordHandOverRequest(
                    request_id=rid(), campaign_id=self.id, rider_id=rider,
                    handed_over_by="社工小王"), self.office)
        q.ok("merchants", "RecordCareDonation", mpb.RecordCareDonationRequest(
            request_id=rid(), campaign_id=self.id, sponsor_id=self.t.merchant, packages=2),
            self.office)  # version 17
        self.app.settle_snapshots()

    def campaign(self) -> Any:
        return self.q.ok("merchants", "GetCareCampaign", mpb.GetCareCampaignRequest(
            campaign_id=self.id), self.office)

    def stored(self) -> list[int]:
        return [s.originator_version for s in self.app.snapshots.get(self.ident)]

    def restart(self) -> None:
        with contextlib.suppress(KeyError):
            self.app.repository.cache.get(self.ident, evict=True)


def test_a_campaigns_first_read_after_a_restart_starts_from_its_newest_snapshot(qiji):
    winter = Winter(qiji)
    assert winter.stored() == [16]
    before = winter.campaign()
    winter.restart()
    reads = events_read(winter.app, winter.ident)
    assert winter.campaign() == before
    assert reads[0] == 16 and None not in reads
    replayed = project(None, winter.app.events.get(winter.ident))
    assert list(vars(winter.app.aggregates.read_only(winter.ident)).items()) == \
        list(vars(replayed).items())


def test_verify_and_the_catch_up_take_the_campaigns_snapshot_as_a_perks(qiji):
    winter = Winter(qiji)
    verdict = list(audit.verify(winter.app))[-1]
    assert (verdict.intact, verdict.snapshots_checked, verdict.snapshot_problems) == \
        (True, 1, [])
    forget_older(winter.app.snapshots.recorder, winter.ident, 10**9)
    assert SnapshotCatchUp(winter.app).run_once() == 1
    assert winter.stored() == [17]
