"""`status`: every process's health, each service's log position, the full head of its seal
chain and its newest signed checkpoint, whether any reader stopped at an event that fails its
integrity check, each follower's position against its upstream's, and the relay's position
against every service's.

Where each figure comes from: health from grpc.health.v1; a service's log position from its
FeedService (the admin token holds the operator role); a follower's position from its service's
/metrics (`qiji_follower_position`: the upstream position it has caught up through); the relay's
health from its /metrics and its positions from its own table (services/relay/positions.py);
the seal head from the service's `audit_seals` table and the newest checkpoint from its log;
integrity from the health name `qiji.integrity` and the `qiji_audit_intact` metric of every
process (the relay's and the gateway's included). Lag is always "upstream log position now
minus where the reader stands", so a stuck reader's lag grows while its upstream writes."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from typing import Any

import grpc
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from psycopg import sql
from qiji.feed.v1 import feed_service_pb2 as feed_pb
from qiji.feed.v1 import feed_service_pb2_grpc as feed_grpc

from shared.checkpoints import CHECKPOINT_TOPIC, BadCheckpoint, unverified
from shared.config import EVENT_SOURCED_SERVICES, load_settings
from shared.grpc.channels import open_channel
from shared.grpc.server import FOLLOWERS
from shared.integrity import HEALTH as INTEGRITY
from shared.tools.ops import (
    DEPENDENCY_UNREACHABLE,
    LAGGING,
    OK,
    UNHEALTHY,
    VERIFICATION_FAILED,
    OpsError,
    supervision,
)
from shared.tools.ops.stack import (
    CONSOLE,
    RELAY,
    WEB,
    Stack,
    check_rabbitmq,
    dialling_tls,
    http_get,
    running_pid,
)
from shared.tools.processes import SERVICES

# A relay whose heartbeat is older than this is stuck, whatever its last health said.
RELAY_HEARTBEAT_STALE = 30.0

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    """Prometheus text from `url` as {(name, sorted labels): value}."""
    samples: Samples = {}
    for family in text_string_to_metric_families(http_get(url)):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


# Each process's /metrics, read once per status: the samples, or why they could not be read.
Scraped = dict[str, Samples | OSError]


def scrape_all(stack: Stack) -> Scraped:
    found: Scraped = {}
    for name in [*SERVICES, RELAY]:
        try:
            found[name] = scrape(stack.metrics_url(name))
        except OSError as error:
            found[name] = error
    return found


@dataclass
class Report:
    services: dict[str, dict[str, Any]] = field(default_factory=dict)
    followers: list[dict[str, Any]] = field(default_factory=list)
    relay: dict[str, Any] = field(default_factory=dict)
    dependencies: dict[str, str] = field(default_factory=dict)
    supervisor: dict[str, Any] = field(default_factory=dict)
    leaders: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    code: int = OK
    integrity: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.code == OK, "exit_code": self.code, "services": self.services,
                "integrity": self.integrity, "followers": self.followers, "relay": self.relay,
                "dependencies": self.dependencies, "supervisor": self.supervisor,
                "leaders": self.leaders,
                "problems": self.problems}


def collect(stack: Stack, *, max_lag: int | None, face_expected: bool = True,
            console_expected: bool = True, not_yet: Collection[str] = ()) -> Report:
    """`face_expected=False` / `console_expected=False`: the running stack is of a release
    without the public credentials face / the console (upgrade's health check before it
    brings one), so its absence is no problem; nor is that of the services in `not_yet`,
    which the running release did not have either (the figures, before 0.2)."""
    report = Report()
    dependency_down = unhealthy = lagging = False
    try:
        conn: psycopg.Connection | None = psycopg.connect(stack.conninfo(), autocommit=True)
        report.dependencies["postgresql"] = "ok"
    except psycopg.OperationalError as error:
        conn = None
        report.dependencies["postgresql"] = str(error).strip().splitlines()[0]
        report.problems.append("PostgreSQL is unreachable")
        dependency_down = True
    try:
        check_rabbitmq(stack.broker_uri)
        report.dependencies["rabbitmq"] = "ok"
    except OpsError as error:
        report.dependencies["rabbitmq"] = str(error)
        report.problems.append("RabbitMQ is unreachable")
        dependency_down = True
    token = stack.admin_token()
    metadata = (("authorization", f"Bearer {token}"),)
    supervised = supervision.processes(stack)
    report.supervisor = {
        "pid": supervision.supervisord_pid(stack),
        "processes": {name: asdict(state) for name, state in supervised.items()}}
    if report.supervisor["pid"] is None:
        report.problems.append("supervisord is not running: nothing restarts a process that "
                               "dies (deploy/up starts it)")
    for name, state in supervised.items():
        # STARTING: within its first seconds (health says whether it serves yet).
        if state.state not in (supervision.RUNNING, supervision.STARTING):
            unhealthy = True
            report.problems.append(f"{name} is {state.state} under supervisord"
                                   + (f" (last exit: {state.last_exit})" if state.last_exit
                                      else ""))
    positions: dict[str, int | None] = {}
    try:
        for name in SERVICES:
            entry = report.services[name] = _service(stack, name, metadata, conn)
            positions[name] = entry.get("log_position")
            if entry["health"] != "SERVING" and name not in not_yet:
                unhealthy = True
                report.problems.append(f"{name} is {entry['health']}")
        scraped = scrape_all(stack)
        for name in SERVICES:
            for follower in _followers(stack, name, positions, scraped[name]):
                report.followers.append(follower)
                if follower.get("refused"):
                    unhealthy = True
                    report.problems.append(
                        f"{name}'s follower of {follower['upstream']} is refused by it "
                        f"({follower['refused']}): QIJI_SERVICE_TOKEN is not accepted there")
            if report.services[name].get("followers_health") == "NOT_SERVING":
                unhealthy = True
                report.problems.append(f"{name}: health qiji.followers is NOT_SERVING (an "
                                       "upstream refuses one of its followers)")
        # The figures (services/statistics): how far their read model has read each log.
        if "statistics" in SERVICES and report.services["statistics"]["health"] == "SERVING":
            report.followers.extend(_figures(stack, metadata, positions))
        report.leaders = leaders(stack, scraped)
        for name in EVENT_SOURCED_SERVICES:
            seal = report.services[name].get("seal_lag")
            if seal is not None:
                report.followers.append({"service": name, "upstream": "seal (its own log)",
                                         "position": report.services[name]["sealed_through"],
                                         "upstream_position": positions[name], "lag": seal})
        report.services[WEB] = _web(stack)
        if report.services[WEB]["health"] != "SERVING" and face_expected:
            unhealthy = True
            report.problems.append(f"{WEB} is {report.services[WEB]['health']}")
        report.services[CONSOLE] = _http_face(stack.console_url, running_pid(stack, CONSOLE))
        if report.services[CONSOLE]["health"] != "SERVING" and console_expected:
            unhealthy = True
            report.problems.append(f"{CONSOLE} is {report.services[CONSOLE]['health']}")
        report.relay = _relay(stack, conn, positions, scraped[RELAY])
        if not report.relay["healthy"]:
            unhealthy = True
            report.problems.append(f"the relay is not healthy: {report.relay['reason']}")
        report.integrity = _integrity(scraped)
        for name, entry in report.services.items():
            if entry.get("integrity") == "NOT_SERVING" and not any(
                    i["process"] == name for i in report.integrity):
                report.integrity.append({"process": name, "log": "?", "reader": "?",
                                         "position": None})
        for broken in report.integrity:
            report.problems.append(
                f"INTEGRITY: {broken['process']}: {broken['reader']} stopped at position "
                f"{broken['position']} of {broken['log']}'s log: an event there fails its "
                "integrity check (forged or altered in the database); nothing past it is "
                "sealed, followed or published. See deploy/README.md, \"When the integrity "
                "alarm fires\"")
    finally:
        if conn is not None:
            conn.close()
    lags = [*report.followers, *report.relay.get("services", [])]
    if max_lag is not None:
        for entry in lags:
            if entry.get("lag") is not None and entry["lag"] > max_lag:
                lagging = True
                report.problems.append(
                    f"{entry.get('service', 'relay')} <- {entry['upstream']} lags by "
                    f"{entry['lag']} (> --max-lag {max_lag})")
    report.code = (DEPENDENCY_UNREACHABLE if dependency_down
                   else VERIFICATION_FAILED if report.integrity else UNHEALTHY if unhealthy
                   else LAGGING if lagging else OK)
    return report


def _service(stack: Stack, name: str, metadata: Any, conn: psycopg.Connection | None
             ) -> dict[str, Any]:
    entry: dict[str, Any] = {"address": stack.address(name), "pid": running_pid(stack, name)}
    with open_channel(stack.address(name), dialling_tls()) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(  # type: ignore[attr-defined]  # stub lacks Check
                health_pb2.HealthCheckRequest(service=""), timeout=2)
            entry["health"] = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            reply = health_pb2_grpc.HealthStub(channel).Check(  # type: ignore[attr-defined]  # stub lacks Check
                health_pb2.HealthCheckRequest(service=INTEGRITY), timeout=2)
            entry["integrity"] = health_pb2.HealthCheckResponse.ServingStatus.Name(
                reply.status)
            followers = health_pb2_grpc.HealthStub(channel).Check(  # type: ignore[attr-defined]  # stub lacks Check
                health_pb2.HealthCheckRequest(service=FOLLOWERS), timeout=2)
            entry["followers_health"] = health_pb2.HealthCheckResponse.ServingStatus.Name(
                followers.status)
        except grpc.RpcError as error:
            entry.setdefault("health", f"UNREACHABLE ({error.code().name})")
        if name in EVENT_SOURCED_SERVICES and entry["health"] == "SERVING":
            try:
                entry["log_position"] = feed_grpc.FeedServiceStub(channel).ReadEvents(
                    feed_pb.ReadEventsRequest(from_position=0, limit=1), metadata=metadata,
                    timeout=5).last_position
            except grpc.RpcError as error:
                entry["log_position"] = None
                entry["log_position_error"] = error.code().name
    if name in EVENT_SOURCED_SERVICES and conn is not None:
        schema = load_settings(name, stack.settings_env()).postgres_schema
        head = seal_head(conn, schema)
        if head is not None:
            entry["sealed_through"], entry["head_seal"] = head
            if entry.get("log_position") is not None:
                entry["seal_lag"] = max(0, entry["log_position"] - head[0])
        entry["newest_checkpoint"] = newest_checkpoint(conn, schema, name)
    if name in EVENT_SOURCED_SERVICES:
        entry["verifier_key"] = stack.verifier_key(name)
    return entry


def newest_checkpoint(conn: psycopg.Connection, schema: str, service: str
                      ) -> dict[str, Any] | None:
    """The newest signed checkpoint stored in a service's log (what witnesses hold copies of),
    or None if there is none yet."""
    if not table_exists(conn, schema, events_table(service)):
        return None
    row = conn.execute(sql.SQL("SELECT notification_id, state FROM {} WHERE topic = %s ORDER "
                               "BY notification_id DESC LIMIT 1").format(
        sql.Identifier(schema, events_table(service))), (CHECKPOINT_TOPIC,)).fetchone()
    if row is None:
        return None
    try:
        checkpoint = unverified(json.loads(bytes(row[1]))["note"])
    except (ValueError, KeyError, BadCheckpoint):
        return {"stored_at": int(row[0]), "problem": "holds no checkpoint"}
    return {"stored_at": int(row[0]), "position": checkpoint.position,
            "seal": base64.b64encode(checkpoint.seal).decode(), "note": checkpoint.note}


def events_table(service: str) -> str:
    # eventsourcing names a PostgreSQL application's tables after the application's name.
    return f"{service}_events"


def _integrity(scraped: Scraped) -> list[dict[str, Any]]:
    """Every reader of every process that reports itself stopped at a bad event."""
    found = []
    for name, samples in scraped.items():
        if isinstance(samples, OSError):
            continue
        for (metric, labels), value in sorted(samples.items()):
            if metric == "qiji_audit_intact" and value == 0:
                label = dict(labels)
                position = samples.get(("qiji_audit_broken_position", labels))
                found.append({"process": name, "log": label.get("log"),
                              "reader": label.get("reader"),
                              "position": None if position is None else int(position)})
    return found


def _web(stack: Stack) -> dict[str, Any]:
    """The public credentials face: SERVING while /readyz says badges answers it."""
    return _http_face(stack.web_url, running_pid(stack, WEB))


def _http_face(url: str, pid: int | None) -> dict[str, Any]:
    """An HTTP face (the public one, the console): SERVING while its /readyz answers 200."""
    entry: dict[str, Any] = {"address": url, "pid": pid}
    try:
        http_get(f"{url}/readyz")
        entry["health"] = "SERVING"
    except OSError as error:
        entry["health"] = f"NOT_SERVING ({getattr(error, 'code', type(error).__name__)})"
    return entry


def seal_head(conn: psycopg.Connection, schema: str) -> tuple[int, str] | None:
    """The newest seal of a service's chain (position, hex), (0, "") if none yet, or None
    when the service has no seal table."""
    if not table_exists(conn, schema, "audit_seals"):
        return None
    row = conn.execute(sql.SQL("SELECT notification_id, seal FROM {} ORDER BY notification_id "
                               "DESC LIMIT 1").format(sql.Identifier(schema, "audit_seals"))
                       ).fetchone()
    return (int(row[0]), bytes(row[1]).hex()) if row else (0, "")


def one_row(cursor: psycopg.Cursor[Any]) -> Any:
    """The row of a query that always answers one (an aggregate, a function's value)."""
    row = cursor.fetchone()
    if row is None:
        raise RuntimeError("the query answered no row")
    return row


def table_exists(conn: psycopg.Connection, schema: str, table: str) -> bool:
    return bool(one_row(conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                                     (f'"{schema}"."{table}"',)))[0])


