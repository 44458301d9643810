"""deploy/monitoring: the Prometheus alert rules pass `promtool check rules` (Debian's
`prometheus` package ships it; .ci/run installs it), and the Grafana dashboard and the rules
ask only for metrics Qiji's processes serve."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import yaml

from shared import metrics
from tests.conftest import missing_server

MONITORING = Path(__file__).resolve().parents[2] / "deploy" / "monitoring"


def served_metrics() -> set[str]:
    import services.relay.metrics  # noqa: F401 - registers the relay's metrics
    names = set()
    for family in metrics.REGISTRY.collect():
        # A family's samples as the exposition format names them (none may exist yet).
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
        names.update(family.name + s for s in suffixes.get(family.type, [""]))
    return names | {"up"}


def test_promtool_accepts_the_alert_rules() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        missing_server("promtool is not installed (apt-get install prometheus)")
    done = subprocess.run([promtool, "check", "rules", str(MONITORING / "qiji-alerts.yml")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_rules_and_dashboard_ask_for_metrics_that_exist() -> None:
    rules = yaml.safe_load((MONITORING / "qiji-alerts.yml").read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    dashboard = json.loads((MONITORING / "grafana-qiji.json").read_text())
    exprs += [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    known = served_metrics()
    for expr in exprs:
        for name in re.findall(r"\b(qiji_[a-z_]+|up)\b", expr):
            assert name in known, (name, expr)
