"""Metrics an operator scrapes: RPCs by code, events stored, follower lag, over HTTP."""

from __future__ import annotations

import contextlib
import socket
import threading
import urllib.request
import uuid
from contextlib import contextmanager

import grpc

from services.identity.application import IdentityApplication
from services.identity.domain.values import OrganisationKind
from shared import followers, metrics
from shared.followers import Follower, LocalFeed
from tests.conftest import MASTER_KEY, FakeLease, actor, as_actor, settings_for


def value(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def test_stored_events_and_follower_lag_are_counted(store_env):
    app = IdentityApplication(settings_for("identity", store_env), MASTER_KEY)
    try:
        before = value("qiji_events_stored_total", service="identity")
        with as_actor(actor("city", "city_admin")):
            app.create_organisation(kind=OrganisationKind.CITY, name="常州市", parent_id="",
                                    department_function=None)
        assert value("qiji_events_stored_total", service="identity") == before + 1
        assert value("qiji_log_position", service="identity") == app.last_position()
        follower = Follower(app, LocalFeed(app, name="itself"), lambda e, p: None)
        follower.run_once()
        assert value("qiji_follower_lag_events", service="identity", upstream="itself") == 0
    finally:
        app.close()


def test_aggregates_read_from_the_store_are_counted_and_the_cache_holds_as_many_as_set(
        store_env):
    """An operator sizes the cache by the loads it counts: with room for two aggregates, the
    first of three read is read from the store again; a cached one never is."""
    app = IdentityApplication(settings_for("identity", {**store_env,
                                                        "QIJI_AGGREGATE_CACHE_SIZE": "2"}),
                              MASTER_KEY)
    try:
        with as_actor(actor("city", "city_admin")):
            ids = [app.create_organisation(kind=OrganisationKind.CITY, name=f"市{n}",
                                           parent_id="", department_function=None)
                   ["organisation_id"]
                   for n in range(3)]
        for ident in ids:  # out of the cache, as in a new process
            with contextlib.suppress(KeyError):  # (the first has left it already)
                app.repository.cache.get(uuid.UUID(ident), evict=True)

        def loads() -> float:
            return value("qiji_aggregates_loaded_total", service="identity")

        def read(ident: str) -> None:
            with as_actor(actor("city", "city_admin")):
                app.aggregates.read_only(uuid.UUID(ident))
        before = loads()
        read(ids[0])
        read(ids[0])  # cached now
        assert loads() == before + 1
        read(ids[1])
        read(ids[2])  # the cache holds two: the first leaves
        assert loads() == before + 3
        read(ids[2])
        assert loads() == before + 3
        read(ids[0])
        assert loads() == before + 4
    finally:
        app.close()


def test_a_follower_of_some_topics_is_caught_up_past_events_it_passes_over(store_env):
    app = IdentityApplication(settings_for("identity", store_env), MASTER_KEY)
    try:
        with as_actor(actor("city", "city_admin")):
            app.create_organisation(kind=OrganisationKind.CITY, name="常州市", parent_id="",
                                    department_function=None)
        # It reacts only to riders' registrations; the log holds none, only the city.
        follower = Follower(app, LocalFeed(app, name="riders-only"), lambda e, p: None,
                            topics=["services.identity.domain.model:Rider.Registered"])
        follower.run_once()
        assert value("qiji_follower_position", service="identity",
                     upstream="riders-only") == app.last_position() > 0
        assert value("qiji_follower_lag_events", service="identity",
                     upstream="riders-only") == 0
    finally:
        app.close()


def test_rpcs_are_counted_by_code_and_served_over_http():
    observe = metrics.rpc_observer("identity")
    observe("/qiji.identity.v1.IdentityService/GetRider", "NOT_FOUND", 0.004)
    assert value("qiji_rpc_total", service="identity", method="GetRider",
                 code="NOT_FOUND") >= 1
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    metrics.serve("127.0.0.1", port)
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'qiji_rpc_total{code="NOT_FOUND",method="GetRider",service="identity"}' in body
    assert "qiji_rpc_duration_seconds_bucket" in body


class RefusingFeed:
    """An upstream that refuses the follower's token, as one with a stale tokens file does;
    notes what the follower's /metrics said about it at each try."""

    name = "refusing"
    last_position = 0

    def __init__(self) -> None:
        self.refused_shown: list[float] = []

    def read(self, *_args: object) -> list:
        self.refused_shown.append(value("qiji_follower_upstream_refused", service="identity",
                                        upstream=self.name))
        error = grpc.RpcError()
        error.code = lambda: grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
        raise error

    def wait(self, timeout: float) -> None:
        pass


def test_a_follower_that_stops_leading_stops_reporting_lag_and_refusal(store_env, monkeypatch):
    """With replicas, leadership moves (a store restart ends the lock's session): the replica
    that stood down must not go on showing its last lag and refusal, or the alerts on them
    (deploy/monitoring) would fire for ever beside the new leader's figures."""
    app = IdentityApplication(settings_for("identity", store_env), MASTER_KEY)
    leases = iter([FakeLease(checks=2), None])  # leads for a few rounds, then stands by

    @contextmanager
    def one_term(*_args, **_kwargs):
        yield next(leases)

    monkeypatch.setattr(followers, "hold_leadership", one_term)
    try:
        feed = RefusingFeed()
        follower = Follower(app, feed, lambda e, p: None)
        metrics.FOLLOWER_LAG.labels("identity", "refusing").set(1500)  # from an earlier term
        done = threading.Thread(target=follower.run_forever, args=(threading.Event(), 0.01))
        done.start()
        done.join(30)
        assert not done.is_alive()
        assert feed.refused_shown[-1] == 1  # shown while it led
        for name in ("qiji_follower_upstream_refused", "qiji_follower_lag_events"):
            assert metrics.REGISTRY.get_sample_value(
                name, {"service": "identity", "upstream": "refusing"}) is None, name
    finally:
        app.close()