def _followers(stack: Stack, name: str, positions: dict[str, int | None],
               samples: Samples | OSError) -> list[dict[str, Any]]:
    if name not in EVENT_SOURCED_SERVICES:
        return []
    if isinstance(samples, OSError):
        return [{"service": name, "upstream": "?", "position": None, "upstream_position": None,
                 "lag": None, "error": f"metrics unreachable at {stack.metrics_url(name)}"}]
    found = []
    refused = {dict(labels)["upstream"]: value for (metric, labels), value in samples.items()
               if metric == "qiji_follower_upstream_refused"}
    for (metric, labels), value in sorted(samples.items()):
        if metric != "qiji_follower_position":
            continue
        upstream = dict(labels)["upstream"]
        upstream_position = positions.get(upstream)
        found.append({"service": name, "upstream": upstream, "position": int(value),
                      "upstream_position": upstream_position,
                      "lag": None if upstream_position is None
                      else max(0, upstream_position - int(value)),
                      **({"refused": "UNAUTHENTICATED or PERMISSION_DENIED"}
                         if refused.get(upstream) else {})})
    return found


def _figures(stack: Stack, metadata: Any, positions: dict[str, int | None]
             ) -> list[dict[str, Any]]:
    """The figures' position in each service's log beside the log's own, as a follower's."""
    from qiji.statistics.v1 import statistics_service_pb2 as spb
    from qiji.statistics.v1 import statistics_service_pb2_grpc as spb_grpc
    with open_channel(stack.address("statistics"), dialling_tls()) as channel:
        try:
            read = spb_grpc.StatisticsServiceStub(channel).GetFreshness(
                spb.GetFreshnessRequest(), metadata=metadata, timeout=5).positions
        except grpc.RpcError as error:
            return [{"service": "statistics", "upstream": "?", "position": None,
                     "upstream_position": None, "lag": None,
                     "error": f"GetFreshness: {error.code().name}"}]
    found = []
    for p in read:
        upstream_position = positions.get(p.service)
        found.append({"service": "statistics", "upstream": p.service, "position": p.position,
                      "upstream_position": upstream_position,
                      "lag": None if upstream_position is None
                      else max(0, upstream_position - p.position)})
    return found


