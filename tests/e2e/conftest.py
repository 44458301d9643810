"""The end-to-end harness: real service processes (`python -m services.<name>`) on free ports
over this session's PostgreSQL database (a schema each), one bearer token per role in a tokens
file the processes of a module share, and a plain grpcio client.

Every other service follows identity's feed over gRPC, so it is started beside an identity
process of its own module (`start_beside`), with identity's address and the `service` token in
its environment; badges follows training's feed too. The fixtures `identity`, `training`,
`merchants`, `badges` and `governance` are one process each per module."""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, TypeVar

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from qiji.badges.v1 import badges_service_pb2 as badges_pb
from qiji.feed.v1 import feed_service_pb2 as feed_pb
from qiji.governance.v1 import governance_service_pb2 as governance_pb
from qiji.identity.v1 import identity_service_pb2 as ipb
from qiji.merchants.v1 import merchants_service_pb2 as merchants_pb
from qiji.training.v1 import training_service_pb2 as training_pb

from services.identity.rider_record import SOURCES as RECORD_SOURCES
from shared.auth import CITY_WIDE_ROLES, add_caller
from shared.config import TlsSettings
from shared.grpc.channels import open_channel
from tests.conftest import badges_key_env, pg_env
from tests.e2e.client import API, Client, call_error, new_request_id, phone_number, unique

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
LOG_TAIL_CHARS = 20_000
# How long a test waits for a service's background reaction to another's events.
REACTION_TIMEOUT = 10.0
# The services a process must report SERVING (besides the whole server, "") before tests run.
HEALTH_NAMES = {service: ["", api.full_name] for service, api in API.items()}

