"""Configuration from the environment: `<SERVICE>_<NAME>` first, then `QIJI_<NAME>`, then a safe
default. One place, so that every service reads its settings the same way."""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Fixed default ports, so `make run` prints stable addresses and clients need no discovery.
DEFAULT_PORTS = {
    "identity": 50051,
    "training": 50052,
    "merchants": 50053,
    "badges": 50054,
    "governance": 50055,
    # The platform company's event feed gateway (services/platform): no store of its own.
    "platform": 50056,
    # The city's figures (services/statistics): a read model of the five services' feeds in a
    # store of its own. 50057 is the public credentials face's (HTTP).
    "statistics": 50058,
}
# The public credentials face (services/credentials): HTTP, not gRPC; it serves what badges
# publishes to anyone, with no token. `qiji run --port-base N` puts it on N+7.
CREDENTIALS_HTTP_PORT = 50057
# The console (services/console): HTTP pages for the social-work department and operators,
# over the services' gRPC APIs with each caller's own token.
CONSOLE_HTTP_PORT = 50059
# Where `make console-assets` (and the image's build) puts the vendored ECharts it serves.
CONSOLE_ASSETS_DIR = "build/console"
# `qiji run --port-base N` (and deploy's --port-offset) move every port by the same amount:
# a process's port is N + (its default - PORT_BASE), so N+1 identity ... N+7 the public face,
# N+8 the figures, N+9 the console.
PORT_BASE = 50050
# The HTTP faces' default ports, beside DEFAULT_PORTS' gRPC ones.
HTTP_PORTS = {"credentials": CREDENTIALS_HTTP_PORT, "console": CONSOLE_HTTP_PORT}
# The highest of N+1.. a port base uses.
PORT_BASE_SPAN = max(*DEFAULT_PORTS.values(), *HTTP_PORTS.values()) - PORT_BASE


def port_from_base(base: int, name: str) -> int:
    """Where `qiji run --port-base N` serves `name` (a gRPC service, or an HTTP face)."""
    default = HTTP_PORTS[name] if name in HTTP_PORTS else DEFAULT_PORTS[name]
    return base + default - PORT_BASE


# The services that keep an event store (and serve its feed and audit API); the gateway does not.
EVENT_SOURCED_SERVICES = ("identity", "training", "merchants", "badges", "governance")
# Every process Qiji runs: the gRPC services (and the readers: the gateway, the figures), the
# relay, the public credentials face, the console.
PROCESSES = (*DEFAULT_PORTS, "relay", "credentials", "console")

# Every setting that holds a secret, and the processes that use it: the one list from which a
# secret's value is kept out of error messages (read_setting), and each process is given only
# the secrets it uses (env_for; deploy/up's supervisord blanks the others by name). A key
# given as a file (`<NAME>_FILE`) hands over the key too. Settings' reprs leave each out.
SECRET_SETTINGS: dict[str, frozenset[str]] = {
    # The stores of the five services, the relay's positions and leadership, the figures'
    # read model.
    "POSTGRES_PASSWORD": frozenset({*EVENT_SOURCED_SERVICES, "relay", "statistics"}),
    # A `service` token: followers, the platform gateway, the relay and the figures read the
    # feeds with it.
    "SERVICE_TOKEN": frozenset({*EVENT_SOURCED_SERVICES, "platform", "relay", "statistics"}),
    # Personal data, and the audit key derived from it that MACs and seals every event; the
    # checkpoints' signing key. The gateway and the relay face outside parties and hold
    # neither: the services check every event's MAC for them. The figures check each event's
    # MAC themselves, as a service's followers do (an event forged in a database is never
    # counted), so they hold the master key; they sign nothing.
    "MASTER_KEY": frozenset({*EVENT_SOURCED_SERVICES, "statistics"}),
    "AUDIT_SIGNING_KEY": frozenset(EVENT_SOURCED_SERVICES),
    # The credential issuer's keys.
    "SIGNING_KEY": frozenset({"badges"}),
    "RSA_SIGNING_KEY": frozenset({"badges"}),
    # The broker's URI holds its password.
    "AMQP_URI": frozenset({"relay"}),
    # A `public_reader` token: the public credentials face reads badges' public RPCs with it.
    "PUBLIC_READER_TOKEN": frozenset({"credentials"}),
}

