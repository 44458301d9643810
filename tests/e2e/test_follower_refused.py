"""A follower whose upstream refuses its token (the service token was replaced, say) does not
fail silently: the service's health `qiji.followers` turns NOT_SERVING within seconds (the
service itself, "", still serves what it knows), /metrics says which upstream refuses it, and
the log says so once, at error level."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shared.grpc.server import FOLLOWERS
from tests.e2e.conftest import free_port, start_beside, start_service

pytestmark = pytest.mark.e2e

NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVING = health_pb2.HealthCheckResponse.SERVING


def test_a_follower_refused_by_its_upstream_shows_in_health_and_metrics(
        postgres_db: str, tmp_path: Path) -> None:
    identity = start_service("identity", postgres_db, tmp_path / "identity")
    (tmp_path / "training").mkdir()
    metrics_port = free_port()
    training = start_beside("training", identity, tmp_path / "training",
                            QIJI_SERVICE_TOKEN="a-token-identity-does-not-know",
                            TRAINING_METRICS_PORT=str(metrics_port))
    try:
        health = health_pb2_grpc.HealthStub(training.channel)

        def status(name: str) -> int:
            return health.Check(health_pb2.HealthCheckRequest(service=name), timeout=2).status
        started = time.monotonic()
        while status(FOLLOWERS) != NOT_SERVING:
            assert time.monotonic() - started < 15, "qiji.followers stayed SERVING"
            time.sleep(0.1)
        noticed = time.monotonic() - started
        assert status("") == SERVING  # the service serves; its reactions to identity wait
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                      timeout=5).read().decode()
        assert ('qiji_follower_upstream_refused{service="training",upstream="identity"} 1.0'
                in text)
        print(f"\n[follower refused] noticed in {noticed:.1f} s")
    finally:
        training.stop()
        identity.stop()
    # Said once (at error level), not on every retry.
    assert training.log_path.read_text().count("follower.upstream_refused") == 1
