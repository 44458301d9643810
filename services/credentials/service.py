"""What makes the public credentials face a Qiji process: settings, structured logs, metrics,
health (`/healthz` for liveness, `/readyz` while badges answers), a graceful stop on SIGTERM,
served by uvicorn."""

from __future__ import annotations

import signal

import structlog
import uvicorn

from services.credentials.app import build_app
from services.credentials.source import BadgesSource
from shared import metrics
from shared.config import CREDENTIALS_HTTP_PORT, ConfigError, Settings, load_settings
from shared.logging import configure as configure_logging
from shared.logging import exits_on_config_error

log = structlog.get_logger(__name__)

NAME = "credentials"


def http_settings(settings: Settings) -> tuple[str, int, dict[str, str]]:
    """Where the face listens (CREDENTIALS_HTTP_HOST / _HTTP_PORT) and, if it serves HTTPS
    itself rather than behind the city's reverse proxy, its certificate
    (CREDENTIALS_HTTPS_CERT_FILE / _KEY_FILE: for the public, not Qiji's internal CA)."""
    host = settings.own_setting("HTTP_HOST", "127.0.0.1")
    raw = settings.own_setting("HTTP_PORT", str(CREDENTIALS_HTTP_PORT))
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ConfigError(f"CREDENTIALS_HTTP_PORT must be a port number, got {raw!r}")
    cert = settings.env.get("CREDENTIALS_HTTPS_CERT_FILE", "")
    key = settings.env.get("CREDENTIALS_HTTPS_KEY_FILE", "")
    if bool(cert) != bool(key):
        raise ConfigError("CREDENTIALS_HTTPS_CERT_FILE and CREDENTIALS_HTTPS_KEY_FILE go "
                          "together: set both (serve HTTPS) or neither")
    tls = {"ssl_certfile": cert, "ssl_keyfile": key} if cert else {}
    return host, int(raw), tls


class _Server(uvicorn.Server):
    def handle_exit(self, sig: int, frame: object) -> None:
        log.info("service.stopping", signal=signal.Signals(sig).name)
        super().handle_exit(sig, frame)  # type: ignore[arg-type]
        # uvicorn raises the signal again once it has stopped, which would end the process
        # "killed by SIGTERM"; a stop asked for and done is exit 0, like every Qiji process.
        self._captured_signals.clear()


def serve() -> None:
    """The process entry point: `python -m services.credentials`."""
    with exits_on_config_error(NAME):
        settings = load_settings(NAME)
        configure_logging(NAME, settings.log_format)
        if not settings.service_token:
            raise ConfigError("CREDENTIALS_SERVICE_TOKEN / QIJI_SERVICE_TOKEN must be set: "
                              "the public face reads badges' API with it")
        host, port, tls = http_settings(settings)
        source = BadgesSource(settings.upstreams["badges"], settings.service_token,
                              settings.tls)
    metrics.serve(host, settings.metrics_port)
    config = uvicorn.Config(build_app(source), host=host, port=port, log_config=None,
                            access_log=False, server_header=False, proxy_headers=False,
                            timeout_graceful_shutdown=5, **tls)
    log.info("service.started", address=f"{host}:{port}",
             badges=settings.upstreams["badges"], https=bool(tls))
    try:
        # uvicorn handles SIGTERM / SIGINT: it stops accepting, lets requests finish, exits.
        _Server(config).run()
    finally:
        source.close()
        log.info("service.stopped")
