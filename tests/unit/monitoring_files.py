"""What the monitoring tests share: where deploy/monitoring is, which processes serve
/metrics, and promtool (Debian's `prometheus` package ships it; .ci/run installs it)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from shared.tools.cli import CONSOLE, SERVICES, WEB
from tests.conftest import missing_server

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "deploy" / "monitoring"
ALERT_RULES = MONITORING / "qiji-alerts.yml"
DASHBOARD = MONITORING / "grafana-qiji.json"
# Every process that serves /metrics: the gRPC services (the figures among them), the relay,
# the public credentials face and the console.
PROCESSES = {*SERVICES, "relay", WEB, CONSOLE}
# The one scrape job the rules and the dashboard select (up{job="qiji"}).
JOB = "qiji"


def promtool(*args: str, cwd: Path = MONITORING) -> None:
    found = shutil.which("promtool")
    if found is None:
        missing_server("promtool is not installed (apt-get install prometheus)")
    done = subprocess.run([found, *args], cwd=cwd, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def yaml_file(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def flag(args: list[str], name: str) -> str:
    """The value of `--name=value` in a command line."""
    values = [a.split("=", 1)[1] for a in args if a.startswith(f"--{name}=")]
    assert len(values) == 1, (name, args)
    return values[0]
