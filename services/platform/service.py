"""What makes the platform gateway a Qiji process: the same guard, health and reflection as
every service, its feed over the five services' public feeds, no store of its own."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.platform.application import PlatformFeed
from services.platform.catalogue import SERVICES
from services.platform.grpc_api import ACCESS, add_servicers
from shared import metrics
from shared.auth import TokenRegistry
from shared.background import settled, until_signalled
from shared.config import ConfigError, Settings, load_settings
from shared.grpc import reflection, tls
from shared.grpc.guard import Guard
from shared.grpc.healthcheck import HealthServicer
from shared.grpc.lanes import Lanes
from shared.grpc.server import INTEGRITY, LIVENESS, integrity_health
from shared.grpc.upstream import GrpcUpstream, LogWatch, Upstream
from shared.integrity import ALARM
from shared.logging import configure as configure_logging
from shared.logging import exits_on_config_error
from shared.tenancy import no_owners

log = structlog.get_logger(__name__)

NAME = "platform"
GRACE_SECONDS = 5.0


@dataclass
class RunningGateway:
    server: grpc.Server
    port: int
    health: HealthServicer
    stopping: threading.Event
    upstreams: dict[str, Upstream] = field(default_factory=dict)
    watch_integrity: Callable[[bool], None] | None = None
    lanes: Lanes | None = None
    watch: LogWatch | None = None

    def stop(self, grace: float = GRACE_SECONDS) -> None:
        self.stopping.set()
        if self.watch is not None:
            self.watch.stop()  # idle streams wake, see `stopping` and end
        if self.watch_integrity is not None:
            ALARM.forget(self.watch_integrity)
        self.health.end_watches()
        self.server.stop(grace).wait()
        if self.lanes is not None:
            self.lanes.shutdown(grace)
        for upstream in self.upstreams.values():
            close = getattr(upstream, "close", None)
            if close is not None:
                close()


def build_gateway(settings: Settings, upstreams: dict[str, Upstream] | None = None
                  ) -> RunningGateway:
    if upstreams is None:
        if not settings.service_token:
            raise ConfigError("PLATFORM_SERVICE_TOKEN / QIJI_SERVICE_TOKEN must be set: the "
                              "gateway reads the services' public feeds with it")
        upstreams = {s: GrpcUpstream(settings.upstreams[s], settings.service_token,
                                     settings.tls) for s in SERVICES}
    # No quick lane: this process's unary calls wait on the services it reads. Its health
    # checks have threads of their own, whatever its streams hold (shared/grpc/lanes.py).
    lanes = Lanes.of(NAME, settings, quick=False)
    guard = Guard(tokens=TokenRegistry(settings.tokens_file), access=ACCESS, resolve=no_owners,
                  error_domain=f"{NAME}.qiji", on_rpc=metrics.rpc_observer(NAME),
                  certificates=settings.tls.requires_client_certificates, lanes=lanes)
    server = grpc.server(
        lanes.wide,
        interceptors=[guard], options=[("grpc.so_reuseport", 0)])
    stopping = threading.Event()
    # One watch of each service's log for all the gateway's streams: an idle stream reads as
    # soon as a log grows (the service's store NOTIFYs), not at its next poll.
    watch = LogWatch(upstreams, stopping).start()
    names = add_servicers(server, PlatformFeed(upstreams, watch), stopping)
    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ["", LIVENESS, INTEGRITY, *names]:
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    watch_integrity = integrity_health(health_servicer)
    ALARM.listen(watch_integrity)
    # Reflection v1 and v1alpha, as on every service (shared/grpc/reflection.py).
    reflection.enable(server, [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name])
    port = tls.add_port(server, settings)
    return RunningGateway(server=server, port=port, health=health_servicer, stopping=stopping,
                          upstreams=upstreams, watch_integrity=watch_integrity, watch=watch,
                          lanes=lanes)


def serve() -> None:
    """The process entry point: `python -m services.platform`."""
    # A setting that cannot work stops the gateway at start: one line, exit code 2.
    with exits_on_config_error(NAME):
        settings = load_settings(NAME)
        configure_logging(NAME, settings.log_format)
        running = build_gateway(settings)
    # RPC counts, latency and errors by code, like every service (PLATFORM_METRICS_PORT).
    metrics.serve(settings.grpc_host, settings.metrics_port)
    running.server.start()
    settled()  # start-up's objects out of the collector's way (shared/background.py)
    log.info("service.started", address=f"{settings.grpc_host}:{running.port}",
             upstreams={s: settings.upstreams[s] for s in SERVICES})
    until_signalled().wait()
    running.stop()
    log.info("service.stopped")
