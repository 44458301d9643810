"""Configuration from the environment: `<SERVICE>_<NAME>` first, then `QIJI_<NAME>`, then a safe
default. One place, so that every service reads its settings the same way."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

# Fixed default ports, so `make run` prints stable addresses and clients need no discovery.
DEFAULT_PORTS = {
    "identity": 50051,
    "training": 50052,
    "merchants": 50053,
    "badges": 50054,
    "governance": 50055,
    # The platform company's event feed gateway (services/platform): no store of its own.
    "platform": 50056,
}
# The public credentials face (services/credentials): HTTP, not gRPC; it serves what badges
# publishes to anyone, with no token. `qiji run --port-base N` puts it on N+7.
CREDENTIALS_HTTP_PORT = 50057
# The services that keep an event store (and serve its feed and audit API); the gateway does not.
EVENT_SOURCED_SERVICES = ("identity", "training", "merchants", "badges", "governance")

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


@dataclass(frozen=True)
class Settings:
    service: str
    persistence: str
    data_dir: Path
    grpc_host: str
    grpc_port: int
    grpc_workers: int
    # The HTTP port of /metrics (0: none).
    metrics_port: int
    postgres_dbname: str
    postgres_host: str
    postgres_port: int
    postgres_user: str
    postgres_password: str
    postgres_schema: str
    postgres_pool_size: int
    tokens_file: Path
    master_key: str
    master_key_file: Path
    log_format: str
    # Where this service finds each other service's feed (`<SERVICE>_<OTHER>_ADDRESS`), and the
    # `service` role token its followers present there.
    upstreams: dict[str, str]
    service_token: str
    # A service's own signing key (badges signs credentials with it): base64 or a file.
    signing_key: str
    signing_key_file: Path
    # The audit signing key (Ed25519) every service signs its log's checkpoints with, and the
    # name its checkpoints carry: `<audit_origin>/<service>` (shared/checkpoints.py).
    audit_signing_key: str
    audit_signing_key_file: Path
    audit_origin: str
    # The environment the settings were read from, for a service's own extra settings.
    env: Mapping[str, str]
    tls: TlsSettings = field(default_factory=TlsSettings)

    def own_setting(self, name: str, default: str = "") -> str:
        """A setting only one service has (`GOVERNANCE_CLOCK_FILE`), by the same rule:
        `<SERVICE>_<NAME>`, then `QIJI_<NAME>`, then the default."""
        return _lookup(self.env, self.service, name, default)

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / f"{self.service}.sqlite3"

    @property
    def address(self) -> str:
        return f"{self.grpc_host}:{self.grpc_port}"


def _lookup(env: Mapping[str, str], service: str, name: str, default: str) -> str:
    for key in (f"{service.upper()}_{name}", f"QIJI_{name}"):
        value = env.get(key)
        if value is not None and value != "":
            return value
    return default


def _int(env: Mapping[str, str], service: str, name: str, default: int) -> int:
    raw = _lookup(env, service, name, str(default))
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(
            f"{service.upper()}_{name} / QIJI_{name} must be an integer, got {raw!r}") from None


def _identifier(name: str) -> str:
    # Schema names end up in SQL text (DDL cannot take parameters): allow only plain names.
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
        raise ConfigError(f"POSTGRES_SCHEMA must be a plain lower-case identifier, got {name!r}")
    return name


def _origin(name: str) -> str:
    # The first line of every checkpoint and its key name: c2sp.org/signed-note forbids spaces
    # and "+" in it; a schema-less URL of the city's is the recommended form.
    if not name or any(c.isspace() or c == "+" for c in name):
        raise ConfigError(f"AUDIT_ORIGIN must be a name without spaces or '+' (e.g. "
                          f"audit.changzhou.gov.cn/qiji), got {name!r}")
    return name


def load_settings(service: str, env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    persistence = _lookup(env, service, "PERSISTENCE", "sqlite").lower()
    if persistence not in PERSISTENCE_CHOICES:
        raise ConfigError(f"PERSISTENCE must be one of {PERSISTENCE_CHOICES}, got {persistence!r}")
    data_dir = Path(_lookup(env, service, "DATA_DIR", "data")).resolve()
    return Settings(
        service=service,
        persistence=persistence,
        data_dir=data_dir,
        grpc_host=_lookup(env, service, "GRPC_HOST", "127.0.0.1"),
        grpc_port=_int(env, service, "GRPC_PORT", DEFAULT_PORTS.get(service, 0)),
        grpc_workers=_int(env, service, "GRPC_WORKERS", 32),
        metrics_port=_int(env, service, "METRICS_PORT", 0),
        postgres_dbname=_lookup(env, service, "POSTGRES_DBNAME", "qiji"),
        postgres_host=_lookup(env, service, "POSTGRES_HOST", "127.0.0.1"),
        postgres_port=_int(env, service, "POSTGRES_PORT", 5432),
        postgres_user=_lookup(env, service, "POSTGRES_USER", "postgres"),
        postgres_password=_lookup(env, service, "POSTGRES_PASSWORD", ""),
        postgres_schema=_identifier(_lookup(env, service, "POSTGRES_SCHEMA", service)),
        # Connections a process opens at start; as many again open under load. PostgreSQL's
        # default allows 100 clients in all: five services and their replicas share them.
        postgres_pool_size=_int(env, service, "POSTGRES_POOL_SIZE", 4),
        tokens_file=Path(_lookup(env, service, "TOKENS_FILE", str(data_dir / "tokens.json"))),
        master_key=_lookup(env, service, "MASTER_KEY", ""),
        master_key_file=Path(
            _lookup(env, service, "MASTER_KEY_FILE", str(data_dir / "master.key"))
        ),
        log_format=_lookup(env, service, "LOG_FORMAT", "json"),
        upstreams={other: _lookup(env, service, f"{other.upper()}_ADDRESS",
                                  f"127.0.0.1:{port}")
                   for other, port in DEFAULT_PORTS.items() if other != service},
        service_token=_lookup(env, service, "SERVICE_TOKEN", ""),
        signing_key=_lookup(env, service, "SIGNING_KEY", ""),
        signing_key_file=Path(_lookup(env, service, "SIGNING_KEY_FILE",
                                      str(data_dir / f"{service}-signing.key"))),
        audit_signing_key=_lookup(env, service, "AUDIT_SIGNING_KEY", ""),
        audit_signing_key_file=Path(_lookup(env, service, "AUDIT_SIGNING_KEY_FILE",
                                            str(data_dir / "audit-signing.key"))),
        audit_origin=_origin(_lookup(env, service, "AUDIT_ORIGIN", "qiji.local")),
        env=dict(env),
        tls=load_tls_settings(service, env),
    )


def load_tls_settings(service: str, env: Mapping[str, str]) -> TlsSettings:
    """The `TLS_*` settings, checked for combinations that cannot work. That the files can be
    read (and hold what they should) is checked when credentials are made from them, at start."""

    def path(name: str) -> Path | None:
        raw = _lookup(env, service, name, "")
        return Path(raw) if raw else None

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


# Settings that hand a process a key: the master key, the audit and badges signing keys.
_KEY_SETTINGS = ("MASTER_KEY", "MASTER_KEY_FILE", "SIGNING_KEY", "SIGNING_KEY_FILE")


# Every setting that hands a process a key, by name: what a supervisor that passes one
# environment to all its programs must blank for those that hold none.
KEY_SETTING_NAMES = tuple(f"{prefix}_{key}{file}" for prefix, key in (
    ("QIJI", "MASTER_KEY"), ("QIJI", "AUDIT_SIGNING_KEY"), ("BADGES", "SIGNING_KEY"),
    ("BADGES", "RSA_SIGNING_KEY")) for file in ("", "_FILE"))


def withheld_keys(name: str) -> list[str]:
    """The key settings process `name` must not be given (env_for's rule)."""
    return [k for k in KEY_SETTING_NAMES if k not in env_for(name, {k: "x"})]


def env_for(name: str, env: Mapping[str, str]) -> dict[str, str]:
    """One process's environment: every setting, but keys only for the processes that use them
    (least privilege). The five services hold the master key (personal data, and the audit
    key derived from it that MACs and seals events) and the audit signing key (checkpoints);
    badges alone its credential key. The platform gateway and the relay hold none: they face
    outside parties, and the services check every event's MAC for them."""
    own = ("QIJI_", f"{name.upper()}_") if name in EVENT_SOURCED_SERVICES else ()
    return {key: value for key, value in env.items()
            if not key.endswith(_KEY_SETTINGS) or key.startswith(own)}
