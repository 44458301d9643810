"""The native full stack: where it runs (a run directory), against which PostgreSQL and
RabbitMQ, on which ports; bringing it up and down.

The run directory holds everything `up` makes and later commands need: `stack.json` (the
settings it was brought up with; no password: PostgreSQL's comes from $QIJI_POSTGRES_PASSWORD,
the broker's from the URI in $RELAY_AMQP_URI, at every command), the tokens file, the master
key, the badges signing keys and the audit signing key (made on the first `up` and kept
after: losing the master key loses every rider's personal data and the audit chain), the
admin token, one pid file and one log file per process.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import grpc
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc
from psycopg import sql

from shared.config import (
    CONSOLE_HTTP_PORT,
    CREDENTIALS_HTTP_PORT,
    DEFAULT_AMQP_URI,
    DEFAULT_PORTS,
    MAX_PORT,
    ConfigError,
    Settings,
    TlsSettings,
    integer,
    load_settings,
    load_tls_settings,
    out_of_range,
    read_setting,
    secret_setting,
)
from shared.files import write_private
from shared.grpc.channels import open_channel
from shared.logging import redacted
from shared.personal_data import load_master_key
from shared.tools.addressing import STACK_FILE
from shared.tools.ops import (
    DEPENDENCY_UNREACHABLE,
    REFUSED,
    UNHEALTHY,
    USAGE,
    OpsError,
    supervision,
)
from shared.tools.processes import (
    ADMIN_PRINCIPAL,
    CONSOLE,
    PROCESS_TOKENS,
    SERVICES,
    WEB,
    admin_token,
    console_assets_missing,
    port_free,
    process_tokens,
)
from shared.tools.processes import metrics_port as default_metrics_port

REPO = Path(__file__).resolve().parents[3]
RELAY = "relay"
# Everything `up` starts, in start order; `down` stops them in reverse.
PROCESSES = [*SERVICES, RELAY, WEB, CONSOLE]
DEFAULT_RUN_DIR = "qiji-run"
# The relay's /metrics beside the services' 9101-9106, then the public credentials face's.
RELAY_METRICS_PORT = 9107
WEB_METRICS_PORT = 9108
# The console's, after the figures' 9109.
CONSOLE_METRICS_PORT = 9110
STOP_TIMEOUT = 20.0
# What stack.json keeps: the stack's own settings, never a secret.
SAVED = ("pg_host", "pg_port", "pg_db", "pg_user", "amqp_uri", "port_offset", "issuer_url")

Say = Callable[[str], None]


def say(line: str) -> None:
    print(line, flush=True)


def without_password(uri: str) -> str:
    """The broker's URI as stack.json and every message may show it: no password."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.netloc.rpartition("@")[2]
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=user + host))


