"""One stored event as governance's audit answers show it (GetReportHistory,
GetHelpRequestHistory): what happened, when it was stored, who acted, by which request, and
the event's own fields as text, after the caller's masking."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.application import MAC_KEY, META_KEY, event_metadata

# An event's envelope, shown by an entry's own fields rather than among its details.
NOT_DETAILS = frozenset({"originator_id", "originator_version", "originator_topic",
                         "timestamp", META_KEY, MAC_KEY})


@dataclass(frozen=True)
class HistoryEntry:
    """One stored event: what happened, when it was stored, who acted, and the request that
    made it happen."""

    version: int
    event_type: str
    stored_at: datetime
    principal: str
    rpc: str
    request_id: str
    correlation_id: str
    details: dict[str, str]


def own_fields(event: Any) -> dict[str, Any]:
    """The event's own fields, without its envelope."""
    return {k: v for k, v in vars(event).items() if k not in NOT_DETAILS}


def entry(event: Any, details: dict[str, Any]) -> HistoryEntry:
    """`event` with `details` (its fields as the caller may see them) written as text."""
    meta = event_metadata(event)
    return HistoryEntry(
        version=event.originator_version, event_type=type(event).__qualname__,
        stored_at=event.timestamp, principal=meta.get("principal", ""),
        rpc=meta.get("rpc", ""), request_id=meta.get("request_id", ""),
        correlation_id=meta.get("correlation_id", ""),
        details={k: detail(v) for k, v in details.items()})


def detail(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    return json.dumps(value, default=str, ensure_ascii=False, sort_keys=True)
