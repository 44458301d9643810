"""Outside witnesses, end to end on PostgreSQL with real processes: identity signs checkpoints,
the platform gateway publishes them, the platform company keeps them with `qiji audit
checkpoints`; then someone with database access deletes the newest events with their seals.
The log still agrees with its own seals, but identity's sealer raises the alarm (health
`qiji.integrity`, `qiji_audit_intact 0`) and `qiji audit verify --checkpoints` with the kept
copies names the first deleted position."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from qiji.identity.v1 import identity_service_pb2 as ipb

from shared.auth import add_caller
from shared.checkpoints import CheckpointVerifier
from shared.config import DEFAULT_PORTS
from shared.integrity import HEALTH
from shared.tools import audit_cli
from shared.tools.addressing import Dialer
from tests.conftest import _admin_conninfo
from tests.e2e.client import create_city, new_request_id, phone_number, unique
from tests.e2e.conftest import ServiceProcess, free_port, start_service

pytestmark = pytest.mark.e2e
WAIT = 30.0


def cli(question: str, token: str, channel_to: ServiceProcess, **args: object) -> tuple[int, str]:
    """`qiji audit <question>` in this process, dialling `channel_to`; (exit code, stdout)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = audit_cli.answer(
            argparse.Namespace(question=question, **args), token,
            Dialer(dict.fromkeys(DEFAULT_PORTS, channel_to.address)))
    return code, out.getvalue()


def integrity_samples(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {f"{s.labels['reader']}": s.value for f in text_string_to_metric_families(text)
            for s in f.samples if s.name == "qiji_audit_intact"}


def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"not within {WAIT:.0f} s: {what}"
        time.sleep(0.3)


def test_a_truncated_log_shows_against_the_checkpoints_the_platform_kept(
        postgres_db: str, tmp_path: Path):
    metrics_port = free_port()
    for name in ("identity", "gateway"):
        (tmp_path / name).mkdir()
    identity = start_service("identity", postgres_db, tmp_path / "identity", extra_env={
        "QIJI_AUDIT_CHECKPOINT_SECONDS": "1", "IDENTITY_METRICS_PORT": str(metrics_port),
        "QIJI_POSTGRES_POOL_SIZE": "2"})
    gateway = None
    try:
        admin = identity.client("city_admin")
        city = create_city(admin)
        witness = add_caller(identity.tokens_file, "platform-witness", ["platform"],
                             city["platform"])
        gateway = start_service(
            "platform", postgres_db, tmp_path / "gateway", tokens_file=identity.tokens_file,
            tokens=identity.tokens, extra_env={
                "PLATFORM_IDENTITY_ADDRESS": identity.address,
                "QIJI_SERVICE_TOKEN": identity.tokens["service"],
                **{f"PLATFORM_{s.upper()}_ADDRESS": f"127.0.0.1:{free_port()}"
                   for s in ("training", "merchants", "badges", "governance")}})
        rider = admin.RegisterRider(ipb.RegisterRiderRequest(
            request_id=new_request_id(), platform_id=city["platform"],
            platform_rider_id=unique("rider"), name="赵六", phone=phone_number(),
            home_street_id=city["street"], station_id=city["station"])).rider
        newest = identity.last_position()

        # The platform company keeps every checkpoint the feed publishes, until one covers the
        # rider just registered.
        kept = tmp_path / "witness.jsonl"

        def covered() -> bool:
            assert audit_cli.keep_checkpoints(kept, audit_cli.Feed(gateway.address, witness),
                                              None) == 0
            notes = audit_cli.read_checkpoints(kept)
            return any(int(n.split("\n")[1]) >= newest for n in notes)
        until(covered, "a checkpoint covering the newest event on the feed")
        code, out = cli("verify", identity.tokens["auditor"], identity, services=["identity"],
                        checkpoints=[str(kept)], checkpoints_from_feed=False,
                        verifier_key=[], feed_address="", feed_token="")
        report = json.loads(out.splitlines()[-1])
        assert code == 0 and report["intact"], out
        assert report["checkpoints_checked"] >= 2  # kept, and stored in the log
        assert report["verifier_key"].startswith("qiji.local/identity+")

        # The newest rider's registration and everything after it, gone with their seals.
        with psycopg.connect(_admin_conninfo(postgres_db), autocommit=True) as conn:
            for table in ("identity_events", "audit_seals"):
                conn.execute(f'DELETE FROM "{identity.schema}".{table} WHERE notification_id'
                             " >= %s", (newest,))
        assert identity.last_position() == newest - 1, rider

        # identity's sealer remembers the checkpoint it sealed: the alarm goes up.
        health = health_pb2_grpc.HealthStub(identity.channel)
        until(lambda: health.Check(health_pb2.HealthCheckRequest(service=HEALTH)).status
              == health_pb2.HealthCheckResponse.NOT_SERVING, "qiji.integrity NOT_SERVING")
        assert health.Check(health_pb2.HealthCheckRequest()).status == (
            health_pb2.HealthCheckResponse.SERVING)  # the rest of identity still serves
        assert integrity_samples(metrics_port)["sealer"] == 0

        # The auditor, with the platform company's copies: the first deleted position.
        code, out = cli("verify", identity.tokens["auditor"], identity, services=["identity"],
                        checkpoints=[str(kept)], checkpoints_from_feed=False,
                        verifier_key=[CheckpointVerifier.parse(report["verifier_key"])],
                        feed_address="", feed_token="")
        report = json.loads(out.splitlines()[-1])
        assert code == 1 and not report["intact"], out
        assert report["first_broken_position"] == newest
        assert "deleted" in report["problem"]
    finally:
        if gateway is not None:
            gateway.stop()
        identity.stop()
