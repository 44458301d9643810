"""Helpers for the benchmarks: a throwaway PostgreSQL database, a real service process, timing.

Figures on these machines are noisy: every figure is printed beside a raw baseline measured in
the same run, as a ratio, taking the median of several rounds."""

from __future__ import annotations

import base64
import json
import os
import re
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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypedDict

import grpc
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shared.auth import ORGANISATION_ROLES, add_caller
from shared.config import load_settings
from shared.grpc.channels import open_channel

ROOT = Path(__file__).resolve().parents[1]


class Postgres(TypedDict):
    """The bench's PostgreSQL server, as keywords for psycopg.connect and make_conninfo (a
    TypedDict, so that each is checked against the parameter it fills)."""

    host: str
    port: int
    user: str


PG: Postgres = {"host": os.environ.get("QIJI_BENCH_POSTGRES_HOST", "127.0.0.1"), "port": 5432,
                "user": "postgres"}


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


class Callers(dict[str, str]):
    """Tokens by principal. A principal of a city-wide role has its token at once; one of a
    role that acts for one organisation gets it from `act_for`, once that organisation exists
    (tokens must name the organisation they act for)."""

    def __init__(self, tokens_file: Path, roles: dict[str, list[str]]):
        super().__init__()
        self.tokens_file = tokens_file
        self.roles = roles
        # The run's master key, which the services MAC and seal with: an application a bench
        # opens in its own process on their store needs it, or every reader stops at the
        # first event (its MAC does not match).
        self.master_key = os.urandom(32)
        for principal, granted in roles.items():
            if not set(granted) & ORGANISATION_ROLES:
                self[principal] = add_caller(tokens_file, principal, granted)

    def act_for(self, principal: str, organisation_id: str) -> str:
        self[principal] = add_caller(self.tokens_file, principal, self.roles[principal],
                                     organisation_id)
        return self[principal]


