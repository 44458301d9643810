"""The gRPC server factory every service uses: a grpcio thread-pool server with the guard,
the service's feed, grpc.health.v1 and reflection (v1 and v1alpha); port 0 for tests; graceful
stop on SIGTERM/SIGINT."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shared import metrics
from shared.application import QijiApplication
from shared.audit import Sealer
from shared.auth import TokenRegistry
from shared.background import settled, until_signalled
from shared.checkpoints import CheckpointSigner, origin_of
from shared.config import ConfigError, Settings, load_settings
from shared.followers import FeedSource, GrpcFeed
from shared.grpc import audit as audit_api
from shared.grpc import feed, reflection, tls
from shared.grpc import public_feed as public_feed_api
from shared.grpc.guard import Guard
from shared.grpc.healthcheck import HealthServicer
from shared.grpc.lanes import Lanes
from shared.integrity import ALARM, HEALTH
from shared.logging import configure as configure_logging
from shared.logging import exits_on_config_error
from shared.personal_data import load_master_key
from shared.public_feed import PublicCatalogue
from shared.signing import load_key
from shared.tenancy import Access, Resolver

log = structlog.get_logger(__name__)

HEALTH_PROBE_SECONDS = 1.0
# A health name that is SERVING for as long as the process serves, whatever its store does: for
# liveness probes. Restarting every replica because the database is away for a minute would
# only add a cold start to the outage; readiness ("") takes them out of the load balancer.
LIVENESS = "qiji.liveness"
# A health name that is NOT_SERVING while any reader in the process (the sealer, a follower, a
# view, the public feed) is stopped at an event that fails its integrity check. Readiness ("")
# is left alone: the service still answers everything that does not need the bad event.
INTEGRITY = HEALTH
# NOT_SERVING while an upstream refuses one of the service's followers (its token was replaced):
# the service serves, but reacts to nothing from that upstream until an operator fixes it.
FOLLOWERS = "qiji.followers"
GRACE_SECONDS = 5.0


class MakeApp(Protocol):
    """Makes a service's application: its settings, the master key, and where its upstreams'
    feeds are (None: it follows nothing — a tool, or a test that wires followers itself). The
    application makes its own followers and views from `feeds`, so it has, once made, all
    that its requests read; nothing is set on it afterwards."""

    def __call__(self, settings: Settings, master_key: bytes, *,
                 feeds: FeedSource | None = None) -> QijiApplication: ...


@dataclass(frozen=True)
class ServiceSpec:
    """What makes a service a service: its application, its servicers and its roles table."""

    name: str
    make_app: MakeApp
    # Adds the service's own servicers to the server; returns their full service names.
    add_servicers: Callable[[grpc.Server, QijiApplication], list[str]]
    # Each RPC's roles and tenancy scope (shared/tenancy.py), by full method name.
    access: dict[str, Access]
    # The service's background work, each run in a thread: followers of other services'
    # feeds, the views its application made (kept close behind), and periodic jobs such as
    # lapsing codes (shared/background.py PeriodicJob). Anything with `.upstream` (a name for
    # its thread) and `.run_forever(stopping)` will do; None in the list is skipped.
    make_followers: Callable[[Any, Settings], list[Any]] | None = None
    # The service's published event contract for outside consumers
    # (services/<name>/public_events.py); served to the platform gateway.
    public_events: PublicCatalogue | None = None


@dataclass
class RunningService:
    spec: ServiceSpec
    app: QijiApplication
    server: grpc.Server
    port: int
    health: HealthServicer
    stopping: threading.Event = field(default_factory=threading.Event)
    service_names: list[str] = field(default_factory=list)
    followers: list[Any] = field(default_factory=list)
    watch_integrity: Callable[[bool], None] | None = None
    lanes: Lanes | None = None
    _threads: list[threading.Thread] = field(default_factory=list)

    def stop(self, grace: float = GRACE_SECONDS) -> None:
        self.stopping.set()
        self.app.store_gate.doubt()  # wakes the health probe's loop, which sees `stopping`
        self.app.wake_waiters()  # feed streams notice `stopping` at once
        stop_serving(self.server, self.health, self.lanes, self.watch_integrity, grace)
        for thread in self._threads:
            thread.join(timeout=grace)
        self.app.close()


def guarded_server(name: str, settings: Settings, *, access: Mapping[str, Access],
                   resolve: Resolver, lanes: Lanes, share_port: bool = False) -> grpc.Server:
    """A grpcio server with the guard as its only interceptor, on the process's lanes: the same
    for every Qiji process (a service, the platform gateway, the figures)."""
    guard = Guard(tokens=TokenRegistry(settings.tokens_file), access=access, resolve=resolve,
                  error_domain=f"{name}.qiji", on_rpc=metrics.rpc_observer(name),
                  certificates=settings.tls.requires_client_certificates, lanes=lanes)
    # grpcio sets SO_REUSEPORT by default: two servers could silently share a port. Only
    # GRPC_SHARE_PORT=yes asks for it, to run several processes of a service on one port.
    return grpc.server(lanes.wide, interceptors=[guard],
                       options=[("grpc.so_reuseport", 1 if share_port else 0)])


def serving_health(server: grpc.Server, names: list[str]) -> HealthServicer:
    """Health and reflection for a process with no store of its own to probe (the gateway, the
    figures): every name SERVING from the start. Reflection in both versions tools speak, v1
    and v1alpha (shared/grpc/reflection.py)."""
    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ["", LIVENESS, INTEGRITY, *names]:
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable(server, [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name])
    return health_servicer


def stop_serving(server: grpc.Server, health: HealthServicer, lanes: Lanes | None,
                 watch_integrity: Callable[[bool], None] | None, grace: float) -> None:
    """The gRPC side of every Qiji process's stop, once its own work was told to end: health
    watchers hear NOT_SERVING and their streams end (else grpcio's stop waits out the whole
    grace for them); new calls are refused and running ones get `grace`; then calls still
    queued are dropped and running handlers waited for, so that the process closes its store
    under none of them (shared/grpc/lanes.py)."""
    if watch_integrity is not None:
        ALARM.forget(watch_integrity)
    health.end_watches()
    server.stop(grace).wait()
    if lanes is not None:
        lanes.shutdown(grace)


def service_access(spec: ServiceSpec) -> dict[str, Access]:
    """Every RPC a service's server serves behind its guard: its own, and the kernel's feed,
    public feed and audit."""
    return {**spec.access, **feed.feed_access(), **public_feed_api.public_feed_access(),
            **audit_api.audit_access()}


def build_server(spec: ServiceSpec, settings: Settings, *, app: QijiApplication | None = None
                 ) -> RunningService:
    if app is None:
        master_key = load_master_key(settings.master_key, settings.master_key_file,
                                     create=settings.persistence == "sqlite")
        app = spec.make_app(settings, master_key, feeds=upstream_feeds(settings))
    # Gets and commands on a few threads, streams and long polls on many (shared/grpc/lanes.py).
    lanes = Lanes.of(spec.name, settings)
    server = guarded_server(spec.name, settings, access=service_access(spec), resolve=app.owners,
                            lanes=lanes, share_port=settings.grpc_share_port)
    stopping = threading.Event()
    names = spec.add_servicers(server, app)
    names.append(feed.register(server, app, stopping))
    names.append(public_feed_api.register(
        server, app, spec.public_events or PublicCatalogue(spec.name, []), stopping))
    signer = checkpoint_signer(settings, spec.name)
    names.append(audit_api.register(server, app, signer.verifier()))
    health_servicer = HealthServicer()
    # NOT_SERVING until the first store check says otherwise (the servicer starts at SERVING).
    health_servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    health_servicer.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
    health_servicer.set(INTEGRITY, health_pb2.HealthCheckResponse.SERVING)
    health_servicer.set(FOLLOWERS, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    # Reflection in both versions tools speak, v1 and v1alpha (shared/grpc/reflection.py).
    reflection.enable(server, [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name])
    port = tls.add_port(server, settings)
    followers = [f for f in spec.make_followers(app, settings) if f is not None] \
        if spec.make_followers else []
    # Every service checks and seals its own log (tamper evidence) a moment behind its
    # writers, and signs checkpoints of it for outside witnesses.
    followers.append(Sealer(
        app, signer=signer,
        checkpoint_events=settings.audit_checkpoint_events,
        checkpoint_seconds=settings.audit_checkpoint_seconds))
    return RunningService(spec=spec, app=app, server=server, port=port, health=health_servicer,
                          stopping=stopping, service_names=names, followers=followers,
                          lanes=lanes)


def upstream_feeds(settings: Settings) -> FeedSource:
    """The upstreams' feeds as the service's settings say: their addresses, the `service`
    token, and the transport security of the service's own channels."""
    return lambda upstream: GrpcFeed.of(upstream, settings)