def leaders(stack: Stack, scraped: Scraped) -> dict[str, str]:
    """Which process leads each background work ("training follows identity", "governance
    deadlines", "relay"): from every process's /metrics (`qiji_leader`, `qiji_relay_leader`);
    "nobody" when none of this stack's processes does (another replica, or none at all)."""
    led: dict[str, str] = {}
    for name, samples in scraped.items():
        if isinstance(samples, OSError):
            continue
        where = f"{name} pid {running_pid(stack, name) or '?'}"
        for (metric, labels), value in samples.items():
            if metric == "qiji_leader":
                work = dict(labels)["work"]
                what = f"{name} {'deadlines' if work == 'deadlines' else 'follows ' + work}"
                if what != f"{RELAY} follows relay":
                    led[what] = where if value else led.get(what, "nobody here")
            elif metric == "qiji_relay_leader":
                led["relay publishes"] = where if value else led.get("relay publishes",
                                                                      "nobody here")
    return dict(sorted(led.items()))


def _relay(stack: Stack, conn: psycopg.Connection | None, positions: dict[str, int | None],
           scraped: Samples | OSError) -> dict[str, Any]:
    relay: dict[str, Any] = {"pid": running_pid(stack, RELAY), "metrics":
                             stack.metrics_url(RELAY), "healthy": False, "reason": ""}
    samples: Samples = {}
    if isinstance(scraped, OSError):
        relay["reason"] = f"metrics unreachable ({scraped})"
    else:
        samples = scraped
    if samples:
        heartbeat = samples.get(("qiji_relay_heartbeat_timestamp_seconds", ()), 0.0)
        age = time.time() - heartbeat if heartbeat else None
        relay.update({
            "leader": bool(samples.get(("qiji_relay_leader", ()))),
            "heartbeat_age_seconds": None if age is None else round(age, 1),
        })
        if not samples.get(("qiji_relay_healthy", ())):
            relay["reason"] = "it reports itself unhealthy (see its log)"
        elif age is None or age > RELAY_HEARTBEAT_STALE:
            relay["reason"] = f"no heartbeat for {RELAY_HEARTBEAT_STALE:.0f} s"
        else:
            relay["healthy"] = True
    stored: dict[str, int] = {}
    if conn is not None:
        schema = load_settings(RELAY, stack.settings_env()).postgres_schema
        if table_exists(conn, schema, "relay_positions"):
            stored = dict(conn.execute(sql.SQL("SELECT service, next_position FROM {}").format(
                sql.Identifier(schema, "relay_positions"))).fetchall())
    relay["services"] = []
    for name in EVENT_SOURCED_SERVICES:
        through = stored.get(name, 1) - 1
        upstream_position = positions.get(name)
        relay["services"].append({
            "service": "relay", "upstream": name, "position": through,
            "upstream_position": upstream_position,
            "lag": None if upstream_position is None else max(0, upstream_position - through)})
    return relay


