"""The end-to-end harness: real service processes (`python -m services.<name>`) on free ports
over this session's PostgreSQL database (a schema each), one bearer token per role in a tokens
file the processes of a module share, and a plain grpcio client.

training follows identity's feed over gRPC, so a training process is started beside an identity
process of its own module, with identity's address and the `service` token in its environment."""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shared.auth import ROLES, add_caller
from tests.conftest import pg_env
from tests.e2e.client import CLIENT_CLASSES, Client

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
LOG_TAIL_CHARS = 20_000
# The services a process must report SERVING (besides the whole server, "") before tests run.
HEALTH_NAMES = {
    "identity": ["", "qiji.identity.v1.IdentityService"],
    "training": ["", "qiji.training.v1.TrainingService"],
    "governance": ["", "qiji.governance.v1.GovernanceService"],
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServiceProcess:
    """One service process, started and stopped as an operator would: by signals."""

    def __init__(self, *, service: str, env: dict[str, str], port: int, log_path: Path,
                 tokens: dict[str, str], db: str, schema: str):
        self.service = service
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
        `client.SomeRpc(request)` calls this service's own RPCs."""
        assert self.channel is not None, "the server is not running"
        kind = CLIENT_CLASSES.get(self.service, Client)
        return kind(self.channel, self.tokens[role] if role is not None else token)

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
        self.channel = grpc.insecure_channel(self.address)
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
    """One caller per role (principal "e2e-<role>") in `tokens_file`; returns role -> token."""
    return {role: add_caller(tokens_file, f"e2e-{role}", [role]) for role in sorted(ROLES)}


def start_service(service: str, postgres_db: str, tmp: Path, *,
                  tokens_file: Path | None = None, tokens: dict[str, str] | None = None,
                  extra_env: dict[str, str] | None = None) -> ServiceProcess:
    """Starts `python -m services.<service>` in a schema of its own. Without `tokens_file` it
    gets a new tokens file with one token per role; with one, `tokens` are that file's tokens
    (role -> token) and the process shares it. `extra_env` is set last (e.g. the address of an
    upstream service and the `service` token a follower presents there)."""
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
        "QIJI_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),
        "QIJI_LOG_FORMAT": "json",
        f"{service.upper()}_GRPC_PORT": str(port),
        "PYTHONUNBUFFERED": "1",
        **pg_env(postgres_db, schema),
        **(extra_env or {}),
    })
    server = ServiceProcess(service=service, env=env, port=port, log_path=tmp / "stderr.log",
                            tokens=dict(tokens), db=postgres_db, schema=schema)
    server.start()
    return server


@pytest.fixture(scope="module")
def identity_server(postgres_db: str, tmp_path_factory: pytest.TempPathFactory
                    ) -> Iterator[ServiceProcess]:
    server = start_service("identity", postgres_db, tmp_path_factory.mktemp("identity-e2e"))
    try:
        yield server
    finally:
        if server.running:
            server.stop()


@pytest.fixture(scope="module")
def training_server(identity_server: ServiceProcess, postgres_db: str,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """training beside this module's identity process: same database (its own schema), same
    tokens file, following identity's feed with the `service` token."""
    server = start_service(
        "training", postgres_db, tmp_path_factory.mktemp("training-e2e"),
        tokens_file=identity_server.tokens_file, tokens=identity_server.tokens,
        extra_env={"TRAINING_IDENTITY_ADDRESS": identity_server.address,
                   "QIJI_SERVICE_TOKEN": identity_server.tokens["service"]})
    try:
        yield server
    finally:
        if server.running:
            server.stop()


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


# ---------------------------------------------------------------------------- badges

HEALTH_NAMES["badges"] = ["", "qiji.badges.v1.BadgesService"]


@pytest.fixture(scope="module")
def badges_server(identity_server: ServiceProcess, training_server: ServiceProcess,
                  postgres_db: str, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[ServiceProcess]:
    """badges beside this module's identity and training processes: same database (its own
    schema), same tokens file, following both feeds with the `service` token, and a configured
    signing key (kept across restarts: the environment is the process's). governance is not
    deployed beside it: its address is a port nobody listens on, so that follower backs off."""
    server = start_service(
        "badges", postgres_db, tmp_path_factory.mktemp("badges-e2e"),
        tokens_file=identity_server.tokens_file, tokens=identity_server.tokens,
        extra_env={"BADGES_IDENTITY_ADDRESS": identity_server.address,
                   "BADGES_TRAINING_ADDRESS": training_server.address,
                   "BADGES_GOVERNANCE_ADDRESS": f"127.0.0.1:{free_port()}",
                   "BADGES_SIGNING_KEY": base64.b64encode(os.urandom(32)).decode(),
                   "QIJI_SERVICE_TOKEN": identity_server.tokens["service"]})
    try:
        yield server
    finally:
        if server.running:
            server.stop()
