"""One service's public feed as its two readers see it: the platform gateway
(services/platform), which merges them for the platform companies, and the relay
(services/relay), which pushes them over AMQP. Both read `ReadPublicEvents` with the `service`
role token and treat an outage alike, so the reading side lives here, in the kernel, rather
than in one of them for the other to reach into (issue 21: a service imports no other service
but its published topics)."""

from __future__ import annotations

from typing import Any, Protocol

import grpc
from qiji.feed.v1 import public_feed_service_pb2_grpc as feed_grpc

from shared.config import TlsSettings
from shared.grpc.channels import open_channel
from shared.grpc.public_feed import read_public

UPSTREAM_TIMEOUT = 10.0


class UpstreamDown(Exception):
    """A service's public feed cannot be read just now; its events wait, none are lost."""


class Upstream(Protocol):
    """One service's public feed: ReadPublicEvents."""

    def read_public_events(self, request: Any) -> Any:
        ...


class GrpcUpstream:
    """A service's PublicFeedService over gRPC, with the `service` role token."""

    def __init__(self, address: str, token: str, tls: TlsSettings | None = None):
        self._channel = open_channel(address, tls)
        self._stub = feed_grpc.PublicFeedServiceStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),)

    def read_public_events(self, request: Any) -> Any:
        try:
            return self._stub.ReadPublicEvents(request, metadata=self._metadata,
                                               timeout=UPSTREAM_TIMEOUT)
        except grpc.RpcError as error:
            code = error.code() if isinstance(error, grpc.Call) else None
            if code is grpc.StatusCode.INVALID_ARGUMENT:
                raise  # a bug of ours, not an outage: let it show
            raise UpstreamDown(code.name if code else "UNKNOWN") from None

    def close(self) -> None:
        self._channel.close()


class LocalUpstream:
    """A service's public feed in this process (tests and tools): the same code path as its
    servicer, without the network."""

    def __init__(self, app: Any, catalogue: Any):
        self._app = app
        self._catalogue = catalogue

    def read_public_events(self, request: Any) -> Any:
        return read_public(self._app, self._catalogue, request)
