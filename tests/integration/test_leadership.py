"""One leader among replicas, on the real PostgreSQL: a lease whose session is gone (a restart
of the server ends every session) is noticed, and the lock can be taken by another replica;
the relay stops publishing when its lease goes."""

from __future__ import annotations

import threading

import psycopg
import pytest

from services.relay import metrics as relay_metrics
from services.relay.relay import Relay
from shared import leadership as leadership_module
from shared.leadership import leadership
from shared.metrics import REGISTRY
from tests.conftest import FakeLease, _admin_conninfo, settings_for


@pytest.fixture
def settings(postgres_env):
    return settings_for("relay", postgres_env)


def test_one_leader_at_a_time_and_a_lost_session_is_noticed(settings, monkeypatch):
    monkeypatch.setattr(leadership_module, "LEASE_CHECK_SECONDS", 0.0)
    stopping = threading.Event()
    waits: list[bool] = []
    with leadership(settings, "k:test", ".test.lock", stopping) as lease:
        assert lease is not None and lease.held()
        # A second replica waits while the first leads; it is stopped after one try.
        second = threading.Event()
        threading.Timer(0.3, second.set).start()
        with leadership(settings, "k:test", ".test.lock", second, retry_seconds=0.1,
                        waiting=waits.append) as other:
            assert other is None
        assert waits and all(waits)  # it reached the store: a healthy standby
        # The server ends the leader's session (as a restart would).
        pid = lease._conn.info.backend_pid
        with psycopg.connect(_admin_conninfo(settings.postgres_dbname), autocommit=True) as c:
            assert c.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]
        assert not lease.held()
        # Another replica can lead now.
        with leadership(settings, "k:test", ".test.lock", threading.Event()) as taken:
            assert taken is not None and taken.held()


class NoPositions:
    def load(self) -> dict[str, int]:
        return {}


def test_the_relay_stops_publishing_when_its_lease_is_lost():
    relay = Relay({}, NoPositions(), publish=lambda *_: None)  # type: ignore[arg-type]
    lease = FakeLease(checks=3)
    done = threading.Event()
    thread = threading.Thread(target=lambda: (relay.run_forever(
        threading.Event(), poll_seconds=0.01, lease=lease), done.set()))
    thread.start()
    assert done.wait(5), "the relay went on publishing without its lease"
    assert lease.checks < 0


def test_a_relay_that_stops_leading_leaves_no_lag_behind():
    """The lag it measured while it led would otherwise stay in its /metrics beside the new
    leader's and keep the lag alert (deploy/monitoring) firing."""
    relay_metrics.read("identity", published_through=10, last_position=1510)
    assert REGISTRY.get_sample_value("qiji_relay_lag_events", {"upstream": "identity"}) == 1500
    relay = Relay({}, NoPositions(), publish=lambda *_: None)  # type: ignore[arg-type]
    relay.run_forever(threading.Event(), poll_seconds=0.01, lease=FakeLease(checks=2))
    for name in ("qiji_relay_lag_events", "qiji_relay_upstream_up"):
        assert REGISTRY.get_sample_value(name, {"upstream": "identity"}) is None, name
