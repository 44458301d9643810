"""Fixtures shared by every tier. Tests that need PostgreSQL use the real server and their own
database; with QIJI_REQUIRE_SERVICES=1 (CI) a missing server fails them instead of skipping."""

from __future__ import annotations

import functools
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn, TypedDict

import hypothesis
import psycopg
import pytest

from shared.config import Settings, load_settings
from shared.context import Actor, RequestContext, acting_as


class PostgresServer(TypedDict):
    host: str
    port: int
    user: str
    password: str


PG: PostgresServer = {
    "host": os.environ.get("QIJI_TEST_POSTGRES_HOST", "127.0.0.1"),
    "port": int(os.environ.get("QIJI_TEST_POSTGRES_PORT", "5432")),
    "user": os.environ.get("QIJI_TEST_POSTGRES_USER", "postgres"),
    "password": os.environ.get("QIJI_TEST_POSTGRES_PASSWORD", ""),
}
REQUIRE_SERVICES = os.environ.get("QIJI_REQUIRE_SERVICES") == "1"
MASTER_KEY = bytes(range(32))
# The city's public credentials address in tests (what QIJI_ISSUER_URL is in production).
ISSUER_URL = "https://badges.changzhou.example"
BADGES_ED25519_SEED = bytes(range(100, 132))


@functools.cache
def badges_rsa_pem() -> str:
    """One RSA key per test session (making one takes a moment): configured, as in
    production, so credentials keep verifying across restarts."""
    from services.badges.credentials import new_rsa_pem
    return new_rsa_pem(2048)


def badges_keys(alg: str = "RS256") -> Any:
    from services.badges.credentials import Ed25519Key, IssuerKeys, RsaKey
    return IssuerKeys(rsa_key=RsaKey.from_pem(badges_rsa_pem().encode()),
                      ed25519_key=Ed25519Key(BADGES_ED25519_SEED), alg=alg)


def badges_key_env(alg: str = "RS256", issuer_url: str = ISSUER_URL) -> dict[str, str]:
    """The same keys as settings, for a badges process."""
    import base64
    return {"BADGES_RSA_SIGNING_KEY": base64.b64encode(badges_rsa_pem().encode()).decode(),
            "BADGES_SIGNING_KEY": base64.b64encode(BADGES_ED25519_SEED).decode(),
            "BADGES_SIGNING_ALG": alg, "QIJI_ISSUER_URL": issuer_url}

# Property tests check what a value is, never how fast it is computed: Hypothesis' default
# deadline (200 ms an example) is a timed assertion, and on a busy shared machine an example
# the scheduler set aside for a moment fails the test as "Unreliable test timings". Speed is
# measured in bench/.
hypothesis.settings.register_profile("qiji", deadline=None)
hypothesis.settings.load_profile("qiji")


def _admin_conninfo(dbname: str = "postgres") -> str:
    # An empty password is none at all (trust authentication): make_conninfo leaves out None.
    return psycopg.conninfo.make_conninfo(dbname=dbname, connect_timeout=3, host=PG["host"],
                                          port=PG["port"], user=PG["user"],
                                          password=PG["password"] or None)


def missing_server(why: str) -> NoReturn:
    """A server a test needs is not there: a failure in CI (QIJI_REQUIRE_SERVICES=1), where
    every test must run, else a skip."""
    if REQUIRE_SERVICES:
        pytest.fail(f"required (QIJI_REQUIRE_SERVICES=1): {why}")
    pytest.skip(why)


