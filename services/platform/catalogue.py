"""Every public event type of Qiji and the service that publishes it: the five services' own
contracts (services/<service>/public_events.py), gathered for the gateway."""

from __future__ import annotations

from services.badges.public_events import CATALOGUE as BADGES
from services.governance.public_events import CATALOGUE as GOVERNANCE
from services.identity.public_events import CATALOGUE as IDENTITY
from services.merchants.public_events import CATALOGUE as MERCHANTS
from services.training.public_events import CATALOGUE as TRAINING
from shared.errors import FieldViolation, InvalidArgument
from shared.public_feed import PublicCatalogue

CATALOGUES: tuple[PublicCatalogue, ...] = (IDENTITY, TRAINING, MERCHANTS, BADGES, GOVERNANCE)
SERVICES = tuple(c.service for c in CATALOGUES)
# Public type name -> the service that publishes it.
PUBLISHER = {name: c.service for c in CATALOGUES for name in c.types}


def types_by_service(types: list[str]) -> dict[str, list[str]]:
    """Which services to ask for which types (every service, all its types, when none are
    named); a type nobody publishes is an invalid argument."""
    unknown = sorted({t for t in types if t not in PUBLISHER})
    if unknown:
        raise InvalidArgument([FieldViolation(
            "types", f"{unknown} are not public event types; see services/platform/event-feed.md")])
    if not types:
        return {service: [] for service in SERVICES}
    wanted: dict[str, list[str]] = {}
    for t in dict.fromkeys(types):
        wanted.setdefault(PUBLISHER[t], []).append(t)
    return wanted
