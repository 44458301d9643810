"""The store gate over a real PostgreSQL store: while the health probe finds the store
unreachable, commands fail at once (the library's OperationalError, UNAVAILABLE to a caller)
instead of waiting for connections the pool cannot make; once it answers again, they run.

The outage is simulated by pointing only the probe at a port where nothing listens: the shared
test server is never stopped (tests/e2e/test_reliability.py stops a private one)."""

from __future__ import annotations

import dataclasses
import socket
import time
import uuid

import pytest
from eventsourcing.persistence import OperationalError

from services.identity.application import IdentityApplication
from services.identity.domain.values import OrganisationKind
from shared.persistence import STORE_DOWN_ERRORS
from tests.conftest import MASTER_KEY, actor, as_actor, settings_for

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
        with as_actor(ADMIN), pytest.raises(OperationalError) as refused:
            app.create_organisation(kind=OrganisationKind.CITY, name="常州",
                                    parent_id="", department_function=None)
        # The library's own retries (10 × 0.2 s), never a wait for a pooled connection.
        assert time.monotonic() - started < 4
        assert isinstance(refused.value, STORE_DOWN_ERRORS)

        gate._settings = real
        assert app.check_store() and gate.is_open
        with as_actor(ADMIN):
            created = app.create_organisation(kind=OrganisationKind.CITY, name="常州",
                                              parent_id="", department_function=None)
        assert uuid.UUID(created["organisation_id"])
    finally:
        app.close()
