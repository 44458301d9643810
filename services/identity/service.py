"""What makes identity a Qiji service: its application, servicers and access table, and the
riders' records and partners' contributions it keeps from the other services' feeds."""

from __future__ import annotations

from typing import Any

from services.identity.application import IdentityApplication
from services.identity.grpc_api import ACCESS, add_servicers
from services.identity.partners import SOURCES as PARTNER_SOURCES
from services.identity.partners import PartnerContributions
from services.identity.public_events import CATALOGUE as PUBLIC_EVENTS
from services.identity.rider_record import SOURCES, RiderRecords
from shared.config import Settings
from shared.followers import Follower, GrpcFeed
from shared.grpc.server import ServiceSpec


def make_followers(app: Any, settings: Settings) -> list[Any]:
    app.records = RiderRecords({name: GrpcFeed.of(name, settings) for name in SOURCES},
                               check_mac=app.event_mac.check, master_key=app.master_key,
                               clock=app.clock)
    # What partners gave: training's and merchants' feeds again, read by a view of its own
    # (a second reader of two feeds, against one view that answers two unrelated questions).
    app.partners = PartnerContributions(
        {name: GrpcFeed.of(name, settings) for name in PARTNER_SOURCES},
        check_mac=app.event_mac.check)
    # The friendly marks' evidence: merchants' standing and co-building signatures, stored in
    # identity's own log at tracked positions (an award's evidence must outlive any view).
    app.merchants_follower = Follower(app, GrpcFeed.of("merchants", settings),
                                      app.follow_merchants,
                                      topics=IdentityApplication.MERCHANTS_TOPICS)
    app.governance_follower = Follower(app, GrpcFeed.of("governance", settings),
                                       app.follow_governance,
                                       topics=IdentityApplication.GOVERNANCE_TOPICS)
    return [app.records, app.partners, app.merchants_follower, app.governance_follower]


SPEC = ServiceSpec(name="identity", make_app=IdentityApplication, add_servicers=add_servicers,
                   access=ACCESS, make_followers=make_followers, public_events=PUBLIC_EVENTS)
