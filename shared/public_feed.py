"""The public event contract every service publishes for outside consumers (the platform
company): an explicit table from internal event topics to versioned CloudEvent types, each with
a function that builds the event's `subject` and JSON `data` from the stored event. Internal
event classes can change without breaking the contract: only the table's functions read them.

Pure Python: the gRPC servicer (shared/grpc/public_feed.py) and the gateway (services/platform)
turn a PublicEvent into the CloudEvents protobuf message."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from enum import Enum
from typing import Any

from shared.checkpoints import CHECKPOINT_TOPIC
from shared.errors import FieldViolation, InvalidArgument

SPEC_VERSION = "1.0"
DATA_CONTENT_TYPE = "application/json"
# CloudEvent ids are uuid5 of (service, aggregate id, version) under this namespace: the same
# stored event always has the same id, whoever reads it and however often.
_EVENT_ID_NAMESPACE = uuid.UUID("5d1a3c1e-2f0b-4f43-9a55-0e2b7c9d4f10")


@dataclass(frozen=True)
class Fact:
    """One stored event as a mapping function sees it: decoded (upcast) by the service's own
    mapper, with its place in the log, and the organisation the reader acts for."""

    position: int
    originator_id: uuid.UUID | str  # as the library's notifications type it (Qiji's: UUIDs)
    originator_version: int
    topic: str
    event: Any  # the domain event object
    consumer_organisation_id: str
    # Qiji's own relay: events about every platform's riders (never with personal fields).
    all_platforms: bool = False

    @property
    def time(self) -> datetime:
        return self.event.timestamp


@dataclass(frozen=True)
class Mapped:
    """What a mapping function made of a stored event: whom it is about and its public data."""

    subject: str
    data: dict[str, Any]


# A mapping function: the public form of one stored event for one consumer, or None when this
# consumer may not see it at all (e.g. another organisation's consent).
Builder = Callable[[Any, Fact], Mapped | None]


@dataclass(frozen=True)
class PublicType:
    """One published event type: its name, the internal topic it is made from, its data fields
    (documented in services/platform/event-feed.md; a test keeps them in step) and which of
    them are personal and appear only with the rider's consent."""

    name: str
    topic: str
    fields: tuple[str, ...]
    build: Builder = field(compare=False, repr=False)
    personal: tuple[str, ...] = ()


@dataclass(frozen=True)
class PublicEvent:
    """A CloudEvent 1.0, in plain values."""

    id: str
    source: str
    type: str
    time: datetime
    subject: str
    data: dict[str, Any]
    position: int
    # For an event about a rider, the platform that registered them (who may receive it).
    platform_id: str = ""


class PublicCatalogue:
    """A service's public types, keyed by name and by the internal topic each is made from.
    Every service's catalogue carries its log's signed checkpoints too (`checkpoint_type`): a
    log without outside witnesses could be rewritten unseen."""

    def __init__(self, service: str, types: Iterable[PublicType]):
        self.service = service
        self.source = f"/qiji/{service}"
        self.types = {t.name: t for t in [*types, checkpoint_type(service)]}
        self._by_topic: dict[str, list[PublicType]] = {}
        for t in self.types.values():
            if not t.name.startswith(f"qiji.{service}.v"):
                raise ValueError(f"{t.name} is not a type of {service}")
            self._by_topic.setdefault(t.topic, []).append(t)

    def topics_for(self, names: Sequence[str], *, field_name: str = "types") -> list[str]:
        """The internal topics to read for the wanted types (all when none are named)."""
        unknown = [n for n in names if n not in self.types]
        if unknown:
            raise InvalidArgument([FieldViolation(
                field_name, f"{', '.join(sorted(unknown))}: not public types of {self.service}",
                "EVENT_TYPE_UNKNOWN")])
        wanted = names or list(self.types)
        return sorted({self.types[n].topic for n in wanted})

    def map(self, app: Any, fact: Fact, wanted: Sequence[str] = ()) -> list[PublicEvent]:
        """The public events one stored event gives this consumer (usually none or one)."""
        found = []
        for t in self._by_topic.get(fact.topic, []):
            if wanted and t.name not in wanted:
                continue
            mapped = t.build(app, fact)
            if mapped is None:
                continue
            platform = _rider_platform(app, t, mapped)
            if not _for_this_consumer(platform, fact):
                continue
            found.append(PublicEvent(
                id=event_id(self.service, fact.originator_id, fact.originator_version, t.name),
                source=self.source, type=t.name, time=fact.time.astimezone(UTC),
                subject=mapped.subject, data=plain(mapped.data), position=fact.position,
                platform_id=platform))
        return found


# The checkpoint type's fields. Not about any rider: every consumer of every organisation
# receives it (it is the point that many independent parties hold copies).
CHECKPOINT_FIELDS = ("origin", "position", "seal", "key_id", "checkpoint", "signed_time")


def checkpoint_type(service: str) -> PublicType:
    """`qiji.<service>.v1.LogCheckpointSigned`: a signed checkpoint of the service's log
    (shared/checkpoints.py), for witnesses to keep."""
    return PublicType(f"qiji.{service}.v1.LogCheckpointSigned", CHECKPOINT_TOPIC,
                      CHECKPOINT_FIELDS, _checkpoint)


def _checkpoint(_app: Any, fact: Fact) -> Mapped:
    e = fact.event
    return Mapped(e.origin, {"origin": e.origin, "position": e.position, "seal": e.seal,
                             "key_id": e.key_id, "checkpoint": e.note,
                             "signed_time": e.timestamp})


# The platform of an event about a rider nobody knows (it cannot happen while identity keeps
# its riders): a name no platform has, so the event reaches nobody. Never everyone.
NO_PLATFORM = "unknown"


def _rider_platform(app: Any, t: PublicType, mapped: Mapped) -> str:
    """The platform that registered the rider an event is about; "" for an event about no
    rider. A type with a `rider_id` field is about a rider: the rule cannot be forgotten by a
    new type."""
    if "rider_id" not in t.fields:
        return ""
    rider_id = str(mapped.data.get("rider_id") or "")
    rider = app.directory.rider(rider_id) if rider_id and app.directory is not None else None
    return rider.platform_id if rider is not None else NO_PLATFORM


def _for_this_consumer(platform: str, fact: Fact) -> bool:
    """An event about a rider goes to the rider's own platform only (or to Qiji's relay, which
    routes it to that platform alone); any other public event goes to everyone."""
    if not platform:
        return True
    if fact.all_platforms and not fact.consumer_organisation_id:
        return True
    return platform == fact.consumer_organisation_id


def event_id(service: str, originator_id: uuid.UUID | str, version: int, type_name: str) -> str:
    return str(uuid.uuid5(_EVENT_ID_NAMESPACE,
                          f"{service}\n{originator_id}\n{version}\n{type_name}"))


def plain(value: Any) -> Any:
    """Plain JSON values: times as RFC 3339 UTC strings, decimals as strings, enums by value."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [plain(v) for v in value]
        return sorted(items) if isinstance(value, set | frozenset) else items
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, uuid.UUID):
        return str(value)
    return value