PERSISTENCE_CHOICES = ("sqlite", "postgres")


class ConfigError(Exception):
    """A setting is missing or malformed; the process should not start."""


@dataclass(frozen=True)
class TlsSettings:
    """Transport security, for this process's own port and for the channels it opens to other
    Qiji services. Files are PEM; nothing set means plaintext, as on the embedded default."""

    # The server's certificate chain and key: when set, the port serves TLS only.
    cert_file: Path | None = None
    key_file: Path | None = None
    # Roots that sign client certificates: when set, every connection must present a
    # certificate they verify (mTLS). grpcio's Python API offers no "verify if presented"
    # mode: a server either requires and verifies client certificates or never asks for one.
    client_ca_file: Path | None = None
    # For this process's own clients (followers, the gateway, the relay, the CLI): the roots
    # that sign the servers' certificates (when set, channels use TLS), and the certificate
    # presented to a server that requires one.
    ca_file: Path | None = None
    client_cert_file: Path | None = None
    client_key_file: Path | None = None

    @property
    def serves_tls(self) -> bool:
        return self.cert_file is not None

    @property
    def requires_client_certificates(self) -> bool:
        return self.client_ca_file is not None

    @property
    def dials_tls(self) -> bool:
        return self.ca_file is not None


# Where `make run` keeps the embedded default's files: the project's own `data` folder,
# wherever a command is started from (a relative default would make `qiji` commands run
# elsewhere look in the wrong place and find no token).
PROJECT_DIR = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = PROJECT_DIR / "data"
DEFAULT_AMQP_URI = "amqp://guest:guest@127.0.0.1:5672/"
MAX_PORT = 65535


@dataclass(frozen=True)
class Settings:
    """A process's settings, read and checked once at start (`load_settings`). Secrets (the
    PostgreSQL password, the master key, the service token, the signing key, the broker URI)
    are left out of the repr, so that no log line or error message can carry them."""

    service: str
    persistence: str
    data_dir: Path
    grpc_host: str
    grpc_port: int
    grpc_workers: int
    # Threads serving the unary calls answered from the store at once (shared/grpc/lanes.py);
    # 0: one pool of `grpc_workers` serves every call.
    grpc_quick_workers: int
    # SO_REUSEPORT on the gRPC port (`GRPC_SHARE_PORT=yes`): several processes of one of the
    # five services serve one port, the kernel spreading connections over them (build_server;
    # the gateway and the figures keep their ports their own). Off by default, so that a
    # second process started by mistake on a taken port fails to bind rather than silently
    # taking half the callers. Only on PostgreSQL: the processes share one store, and the
    # followers and periodic jobs already lead one process at a time (shared/leadership.py).
    grpc_share_port: bool
    # The HTTP port of /metrics (0: none).
    metrics_port: int
    postgres_dbname: str
    postgres_host: str
    postgres_port: int
    postgres_user: str
    postgres_password: str = field(repr=False)
    postgres_schema: str
    postgres_pool_size: int
    # Aggregates each process keeps cached between requests (the least recently read leave
    # first): one read after leaving costs a read of all its events (or from its snapshot).
    aggregate_cache_size: int
    tokens_file: Path
    master_key: str = field(repr=False)
    master_key_file: Path
    log_format: str
    # Where this service finds each other service's feed (`<SERVICE>_<OTHER>_ADDRESS`), and the
    # `service` role token its followers present there.
    upstreams: dict[str, str]
    service_token: str = field(repr=False)
    # The audit signing key (Ed25519) every service signs its log's checkpoints with, and the
    # name its checkpoints carry: `<audit_origin>/<service>` (shared/checkpoints.py); a
    # checkpoint every so many events or seconds, whichever first.
    audit_signing_key: str = field(repr=False)
    audit_signing_key_file: Path
    audit_origin: str
    audit_checkpoint_events: int
    audit_checkpoint_seconds: int
    # The environment the settings were read from (it holds the secrets too).
    env: Mapping[str, str] = field(repr=False)
    tls: TlsSettings = field(default_factory=TlsSettings)
    # Settings only one service has (OWN_SETTINGS), read and checked like the others.
    own: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def own_setting(self, name: str) -> Any:
        """A setting only this service has (`GOVERNANCE_CLOCK_FILE`, `RELAY_BATCH`), as
        declared in OWN_SETTINGS: read by the same rule, `<SERVICE>_<NAME>`, then
        `QIJI_<NAME>`, then the default, and checked at start."""
        return self.own[name]

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / f"{self.service}.sqlite3"

    @property
    def address(self) -> str:
        return f"{self.grpc_host}:{self.grpc_port}"