@dataclass
class Stack:
    run_dir: Path
    pg_host: str = "127.0.0.1"
    pg_port: int = 5432
    pg_db: str = "qiji"
    pg_user: str = "postgres"
    # The broker without its password (broker_uri adds it, from the environment).
    amqp_uri: str = without_password(DEFAULT_AMQP_URI)
    # Added to every default port (50051..., 9101...), to run a second stack on one machine.
    port_offset: int = 0
    # The public credentials face's address, named in every credential (QIJI_ISSUER_URL):
    # the city's https:// address in production; empty means this machine's face.
    issuer_url: str = ""
    # The environment the operator's command runs in: the settings (and the passwords) the
    # stack reads, the services' way (shared/config.py).
    environment: Mapping[str, str] = field(default_factory=lambda: dict(os.environ),
                                           repr=False, compare=False)
    # The broker's password an earlier release kept in stack.json (read, never written).
    stored_password: str | None = field(default=None, repr=False, compare=False)

    # ------------------------------------------------------------------ configuration

    @classmethod
    def resolve(cls, run_dir: Path | None, overrides: Mapping[str, object],
                env: Mapping[str, str] | None = None) -> Stack:
        """Flags first, then the run directory's stack.json (what `up` last used), then the
        environment (the services' own setting names), then defaults — except the broker:
        a URI in the environment ($RELAY_AMQP_URI, where its password is) outranks
        stack.json, so that a rotated one takes effect. No password comes from a flag or
        stack.json."""
        env = dict(os.environ if env is None else env)
        run_dir = Path(run_dir or env.get("QIJI_RUN_DIR") or DEFAULT_RUN_DIR).resolve()
        try:  # read and checked as the services read theirs (shared/config.py)
            settings = load_settings("qiji", env)
            values: dict[str, object] = {
                "pg_host": settings.postgres_host,
                "pg_port": settings.postgres_port,
                "pg_db": settings.postgres_dbname,
                "pg_user": settings.postgres_user,
                "amqp_uri": _broker_setting(env),
                "port_offset": read_setting(env, "qiji", "PORT_OFFSET", integer(-MAX_PORT),
                                            "0"),
                "issuer_url": load_settings("badges", env).own_setting("ISSUER_URL"),
            }
        except ConfigError as error:
            raise OpsError(USAGE, f"configuration: {error}") from None
        if urlsplit(str(overrides.get("amqp_uri") or "")).password is not None:
            raise OpsError(USAGE, "--amqp-uri: no password on the command line (every user "
                           "of this machine sees it in the process list): give the URI with "
                           "its password in $RELAY_AMQP_URI")
        saved = run_dir / STACK_FILE
        stored_password = None
        if saved.exists():
            kept = {k: v for k, v in json.loads(saved.read_text()).items() if k in SAVED}
            if _broker_given(env):
                kept.pop("amqp_uri", None)
            else:
                stored_password = urlsplit(str(kept.get("amqp_uri", ""))).password
            values.update(kept)
        values.update({k: v for k, v in overrides.items() if v is not None})
        values["amqp_uri"] = without_password(str(values["amqp_uri"]))
        stack = cls(run_dir=run_dir, environment=env, stored_password=stored_password,
                    **values)  # type: ignore[arg-type]
        bad = out_of_range(stack.ports())
        if bad:
            raise OpsError(USAGE, f"port offset {stack.port_offset} puts ports outside "
                           f"1..{MAX_PORT} ({min(bad)}..{max(bad)})")
        return stack

    def save(self) -> None:
        data = {k: getattr(self, k) for k in SAVED}
        write_private(self.run_dir / STACK_FILE, json.dumps(data, indent=2) + "\n")

    def settings(self, process: str = "qiji") -> Settings:
        """`process`'s settings, read from the operator's environment as it reads them."""
        return load_settings(process, self.environment)

    @property
    def password(self) -> str:
        # Never on a command line or in stack.json: from the environment only.
        return self.settings().postgres_password

    @property
    def broker_uri(self) -> str:
        """The broker's URI with its password, which only the environment holds (the
        password of $RELAY_AMQP_URI, else of the default URI)."""
        password = urlsplit(_broker_setting(self.environment)).password
        if self.stored_password is not None and self.stored_password != password:
            raise OpsError(REFUSED, f"{self.run_dir / STACK_FILE} holds the broker's password "
                           "(an earlier release kept it there); this release reads it only "
                           "from the environment: export RELAY_AMQP_URI with the URI and its "
                           "password, and run the command again")
        parts = urlsplit(self.amqp_uri)
        if password is None or parts.username is None:
            return self.amqp_uri
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{parts.username}:{password}@{host}"))

    def ports(self) -> list[int]:
        """Every port the stack's processes listen on: gRPC, the HTTP faces', metrics."""
        return [port for name in PROCESSES for port in (
            *([self.grpc_port(name)] if name in DEFAULT_PORTS else []),
            *([self.web_port] if name == WEB else []),
            *([self.console_port] if name == CONSOLE else []), self.metrics_port(name))]

    def conninfo(self, dbname: str | None = None) -> str:
        return psycopg.conninfo.make_conninfo(
            dbname=dbname or self.pg_db, host=self.pg_host, port=self.pg_port,
            user=self.pg_user, password=self.password or None, connect_timeout=5)

    def grpc_port(self, name: str) -> int:
        return DEFAULT_PORTS[name] + self.port_offset

    def metrics_port(self, name: str) -> int:
        base = {RELAY: RELAY_METRICS_PORT, WEB: WEB_METRICS_PORT,
                CONSOLE: CONSOLE_METRICS_PORT}.get(name) \
            or default_metrics_port(name)
        return base + self.port_offset

    @property
    def web_port(self) -> int:
        return CREDENTIALS_HTTP_PORT + self.port_offset

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def console_port(self) -> int:
        return CONSOLE_HTTP_PORT + self.port_offset

    @property
    def console_url(self) -> str:
        return f"http://127.0.0.1:{self.console_port}"

    @property
    def public_url(self) -> str:
        return self.issuer_url or self.web_url

    def address(self, name: str) -> str:
        return f"127.0.0.1:{self.grpc_port(name)}"

    def metrics_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.metrics_port(name)}/metrics"

    # ------------------------------------------------------------------ files

    @property
    def tokens_file(self) -> Path:
        return self.run_dir / "tokens.json"

    @property
    def admin_token_file(self) -> Path:
        return self.run_dir / "admin.token"

    @property
    def master_key_file(self) -> Path:
        return self.run_dir / "master.key"

    @property
    def signing_key_file(self) -> Path:
        return self.run_dir / "badges-signing.key"

    @property
    def rsa_signing_key_file(self) -> Path:
        return self.run_dir / "badges-signing-rsa.pem"

    @property
    def audit_signing_key_file(self) -> Path:
        return self.run_dir / "audit-signing.key"

    def verifier_key(self, service: str) -> str | None:
        """The checkpoint verifier key of a service's log (what auditors pin), from the audit
        signing key this stack gives its services; None if there is none to read."""
        from shared.checkpoints import CheckpointSigner, origin_of
        from shared.signing import load_key
        try:
            seed = load_key(self.settings().audit_signing_key,
                            self.audit_signing_key_file, create=False,
                            setting="QIJI_AUDIT_SIGNING_KEY", what="audit signing key")
        except (FileNotFoundError, ValueError):
            return None
        origin = load_settings(service, self.settings_env()).audit_origin
        return CheckpointSigner(seed, origin_of(origin, service)).verifier_key

    def pid_file(self, name: str) -> Path:
        return self.run_dir / "pids" / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.run_dir / "logs" / f"{name}.log"

    def admin_token(self) -> str:
        try:
            return self.admin_token_file.read_text().strip()
        except FileNotFoundError:
            raise OpsError(REFUSED, f"no admin token in {self.run_dir}: run deploy/up first "
                           "(or pass --run-dir)") from None

    def master_key(self, *, create: bool = False) -> bytes:
        """QIJI_MASTER_KEY if the operator set one, else the run directory's key file."""
        try:
            return load_master_key(self.settings().master_key, self.master_key_file,
                                   create=create)
        except FileNotFoundError as missing:
            raise OpsError(REFUSED, str(missing)) from None

    # ------------------------------------------------------------------ environments

    def settings_env(self, dbname: str | None = None, pool_size: int = 1) -> dict[str, str]:
        """The environment `load_settings` reads, for this stack's database: what the ops
        commands use in-process (schema names, a store to verify)."""
        env = dict(self.environment)
        env.update({
            "QIJI_PERSISTENCE": "postgres",
            "QIJI_POSTGRES_HOST": self.pg_host,
            "QIJI_POSTGRES_PORT": str(self.pg_port),
            "QIJI_POSTGRES_DBNAME": dbname or self.pg_db,
            "QIJI_POSTGRES_USER": self.pg_user,
            "QIJI_POSTGRES_PASSWORD": self.password,
            "QIJI_POSTGRES_POOL_SIZE": str(pool_size),
            "QIJI_DATA_DIR": str(self.run_dir / "data"),
            "QIJI_TOKENS_FILE": str(self.tokens_file),
        })
        return env

    def process_env(self, tokens: Mapping[str, str]) -> dict[str, str]:
        """The processes' environment: the operator's own (pool size, log format...), then
        what the stack decides (store, ports, addresses, secrets' files), and `tokens`
        (shared.tools.processes.process_tokens). supervisord gives each process only the
        secrets it uses (shared/config.py SECRET_SETTINGS)."""
        settings = self.settings()
        env = self.settings_env(pool_size=settings.postgres_pool_size)
        env.update({
            "QIJI_LOG_FORMAT": settings.log_format,
            **tokens,
            "RELAY_AMQP_URI": self.broker_uri,
            "PYTHONUNBUFFERED": "1",
            **{f"{name.upper()}_GRPC_PORT": str(self.grpc_port(name)) for name in SERVICES},
            **{f"{name.upper()}_METRICS_PORT": str(self.metrics_port(name))
               for name in PROCESSES},
            # Where every process finds every other: QIJI_<OTHER>_ADDRESS applies to all.
            **{f"QIJI_{name.upper()}_ADDRESS": self.address(name) for name in SERVICES},
            "QIJI_ISSUER_URL": self.public_url,
            "CREDENTIALS_HTTP_PORT": str(self.web_port),
            "CONSOLE_HTTP_PORT": str(self.console_port),
        })
        # Keys the operator did not set are the run directory's files.
        badges = self.settings("badges")
        if not settings.master_key:
            env["QIJI_MASTER_KEY_FILE"] = str(self.master_key_file)
        if not badges.own_setting("SIGNING_KEY"):
            env["BADGES_SIGNING_KEY_FILE"] = str(self.signing_key_file)
        if not badges.own_setting("RSA_SIGNING_KEY"):
            env["BADGES_RSA_SIGNING_KEY_FILE"] = str(self.rsa_signing_key_file)
        if not settings.audit_signing_key:
            env["QIJI_AUDIT_SIGNING_KEY_FILE"] = str(self.audit_signing_key_file)
        return env


