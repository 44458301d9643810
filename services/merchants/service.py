"""What makes merchants a Qiji service: its application, servicers, roles and background
work (followers of identity and badges, and the lapse job)."""

from __future__ import annotations

import threading
from typing import Any

import structlog

from services.merchants.application import MerchantsApplication
from services.merchants.badge_classes import BadgeClassDirectory
from services.merchants.grpc_api import ACCESS, add_servicers
from services.merchants.nearby import ServiceSpaceMap
from services.merchants.public_events import CATALOGUE as PUBLIC_EVENTS
from shared.config import Settings
from shared.context import Actor, RequestContext, acting_as
from shared.followers import Follower, GrpcFeed
from shared.grpc.server import ServiceSpec
from shared.store import STORE_DOWN_ERRORS, OutageNotice
from shared.tenancy import TenancyDirectory

log = structlog.get_logger(__name__)


class LapseJob:
    """Lapses codes that expired unredeemed, giving their quota back. Driven by the log (the
    open claims view), not by timers, so a restart loses nothing; a lapse is an ordinary
    command, so two replicas running it at once store each lapse once."""

    upstream = "clock"

    def __init__(self, app: MerchantsApplication, every_seconds: float = 5.0):
        self.app = app
        self.every = every_seconds
        self.actor = Actor(principal="merchants-lapse-job", roles=frozenset({"service"}))
        self._outage = OutageNotice("lapse_job")

    def run_once(self) -> int:
        lapsed = 0
        with acting_as(RequestContext(actor=self.actor, rpc="LapseExpiredCodes")):
            for perk_id in sorted(set(self.app.views.expired_claims(self.app.clock()).values())):
                lapsed += self.app.lapse_expired(perk_id)
        return lapsed

    def run_forever(self, stopping: threading.Event) -> None:
        while not stopping.wait(self.every):
            try:
                if lapsed := self.run_once():
                    log.info("lapse_job.lapsed", codes=lapsed)
                self._outage.worked()
            except STORE_DOWN_ERRORS as error:  # restarting: the next tick will do
                self._outage.failed(error)
            except Exception:
                log.exception("lapse_job.failed")


def make_followers(app: Any, settings: Settings) -> list[Any]:
    identity_feed = GrpcFeed.of("identity", settings)
    identity = Follower(app, identity_feed,
                        app.follow_identity, topics=MerchantsApplication.IDENTITY_TOPICS)
    badges = Follower(app, GrpcFeed.of("badges", settings),
                      app.follow_badges, topics=MerchantsApplication.BADGES_TOPICS)
    app.identity_follower = identity
    app.badge_classes = BadgeClassDirectory(GrpcFeed.of("badges", settings))
    app.directory = TenancyDirectory(identity_feed)
    app.space_map = ServiceSpaceMap(identity_feed)
    return [identity, badges, LapseJob(app), app.directory, app.space_map, app.badge_classes]


SPEC = ServiceSpec(name="merchants", make_app=MerchantsApplication, add_servicers=add_servicers,
                   access=ACCESS, make_followers=make_followers,
                   public_events=PUBLIC_EVENTS)
