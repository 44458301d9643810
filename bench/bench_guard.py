"""What deciding who may reach what costs a call: the guard's tenancy decision (issue 14),
in one process, beside the same handler called without a guard in the same run.

Three ways to read one rider (identity's GetRider) on the embedded default, each N times:
- raw: the servicer's handler itself (no authentication, no roles, no scope);
- city admin: through the guard (token, roles, no scope to resolve: a city-wide role);
- platform: through the guard, resolving the rider's owners in the tenancy directory and
  checking the caller's organisation (what every tenant's call pays).
And one command, VerifyRider, as the platform: the scope decision beside the command's own
cost. Figures are microseconds per call (median of rounds); the ratio is against raw."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qiji.identity.v1 import identity_service_pb2 as ipb

from bench.common import Figure, print_figures
from services.identity.application import IdentityApplication
from services.identity.grpc_api import ACCESS, SERVICE_NAME, add_servicers
from shared.auth import TokenRegistry, add_caller
from shared.config import load_settings
from shared.context import Actor, RequestContext, acting_as
from shared.errors import QijiError
from shared.grpc.guard import Guard
from tests.inprocess import Aborted, CallContext, Registrar

CALLS = int(os.environ.get("BENCH_READ_CALLS", "2000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
RIDERS = 200


def per_call_us(call: Callable[[int], object], calls: int) -> float:
    started = time.perf_counter()
    for i in range(calls):
        call(i)
    return (time.perf_counter() - started) / calls * 1e6


def main() -> list[Figure]:
    tmp = Path(tempfile.mkdtemp(prefix="qiji-bench-guard-"))
    settings = load_settings("identity", {"QIJI_DATA_DIR": str(tmp)})
    app = IdentityApplication(settings, os.urandom(32))
    tokens_file = tmp / "tokens.json"
    admin_actor = Actor("bench-admin", frozenset({"city_admin"}))
    with acting_as(RequestContext(actor=admin_actor)):
        from services.identity.domain.values import OrganisationKind as K

        def org(kind: K, name: str, parent: str = "") -> str:
            return app.create_organisation(kind=kind, name=name, parent_id=parent,
                                           department_function=None)["organisation_id"]
        street = org(K.STREET, "荷花池街道", org(K.DISTRICT, "钟楼区", org(K.CITY, "常州市")))
        platform = org(K.PLATFORM, "骑迹外卖")
        station = org(K.STATION, "荷花池站", platform)
        riders = [app.register_rider(
            platform_id=platform, platform_rider_id=f"R{i}", name="王五",
            phone=f"139{i:08d}", national_id="", home_street_id=street,
            station_id=station)["rider_id"] for i in range(RIDERS)]
    admin = add_caller(tokens_file, "bench-admin", ["city_admin"])
    tenant = add_caller(tokens_file, "bench-platform", ["platform"], platform)
    registrar = Registrar()
    add_servicers(registrar, app)  # type: ignore[arg-type]  # a stand-in server: keeps handlers
    guard = Guard(tokens=TokenRegistry(tokens_file), access=ACCESS, resolve=app.owners,
                  error_domain="identity.qiji")
    get = f"/{SERVICE_NAME}/GetRider"
    raw = registrar.handlers[get].unary_unary
    guarded = guard._wrap(get, registrar.handlers[get]).unary_unary
    verify = f"/{SERVICE_NAME}/VerifyRider"
    raw_verify = registrar.handlers[verify].unary_unary
    guarded_verify = guard._wrap(verify, registrar.handlers[verify]).unary_unary
    requests = [ipb.GetRiderRequest(rider_id=r) for r in riders]

    def raw_get(i: int) -> Any:
        with acting_as(RequestContext(actor=admin_actor)):
            return raw(requests[i % RIDERS], None)

    def as_admin(i: int) -> Any:
        return guarded(requests[i % RIDERS], CallContext(admin))

    def as_platform(i: int) -> Any:
        return guarded(requests[i % RIDERS], CallContext(tenant))

    def verify_raw(i: int) -> Any:
        with acting_as(RequestContext(actor=admin_actor, rpc="VerifyRider",
                                      request_id=str(uuid.uuid4()))):
            try:
                return raw_verify(ipb.VerifyRiderRequest(rider_id=riders[i % RIDERS]), None)
            except QijiError:
                return None

    def verify_platform(i: int) -> Any:
        # Already verified: the command is refused by the domain after the scope is decided,
        # so each call costs the same and stores nothing.
        try:
            return guarded_verify(ipb.VerifyRiderRequest(request_id=str(uuid.uuid4()),
                                                         rider_id=riders[i % RIDERS]),
                                  CallContext(tenant))
        except Aborted:
            return None

    for warm in (raw_get, as_admin, as_platform):  # caches, the directory
        per_call_us(warm, RIDERS)
    results: dict[str, list[float]] = {k: [] for k in ("raw", "admin", "platform")}
    for _ in range(ROUNDS):
        results["raw"].append(per_call_us(raw_get, CALLS))
        results["admin"].append(per_call_us(as_admin, CALLS))
        results["platform"].append(per_call_us(as_platform, CALLS))
    raw_us = statistics.median(results["raw"])
    with acting_as(RequestContext(actor=admin_actor)):
        for r in riders:
            app.verify_rider(rider_id=r)
    verify_rounds = [(per_call_us(verify_raw, CALLS // 4), per_call_us(verify_platform,
                                                                        CALLS // 4))
                     for _ in range(ROUNDS)]
    figures = [
        Figure("GetRider through the guard, city admin (µs/call)",
               statistics.median(results["admin"]), raw_us, "µs", baseline_name="handler"),
        Figure("GetRider through the guard, platform: scope decided (µs/call)",
               statistics.median(results["platform"]), raw_us, "µs", baseline_name="handler"),
        Figure("VerifyRider (refused by the domain) through the guard, platform (µs/call)",
               statistics.median(v for _, v in verify_rounds),
               statistics.median(r for r, _ in verify_rounds), "µs", baseline_name="handler"),
    ]
    print_figures("The guard's tenancy decision, in one process (embedded default)", figures)
    app.close()
    return figures


if __name__ == "__main__":
    main()