def _broker_setting(env: Mapping[str, str]) -> str:
    # The relay's own setting, read as the relay reads it (RELAY_AMQP_URI, QIJI_AMQP_URI).
    uri: str = load_settings(RELAY, env).own_setting("AMQP_URI")
    return uri


def _broker_given(env: Mapping[str, str]) -> bool:
    """Whether the operator's environment names the broker (RELAY_AMQP_URI, QIJI_AMQP_URI)."""
    return bool(read_setting(env, RELAY, "AMQP_URI", str, ""))


# ---------------------------------------------------------------------- dependencies


def check_postgres(stack: Stack, *, create_database: bool, out: Say = say) -> None:
    """PostgreSQL answers, and the stack's database exists (created if asked)."""
    try:
        with psycopg.connect(stack.conninfo("postgres"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                  (stack.pg_db,)).fetchone()
            if not exists:
                if not create_database:
                    raise OpsError(REFUSED, f"database {stack.pg_db!r} does not exist")
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(stack.pg_db)))
                out(f"created database {stack.pg_db}")
    except psycopg.OperationalError as error:
        raise OpsError(DEPENDENCY_UNREACHABLE, f"PostgreSQL at {stack.pg_host}:{stack.pg_port} "
                       f"is unreachable: {_first_line(error)}") from None