# ---------------------------------------------------------------------------- reading

Parse = Callable[[str], Any]


def _lookup(env: Mapping[str, str], service: str, name: str, default: str) -> str:
    return _lookup_with_key(env, service, name, default)[1]


def _lookup_with_key(env: Mapping[str, str], service: str, name: str, default: str
                     ) -> tuple[str, str]:
    """(the variable that gave the value, the value); ("", default) when none is set."""
    for key in (f"{service.upper()}_{name}", f"QIJI_{name}"):
        value = env.get(key)
        if value is not None and value != "":
            return key, value
    return "", default


def read_setting(env: Mapping[str, str], service: str, name: str, parse: Parse,
                 default: str) -> Any:
    """One setting, the one way every setting is read: `<SERVICE>_<NAME>`, then `QIJI_<NAME>`,
    then `default`, through `parse`, which says what is wrong with a value by raising
    ValueError. A bad value is a ConfigError naming the variable (the value of a secret,
    SECRET_SETTINGS, is never repeated in it)."""
    key, raw = _lookup_with_key(env, service, name, default)
    try:
        return parse(raw)
    except ValueError as error:
        where = key or f"the default of {service.upper()}_{name}"
        shown = "" if name in SECRET_SETTINGS else f", got {raw!r}"
        raise ConfigError(f"{where}: {error}{shown}") from None


def integer(minimum: int = 0, maximum: int | None = None) -> Parse:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError("must be an integer") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise ValueError(f"must be an integer from {minimum}"
                             + (f" to {maximum}" if maximum is not None else " up"))
        return value
    return parse


PORT = integer(0, MAX_PORT)
POSITIVE = integer(1)


def seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("must be a number of seconds") from None
    if not 0 < value < 86_400:  # also refuses NaN and infinity
        raise ValueError("must be a positive number of seconds (under a day)")
    return value


def one_of(*choices: str) -> Parse:
    def parse(raw: str) -> str:
        if raw.lower() not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return raw.lower()
    return parse


def exactly(*choices: str) -> Parse:
    """One of `choices`, spelled as they are (a case that matters: `Ed25519`, `did:web`)."""
    def parse(raw: str) -> str:
        if raw not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return raw
    return parse


def text(raw: str) -> str:
    return raw


def path(raw: str) -> Path:
    if not raw.strip():
        raise ValueError("must be a path")
    return Path(raw)


def optional_path(raw: str) -> Path | None:
    return Path(raw) if raw.strip() else None


def identifier(raw: str) -> str:
    # Schema names end up in SQL text (DDL cannot take parameters): allow only plain names.
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", raw):
        raise ValueError("must be a plain lower-case identifier")
    return raw


def address(raw: str) -> str:
    """A gRPC target `host:port` (a name, an IPv4 address or a [bracketed] IPv6 one)."""
    host, sep, port = raw.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= MAX_PORT:
        raise ValueError(f"must be HOST:PORT with a port from 1 to {MAX_PORT}")
    return raw


