"""What makes the public credentials face a Qiji process: settings, structured logs, metrics,
health (`/healthz` for liveness, `/readyz` while badges answers), a graceful stop on SIGTERM,
served by uvicorn."""

from __future__ import annotations

import signal
from pathlib import Path

import structlog
import uvicorn

from services.credentials.app import build_app
from services.credentials.source import BadgesSource
from shared import metrics
from shared.config import ConfigError, Settings, load_settings
from shared.logging import configure as configure_logging
from shared.logging import exits_on_config_error

log = structlog.get_logger(__name__)

NAME = "credentials"


def http_settings(settings: Settings) -> tuple[str, int, dict[str, str]]:
    """Where the face listens (CREDENTIALS_HTTP_HOST / _HTTP_PORT) and, if it serves HTTPS
    itself rather than behind the city's reverse proxy, its certificate
    (CREDENTIALS_HTTPS_CERT_FILE / _KEY_FILE: for the public, not Qiji's internal CA)."""
    # Read and checked at start with every other setting (shared/config.py OWN_SETTINGS).
    host: str = settings.own_setting("HTTP_HOST")
    port: int = settings.own_setting("HTTP_PORT")
    cert: Path | None = settings.own_setting("HTTPS_CERT_FILE")
    key: Path | None = settings.own_setting("HTTPS_KEY_FILE")
    if (cert is None) != (key is None):
        raise ConfigError("CREDENTIALS_HTTPS_CERT_FILE and CREDENTIALS_HTTPS_KEY_FILE go "
                          "together: set both (serve HTTPS) or neither")
    tls = {"ssl_certfile": str(cert), "ssl_keyfile": str(key)} if cert and key else {}
    return host, port, tls


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
        # A public_reader token: the internet reaches this process, so it holds a token that
        # reaches badges' public reads and nothing else (never the `service` token).
        token = settings.own_setting("PUBLIC_READER_TOKEN")
        if not token:
            raise ConfigError("CREDENTIALS_PUBLIC_READER_TOKEN / QIJI_PUBLIC_READER_TOKEN must "
                              "be set to a public_reader token: the public face reads badges' "
                              "public RPCs with it")
        host, port, tls = http_settings(settings)
        source = BadgesSource(settings.upstreams["badges"], token, settings.tls,
                              calls_per_second=settings.own_setting("CALLS_PER_SECOND"))
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
