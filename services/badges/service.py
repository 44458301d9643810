"""What makes badges a Qiji service: its application, servicers, roles and background work
(followers of identity, training and governance, and the expiry job)."""

from __future__ import annotations

import threading
from typing import Any

import structlog

from services.badges.application import REEVALUATION_BATCH, BadgesApplication
from services.badges.grpc_api import ACCESS, add_servicers
from services.badges.public_events import CATALOGUE as PUBLIC_EVENTS
from shared.config import Settings
from shared.context import Actor, RequestContext, acting_as
from shared.followers import Follower, GrpcFeed
from shared.grpc.server import ServiceSpec
from shared.store import STORE_DOWN_ERRORS, OutageNotice
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
        self._outage = OutageNotice("expiry_job")

    def run_once(self) -> int:
        with acting_as(RequestContext(actor=self.actor, rpc="ExpireAwards")):
            return self.app.expire_due()

    def run_forever(self, stopping: threading.Event) -> None:
        while not stopping.wait(self.every):
            try:
                if expired := self.run_once():
                    log.info("expiry_job.expired", awards=expired)
                self._outage.worked()
            except STORE_DOWN_ERRORS as error:  # restarting: the next tick will do
                self._outage.failed(error)
            except Exception:
                log.exception("expiry_job.failed")


class ReevaluationJob:
    """Evaluates every rider against a badge class's new criteria (services/badges/domain/
    model.py Reevaluation): woken by the command that created or revised the class, and every
    `every_seconds` to resume a job a restart interrupted. Its progress is in the log, so a
    restart goes on from the last saved batch."""

    upstream = "reevaluation"

    def __init__(self, app: BadgesApplication, every_seconds: float = 30.0,
                 batch: int = REEVALUATION_BATCH):
        self.app = app
        self.every = every_seconds
        self.batch = batch
        self.actor = Actor(principal="badges-reevaluation-job", roles=frozenset({"service"}))
        self._outage = OutageNotice("reevaluation_job")

    def run_once(self) -> int:
        with acting_as(RequestContext(actor=self.actor, rpc="ReevaluateRiders")):
            return self.app.run_reevaluations(self.batch)

    def run_forever(self, stopping: threading.Event) -> None:
        idle = self.every  # at start: resume whatever a restart interrupted
        while not stopping.is_set():
            # Short waits: a shutdown is not held up by a long one.
            if not self.app.reevaluation_wanted.wait(0.5):
                idle += 0.5
                if idle < self.every:
                    continue
            idle = 0.0
            try:
                if awarded := self.run_once():
                    log.info("reevaluation_job.awarded", awards=awarded)
                self._outage.worked()
            except STORE_DOWN_ERRORS as error:  # restarting: the next tick will do
                self._outage.failed(error)
                stopping.wait(1.0)
            except Exception:
                log.exception("reevaluation_job.failed")
                stopping.wait(1.0)


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
            ExpiryJob(app), ReevaluationJob(app)]


SPEC = ServiceSpec(name="badges", make_app=BadgesApplication, add_servicers=add_servicers,
                   access=ACCESS, make_followers=make_followers,
                   public_events=PUBLIC_EVENTS)
