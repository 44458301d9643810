"""What makes identity a Qiji service: its application, servicers and access table, and the
riders' records and partners' contributions it keeps from the other services' feeds."""

from __future__ import annotations

from typing import Any

from services.identity.application import IdentityApplication
from services.identity.grpc_api import ACCESS, add_servicers
from services.identity.public_events import CATALOGUE as PUBLIC_EVENTS
from shared.config import Settings
from shared.grpc.server import ServiceSpec


def make_followers(app: IdentityApplication, settings: Settings) -> list[Any]:
    """What the application made from its feeds (riders' records, partners' contributions,
    the followers of merchants' and governance's), kept close behind in the background."""
    return [app.records, app.partners, app.merchants_follower, app.governance_follower]


SPEC = ServiceSpec(name="identity", make_app=IdentityApplication, add_servicers=add_servicers,
                   access=ACCESS, make_followers=make_followers, public_events=PUBLIC_EVENTS)
