"""Audit over a real store: history, state as of a date, erasure, rebuilt read models, and
tampering with the raw rows (PostgreSQL, by SQL, as someone with database access would)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import psycopg
import pytest
from eventsourcing.persistence import IntegrityError
from qiji.feed.v1.public_feed_service_pb2 import ReadPublicEventsRequest

from services.identity.application import IdentityApplication
from services.identity.domain.values import RiderStatus
from services.identity.public_events import CATALOGUE as IDENTITY_PUBLIC
from shared import audit
from shared.audit import SEALER, Sealer
from shared.checkpoints import CheckpointSigner
from shared.grpc import audit as audit_api
from shared.grpc.public_feed import read_public
from shared.idempotency import RequestRecord
from shared.integrity import ALARM, EventIntegrityError
from shared.metrics import REGISTRY
from shared.store import postgres_conninfo
from shared.tools import audit_cli
from shared.tools.addressing import Dialer
from shared.tools.cli import NO, NOT_PROVEN, OK
from tests.city import build_city, in_application
from tests.conftest import MASTER_KEY, actor, as_actor, settings_for

AUDITOR = actor("auditor", "auditor")
ADMIN = actor("city", "city_admin")
PLATFORM = actor("platform-co", "platform")


def build(app: IdentityApplication, riders: int = 3) -> list[str]:
    return register(app, city(app), range(riders))


def city(app: IdentityApplication) -> dict[str, str]:
    made = build_city(in_application(app))
    return {"street": made.street, "platform": made.platform, "station": made.station}


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

    def delete_for_a_rebuild(self) -> int:
        """A middle event (rider 2's registration) deleted with every checkpoint after it and
        every seal from it on, ready for the chain to be rebuilt: its position."""
        target = self.registered(self.riders[2])
        self.conn.execute(f"DELETE FROM {self.table} WHERE notification_id = %s OR "
                          f"(notification_id > %s AND topic LIKE 'shared.checkpoints:%%')",
                          (target, target))
        self.conn.execute(f"DELETE FROM {self.seals} WHERE notification_id >= %s", (target,))
        return target

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
    target = sealed.delete_for_a_rebuild()
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


# ----------------------------------------------------------------------- the seals table
# Anyone who can write the events can write `audit_seals` too: the sealer believes nothing there
# that it did not compute or check itself, and signs only its own head.


def signed_positions(app: IdentityApplication) -> list[int]:
    return [SIGNER.verifier().verify(n).position for n in witness_copies(app)]


@pytest.mark.postgres
def test_a_seal_written_beyond_the_log_stops_the_sealer_and_is_never_signed(sealed):
    end = sealed.app.last_position()
    sealed.conn.execute(f"INSERT INTO {sealed.seals} VALUES (%s, %s, 'x')",
                        (end + 50, b"\xab" * 32))
    assert sealed.sealer.run_once() == 0
    assert sealed.sealer.stopped[0] == end + 50 and "no event" in sealed.sealer.stopped[1]
    assert sample("qiji_audit_intact", "sealer") == 0
    # The events after it, a forged next version among them, are not sealed over it either.
    register(sealed.app, sealed.orgs, range(7, 9))
    forge_verified(sealed.conn, sealed.table, sealed.riders[2], sealed.riders[0])
    assert sealed.sealer.run_once() == 0 and sealed.sealer.stopped[0] == end + 50
    assert sealed.sealer.store.at(end + 1) is None
    # Witnesses never received a checkpoint for a position the log has not reached.
    assert max(signed_positions(sealed.app)) < end


@pytest.mark.postgres
def test_a_forged_row_stored_with_a_seal_for_it_is_not_sealed_over(sealed):
    with sealed.conn.transaction():
        forged = forge_verified(sealed.conn, sealed.table, sealed.riders[2], sealed.riders[0])
        sealed.conn.execute(f"INSERT INTO {sealed.seals} VALUES (%s, %s, 'x')",
                            (forged, bytes(32)))
    (genuine,) = register(sealed.app, sealed.orgs, range(7, 8))
    for sealer in (sealed.sealer, Sealer(sealed.app, signer=SIGNER, checkpoint_events=1)):
        assert sealer.run_once() == 0  # the live sealer, and one that starts now
        assert sealer.stopped[0] == forged and "MAC" in sealer.stopped[1]
    assert sealed.sealer.store.at(sealed.registered(genuine)) is None
    assert max(signed_positions(sealed.app)) < forged


@pytest.mark.postgres
def test_a_seal_written_ahead_for_a_genuine_event_is_not_believed(sealed):
    (rider,) = register(sealed.app, sealed.orgs, range(7, 8))
    target = sealed.registered(rider)
    sealed.conn.execute(f"INSERT INTO {sealed.seals} VALUES (%s, %s, 'x')", (target, bytes(32)))
    assert sealed.sealer.run_once() == 0
    assert sealed.sealer.stopped[0] == target and "not the one it chains to" in (
        sealed.sealer.stopped[1])
    # Taken away, the sealer seals the event with the seal it computes.
    sealed.conn.execute(f"DELETE FROM {sealed.seals} WHERE notification_id = %s", (target,))
    assert sealed.sealer.run_once() > 0 and sealed.sealer.stopped is None
    assert verified(sealed.app).intact


@pytest.mark.postgres
def test_the_newest_events_deleted_with_their_seals_stop_the_sealer_that_sealed_them(sealed):
    rarely = Sealer(sealed.app, signer=SIGNER, checkpoint_events=10**6,
                    checkpoint_seconds=10**6)
    rarely.run_once()
    register(sealed.app, sealed.orgs, range(7, 9))
    assert rarely.run_once() == 2  # sealed, and no checkpoint covers them yet
    newest = sealed.last_business_event()
    sealed.conn.execute(f"DELETE FROM {sealed.table} WHERE notification_id >= %s", (newest,))
    sealed.conn.execute(f"DELETE FROM {sealed.seals} WHERE notification_id >= %s", (newest,))
    assert rarely.run_once() == 0
    assert rarely.stopped[0] == newest and "deleted" in rarely.stopped[1]


@pytest.mark.postgres
def test_a_restarted_sealer_stops_at_a_newest_checkpoint_that_fails_its_mac(sealed):
    """A middle event deleted with every seal after it, and the newest checkpoint (which covers
    it) altered: a sealer starting now must not rebuild the chain over the hole."""
    target = sealed.registered(sealed.riders[2])
    checkpoint_row = sealed.conn.execute(
        f"SELECT max(notification_id) FROM {sealed.table} WHERE topic LIKE "
        "'shared.checkpoints:%%'").fetchone()[0]
    assert target < checkpoint_row
    sealed.conn.execute(f"DELETE FROM {sealed.table} WHERE notification_id = %s", (target,))
    sealed.conn.execute(f"DELETE FROM {sealed.seals} WHERE notification_id >= %s", (target,))
    sealed.conn.execute(f"UPDATE {sealed.table} SET state = set_byte(state, 30, ascii('x'))"
                        " WHERE notification_id = %s", (checkpoint_row,))
    starting = Sealer(sealed.app)
    assert starting.run_once() == 0
    assert starting.stopped[0] == checkpoint_row and "MAC" in starting.stopped[1]
    assert starting.store.head()[0] == target - 1  # nothing sealed over the hole


@pytest.mark.postgres
def test_a_seal_the_store_refuses_is_a_failure_not_a_race(sealed):
    """Not another replica's seal: a trigger that refuses every insert (as a unique
    violation), or a revoked permission. The sealer fails loudly and claims nothing sealed."""
    schema = sealed.seals.rsplit(".", 1)[0]
    sealed.conn.execute(f"CREATE FUNCTION {schema}.refuse() RETURNS trigger LANGUAGE plpgsql AS"
                        " $$ BEGIN RAISE EXCEPTION 'refused' USING ERRCODE ="
                        " 'unique_violation'; END $$")
    sealed.conn.execute(f"CREATE TRIGGER refuse BEFORE INSERT ON {sealed.seals} FOR EACH ROW"
                        f" EXECUTE FUNCTION {schema}.refuse()")
    register(sealed.app, sealed.orgs, range(7, 8))
    through = REGISTRY.get_sample_value("qiji_audit_sealed_through", {"log": "identity"})
    with pytest.raises(IntegrityError, match="refused"):
        sealed.sealer.run_once()
    assert REGISTRY.get_sample_value("qiji_audit_sealed_through", {"log": "identity"}) == through


def test_a_store_outage_while_seals_are_stored_is_not_taken_for_tampering(sealed):
    """The store went away as the sealer stored a page's seals: once it is back, the next
    round seals that page, with no integrity alarm (the versions it had followed in the
    failed round are not taken for events come twice)."""
    register(sealed.app, sealed.orgs, range(7, 9))
    add = sealed.sealer.store.add

    def outage(seals: Any) -> None:
        raise psycopg.OperationalError("the connection was lost")
    sealed.sealer.store.add = outage
    with pytest.raises(psycopg.OperationalError):
        sealed.sealer.run_once()
    sealed.sealer.store.add = add
    assert sealed.sealer.run_once() > 0
    assert sealed.sealer.stopped is None
    assert not ALARM.stopped_at("identity", SEALER)


@pytest.mark.postgres
def test_verify_reads_only_and_a_dropped_seals_table_shows(sealed):
    schema = sealed.seals.rsplit(".", 1)[0].strip('"')
    sealed.conn.execute(f"DROP TABLE {sealed.seals}")
    verdict = verified(sealed.app)
    assert (verdict.intact, verdict.first_broken) == (False, 1)
    assert "seals after 0 were deleted" in verdict.problem
    # An auditor's verification changed nothing: the table is still gone.
    assert sealed.conn.execute("SELECT to_regclass(%s)", (f"{schema}.audit_seals",)
                               ).fetchone()[0] is None


def test_two_signed_checkpoints_for_one_position_are_proof_of_a_rewrite(app):
    first, other = SIGNER.sign(3, bytes(32)).note, SIGNER.sign(3, b"\x01" * 32).note
    verdict = verified(app, [first, SIGNER.sign(4, bytes(32)).note, other])
    assert (verdict.intact, verdict.first_broken) == (False, 3)
    assert "two checkpoints signed for position 3" in verdict.problem


# ----------------------------------------------------------------------- verify's verdict
# `qiji audit verify` against identity's AuditService, served on a local port.


@contextmanager
def serving_audit(app: IdentityApplication, key: CheckpointSigner) -> Iterator[Dialer]:
    """identity's AuditService with `key` as the log's checkpoint key (no guard: what is tested
    is the verdict, not who may ask)."""
    server = grpc.server(ThreadPoolExecutor(max_workers=2), options=[("grpc.so_reuseport", 0)])
    audit_api.register(server, app, key.verifier())
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield Dialer({"identity": f"127.0.0.1:{port}"})
    finally:
        server.stop(0)


def audit_verify(dialer: Dialer, notes: list[str], pinned: list[CheckpointSigner],
                 capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    """`qiji audit verify identity`: its exit code and its report on identity."""
    capsys.readouterr()
    code = audit_cli._verify(["identity"], dialer, [], notes, [k.verifier() for k in pinned])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()
             if line.startswith("{")]  # not the service's own log lines
    return code, next(line for line in lines if line.get("service") == "identity")


@pytest.mark.postgres
def test_checkpoints_a_witness_kept_hold_whatever_key_and_name_the_log_has_now(sealed, capsys):
    """Someone with the master key and the configuration deletes an event, rebuilds the chain
    and gives the service a new audit signing key and origin, so that the log agrees with
    itself and its own new checkpoints. What the platform company kept still shows it."""
    kept = witness_copies(sealed.app)
    sealed.delete_for_a_rebuild()
    other = CheckpointSigner(bytes(range(64, 96)), "elsewhere.example/identity")
    rebuilt = Sealer(sealed.app, signer=other, checkpoint_events=1)
    assert rebuilt.run_once() > 0 and rebuilt.run_once() > 0
    assert list(audit.verify(sealed.app, verifier=other.verifier()))[-1].intact
    with serving_audit(sealed.app, other) as dialer:
        # The auditor pinned the key the city published before: the kept checkpoints count.
        code, report = audit_verify(dialer, kept, [SIGNER], capsys)
        assert (code, report["intact"]) == (NO, False), report
        assert report["first_broken_position"] == sealed.first_checkpoint + 1
        assert "verifier_key_not_pinned" in report
        # No key pinned: the city's key now decides, refuses them, and that is not a pass.
        code, report = audit_verify(dialer, kept, [], capsys)
        assert (code, report["intact"]) == (NOT_PROVEN, True), report
        assert len(report["checkpoints_not_used"]) == len(kept)


@pytest.mark.postgres
def test_a_doctored_witness_file_proves_nothing_either_way(sealed, capsys):
    kept = witness_copies(sealed.app)
    origin, position, _, rest = kept[0].split("\n", 3)
    doctored = f"{origin}\n{position}\n{base64.b64encode(bytes(32)).decode()}\n{rest}"
    with serving_audit(sealed.app, SIGNER) as dialer:
        # Two "checkpoints" disagreeing about one position prove a rewrite only if both are
        # signed: the doctored one is not, and is not used.
        code, report = audit_verify(dialer, [*kept, doctored], [], capsys)
        assert (code, report["intact"]) == (NOT_PROVEN, True), report
        assert report["checkpoints_not_used"] == [
            f"checkpoint #3 (test.qiji/identity {position}): the signature of test.qiji/identity"
            " does not verify: the note was altered, or was never signed by this key"]
        code, report = audit_verify(dialer, [*kept, doctored], [SIGNER], capsys)
        assert (code, report["intact"]) == (NOT_PROVEN, True), report
        code, report = audit_verify(dialer, kept, [SIGNER], capsys)
        assert (code, report["intact"], report["checkpoints_given"]) == (OK, True, 2), report
        assert report["checkpoints_checked"] == 4 and "checkpoints_not_used" not in report


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


def test_a_command_stored_while_a_checkpoint_is_signed_is_covered_by_the_next(app):
    """The race a loaded deployment met: a rider registered after the sealer's pass and before
    its checkpoint was stored lands *before* that checkpoint in the log. The checkpoint covers
    only what was sealed; the next must cover the rider, though the newest event of the log is
    then a checkpoint. (The sealer believed "nothing but the checkpoint since" and left the
    rider uncovered until some other command came.)"""
    orgs = city(app)
    sealer = Sealer(app, signer=SIGNER, checkpoint_events=10**6, checkpoint_seconds=0)
    sign = sealer._maybe_checkpoint
    late: list[str] = []

    def rider_arrives_then_sign() -> None:
        late.extend(register(app, orgs, range(1)))
        sign()
    sealer._maybe_checkpoint = rider_arrives_then_sign  # type: ignore[method-assign]
    sealer.run_once()
    sealer._maybe_checkpoint = sign  # type: ignore[method-assign]
    rider_at = app.last_position() - 1  # the checkpoint was stored after the rider
    first = SIGNER.verifier().verify(witness_copies(app)[-1])
    assert first.position < rider_at, "the race was not reproduced"
    for _ in range(3):
        sealer.run_once()
    newest = SIGNER.verifier().verify(witness_copies(app)[-1])
    assert newest.position >= rider_at
    idle = len(witness_copies(app))
    for _ in range(3):
        sealer.run_once()
    assert len(witness_copies(app)) == idle  # and an idle log still signs nothing
