"""What makes the figures a Qiji process: the same guard, health, reflection, metrics and
signal handling as every service, the read model's projection following the five services'
feeds in a background thread, and its own store (STATISTICS_* settings, shared/config.py)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
import structlog

from services.statistics.application import Statistics
from services.statistics.domain.catalogue import SERVICES
from services.statistics.grpc_api import ACCESS, add_servicers
from shared import metrics
from shared.background import until_signalled
from shared.config import ConfigError, Settings, load_settings
from shared.followers import GrpcFeed
from shared.grpc import tls
from shared.grpc.healthcheck import HealthServicer
from shared.grpc.lanes import Lanes
from shared.grpc.server import guarded_server, integrity_health, serving_health, stop_serving
from shared.integrity import ALARM, EventMac, audit_key
from shared.logging import configure as configure_logging
from shared.logging import exits_on_config_error
from shared.personal_data import load_master_key
from shared.tenancy import TenancyDirectory, no_owners

log = structlog.get_logger(__name__)

NAME = "statistics"
GRACE_SECONDS = 5.0


@dataclass
class RunningStatistics:
    server: grpc.Server
    port: int
    health: HealthServicer
    statistics: Statistics
    stopping: threading.Event
    watch_integrity: Callable[[bool], None] | None = None
    lanes: Lanes | None = None
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        self.watch_integrity = integrity_health(self.health)
        ALARM.listen(self.watch_integrity)
        self.server.start()
        # The projection: follows the five feeds into the read model, as the leader among
        # replicas (the others answer from the same store and wait to lead).
        thread = threading.Thread(target=self.statistics.run_forever, args=(self.stopping,),
                                  daemon=True, name=f"{NAME}-projection")
        thread.start()
        self._threads.append(thread)

    def stop(self, grace: float = GRACE_SECONDS) -> None:
        self.stopping.set()  # the projection ends at its next look, streams at their next chunk
        stop_serving(self.server, self.health, self.lanes, self.watch_integrity, grace)
        for thread in self._threads:
            thread.join(timeout=grace)
        self.statistics.close()


def event_mac(settings: Settings) -> EventMac:
    """Checks each upstream event's MAC, under the audit key derived from the master key the
    five services share: the figures never count an event forged in a service's database.
    The master key is never made here (the services own it)."""
    try:
        master_key = load_master_key(settings.master_key, settings.master_key_file,
                                     create=False)
    except (FileNotFoundError, ValueError) as error:
        raise ConfigError(f"{error} (the figures check every event's MAC under the master key "
                          "the services share: give STATISTICS_MASTER_KEY or QIJI_MASTER_KEY, "
                          "or its _FILE)") from None
    return EventMac(audit_key(master_key))


def make_statistics(settings: Settings, token: str | None = None) -> Statistics:
    """The read model over the five services' feeds, read with the `service` token (or, for an
    operator's command, the token given)."""
    token = token or settings.service_token
    if not token:
        raise ConfigError("STATISTICS_SERVICE_TOKEN / QIJI_SERVICE_TOKEN must be set: the "
                          "figures read the five services' feeds with it")
    feeds = {s: GrpcFeed(s, settings.upstreams[s], token, tls=settings.tls) for s in SERVICES}
    # The directory reads identity on a channel of its own: a request's catch-up never waits
    # for the projection's read.
    directory = TenancyDirectory(GrpcFeed("identity", settings.upstreams["identity"], token,
                                          tls=settings.tls))
    return Statistics(settings, feeds, event_mac(settings), directory)


def build(settings: Settings, statistics: Statistics | None = None) -> RunningStatistics:
    statistics = statistics or make_statistics(settings)
    # No quick lane: this process's unary calls wait on the services it reads. Its health
    # checks have threads of their own, whatever its streams hold (shared/grpc/lanes.py).
    lanes = Lanes.of(NAME, settings, quick=False)
    server = guarded_server(NAME, settings, access=ACCESS, resolve=no_owners, lanes=lanes)
    health_servicer = serving_health(server, add_servicers(server, statistics))
    port = tls.add_port(server, settings)
    return RunningStatistics(server=server, port=port, health=health_servicer,
                             statistics=statistics, stopping=threading.Event(), lanes=lanes)


def serve() -> None:
    """The process entry point: `python -m services.statistics`."""
    # A setting that cannot work stops the process at start: one line, exit code 2.
    with exits_on_config_error(NAME):
        settings = load_settings(NAME)
        configure_logging(NAME, settings.log_format)
        running = build(settings)
    # RPC counts, latency and errors by code, like every service (STATISTICS_METRICS_PORT).
    metrics.serve(settings.grpc_host, settings.metrics_port)
    running.start()
    log.info("service.started", address=f"{settings.grpc_host}:{running.port}",
             persistence=settings.persistence,
             upstreams={s: settings.upstreams[s] for s in SERVICES})
    until_signalled().wait()
    running.stop()
    log.info("service.stopped")


