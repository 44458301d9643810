"""The operator's scripts in deploy/, run as an operator runs them, against the real PostgreSQL
and RabbitMQ: a database and a vhost of this module's own (dropped after), a run directory in
tmp, and ports moved by --port-offset so the stack never meets another on this machine.

The story: every script explains itself and refuses bad flags; `up` says so when PostgreSQL is
not there; `schemas` is idempotent; the full stack comes up, takes a few commands, and `status`
shows every reader caught up; a backup restores into a new database and verifies, and a row
altered there afterwards fails verification; a rotated token stops working at once; `down`
leaves no process behind. A tokens file from before tokens had to name their organisation:
rotating its platform entry is refused with the command that brings it across, after which it
rotates."""

from __future__ import annotations

import json
import os
import random
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import psycopg
import pytest
from qiji.badges.v1 import badges_service_pb2 as bpb
from qiji.identity.v1 import identity_service_pb2 as ipb

from shared.auth import add_caller, hash_token, new_token
from shared.config import CREDENTIALS_HTTP_PORT, DEFAULT_PORTS
from tests.conftest import PG, _admin_conninfo, missing_server
from tests.e2e.client import Client, call_error, create_city, new_request_id, phone_number, unique
from tests.e2e.relay_harness import REPO, Vhost

pytestmark = pytest.mark.e2e

SCRIPTS = ["up", "down", "restart", "status", "schemas", "backup", "restore", "verify",
           "rotate-token", "upgrade"]
# The exit codes the scripts document (shared/tools/ops/__init__.py), as an operator reads them.
USAGE, DEPENDENCY_UNREACHABLE, UNHEALTHY, VERIFICATION_FAILED, REFUSED = 2, 3, 4, 6, 7
CATCH_UP_TIMEOUT = 20.0


def free_offset() -> int:
    """A --port-offset at which every port the stack binds (gRPC 50051-50056, the public
    credentials face's 50057 and metrics 9101-9108, plus the offset) is free just now, and
    none lies in the kernel's range of ephemeral ports: there, a connection any process opens
    meanwhile (the stack's own services dial each other and PostgreSQL while the later ones
    still start) may take a port as its local end before the service that should listen on
    it binds, and that service fails to start — as badges once did here."""
    low, high = (int(n) for n in Path("/proc/sys/net/ipv4/ip_local_port_range")
                 .read_text().split())
    bound = (*DEFAULT_PORTS.values(), CREDENTIALS_HTTP_PORT, *range(9101, 9109))
    offsets = [o for o in range(1000, 65535 - max(bound))
               if all(not low <= p + o <= high for p in bound)]
    for _ in range(50):
        offset = random.choice(offsets)
        if all(_free(p + offset) for p in bound):
            return offset
    raise RuntimeError("no free port range found")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class Operator:
    """Runs deploy/<script> with this stack's run directory and connection flags."""

    run_dir: Path
    db: str
    amqp_uri: str
    offset: int
    env: dict[str, str]

    def run(self, script: str, *args: str, connection: bool = True, timeout: float = 120
            ) -> subprocess.CompletedProcess[str]:
        flags = ["--run-dir", str(self.run_dir)]
        if connection:
            flags += ["--pg-host", PG["host"], "--pg-port", str(PG["port"]), "--pg-user",
                      PG["user"], "--pg-db", self.db]
        if connection and script in ("up", "status"):
            flags += ["--port-offset", str(self.offset)]
        return subprocess.run([str(REPO / "deploy" / script), *flags, *args],
                              env=self.broker_env(), capture_output=True, text=True,
                              timeout=timeout, check=False)

    def broker_env(self) -> dict[str, str]:
        # The broker's URI holds its password: the environment, never a flag (ps shows those).
        return {**self.env, **({"RELAY_AMQP_URI": self.amqp_uri} if self.amqp_uri else {})}

    def address(self, service: str) -> str:
        return f"127.0.0.1:{DEFAULT_PORTS[service] + self.offset}"

    def status(self, *args: str) -> tuple[int, dict[str, Any]]:
        done = self.run("status", "--json", *args)
        return done.returncode, json.loads(done.stdout)


def script_env() -> dict[str, str]:
    # Only what an operator of this test sets: nothing of the caller's Qiji settings leaks in.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("QIJI_", "RELAY_", "BADGES_", "IDENTITY_"))}
    env.update({"QIJI_POSTGRES_POOL_SIZE": "2", "QIJI_POSTGRES_PASSWORD": PG["password"],
                # Checkpoints soon after activity (every 1,000 events or this often; an idle
                # log signs none), so that the test sees one cover its commands.
                "QIJI_AUDIT_CHECKPOINT_SECONDS": "1"})
    return env


