"""Reliability on the full stack: real service processes, real PostgreSQL, concurrent callers.

- identity killed with SIGKILL in the middle of a load of concurrent commands (8 callers,
  RegisterRider → VerifyRider → GrantConsent each): after a restart every caller retries what
  got no answer with the same request id; every acknowledged command is in the store, nothing
  is stored twice and every retry answers what the first call answered.
- PostgreSQL (a private cluster of this test's own, never the shared server) stopped under
  load, twice (`pg_ctl stop -m fast`, then `-m immediate`, a crash): identity and its follower
  training report NOT_SERVING, commands fail with UNAVAILABLE (never UNKNOWN or INTERNAL, no
  traceback), and when the server is back both report SERVING and answer again without a
  restart; training's follower resumes identity's feed.
- RabbitMQ restarted under load with the relay: tests/e2e/test_relay.py.

Each test prints its figures and writes them to build/reliability/<test>.json."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from qiji.identity.v1 import identity_service_pb2 as ipb
from qiji.identity.v1 import identity_service_pb2_grpc as ipb_grpc

from shared.auth import add_caller
from shared.checkpoints import CHECKPOINT_TOPIC
from shared.grpc.server import LIVENESS
from shared.idempotency import RequestRecord
from tests.conftest import _admin_conninfo, missing_server
from tests.e2e.client import bearer, call_error, create_city, phone_number
from tests.e2e.conftest import (
    REPO,
    ServiceProcess,
    caught_up,
    eventually,
    free_port,
    start_beside,
    start_service,
)

pytestmark = pytest.mark.e2e

FIGURES = REPO / "build" / "reliability"
TOPIC = "services.identity.domain.model:Rider.{}"
# How long a caller keeps retrying one command before the test gives up on it.
GIVE_UP_SECONDS = 45.0
# The codes a caller may retry on: the server or its store is away for a moment.
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
PG_BIN = Path("/usr/lib/postgresql/15/bin")
# The calling system of the load: the city's platform company, acting for its platform.
PLATFORM_PRINCIPAL = "e2e-reliability-platform"


# ---------------------------------------------------------------------------- the load


@dataclass
class Command:
    """One command as a caller sees it: sent, perhaps retried, answered (or not)."""

    rpc: str
    request: Any
    first_sent: float = 0.0
    answered_at: float | None = None
    attempts: int = 0
    slowest_attempt: float = 0.0  # seconds
    # Every attempt as (sent, answered or failed), on the monotonic clock.
    attempt_spans: list[tuple[float, float]] = field(default_factory=list)
    answer: Any = None
    failures: list[tuple[str, str]] = field(default_factory=list)  # (code, message)

    @property
    def request_id(self) -> str:
        return self.request.request_id

    @property
    def record_id(self) -> uuid.UUID:
        """The id of the request record the service stores with the command's events."""
        return RequestRecord.create_id(PLATFORM_PRINCIPAL, self.rpc, self.request_id)


def platform_token(identity: ServiceProcess, city: dict[str, str]) -> str:
    """The load's token: the platform company's, acting for the city's platform."""
    return add_caller(identity.tokens_file, PLATFORM_PRINCIPAL, ["platform"], city["platform"])


def register_request(city: dict[str, str]) -> ipb.RegisterRiderRequest:
    return ipb.RegisterRiderRequest(
        request_id=str(uuid.uuid4()), platform_id=city["platform"],
        platform_rider_id=f"rel-{uuid.uuid4().hex[:12]}", name="赵六", phone=phone_number(),
        home_street_id=city["street"], station_id=city["station"])


