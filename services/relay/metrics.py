"""The relay's Prometheus metrics and health signal, served at `RELAY_METRICS_PORT` (0: none)
in the same registry and format as the services' (shared/metrics.py).

Health is what an operator (and `deploy/status`) needs to tell "quiet" from "stuck":
`qiji_relay_healthy` is 1 while the relay either leads and its last cycle reached the broker,
its position store and every service, or waits as a standby; `qiji_relay_heartbeat_timestamp_
seconds` moves on every cycle, so a relay that hangs shows as a stale heartbeat. Lag is per
service: its log position as last read minus the position the relay published through."""

from __future__ import annotations

import time

from prometheus_client import Counter, Gauge

from shared.metrics import REGISTRY

PUBLISHED = Counter("qiji_relay_published_total",
                    "Public events the broker confirmed, by the service they came from",
                    ["upstream"], registry=REGISTRY)
POSITION = Gauge("qiji_relay_position",
                 "The service's log position the relay has published through (stored)",
                 ["upstream"], registry=REGISTRY)
UPSTREAM_POSITION = Gauge("qiji_relay_upstream_position",
                          "The service's last log position, as of the relay's latest read",
                          ["upstream"], registry=REGISTRY)
LAG = Gauge("qiji_relay_lag_events",
            "Log positions the service has that the relay has not published through",
            ["upstream"], registry=REGISTRY)
UPSTREAM_UP = Gauge("qiji_relay_upstream_up",
                    "1 when the relay's latest read of the service's public feed succeeded",
                    ["upstream"], registry=REGISTRY)
LEADER = Gauge("qiji_relay_leader", "1 while this relay publishes, 0 while it stands by",
               registry=REGISTRY)
BROKER_UP = Gauge("qiji_relay_broker_up",
                  "0 after a publish the broker did not confirm, until one is confirmed again",
                  registry=REGISTRY)
HEALTHY = Gauge("qiji_relay_healthy",
                "1 when the relay is leading without trouble, or standing by; 0 otherwise",
                registry=REGISTRY)
HEARTBEAT = Gauge("qiji_relay_heartbeat_timestamp_seconds",
                  "Unix time of the relay's latest cycle (or standby check)", registry=REGISTRY)


def heartbeat() -> None:
    HEARTBEAT.set(time.time())


def read(upstream: str, *, published_through: int, last_position: int) -> None:
    """After a successful read (and publish) of one service's batch."""
    UPSTREAM_UP.labels(upstream).set(1)
    POSITION.labels(upstream).set(published_through)
    UPSTREAM_POSITION.labels(upstream).set(last_position)
    LAG.labels(upstream).set(max(0, last_position - published_through))


def stop_reporting() -> None:
    """A relay that stops leading measures no lag and reads no service: its last figures,
    left in /metrics, would go on alerting beside the new leader's."""
    for gauge in (LAG, UPSTREAM_UP, POSITION, UPSTREAM_POSITION):
        gauge.clear()
