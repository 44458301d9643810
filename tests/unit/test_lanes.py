"""Which pool of threads serves each call of the five services (shared/grpc/lanes.py), read
off the handlers the guard hands grpcio, for every RPC of every access table: gets and
commands on the quick lane; the feeds other processes follow and the long polls on the wide
pool; health checks on the probe lane; streams on the wide pool. The gateway's and the
figures' calls all on their wide pool, but their health checks. The behaviour each buys is
tested over gRPC in tests/e2e/test_lanes.py."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from structlog.testing import capture_logs

from services.badges.service import SPEC as BADGES
from services.governance.service import SPEC as GOVERNANCE
from services.identity.service import SPEC as IDENTITY
from services.merchants.service import SPEC as MERCHANTS
from services.platform.grpc_api import ACCESS as PLATFORM_ACCESS
from services.statistics.grpc_api import ACCESS as STATISTICS_ACCESS
from services.training.service import SPEC as TRAINING
from shared.auth import TokenRegistry
from shared.config import load_settings
from shared.grpc.guard import Guard
from shared.grpc.lanes import Lanes
from shared.grpc.server import ServiceSpec, service_access
from shared.tenancy import Access, no_owners

FEEDS = {"/qiji.feed.v1.FeedService/ReadEvents",
         "/qiji.feed.v1.PublicFeedService/ReadPublicEvents"}
SERVICES = [IDENTITY, TRAINING, MERCHANTS, BADGES, GOVERNANCE]


def pool_of(guard: Guard, method: str, stream: bool = False) -> object:
    def behaviour(request: object, context: object) -> None:
        return None
    handler = (grpc.unary_stream_rpc_method_handler(behaviour) if stream
               else grpc.unary_unary_rpc_method_handler(behaviour))
    wrapped = guard._wrap(method, handler)
    served = wrapped.unary_stream if stream else wrapped.unary_unary
    return getattr(served, "experimental_thread_pool", None)  # None: the server's own


@pytest.fixture
def lanes(tmp_path: Path) -> Iterator[Lanes]:
    made = Lanes.of("test", load_settings("identity", {"QIJI_DATA_DIR": str(tmp_path)}))
    yield made
    made.shutdown()


def guard_for(spec: ServiceSpec, lanes: Lanes, tmp_path: Path) -> Guard:
    return Guard(tokens=TokenRegistry(tmp_path / "tokens.json"), access=service_access(spec),
                 resolve=no_owners, error_domain=f"{spec.name}.qiji", lanes=lanes)


@pytest.mark.parametrize("spec", SERVICES, ids=lambda s: s.name)
def test_gets_and_commands_run_on_the_quick_lane_and_feeds_on_the_wide_pool(
        spec: ServiceSpec, lanes: Lanes, tmp_path: Path) -> None:
    guard = guard_for(spec, lanes, tmp_path)
    access = service_access(spec)
    unary = [m for m in access if m.rsplit("/", 1)[1] not in ("StreamEvents", "VerifyLog")]
    assert FEEDS <= set(unary) and len(unary) > len(FEEDS)
    assert lanes.quick is not None
    for method in unary:
        assert pool_of(guard, method) is (None if method in FEEDS else lanes.quick), method


def test_health_checks_run_on_the_probe_lane_and_streams_on_the_wide_pool(
        lanes: Lanes, tmp_path: Path) -> None:
    guard = guard_for(IDENTITY, lanes, tmp_path)
    assert lanes.probes is not None and lanes.probes is not lanes.quick
    assert pool_of(guard, "/grpc.health.v1.Health/Check") is lanes.probes
    assert pool_of(guard, "/grpc.health.v1.Health/Watch", stream=True) is None
    assert pool_of(guard, "/qiji.feed.v1.FeedService/StreamEvents", stream=True) is None


@pytest.mark.parametrize(("name", "table"), [("platform", PLATFORM_ACCESS),
                                             ("statistics", STATISTICS_ACCESS)])
def test_the_gateway_and_the_figures_serve_their_calls_on_one_pool_but_health_checks(
        name: str, table: dict[str, Access], tmp_path: Path) -> None:
    # Their unary calls wait on the services they read: no quick lane. A probe lane still.
    lanes = Lanes.of(name, load_settings(name, {"QIJI_DATA_DIR": str(tmp_path)}), quick=False)
    guard = Guard(tokens=TokenRegistry(tmp_path / "tokens.json"), access=table,
                  resolve=no_owners, error_domain=f"{name}.qiji", lanes=lanes)
    assert lanes.quick is None and lanes.probes is not None
    for method in table:
        assert pool_of(guard, method) is None, method
    assert pool_of(guard, "/grpc.health.v1.Health/Check") is lanes.probes
    lanes.shutdown()


def test_with_no_quick_lane_the_server_pool_serves_every_call(tmp_path: Path) -> None:
    lanes = Lanes.of("test", load_settings("identity", {
        "QIJI_DATA_DIR": str(tmp_path), "QIJI_GRPC_QUICK_WORKERS": "0"}))
    guard = guard_for(IDENTITY, lanes, tmp_path)
    for method in ("/qiji.identity.v1.IdentityService/GetRider", "/grpc.health.v1.Health/Check"):
        assert pool_of(guard, method) is None
    lanes.shutdown()


def test_a_call_still_queued_when_the_server_stops_is_dropped_not_run(tmp_path: Path) -> None:
    # After the server's stop the application closes: a queued call must not run against it.
    lanes = Lanes.of("test", load_settings("identity", {
        "QIJI_DATA_DIR": str(tmp_path), "QIJI_GRPC_QUICK_WORKERS": "1"}))
    assert lanes.quick is not None
    release = threading.Event()
    ran: list[str] = []
    busy = lanes.quick.submit(lambda: release.wait(5) and ran.append("first"))
    queued = lanes.quick.submit(lambda: ran.append("queued"))
    lanes.shutdown()
    release.set()
    busy.result(timeout=5)
    assert queued.cancelled() and ran == ["first"]


def test_a_call_still_running_when_the_server_stops_is_waited_for_up_to_the_grace(
        tmp_path: Path) -> None:
    # grpcio's stop ends a call past its grace for the caller, but not its handler's thread:
    # the application closes only once no handler runs on it, or the grace is spent again.
    lanes = Lanes.of("test", load_settings("identity", {
        "QIJI_DATA_DIR": str(tmp_path), "QIJI_GRPC_QUICK_WORKERS": "1"}))
    assert lanes.quick is not None
    release = threading.Event()
    finished: list[str] = []

    def handler() -> None:
        release.wait(10)
        time.sleep(0.2)  # still running when shutdown is called
        finished.append("handler")
    lanes.quick.submit(handler)
    threading.Timer(0.1, release.set).start()
    started = time.monotonic()
    assert lanes.shutdown(grace=5) is True
    assert finished == ["handler"] and time.monotonic() - started < 5

    stuck = Lanes.of("test", load_settings("identity", {
        "QIJI_DATA_DIR": str(tmp_path), "QIJI_GRPC_QUICK_WORKERS": "1"}))
    assert stuck.wide is not None
    hold = threading.Event()
    stuck.wide.submit(hold.wait, 10)
    time.sleep(0.05)
    started = time.monotonic()
    with capture_logs() as logs:
        assert stuck.shutdown(grace=0.3) is False
    assert 0.25 < time.monotonic() - started < 2
    assert [(e["event"], e["service"]) for e in logs if e["log_level"] == "warning"] == [
        ("service.stop.calls_still_running", "test")]
    hold.set()
    assert stuck.shutdown(grace=2) is True
