"""What makes the public credentials face a Qiji process: settings, structured logs, metrics,
health (`/healthz` for liveness, `/readyz` while badges answers), a graceful stop on SIGTERM,
served by uvicorn."""

from __future__ import annotations

import structlog
import uvicorn

from services.credentials.app import build_app
from services.credentials.source import BadgesSource
from shared import metrics
from shared.config import ConfigError, load_settings
from shared.logging import configure as configure_logging
from shared.logging import exits_on_config_error
from shared.web import Server, http_settings

log = structlog.get_logger(__name__)

NAME = "credentials"


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
        host, port, tls = http_settings(settings, NAME)
        source = BadgesSource(settings.upstreams["badges"], token, settings.tls,
                              calls_per_second=settings.own_setting("CALLS_PER_SECOND"))
    metrics.serve(host, settings.metrics_port)
    config = uvicorn.Config(build_app(source), host=host, port=port, log_config=None,
                            access_log=False, server_header=False, proxy_headers=False,
                            timeout_graceful_shutdown=5, **tls)
    log.info("service.started", address=f"{host}:{port}",
             badges=settings.upstreams["badges"], https=bool(tls))
    try:
        Server(config).run()
    finally:
        source.close()
        log.info("service.stopped")