@contextmanager
def running_services(services: list[str], dbname: str, roles: dict[str, list[str]],
                     processes: int = 1, extra_env: dict[str, str] | None = None
                     ) -> Iterator[tuple[dict[str, str], Callers]]:
    """Starts `python -m services.<name>` for each service, on PostgreSQL, wired to each other
    as in production; yields their addresses and a token per principal named in `roles`.
    `processes` > 1: that many processes of each service share its port
    (QIJI_GRPC_SHARE_PORT=yes), each with a /metrics port of its own."""
    workdir = Path(tempfile.mkdtemp(prefix="qiji-bench-"))
    tokens_file = workdir / "tokens.json"
    tokens = Callers(tokens_file, roles)
    service_token = add_caller(tokens_file, "bench-services", ["service"])
    ports = {name: free_port() for name in services}
    env = {**os.environ, "QIJI_PERSISTENCE": "postgres", "QIJI_POSTGRES_DBNAME": dbname,
           "QIJI_POSTGRES_HOST": PG["host"], "QIJI_DATA_DIR": str(workdir),
           "QIJI_TOKENS_FILE": str(tokens_file), "QIJI_LOG_FORMAT": "json",
           "QIJI_MASTER_KEY": base64.b64encode(tokens.master_key).decode(),
           "QIJI_AUDIT_SIGNING_KEY": base64.b64encode(os.urandom(32)).decode(),
           "QIJI_SERVICE_TOKEN": service_token,
           "PYTHONPATH": f"{ROOT}:{ROOT / 'build' / 'gen'}", **(extra_env or {})}
    if processes > 1:
        env["QIJI_GRPC_SHARE_PORT"] = "yes"
    for name, port in ports.items():
        env[f"{name.upper()}_GRPC_PORT"] = str(port)
        for other in services:
            env[f"{other.upper()}_{name.upper()}_ADDRESS"] = f"127.0.0.1:{port}"
    log = open(workdir / "services.log", "wb")
    procs = []
    addresses = {name: f"127.0.0.1:{port}" for name, port in ports.items()}
    try:
        for name in services:
            for replica in range(processes):
                # Each process's own /metrics, to know when it serves: with a shared port, the
                # health check may be answered by a process already up.
                metrics_port = free_port() if processes > 1 else 0
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", f"services.{name}"], cwd=ROOT, stderr=log,
                    env={**env, f"{name.upper()}_METRICS_PORT": str(metrics_port)}))
                if replica == 0:
                    wait_serving(addresses[name])
                if metrics_port:
                    wait_metrics(metrics_port)
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
                reply = stub.Check(  # type: ignore[attr-defined]  # stub lacks Check
                    health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == 1:
                    return
            except grpc.RpcError:
                time.sleep(0.2)
    raise RuntimeError(f"{address} did not become SERVING")


def store_size(db: str, schema: str) -> tuple[int, int]:
    """(bytes of every relation of the service's schema: tables, indexes, TOAST; events in its
    events table, the one with a notification id and a state)."""
    with psycopg.connect(dbname=db, autocommit=True, **PG) as conn:
        total = conn.execute(
            "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c JOIN pg_namespace n"
            " ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind = 'r'",
            (schema,)).fetchone()
        events_table = conn.execute(
            "SELECT table_name FROM information_schema.columns WHERE table_schema = %s"
            " AND column_name IN ('notification_id', 'state') GROUP BY table_name"
            " HAVING count(*) = 2", (schema,)).fetchone()
        assert total is not None and events_table is not None
        count = conn.execute(
            f'SELECT count(*) FROM "{schema}"."{events_table[0]}"').fetchone()
        assert count is not None
        return int(total[0]), int(count[0])


def wait_metrics(port: int, timeout: float = 30) -> None:
    """Until a process's /metrics answers (it serves metrics just before it serves calls)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"no process serves /metrics on {port}")


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


def median_of(rounds: int, measure: Callable[[], float]) -> float:
    return statistics.median(measure() for _ in range(rounds))


# The write goal: with concurrent clients, commands stored at least as fast as raw
# single-row psycopg transactions at the same concurrency (a ratio of 1).
WRITE_GOAL = 1.0

# The command goal against the CRUD twin (bench/twin.py): at 8 clients, each command at
# least half as fast as the same writes done as plain SQL by a bare grpcio service.
TWIN_GOAL = 0.5
TWIN_GOAL_CLIENTS = 8
TWIN = "CRUD twin"

# Units of figures where less is better (the goal is then a ceiling on qiji / baseline).
LOWER_IS_BETTER = ("ms", "µs", "s", "MiB", "bytes")
RESULTS_ENV = "BENCH_RESULTS"


@dataclass(frozen=True)
class Figure:
    """One measured figure beside its baseline from the same run. For throughputs the ratio is
    qiji / baseline and the goal a floor; for latencies (ms, µs) it is how many times the
    baseline qiji takes, and the goal a ceiling."""

    benchmark: str
    qiji: float
    baseline: float
    unit: str = "ops/s"
    concurrency: int | None = None
    baseline_name: str = "raw"
    goal: float | None = None

    @property
    def lower_is_better(self) -> bool:
        return self.unit in LOWER_IS_BETTER

    @property
    def ratio(self) -> float:
        return self.qiji / self.baseline if self.baseline else float("nan")

    @property
    def met(self) -> bool | None:
        if self.goal is None:
            return None
        return self.ratio <= self.goal if self.lower_is_better else self.ratio >= self.goal

    @property
    def goal_text(self) -> str:
        if self.goal is None:
            return "—"
        return f"≤ {self.goal:g}×" if self.lower_is_better else f"≥ {self.goal:g}"


def _concurrency_in(name: str) -> int | None:
    found = re.search(r"(\d+) (?:client|cl\.)", name)
    return int(found.group(1)) if found else None


def record(figures: list[Figure]) -> None:
    """Hands figures to `make bench`'s combined table (bench/run_all.py), which names a file
    in BENCH_RESULTS; a script run alone just prints its own table."""
    path = os.environ.get(RESULTS_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as f:
            for figure in figures:
                f.write(json.dumps(asdict(figure), ensure_ascii=False) + "\n")


def read_recorded(path: str | Path) -> list[Figure]:
    lines = Path(path).read_text(encoding="utf-8").splitlines() if Path(path).exists() else []
    return [Figure(**json.loads(line)) for line in lines if line.strip()]


def print_table(title: str, rows: list[tuple[str, float, float]], unit: str = "ops/s",
                goal: float | None = None) -> list[Figure]:
    """Prints a script's own table and records its figures for the combined one; the
    concurrency is read from "<n> client(s)" in a figure's name."""
    figures = [Figure(name, ours, raw, unit, _concurrency_in(name), goal=goal)
               for name, ours, raw in rows]
    print_figures(title, figures)
    return figures


def print_figures(title: str, figures: list[Figure]) -> None:
    print(f"\n{title}")
    print(f"{'figure':<44}{'qiji':>12}{'raw':>12}{'ratio':>9}")
    for f in figures:
        print(f"{f.benchmark:<44}{_number(f.qiji, f.unit):>12}{_number(f.baseline, f.unit):>12}"
              f"{f.ratio:>9.2f}   ({f.unit})")
    record(figures)


def print_twin_table(title: str, rows: list[tuple[str, float, float, float]]) -> list[Figure]:
    """A command's table: (figure, Qiji, CRUD twin, raw INSERT) per row, all measured in the
    same rounds. Records two figures per row for the combined tables: Qiji beside the raw
    INSERT (goal WRITE_GOAL) and beside the twin (goal TWIN_GOAL at 8 clients)."""
    figures = []
    print(f"\n{title}")
    print(f"{'figure':<44}{'qiji':>9}{'twin':>9}{'÷twin':>7}{'raw':>9}{'÷raw':>7}")
    for name, ours, twin, raw in rows:
        clients = _concurrency_in(name)
        figures.append(Figure(name, ours, raw, "ops/s", clients, goal=WRITE_GOAL))
        figures.append(Figure(name, ours, twin, "ops/s", clients, baseline_name=TWIN,
                              goal=TWIN_GOAL if clients == TWIN_GOAL_CLIENTS else None))
        print(f"{name:<44}{ours:>9,.0f}{twin:>9,.0f}{ours / twin if twin else float('nan'):>7.2f}"
              f"{raw:>9,.0f}{ours / raw if raw else float('nan'):>7.2f}   (ops/s)")
    record(figures)
    return figures


def twin_table(figures: list[Figure]) -> str:
    """Every command measured beside its CRUD twin, with the raw INSERT of the same run
    (markdown): the issue's table."""
    raw = {(f.benchmark, f.qiji): f for f in figures if f.baseline_name == "raw"}
    header = ["command", "clients", "Qiji ops/s", "CRUD twin ops/s", "Qiji ÷ twin",
              "raw INSERT ops/s", "Qiji ÷ raw", "goal ÷ twin", "met?"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for f in figures:
        if f.baseline_name != TWIN:
            continue
        r = raw.get((f.benchmark, f.qiji))
        lines.append("| " + " | ".join([
            f.benchmark, "—" if f.concurrency is None else str(f.concurrency),
            f"{f.qiji:,.0f}", f"{f.baseline:,.0f}", f"{f.ratio:.2f}",
            f"{r.baseline:,.0f}" if r else "—", f"{r.ratio:.2f}" if r else "—",
            f.goal_text, {True: "yes", False: "no", None: "—"}[f.met]]) + " |")
    return "\n".join(lines)


def _number(value: float, unit: str) -> str:
    return f"{value:,.2f}" if unit in LOWER_IS_BETTER and value < 100 else f"{value:,.0f}"


def combined_table(figures: list[Figure]) -> str:
    """The one table `make bench` ends with (markdown, so it pastes into BENCHMARKS.md)."""
    header = ["benchmark", "concurrency", "Qiji figure", "raw baseline", "ratio", "goal",
              "met?"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for f in figures:
        met = {True: "yes", False: "no", None: "—"}[f.met]
        lines.append("| " + " | ".join([
            f.benchmark, "—" if f.concurrency is None else str(f.concurrency),
            f"{_number(f.qiji, f.unit)} {f.unit}",
            f"{_number(f.baseline, f.unit)} {f.unit} ({f.baseline_name})",
            f"{f.ratio:.2f}", f.goal_text, met]) + " |")
    return "\n".join(lines)


def children_cpu() -> dict[str, float]:
    """CPU seconds (user + system) so far of this process's `python -m services.<name>`
    children (the services, the gateway, the relay), by name, from /proc."""
    found: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) != os.getpid() or b"-m" not in args:
            continue
        module = args[args.index(b"-m") + 1].decode()
        if module.startswith("services."):
            found[module.split(".")[1]] = (int(fields[11]) + int(fields[12])) / tick
    return found
