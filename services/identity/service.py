"""What makes identity a Qiji service: its application, servicers and access table."""

from services.identity.application import IdentityApplication
from services.identity.grpc_api import ACCESS, add_servicers
from services.identity.public_events import CATALOGUE as PUBLIC_EVENTS
from shared.grpc.server import ServiceSpec

SPEC = ServiceSpec(name="identity", make_app=IdentityApplication, add_servicers=add_servicers,
                   access=ACCESS, public_events=PUBLIC_EVENTS)