def check_rabbitmq(uri: str) -> None:
    import kombu
    try:
        with kombu.Connection(uri, connect_timeout=3) as conn:
            conn.connect()
    except Exception as error:  # socket errors, AMQP refusals (vhost, login): all "unreachable"
        raise OpsError(DEPENDENCY_UNREACHABLE, f"RabbitMQ at {redacted(uri)} is unreachable: "
                       f"{type(error).__name__}: {error}") from None


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


# ---------------------------------------------------------------------- processes


def running_pid(stack: Stack, name: str) -> int | None:
    """The pid of `name` as supervisord runs it, else as an older release's pid file says."""
    state = supervision.processes(stack).get(name)
    if state is not None:
        return state.pid
    return _pid_file_pid(stack, name)


def _pid_file_pid(stack: Stack, name: str) -> int | None:
    """The pid in `name`'s pid file if that process is alive and is that Qiji process (a pid
    file outliving its process must never get someone else's process signalled)."""
    try:
        pid = int(stack.pid_file(name).read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError, ValueError, PermissionError):
        return None
    return pid if f"services.{name}".encode() in cmdline and _alive(pid) else None


def dialling_tls() -> TlsSettings:
    """How the operator's commands dial the services: the same QIJI_TLS_* settings the services
    are given (plaintext when none are set)."""
    return load_tls_settings("qiji", os.environ)


