"""What makes training a Qiji service: its application, servicers, roles and followers."""

from __future__ import annotations

from typing import Any

from services.training.application import TrainingApplication
from services.training.grpc_api import ACCESS, add_servicers
from services.training.public_events import CATALOGUE as PUBLIC_EVENTS
from shared.config import Settings
from shared.followers import Follower, GrpcFeed
from shared.grpc.server import ServiceSpec
from shared.tenancy import TenancyDirectory


def make_followers(app: Any, settings: Settings) -> list[Follower]:
    feed = GrpcFeed.of("identity", settings)
    follower = Follower(app, feed, app.follow_identity, topics=TrainingApplication.IDENTITY_TOPICS)
    app.identity_follower = follower
    app.directory = TenancyDirectory(feed)
    return [follower, app.directory]


SPEC = ServiceSpec(name="training", make_app=TrainingApplication, add_servicers=add_servicers,
                   access=ACCESS, make_followers=make_followers,
                   public_events=PUBLIC_EVENTS)
