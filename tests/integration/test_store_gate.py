"""The store gate over a real PostgreSQL store: while the health probe finds the store
unreachable, commands fail at once (StoreUnavailable, UNAVAILABLE to a caller) instead of
waiting for connections the pool cannot make; a command already waiting for a connection when
the store goes hears it within a second; once the store answers again, commands run.

The outage is simulated by pointing only the probe at a port where nothing listens: the shared
test server is never stopped (tests/e2e/test_reliability.py stops a private one)."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest

from services.identity.application import IdentityApplication
from services.identity.domain.values import OrganisationKind
from shared.store import STORE_DOWN_ERRORS, StoreUnavailable
from tests.conftest import MASTER_KEY, PG, actor, as_actor, settings_for

ADMIN = actor("city", "city_admin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.postgres
def test_commands_fail_fast_while_the_probe_finds_the_store_down_and_run_once_it_is_back(
        postgres_env: dict[str, str]) -> None:
    app = IdentityApplication(settings_for("identity", {**postgres_env,
                                                        "QIJI_POSTGRES_POOL_SIZE": "1"}),
                              MASTER_KEY)
    try:
        gate = app.store_gate
        assert app.check_store() and gate.is_open

        real = gate._settings
        gate._settings = dataclasses.replace(real, postgres_port=free_port())
        gate.close()  # the probe's connection goes, as it would with the server
        assert not app.check_store() and not gate.is_open

        started = time.monotonic()
        with as_actor(ADMIN), pytest.raises(StoreUnavailable) as refused:
            app.create_organisation(kind=OrganisationKind.CITY, name="常州",
                                    parent_id="", department_function=None)
        # At once: neither a wait for a pooled connection nor the library's retries
        # (10 × 0.2 s), which the gate's refusal is not one of.
        assert time.monotonic() - started < 0.5
        assert isinstance(refused.value, STORE_DOWN_ERRORS)

        gate._settings = real
        assert app.check_store() and gate.is_open
        with as_actor(ADMIN):
            created = app.create_organisation(kind=OrganisationKind.CITY, name="常州",
                                              parent_id="", department_function=None)
        assert uuid.UUID(created["organisation_id"])
    finally:
        app.close()


@contextmanager
def health_probe(app: IdentityApplication) -> Iterator[None]:
    """The server's health loop (shared/grpc/server.py): a probe a second, or at once when a
    call casts doubt on the store."""
    stopping = threading.Event()

    def loop() -> None:
        while not stopping.is_set():
            app.check_store()
            app.store_gate.wait_for_doubt(1.0)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stopping.set()
        app.store_gate.doubt()
        thread.join(5)


@pytest.mark.postgres
def test_a_command_waiting_for_a_connection_when_the_store_goes_fails_within_a_second(
        postgres_env: dict[str, str]) -> None:
    app = IdentityApplication(settings_for("identity", {**postgres_env,
                                                        "QIJI_POSTGRES_POOL_SIZE": "1"}),
                              MASTER_KEY)
    pool = app.recorder.datastore.pool  # type: ignore[attr-defined]
    held = []
    try:
        gate = app.store_gate
        with health_probe(app):
            # Every connection the pool may open is taken: the next command waits for one.
            held = [pool.getconn() for _ in range(pool.max_size)]
            outcome: dict[str, object] = {}

            def command() -> None:
                started = time.monotonic()
                try:
                    with as_actor(ADMIN):
                        app.create_organisation(kind=OrganisationKind.CITY, name="常州",
                                                parent_id="", department_function=None)
                    outcome["answer"] = "stored"
                except Exception as error:  # what the caller would be told
                    outcome["answer"] = error
                outcome["seconds"] = time.monotonic() - started

            waiting = threading.Thread(target=command)
            waiting.start()
            time.sleep(0.3)  # it waits for a connection
            assert waiting.is_alive()
            # Now the store goes (as far as the probe can tell); the probe's next tick is
            # up to a second away, but the waiting command's doubt wakes it.
            gate._settings = dataclasses.replace(gate._settings, postgres_port=free_port())
            gate.close()
            gone = time.monotonic()
            waiting.join(10)
            assert isinstance(outcome["answer"], StoreUnavailable), outcome
            assert time.monotonic() - gone < 1.0, outcome
            assert not gate.is_open
    finally:
        for conn in held:
            pool.putconn(conn)
        app.close()


@pytest.mark.postgres
def test_a_new_riders_key_is_stored_through_a_connection_a_restart_broke(
        postgres_env: dict[str, str]) -> None:
    """After the database restarts, the pool's idle connections are broken. A new rider's data
    key may be a command's first statement (RegisterRider asks nothing before it): it is
    retried on a fresh connection, as the store's own statements are, not failed UNAVAILABLE."""
    app = IdentityApplication(settings_for("identity", {**postgres_env,
                                                        "QIJI_POSTGRES_POOL_SIZE": "1"}),
                              MASTER_KEY)
    try:
        app.vault.seal(str(uuid.uuid4()), "warm")  # the pool's connection is made and idle
        # Every other backend of the database ended, as a restart would end them.
        with psycopg.connect(dbname=postgres_env["QIJI_POSTGRES_DBNAME"], host=PG["host"],
                             port=PG["port"], user=PG["user"], autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = %s AND pid <> pg_backend_pid()",
                          (postgres_env["QIJI_POSTGRES_DBNAME"],))
        subject = str(uuid.uuid4())
        sealed = app.vault.seal(subject, "骑手")
        assert app.vault.open(subject, sealed) == "骑手"
    finally:
        app.close()