def relay_healthy(stack: Stack) -> bool:
    from shared.tools.ops.status import scrape
    samples = scrape(stack.metrics_url(RELAY))
    return bool(samples.get(("qiji_relay_healthy", ())))


def web_ready(stack: Stack) -> bool:
    http_get(f"{stack.web_url}/readyz", timeout=1.0)  # 503 raises (HTTPError is an OSError)
    return True


def console_ready(stack: Stack) -> bool:
    http_get(f"{stack.console_url}/readyz", timeout=1.0)  # 503 raises, as for the face
    return True


def up(stack: Stack, *, timeout: float, out: Say = say) -> None:
    alive = {name: pid for name in PROCESSES if (pid := running_pid(stack, name))}
    if alive or supervision.supervisord_pid(stack) is not None:
        raise OpsError(REFUSED, f"already running in {stack.run_dir}: {alive}; run deploy/down "
                       "first")
    busy = [port for port in stack.ports() if not port_free(port)]
    if busy:
        raise OpsError(REFUSED, f"ports in use: {busy} (another stack? try --port-offset)")
    missing = console_assets_missing()
    if missing:
        raise OpsError(REFUSED, f"the console cannot start: {missing}")
    out(f"checking PostgreSQL {stack.pg_host}:{stack.pg_port}/{stack.pg_db} and RabbitMQ "
        f"{stack.amqp_uri}")
    check_postgres(stack, create_database=True, out=out)
    check_rabbitmq(stack.broker_uri)
    stack.run_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(stack.run_dir, 0o700)
    stack.save()
    if not stack.settings().master_key:
        made = not stack.master_key_file.exists()
        stack.master_key(create=True)
        if made:
            out(f"made the master key {stack.master_key_file}: back it up outside this "
                "machine; without it no rider's personal data opens and nothing verifies")
    make_signing_keys(stack, out=out)
    admin_token(stack.tokens_file, stack.admin_token_file)
    # The processes' own tokens (reading each other's feeds; the public face's reads): new at
    # every up, since only the processes started here hold them.
    env = stack.process_env(process_tokens(stack.tokens_file))
    try:
        launch(stack, env, timeout=timeout, out=out)
    except BaseException:
        # All or nothing: a half-started stack is stopped again.
        supervision.shutdown(stack, STOP_TIMEOUT)
        raise
    out("")
    out(f"Qiji is up (run directory {stack.run_dir}).")
    for name in SERVICES:
        out(f"  {name:<11} {stack.address(name)}   metrics {stack.metrics_url(name)}")
    out(f"  {'relay':<11} -> {stack.amqp_uri}   metrics {stack.metrics_url(RELAY)}")
    out(f"  {WEB:<11} {stack.web_url}/verify (public as {stack.public_url})   "
        f"metrics {stack.metrics_url(WEB)}")
    out(f"  {CONSOLE:<11} {stack.console_url}/ (the city's figures in a browser: sign in with "
        f"a token)   metrics {stack.metrics_url(CONSOLE)}")
    out(f"Admin token ({ADMIN_PRINCIPAL}: city_admin, operator, auditor): "
        f"{stack.admin_token_file}")
    out(f"Logs: {stack.run_dir / 'logs'}   Status: deploy/status --run-dir {stack.run_dir}")


def make_signing_keys(stack: Stack, *, out: Say = say) -> None:
    """The issuer's keys badges signs with, and the audit signing key every service signs its
    log's checkpoints with, made once where the operator set none: `up` makes them, and so does
    `upgrade` for a key a release newly needs (0.1.0 had no RSA key, nor an audit key)."""
    from services.badges import credentials
    badges = stack.settings("badges")
    if not badges.own_setting("SIGNING_KEY") and not stack.signing_key_file.exists():
        credentials.load_ed25519("", stack.signing_key_file, create=True)
        out(f"made the badges signing key {stack.signing_key_file}")
    if not badges.own_setting("RSA_SIGNING_KEY") and not stack.rsa_signing_key_file.exists():
        credentials.load_rsa("", stack.rsa_signing_key_file, create=True)
        out(f"made the badges RSA signing key {stack.rsa_signing_key_file}")
    if not badges.audit_signing_key and not stack.audit_signing_key_file.exists():
        from shared.signing import load_key
        load_key("", stack.audit_signing_key_file, create=True,
                 setting="QIJI_AUDIT_SIGNING_KEY", what="audit signing key")
        out(f"made the audit signing key {stack.audit_signing_key_file}: the services sign "
            "their logs' checkpoints with it; keep it, and publish the verifier keys "
            "`deploy/status` prints so that witnesses can check the checkpoints")


