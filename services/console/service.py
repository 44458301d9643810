"""What makes the console a Qiji process: settings (CONSOLE_*), structured logs, metrics,
health (`/healthz` for liveness, `/readyz` while the statistics service answers), a graceful
stop on SIGTERM, served by uvicorn. It holds no token of its own: every call is made with the
signed-in caller's."""

from __future__ import annotations

import signal
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

log = structlog.get_logger(__name__)

NAME = "console"
ECHARTS = "echarts.min.js"


def http_settings(settings: Settings) -> tuple[str, int, dict[str, str]]:
    """Where the console listens (CONSOLE_HTTP_HOST / _HTTP_PORT) and, if it serves HTTPS
    itself, its certificate (CONSOLE_HTTPS_CERT_FILE / _KEY_FILE)."""
    host: str = settings.own_setting("HTTP_HOST")
    port: int = settings.own_setting("HTTP_PORT")
    cert: Path | None = settings.own_setting("HTTPS_CERT_FILE")
    key: Path | None = settings.own_setting("HTTPS_KEY_FILE")
    if (cert is None) != (key is None):
        raise ConfigError("CONSOLE_HTTPS_CERT_FILE and CONSOLE_HTTPS_KEY_FILE go together: set "
                          "both (serve HTTPS) or neither")
    tls = {"ssl_certfile": str(cert), "ssl_keyfile": str(key)} if cert and key else {}
    return host, port, tls


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


class _Server(uvicorn.Server):
    def handle_exit(self, sig: int, frame: object) -> None:
        log.info("service.stopping", signal=signal.Signals(sig).name)
        super().handle_exit(sig, frame)  # type: ignore[arg-type]
        # uvicorn raises the signal again once it has stopped; a stop asked for and done is
        # exit 0, like every Qiji process.
        self._captured_signals.clear()


def serve() -> None:
    """The process entry point: `python -m services.console`."""
    with exits_on_config_error(NAME):
        settings = load_settings(NAME)
        configure_logging(NAME, settings.log_format)
        host, port, tls = http_settings(settings)
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
        _Server(config).run()
    finally:
        source.close()
        log.info("service.stopped")
