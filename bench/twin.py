"""The CRUD twin: what a city would buy instead of Qiji, for each benchmarked command.

A bare grpcio service in a process of its own — the same thread-pool server as Qiji's
build_server (32 workers, the same transport, TLS off as on the benchmarked Qiji side), the
same generated protos and RPC names — doing each command's writes as plain SQL on PostgreSQL:
one statement, i.e. one autocommit transaction, on a connection of a psycopg_pool pool, per
call. It keeps no history, seals nothing, MACs nothing, audits nothing: the state a CRUD
service keeps, done right (quotas and capacities by a conditional UPDATE in the same statement
as the INSERT, so no two calls take the last place; idempotency by a unique request_id).

| command       | writes (one statement)                                                    |
|---------------|---------------------------------------------------------------------------|
| RegisterRider | INSERT rider (unique request_id, unique platform's rider id) ON CONFLICT   |
| ClaimPerk     | UPDATE perk SET issued+1 WHERE issued < quota, then INSERT claim          |
| RedeemCode    | UPDATE claim SET redeemed WHERE issued and the merchant's, UPDATE perk    |
| EnrolRider    | UPDATE session SET taken+1 WHERE taken < capacity, then INSERT enrolment  |
| SubmitReport  | INSERT report, a duplicate if an open one of its kind is within 200 m     |

Each stored row carries a payload of about the size Qiji stores for that entity's event (the
bench scripts' ROW_BYTES), so the database writes as many bytes as a CRUD row would hold.
The caller's bearer token is checked against the hashes in the run's tokens file (a CRUD
service authenticates too), with the same metadata the Qiji calls carry.

Started by a bench script with `running_twin(dbname, tokens_file)`; perks and sessions (made
through other RPCs on the Qiji side) are seeded with `seed_perks` / `seed_sessions`.
`BENCH_TWIN_DATABASE=<dbname or conninfo> python -m bench.twin PORT TOKENS_FILE` serves it;
tests/integration/test_crud_twin.py holds it to what a CRUD service must do right."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import grpc
import psycopg
from psycopg import errors
from psycopg_pool import ConnectionPool
from qiji.governance.v1 import governance_service_pb2 as gpb
from qiji.governance.v1 import governance_service_pb2_grpc as grpc_gov
from qiji.identity.v1 import identity_service_pb2 as ipb
from qiji.identity.v1 import identity_service_pb2_grpc as grpc_identity
from qiji.merchants.v1 import merchants_service_pb2 as mpb
from qiji.merchants.v1 import merchants_service_pb2_grpc as grpc_merchants
from qiji.training.v1 import training_service_pb2 as tpb
from qiji.training.v1 import training_service_pb2_grpc as grpc_training

from bench.common import PG, ROOT, free_port
from shared.grpc.channels import open_channel

GRPC_WORKERS = 32  # Qiji's default thread pool (QIJI_GRPC_WORKERS)
# Qiji's pool: QIJI_POSTGRES_POOL_SIZE (4) at start, twice as many more under load.
POOL_MIN, POOL_MAX = 4, 12
# About what Qiji stores per entity's event (the bench scripts' ROW_BYTES).
RIDER_BYTES, CLAIM_BYTES, ENROLMENT_BYTES, REPORT_BYTES = 1200, 900, 900, 1500
DUPLICATE_DEGREES = 200 / 111_195  # governance's duplicate window, 200 m
TWIN_DATABASE = "BENCH_TWIN_DATABASE"

SCHEMA = """
CREATE SCHEMA IF NOT EXISTS twin;
CREATE TABLE IF NOT EXISTS twin.riders (
    rider_id UUID PRIMARY KEY, request_id TEXT NOT NULL UNIQUE, platform_id TEXT NOT NULL,
    platform_rider_id TEXT NOT NULL, home_street_id TEXT NOT NULL, station_id TEXT NOT NULL,
    status SMALLINT NOT NULL, registered_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    payload BYTEA NOT NULL, UNIQUE (platform_id, platform_rider_id));
