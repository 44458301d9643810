"""Prometheus metrics every service exposes: RPCs (count, latency, errors by code), events
stored, log position, and how far each follower trails its upstream."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

# One registry per process (a process runs one service).
REGISTRY = CollectorRegistry()

RPCS = Counter("qiji_rpc_total", "RPCs served, by method and status code",
               ["service", "method", "code"], registry=REGISTRY)
RPC_SECONDS = Histogram("qiji_rpc_duration_seconds", "RPC latency", ["service", "method"],
                        registry=REGISTRY,
                        buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10))
# How long a call waited for a thread of its lane (shared/grpc/lanes.py) before it began.
RPC_QUEUED_SECONDS = Histogram("qiji_rpc_queue_seconds",
                               "Time a call waited for a thread of its lane (quick: gets and "
                               "commands; wide: streams, long polls, feeds; probe: health)",
                               ["service", "lane"], registry=REGISTRY,
                               buckets=(.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5,
                                        1, 2.5, 10))
EVENTS_STORED = Counter("qiji_events_stored_total", "Events stored by this process",
                        ["service"], registry=REGISTRY)
AGGREGATES_LOADED = Counter(
    "qiji_aggregates_loaded_total",
    "Aggregates read from the store because this process had none of them cached: the first "
    "read of each since start, and reads of one the cache had let go (QIJI_AGGREGATE_CACHE_SIZE)",
    ["service"], registry=REGISTRY)
LOG_POSITION = Gauge("qiji_log_position", "Highest position this process stored or saw",
                     ["service"], registry=REGISTRY)
COMMIT_BATCH = Histogram("qiji_commit_batch_saves",
                         "Saves (commands, follower reactions) sharing one commit",
                         ["schema"], registry=REGISTRY, buckets=(1, 2, 4, 8, 16, 32, 64, 128))
FOLLOWER_POSITION = Gauge("qiji_follower_position",
                          "The upstream log position this follower has caught up through",
                          ["service", "upstream"], registry=REGISTRY)
FOLLOWER_LAG = Gauge("qiji_follower_lag_events",
                     "Events the upstream has that this follower has not applied yet",
                     ["service", "upstream"], registry=REGISTRY)

# Integrity (shared/integrity.py): one series per log and reader (the sealer, a follower, a
# view, the public feed, the relay, the gateway).
AUDIT_INTACT = Gauge("qiji_audit_intact",
                     "1 while the reader found every event it read of the log intact; 0 once it "
                     "stopped at one that fails its MAC or version check",
                     ["log", "reader"], registry=REGISTRY)
AUDIT_BROKEN_POSITION = Gauge("qiji_audit_broken_position",
                              "The log position the reader stopped at (0 while intact)",
                              ["log", "reader"], registry=REGISTRY)
AUDIT_SEALED_THROUGH = Gauge("qiji_audit_sealed_through",
                             "The log position the seal chain reaches", ["log"],
                             registry=REGISTRY)
AUDIT_CHECKPOINT_POSITION = Gauge("qiji_audit_checkpoint_position",
                                  "The log position the newest signed checkpoint covers",
                                  ["log"], registry=REGISTRY)


FOLLOWER_REFUSED = Gauge("qiji_follower_upstream_refused",
                         "1 while the upstream refuses this follower's token (UNAUTHENTICATED or "
                         "PERMISSION_DENIED): it applies nothing until the token is fixed",
                         ["service", "upstream"], registry=REGISTRY)
LEADER = Gauge("qiji_leader", "1 while this process leads the named background work (a "
               "follower's upstream, governance's deadlines, the relay); 0 while it stands by",
               ["service", "work"], registry=REGISTRY)
REFUSED = Counter("qiji_rpc_refused_total", "Calls refused as UNAUTHENTICATED or "
                  "PERMISSION_DENIED, by method and code", ["service", "method", "code"],
                  registry=REGISTRY)


def rpc_observer(service: str) -> Callable[[str, str, float], None]:
    # The labelled children, looked up once per method and code instead of on every RPC
    # (`labels()` takes a lock and builds a key each time).
    counters: dict[tuple[str, str], Any] = {}
    timers: dict[str, Any] = {}

    def observe(method: str, code: str, seconds: float) -> None:
        counter = counters.get((method, code))
        if counter is None:
            counter = counters[method, code] = RPCS.labels(service, _name(method), code)
        timer = timers.get(method)
        if timer is None:
            timer = timers[method] = RPC_SECONDS.labels(service, _name(method))
        counter.inc()
        timer.observe(seconds)
    return observe


def _name(method: str) -> str:
    return method.rsplit("/", 1)[-1]


def serve(host: str, port: int) -> None:
    """Serves /metrics over HTTP; port 0 means no metrics endpoint (tests)."""
    if port:
        start_http_server(port, addr=host, registry=REGISTRY)
