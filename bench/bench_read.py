"""Read latency of a get RPC over gRPC, beside a bare grpcio echo server.

- GetRider (identity): the rider aggregate from the cache, fast-forwarded against the store
  (one query), its sealed personal data opened and masked for the caller, rendered.
- GetReport (governance): the report aggregate the same way, rendered.

Baseline: a grpcio server with one generic unary handler that answers with bytes of the size
of the get's response (no protobuf, no interceptor, no store), in a process of its own with the
same thread pool, called by the same client with the same metadata. Both are measured in the
same rounds, alternately, at 1 and 8 concurrent clients; p50 and p99 are each the median of the
rounds. Run: `.venv/bin/python -m bench.bench_read` (BENCH_ROUNDS, BENCH_READ_CALLS,
BENCH_CLIENTS)."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent import futures
from pathlib import Path

import grpc
from qiji.governance.v1 import governance_service_pb2 as gpb
from qiji.identity.v1 import identity_service_pb2 as ipb

from bench.bench_governance import STEP_DEGREES, world
from bench.common import (
    ROOT,
    Figure,
    children_cpu,
    free_port,
    print_figures,
    running_services,
    scratch_database,
)

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
CALLS = int(os.environ.get("BENCH_READ_CALLS", "1000"))  # per round, per figure
CONCURRENCY = [int(c) for c in os.environ.get("BENCH_CLIENTS", "1,8").split(",")]
GRPC_WORKERS = 32  # the services' default thread pool (QIJI_GRPC_WORKERS)
P50_GOAL = 2.0  # the goal: a get's p50 within twice the bare echo round trip


def main() -> list[Figure]:
    with scratch_database() as db, running_services(
            ["identity", "governance"], db,
            {"bench-admin": ["city_admin"], "bench-platform": ["platform"]}
    ) as (addresses, tokens):
        w = world(addresses, tokens)
        ichan, gchan, identity, governance = w.ichan, w.gchan, w.identity, w.governance
        admin, platform, tree, riders = w.admin, w.platform, w.tree, w.riders
        reports = [governance.SubmitReport(gpb.SubmitReportRequest(
            request_id=str(uuid.uuid4()), rider_id=riders[i], kind=gpb.REPORT_KIND_ANOMALY_WARNING,
            category=gpb.CATEGORY_ROAD_HAZARD, location=gpb.Location(
                street_id=tree["street"], latitude=20 + i * STEP_DEGREES, longitude=120),
            text="井盖缺失，夜间电动车易摔倒" * 4, attachment_refs=["oss://b/1.jpg"]),
            metadata=platform, timeout=60).report.report_id for i in range(len(riders))]

        def get_rider(i: int) -> ipb.GetRiderResponse:
            # The platform reads its riders: the phone comes back masked.
            return identity.GetRider(ipb.GetRiderRequest(rider_id=riders[i % len(riders)]),
                                     metadata=platform, timeout=30)

        def get_report(i: int) -> gpb.GetReportResponse:
            return governance.GetReport(gpb.GetReportRequest(
                report_id=reports[i % len(reports)]), metadata=admin, timeout=30)

        gets = {"GetRider (identity)": get_rider, "GetReport (governance)": get_report}
        figures = []
        sizes = {}
        for name, get in gets.items():
            size = sizes[name] = get(0).ByteSize()
            with echo_server(size) as echo_address:
                echo_chan = grpc.insecure_channel(echo_address)
                # No serializers: the echo's request and reply are raw bytes.
                echo_call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = echo_chan.unary_unary(
                    "/bench.Echo/Echo")
                request = os.urandom(50)  # about a get request: an id, a field tag

                def echo(_i: int, call: Callable[..., bytes] = echo_call,
                         md: list[tuple[str, str]] = admin, body: bytes = request) -> bytes:
                    return call(body, metadata=md, timeout=30)

                for _ in range(50):  # warm: connections, caches, prepared statements
                    get(_)
                    echo(_)
                for clients in CONCURRENCY:
                    ours, raw, cpu = [], [], []
                    service = "identity" if "identity" in name else "governance"
                    switches = []
                    for _ in range(ROUNDS):
                        before, switched = children_cpu()[service], _switches(service)
                        ours.append(percentiles(get, CALLS, clients))
                        cpu.append((children_cpu()[service] - before) / CALLS * 1e6)
                        switches.append((_switches(service) - switched) / CALLS)
                        raw.append(percentiles(echo, CALLS, clients))
                    # The service's own CPU per get (from /proc): what noise from the other
                    # processes on the machine disturbs least; and its threads' context
                    # switches per get (each a hand-off between threads, or a wait on I/O).
                    print(f"{name}, {clients} client(s): {service}'s CPU per get "
                          f"{' / '.join(f'{c:.0f}' for c in cpu)} µs, context switches per get "
                          f"{' / '.join(f'{c:.1f}' for c in switches)} (rounds)", flush=True)
                    for q, label in ((0, "p50"), (1, "p99")):
                        figures.append(Figure(
                            f"{name} {label}, {clients} client(s)",
                            statistics.median(o[q] for o in ours),
                            statistics.median(r[q] for r in raw), "ms", clients,
                            baseline_name="bare grpcio echo", goal=P50_GOAL if q == 0 else None))
                echo_chan.close()
        ichan.close()
        gchan.close()
    print_figures(f"get latency over gRPC (PostgreSQL; median of {ROUNDS} rounds of {CALLS} "
                  f"calls; baseline = bare grpcio echo of the same reply size: "
                  f"{', '.join(f'{n} {b} B' for n, b in sizes.items())})", figures)
    return figures


def _switches(service: str) -> int:
    """Context switches so far (voluntary and not) of all threads of this process's child
    `python -m services.<service>`, from /proc."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        if ppid != os.getpid() or f"services.{service}".encode() not in args:
            continue
        total = 0
        for task in (entry / "task").iterdir():
            try:
                for line in (task / "status").read_text().splitlines():
                    if "ctxt_switches:" in line:
                        total += int(line.split()[1])
            except OSError:
                continue
        return total
    return 0


def percentiles(call: Callable[[int], object], total: int, clients: int) -> tuple[float, float]:
    """p50 and p99 in ms of `total` calls made by `clients` threads, each call timed alone."""
    latencies: list[float] = []
    lock = threading.Lock()

    def worker(offset: int) -> None:
        mine = []
        for i in range(offset, total, clients):
            started = time.perf_counter()
            call(i)
            mine.append((time.perf_counter() - started) * 1000)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    latencies.sort()
    return latencies[len(latencies) // 2], latencies[min(len(latencies) - 1,
                                                         int(len(latencies) * 0.99))]


class echo_server:
    """The baseline: a bare grpcio server in a process of its own."""

    def __init__(self, reply_size: int):
        self._port = free_port()
        self._size = reply_size

    def __enter__(self) -> str:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "bench.bench_read", "--echo", str(self._port),
             str(self._size)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        address = f"127.0.0.1:{self._port}"
        with grpc.insecure_channel(address) as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
        return address

    def __exit__(self, *_exc: object) -> None:
        self._proc.terminate()
        self._proc.wait(timeout=20)


def serve_echo(port: int, reply_size: int) -> None:
    reply = os.urandom(reply_size)
    handler = grpc.method_handlers_generic_handler("bench.Echo", {
        "Echo": grpc.unary_unary_rpc_method_handler(lambda _request, _context: reply)})
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=GRPC_WORKERS),
                         handlers=[handler], options=[("grpc.so_reuseport", 0)])
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--echo":
        serve_echo(int(sys.argv[2]), int(sys.argv[3]))
    else:
        main()