# The stores a parametrized test can run on; "postgres" needs the real server.
POSTGRES_FIXTURES = {"postgres_db", "postgres_env"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks what needs PostgreSQL (a test using its database, or the PostgreSQL case of a
    test run on both stores) `postgres`, and what starts real processes (tests/e2e) `e2e`,
    so that `make test-fast` can leave them to `make test`: `-m "not postgres and not e2e"`."""
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if POSTGRES_FIXTURES & set(getattr(item, "fixturenames", ())) or \
                "postgres" in params.values():
            item.add_marker(pytest.mark.postgres)
        if "e2e" in item.path.parts:
            item.add_marker(pytest.mark.e2e)


# `make test` runs two workers (`-n auto`) when PostgreSQL allows this many connections per
# worker, else one: a whole stack of Qiji's processes held 65 connections at its peak
# (measured: tests/e2e/test_supervision.py, sampling pg_stat_activity), the integration tier
# 36; two stacks at once on Debian's default of 100 failed with "too many clients already".
# `.ci/run` raises the server's max_connections to 200.
CONNECTIONS_PER_WORKER = 100


@pytest.hookimpl(tryfirst=True, optionalhook=True)  # optional: `-p no:xdist`
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """How many workers `-n auto` starts: two on two cores, as PostgreSQL's connections allow
    (PYTEST_XDIST_AUTO_NUM_WORKERS still decides when it is set)."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None
    workers = min(2, os.cpu_count() or 1)
    try:
        with psycopg.connect(_admin_conninfo(), autocommit=True) as conn:
            row = conn.execute("SHOW max_connections").fetchone()
    except psycopg.Error:
        return workers  # no server: its tests skip (or, in CI, fail) on any number of workers
    allowed = int(row[0]) if row else 0
    if allowed < workers * CONNECTIONS_PER_WORKER:
        fewer = max(1, allowed // CONNECTIONS_PER_WORKER)
        sys.stderr.write(
            f"qiji: {fewer} test worker(s), not {workers}: PostgreSQL allows {allowed} "
            f"connections and each worker may need {CONNECTIONS_PER_WORKER} "
            f"(ALTER SYSTEM SET max_connections = {workers * CONNECTIONS_PER_WORKER}, then "
            "restart it; .ci/run does)\n")
        return fewer
    return workers


# `make test` deals out whole test files to its workers (`--dist loadfile`). Files that share
# something with each other run as one unit, one after another on one worker, in the order
# they were collected (tests/unit/test_suite_plan.py finds every such file and fails when one
# is missing here):
# - the files that need the one RabbitMQ node up while they run: tests/e2e/test_relay.py
#   restarts the whole node (`rabbitmqctl stop_app`, every vhost), which would cut off a relay
#   that a test of another file runs at that moment;
# - the files that use the told Qiji (tests/e2e/conftest.py `told_qiji`): it is stopped after
#   the last test, in collection order, that uses it.
BROKER, TOLD_QIJI = "the RabbitMQ node", "the told Qiji"
RUN_TOGETHER = {
    "tests/e2e/test_relay.py": BROKER,
    "tests/e2e/test_deploy_scripts.py": BROKER,
    "tests/e2e/test_supervision.py": BROKER,
    "tests/upgrade/test_upgrade_native.py": BROKER,
    "tests/e2e/test_console_browser.py": TOLD_QIJI,
    "tests/e2e/test_demo.py": TOLD_QIJI,
}


@pytest.hookimpl(tryfirst=True, optionalhook=True)  # optional: `-p no:xdist`
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadfile`, with the files that share something as one unit of work."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class SharedFilesTogether(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = super()._split_scope(nodeid)
            return RUN_TOGETHER.get(path, path)
    return SharedFilesTogether(config, log)


def city_tree(identity: Any) -> dict[str, str]:
    """The city's tree (tests/city.py) made on the identity application by a city admin: what
    a rider needs to be registered."""
    from tests.city import build_city, in_application
    return build_city(in_application(identity)).as_dict()


@pytest.fixture(scope="session")
def postgres_db() -> Iterator[str]:
    """A database of this test session's own, dropped at the end."""
    try:
        admin = psycopg.connect(_admin_conninfo(), autocommit=True)
    except psycopg.OperationalError as error:
        missing_server(f"PostgreSQL is not reachable: {error}")
    name = f"qiji_test_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(_admin_conninfo(), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pg_env(db: str, schema: str) -> dict[str, str]:
    return {
        "QIJI_PERSISTENCE": "postgres",
        "QIJI_POSTGRES_DBNAME": db,
        "QIJI_POSTGRES_HOST": PG["host"],
        "QIJI_POSTGRES_PORT": str(PG["port"]),
        "QIJI_POSTGRES_USER": PG["user"],
        "QIJI_POSTGRES_PASSWORD": PG["password"],
        "QIJI_POSTGRES_SCHEMA": schema,
    }


@pytest.fixture(params=["sqlite", "postgres"])
def store_env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """The same test case against SQLite and PostgreSQL: only the environment changes."""
    env = {"QIJI_DATA_DIR": str(tmp_path / "data")}
    if request.param == "postgres":
        db = request.getfixturevalue("postgres_db")
        env.update(pg_env(db, f"t_{uuid.uuid4().hex[:12]}"))
    return env


@pytest.fixture
def postgres_env(postgres_db: str, tmp_path: Path) -> dict[str, str]:
    return {"QIJI_DATA_DIR": str(tmp_path / "data"),
            **pg_env(postgres_db, f"t_{uuid.uuid4().hex[:12]}")}


def settings_for(service: str, env: dict[str, str]) -> Settings:
    return load_settings(service, env)


def stored_state(originator_id: Any, version: int, topic: str, state: dict[str, Any]) -> bytes:
    """An event's state as a Qiji service stores it under MASTER_KEY (MACed), for fake upstream
    feeds: followers check every upstream event's MAC before acting on it."""
    from shared.integrity import EventMac, audit_key
    from shared.store import qiji_transcoder
    return EventMac(audit_key(MASTER_KEY)).seal_state(originator_id, version, topic,
                                                      qiji_transcoder().encode(state))


def store_as_released(app: Any, originator_id: Any,
                      events: list[tuple[str, dict[str, Any]]]) -> None:
    """Stores `events` ((topic, state) pairs, versions from 1) straight into `app`'s log, MACed
    as a Qiji service stores them: what an older release wrote, under its topics and in its
    shape, for tests that the events still replay into today's classes."""
    from eventsourcing.persistence import StoredEvent
    app.recorder.insert_events([StoredEvent(
        originator_id=originator_id, originator_version=version, topic=topic,
        state=stored_state(originator_id, version, topic, state))
        for version, (topic, state) in enumerate(events, start=1)])


def actor(principal: str, *roles: str, organisation_id: str = "") -> Actor:
    return Actor(principal=principal, roles=frozenset(roles), organisation_id=organisation_id)


def as_actor(who: Actor, rpc: str = "test", request_id: str = "", request: Any = None,
             access: Any = None):
    """Acts as `who`, as the guard would set it up: `request` is what the kernel fingerprints
    for a retry (the protobuf message, with its `access` entry for personal fields, or bytes
    for what a caller inside Qiji asks)."""
    return acting_as(RequestContext(actor=who, rpc=rpc, request_id=request_id,
                                    request=request, access=access))


class MemoryPositions:
    """The relay's positions (the three calls of services/relay/positions.py's), in memory: what a
    relay in a test has stored, in `saved`."""

    def __init__(self) -> None:
        self.saved: dict[str, int] = {}

    def load(self) -> dict[str, int]:
        return dict(self.saved)

    def save(self, service: str, next_position: int) -> None:
        self.saved[service] = next_position

    def close(self) -> None:
        pass


class FakeLease:
    """A lease on leadership (shared.leadership.Lease) that is held for `checks` checks."""

    def __init__(self, checks: int):
        self.checks = checks

    def held(self) -> bool:
        self.checks -= 1
        return self.checks >= 0
