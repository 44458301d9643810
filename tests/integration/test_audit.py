"""Audit over a real store: history, state as of a date, erasure, rebuilt read models, and
tampering with the raw rows (PostgreSQL, by SQL, as someone with database access would)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from services.identity.application import IdentityApplication
from services.identity.domain.values import OrganisationKind, RiderStatus
from shared import audit
from shared.audit import Sealer
from shared.persistence import postgres_conninfo
from tests.conftest import MASTER_KEY, actor, as_actor, settings_for

AUDITOR = actor("auditor", "auditor")
ADMIN = actor("city", "city_admin")
PLATFORM = actor("platform-co", "platform")


def build(app: IdentityApplication, riders: int = 3) -> list[str]:
    with as_actor(ADMIN):
        def org(kind, name, parent=""):
            return app.create_organisation(kind=kind, name=name, parent_id=parent,
                                           department_function=None)["organisation_id"]
        street = org(OrganisationKind.STREET, "荷花池街道",
                     org(OrganisationKind.DISTRICT, "钟楼区", org(OrganisationKind.CITY, "常州")))
        platform = org(OrganisationKind.PLATFORM, "p")
        station = org(OrganisationKind.STATION, "s", platform)
    ids = []
    with as_actor(PLATFORM):
        for n in range(riders):
            ids.append(app.register_rider(
                platform_id=platform, platform_rider_id=f"R{n}", name=f"骑手{n}",
                phone=f"1380000000{n}", national_id="", home_street_id=street,
                station_id=station)["rider_id"])
    return ids


@pytest.fixture
def app(store_env):
    application = IdentityApplication(settings_for("identity", store_env), MASTER_KEY)
    yield application
    application.close()


def final(app) -> audit.Verdict:
    return list(audit.verify(app))[-1]


def test_an_untouched_log_verifies_sealed_or_not_yet_sealed(app):
    build(app)
    assert final(app).intact
    assert Sealer(app).run_once() > 0
    assert Sealer(app).run_once() == 0
    verdict = final(app)
    assert verdict.intact and verdict.checked == app.last_position()


def test_the_history_of_a_rider_says_who_did_what_and_hides_personal_data(app):
    rider = build(app, 1)[0]
    with as_actor(ADMIN, "SuspendRider", "req-9"):
        app.suspend_rider(rider_id=rider, reason="complaint")
    with as_actor(AUDITOR):
        entries = audit.history(app, __import__("uuid").UUID(rider))
    assert [e.topic for e in entries] == ["Rider.Registered", "Rider.Suspended"]
    assert entries[1].principal == "city" and entries[1].request_id == "req-9"
    # A reason is free text that may name people: the auditor learns that there was one.
    assert "reason=[withheld: 9 characters]" in entries[1].summary
    assert "complaint" not in entries[1].summary
    assert "sealed_phone=[sealed]" in entries[0].summary
    assert "13800000000" not in entries[0].summary
    with as_actor(ADMIN):
        assert "reason=complaint" in audit.history(app, __import__("uuid").UUID(rider))[
            1].summary


def test_a_rider_as_of_a_date_is_rebuilt_from_events_up_to_then(app):
    import uuid
    rider = build(app, 1)[0]
    between = datetime.now(UTC)
    with as_actor(ADMIN):
        app.suspend_rider(rider_id=rider, reason="complaint")
    then = audit.state_as_of(app, uuid.UUID(rider), between)
    now = audit.state_as_of(app, uuid.UUID(rider), datetime.now(UTC))
    assert then["status"] == RiderStatus.REGISTERED and now["status"] == RiderStatus.SUSPENDED
    assert audit.state_as_of(app, uuid.UUID(rider), between - timedelta(days=3650)) == {}


def test_erasing_one_rider_keeps_history_replayable_and_verifiable(app):
    import uuid
    erased, kept = build(app, 2)
    Sealer(app).run_once()
    with as_actor(ADMIN):
        app.erase_rider_personal_data(rider_id=erased, reason="erasure request 2026-03-01")
        view, other = app.rider(erased), app.rider(kept)
    assert view.personal_data_erased and view.phone == "[erased]"
    assert other.phone == "13800000001"
    assert [e.topic for e in audit.history(app, uuid.UUID(erased))][-1] == (
        "Rider.PersonalDataErased")
    Sealer(app).run_once()
    assert final(app).intact


def test_a_read_model_rebuilt_from_the_log_equals_the_live_one(app, store_env):
    riders = build(app, 5)
    with as_actor(ADMIN):
        app.verify_rider(rider_id=riders[0])
        app.suspend_rider(rider_id=riders[1], reason="x")
    app.views.catch_up()
    live = (app.views.riders.snapshot(), app.views.organisations.snapshot())
    rebuilt = IdentityApplication(settings_for("identity", store_env), MASTER_KEY)
    try:
        assert (rebuilt.views.riders.snapshot(), rebuilt.views.organisations.snapshot()) == live
    finally:
        rebuilt.close()


# ----------------------------------------------------------------------- tampering, by SQL


@pytest.fixture
def sealed(postgres_env):
    application = IdentityApplication(settings_for("identity", postgres_env), MASTER_KEY)
    build(application, 4)
    Sealer(application).run_once()
    settings = settings_for("identity", postgres_env)
    conn = psycopg.connect(postgres_conninfo(settings), autocommit=True)
    table = f'"{settings.postgres_schema}".identity_events'
    ids = [r[0] for r in conn.execute(f"SELECT notification_id FROM {table} ORDER BY 1")]
    yield application, conn, table, ids
    conn.close()
    application.close()


@pytest.mark.postgres
def test_a_changed_event_is_named(sealed):
    app, conn, table, _ids = sealed
    target = conn.execute(f"SELECT notification_id FROM {table} WHERE convert_from(state, "
                          f"'UTF8') LIKE '%%\"platform_rider_id\":\"R1\"%%'").fetchone()[0]
    conn.execute(f"UPDATE {table} SET state = convert_to(replace(convert_from(state, 'UTF8'),"
                 f" '\"R1\"', '\"R9\"'), 'UTF8') WHERE notification_id = %s", (target,))
    verdict = final(app)
    assert (verdict.intact, verdict.first_broken) == (False, target)
    assert "altered" in verdict.problem


@pytest.mark.postgres
def test_a_deleted_event_is_named(sealed):
    app, conn, table, ids = sealed
    target = ids[4]
    conn.execute(f"DELETE FROM {table} WHERE notification_id = %s", (target,))
    verdict = final(app)
    assert (verdict.intact, verdict.first_broken) == (False, target)
    assert "missing" in verdict.problem


@pytest.mark.postgres
def test_an_inserted_event_is_named(sealed):
    app, conn, table, ids = sealed
    conn.execute(f"INSERT INTO {table} (originator_id, originator_version, topic, state)"
                 f" SELECT gen_random_uuid(), 1, topic, state FROM {table}"
                 f" WHERE notification_id = %s", (ids[6],))
    forged = conn.execute(f"SELECT max(notification_id) FROM {table}").fetchone()[0]
    Sealer(app).run_once()  # even sealed as if it were genuine, the forgery has no valid MAC
    verdict = final(app)
    assert (verdict.intact, verdict.first_broken) == (False, forged)


@pytest.mark.postgres
def test_reordered_events_are_named(sealed):
    app, conn, table, ids = sealed
    a, b = ids[2], ids[3]
    with conn.transaction():
        conn.execute(f"UPDATE {table} SET notification_id = -1 WHERE notification_id = %s", (a,))
        conn.execute(f"UPDATE {table} SET notification_id = %s WHERE notification_id = %s",
                     (a, b))
        conn.execute(f"UPDATE {table} SET notification_id = %s WHERE notification_id = -1",
                     (b,))
    verdict = final(app)
    assert (verdict.intact, verdict.first_broken) == (False, a)
    assert "reordered" in verdict.problem
