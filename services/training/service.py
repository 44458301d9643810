"""What makes training a Qiji service: its application, servicers, roles and followers."""

from __future__ import annotations

from typing import Any

from services.training.application import TrainingApplication
from services.training.grpc_api import ACCESS, add_servicers
from services.training.public_events import CATALOGUE as PUBLIC_EVENTS
from shared.config import Settings
from shared.grpc.server import ServiceSpec


def make_followers(app: TrainingApplication, settings: Settings) -> list[Any]:
    """What the application made from its feeds, kept close behind in the background."""
    return [app.identity_follower, app.directory]


SPEC = ServiceSpec(name="training", make_app=TrainingApplication, add_servicers=add_servicers,
                   access=ACCESS, make_followers=make_followers,
                   public_events=PUBLIC_EVENTS)