def stale_settings(stack: Stack) -> list[str]:
    """The settings (names only) this release gives its processes that supervisord, started
    by an earlier `up`, does not hand down: a setting the release is new in, or one changed
    since. Its programs inherit supervisord's environment, so restarting them cannot apply
    these; supervisord itself must start again. A secret counts only by its presence (the
    tokens are new at every up; the others are the operator's, and never compared): one this
    release needs that supervisord lacks (the public face's token, say) makes it stale."""
    running = supervision.environment(stack)
    if running is None:
        return []
    wanted = stack.process_env(dict.fromkeys(PROCESS_TOKENS, ""))
    ours = ("QIJI_", "PYTHON", *(f"{name.upper()}_" for name in PROCESSES))
    return sorted(k for k in {*wanted, *running} if k.startswith(ours) and (
        (k in running) != (k in wanted) if secret_setting(k)
        else running.get(k) != wanted.get(k)))



def launch(stack: Stack, env: Mapping[str, str], *, timeout: float, out: Say = say) -> None:
    """supervisord with a fresh configuration, then every process through it: the services
    at once (followers back off until their upstream answers), then the relay once they
    serve, then the public credentials face, then the console. Returns when every one is
    SERVING (the relay healthy, the face and the console ready)."""
    supervision.write_config(stack, PROCESSES, env)
    for name in PROCESSES:
        stack.pid_file(name).unlink(missing_ok=True)  # an older release's: not ours any more
    supervision.start_supervisord(stack, env)
    deadline = time.monotonic() + timeout
    began = time.monotonic()
    for name in SERVICES:
        supervision.start(stack, name)
    for name in SERVICES:
        wait_ready(stack, name, deadline)
        out(f"  {name:<11} SERVING on {stack.address(name)} ({time.monotonic() - began:.1f} s)")
    supervision.start(stack, RELAY)
    wait_ready(stack, RELAY, deadline)
    out(f"  {'relay':<11} healthy, metrics {stack.metrics_url(RELAY)} "
        f"({time.monotonic() - began:.1f} s)")
    # The public face last: it is ready only while badges answers it.
    supervision.start(stack, WEB)
    wait_ready(stack, WEB, deadline)
    out(f"  {WEB:<11} ready on {stack.web_url} ({time.monotonic() - began:.1f} s)")
    # The console once the figures serve: it is ready only while they answer it.
    supervision.start(stack, CONSOLE)
    wait_ready(stack, CONSOLE, deadline)
    out(f"  {CONSOLE:<11} ready on {stack.console_url} ({time.monotonic() - began:.1f} s)")


def ready(stack: Stack, name: str) -> bool:
    """A service answers SERVING on its health check; the relay calls itself healthy; the
    public credentials face answers /readyz (200 only while badges answers it)."""
    if name == RELAY:
        return _safe(relay_healthy, stack)
    if name == WEB:
        return _safe(web_ready, stack)
    if name == CONSOLE:
        return _safe(console_ready, stack)
    with open_channel(stack.address(name), dialling_tls()) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(  # type: ignore[attr-defined]  # stub lacks Check
                health_pb2.HealthCheckRequest(service=""), timeout=1)
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def wait_ready(stack: Stack, name: str, deadline: float) -> None:
    """Until `name` is ready; UNHEALTHY (with the end of its log) at `deadline`, or at once
    when supervisord gave up on it (FATAL: it kept dying at start)."""
    while not ready(stack, name):
        state = supervision.processes(stack).get(name)
        if state is not None and state.state == supervision.FATAL:
            raise OpsError(UNHEALTHY, f"{name} keeps exiting at start (supervisord gave up); "
                           f"the end of {stack.log_file(name)}:\n{_tail(stack, name)}")
        if time.monotonic() > deadline:
            raise OpsError(UNHEALTHY, f"{name} did not become "
                           f"{_ready_word(name)} in time; the end of "
                           f"{stack.log_file(name)}:\n{_tail(stack, name)}")
        time.sleep(0.2)