def render(report: Report) -> str:
    lines = [f"{'service':<11} {'health':<12} {'integrity':<12} {'pid':>7} {'log position':>13} "
             f"{'sealed through':>15}"]
    for name, s in report.services.items():
        lines.append(
            f"{name:<11} {s['health']:<12} {s.get('integrity', '-'):<12} {s['pid'] or '-':>7} "
            f"{_n(s.get('log_position')):>13} {_n(s.get('sealed_through')):>15}")
    lines += ["", "seal heads and newest signed checkpoints (record them outside the database; "
              "the platform company keeps the checkpoints):"]
    for name, s in report.services.items():
        if "head_seal" not in s and "newest_checkpoint" not in s:
            continue
        lines.append(f"  {name:<11} head seal  {s.get('head_seal') or '-'} "
                     f"(position {_n(s.get('sealed_through'))})")
        checkpoint = s.get("newest_checkpoint")
        if checkpoint and "position" in checkpoint:
            lines.append(f"  {'':<11} checkpoint position {checkpoint['position']}, seal "
                         f"{checkpoint['seal']} (stored at {checkpoint['stored_at']})")
            lines += [f"  {'':<13}{line}" for line in checkpoint["note"].splitlines() if line]
        else:
            lines.append(f"  {'':<11} checkpoint -")
        if s.get("verifier_key"):
            lines.append(f"  {'':<11} verifier key {s['verifier_key']}")
    lines += ["", "followers (position / upstream position, lag):"]
    for f in report.followers:
        lines.append(f"  {f['service']:<11} <- {f['upstream']:<19} {_n(f['position']):>8} / "
                     f"{_n(f['upstream_position']):<8} lag {_n(f['lag'])}"
                     + (f"  ({f['error']})" if f.get("error") else ""))
    r = report.relay
    lines += ["", f"relay: {'healthy' if r.get('healthy') else 'NOT HEALTHY'}"
              + (f", {'leader' if r.get('leader') else 'standby'}" if "leader" in r else "")
              + (f", heartbeat {r['heartbeat_age_seconds']} s ago"
                 if r.get("heartbeat_age_seconds") is not None else "")
              + (f" ({r['reason']})" if r.get("reason") else "")]
    for s in r.get("services", []):
        lines.append(f"  {s['upstream']:<11} published through {_n(s['position']):>8} / "
                     f"{_n(s['upstream_position']):<8} lag {_n(s['lag'])}")
    lines += ["", "leaders (one among replicas):"] + [
        f"  {what:<30} {who}" for what, who in report.leaders.items()]
    sup = report.supervisor
    lines += ["", f"supervisord: {'pid ' + str(sup['pid']) if sup.get('pid') else 'NOT RUNNING'}"]
    for name, p in sup.get("processes", {}).items():
        up = p["uptime_seconds"]
        lines.append(f"  {name:<11} {p['state']:<9} pid {p['pid'] or '-':>7}  up "
                     f"{'-' if up is None else _duration(up):>8}  restarts {p['restarts']}"
                     + (f" (last: {p['last_exit']})" if p["last_exit"] else ""))
    lines += ["", "dependencies: " + ", ".join(f"{k} {v}" for k, v in report.dependencies
                                               .items())]
    lines.append("OK" if not report.problems else "PROBLEMS:\n  " + "\n  ".join(
        report.problems))
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return (f"{seconds // 3600}h{seconds % 3600 // 60:02}m" if seconds >= 3600
            else f"{seconds // 60}m{seconds % 60:02}s")


def _n(value: Any) -> str:
    return "-" if value is None else str(value)


def status(stack: Stack, *, max_lag: int | None, as_json: bool) -> int:
    report = collect(stack, max_lag=max_lag)
    print(json.dumps(report.as_json(), indent=2) if as_json else render(report), flush=True)
    return report.code