T = TypeVar("T")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServiceProcess:
    """One service process, started and stopped as an operator would: by signals."""

    def __init__(self, *, service: str, env: dict[str, str], port: int, log_path: Path,
                 tokens: dict[str, str], db: str, schema: str,
                 client_tls: TlsSettings | None = None):
        self.service = service
        # How the test's own channel dials this process (plaintext unless its port is TLS).
        self.client_tls = client_tls
        self.env = env
        self.port = port
        self.log_path = log_path
        self.tokens = tokens
        self.db = db
        self.schema = schema
        self.tokens_file = Path(env["QIJI_TOKENS_FILE"])
        self.proc: subprocess.Popen[bytes] | None = None
        self.channel: grpc.Channel | None = None
        self._log: IO[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def client(self, role: str | None = None, *, token: str | None = None) -> Client:
        """A caller holding the token of `role` (or the given token, or none at all); its
        `client.SomeRpc(request)` calls this service's own RPCs. A role that acts for one
        organisation acts for the one the module last named with `act_for`."""
        assert self.channel is not None, "the server is not running"
        if role is not None and role not in self.tokens:
            raise AssertionError(f"no {role} acts for any organisation yet: call act_for "
                                 "(create_city does, for the platform and street office)")
        return Client(self.channel, self.tokens[role] if role is not None else token,
                      self.service, acts_for=self.act_for if role == "city_admin" else None)

    def act_for(self, **organisations: str) -> dict[str, str]:
        """Callers of these roles, acting for these organisations (`platform=<id>`): added to
        the module's shared tokens file, and what `client(role)` holds from now on. Each
        organisation's caller is a principal of its own, so earlier clients keep working."""
        issued = {role: self._caller_token(role, organisation)
                  for role, organisation in organisations.items()}
        self.tokens.update(issued)
        return issued

    def client_for(self, role: str, organisation: str) -> Client:
        """A caller of `role` acting for `organisation`, whatever `client(role)` holds: for a
        test that works with several organisations of one kind (two platforms, or the module's
        city beside one of its own)."""
        assert self.channel is not None, "the server is not running"
        return Client(self.channel, self._caller_token(role, organisation), self.service)

    def _caller_token(self, role: str, organisation: str) -> str:
        # One caller per role and organisation in a module, kept in the shared tokens dict
        # under "role@organisation": issuing it again would rotate its principal's token, and
        # clients holding the old one would stop working.
        key = f"{role}@{organisation}"
        if key not in self.tokens:
            self.tokens[key] = add_caller(self.tokens_file, f"e2e-{role}-{organisation[:8]}",
                                          [role], organisation)
        return self.tokens[key]

    def last_position(self) -> int:
        """The position of the newest event in this service's log."""
        return self.client("service").last_position()

    def events(self, *topics: str) -> list[feed_pb.StoredEvent]:
        """Every event in this service's log (of `topics`, if given)."""
        return self.client("service").all_events(topics=list(topics))

    def start(self) -> None:
        assert not self.running, "already running"
        self._log = open(self.log_path, "ab")
        self._log.write(f"----- start {time.strftime('%H:%M:%S')} -----\n".encode())
        self._log.flush()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", f"services.{self.service}"],
            cwd=REPO, env=self.env, stdout=self._log, stderr=self._log,
            stdin=subprocess.DEVNULL,
        )
        self.channel = open_channel(self.address, self.client_tls)
        self._wait_serving()

    def _wait_serving(self) -> None:
        assert self.proc is not None and self.channel is not None
        health = health_pb2_grpc.HealthStub(self.channel)
        names = HEALTH_NAMES.get(self.service, [""])
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"{self.service} exited with {self.proc.returncode} at start:\n"
                            f"{self.log_tail()}")
            try:
                if all(health.Check(health_pb2.HealthCheckRequest(service=name), timeout=1
                                    ).status == health_pb2.HealthCheckResponse.SERVING
                       for name in names):
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
        self.proc.kill()
        self.proc.wait()
        pytest.fail(f"{self.service} not SERVING within {START_TIMEOUT}s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: the process dies at once, mid-whatever, as in a crash or an OOM kill."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=STOP_TIMEOUT)
        self._release()

    def _release(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def terminate(self) -> tuple[int, float]:
        """SIGTERM, then wait; returns (exit code, seconds taken). Killed after STOP_TIMEOUT."""
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            code = -signal.SIGKILL
        elapsed = time.monotonic() - started
        self._release()
        return code, elapsed

    def stop(self) -> None:
        code, elapsed = self.terminate()
        assert code == 0 and elapsed < STOP_TIMEOUT, (
            f"{self.service} did not stop cleanly on SIGTERM (exit {code} after {elapsed:.1f}s):"
            f"\n{self.log_tail()}")

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return text[-LOG_TAIL_CHARS:]


def issue_tokens(tokens_file: Path) -> dict[str, str]:
    """One caller per city-wide role (principal "e2e-<role>") in `tokens_file`; returns
    role -> token. Roles that act for one organisation get theirs once it exists
    (ServiceProcess.act_for)."""
    return {role: add_caller(tokens_file, f"e2e-{role}", [role])
            for role in sorted(CITY_WIDE_ROLES)}


SESSION_MASTER_KEY = base64.b64encode(os.urandom(32)).decode()
SESSION_AUDIT_SIGNING_KEY = base64.b64encode(os.urandom(32)).decode()


def start_service(service: str, postgres_db: str, tmp: Path, *,
                  tokens_file: Path | None = None, tokens: dict[str, str] | None = None,
                  extra_env: dict[str, str] | None = None,
                  client_tls: TlsSettings | None = None) -> ServiceProcess:
    """Starts `python -m services.<service>` in a schema of its own. Without `tokens_file` it
    gets a new tokens file with one token per role; with one, `tokens` are that file's tokens
    (role -> token) and the process shares it. `extra_env` is set last (e.g. the address of an
    upstream service and the `service` token a follower presents there). The pool of database
    connections is QIJI_POSTGRES_POOL_SIZE of the test run, or 4: the test server is shared
    with other test sessions, and a small pool leaves room. `client_tls`: how the test's own
    channel dials the process, when `extra_env` makes its port serve TLS."""
    if tokens_file is None:
        tokens_file = tmp / "tokens.json"
        tokens = issue_tokens(tokens_file)
    assert tokens is not None, "pass the tokens of the tokens file you pass"
    schema = f"e2e_{uuid.uuid4().hex[:12]}"
    port = free_port()
    # Only what the harness sets: no QIJI_* or <SERVICE>_* setting leaks in from the caller.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("QIJI_", f"{service.upper()}_"))}
    env.update({
        "QIJI_DATA_DIR": str(tmp / "data"),
        "QIJI_TOKENS_FILE": str(tokens_file),
        # One master key for every process of the session, as in production (the services
        # share QIJI_MASTER_KEY: a follower checks its upstream's MACs under it), and one audit
        # signing key (required on PostgreSQL; never made per run).
        "QIJI_MASTER_KEY": SESSION_MASTER_KEY,
        "QIJI_AUDIT_SIGNING_KEY": SESSION_AUDIT_SIGNING_KEY,
        # No checkpoint event appears while a test counts positions or events (tests that
        # want checkpoints set their own cadence in `extra_env`).
        "QIJI_AUDIT_CHECKPOINT_SECONDS": "3600",
        "QIJI_AUDIT_CHECKPOINT_EVENTS": "1000000",
        "QIJI_LOG_FORMAT": "json",
        f"{service.upper()}_GRPC_PORT": str(port),
        "PYTHONUNBUFFERED": "1",
        "QIJI_POSTGRES_POOL_SIZE": os.environ.get("QIJI_POSTGRES_POOL_SIZE", "4"),
        **pg_env(postgres_db, schema),
        # identity reads riders' records from the other four services' feeds: none of them
        # is beside it unless the test says so (never another run's process on a default port).
        **({f"IDENTITY_{other.upper()}_ADDRESS": nobody_listening()
            for other in RECORD_SOURCES} if service == "identity" else {}),
        **(extra_env or {}),
    })
    # The very dict, not a copy: callers added for one process of the module are every
    # process's (they share the tokens file).
    server = ServiceProcess(service=service, env=env, port=port, log_path=tmp / "stderr.log",
                            tokens=tokens, db=postgres_db, schema=schema,
                            client_tls=client_tls)
    server.start()
    return server


def start_beside(service: str, identity: ServiceProcess, tmp: Path, **extra_env: str
                 ) -> ServiceProcess:
    """`service` beside `identity`: same database (its own schema), same tokens file, following
    identity's feed with the `service` token; `extra_env` for its other settings (with TLS
    settings, the test dials it as it dials identity)."""
    return start_service(
        service, identity.db, tmp, tokens_file=identity.tokens_file, tokens=identity.tokens,
        extra_env={f"{service.upper()}_IDENTITY_ADDRESS": identity.address,
                   "QIJI_SERVICE_TOKEN": identity.tokens["service"], **extra_env},
        client_tls=identity.client_tls)


def serving(server: ServiceProcess) -> Iterator[ServiceProcess]:
    """A fixture's body: the server, stopped at the end if it still runs."""
    try:
        yield server
    finally:
        if server.running:
            server.stop()


def nobody_listening() -> str:
    """The address of an upstream that is not deployed beside a module's processes: its
    follower backs off, as it would in production until that service is deployed."""
    return f"127.0.0.1:{free_port()}"


@pytest.fixture(scope="module")
def identity(postgres_db: str, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[ServiceProcess]:
    yield from serving(start_service("identity", postgres_db,
                                     tmp_path_factory.mktemp("identity-e2e")))


@pytest.fixture(scope="module")
def training(identity: ServiceProcess, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[ServiceProcess]:
    yield from serving(start_beside("training", identity, tmp_path_factory.mktemp("training-e2e")))


@pytest.fixture(scope="module")
def merchants(identity: ServiceProcess, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[ServiceProcess]:
    """merchants beside identity; badges is not deployed beside it (its badges follower backs
    off)."""
    yield from serving(start_beside("merchants", identity, tmp_path_factory.mktemp("merchants-e2e"),
                                    MERCHANTS_BADGES_ADDRESS=nobody_listening()))


@pytest.fixture(scope="module")
def badges(identity: ServiceProcess, training: ServiceProcess,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """badges beside identity and training, following both feeds, with configured signing keys
    (kept across restarts: the environment is the process's) and, as its QIJI_ISSUER_URL, the
    address where the module's public face (`credentials`) will listen. governance is not
    deployed beside it (its governance follower backs off)."""
    web = f"http://127.0.0.1:{free_port()}"
    yield from serving(start_beside(
        "badges", identity, tmp_path_factory.mktemp("badges-e2e"),
        BADGES_TRAINING_ADDRESS=training.address, BADGES_GOVERNANCE_ADDRESS=nobody_listening(),
        **badges_key_env(issuer_url=web)))


class WebProcess:
    """The public credentials face (`python -m services.credentials`), as an outsider meets
    it: plain HTTP, no token."""

    def __init__(self, badges: ServiceProcess, tmp: Path, port: int | None = None):
        """On the port badges' QIJI_ISSUER_URL names, unless given another."""
        self.url = badges.env["QIJI_ISSUER_URL"]
        self.port = int(self.url.rsplit(":", 1)[1])
        if port is not None:
            self.port, self.url = port, f"http://127.0.0.1:{port}"
        self.log_path = tmp / "credentials.log"
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("QIJI_", "CREDENTIALS_"))}
        self.env.update({"QIJI_TOKENS_FILE": str(badges.tokens_file),
                         "QIJI_PUBLIC_READER_TOKEN": badges.tokens["public_reader"],
                         "QIJI_LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1",
                         "CREDENTIALS_HTTP_PORT": str(self.port),
                         "CREDENTIALS_BADGES_ADDRESS": badges.address})
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "services.credentials"], cwd=REPO, env=self.env,
                stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        from shared.tools.cli import wait_http_ready
        if not wait_http_ready(f"{self.url}/readyz", self.proc, START_TIMEOUT):
            self.proc.kill()
            pytest.fail(f"credentials not ready within {START_TIMEOUT}s:\n{self.log_tail()}")

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return -signal.SIGKILL

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
        except FileNotFoundError:
            return "(no log)"


@pytest.fixture(scope="module")
def credentials(badges: ServiceProcess, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[WebProcess]:
    web = WebProcess(badges, tmp_path_factory.mktemp("credentials-e2e"))
    web.start()
    try:
        yield web
    finally:
        if web.proc is not None and web.proc.poll() is None:
            web.stop()


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any Qiji setting, and `extra`."""
    from shared.config import DEFAULT_PORTS
    prefixes = ("QIJI_", *(f"{s.upper()}_" for s in DEFAULT_PORTS), "RELAY_")
    return {**{k: v for k, v in os.environ.items() if not k.startswith(prefixes)},
            "PYTHONUNBUFFERED": "1", **extra}


# `qiji demo` may take this long to tell the whole story on a busy machine.
DEMO_TIMEOUT = 300
CONSOLE_ASSETS = REPO / "build" / "console" / "echarts.min.js"


@dataclass
class ToldQiji:
    """`qiji run` on its embedded default (what `make demo` starts), on a data dir and ports of
    its own, with the city's report told once by `qiji demo` on it while it was fresh."""

    data_dir: Path
    port_base: int
    proc: subprocess.Popen[bytes]
    # A moment just before the story was told, and what `qiji demo` answered.
    before_demo: datetime
    first: subprocess.CompletedProcess[str]
    _stop: Callable[[], None]

    def stop(self) -> None:
        """Stops `qiji run` (SIGTERM, as Ctrl-C would); stopping again does nothing."""
        self._stop()


_TOLD: list[ToldQiji] = []


@pytest.fixture(scope="session")
def told_qiji(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ToldQiji]:
    """One told Qiji for the demo's tests (which tell the story again on it, and ask it
    questions) and the console's browser tests (which read the story's figures): starting
    `qiji run` and telling the story take half a minute, once rather than twice. Stopped as
    soon as the last test using it is done (`pytest_runtest_teardown` below), not at the end
    of the session: idle, its ten processes would still poll each other's feeds."""
    from contextlib import ExitStack

    from shared.tools.demo import embedded_qiji, free_port_base
    if not CONSOLE_ASSETS.exists():
        # The build step `make test` runs first; made here for a test run without make (the
        # console serves them from the start).
        made = subprocess.run(["make", "console-assets"], cwd=REPO, capture_output=True,
                              text=True, check=False)
        if made.returncode != 0:
            pytest.fail(f"make console-assets failed:\n{made.stdout}\n{made.stderr}")
    data_dir = tmp_path_factory.mktemp("demo-embedded")
    port_base = free_port_base()
    with ExitStack() as stack:
        proc = stack.enter_context(embedded_qiji(data_dir, port_base))
        deadline = time.monotonic() + 60
        while b"Qiji is running" not in (data_dir / "qiji.log").read_bytes():
            assert proc.poll() is None, (data_dir / "qiji.log").read_text(errors="replace")
            assert time.monotonic() < deadline, "qiji run did not start within 60 s"
            time.sleep(0.2)
        before = datetime.now(UTC)
        first = subprocess.run(
            [sys.executable, "-m", "shared.tools.cli", "demo", "--port-base", str(port_base)],
            cwd=REPO, env=clean_env(QIJI_DATA_DIR=str(data_dir)), capture_output=True,
            text=True, timeout=DEMO_TIMEOUT, check=False)
        told = ToldQiji(data_dir, port_base, proc, before, first, stack.pop_all().close)
    _TOLD.append(told)
    try:
        yield told
    finally:
        _TOLD.remove(told)
        told.stop()


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Stops the told Qiji after the last test that uses it."""
    if not _TOLD or "told_qiji" not in getattr(item, "fixturenames", ()):
        return
    items = item.session.items
    later = items[items.index(item) + 1:] if item in items else []
    if not any("told_qiji" in getattr(i, "fixturenames", ()) for i in later):
        _TOLD[0].stop()


class ClockFile:
    """governance's "now", moved by the test: written whole (rename), read on every call."""

    def __init__(self, path: Path, start: datetime):
        self.path = path
        self.set(start)

    def set(self, when: datetime) -> None:
        self.now = when
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(when.isoformat())
        os.replace(tmp, self.path)


def start_governance(identity: ServiceProcess, tmp: Path, clock: ClockFile) -> ServiceProcess:
    """governance beside identity (and under identity's master key), its clock read from
    `clock`, looking for missed deadlines every 0.2 s."""
    return start_beside("governance", identity, tmp,
                        QIJI_MASTER_KEY=identity.env["QIJI_MASTER_KEY"],
                        GOVERNANCE_CLOCK_FILE=str(clock.path),
                        GOVERNANCE_DEADLINE_POLL_SECONDS="0.2")


@pytest.fixture(scope="module")
def clock(tmp_path_factory: pytest.TempPathFactory) -> ClockFile:
    """The module's governance clock, at the moment it is made."""
    return ClockFile(tmp_path_factory.mktemp("clock") / "now",
                     datetime.now(UTC).replace(microsecond=0))


@pytest.fixture(scope="module")
def governance(identity: ServiceProcess, clock: ClockFile,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    yield from serving(start_governance(identity, tmp_path_factory.mktemp("governance-e2e"),
                                        clock))


# ---------------------------------------------------------------------------- waiting


def eventually(check: Callable[[], T | None], what: str,
               timeout: float = REACTION_TIMEOUT) -> T:
    """Polls `check` until it returns something truthy. Only for a service's background
    reaction to another's events (its followers poll their upstream's feed every 0.5 s)."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s"
        time.sleep(0.1)


# For each follower of identity: a question naming something nobody created, as (role, RPC,
# request, reason of its NOT_FOUND).
CATCH_UP_PROBES: dict[str, tuple[str, str, Callable[[], Any], str]] = {
    "training": ("auditor", "GetTranscript", lambda: training_pb.GetTranscriptRequest(
        rider_id=str(uuid.uuid4())), "RIDER_NOT_FOUND"),
    "merchants": ("city_admin", "ListPerksForRider", lambda: merchants_pb.ListPerksForRiderRequest(
        rider_id=str(uuid.uuid4())), "RIDER_NOT_FOUND"),
    "badges": ("auditor", "ListRiderAwards", lambda: badges_pb.ListRiderAwardsRequest(
        rider_id=str(uuid.uuid4())), "RIDER_NOT_FOUND"),
    "governance": ("auditor", "ListDepartmentQueue",
                   lambda: governance_pb.ListDepartmentQueueRequest(
                       department_id=str(uuid.uuid4())), "DEPARTMENT_NOT_FOUND"),
}


def caught_up(server: ServiceProcess) -> None:
    """Makes a follower of identity apply everything identity has stored until now: asked
    about something it does not know, it first reads identity's feed (read-your-writes across
    services), and only then answers NOT_FOUND."""
    role, rpc, request, reason = CATCH_UP_PROBES[server.service]
    details = call_error(lambda: getattr(server.client(role), rpc)(request()))
    assert (details.code, details.reason) == (grpc.StatusCode.NOT_FOUND, reason), details


def new_rider(identity: ServiceProcess, city: Any, *, name: str = "王五",
              verify: bool = True) -> str:
    """A rider `city.platform` registered (and verified, unless told not to) on identity, living
    in `city.street` and riding for `city.platform` from `city.station`."""
    platform = identity.client_for("platform", city.platform)
    rider_id = platform.RegisterRider(ipb.RegisterRiderRequest(
        request_id=new_request_id(), platform_id=city.platform,
        platform_rider_id=unique("rider"), name=name, phone=phone_number(),
        home_street_id=city.street, station_id=city.station)).rider.rider_id
    if verify:
        platform.VerifyRider(ipb.VerifyRiderRequest(request_id=new_request_id(),
                                                    rider_id=rider_id))
    return rider_id


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Iterator[None]:
    """A failed e2e test shows the tail of its server's log (stdout and stderr)."""
    report = yield
    if report.failed:
        servers = {id(v): v for v in getattr(item, "funcargs", {}).values()
                   if isinstance(v, ServiceProcess)}
        for server in servers.values():
            report.sections.append((f"{server.service} server log ({server.log_path})",
                                    server.log_tail()))
    return report