class Load:
    """`callers` threads, each with a channel of its own to `address` (a channel reconnects by
    itself after the server comes back), each registering riders one after another until told
    to finish and, for each, verifying them and granting a consent: three commands per rider,
    each retried with the same request id until it is answered."""

    def __init__(self, address: str, token: str, city: dict[str, str], *, callers: int,
                 pause: float = 0.0):
        self.address = address
        self.token = token
        self.city = city
        self.callers = callers
        self.pause = pause
        self.commands: list[Command] = []
        self.unexpected: list[tuple[str, str, str]] = []  # (rpc, code, message)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads = [threading.Thread(target=self._run, name=f"caller-{i}", daemon=True)
                         for i in range(callers)]

    def start(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def finish(self, timeout: float) -> None:
        """Callers finish the rider they are at (every command answered) and stop."""
        self._stopping.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in self._threads), "callers still busy"

    def answered(self) -> int:
        with self._lock:
            return sum(c.answered_at is not None for c in self.commands)

    def wait_answered(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.answered() < count:
            assert time.monotonic() < deadline, f"only {self.answered()} answered"
            time.sleep(0.02)

    def _run(self) -> None:
        channel = grpc.insecure_channel(self.address)
        stub = ipb_grpc.IdentityServiceStub(channel)
        try:
            while not self._stopping.is_set():
                registered = self._send(stub, "RegisterRider", register_request(self.city))
                if registered is None:
                    return
                rider_id = registered.rider.rider_id
                if self._send(stub, "VerifyRider", ipb.VerifyRiderRequest(
                        request_id=str(uuid.uuid4()), rider_id=rider_id)) is None:
                    return
                if self._send(stub, "GrantConsent", ipb.GrantConsentRequest(
                        request_id=str(uuid.uuid4()), rider_id=rider_id,
                        scope=ipb.CONSENT_SCOPE_PHONE,
                        recipient_id=self.city["street"])) is None:
                    return
                time.sleep(self.pause)
        finally:
            channel.close()

    def _send(self, stub: Any, rpc: str, request: Any) -> Any:
        command = Command(rpc, request, first_sent=time.monotonic())
        with self._lock:
            self.commands.append(command)
        backoff = 0.05
        while time.monotonic() - command.first_sent < GIVE_UP_SECONDS:
            command.attempts += 1
            called = time.monotonic()
            try:
                answer = getattr(stub, rpc)(request, metadata=bearer(self.token), timeout=10)
            except grpc.RpcError as error:
                command.slowest_attempt = max(command.slowest_attempt, time.monotonic() - called)
                command.attempt_spans.append((called, time.monotonic()))
                assert isinstance(error, grpc.Call)
                command.failures.append((error.code().name, error.details() or ""))
                if error.code() not in RETRYABLE:
                    with self._lock:
                        self.unexpected.append((rpc, error.code().name, error.details() or ""))
                    return None
                time.sleep(backoff)
                backoff = min(backoff * 2, 0.5)
                continue
            command.answer = answer
            command.answered_at = time.monotonic()
            command.attempt_spans.append((called, command.answered_at))
            command.slowest_attempt = max(command.slowest_attempt, command.answered_at - called)
            return answer
        return None

    def spans_within(self, start: float, end: float) -> list[float]:
        """How long each attempt took of the window from `start` to `end`: counted from
        `start` for one already in flight then, from its sending for the others."""
        with self._lock:
            commands = list(self.commands)
        return [ended - max(sent, start) for c in commands
                for sent, ended in list(c.attempt_spans) if sent < end and ended > start]

    def failure_codes(self) -> Counter[str]:
        return Counter(code for c in self.commands for code, _ in c.failures)

    def failure_messages(self) -> list[str]:
        return [message for c in self.commands for _, message in c.failures]


def replay(address: str, token: str, commands: list[Command]) -> list[Command]:
    """Sends every command again with its request id; returns those whose answer differs from
    the first (a retry must answer what the first call answered, and store nothing)."""
    channel = grpc.insecure_channel(address)
    stub = ipb_grpc.IdentityServiceStub(channel)
    differing = []
    try:
        for command in commands:
            again = getattr(stub, command.rpc)(command.request, metadata=bearer(token),
                                               timeout=10)
            if again.SerializeToString(deterministic=True) != (
                    command.answer.SerializeToString(deterministic=True)):
                differing.append(command)
    finally:
        channel.close()
    return differing


# ---------------------------------------------------------------------------- the store


@dataclass
class StoredLog:
    """identity's events as stored (read with SQL, not through the service)."""

    rows: list[tuple[int, uuid.UUID, int, str, dict[str, Any]]]  # id, originator, version, ...

    def originators(self) -> set[uuid.UUID]:
        return {r[1] for r in self.rows}

    def of(self, name: str) -> list[tuple[int, uuid.UUID, int, str, dict[str, Any]]]:
        return [r for r in self.rows if r[3] == TOPIC.format(name)]


def stored_log(conninfo: str, schema: str) -> StoredLog:
    """What commands stored: the log without the checkpoints identity's sealer signs of it on
    its own clock."""
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute(
            f'SELECT notification_id, originator_id, originator_version, topic, state '
            f'FROM "{schema}".identity_events WHERE topic <> %s ORDER BY notification_id',
            (CHECKPOINT_TOPIC,)).fetchall()
    return StoredLog([(n, o, v, t, json.loads(bytes(s))) for n, o, v, t, s in rows])


def check_store(load: Load, log: StoredLog) -> tuple[dict[str, int], list[str]]:
    """Whether every answered command's events are in the store, once: the counts, and what
    is wrong."""
    answered = [c for c in load.commands if c.answered_at is not None]
    by_rpc = {rpc: [c for c in answered if c.rpc == rpc]
              for rpc in ("RegisterRider", "VerifyRider", "GrantConsent")}
    ours = {uuid.UUID(c.answer.rider.rider_id) for c in by_rpc["RegisterRider"]}
    registered = Counter(r[1] for r in log.of("Registered") if r[1] in ours)
    verified = Counter(r[1] for r in log.of("Verified") if r[1] in ours)
    consents = Counter(r[4]["consent_id"] for r in log.of("ConsentGranted") if r[1] in ours)
    records = log.originators()

    missing = [c for c in answered if c.record_id not in records]
    missing += [c for c in by_rpc["RegisterRider"]
                if registered[uuid.UUID(c.answer.rider.rider_id)] == 0]
    missing += [c for c in by_rpc["VerifyRider"]
                if verified[uuid.UUID(c.answer.rider.rider_id)] == 0]
    missing += [c for c in by_rpc["GrantConsent"] if consents[c.answer.consent_id] == 0]
    # An event stored twice for one command, or a command stored twice under two ids (more
    # riders registered, or consents granted, than commands answered).
    duplicates = sum(n - 1 for counts in (registered, verified, consents)
                     for n in counts.values())
    duplicates += len(registered) - len(by_rpc["RegisterRider"])
    duplicates += len(verified) - len(by_rpc["VerifyRider"])
    duplicates += len(consents) - len(by_rpc["GrantConsent"])
    problems = [f"acknowledged but not stored: {c.rpc} {c.request_id}" for c in missing]
    if duplicates:
        problems.append(f"{duplicates} commands stored more than once")
    found = sum(registered.values()) + sum(verified.values()) + sum(consents.values())
    return {"events_found_in_store": found, "missing": len(missing),
            "duplicates": duplicates}, problems


def assert_nothing_lost_or_doubled(load: Load, problems: list[str], differing: list[Command],
                                   stored_after_replay: int) -> None:
    """Every command answered; callers only ever saw UNAVAILABLE (never an internal error or
    a deadline passing, no traceback); every acknowledged command stored once; replaying every
    command with its request id answered the first answer and stored nothing."""
    assert not load.unexpected, f"non-retryable failures: {load.unexpected[:5]}"
    assert load.answered() == len(load.commands), "commands left unanswered"
    assert set(load.failure_codes()) <= {"UNAVAILABLE"}, load.failure_codes()
    assert not any("Traceback" in m for m in load.failure_messages())
    assert not problems, problems
    assert not differing, [(c.rpc, c.request_id) for c in differing[:5]]
    assert stored_after_replay == 0


def write_figures(name: str, figures: dict[str, Any]) -> None:
    FIGURES.mkdir(parents=True, exist_ok=True)
    (FIGURES / f"{name}.json").write_text(json.dumps(figures, indent=2, ensure_ascii=False))
    print(f"\n[reliability] {name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))


# ---------------------------------------------------------------------------- kill -9


def test_acknowledged_commands_survive_kill_9_under_load_and_retries_store_nothing_twice(
        postgres_db: str, tmp_path: Path) -> None:
    metrics_port = free_port()
    identity = start_service("identity", postgres_db, tmp_path / "identity",
                             extra_env={"QIJI_POSTGRES_POOL_SIZE": "2",
                                        "IDENTITY_GRPC_WORKERS": "16",
                                        "IDENTITY_METRICS_PORT": str(metrics_port)})
    conninfo = _admin_conninfo(postgres_db)
    kills: list[dict[str, Any]] = []
    # Saves and commits of each incarnation, read just before it is killed: the kills must
    # land on group commits that several commands share.
    commits: list[tuple[float, float]] = []
    try:
        city = create_city(identity.client("city_admin"))
        token = platform_token(identity, city)
        load = Load(identity.address, token, city, callers=8).start()
        for _ in range(2):
            load.wait_answered(load.answered() + 120, timeout=30)
            commits.append(commit_batches(metrics_port))
            identity.kill()
            killed_at = time.monotonic()
            # What the store holds at the kill (the process is gone, the database is not):
            # which of the commands in flight were stored although their callers got no answer.
            at_kill = stored_log(conninfo, identity.schema).originators()
            with load._lock:
                in_flight = [c for c in load.commands
                             if c.answered_at is None or c.answered_at > killed_at]
            identity.start()
            kills.append({
                "acknowledged_before": load.answered() - sum(
                    c.answered_at is not None for c in in_flight),
                "in_flight": len(in_flight),
                "stored_but_unanswered": sum(c.record_id in at_kill for c in in_flight),
                "down_seconds": round(time.monotonic() - killed_at, 2)})
            load.wait_answered(load.answered() + 30, timeout=30)
        load.finish(timeout=60)

        log = stored_log(conninfo, identity.schema)
        stored, problems = check_store(load, log)
        # Every command again, with its request id: the first answer, and nothing stored.
        differing = replay(identity.address, token, load.commands)
        stored_after_replay = len(stored_log(conninfo, identity.schema).rows) - len(log.rows)
        write_figures("kill_9_under_load", {
            "callers": load.callers, "commands_sent": len(load.commands),
            "acknowledged": load.answered(), "kills": kills,
            "saves_and_commits_before_each_kill": commits,
            "retried": sum(c.attempts > 1 for c in load.commands),
            "retry_attempts": sum(c.attempts - 1 for c in load.commands),
            "failure_codes": dict(load.failure_codes()), **stored,
            "replayed_with_a_different_answer": len(differing),
            "stored_by_replay": stored_after_replay})

        assert_nothing_lost_or_doubled(load, problems, differing, stored_after_replay)
        assert all(k["in_flight"] for k in kills), "a kill hit nothing in flight"
        saves, shared_commits = map(sum, zip(*commits, strict=True))
        assert saves > shared_commits, "no commit was shared: group commit was not exercised"
    finally:
        if identity.running:
            identity.stop()


def commit_batches(metrics_port: int) -> tuple[float, float]:
    """(saves, commits) of the process's group commit so far, from its /metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5
                                  ).read().decode()
    values = {sample.name: sample.value for family in text_string_to_metric_families(text)
              for sample in family.samples if sample.name.startswith("qiji_commit_batch_saves")}
    return values["qiji_commit_batch_saves_sum"], values["qiji_commit_batch_saves_count"]


# ---------------------------------------------------------------------------- PostgreSQL


class PrivateCluster:
    """A PostgreSQL cluster of this test's own (initdb in a temporary directory, trust auth, a
    free port, its socket in that directory), so that it can be stopped and started under
    load without touching the server everyone else shares."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="qiji-pg-"))
        shutil.chown(self.dir, "postgres")
        self.data = self.dir / "data"
        self.port = free_port()
        self._as_postgres(PG_BIN / "initdb", "-D", str(self.data), "-A", "trust",
                          "-U", "postgres", "--no-sync", "-E", "UTF8", "--locale=C.UTF-8")
        self.start()

    def _as_postgres(self, *args: str | Path) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *map(str, args)], check=True,
                       capture_output=True, timeout=60)

    def start(self) -> None:
        self._as_postgres(
            PG_BIN / "pg_ctl", "-D", self.data, "-l", self.dir / "server.log", "-w", "start",
            "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
                  "-c fsync=off -c max_connections=50")

    def stop(self, mode: str) -> None:
        self._as_postgres(PG_BIN / "pg_ctl", "-D", self.data, "-m", mode, "-w", "stop")

    @property
    def conninfo(self) -> str:
        return psycopg.conninfo.make_conninfo(host="127.0.0.1", port=self.port, user="postgres",
                                              dbname="postgres", connect_timeout=3)

    def env(self) -> dict[str, str]:
        return {"QIJI_POSTGRES_HOST": "127.0.0.1", "QIJI_POSTGRES_PORT": str(self.port)}

    def remove(self) -> None:
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass  # already stopped
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def cluster() -> Iterator[PrivateCluster]:
    if not (PG_BIN / "initdb").exists():
        missing_server(f"no PostgreSQL server binaries in {PG_BIN}")
    made = PrivateCluster()
    try:
        yield made
    finally:
        made.remove()