def base64_key(raw: str) -> str:
    """A key given inline: base64 of 32 bytes (or empty: then its file is used)."""
    if raw:
        try:
            key = base64.b64decode(raw.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("must be base64 (of 32 bytes)") from None
        if len(key) != 32:
            raise ValueError("must be base64 of 32 bytes")
    return raw


def amqp_uri(raw: str) -> str:
    if not raw.startswith(("amqp://", "amqps://")):
        raise ValueError("must be an amqp:// or amqps:// URI")
    return raw


def origin(raw: str) -> str:
    """A checkpoint origin: the first line of every checkpoint and its key name;
    c2sp.org/signed-note forbids spaces and "+" in it. A schema-less URL of the city's is the
    recommended form (audit.changzhou.gov.cn/qiji)."""
    if not raw or any(c.isspace() or c == "+" for c in raw):
        raise ValueError("must be a name without spaces or '+' (e.g. "
                         "audit.changzhou.gov.cn/qiji)")
    return raw


def service_list(raw: str) -> list[str]:
    names = [s.strip() for s in raw.split(",") if s.strip()]
    unknown = sorted(set(names) - set(EVENT_SOURCED_SERVICES))
    if unknown or not names:
        raise ValueError(f"must name some of {', '.join(EVENT_SOURCED_SERVICES)} "
                         f"(unknown: {', '.join(unknown) or 'none given'})")
    return names


@dataclass(frozen=True)
class OwnSetting:
    parse: Parse
    # The default as text, or made from the data folder.
    default: str | Callable[[Path], str]


# Settings only one service has: `<SERVICE>_<NAME>` (or `QIJI_<NAME>`), in README's table.
OWN_SETTINGS: dict[str, dict[str, OwnSetting]] = {
    "badges": {
        # The issuer's keys: an Ed25519 seed (base64) and an RSA private key (PEM, or base64
        # of it), each else its file; SIGNING_ALG chooses the one that signs.
        "SIGNING_KEY": OwnSetting(base64_key, ""),
        "SIGNING_KEY_FILE": OwnSetting(path, lambda data: str(data / "badges-signing.key")),
        "RSA_SIGNING_KEY": OwnSetting(text, ""),
        "RSA_SIGNING_KEY_FILE": OwnSetting(path,
                                           lambda data: str(data / "badges-signing-rsa.pem")),
        "SIGNING_ALG": OwnSetting(exactly("RS256", "Ed25519"), "RS256"),
        # The city's public https:// address of the credentials face (checked by
        # PublicUrls), and the form of the issuer's id.
        "ISSUER_URL": OwnSetting(text, ""),
        "ISSUER_ID_FORM": OwnSetting(exactly("https", "did:web"), "https"),
    },
    "credentials": {
        # Where the public credentials face listens, and its own HTTPS certificate (for the
        # public, not Qiji's internal CA) when it is not behind the city's reverse proxy.
        "HTTP_HOST": OwnSetting(text, "127.0.0.1"),
        "HTTP_PORT": OwnSetting(integer(1, MAX_PORT), str(CREDENTIALS_HTTP_PORT)),
        "HTTPS_CERT_FILE": OwnSetting(optional_path, ""),
        "HTTPS_KEY_FILE": OwnSetting(optional_path, ""),
        # Its `public_reader` token for badges' public RPCs (`qiji run` and `deploy/up` make
        # one), and how many calls a second it makes there at most (then it answers 429).
        "PUBLIC_READER_TOKEN": OwnSetting(text, ""),
        "CALLS_PER_SECOND": OwnSetting(POSITIVE, "50"),
    },
    "console": {
        # Where the console listens, and its own HTTPS certificate when it is not behind the
        # city's reverse proxy; SECURE_COOKIES "yes" marks its cookies Secure behind an HTTPS
        # proxy (always when it serves HTTPS itself).
        "HTTP_HOST": OwnSetting(text, "127.0.0.1"),
        "HTTP_PORT": OwnSetting(integer(1, MAX_PORT), str(CONSOLE_HTTP_PORT)),
        "HTTPS_CERT_FILE": OwnSetting(optional_path, ""),
        "HTTPS_KEY_FILE": OwnSetting(optional_path, ""),
        "SECURE_COOKIES": OwnSetting(exactly("yes", "no"), "no"),
        # A session ends after this long without a request, and after this long in all.
        "SESSION_IDLE_SECONDS": OwnSetting(seconds, "1800"),
        "SESSION_MAX_SECONDS": OwnSetting(seconds, "28800"),
        # The vendored ECharts (echarts.min.js), made at build time from npm.
        "ASSETS_DIR": OwnSetting(path, str(PROJECT_DIR / CONSOLE_ASSETS_DIR)),
    },
    "governance": {
        # Tests and drills only: a file holding the time governance takes for "now".
        "CLOCK_FILE": OwnSetting(optional_path, ""),
        "DEADLINE_POLL_SECONDS": OwnSetting(seconds, "1"),
    },
    "relay": {
        # The URI holds the broker's password.
        "AMQP_URI": OwnSetting(amqp_uri, DEFAULT_AMQP_URI),
        "BATCH": OwnSetting(POSITIVE, "200"),
        "POLL_SECONDS": OwnSetting(seconds, "0.2"),
        "SERVICES": OwnSetting(service_list, ",".join(EVENT_SOURCED_SERVICES)),
    },
}


def load_settings(service: str, env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env

    def read(name: str, parse: Parse, default: str) -> Any:
        return read_setting(env, service, name, parse, default)

    data_dir = read("DATA_DIR", path, str(DEFAULT_DATA_DIR)).resolve()
    settings = Settings(
        service=service,
        persistence=read("PERSISTENCE", one_of(*PERSISTENCE_CHOICES), "sqlite"),
        data_dir=data_dir,
        grpc_host=read("GRPC_HOST", text, "127.0.0.1"),
        grpc_port=read("GRPC_PORT", PORT, str(DEFAULT_PORTS.get(service, 0))),
        grpc_workers=read("GRPC_WORKERS", POSITIVE, "32"),
        grpc_quick_workers=read("GRPC_QUICK_WORKERS", integer(0, 256), "4"),
        grpc_share_port=read("GRPC_SHARE_PORT", one_of("yes", "no"), "no") == "yes",
        metrics_port=read("METRICS_PORT", PORT, "0"),
        postgres_dbname=read("POSTGRES_DBNAME", text, "qiji"),
        postgres_host=read("POSTGRES_HOST", text, "127.0.0.1"),
        postgres_port=read("POSTGRES_PORT", integer(1, MAX_PORT), "5432"),
        postgres_user=read("POSTGRES_USER", text, "postgres"),
        postgres_password=read("POSTGRES_PASSWORD", text, ""),
        postgres_schema=read("POSTGRES_SCHEMA", identifier, service),
        # Connections a process opens at start; as many again open under load. PostgreSQL's
        # default allows 100 clients in all: five services and their replicas share them.
        postgres_pool_size=read("POSTGRES_POOL_SIZE", POSITIVE, "4"),
        # A code is redeemed hours after it was claimed; in a city whose merchants hand out
        # more codes than this in those hours, each redemption reads its claim back from the
        # store (bench_perk_history: 1.44x the CPU of one still cached). The process's memory
        # is the price: a cached claim is about 1.1 KB (README).
        aggregate_cache_size=read("AGGREGATE_CACHE_SIZE", POSITIVE, "20000"),
        tokens_file=read("TOKENS_FILE", path, str(data_dir / "tokens.json")),
        master_key=read("MASTER_KEY", base64_key, ""),
        master_key_file=read("MASTER_KEY_FILE", path, str(data_dir / "master.key")),
        log_format=read("LOG_FORMAT", one_of("json", "console"), "json"),
        upstreams={other: read(f"{other.upper()}_ADDRESS", address, f"127.0.0.1:{port}")
                   for other, port in DEFAULT_PORTS.items() if other != service},
        service_token=read("SERVICE_TOKEN", text, ""),
        audit_signing_key=read("AUDIT_SIGNING_KEY", base64_key, ""),
        audit_signing_key_file=read("AUDIT_SIGNING_KEY_FILE", path,
                                    str(data_dir / "audit-signing.key")),
        audit_origin=read("AUDIT_ORIGIN", origin, "qiji.local"),
        audit_checkpoint_events=read("AUDIT_CHECKPOINT_EVENTS", POSITIVE, "1000"),
        audit_checkpoint_seconds=read("AUDIT_CHECKPOINT_SECONDS", POSITIVE, "60"),
        env=dict(env),
        tls=load_tls_settings(service, env),
        own={name: read(name, s.parse, s.default(data_dir) if callable(s.default)
                        else s.default)
             for name, s in OWN_SETTINGS.get(service, {}).items()},
    )
    if settings.grpc_share_port and settings.persistence != "postgres":
        key, _ = _lookup_with_key(env, service, "GRPC_SHARE_PORT", "")
        raise ConfigError(f"{key}: processes sharing a port share one store, which needs "
                          "QIJI_PERSISTENCE=postgres (the embedded SQLite default is one "
                          "process's)")
    return settings


def load_tls_settings(service: str, env: Mapping[str, str]) -> TlsSettings:
    """The `TLS_*` settings, checked for combinations that cannot work. That the files can be
    read (and hold what they should) is checked when credentials are made from them, at start."""

    def path(name: str) -> Path | None:
        return read_setting(env, service, name, optional_path, "")

    tls = TlsSettings(
        cert_file=path("TLS_CERT_FILE"), key_file=path("TLS_KEY_FILE"),
        client_ca_file=path("TLS_CLIENT_CA_FILE"), ca_file=path("TLS_CA_FILE"),
        client_cert_file=path("TLS_CLIENT_CERT_FILE"),
        client_key_file=path("TLS_CLIENT_KEY_FILE"))
    if (tls.cert_file is None) != (tls.key_file is None):
        raise ConfigError("TLS_CERT_FILE and TLS_KEY_FILE go together: set both (serve TLS) "
                          "or neither (serve plaintext)")
    if tls.client_ca_file is not None and not tls.serves_tls:
        raise ConfigError("TLS_CLIENT_CA_FILE needs TLS_CERT_FILE and TLS_KEY_FILE: client "
                          "certificates are only asked for on a TLS port")
    if (tls.client_cert_file is None) != (tls.client_key_file is None):
        raise ConfigError("TLS_CLIENT_CERT_FILE and TLS_CLIENT_KEY_FILE go together: set both "
                          "or neither")
    if tls.client_cert_file is not None and not tls.dials_tls:
        raise ConfigError("TLS_CLIENT_CERT_FILE needs TLS_CA_FILE: a client certificate is "
                          "only presented over TLS, and TLS_CA_FILE names the roots that "
                          "verify the servers")
    return tls


def out_of_range(ports: Iterable[int]) -> list[int]:
    """The ports of `ports` that are no ports (outside 1..65535): how `qiji run --port-base`,
    deploy's --port-offset and a run directory's stack.json are checked alike."""
    return [port for port in ports if not 0 < port <= MAX_PORT]


def secret_setting(variable: str) -> str | None:
    """The secret an environment variable hands over (`BADGES_SIGNING_KEY_FILE` hands over
    SIGNING_KEY), or None."""
    prefix, _, name = variable.partition("_")
    if prefix.lower() not in ("qiji", *PROCESSES):
        return None
    name = name.removesuffix("_FILE")
    return name if name in SECRET_SETTINGS else None


def holds(process: str, variable: str) -> bool:
    """Whether `process` may be given environment variable `variable`: any setting but a
    secret; a secret only if it uses it, and only under a name it reads itself (`QIJI_` or
    its own prefix — never another process's)."""
    secret = secret_setting(variable)
    return secret is None or (process in SECRET_SETTINGS[secret]
                              and variable.partition("_")[0] in ("QIJI", process.upper()))


def withheld(process: str, variables: Iterable[str]) -> list[str]:
    """Of `variables`, those `process` must not be given: what a supervisor that passes one
    environment to all its programs blanks for it."""
    return sorted(v for v in variables if not holds(process, v))


def env_for(name: str, env: Mapping[str, str]) -> dict[str, str]:
    """One process's environment: every setting, but secrets only for the processes that use
    them (least privilege, SECRET_SETTINGS)."""
    return {key: value for key, value in env.items() if holds(name, key)}
