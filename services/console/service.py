"""What makes the console a Qiji process: settings (CONSOLE_*), structured logs, metrics,
health (`/healthz` for liveness, `/readyz` while the statistics service answers), a graceful
stop on SIGTERM, served by uvicorn. It holds no token of its own: every call is made with the
signed-in caller's."""

from __future__ import annotations

from pathlib import Path

import structlog
import uvicorn

from services.console.app import build_app
from services.console.sessions import Sessions
from services.console.source import QijiSource
from shared import metrics
from shared.config import ConfigError, Settings, load_settings
from shared.logging import configure as configure_logging
from shared.logging import exits_on_config_error
from shared.web import Server, http_settings

log = structlog.get_logger(__name__)

NAME = "console"
ECHARTS = "echarts.min.js"


def assets_dir(settings: Settings) -> Path:
    """The vendored ECharts, checked at start: a console without it would draw no chart."""
    folder: Path = settings.own_setting("ASSETS_DIR")
    if not (folder / ECHARTS).is_file():
        raise ConfigError(f"CONSOLE_ASSETS_DIR: no {ECHARTS} in {folder}; run `make "
                          "console-assets` (it copies it from the echarts package that "
                          "package.json pins)")
    return folder


def addresses(settings: Settings) -> dict[str, str]:
    """The three services the console asks (CONSOLE_<SERVICE>_ADDRESS)."""
    return {name: settings.upstreams[name] for name in ("statistics", "identity", "governance")}


def serve() -> None:
    """The process entry point: `python -m services.console`."""
    with exits_on_config_error(NAME):
        settings = load_settings(NAME)
        configure_logging(NAME, settings.log_format)
        host, port, tls = http_settings(settings, NAME)
        assets = assets_dir(settings)
        sessions = Sessions(settings.own_setting("SESSION_IDLE_SECONDS"),
                            settings.own_setting("SESSION_MAX_SECONDS"))
        upstreams = addresses(settings)
        source = QijiSource(upstreams, settings.tls)
        secure = bool(tls) or settings.own_setting("SECURE_COOKIES") == "yes"
    metrics.serve(host, settings.metrics_port)
    config = uvicorn.Config(build_app(source, assets_dir=assets, sessions=sessions,
                                      secure_cookies=secure),
                            host=host, port=port, log_config=None, access_log=False,
                            server_header=False, proxy_headers=False,
                            timeout_graceful_shutdown=5, **tls)
    log.info("service.started", address=f"{host}:{port}", https=bool(tls), **upstreams)
    try:
        Server(config).run()
    finally:
        source.close()
        log.info("service.stopped")