def drop_database(name: str) -> None:
    with psycopg.connect(_admin_conninfo(), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def operator_for(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[Operator]:
    """An operator with a database, a vhost and ports of its own; everything removed after."""
    try:
        psycopg.connect(_admin_conninfo()).close()
        vhost = Vhost(f"qiji_{name}")
    except (psycopg.OperationalError, FileNotFoundError, subprocess.CalledProcessError) as error:
        missing_server(f"PostgreSQL or RabbitMQ not available: {error}")
    db = f"qiji_{name}_{uuid.uuid4().hex[:10]}"
    op = Operator(run_dir=tmp_path_factory.mktemp(name) / "run", db=db,
                  amqp_uri=vhost.uri, offset=free_offset(), env=script_env())
    try:
        yield op
    finally:
        if op.run_dir.exists():
            op.run("down", "--timeout", "10", connection=False)
        for dbname in (db, f"{db}_restored", f"{db}_schemas"):
            drop_database(dbname)
        vhost.delete()


@pytest.fixture(scope="module")
def operator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    with operator_for(tmp_path_factory, "deploy") as op:
        yield op


def test_every_script_explains_itself_and_refuses_a_bad_flag():
    env = script_env()
    for script in SCRIPTS:
        path = str(REPO / "deploy" / script)
        helped = subprocess.run([path, "--help"], env=env, capture_output=True, text=True,
                                timeout=30, check=False)
        assert helped.returncode == 0, helped.stderr
        assert f"deploy/{script}" in helped.stdout and "exit codes:" in helped.stdout
        refused = subprocess.run([path, "--no-such-flag"], env=env, capture_output=True,
                                 text=True, timeout=30, check=False)
        assert refused.returncode == USAGE, (script, refused.stderr)


def test_up_says_when_postgresql_is_unreachable(operator: Operator, tmp_path: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        nobody = s.getsockname()[1]
    done = subprocess.run(
        [str(REPO / "deploy" / "up"), "--run-dir", str(tmp_path / "run"), "--pg-port",
         str(nobody), "--port-offset", str(operator.offset)],
        env=operator.broker_env(), capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == DEPENDENCY_UNREACHABLE, done.stderr
    assert "PostgreSQL" in done.stderr and "unreachable" in done.stderr
    assert not (tmp_path / "run" / "pids").exists(), "nothing may start without its store"


def test_schemas_creates_what_is_missing_once(operator: Operator):
    fresh = Operator(**{**operator.__dict__, "db": f"{operator.db}_schemas"})
    first = fresh.run("schemas")
    assert first.returncode == 0, first.stderr
    for table in ("identity_events", "identity_tracking", "personal_data_keys", "audit_seals",
                  "relay_positions"):
        assert table in first.stdout
    again = fresh.run("schemas")
    assert again.returncode == 0, again.stderr
    assert "created" not in again.stdout
    assert again.stdout.count("up to date") == 7  # five services, the relay and the figures


def test_an_old_tenant_token_is_named_an_organisation_before_it_is_rotated(tmp_path: Path):
    """The platform's entry of a tokens file written before tokens named their organisation:
    rotating it is refused (not a traceback), naming the command that brings it across; that
    command keeps its token, and the entry then rotates, keeping its organisation."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    tokens_file = run_dir / "tokens.json"
    old = new_token()
    tokens_file.write_text(json.dumps({"callers": [{
        "principal": "platform-company", "roles": ["platform"], "token_sha256": hash_token(old)}]}))
    operator = Operator(run_dir=run_dir, db="", amqp_uri="", offset=0, env=script_env())

    refused = operator.run("rotate-token", "platform-company", connection=False)
    assert refused.returncode == REFUSED, refused.stdout + refused.stderr
    assert "Traceback" not in refused.stderr and refused.stdout == ""
    assert "must name the organisation" in refused.stderr
    hint = refused.stderr[refused.stderr.rindex(".venv/bin/qiji"):].split()
    assert hint[-1] == "<id>"
    platform = str(uuid.uuid4())
    assigned = subprocess.run([str(REPO / hint[0]), *hint[1:-1], platform], env=operator.env,
                              capture_output=True, text=True, timeout=30, check=False)
    assert assigned.returncode == 0, assigned.stderr
    [entry] = json.loads(tokens_file.read_text())["callers"]
    assert (entry["organisation_id"], entry["token_sha256"]) == (platform, hash_token(old))

    rotated = operator.run("rotate-token", "platform-company", connection=False)
    assert rotated.returncode == 0, rotated.stderr
    [entry] = json.loads(tokens_file.read_text())["callers"]
    assert entry["organisation_id"] == platform
    assert entry["token_sha256"] == hash_token(rotated.stdout.strip()) != hash_token(old)


def test_the_full_stack_runs_backs_up_restores_rotates_and_stops(operator: Operator):
    up = operator.run("up", "--timeout", "90")
    assert up.returncode == 0, up.stdout + up.stderr
    code, report = operator.status()
    assert code == 0, report["problems"]
    assert {s["health"] for s in report["services"].values()} == {"SERVING"}
    assert report["relay"]["healthy"] and report["relay"]["leader"]
    # The public face answers with the keys up made (kept in the run directory).
    web = f"http://127.0.0.1:{CREDENTIALS_HTTP_PORT + operator.offset}"
    with urllib.request.urlopen(f"{web}/.well-known/jwks.json", timeout=5) as reply:
        assert {k["alg"] for k in json.loads(reply.read())["keys"]} == {"RS256", "Ed25519"}
    assert (operator.run_dir / "badges-signing-rsa.pem").stat().st_mode & 0o077 == 0
    # stack.json keeps no password (the broker's comes from $RELAY_AMQP_URI).
    saved = json.loads((operator.run_dir / "stack.json").read_text())
    assert urlsplit(saved["amqp_uri"]).password is None, saved["amqp_uri"]

    # Each process holds the secrets it uses and no other: the internet-facing face only its
    # public_reader token, which reaches badges' public reads and nothing else.
    def environ(pid: int) -> dict[str, str]:
        raw = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
        return {k: v for k, _, v in (item.partition("=") for item in raw.split("\0")) if v}

    def held(name: str) -> set[str]:
        return set(environ(report["supervisor"]["processes"][name]["pid"])) & secrets
    # What supervisord was given (a password may be empty here: PostgreSQL trusts the tests).
    secrets = {"QIJI_SERVICE_TOKEN", "QIJI_PUBLIC_READER_TOKEN", "QIJI_POSTGRES_PASSWORD",
               "RELAY_AMQP_URI", "QIJI_MASTER_KEY_FILE", "BADGES_SIGNING_KEY_FILE"
               } & set(environ(report["supervisor"]["pid"]))
    assert {"QIJI_SERVICE_TOKEN", "QIJI_PUBLIC_READER_TOKEN", "RELAY_AMQP_URI"} <= secrets
    assert held("credentials") == {"QIJI_PUBLIC_READER_TOKEN"}
    assert held("platform") == {"QIJI_SERVICE_TOKEN"}
    assert held("relay") == {"QIJI_SERVICE_TOKEN", "QIJI_POSTGRES_PASSWORD",
                             "RELAY_AMQP_URI"} & secrets
    assert held("badges") >= {"QIJI_MASTER_KEY_FILE", "BADGES_SIGNING_KEY_FILE"}
    # The figures: their store, the feeds, and each event's MAC checked (no signing key).
    assert held("statistics") == {"QIJI_SERVICE_TOKEN", "QIJI_POSTGRES_PASSWORD",
                                  "QIJI_MASTER_KEY_FILE"} & secrets
    assert held("console") == set()  # it calls with each signed-in official's own token
    with grpc.insecure_channel(operator.address("badges")) as channel:
        face_pid = report["supervisor"]["processes"]["credentials"]["pid"]
        face = Client(channel, environ(face_pid)["QIJI_PUBLIC_READER_TOKEN"], "badges")
        assert json.loads(face.GetIssuerKeys(bpb.GetIssuerKeysRequest()).jwks_json)["keys"]
        denied = call_error(lambda: face.ExportCredential(bpb.ExportCredentialRequest(
            award_id=str(uuid.uuid4()))))
        assert denied.code == grpc.StatusCode.PERMISSION_DENIED

    # A few commands through gRPC: the city's tree with the admin token `up` made, then the
    # platform's own token (the operator names the organisation it acts for: a platform token
    # naming none is refused) registers and verifies its rider.
    token = (operator.run_dir / "admin.token").read_text().strip()
    tokens_file = operator.run_dir / "tokens.json"
    with grpc.insecure_channel(operator.address("identity")) as channel:
        admin = Client(channel, token, "identity")
        city = create_city(admin)

        def qiji_token(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([str(REPO / ".venv" / "bin" / "qiji"), "token",
                                   "platform-company", "--role", "platform", "--tokens-file",
                                   str(tokens_file), *args], env=operator.env,
                                  capture_output=True, text=True, timeout=30, check=False)
        unbound = qiji_token()
        assert unbound.returncode == USAGE and "must name the organisation" in unbound.stderr
        issued = qiji_token("--organisation-id", city["platform"])
        assert issued.returncode == 0, issued.stderr
        platform = Client(channel, issued.stdout.strip(), "identity")
        rider = platform.RegisterRider(ipb.RegisterRiderRequest(
            request_id=new_request_id(), platform_id=city["platform"],
            platform_rider_id=unique("rider"), name="王五", phone=phone_number(),
            home_street_id=city["street"], station_id=city["station"])).rider
        platform.VerifyRider(ipb.VerifyRiderRequest(request_id=new_request_id(),
                                                    rider_id=rider.rider_id))
        commands_through = admin.last_position()

    # Every follower, every seal chain and the relay catch up: lag 0 everywhere; identity has
    # signed a checkpoint over the commands (an event of its own, after them; then, idle, it
    # signs no more): status shows the head and the checkpoint in full.
    def covered(report: dict[str, Any]) -> bool:
        checkpoint = report["services"]["identity"].get("newest_checkpoint") or {}
        return checkpoint.get("position", 0) >= commands_through

    deadline = time.monotonic() + CATCH_UP_TIMEOUT
    while (code := operator.status("--max-lag", "0"))[0] != 0 or not covered(code[1]):
        assert time.monotonic() < deadline, f"not caught up: {code[1]['problems']}"
        time.sleep(0.5)
    report = code[1]
    identity_position = report["services"]["identity"]["log_position"]
    checkpoint = report["services"]["identity"]["newest_checkpoint"]
    assert checkpoint["stored_at"] == identity_position > commands_through
    assert checkpoint["position"] == identity_position - 1
    assert checkpoint["note"].startswith(f"qiji.local/identity\n{checkpoint['position']}\n")
    assert len(report["services"]["identity"]["head_seal"]) == 64
    assert report["services"]["identity"]["sealed_through"] == identity_position
    assert report["services"]["identity"]["integrity"] == "SERVING"
    assert report["services"]["identity"]["verifier_key"].startswith("qiji.local/identity+")
    followers = {(f["service"], f["upstream"]): f for f in report["followers"]}
    assert followers[("training", "identity")]["position"] == identity_position
    assert followers[("training", "identity")]["lag"] == 0
    relayed = {s["upstream"]: s for s in report["relay"]["services"]}
    assert relayed["identity"]["position"] == identity_position

    # The auditor's commands reach the stack from its run directory alone (its ports, its
    # admin token), wherever they are run from.
    verified = subprocess.run(
        [sys.executable, "-m", "shared.tools.cli", "audit", "verify", "--run-dir",
         str(operator.run_dir)], cwd=operator.run_dir.parent, env=operator.env,
        capture_output=True, text=True, timeout=60, check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert [json.loads(line)["intact"] for line in verified.stdout.splitlines()] == [True] * 5

    # Backup, restore into a new database, verified against the manifest.
    backup = operator.run("backup", "--out", str(operator.run_dir.parent / "backups"))
    assert backup.returncode == 0, backup.stdout + backup.stderr
    backup_dir = next((operator.run_dir.parent / "backups").iterdir())
    manifest = json.loads((backup_dir / "manifest.json").read_text())
    assert manifest["services"]["identity"]["events"] == identity_position
    assert manifest["services"]["identity"]["sealed_through"] == identity_position
    restored = f"{operator.db}_restored"
    restore = operator.run("restore", str(backup_dir), "--target-db", restored)
    assert restore.returncode == 0, restore.stdout + restore.stderr
    assert "verified" in restore.stdout
    with psycopg.connect(_admin_conninfo(restored)) as conn:
        for service, entry in manifest["services"].items():
            (count,) = conn.execute(
                f'SELECT count(*) FROM "{service}"."{service}_events"').fetchone()
            assert count == entry["events"], service

    # One restored row altered with raw SQL: verification fails, naming the event.
    with psycopg.connect(_admin_conninfo(restored), autocommit=True) as conn:
        altered = conn.execute(
            "UPDATE identity.identity_events SET state = convert_to((convert_from(state, "
            "'UTF8')::jsonb || '{\"name\": \"天宁区\"}')::text, 'UTF8') "
            "WHERE notification_id = 2").rowcount
    assert altered == 1
    tampered = operator.run("verify", str(backup_dir), "--pg-db", restored)
    assert tampered.returncode == VERIFICATION_FAILED, tampered.stdout + tampered.stderr
    assert "identity: position 2" in tampered.stderr

    # A rotated token: the old one is refused at once, the new one works. (An auditor reads
    # the organisation tree; the raw feed is Qiji's own and the city admin's only.)
    old = add_caller(tokens_file, "city-auditor", ["auditor"])
    with grpc.insecure_channel(operator.address("identity")) as channel:
        def organisations(token: str) -> int:
            return len(Client(channel, token, "identity").ListOrganisations(
                ipb.ListOrganisationsRequest()).organisations)
        known = organisations(old)
        assert known >= 5  # the city's tree made above
        rotated = operator.run("rotate-token", "city-auditor", connection=False)
        assert rotated.returncode == 0, rotated.stderr
        new = rotated.stdout.strip()
        assert new and new != old
        refused = call_error(lambda: organisations(old))
        assert refused.code == grpc.StatusCode.UNAUTHENTICATED
        assert organisations(new) == known

    # Restart by hand: every process, one at a time in start order (the public face, then the
    # console, last), each ready again on a new pid before the next; none of it counted as a
    # crash.
    order = [*DEFAULT_PORTS, "relay", "credentials", "console"]
    before = operator.status()[1]["supervisor"]["processes"]
    restarted = operator.run("restart", connection=False)
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    assert [line.split()[0] for line in restarted.stdout.splitlines()
            if " restarted, " in line] == order
    code, report = operator.status()
    assert code == 0, report["problems"]
    after = report["supervisor"]["processes"]
    assert all(after[n]["pid"] != before[n]["pid"] and after[n]["restarts"] == 0
               for n in order), after

    # Upgrade (to this same release: the supervised path). A caller this release refuses
    # (a platform token naming no platform, as files from before issue 14 hold) stops it
    # before anything changes, with the command that fixes the entry; run as printed, the
    # upgrade goes through in start order and verifies.
    stale = add_caller(tokens_file, "old-platform-system", ["platform"], city["platform"])
    data = json.loads(tokens_file.read_text())
    next(c for c in data["callers"]
         if c["principal"] == "old-platform-system")["organisation_id"] = ""
    tokens_file.write_text(json.dumps(data))
    refused = operator.run("upgrade")
    assert refused.returncode == REFUSED, refused.stdout + refused.stderr
    assert not (operator.run_dir / "backups").exists(), "nothing may change"
    [fix] = [line.strip() for line in refused.stderr.splitlines()
             if " assign old-platform-system " in line]
    fix_args = shlex.split(fix.replace("<id of the organisation it acts for>", city["platform"]))
    fixed = subprocess.run([str(REPO / fix_args[0]), *fix_args[1:]], cwd=REPO, env=operator.env,
                           capture_output=True, text=True, timeout=60, check=False)
    assert fixed.returncode == 0, fixed.stderr
    upgraded = operator.run("upgrade", timeout=300)
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    assert [line.split()[0] for line in upgraded.stdout.splitlines()
            if " restarted, " in line] == order
    assert "holds everything in" in upgraded.stdout
    with grpc.insecure_channel(operator.address("identity")) as channel:
        # The same token, now acting for the city's platform: it reads that platform's rider.
        assert Client(channel, stale, "identity").GetRider(ipb.GetRiderRequest(
            rider_id=rider.rider_id)).rider.rider_id == rider.rider_id

    # Down: every process gone (the six services, the figures, the relay, the public
    # credentials face, the console), supervisord too; down again is fine.
    supervisor = operator.status()[1]["supervisor"]
    assert set(supervisor["processes"]) == {*DEFAULT_PORTS, "relay", "credentials", "console"}
    pids = [supervisor["pid"], *(p["pid"] for p in supervisor["processes"].values())]
    assert len(pids) == 1 + len(DEFAULT_PORTS) + 3 and all(pids)
    down = operator.run("down", connection=False)
    assert down.returncode == 0, down.stderr
    assert not [pid for pid in pids if _alive(pid)]
    again = operator.run("down", connection=False)
    assert again.returncode == 0 and "nothing running" in again.stdout
    code, report = operator.status()
    assert code == UNHEALTHY, report
    assert report["services"]["identity"]["health"].startswith("UNREACHABLE")


def _alive(pid: int) -> bool:
    """Running (an exited process its parent has not reaped yet is not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False