class HealthWatch:
    """Polls grpc.health.v1 Check of each server every 50 ms; records every change."""

    def __init__(self, servers: list[ServiceProcess]):
        self.changes: list[tuple[float, str, str]] = []  # (when, service, status)
        self.current: dict[str, str] = {}
        self._stopping = threading.Event()
        self._threads = [threading.Thread(target=self._watch, args=(s,), daemon=True)
                         for s in servers]
        for thread in self._threads:
            thread.start()

    def _watch(self, server: ServiceProcess) -> None:
        channel = grpc.insecure_channel(server.address)
        stub = health_pb2_grpc.HealthStub(channel)
        while not self._stopping.is_set():
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.RpcError as error:
                status = f"error:{error.code().name}"  # type: ignore[attr-defined]
            if self.current.get(server.service) != status:
                self.current[server.service] = status
                self.changes.append((time.monotonic(), server.service, status))
            self._stopping.wait(0.05)
        channel.close()

    def wait_for(self, status: str, services: list[str], timeout: float) -> float:
        """Seconds until every one of `services` reports `status`."""
        started = time.monotonic()
        while not all(self.current.get(s) == status for s in services):
            assert time.monotonic() - started < timeout, (
                f"not all {status} within {timeout} s: {self.current}")
            time.sleep(0.02)
        return time.monotonic() - started

    def stop(self) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join(2)


