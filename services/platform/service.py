"""What makes the platform gateway a Qiji process: the same guard, health and reflection as
every service, its feed over the five services' public feeds, no store of its own."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
import structlog

from services.platform.application import PlatformFeed
from services.platform.catalogue import SERVICES
from services.platform.grpc_api import ACCESS, add_servicers
from shared import metrics
from shared.background import settled, until_signalled
from shared.config import ConfigError, Settings, load_settings
from shared.grpc import tls
from shared.grpc.healthcheck import HealthServicer
from shared.grpc.lanes import Lanes
from shared.grpc.server import guarded_server, integrity_health, serving_health, stop_serving
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
        stop_serving(self.server, self.health, self.lanes, self.watch_integrity, grace)
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
    server = guarded_server(NAME, settings, access=ACCESS, resolve=no_owners, lanes=lanes)
    stopping = threading.Event()
    # One watch of each service's log for all the gateway's streams: an idle stream reads as
    # soon as a log grows (the service's store NOTIFYs), not at its next poll.
    watch = LogWatch(upstreams, stopping).start()
    names = add_servicers(server, PlatformFeed(upstreams, watch), stopping)
    health_servicer = serving_health(server, names)
    watch_integrity = integrity_health(health_servicer)
    ALARM.listen(watch_integrity)
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