def checkpoint_signer(settings: Settings, service: str) -> CheckpointSigner:
    """The audit signing key, configured like the badge issuer's: `QIJI_AUDIT_SIGNING_KEY`
    (or `_FILE`), never made per run; the embedded default makes data/audit-signing.key once."""
    try:
        seed = load_key(settings.audit_signing_key, settings.audit_signing_key_file,
                        create=settings.persistence == "sqlite",
                        setting="QIJI_AUDIT_SIGNING_KEY",
                        what="audit signing key (an Ed25519 seed)")
    except (FileNotFoundError, ValueError) as error:
        raise ConfigError(str(error)) from None
    return CheckpointSigner(seed, origin_of(settings.audit_origin, service))


def integrity_health(health_servicer: HealthServicer) -> Callable[[bool], None]:
    """Keeps the health name `qiji.integrity` NOT_SERVING while a reader of this process is
    stopped at an event that fails its integrity check (its log has the details)."""
    def follow(any_broken: bool) -> None:
        health_servicer.set(INTEGRITY, health_pb2.HealthCheckResponse.NOT_SERVING
                            if any_broken else health_pb2.HealthCheckResponse.SERVING)
    return follow


def start(running: RunningService) -> None:
    running.watch_integrity = integrity_health(running.health)
    ALARM.listen(running.watch_integrity)
    running.server.start()
    threads = [threading.Thread(target=_probe_health, args=(running,), daemon=True,
                                name=f"{running.spec.name}-health")]
    threads += [threading.Thread(target=f.run_forever, args=(running.stopping,), daemon=True,
                                 name=f"{running.spec.name}-follows-{f.upstream}")
                for f in running.followers]
    for thread in threads:
        thread.start()
    running._threads.extend(threads)