def test_services_report_not_serving_while_postgres_is_down_and_recover_by_themselves(
        cluster: PrivateCluster, tmp_path: Path) -> None:
    identity = start_service("identity", "postgres", tmp_path / "identity",
                             extra_env={**cluster.env(), "QIJI_POSTGRES_POOL_SIZE": "2",
                                        "IDENTITY_GRPC_WORKERS": "16"})
    servers = [identity]
    watch = None
    outages: list[dict[str, Any]] = []
    probes: list[Command] = []
    try:
        (tmp_path / "training").mkdir()
        training = start_beside("training", identity, tmp_path / "training", **cluster.env(),
                                QIJI_POSTGRES_POOL_SIZE="2")
        servers.append(training)
        names = [s.service for s in servers]
        watch = HealthWatch(servers)
        city = create_city(identity.client("city_admin"))
        token = platform_token(identity, city)
        # training leads its follower of identity (an advisory lock in the store).
        leaders = eventually(lambda: advisory_locks(cluster.conninfo), "a follower leads")
        load = Load(identity.address, token, city, callers=4, pause=0.02).start()
        # A clean stop, then a crash long enough for commands waiting on the store to give up.
        for mode, down_for in (("fast", 4.0), ("immediate", 8.0)):
            load.wait_answered(load.answered() + 60, timeout=20)
            failures_before = len(load.failure_messages())
            stopped = time.monotonic()
            cluster.stop(mode)
            not_serving = watch.wait_for("NOT_SERVING", names, timeout=10)
            # A command while the store is away: UNAVAILABLE, soon (not at the caller's
            # deadline), saying why; the load keeps knocking meanwhile.
            probe = Command("RegisterRider", register_request(city), first_sent=time.monotonic())
            refused = call_error(lambda: identity.client(token=token).RegisterRider(
                probe.request))  # noqa: B023
            refused_in = time.monotonic() - probe.first_sent
            probe.failures.append((refused.code.name, refused.message))
            # Not ready, yet alive: a liveness probe must not restart the replicas meanwhile.
            alive = {s.service: health_pb2_grpc.HealthStub(s.channel).Check(
                health_pb2.HealthCheckRequest(service=LIVENESS), timeout=2).status
                for s in (identity, training)}
            time.sleep(max(0.0, down_for - (time.monotonic() - stopped)))
            cluster.start()
            back = time.monotonic()
            serving = watch.wait_for("SERVING", names, timeout=20)
            # The refused command, retried with its request id, now succeeds (once).
            probe.answer = identity.client(token=token).RegisterRider(probe.request)
            probe.answered_at = time.monotonic()
            probes.append(probe)
            load.wait_answered(load.answered() + 30, timeout=20)
            # Every call of the load during the outage, those in flight when the stop began
            # included: how long each took (counted from the stop for those): the longest a
            # caller waited to hear that the store is away.
            during = load.spans_within(stopped, back)
            outages.append({
                "mode": mode, "seconds_to_not_serving": round(not_serving, 2),
                "refused": f"{refused.code.name}/{refused.reason}",
                "refused_in_seconds": round(refused_in, 2),
                "calls_during_outage": len(during),
                "slowest_call_during_outage_seconds": round(max(during, default=0.0), 2),
                "down_seconds": round(back - stopped, 2),
                "seconds_to_serving_after_start": round(serving, 2),
                "liveness_during_outage": {k: health_pb2.HealthCheckResponse.ServingStatus.Name(
                    v) for k, v in alive.items()},
                "failed_calls_of_the_load": len(load.failure_messages()) - failures_before,
            })
        load.finish(timeout=60)
        load.commands.extend(probes)

        log = stored_log(cluster.conninfo, identity.schema)
        stored, problems = check_store(load, log)
        differing = replay(identity.address, token, load.commands)
        stored_after_replay = len(stored_log(cluster.conninfo, identity.schema).rows) - len(
            log.rows)
        # training's background follower of identity resumed after both outages: it reaches
        # the last rider event identity stored (no request here makes it catch up).
        last = max(r[0] for r in log.rows if r[3] in (TOPIC.format("Registered"),
                                                     TOPIC.format("Verified")))
        started = time.monotonic()
        while (tracked := training_position(cluster.conninfo, training.schema)) < last:
            if time.monotonic() - started > 15:
                break
            time.sleep(0.1)
        # After the restarts (which end every session, and every lock with it) the follower
        # leads again under its lock, instead of following without one.
        started = time.monotonic()
        while advisory_locks(cluster.conninfo) < leaders and time.monotonic() - started < 15:
            time.sleep(0.2)
        relocked = advisory_locks(cluster.conninfo)
        write_figures("postgres_restart_under_load", {
            "callers": load.callers, "commands_sent": len(load.commands),
            "acknowledged": load.answered(), "outages": outages,
            "retried": sum(c.attempts > 1 for c in load.commands),
            "failure_codes": dict(load.failure_codes()),
            "slowest_call_seconds": round(max(c.slowest_attempt for c in load.commands), 2),
            **stored,
            "replayed_with_a_different_answer": len(differing),
            "stored_by_replay": stored_after_replay,
            "follower_caught_up_seconds": round(time.monotonic() - started, 2),
            "health_changes": len(watch.changes),
            "leader_locks_before_and_after": [leaders, relocked]})

        for outage in outages:
            assert outage["refused"] == "UNAVAILABLE/STORE_UNAVAILABLE", outage
            assert set(outage["liveness_during_outage"].values()) == {"SERVING"}, outage
            # Refused soon, not at the caller's deadline (10 s).
            assert outage["refused_in_seconds"] < 5, outage
            # Calls in flight when the store went heard it within about a second too.
            assert outage["slowest_call_during_outage_seconds"] < 1.5, outage
        # An expected outage is told in a few warnings (the store gate's, a background job's
        # that met it first), never as errors or exception dumps.
        for server in servers:
            dumps = [line for line in server.log_path.read_text(errors="replace").splitlines()
                     if '"level": "error"' in line or '"exception"' in line]
            assert not dumps, dumps[:3]
        assert_nothing_lost_or_doubled(load, problems, differing, stored_after_replay)
        # Each outage flipped each service's health once each way, no flapping in between.
        for service in names:
            assert [status for _, s, status in watch.changes if s == service] == [
                "SERVING", "NOT_SERVING", "SERVING", "NOT_SERVING", "SERVING"], watch.changes
        assert relocked == leaders, f"{relocked} of {leaders} leaders took their lock again"
        assert tracked >= last, f"training's follower stopped at {tracked} (identity at {last})"
        caught_up(training)
        # Neither service was restarted: the same processes served throughout.
        assert identity.running and training.running
    finally:
        if watch is not None:
            watch.stop()
        for server in reversed(servers):
            if server.running:
                server.terminate()


def training_position(conninfo: str, schema: str) -> int:
    """The last position of identity's log that training's follower applied."""
    with psycopg.connect(conninfo) as conn:
        row = conn.execute(f'SELECT max(notification_id) FROM "{schema}".training_tracking '
                           "WHERE application_name = 'identity'").fetchone()
    return row[0] or 0 if row else 0


def advisory_locks(conninfo: str) -> int:
    """How many advisory locks are held in the cluster: one per leading follower."""
    with psycopg.connect(conninfo) as conn:
        row = conn.execute("SELECT count(*) FROM pg_locks "
                           "WHERE locktype = 'advisory' AND granted").fetchone()
    return row[0] if row else 0
