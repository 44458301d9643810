"""Audit over a real store: history, state as of a date, erasure, rebuilt read models, and
tampering with the raw rows (PostgreSQL, by SQL, as someone with database access would)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from qiji.feed.v1.public_feed_service_pb2 import ReadPublicEventsRequest

from services.identity.application import IdentityApplication
from services.identity.domain.values import OrganisationKind, RiderStatus
from services.identity.public_events import CATALOGUE as IDENTITY_PUBLIC
from shared import audit
from shared.audit import Sealer
from shared.checkpoints import CheckpointSigner
from shared.grpc.public_feed import read_public
from shared.idempotency import RequestRecord
from shared.integrity import EventIntegrityError
from shared.metrics import REGISTRY
from shared.persistence import postgres_conninfo
from tests.conftest import MASTER_KEY, actor, as_actor, settings_for

AUDITOR = actor("auditor", "auditor")
ADMIN = actor("city", "city_admin")
PLATFORM = actor("platform-co", "platform")


def build(app: IdentityApplication, riders: int = 3) -> list[str]:
    return register(app, city(app), range(riders))


def city(app: IdentityApplication) -> dict[str, str]:
    with as_actor(ADMIN):
        def org(kind, name, parent=""):
            return app.create_organisation(kind=kind, name=name, parent_id=parent,
                                           department_function=None)["organisation_id"]
        street = org(OrganisationKind.STREET, "荷花池街道",
                     org(OrganisationKind.DISTRICT, "钟楼区", org(OrganisationKind.CITY, "常州")))
        platform = org(OrganisationKind.PLATFORM, "p")
        station = org(OrganisationKind.STATION, "s", platform)
    return {"street": street, "platform": platform, "station": station}


def register(app: IdentityApplication, orgs: dict[str, str], numbers: range) -> list[str]:
    ids = []
    with as_actor(PLATFORM):
        for n in numbers:
            ids.append(app.register_rider(
                platform_id=orgs["platform"], platform_rider_id=f"R{n}", name=f"骑手{n}",
                phone=f"1380000000{n}", national_id="", home_street_id=orgs["street"],
                station_id=orgs["station"])["rider_id"])
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
# Someone with write access to PostgreSQL, and not the master key, changes rows by hand. Each
# case names the first broken position. The platform company keeps the checkpoints the
# public feed gave it (a witness): they show the two cases that the log and its seals alone
# cannot, because the whole tail is gone or the chain was rebuilt.

SIGNER = CheckpointSigner(bytes(range(32, 64)), "test.qiji/identity")
CHECKPOINT_TYPE = "qiji.identity.v1.LogCheckpointSigned"


def witness_copies(app: IdentityApplication) -> list[str]:
    """Every checkpoint the platform company received on the feed, as it keeps them."""
    reply = read_public(app, IDENTITY_PUBLIC, ReadPublicEventsRequest(
        types=[CHECKPOINT_TYPE], limit=1000))
    return [json.loads(e.event.text_data)["checkpoint"] for e in reply.events]


def verified(app: IdentityApplication, checkpoints: list[str] = ()) -> audit.Verdict:
    return list(audit.verify(app, checkpoints=list(checkpoints),
                             verifier=SIGNER.verifier()))[-1]


@dataclass
class Tampered:
    app: IdentityApplication
    conn: psycopg.Connection
    table: str
    seals: str
    sealer: Sealer
    first_checkpoint: int  # the position the first checkpoint covers
    riders: list[str]
    orgs: dict[str, str]

    def ids(self) -> list[int]:
        return [r[0] for r in self.conn.execute(f"SELECT notification_id FROM {self.table}"
                                                 " ORDER BY 1")]

    def registered(self, rider: str) -> int:
        return self.conn.execute(f"SELECT notification_id FROM {self.table} WHERE "
                                 "originator_id = %s AND originator_version = 1",
                                 (rider,)).fetchone()[0]

    def last_business_event(self) -> int:
        return self.conn.execute(f"SELECT max(notification_id) FROM {self.table} WHERE topic"
                                 " NOT LIKE 'shared.checkpoints:%%'").fetchone()[0]


@pytest.fixture
def sealed(postgres_env):
    """identity on PostgreSQL: a city and two riders (one verified), sealed and checkpointed;
    two riders more,
    sealed and checkpointed again (every checkpoint sealed in its turn)."""
    settings = settings_for("identity", postgres_env)
    application = IdentityApplication(settings, MASTER_KEY)
    sealer = Sealer(application, signer=SIGNER, checkpoint_events=1)
    orgs = city(application)
    riders = register(application, orgs, range(2))
    with as_actor(ADMIN):
        application.verify_rider(rider_id=riders[0])
    sealer.run_once()
    first = SIGNER.verifier().verify(witness_copies(application)[0]).position
    riders += register(application, orgs, range(2, 4))
    sealer.run_once()
    sealer.run_once()
    assert sealer.run_once() == 0 and len(witness_copies(application)) == 2
    conn = psycopg.connect(postgres_conninfo(settings), autocommit=True)
    yield Tampered(application, conn, f'"{settings.postgres_schema}".identity_events',
                   f'"{settings.postgres_schema}".audit_seals', sealer, first, riders, orgs)
    conn.close()
    application.close()


def test_the_untouched_log_holds_to_every_checkpoint_the_witness_kept(sealed):
    verdict = verified(sealed.app, witness_copies(sealed.app))
    assert verdict.intact, verdict.problem
    assert verdict.checkpoints_checked == 4  # two brought, two found in the log
    assert verdict.sealed_through == sealed.app.last_position()
    assert verdict.newest_checkpoint == witness_copies(sealed.app)[-1]


@pytest.mark.postgres
def test_a_changed_byte_is_named_and_nothing_acts_on_the_rider(sealed):
    target = sealed.registered(sealed.riders[1])
    # One byte of the stored JSON: "R1" becomes "R9".
    sealed.conn.execute(f"UPDATE {sealed.table} SET state = set_byte(state, position('\"R1\"'"
                        f"::bytea IN state) + 1, ascii('9')) WHERE notification_id = %s",
                        (target,))
    verdict = verified(sealed.app)
    assert (verdict.intact, verdict.first_broken) == (False, target)
    assert "altered" in verdict.problem
    sealed.app.repository.cache.__init__(maxsize=10)  # a replica that never cached the rider
    with pytest.raises(EventIntegrityError) as refused:
        sealed.app.rider(sealed.riders[1])
    assert refused.value.metadata["aggregate_id"] == sealed.riders[1]


@pytest.mark.postgres
def test_a_deleted_middle_event_is_named(sealed):
    target = sealed.ids()[4]
    sealed.conn.execute(f"DELETE FROM {sealed.table} WHERE notification_id = %s", (target,))
    verdict = verified(sealed.app)
    assert (verdict.intact, verdict.first_broken) == (False, target)
    assert "missing" in verdict.problem


@pytest.mark.postgres
def test_a_copy_inserted_under_a_new_aggregate_is_never_sealed_and_is_named(sealed):
    sealed.conn.execute(f"INSERT INTO {sealed.table} (originator_id, originator_version, topic,"
                        f" state) SELECT gen_random_uuid(), 1, topic, state FROM {sealed.table}"
                        f" WHERE notification_id = %s", (sealed.registered(sealed.riders[0]),))
    forged = sealed.app.last_position()
    # A genuine event stored after the forgery.
    sealed.app.save(RequestRecord(principal="p", rpc="r", request_id="x", fingerprint="",
                                  result={}))
    assert sealed.sealer.run_once() == 0
    assert sealed.sealer.stopped[0] == forged
    assert sealed.sealer.store.head()[0] == forged - 1  # never sealed past it
    assert sample("qiji_audit_intact", "sealer") == 0
    assert sample("qiji_audit_broken_position", "sealer") == forged
    verdict = verified(sealed.app)
    assert (verdict.intact, verdict.first_broken) == (False, forged)
    assert "MAC" in verdict.problem
    # Removed: the genuine event after it is sealed, and the alarm clears.
    sealed.conn.execute(f"DELETE FROM {sealed.table} WHERE notification_id = %s", (forged,))
    assert sealed.sealer.run_once() > 0 and sealed.sealer.stopped is None
    assert sample("qiji_audit_intact", "sealer") == 1


@pytest.mark.postgres
def test_a_forged_next_version_of_a_rider_is_never_sealed_and_is_named(sealed):
    forged = forge_verified(sealed.conn, sealed.table, sealed.riders[2], sealed.riders[0])
    assert sealed.sealer.run_once() == 0
    assert sealed.sealer.stopped[0] == forged
    verdict = verified(sealed.app)
    assert (verdict.intact, verdict.first_broken) == (False, forged)


@pytest.mark.postgres
def test_two_swapped_events_are_named(sealed):
    a, b = sealed.ids()[2], sealed.ids()[3]
    with sealed.conn.transaction():
        sealed.conn.execute(f"UPDATE {sealed.table} SET notification_id = -1 WHERE "
                            "notification_id = %s", (a,))
        sealed.conn.execute(f"UPDATE {sealed.table} SET notification_id = %s WHERE "
                            "notification_id = %s", (a, b))
        sealed.conn.execute(f"UPDATE {sealed.table} SET notification_id = %s WHERE "
                            "notification_id = -1", (b,))
    verdict = verified(sealed.app)
    assert (verdict.intact, verdict.first_broken) == (False, a)
    assert "reordered" in verdict.problem


@pytest.mark.postgres
def test_the_newest_event_deleted_with_its_seal_shows_against_the_witness_copy(sealed):
    kept = witness_copies(sealed.app)
    newest = sealed.last_business_event()
    # The newest rider's registration, and the checkpoint after it, gone with their seals.
    sealed.conn.execute(f"DELETE FROM {sealed.table} WHERE notification_id >= %s", (newest,))
    sealed.conn.execute(f"DELETE FROM {sealed.seals} WHERE notification_id >= %s", (newest,))
    # The log and its seals agree with each other: alone they look whole (this passed before).
    assert verified(sealed.app).intact
    verdict = verified(sealed.app, kept)
    assert (verdict.intact, verdict.first_broken) == (False, newest)
    assert "deleted" in verdict.problem
    # The running sealer remembers the checkpoint it sealed, and will not go on either.
    assert sealed.sealer.run_once() == 0 and sealed.sealer.stopped[0] == newest


@pytest.mark.postgres
def test_a_middle_event_deleted_with_every_seal_after_it_is_named(sealed):
    target = sealed.registered(sealed.riders[2])
    sealed.conn.execute(f"DELETE FROM {sealed.table} WHERE notification_id = %s", (target,))
    sealed.conn.execute(f"DELETE FROM {sealed.seals} WHERE notification_id >= %s", (target,))
    # The sealer does not rebuild the chain over the hole: a checkpoint covers it.
    assert sealed.sealer.run_once() == 0
    assert sealed.sealer.stopped[0] == target
    assert Sealer(sealed.app).run_once() == 0  # nor does a restarted one
    for brought in ([], witness_copies(sealed.app)):
        verdict = verified(sealed.app, brought)
        assert (verdict.intact, verdict.first_broken) == (False, target), brought
        assert "seals after" in verdict.problem


@pytest.mark.postgres
def test_a_chain_rebuilt_after_a_deletion_shows_against_the_witness_copy(sealed):
    """The same deletion, the checkpoints stored after it deleted too, and the chain rebuilt
    by a restarted sealer: the log and its seals agree again, but not with what the platform
    company kept. The chain pins the change between the last checkpoint that still holds and
    the first that does not."""
    kept = witness_copies(sealed.app)
    target = sealed.registered(sealed.riders[2])
    sealed.conn.execute(f"DELETE FROM {sealed.table} WHERE notification_id = %s OR "
                        f"(notification_id > %s AND topic LIKE 'shared.checkpoints:%%')",
                        (target, target))
    sealed.conn.execute(f"DELETE FROM {sealed.seals} WHERE notification_id >= %s", (target,))
    assert Sealer(sealed.app).run_once() > 0
    assert verified(sealed.app).intact  # this passed before, too
    verdict = verified(sealed.app, kept)
    assert (verdict.intact, verdict.first_broken) == (False, sealed.first_checkpoint + 1)
    assert sealed.first_checkpoint < target
    assert "rebuilt" in verdict.problem


@pytest.mark.postgres
def test_a_checkpoint_the_log_key_did_not_sign_is_not_used(sealed):
    """Anyone can write a file of "checkpoints": only those this log's key signed count."""
    stranger = CheckpointSigner(bytes(32), "test.qiji/identity").sign(3, bytes(32)).note
    genuine = witness_copies(sealed.app)[0]
    origin, position, rest = genuine.split("\n", 2)
    edited = f"{origin}\n{int(position) - 1}\n{rest}"
    verdict = verified(sealed.app, [stranger, edited])
    assert verdict.intact and verdict.checkpoints_checked == 2  # the two in the log
    assert "not signed by test.qiji/identity" in verdict.rejected[0]
    assert "does not verify" in verdict.rejected[1]


def forge_verified(conn: psycopg.Connection, table: str, rider: str, verified_rider: str
                   ) -> int:
    """A copy of one rider's Rider.Verified row inserted as the next version of another rider
    (as the attack in issue 15 did): its position."""
    (source,) = conn.execute(f"SELECT notification_id FROM {table} WHERE originator_id = %s "
                             "AND topic LIKE '%%Rider.Verified'", (verified_rider,)).fetchone()
    conn.execute(f"INSERT INTO {table} (originator_id, originator_version, topic, state) "
                 f"SELECT %s, (SELECT max(originator_version) + 1 FROM {table} WHERE "
                 f"originator_id = %s), topic, state FROM {table} WHERE notification_id = %s",
                 (rider, rider, source))
    return conn.execute(f"SELECT max(notification_id) FROM {table}").fetchone()[0]


def sample(name: str, reader: str, log_name: str = "identity") -> float | None:
    return REGISTRY.get_sample_value(name, {"log": log_name, "reader": reader})
