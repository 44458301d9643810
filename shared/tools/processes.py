"""The processes of one Qiji and what they are handed: their names, in start order, the
principals and tokens Qiji's own processes present, the admin token of the embedded default,
their default /metrics ports, and whether a port or the console's assets are there to start on.

Both `qiji run` (shared/tools/cli.py) and the operator tools (shared/tools/ops/, deploy/up)
start the same processes the same way; this is what they share, public, so that neither
reaches into the other's private helpers."""

from __future__ import annotations

import socket
from pathlib import Path

from shared.auth import PUBLIC_READER, SERVICE, add_caller
from shared.config import ConfigError, load_settings
from shared.files import write_private

# The services `qiji run` starts, in start order; each new service joins this list.
SERVICES = ["identity", "training", "merchants", "badges", "governance", "platform",
            "statistics"]
# The public credentials face: HTTP, not gRPC, started once badges serves.
WEB = "credentials"
# The console: HTTP pages over the figures, identity and governance, started once they serve.
CONSOLE = "console"
CONSOLE_NEEDS = ("statistics", "identity", "governance")
ADMIN_PRINCIPAL = "local-admin"
SERVICES_PRINCIPAL = "qiji-services"
PUBLIC_FACE_PRINCIPAL = "qiji-public-face"
# The settings that hand Qiji's own processes their tokens (process_tokens).
PROCESS_TOKENS = ("QIJI_SERVICE_TOKEN", "QIJI_PUBLIC_READER_TOKEN")


def process_tokens(tokens_file: Path) -> dict[str, str]:
    """The tokens Qiji's own processes present, as the settings that hand them over: a
    `service` token (followers, the gateway and the relay read the feeds with it) and a
    `public_reader` token (the public credentials face reads badges' public RPCs with it,
    nothing else). New at every start — only the processes started now hold them; the
    previous ones stop working."""
    service, reader = PROCESS_TOKENS
    return {service: add_caller(tokens_file, SERVICES_PRINCIPAL, [SERVICE]),
            reader: add_caller(tokens_file, PUBLIC_FACE_PRINCIPAL, [PUBLIC_READER])}


def port_free(port: int) -> bool:
    """Whether a server could listen on 127.0.0.1:`port` now (`qiji run` and deploy/up look
    before they start anything)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As the servers bind: connections of a stopped Qiji in TIME_WAIT do not count, a
        # process listening there does.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def console_assets_missing() -> str:
    """Why the console cannot start here ("" when it can): its vendored ECharts is made by
    `make console-assets` (`make run` does it first)."""
    from services.console.service import assets_dir
    try:
        assets_dir(load_settings(CONSOLE))
    except ConfigError as missing:
        return str(missing)
    return ""


# Where `qiji run` and deploy/up serve each gRPC process's /metrics: 9101 for identity, and so
# on to 9106 for the platform gateway; 9107 and 9108 are the relay's and the public face's
# (shared/tools/ops/stack.py), so the figures, which came later, have 9109.
METRICS_PORTS = {**{name: 9101 + i for i, name in enumerate(
    ["identity", "training", "merchants", "badges", "governance", "platform"])},
    "statistics": 9109}


def metrics_port(service: str) -> int:
    """Where `qiji run` serves each service's /metrics: 9101 for identity, and so on."""
    return METRICS_PORTS[service]


def admin_token(tokens_file: Path, token_file: Path) -> str:
    """The embedded default's admin token: made on first run, kept (0600) beside the data so
    later runs can print it again. The tokens file itself holds only its hash."""
    if token_file.exists() and tokens_file.exists():
        return token_file.read_text().strip()
    token = add_caller(tokens_file, ADMIN_PRINCIPAL, ["city_admin", "operator", "auditor"])
    write_private(token_file, token + "\n")
    return token