CREATE TABLE IF NOT EXISTS twin.perks (
    perk_id TEXT PRIMARY KEY, merchant_id TEXT NOT NULL, quota INT NOT NULL,
    issued INT NOT NULL DEFAULT 0, redeemed INT NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS twin.claims (
    claim_id UUID PRIMARY KEY, request_id TEXT NOT NULL UNIQUE, perk_id TEXT NOT NULL,
    merchant_id TEXT NOT NULL, rider_id TEXT NOT NULL, day DATE NOT NULL,
    code TEXT NOT NULL UNIQUE, status SMALLINT NOT NULL, redeem_request_id TEXT,
    claimed_at TIMESTAMPTZ NOT NULL DEFAULT now(), redeemed_at TIMESTAMPTZ,
    payload BYTEA NOT NULL, UNIQUE (perk_id, rider_id, day));
CREATE TABLE IF NOT EXISTS twin.sessions (
    session_id TEXT PRIMARY KEY, capacity INT NOT NULL, taken INT NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS twin.enrolments (
    request_id TEXT NOT NULL UNIQUE, session_id TEXT NOT NULL, rider_id TEXT NOT NULL,
    enrolled_at TIMESTAMPTZ NOT NULL DEFAULT now(), payload BYTEA NOT NULL,
    PRIMARY KEY (session_id, rider_id));
CREATE TABLE IF NOT EXISTS twin.reports (
    report_id UUID PRIMARY KEY, request_id TEXT NOT NULL UNIQUE, rider_id TEXT NOT NULL,
    kind SMALLINT NOT NULL, category SMALLINT NOT NULL, street_id TEXT NOT NULL,
    latitude DOUBLE PRECISION NOT NULL, longitude DOUBLE PRECISION NOT NULL,
    status SMALLINT NOT NULL, submitted_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    payload BYTEA NOT NULL);
CREATE INDEX IF NOT EXISTS reports_open_near ON twin.reports (category, latitude)
    WHERE status = 1;
"""


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    context.abort(code, message)


class _Twin:
    """Authentication and the pool shared by the four servicers."""

    def __init__(self, pool: ConnectionPool, tokens_file: Path):
        self.pool = pool
        self._tokens_file = tokens_file
        self._lock = threading.Lock()
        self._hashes: set[str] = set()
        self._reload()

    def _reload(self) -> None:
        try:
            callers = json.loads(self._tokens_file.read_text()).get("callers", [])
        except (OSError, ValueError):
            callers = []
        with self._lock:
            self._hashes = {c.get("token_sha256", "") for c in callers}

    def authenticate(self, context: grpc.ServicerContext) -> None:
        # A text key's value is a str (only -bin keys carry bytes), as the guard reads it.
        token = next((v.removeprefix("Bearer ") for k, v in context.invocation_metadata()
                      if k == "authorization" and isinstance(v, str)), "")
        digest = hashlib.sha256(token.encode()).hexdigest()
        if digest not in self._hashes:
            self._reload()  # a caller added since (the tokens file is re-read when it changes)
            if digest not in self._hashes:
                _abort(context, grpc.StatusCode.UNAUTHENTICATED, "unknown token")

    def run(self, sql: str, params: tuple[Any, ...]) -> tuple[Any, ...] | None:
        with self.pool.connection() as conn:
            return conn.execute(sql, params).fetchone()


class IdentityTwin(grpc_identity.IdentityServiceServicer):
    def __init__(self, twin: _Twin):
        self.twin = twin
        self.payload = os.urandom(RIDER_BYTES)

    def RegisterRider(self, request: ipb.RegisterRiderRequest,
                      context: grpc.ServicerContext) -> ipb.RegisterRiderResponse:
        self.twin.authenticate(context)
        request_id = request.request_id or str(uuid.uuid4())
        try:
            row = self.twin.run(
                "INSERT INTO twin.riders (rider_id, request_id, platform_id, platform_rider_id,"
                " home_street_id, station_id, status, payload) VALUES (%s,%s,%s,%s,%s,%s,1,%s)"
                " ON CONFLICT (request_id) DO NOTHING RETURNING rider_id",
                (uuid.uuid4(), request_id, request.platform_id, request.platform_rider_id,
                 request.home_street_id, request.station_id, self.payload))
        except errors.UniqueViolation:
            return _abort(context, grpc.StatusCode.ALREADY_EXISTS, "rider already registered")
        if row is None:  # a retry: the first answer
            row = self.twin.run("SELECT rider_id FROM twin.riders WHERE request_id = %s",
                                (request_id,))
        assert row is not None
        return ipb.RegisterRiderResponse(rider=ipb.Rider(
            rider_id=str(row[0]), platform_id=request.platform_id,
            platform_rider_id=request.platform_rider_id, name=request.name,
            phone=request.phone[:3] + "****" + request.phone[-4:],
            home_street_id=request.home_street_id, station_id=request.station_id,
            status=ipb.RIDER_STATUS_REGISTERED, version=1))


class MerchantsTwin(grpc_merchants.MerchantsServiceServicer):
    def __init__(self, twin: _Twin):
        self.twin = twin
        self.payload = os.urandom(CLAIM_BYTES)

    def ClaimPerk(self, request: mpb.ClaimPerkRequest,
                  context: grpc.ServicerContext) -> mpb.ClaimPerkResponse:
        self.twin.authenticate(context)
        code = secrets.token_hex(5).upper()
        try:
            # The quota and the claim in one statement: the UPDATE's row lock queues claims on
            # one perk, and a claim past the quota inserts nothing.
            row = self.twin.run(
                "WITH p AS (UPDATE twin.perks SET issued = issued + 1"
                "  WHERE perk_id = %s AND issued < quota"
                "  RETURNING perk_id, merchant_id, quota - issued AS remaining)"
                " INSERT INTO twin.claims (claim_id, request_id, perk_id, merchant_id, rider_id,"
                "  day, code, status, payload)"
                " SELECT %s, %s, p.perk_id, p.merchant_id, %s, current_date, %s, 1, %s FROM p"
                " RETURNING claim_id, merchant_id, (SELECT remaining FROM p), code",
                (request.perk_id, uuid.uuid4(), request.request_id, request.rider_id, code,
                 self.payload))
        except errors.UniqueViolation:
            row = None  # the whole statement was rolled back, the quota's place too
        if row is None:
            # A retry answers the first answer (even once the quota is gone); else the rider's
            # claim of the day was made, or the quota is gone.
            row = self.twin.run(
                "SELECT c.claim_id, c.merchant_id, p.quota - p.issued, c.code FROM twin.claims c"
                " JOIN twin.perks p USING (perk_id) WHERE c.request_id = %s",
                (request.request_id,))
            if row is None:
                return _abort(context, grpc.StatusCode.FAILED_PRECONDITION,
                              "quota exhausted or per-rider limit reached")
        return mpb.ClaimPerkResponse(claim=mpb.Claim(
            claim_id=str(row[0]), perk_id=request.perk_id, merchant_id=row[1],
            rider_id=request.rider_id, code=row[3], status=mpb.CLAIM_STATUS_ISSUED, version=1),
            remaining_quota=row[2])

    def RedeemCode(self, request: mpb.RedeemCodeRequest,
                   context: grpc.ServicerContext) -> mpb.RedeemCodeResponse:
        self.twin.authenticate(context)
        request_id = request.request_id or str(uuid.uuid4())
        row = self.twin.run(
            "WITH c AS (UPDATE twin.claims SET status = 2, redeem_request_id = %s,"
            "  redeemed_at = now() WHERE code = %s AND merchant_id = %s AND status = 1"
            "  RETURNING claim_id, perk_id, rider_id)"
            " UPDATE twin.perks p SET redeemed = redeemed + 1 FROM c WHERE p.perk_id = c.perk_id"
            " RETURNING c.claim_id, c.perk_id, c.rider_id",
            (request_id, request.code, request.merchant_id))
        if row is None:  # a retry answers the first answer; else the code is not redeemable
            row = self.twin.run(
                "SELECT claim_id, perk_id, rider_id FROM twin.claims WHERE code = %s AND"
                " merchant_id = %s AND redeem_request_id = %s",
                (request.code, request.merchant_id, request_id))
            if row is None:
                return _abort(context, grpc.StatusCode.FAILED_PRECONDITION,
                              "no such code to redeem")
        return mpb.RedeemCodeResponse(claim=mpb.Claim(
            claim_id=str(row[0]), perk_id=row[1], merchant_id=request.merchant_id,
            rider_id=row[2], code=request.code, status=mpb.CLAIM_STATUS_REDEEMED, version=2))


class TrainingTwin(grpc_training.TrainingServiceServicer):
    def __init__(self, twin: _Twin):
        self.twin = twin
        self.payload = os.urandom(ENROLMENT_BYTES)

    def EnrolRider(self, request: tpb.EnrolRiderRequest,
                   context: grpc.ServicerContext) -> tpb.EnrolRiderResponse:
        self.twin.authenticate(context)
        request_id = request.request_id or str(uuid.uuid4())
        try:
            row = self.twin.run(
                "WITH s AS (UPDATE twin.sessions SET taken = taken + 1"
                "  WHERE session_id = %s AND taken < capacity RETURNING capacity, taken)"
                " INSERT INTO twin.enrolments (request_id, session_id, rider_id, payload)"
                " SELECT %s, %s, %s, %s FROM s"
                " RETURNING (SELECT capacity FROM s), (SELECT taken FROM s)",
                (request.session_id, request_id, request.session_id, request.rider_id,
                 self.payload))
        except errors.UniqueViolation:
            row = None  # the whole statement was rolled back, the place too
        if row is None:
            # A retry answers the first answer (even once the session is full).
            row = self.twin.run(
                "SELECT s.capacity, s.taken FROM twin.enrolments e JOIN twin.sessions s"
                " USING (session_id) WHERE e.request_id = %s", (request_id,))
            if row is None:
                return _abort(context, grpc.StatusCode.FAILED_PRECONDITION,
                              "session is full, or the rider is enrolled already")
        return tpb.EnrolRiderResponse(session=tpb.Session(
            session_id=request.session_id, capacity=row[0], places_taken=row[1],
            enrolments=[tpb.Enrolment(rider_id=request.rider_id,
                                      status=tpb.ENROLMENT_STATUS_ENROLLED)]))


class GovernanceTwin(grpc_gov.GovernanceServiceServicer):
    def __init__(self, twin: _Twin):
        self.twin = twin
        self.payload = os.urandom(REPORT_BYTES)

    def SubmitReport(self, request: gpb.SubmitReportRequest,
                     context: grpc.ServicerContext) -> gpb.SubmitReportResponse:
        self.twin.authenticate(context)
        where = request.location
        d = DUPLICATE_DEGREES
        # A duplicate (status 2) when an open report of its category is within the window, as
        # governance's duplicate check; the index holds open reports only.
        row = self.twin.run(
            "INSERT INTO twin.reports (report_id, request_id, rider_id, kind, category,"
            " street_id, latitude, longitude, status, payload)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, CASE WHEN EXISTS (SELECT 1 FROM"
            "  twin.reports WHERE status = 1 AND category = %s AND latitude BETWEEN %s AND %s"
            "  AND longitude BETWEEN %s AND %s) THEN 2 ELSE 1 END, %s)"
            " ON CONFLICT (request_id) DO NOTHING RETURNING report_id, status",
            (uuid.uuid4(), request.request_id, request.rider_id, request.kind, request.category,
             where.street_id, where.latitude, where.longitude, request.category,
             where.latitude - d, where.latitude + d, where.longitude - d, where.longitude + d,
             self.payload))
        if row is None:
            row = self.twin.run("SELECT report_id, status FROM twin.reports WHERE request_id = %s",
                                (request.request_id,))
        assert row is not None
        return gpb.SubmitReportResponse(report=gpb.Report(
            report_id=str(row[0]), rider_id=request.rider_id, kind=request.kind,
            category=request.category, location=request.location, text=request.text,
            attachment_refs=request.attachment_refs, status=row[1], version=1))


def conninfo(database: str) -> str:
    """`database`: a database name on the bench's server (bench/common.py PG), or a whole
    conninfo ("dbname=... host=...", as the tests pass theirs)."""
    if "=" in database:
        return database
    return psycopg.conninfo.make_conninfo(dbname=database, **PG)


def serve(port: int, database: str, tokens_file: Path) -> None:
    with psycopg.connect(conninfo(database), autocommit=True) as conn:
        conn.execute(SCHEMA)
    pool = ConnectionPool(conninfo(database), min_size=POOL_MIN, max_size=POOL_MAX,
                          kwargs={"autocommit": True}, open=True)
    twin = _Twin(pool, tokens_file)
    # As Qiji's build_server: a grpcio thread-pool server, SO_REUSEPORT off.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=GRPC_WORKERS),
                         options=[("grpc.so_reuseport", 0)])
    grpc_identity.add_IdentityServiceServicer_to_server(IdentityTwin(twin), server)
    grpc_merchants.add_MerchantsServiceServicer_to_server(MerchantsTwin(twin), server)
    grpc_training.add_TrainingServiceServicer_to_server(TrainingTwin(twin), server)
    grpc_gov.add_GovernanceServiceServicer_to_server(GovernanceTwin(twin), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


@contextmanager
def running_twin(database: str, tokens_file: Path) -> Iterator[str]:
    """The twin in a process of its own, on the run's database (its own schema, `twin`);
    yields its address once it serves."""
    port = free_port()
    build = ROOT / "build" / "gen"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.twin", str(port), str(tokens_file)], cwd=ROOT,
        # The database in the environment, not the command line: a conninfo may hold a password.
        env={**os.environ, "PYTHONPATH": f"{ROOT}:{build}", TWIN_DATABASE: database})
    address = f"127.0.0.1:{port}"
    try:
        with grpc.insecure_channel(address) as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
        yield address
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def dial_twin(address: str) -> grpc.Channel:
    """A channel to the twin with the options of Qiji's (shared/grpc/channels.py), plaintext:
    the twin serves no TLS (a run with QIJI_TLS_* measures Qiji's TLS against no TLS)."""
    return open_channel(address, None)


def seed(database: str, sql: str, rows: list[tuple[Any, ...]]) -> None:
    with psycopg.connect(conninfo(database), autocommit=True) as conn, conn.cursor() as cur:
        cur.executemany(sql, rows)


def seed_perks(database: str, perks: list[tuple[str, str, int]]) -> None:
    """Published perks (perk id, merchant id, quota): what CreatePerkOffer and
    PublishPerkOffer make on the Qiji side, not timed."""
    seed(database, "INSERT INTO twin.perks (perk_id, merchant_id, quota) VALUES (%s, %s, %s)",
         perks)


def seed_sessions(database: str, sessions: list[tuple[str, int]]) -> None:
    seed(database, "INSERT INTO twin.sessions (session_id, capacity) VALUES (%s, %s)", sessions)


def new_ids(count: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(count)]


def alternate(rounds: int, measures: dict[str, Callable[[], float]]) -> dict[str, list[float]]:
    """Each measure once per round, in turn (Qiji, the twin, raw, Qiji, ...), so that the
    machine's load drifts over both sides alike; every round's figure by name."""
    figures: dict[str, list[float]] = {name: [] for name in measures}
    for _ in range(rounds):
        for name, measure in measures.items():
            figures[name].append(measure())
    return figures


if __name__ == "__main__":
    serve(int(sys.argv[1]), os.environ[TWIN_DATABASE], Path(sys.argv[2]))
