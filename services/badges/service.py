"""What makes badges a Qiji service: its application, servicers, roles and background work
(followers of identity, training and governance, and the expiry job)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from services.badges.application import REEVALUATION_BATCH, BadgesApplication
from services.badges.grpc_api import ACCESS, add_servicers
from services.badges.public_events import CATALOGUE as PUBLIC_EVENTS
from shared.background import PeriodicJob
from shared.config import Settings
from shared.followers import Follower, GrpcFeed, Policy
from shared.grpc.server import ServiceSpec


class ExpiryJob(PeriodicJob[BadgesApplication]):
    """Stores Expired for awards past their expiry date; driven by the log, so restarts lose
    nothing, and each expiry is an ordinary command (stored once)."""

    upstream = "clock"
    job, done, counted = "expiry_job", "expiry_job.expired", "awards"
    principal, rpc = "badges-expiry-job", "ExpireAwards"

    def __init__(self, app: BadgesApplication, every_seconds: float = 30.0):
        super().__init__(app, every_seconds)

    def round(self) -> int:
        return self.app.expire_due()


class ReevaluationJob(PeriodicJob[BadgesApplication]):
    """Evaluates every rider against a badge class's new criteria (services/badges/domain/
    model.py Reevaluation): woken by the command that created or revised the class, and every
    `every_seconds` to resume a job a restart interrupted (at once when the process starts).
    Its progress is in the log, so a restart goes on from the last saved batch."""

    upstream = "reevaluation"
    job, done, counted = "reevaluation_job", "reevaluation_job.awarded", "awards"
    principal, rpc = "badges-reevaluation-job", "ReevaluateRiders"
    at_start = True

    def __init__(self, app: BadgesApplication, every_seconds: float = 30.0,
                 batch: int = REEVALUATION_BATCH):
        super().__init__(app, every_seconds, wake=app.reevaluation_wanted)
        self.batch = batch

    def round(self) -> int:
        return self.app.run_reevaluations(self.batch)


def make_followers(app: BadgesApplication, settings: Settings) -> list[Any]:
    """The follower of identity's feed and the directory the application made, the followers
    of training's and governance's (which only react), and the two periodic jobs."""
    def follower(upstream: str, policy: Policy, topics: Sequence[str]) -> Follower:
        return Follower(app, GrpcFeed.of(upstream, settings), policy, topics=topics)
    return [app.identity_follower, app.directory,
            follower("training", app.follow_training, BadgesApplication.TRAINING_TOPICS),
            follower("governance", app.follow_governance, BadgesApplication.GOVERNANCE_TOPICS),
            ExpiryJob(app), ReevaluationJob(app)]


SPEC = ServiceSpec(name="badges", make_app=BadgesApplication, add_servicers=add_servicers,
                   access=ACCESS, make_followers=make_followers,
                   public_events=PUBLIC_EVENTS)
