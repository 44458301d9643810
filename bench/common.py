"""Helpers for the benchmarks: a throwaway PostgreSQL database, a real service process, timing.

Figures on these machines are noisy: every figure is printed beside a raw baseline measured in
the same run, as a ratio, taking the median of several rounds."""

from __future__ import annotations

import base64
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import grpc
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shared.auth import add_caller
from shared.config import load_settings
from shared.grpc.channels import open_channel

ROOT = Path(__file__).resolve().parents[1]
PG = dict(host=os.environ.get("QIJI_BENCH_POSTGRES_HOST", "127.0.0.1"), port=5432,
          user="postgres")


@contextmanager
def scratch_database() -> Iterator[str]:
    name = f"qiji_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(dbname="postgres", autocommit=True, **PG) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(dbname="postgres", autocommit=True, **PG) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_services(services: list[str], dbname: str, roles: dict[str, list[str]]
                     ) -> Iterator[tuple[dict[str, str], dict[str, str]]]:
    """Starts `python -m services.<name>` for each service, on PostgreSQL, wired to each other
    as in production; yields their addresses and a token per principal named in `roles`."""
    workdir = Path(tempfile.mkdtemp(prefix="qiji-bench-"))
    tokens_file = workdir / "tokens.json"
    tokens = {p: add_caller(tokens_file, p, r) for p, r in roles.items()}
    service_token = add_caller(tokens_file, "bench-services", ["service"])
    ports = {name: free_port() for name in services}
    env = {**os.environ, "QIJI_PERSISTENCE": "postgres", "QIJI_POSTGRES_DBNAME": dbname,
           "QIJI_POSTGRES_HOST": PG["host"], "QIJI_DATA_DIR": str(workdir),
           "QIJI_TOKENS_FILE": str(tokens_file), "QIJI_LOG_FORMAT": "json",
           "QIJI_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),
           "QIJI_SERVICE_TOKEN": service_token,
           "PYTHONPATH": f"{ROOT}:{ROOT / 'build' / 'gen'}"}
    for name, port in ports.items():
        env[f"{name.upper()}_GRPC_PORT"] = str(port)
        for other in services:
            env[f"{other.upper()}_{name.upper()}_ADDRESS"] = f"127.0.0.1:{port}"
    log = open(workdir / "services.log", "wb")
    procs = []
    addresses = {name: f"127.0.0.1:{port}" for name, port in ports.items()}
    try:
        for name in services:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", f"services.{name}"], env=env, stderr=log, cwd=ROOT))
            wait_serving(addresses[name])
        yield addresses, tokens
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=20)
        log.close()


def dial(address: str) -> grpc.Channel:
    """A channel to a benchmarked service: TLS when this shell's QIJI_TLS_* settings say so
    (the services inherit them), to measure what transport security costs."""
    return open_channel(address, load_settings("qiji"))


def wait_serving(address: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    with dial(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                    return
            except grpc.RpcError:
                time.sleep(0.2)
    raise RuntimeError(f"{address} did not become SERVING")


def throughput(op: Callable[[int], None], total: int, clients: int) -> float:
    """Operations per second when `clients` threads run `total` operations between them."""
    started = time.perf_counter()
    if clients == 1:
        for i in range(total):
            op(i)
    else:
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(op, range(total)))
    return total / (time.perf_counter() - started)


def median_of(rounds: int, measure: Callable[[int], float]) -> float:
    return statistics.median(measure(r) for r in range(rounds))


def print_table(title: str, rows: list[tuple[str, float, float]], unit: str = "ops/s") -> None:
    print(f"\n{title}")
    print(f"{'figure':<44}{'qiji':>12}{'raw':>12}{'ratio':>9}")
    for name, ours, raw in rows:
        print(f"{name:<44}{ours:>12,.0f}{raw:>12,.0f}{ours / raw:>9.2f}   ({unit})")
