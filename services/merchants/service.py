"""What makes merchants a Qiji service: its application, servicers, roles and background
work (followers of identity and badges, the lapse job, the snapshot catch-up)."""

from __future__ import annotations

from typing import Any

from services.merchants.application import MerchantsApplication
from services.merchants.grpc_api import ACCESS, add_servicers
from services.merchants.public_events import CATALOGUE as PUBLIC_EVENTS
from shared.background import PeriodicJob
from shared.config import Settings
from shared.followers import Follower, GrpcFeed
from shared.grpc.server import ServiceSpec
from shared.snapshot_catch_up import SnapshotCatchUp


class LapseJob(PeriodicJob[MerchantsApplication]):
    """Lapses codes that expired unredeemed, giving their quota back. Driven by the log (the
    open claims view), not by timers, so a restart loses nothing; a lapse is an ordinary
    command, so two replicas running it at once store each lapse once."""

    upstream = "clock"
    job, done, counted = "lapse_job", "lapse_job.lapsed", "codes"
    principal, rpc = "merchants-lapse-job", "LapseExpiredCodes"

    def __init__(self, app: MerchantsApplication, every_seconds: float = 5.0):
        super().__init__(app, every_seconds)

    def round(self) -> int:
        lapsed = 0
        for perk_id in sorted(set(self.app.views.expired_claims(self.app.clock()).values())):
            lapsed += self.app.lapse_expired(perk_id)
        return lapsed


def make_followers(app: MerchantsApplication, settings: Settings) -> list[Any]:
    """The follower of identity's feed and the views the application made from its feeds,
    the follower of badges' (which only reacts), the lapse job, and the job that takes the
    perks' snapshots that saves did not."""
    badges = Follower(app, GrpcFeed.of("badges", settings),
                      app.follow_badges, topics=MerchantsApplication.BADGES_TOPICS)
    return [app.identity_follower, badges, LapseJob(app), SnapshotCatchUp(app), app.directory,
            app.space_map, app.badge_classes]


SPEC = ServiceSpec(name="merchants", make_app=MerchantsApplication, add_servicers=add_servicers,
                   access=ACCESS, make_followers=make_followers,
                   public_events=PUBLIC_EVENTS)
