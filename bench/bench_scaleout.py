"""Scale-out on one machine: RegisterRider at 8 clients against 1 and against 2 identity
processes sharing one port (`QIJI_GRPC_SHARE_PORT=yes`), beside the CRUD twin (bench/twin.py)
called by the same clients; and what one stored event costs PostgreSQL, in bytes.

Each client thread has a connection of its own (the kernel spreads connections, not calls, over
the processes sharing a port), for every side alike. Each round starts the processes afresh on a
database of its own, in turn (1 process, 2 processes, the twin), so that each side starts from
an empty store; figures are the median of the rounds. Bytes per stored event: what the timed
registrations added to every table and index of identity's schema (pg_total_relation_size,
TOAST included) over the events they added — the figure BENCHMARKS.md's "city of a million
riders" is sized with.

Run: `.venv/bin/python -m bench.bench_scaleout` (BENCH_ROUNDS, BENCH_OPS, BENCH_SCALEOUT_CLIENTS,
BENCH_PROCESSES)."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from statistics import median

import grpc
from qiji.identity.v1 import identity_service_pb2 as pb
from qiji.identity.v1 import identity_service_pb2_grpc as rpc

from bench.common import (
    Figure,
    dial,
    print_figures,
    running_services,
    scratch_database,
    store_size,
    throughput,
)
from bench.twin import running_twin
from shared.config import load_settings
from shared.grpc.channels import RECONNECT, channel_credentials
from tests.city import build_city, over_stub

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
PER_ROUND = int(os.environ.get("BENCH_OPS", "1000"))
CLIENTS = int(os.environ.get("BENCH_SCALEOUT_CLIENTS", "8"))
PROCESSES = [int(p) for p in os.environ.get("BENCH_PROCESSES", "1,2").split(",")]
WARM = 64
ROLES = {"bench-admin": ["city_admin"], "bench-platform": ["platform"]}


@contextmanager
def own_connections(address: str, tls: bool) -> Iterator[Callable[[], rpc.IdentityServiceStub]]:
    """A stub per client thread, each over a connection of its own (a local subchannel pool:
    grpcio would otherwise share one connection between channels to the same address)."""
    local = threading.local()
    channels: list[grpc.Channel] = []
    lock = threading.Lock()
    # As shared/grpc/channels.py open_channel dials, TLS when this shell's settings say so.
    credentials = channel_credentials(load_settings("qiji").tls) if tls else None
    options = [*RECONNECT, ("grpc.use_local_subchannel_pool", 1)]

    def stub() -> rpc.IdentityServiceStub:
        if not hasattr(local, "stub"):
            channel = (grpc.insecure_channel(address, options=options) if credentials is None
                       else grpc.secure_channel(address, credentials, options=options))
            with lock:
                channels.append(channel)
            local.stub = rpc.IdentityServiceStub(channel)
        return local.stub
    try:
        yield stub
    finally:
        for channel in channels:
            channel.close()


def register_op(stub: Callable[[], rpc.IdentityServiceStub], tree: dict[str, str],
                platform: list[tuple[str, str]]) -> Callable[[int], None]:
    def register(_: int) -> None:
        stub().RegisterRider(pb.RegisterRiderRequest(
            request_id=str(uuid.uuid4()), platform_id=tree["platform"],
            platform_rider_id=uuid.uuid4().hex, name="骑手", phone="13812345678",
            home_street_id=tree["street"], station_id=tree["station"]),
            metadata=platform, timeout=30)
    return register


def one_round(processes: int | None) -> tuple[float, tuple[float, float] | None]:
    """Registrations a second at CLIENTS clients against `processes` identity processes (None:
    the twin), and for Qiji what each timed registration added to PostgreSQL: (bytes, events)."""
    with scratch_database() as db, running_services(["identity"], db, ROLES,
                                                    processes=processes or 1) as (addresses,
                                                                                  tokens):
        with dial(addresses["identity"]) as channel:
            city = build_city(over_stub(rpc.IdentityServiceStub(channel),
                                        [("authorization", f"Bearer {tokens['bench-admin']}")]))
        tree = {"street": city.street, "platform": city.platform, "station": city.station}
        platform = [("authorization",
                     f"Bearer {tokens.act_for('bench-platform', tree['platform'])}")]
        if processes is None:
            with running_twin(db, tokens.tokens_file) as twin_address, \
                    own_connections(twin_address, tls=False) as stub:
                register = register_op(stub, tree, platform)
                throughput(register, WARM, CLIENTS)
                return throughput(register, PER_ROUND, CLIENTS), None
        with own_connections(addresses["identity"], tls=True) as stub:
            register = register_op(stub, tree, platform)
            throughput(register, WARM, CLIENTS)
            bytes_before, events_before = store_size(db, "identity")
            rate = throughput(register, PER_ROUND, CLIENTS)
        bytes_after, events_after = store_size(db, "identity")
        return rate, ((bytes_after - bytes_before) / PER_ROUND,
                      (events_after - events_before) / PER_ROUND)


def main() -> list[Figure]:
    rates: dict[int | None, list[float]] = {p: [] for p in [*PROCESSES, None]}
    sizes: list[tuple[float, float]] = []
    for _ in range(ROUNDS):
        for processes in rates:
            rate, size = one_round(processes)
            rates[processes].append(rate)
            if size is not None:
                sizes.append(size)
    twin = median(rates[None])
    one = median(rates[PROCESSES[0]])
    figures = [Figure(f"RegisterRider, {p} identity process(es), {CLIENTS} clients",
                      median(rates[p]), twin, "ops/s", CLIENTS, baseline_name="CRUD twin")
               for p in PROCESSES]
    figures += [Figure(f"RegisterRider, {p} processes ÷ {PROCESSES[0]}, {CLIENTS} clients",
                       median(rates[p]), one, "ops/s", CLIENTS,
                       baseline_name=f"{PROCESSES[0]} process")
                for p in PROCESSES[1:]]
    print_figures(f"scale-out on one machine ({os.cpu_count()} cores; median of {ROUNDS} rounds "
                  f"of {PER_ROUND}, each process started afresh; baseline = CRUD twin, or one "
                  f"process)", figures)
    print("\nevery round (ops/s): " + "; ".join(
        f"{'twin' if p is None else f'{p} process(es)'} "
        f"{', '.join(f'{r:,.0f}' for r in rs)}" for p, rs in rates.items()))
    per_command = median(b for b, _ in sizes)
    events = median(e for _, e in sizes)
    print(f"\nwhat one RegisterRider adds to identity's schema (every table, index and TOAST, "
          f"over {PER_ROUND} registrations; median of {len(sizes)}): {per_command:,.0f} B in "
          f"{events:g} event(s), {per_command / events:,.0f} B per stored event")
    return figures


if __name__ == "__main__":
    main()
