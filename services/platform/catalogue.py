"""Every public event type of Qiji and the service that publishes it: the five services' own
contracts (services/<service>/public_events.py), gathered for the gateway."""

from __future__ import annotations

from services.badges.public_events import CATALOGUE as BADGES
from services.governance.public_events import CATALOGUE as GOVERNANCE
from services.identity.public_events import CATALOGUE as IDENTITY
from services.merchants.public_events import CATALOGUE as MERCHANTS
from services.training.public_events import CATALOGUE as TRAINING
from shared.errors import FieldViolation, InvalidArgument, PermissionDenied
from shared.public_feed import PublicCatalogue

CATALOGUES: tuple[PublicCatalogue, ...] = (IDENTITY, TRAINING, MERCHANTS, BADGES, GOVERNANCE)
SERVICES = tuple(c.service for c in CATALOGUES)
# Public type name -> the service that publishes it.
PUBLISHER = {name: c.service for c in CATALOGUES for name in c.types}


def subscribed(types: list[str], subscriptions: frozenset[str]) -> list[str]:
    """The types a consumer may receive of those it asked for: all it asked for when it has no
    subscription list; otherwise what its subscriptions cover ("qiji.training.v1.*" covers a
    service's every type), and asking for any other is refused."""
    if not subscriptions:
        return types

    def covered(name: str) -> bool:
        return any(name == s or (s.endswith("*") and name.startswith(s[:-1]))
                   for s in subscriptions)
    if not types:
        allowed = [name for name in PUBLISHER if covered(name)]
        if not allowed:
            raise PermissionDenied("the consumer is subscribed to no public event type",
                                   reason="NOT_SUBSCRIBED")
        return allowed
    refused = sorted(t for t in types if t in PUBLISHER and not covered(t))
    if refused:
        raise PermissionDenied(f"not subscribed to {', '.join(refused)}", reason="NOT_SUBSCRIBED")
    return types


def types_by_service(types: list[str]) -> dict[str, list[str]]:
    """Which services to ask for which types (every service, all its types, when none are
    named); a type nobody publishes is an invalid argument."""
    unknown = sorted({t for t in types if t not in PUBLISHER})
    if unknown:
        raise InvalidArgument([FieldViolation(
            "types", f"{', '.join(unknown)}: not public event types; see "
            "services/platform/event-feed.md", "EVENT_TYPE_UNKNOWN")])
    if not types:
        return {service: [] for service in SERVICES}
    wanted: dict[str, list[str]] = {}
    for t in dict.fromkeys(types):
        wanted.setdefault(PUBLISHER[t], []).append(t)
    return wanted
