"""What the relay's tests and its benchmark share: a RabbitMQ vhost of their own, the relay as
a real process (`python -m services.relay`, so it can be killed with SIGKILL), and a kombu
consumer on a durable queue bound to `qiji.events` that records every delivery and
acknowledges it after recording. No pytest here: bench/bench_feed.py uses it too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kombu

from services.relay.cloudevents import EXCHANGE, register_serializer

REPO = Path(__file__).resolve().parents[2]
BROKER = os.environ.get("QIJI_TEST_AMQP_HOST", "127.0.0.1:5672")


def rabbitmqctl(*args: str, timeout: float = 30) -> str:
    return subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, text=True,
                          timeout=timeout).stdout


class Vhost:
    """A vhost of its own (created, guest given all rights; deleted at the end)."""

    def __init__(self, prefix: str = "qiji_relay"):
        self.name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        rabbitmqctl("add_vhost", self.name)
        rabbitmqctl("set_permissions", "-p", self.name, "guest", ".*", ".*", ".*")
        self.uri = f"amqp://guest:guest@{BROKER}/{self.name}"
        self.users: list[str] = []

    def delete(self) -> None:
        rabbitmqctl("delete_vhost", self.name)
        for user in self.users:  # users are the node's, not the vhost's
            rabbitmqctl("delete_user", user)

    def platform_user(self, name: str, platform_id: str) -> tuple[str, str]:
        """A broker user for one platform company (named after `name`, unique on the node),
        given exactly the rights the README's "Over AMQP" gives one: queues of its own name,
        reading `qiji.events` with binding keys of its own riders' events and of events about
        no rider only, no publishing. Returns (user, URI)."""
        user = f"{name}_{uuid.uuid4().hex[:8]}"
        self.users.append(user)
        return user, grant_platform(self.name, user, f"{user}-secret", platform_id, BROKER)


def platform_topic_read_pattern(platform_id: str) -> str:
    """The binding keys a platform's user may use on `qiji.events`: events about no rider
    (`qiji.…`), and its own riders' (`platform.<its id>.…`)."""
    return rf"^(qiji\..*|platform\.{platform_id}\..*)$"


def grant_platform(vhost: str, user: str, password: str, platform_id: str,
                   broker: str = BROKER) -> str:
    """The README's commands for a platform's broker user (rabbitmqctl), run here."""
    rabbitmqctl("add_user", user, password)
    # Resource permissions: configure and write its own queues (binding needs write on the
    # queue); read them and the exchange. Nothing lets it publish to `qiji.events`.
    rabbitmqctl("set_permissions", "-p", vhost, user, f"^{user}-.*", f"^{user}-.*",
                rf"^({user}-.*|qiji\.events)$")
    # Topic permissions: which binding keys it may read with, and no routing key to write.
    rabbitmqctl("set_topic_permissions", "-p", vhost, user, "qiji.events", "^$",
                platform_topic_read_pattern(platform_id))
    return f"amqp://{user}:{password}@{broker}/{vhost}"


def restart_broker() -> float:
    """`rabbitmqctl stop_app` / `start_app` (the whole node, every vhost); returns seconds."""
    started = time.monotonic()
    rabbitmqctl("stop_app")
    time.sleep(1.0)
    rabbitmqctl("start_app")
    rabbitmqctl("await_startup", timeout=60)
    return time.monotonic() - started


@dataclass
class Delivery:
    body: dict[str, Any]
    raw: bytes
    routing_key: str
    content_type: str
    received: float  # time.time()


class Collector:
    """A kombu consumer in a thread: a durable queue bound to `qiji.events` with `binding`
    (declared in the constructor, so before anything is published), every delivery recorded,
    then acknowledged. Reconnects when the broker goes away."""

    def __init__(self, uri: str, binding: str = "#", queue: str = "test-platform",
                 declare_exchange: bool = True):
        register_serializer()
        self.uri = uri
        self.exchange = kombu.Exchange(EXCHANGE, type="topic", durable=True)
        self.queue = kombu.Queue(queue, self.exchange, routing_key=binding, durable=True)
        self.deliveries: list[Delivery] = []
        self.reconnects = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        with kombu.Connection(uri) as conn:
            bound = self.queue(conn.default_channel)
            if declare_exchange:  # as the operator; a platform's broker user may not
                self.exchange(conn.default_channel).declare()
            bound.queue_declare()
            bound.queue_bind()
        self._thread = threading.Thread(target=self._run, name="collector", daemon=True)
        self._thread.start()

    def _on_message(self, body: Any, message: Any) -> None:
        with self._lock:
            raw = message.body
            raw = raw.encode() if isinstance(raw, str) else bytes(raw)
            self.deliveries.append(Delivery(body, raw, message.delivery_info[
                "routing_key"], message.content_type, time.time()))
        message.ack()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                with kombu.Connection(self.uri, connect_timeout=2) as conn, conn.Consumer(
                        self.queue, callbacks=[self._on_message], accept=["cloudevents"],
                        prefetch_count=200, auto_declare=False):
                    while not self._stopping.is_set():
                        try:
                            conn.drain_events(timeout=0.2)
                        except TimeoutError:
                            conn.heartbeat_check()
            except Exception:
                self.reconnects += 1
                self._stopping.wait(0.5)

    @property
    def ids(self) -> set[str]:
        with self._lock:
            return {d.body["id"] for d in self.deliveries}

    def snapshot(self) -> list[Delivery]:
        with self._lock:
            return list(self.deliveries)

    def wait_for(self, count: int, timeout: float) -> set[str]:
        deadline = time.monotonic() + timeout
        while len(ids := self.ids) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return ids

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)


@dataclass
class RelayProcess:
    """`python -m services.relay` with its own environment; started, SIGKILLed, SIGTERMed."""

    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = field(default=0)

    def start(self) -> None:
        log = open(self.log_path, "ab")
        log.write(f"----- start {time.strftime('%H:%M:%S')} -----\n".encode())
        log.flush()
        self.proc = subprocess.Popen([sys.executable, "-m", "services.relay"], cwd=REPO,
                                     env=self.env, stdout=log, stderr=log,
                                     stdin=subprocess.DEVNULL)
        log.close()
        self.starts += 1

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 15) -> tuple[int, float]:
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            code = -9
        return code, time.monotonic() - started

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, chars: int = 8000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return "(no log)"


def relay_env(*, amqp_uri: str, service_token: str, addresses: dict[str, str],
              postgres: dict[str, str], schema: str, data_dir: Path) -> dict[str, str]:
    """The relay's environment: only what is set here (no QIJI_/RELAY_ leak from the caller);
    PostgreSQL positions in `schema`; only the services in `addresses` are relayed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QIJI_", "RELAY_"))}
    env.update({
        **postgres,
        "QIJI_DATA_DIR": str(data_dir),
        "RELAY_POSTGRES_SCHEMA": schema,
        "QIJI_SERVICE_TOKEN": service_token,
        "RELAY_AMQP_URI": amqp_uri,
        "RELAY_SERVICES": ",".join(addresses),
        "QIJI_LOG_FORMAT": "json",
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": f"{REPO}:{REPO / 'build' / 'gen'}",
        **{f"RELAY_{s.upper()}_ADDRESS": a for s, a in addresses.items()},
    })
    return env