def restart(stack: Stack, names: list[str], *, timeout: float, out: Say = say,
            reconfigured: Collection[str] = ()) -> None:
    """Restarts `names` (default: every process) one at a time, in start order, each ready
    before the next is stopped: the stack keeps serving, one process short at most. A name
    in `reconfigured` takes its new supervisord.conf entry while stopped; one that was not
    running (new in this release) is started in its place in the order."""
    if supervision.supervisord_pid(stack) is None:
        raise OpsError(REFUSED, f"nothing is supervised in {stack.run_dir}: run deploy/up")
    unknown = sorted(set(names) - set(PROCESSES))
    if unknown:
        raise OpsError(USAGE, f"unknown process {unknown}: choose from {PROCESSES}")
    states = supervision.processes(stack)
    for name in [n for n in PROCESSES if n in (names or PROCESSES)]:
        began = time.monotonic()
        was_running = name in states and states[name].pid is not None
        supervision.stop(stack, name)
        if name in reconfigured:
            supervision.reconfigure(stack, name)
        supervision.start(stack, name)
        wait_ready(stack, name, time.monotonic() + timeout)
        out(f"  {name:<11} {'restarted' if was_running else 'started'}, "
            f"{_ready_word(name)} ({time.monotonic() - began:.1f} s)")


def _ready_word(name: str) -> str:
    return {RELAY: "healthy", WEB: "ready", CONSOLE: "ready"}.get(name, "SERVING")


def _safe(check: Callable[[Stack], bool], stack: Stack) -> bool:
    try:
        return check(stack)
    except OSError:
        return False


def _tail(stack: Stack, name: str, lines: int = 20) -> str:
    try:
        return "\n".join(stack.log_file(name).read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def down(stack: Stack, *, timeout: float, out: Say = say) -> None:
    supervised = supervision.supervisord_pid(stack) is not None
    if supervised:
        for name, state in supervision.processes(stack).items():
            if state.pid:
                out(f"  {name:<11} stopping (pid {state.pid})")
        supervision.shutdown(stack, timeout + 5)
        out("  every process stopped; supervisord stopped")
    # Processes an older release started without a supervisor (pid files): stopped too.
    pids = {name: pid for name in reversed(PROCESSES) if (pid := _pid_file_pid(stack, name))}
    if pids:
        _stop(pids, timeout, out=out)
    elif not supervised:
        out(f"nothing running in {stack.run_dir}")
    for name in PROCESSES:
        stack.pid_file(name).unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # Not reaped yet but dead (our own child): a zombie counts as stopped.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def _stop(pids: dict[str, int], timeout: float, *, out: Say) -> None:
    """SIGTERM to each, then wait; SIGKILL whatever still runs after `timeout`."""
    for name, pid in pids.items():
        try:
            os.kill(pid, signal.SIGTERM)
            out(f"  {name:<11} SIGTERM (pid {pid})")
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    waiting = dict(pids)
    while waiting and time.monotonic() < deadline:
        for name, pid in list(waiting.items()):
            if not _alive(pid):
                out(f"  {name:<11} stopped")
                del waiting[name]
        time.sleep(0.1)
    for name, pid in waiting.items():
        try:
            os.kill(pid, signal.SIGKILL)
            out(f"  {name:<11} did not stop within {timeout:.0f} s: SIGKILL (pid {pid})")
        except ProcessLookupError:
            pass


def http_get(url: str, timeout: float = 2.0) -> str:
    # Only ever our own http://127.0.0.1 metrics endpoints.
    with urllib.request.urlopen(url, timeout=timeout) as reply:  # noqa: S310
        return reply.read().decode()