def _probe_health(running: RunningService) -> None:
    """Reports NOT_SERVING while the store cannot be reached, so a load balancer stops sending
    traffic; SERVING again as soon as it answers."""
    last = None
    followers_last = None
    while not running.stopping.is_set():
        # A follower whose upstream refuses its token applies nothing until an operator fixes
        # it: `qiji.followers` says so (the service itself still serves, so "" does not).
        refused = sorted(f.upstream for f in running.followers if getattr(f, "refused", None))
        followers_status = (health_pb2.HealthCheckResponse.NOT_SERVING if refused
                            else health_pb2.HealthCheckResponse.SERVING)
        if followers_status != followers_last:
            running.health.set(FOLLOWERS, followers_status)
            if refused:
                log.error("health.followers_refused", upstreams=refused)
            followers_last = followers_status
        ok = running.app.check_store()
        status = (health_pb2.HealthCheckResponse.SERVING if ok
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        if status != last:
            for name in ["", *running.service_names]:
                running.health.set(name, status)
            log.info("health.changed", serving=ok)
            last = status
        # The next probe in a second, or at once when a call met a broken connection.
        running.app.store_gate.wait_for_doubt(HEALTH_PROBE_SECONDS)


def serve(spec: ServiceSpec) -> None:
    """The process entry point: `python -m services.<name>`."""
    with exits_on_config_error(spec.name):
        settings = load_settings(spec.name)
        configure_logging(spec.name, settings.log_format)
        running = build_server(spec, settings)
    metrics.serve(settings.grpc_host, settings.metrics_port)
    start(running)
    settled()  # start-up's objects out of the collector's way (shared/background.py)
    log.info("service.started", address=f"{settings.grpc_host}:{running.port}",
             persistence=settings.persistence)
    until_signalled().wait()
    running.stop()
    log.info("service.stopped")
