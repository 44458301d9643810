"""AIP-155 request ids: a record of each mutating request's first answer, stored as an event in
the same atomic save as the events the request produced. No side table, no dual write: if the
command's events are stored, so is its record, and a retry finds it, across restarts too."""

from __future__ import annotations

import uuid
from typing import Any

from eventsourcing.domain import Aggregate

_NAMESPACE = uuid.UUID("6f1e5a4e-2b8c-4a53-9d55-8a1e0c7f3b21")


class RequestRecord(Aggregate):
    """The first answer to one request id of one caller for one RPC."""

    def __init__(self, principal: str, rpc: str, request_id: str, fingerprint: str,
                 result: dict[str, Any]):
        self.principal = principal
        self.rpc = rpc
        self.request_id = request_id
        self.fingerprint = fingerprint
        self.result = result

    @staticmethod
    def create_id(principal: str, rpc: str, request_id: str, **_: Any) -> uuid.UUID:
        # Scoped per caller and RPC: two calling systems may pick the same request id freely.
        return uuid.uuid5(_NAMESPACE, f"{principal}\n{rpc}\n{request_id}")
