"""What makes badges a Qiji service: its application, servicers, roles and background work
(followers of identity, training and governance, and the expiry job)."""

from __future__ import annotations

import threading
from typing import Any

import structlog

from services.badges.application import BadgesApplication
from services.badges.grpc_api import ACCESS, add_servicers
from services.badges.public_events import CATALOGUE as PUBLIC_EVENTS
from shared.config import Settings
from shared.context import Actor, RequestContext, acting_as
from shared.followers import Follower, GrpcFeed
from shared.grpc.server import ServiceSpec
from shared.tenancy import TenancyDirectory

log = structlog.get_logger(__name__)


class ExpiryJob:
    """Stores Expired for awards past their expiry date; driven by the log, so restarts lose
    nothing, and each expiry is an ordinary command (stored once)."""

    upstream = "clock"

    def __init__(self, app: BadgesApplication, every_seconds: float = 30.0):
        self.app = app
        self.every = every_seconds
        self.actor = Actor(principal="badges-expiry-job", roles=frozenset({"service"}))

    def run_once(self) -> int:
        with acting_as(RequestContext(actor=self.actor, rpc="ExpireAwards")):
            return self.app.expire_due()

    def run_forever(self, stopping: threading.Event) -> None:
        while not stopping.wait(self.every):
            try:
                if expired := self.run_once():
                    log.info("expiry_job.expired", awards=expired)
            except Exception:
                log.exception("expiry_job.failed")


def make_followers(app: Any, settings: Settings) -> list[Any]:
    def feed(name: str) -> GrpcFeed:
        return GrpcFeed.of(name, settings)
    identity_feed = feed("identity")
    identity = Follower(app, identity_feed, app.follow_identity,
                        topics=BadgesApplication.IDENTITY_TOPICS)
    app.identity_follower = identity
    app.directory = TenancyDirectory(identity_feed)
    return [identity, app.directory,
            Follower(app, feed("training"), app.follow_training,
                     topics=BadgesApplication.TRAINING_TOPICS),
            Follower(app, feed("governance"), app.follow_governance,
                     topics=BadgesApplication.GOVERNANCE_TOPICS),
            ExpiryJob(app)]


SPEC = ServiceSpec(name="badges", make_app=BadgesApplication, add_servicers=add_servicers,
                   access=ACCESS, make_followers=make_followers,
                   public_events=PUBLIC_EVENTS)
