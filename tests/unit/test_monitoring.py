"""deploy/monitoring: the Prometheus alert rules pass `promtool check rules` and their unit
tests (`promtool test rules`; Debian's `prometheus` package ships promtool, .ci/run installs
it), and the Grafana dashboard and the rules ask only for metrics Qiji's processes serve."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from shared import metrics
from tests.unit.monitoring_files import (
    ALERT_RULES,
    DASHBOARD,
    PROCESSES,
    ROOT,
    promtool,
)


def served_metrics() -> set[str]:
    # Importing registers the public face's and the relay's metrics.
    import services.credentials.app
    import services.relay.metrics  # noqa: F401 - registers the relay's metrics
    names = set()
    for family in metrics.REGISTRY.collect():
        # A family's samples as the exposition format names them (none may exist yet).
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
        names.update(family.name + s for s in suffixes.get(family.type, [""]))
    return names | {"up"}


def test_promtool_accepts_the_alert_rules() -> None:
    promtool("check", "rules", str(ALERT_RULES))


def test_the_alerts_fire_when_they_should_and_only_then() -> None:
    """qiji-alerts.test.yml: a process down or never scraped, no leader for one service's
    work while another's leads the same upstream, slow calls beside a long feed stream, a
    refused follower, a lag that clears."""
    promtool("test", "rules", "qiji-alerts.test.yml")


def alert_exprs() -> dict[str, str]:
    rules = yaml.safe_load(ALERT_RULES.read_text())
    return {r["alert"]: r["expr"] for g in rules["groups"] for r in g["rules"]}


def test_a_missing_process_is_noticed_for_every_qiji_process() -> None:
    named = set(re.findall(r'absent\(up\{job="qiji", process="([a-z]+)"\}\)',
                           alert_exprs()["QijiProcessMissing"]))
    assert named == PROCESSES


def streaming_rpcs() -> set[str]:
    """Qiji's RPCs that return a stream: their duration is as long as the caller keeps it open.
    Only protos/qiji: the vendored reflection stream (protos/grpc) is open to anyone and never
    measured (the guard leaves health and reflection alone)."""
    return {m for proto in (ROOT / "protos" / "qiji").rglob("*.proto")
            for m in re.findall(r"rpc\s+(\w+)\s*\([^)]*\)\s*returns\s*\(\s*stream\b",
                                proto.read_text())}


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(qiji_[a-z_]+|up)\b", expr))


def latency_exprs() -> list[str]:
    return [e for e in [*alert_exprs().values(), *dashboard_exprs()]
            if "qiji_rpc_duration_seconds" in e]


def test_latency_leaves_out_every_streaming_rpc() -> None:
    streams = streaming_rpcs()
    assert {"StreamEvents", "VerifyLog"} <= streams
    exprs = latency_exprs()
    assert exprs
    for expr in exprs:
        left_out = re.search(r'qiji_rpc_duration_seconds_bucket\{method!~"([^"]+)"\}', expr)
        assert left_out and set(left_out.group(1).split("|")) >= streams, expr


def test_rules_and_dashboard_ask_for_metrics_that_exist() -> None:
    known = served_metrics()
    for expr in [*alert_exprs().values(), *dashboard_exprs()]:
        for name in metric_names(expr):
            assert name in known, (name, expr)


# What the dashboard leaves out, and why; everything else a process serves is charted, so a
# metric added later (an integrity measure, say) fails here until it has a panel or a reason.
NOT_CHARTED = {
    "qiji_follower_position": "the lag is the figure to watch; deploy/status lists positions",
    "qiji_relay_position": "the relay's lag is this against the service's position",
    "qiji_relay_upstream_position": "the relay's lag is the service's position against this",
    "qiji_rpc_duration_seconds_sum": "the quantiles come from the buckets",
    "qiji_rpc_duration_seconds_count": "calls are counted by code in qiji_rpc_total",
    "qiji_rpc_queue_seconds_sum": "the quantiles come from the buckets",
    "qiji_rpc_queue_seconds_count": "calls are counted by code in qiji_rpc_total",
    "qiji_commit_batch_saves_sum": "the quantiles come from the buckets",
    "qiji_commit_batch_saves_count": "qiji_events_stored_total counts what was stored",
    "qiji_http_request_duration_seconds_sum": "the quantiles come from the buckets",
    "qiji_http_request_duration_seconds_count": "requests are counted by status in "
                                                "qiji_http_requests_total",
}


def test_the_dashboard_charts_every_metric_a_process_serves_or_says_why_not() -> None:
    charted = set().union(*map(metric_names, dashboard_exprs()))
    served = served_metrics()
    assert served - charted == set(NOT_CHARTED)
    # Health, errors by code, latency, refusals, follower and relay lag, leaders.
    assert {"up", "qiji_rpc_total", "qiji_rpc_duration_seconds_bucket", "qiji_rpc_refused_total",
            "qiji_follower_lag_events", "qiji_relay_lag_events", "qiji_leader",
            "qiji_relay_leader", "qiji_relay_healthy", "qiji_follower_upstream_refused",
            "qiji_http_requests_total"} <= charted
    assert any(re.search(r"qiji_rpc_total\{code=~\"[A-Z_|]+\"\}", e)
               and "by (service, code)" in e for e in dashboard_exprs())


def test_every_panel_asks_the_provisioned_prometheus_and_has_a_unique_id() -> None:
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        if panel["type"] in {"row", "text"}:
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["id"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)) and all(t["expr"] for t in panel["targets"])


def test_promtool_parses_every_dashboard_expression(tmp_path: Path) -> None:
    """Each panel's query as a recording rule: promtool parses it as Prometheus would."""
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:panel_{i}", "expr": expr}
        for i, expr in enumerate(dashboard_exprs())]}]}
    (tmp_path / "dashboard-rules.yml").write_text(yaml.safe_dump(rules))
    promtool("check", "rules", "dashboard-rules.yml", cwd=tmp_path)
