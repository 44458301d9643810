"""The identity application over a real store: the same cases on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
from collections import Counter

import psycopg
import pytest
from qiji.identity.v1 import identity_service_pb2 as ipb

from services.identity.application import IdentityApplication
from services.identity.domain.model import Rider
from services.identity.domain.values import ConsentScope, OrganisationKind, RiderStatus
from services.identity.grpc_api import ACCESS, SERVICE_NAME
from shared.errors import AlreadyExists, InvalidArgument, NotFound
from shared.idempotency import RequestRecord
from shared.store import postgres_conninfo
from tests.city import build_city, in_application
from tests.conftest import MASTER_KEY, actor, as_actor, city_tree, settings_for

ADMIN = actor("city", "city_admin")
PLATFORM = actor("platform-co", "platform")


@pytest.fixture
def app(store_env):
    application = IdentityApplication(settings_for("identity", store_env), MASTER_KEY)
    yield application
    application.close()


@pytest.fixture
def tree(app):
    made = city_tree(app)
    with as_actor(ADMIN):
        made["other_street"] = app.create_organisation(
            kind=OrganisationKind.STREET, name="西林街道", parent_id=made["district"],
            department_function=None)["organisation_id"]
    return made


def register(app, tree, rider_no, *, street=None, request_id="", phone="13812345678",
             national_id="", name="王小明"):
    """RegisterRider as the guard hands it to the application: the request (which the kernel
    fingerprints for retries) and its access entry in the context."""
    fields = {"platform_id": tree["platform"], "platform_rider_id": f"R{rider_no}",
              "name": name, "phone": phone, "national_id": national_id,
              "home_street_id": street or tree["street"], "station_id": tree["station"]}
    request = ipb.RegisterRiderRequest(request_id=request_id, **fields)
    with as_actor(PLATFORM, "RegisterRider", request_id, request=request,
                  access=ACCESS[f"/{SERVICE_NAME}/RegisterRider"]):
        return app.register_rider(**fields)


def test_a_registered_rider_reads_back_with_personal_data_for_officials_only(app, tree):
    rider_id = register(app, tree, 1, national_id="11010519491231002X")["rider_id"]
    with as_actor(ADMIN):
        seen_by_admin = app.rider(rider_id)
    with as_actor(PLATFORM):
        seen_by_platform = app.rider(rider_id)
    assert seen_by_admin.phone == "13812345678"
    assert seen_by_admin.national_id == "11010519491231002X"
    assert seen_by_platform.phone == "138****5678"
    assert seen_by_platform.national_id == "110***********002X"
    # The platform registered the name, but sees it only while the rider consents to share
    # it with the platform (as on its feed).
    assert seen_by_platform.name == "王**"
    with as_actor(actor("platform-co", "platform", organisation_id=tree["platform"])):
        app.grant_consent(rider_id=rider_id, scope=ConsentScope.NAME,
                          recipient_id=tree["platform"])
        assert app.rider(rider_id).name == "王小明"
        assert app.rider(rider_id).phone == "138****5678"


def test_a_retry_with_the_same_request_id_answers_the_same_and_stores_nothing(app, tree,
                                                                              store_env):
    first = register(app, tree, 1, request_id="req-1")
    position = app.last_position()
    assert register(app, tree, 1, request_id="req-1") == first
    assert app.last_position() == position
    # Also after a restart: the record of the first answer is in the store, not in memory.
    app.close()
    reopened = IdentityApplication(settings_for("identity", store_env), MASTER_KEY)
    try:
        assert register(reopened, tree, 1, request_id="req-1") == first
        assert reopened.last_position() == position
    finally:
        reopened.close()


def test_a_retry_answers_the_same_typed_result_as_the_first_call(app, tree, store_env):
    """The servicer renders result.id at result.version: a retry, read back from the request's
    record (in memory or after a restart), must name the same rider at the same version."""
    first = register(app, tree, 1, request_id="req-1")
    assert (first.id, first.version) == (first["rider_id"], first["version"])
    app.grant_consent(rider_id=first.id, scope=ConsentScope.NAME, recipient_id=tree["platform"])
    again = register(app, tree, 1, request_id="req-1")
    assert (again.id, again.version, dict(again)) == (first.id, first.version, dict(first))
    app.close()
    reopened = IdentityApplication(settings_for("identity", store_env), MASTER_KEY)
    try:
        after_restart = register(reopened, tree, 1, request_id="req-1")
        assert (after_restart.id, after_restart.version) == (first.id, first.version)
        assert reopened.rider(after_restart.id).version > after_restart.version
    finally:
        reopened.close()


def test_a_request_id_reused_for_another_request_is_refused(app, tree):
    register(app, tree, 1, request_id="req-1")
    with pytest.raises(InvalidArgument) as error:
        register(app, tree, 2, request_id="req-1")
    assert [(v.field, v.reason) for v in error.value.violations] == [
        ("request_id", "REQUEST_ID_REUSED")]


def test_registering_a_platform_rider_id_twice_is_already_exists(app, tree):
    register(app, tree, 1)
    with pytest.raises(AlreadyExists) as error:
        register(app, tree, 1)
    assert error.value.reason == "RIDER_ALREADY_REGISTERED"


def test_registering_a_rider_whose_data_was_erased_is_already_exists(app, tree):
    """The first attempt does not ask whether the rider exists (its save would conflict): an
    erased rider's key refuses it all the same — on SQLite the key's tombstone refuses to
    seal, on PostgreSQL it fails the save that carries the new key — which is the same
    answer, not an internal error."""
    rider_id = register(app, tree, 1)["rider_id"]
    with as_actor(ADMIN):
        app.erase_rider_personal_data(rider_id=rider_id, reason="本人申请删除")
    position = app.last_position()
    with pytest.raises(AlreadyExists) as error:
        register(app, tree, 1)
    assert error.value.reason == "RIDER_ALREADY_REGISTERED"
    assert app.last_position() == position


def test_concurrent_registrations_of_one_rider_give_one_rider(app, tree):
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def attempt(n: int) -> None:
        barrier.wait()
        try:
            register(app, tree, 1, request_id=f"req-{n}")
            outcomes.append("ok")
        except AlreadyExists:
            outcomes.append("exists")

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert Counter(outcomes) == {"ok": 1, "exists": 7}
    registered = [n for n in app.read_log(1, 1000) if n.topic.endswith("Rider.Registered")]
    assert len(registered) == 1


def test_concurrent_changes_to_one_rider_are_all_applied_in_some_order(app, tree):
    rider_id = register(app, tree, 1)["rider_id"]
    barrier = threading.Barrier(2)
    errors: list[Exception] = []

    def run(fn):
        barrier.wait()
        try:
            with as_actor(ADMIN):
                fn()
        except Exception as e:
            errors.append(e)

    threads = [
        threading.Thread(target=run, args=(lambda: app.verify_rider(rider_id=rider_id),)),
        threading.Thread(target=run, args=(lambda: app.suspend_rider(rider_id=rider_id,
                                                                     reason="check"),)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with as_actor(ADMIN):
        rider = app.rider(rider_id)
    assert rider.version == 3
    assert rider.verified_at is not None
    assert rider.status is RiderStatus.SUSPENDED


def test_lists_filter_and_page_through_every_rider_once(app, tree):
    for n in range(7):
        register(app, tree, n, street=tree["street"] if n % 2 == 0 else tree["other_street"])
    with as_actor(PLATFORM):
        seen, token = [], ""
        while True:
            page, token = app.list_riders(home_street_id=tree["street"], station_id="",
                                          status=None, page_size=2, page_token=token)
            seen += [r.platform_rider_id for r in page]
            if not token:
                break
    assert seen == ["R0", "R2", "R4", "R6"]


def test_a_fresh_process_rebuilds_its_lists_from_the_log(app, tree, store_env):
    rider_id = register(app, tree, 1)["rider_id"]
    with as_actor(PLATFORM):
        app.verify_rider(rider_id=rider_id)
    app.close()
    reopened = IdentityApplication(settings_for("identity", store_env), MASTER_KEY)
    try:
        with as_actor(PLATFORM):
            active, _ = reopened.list_riders(home_street_id="", station_id="",
                                             status=RiderStatus.ACTIVE, page_size=10,
                                             page_token="")
        assert [r.rider_id for r in active] == [rider_id]
    finally:
        reopened.close()


def test_a_station_of_another_platform_is_refused(app, tree):
    with as_actor(ADMIN):
        other = app.create_organisation(kind=OrganisationKind.PLATFORM, name="Other",
                                        parent_id="", department_function=None)
    with as_actor(PLATFORM), pytest.raises(InvalidArgument) as error:
        app.register_rider(platform_id=other["organisation_id"], platform_rider_id="R9",
                           name="x", phone="13812345678", national_id="",
                           home_street_id=tree["street"], station_id=tree["station"])
    assert [(v.field, v.reason) for v in error.value.violations] == [
        ("station_id", "STATION_OF_ANOTHER_PLATFORM")]


def test_every_fault_of_a_registration_comes_in_one_answer(app, tree):
    """Formats and what the ids name, together (issue 23); nothing is written."""
    with as_actor(ADMIN):
        other = app.create_organisation(kind=OrganisationKind.PLATFORM, name="Other",
                                        parent_id="", department_function=None)
        other_station = app.create_organisation(
            kind=OrganisationKind.STATION, name="Other station",
            parent_id=other["organisation_id"], department_function=None)["organisation_id"]
        community = app.create_organisation(
            kind=OrganisationKind.COMMUNITY, name="东门社区", parent_id=tree["street"],
            department_function=None)["organisation_id"]
    position = app.last_position()
    with as_actor(PLATFORM), pytest.raises(InvalidArgument) as error:
        app.register_rider(platform_id=tree["platform"], platform_rider_id="R 9", name="",
                           phone="123", national_id="110105194912310020",
                           home_street_id=community, station_id=other_station)
    assert sorted((v.field, v.reason) for v in error.value.violations) == [
        ("home_street_id", "ORGANISATION_KIND_NOT_ALLOWED"), ("name", "FIELD_REQUIRED"),
        ("national_id", "NATIONAL_ID_INVALID"), ("phone", "PHONE_INVALID"),
        ("platform_rider_id", "PLATFORM_RIDER_ID_INVALID"),
        ("station_id", "STATION_OF_ANOTHER_PLATFORM")]
    assert error.value.reason == "INVALID_ARGUMENT"
    assert app.last_position() == position


def test_an_unknown_street_is_not_found_and_nothing_is_written(app, tree):
    position = app.last_position()
    with as_actor(PLATFORM), pytest.raises(NotFound):
        app.register_rider(platform_id=tree["platform"], platform_rider_id="R9", name="x",
                           phone="13812345678", national_id="",
                           home_street_id="00000000-0000-0000-0000-000000000000",
                           station_id=tree["station"])
    assert app.last_position() == position


def test_every_event_records_who_acted_and_why(app, tree):
    register(app, tree, 1, request_id="req-77")
    event = app.to_domain_event(app.read_log(1, 1000)[-2])  # the Registered event
    assert type(event).__qualname__ == "Rider.Registered"
    meta = vars(event)["_meta"]
    assert meta["principal"] == "platform-co"
    assert meta["request_id"] == "req-77"
    assert meta["correlation_id"]


def test_erasing_a_rider_leaves_their_history_replayable_and_others_untouched(app, tree):
    erased_id = register(app, tree, 1)["rider_id"]
    kept_id = register(app, tree, 2, phone="13900000000")["rider_id"]
    app.vault.erase(erased_id)
    with as_actor(ADMIN):
        erased, kept = app.rider(erased_id), app.rider(kept_id)
    assert erased.personal_data_erased
    assert erased.phone == "[erased]" and erased.name == "[erased]"
    assert erased.status is RiderStatus.REGISTERED
    assert kept.phone == "13900000000"


@pytest.mark.postgres
def test_raw_rows_in_postgres_hold_no_phone_or_id_in_clear(postgres_env, tree_pg):
    app, tree = tree_pg
    register(app, tree, 1, phone="13912345678", national_id="11010519491231002X")
    settings = settings_for("identity", postgres_env)
    with psycopg.connect(postgres_conninfo(settings)) as conn:
        rows = conn.execute(
            f'SELECT state FROM "{settings.postgres_schema}".identity_events').fetchall()
    assert rows
    text = b"".join(bytes(r[0]) for r in rows)
    assert b"13912345678" not in text
    assert b"11010519491231002X" not in text
    assert "王小明".encode() not in text


@pytest.fixture
def tree_pg(postgres_env):
    application = IdentityApplication(settings_for("identity", postgres_env), MASTER_KEY)
    city = build_city(in_application(application))
    yield application, {"street": city.street, "platform": city.platform,
                        "station": city.station}
    application.close()


def stored_key(app, subject: str) -> bytes | None:
    found = app.vault._keystore.get(subject)
    return found[0] if found else None


@pytest.mark.postgres
def test_a_new_riders_key_is_stored_by_the_save_that_stores_the_rider(tree_pg, monkeypatch):
    """On PostgreSQL a new rider's data key goes in the statement that stores the rider (one
    round trip for both), not in one of its own before it."""
    app, tree = tree_pg

    def separately(*args, **kwargs):
        raise AssertionError("the key was stored in a statement of its own")
    monkeypatch.setattr(app.vault._keystore, "put_if_absent", separately)
    rider_id = register(app, tree, 1, name="李四")["rider_id"]
    assert stored_key(app, rider_id) is not None
    app.vault._cache.clear()  # opened with the stored key, not one only this process knows
    with as_actor(ADMIN):
        assert app.rider(rider_id).name == "李四"


@pytest.mark.postgres
def test_a_registration_that_stores_nothing_stores_no_key_either(tree_pg):
    """A request id reused for another rider is refused and writes nothing: not the second
    rider's key either (it went with the save that failed). Nor is that key remembered: the
    rider registered afterwards opens with the key stored then, in a fresh process too."""
    app, tree = tree_pg
    register(app, tree, 1, request_id="once")
    position = app.last_position()
    with pytest.raises(InvalidArgument):
        register(app, tree, 2, request_id="once")
    second = str(Rider.create_id(tree["platform"], "R2"))
    assert app.last_position() == position
    assert stored_key(app, second) is None
    rider_id = register(app, tree, 2, request_id="again", name="赵五")["rider_id"]
    assert rider_id == second
    app.vault._cache.clear()
    with as_actor(ADMIN):
        assert app.rider(rider_id).name == "赵五"


@pytest.mark.postgres
def test_a_key_stored_without_its_rider_is_used_not_replaced(tree_pg):
    """A key stored before its rider (by a registration that then failed, before keys went
    with the save) fails the first attempt's save; the next attempt seals with that key."""
    app, tree = tree_pg
    subject = str(Rider.create_id(tree["platform"], "R1"))
    app.vault.fingerprint_key(subject, create=True)  # stores a key at once, as before
    orphan = stored_key(app, subject)
    assert orphan is not None
    rider_id = register(app, tree, 1, name="孙六")["rider_id"]
    assert rider_id == subject and stored_key(app, subject) == orphan
    app.vault._cache.clear()
    with as_actor(ADMIN):
        assert app.rider(rider_id).name == "孙六"


def stored_fingerprint(app, request_id):
    record_id = RequestRecord.create_id(PLATFORM.principal, "RegisterRider", request_id)
    return app.get(record_id, RequestRecord, "request").fingerprint


def test_a_stored_request_record_holds_nothing_that_confirms_a_guess_once_the_rider_is_erased(
        app, tree):
    """Someone with the database and the master key tries names and phones against the
    record of the registration: before erasure the rider's own key would let them; after it,
    nothing stored does (the personal part of the fingerprint is keyed by the rider's data
    key, which erasure destroys)."""
    rider_id = register(app, tree, 7, request_id="req-7", name="李四",
                        phone="13900001111")["rider_id"]
    stored = stored_fingerprint(app, "req-7")
    assert stored.startswith("k1:") and "." in stored
    import hashlib
    assert "13900001111" not in stored and "李四" not in stored
    assert hashlib.sha256(b"13900001111").hexdigest() not in stored

    def guess(name, phone):
        request = ipb.RegisterRiderRequest(
            request_id="req-7", platform_id=tree["platform"], platform_rider_id="R7",
            name=name, phone=phone, home_street_id=tree["street"], station_id=tree["station"])
        with as_actor(PLATFORM, "RegisterRider", "req-7", request=request,
                      access=ACCESS[f"/{SERVICE_NAME}/RegisterRider"]) as ctx:
            return app.fingerprints.of(ctx, create=False)
    assert guess("李四", "13900001111") == stored
    assert guess("李四", "13900002222") != stored
    with as_actor(ADMIN):
        app.erase_rider_personal_data(rider_id=rider_id, reason="本人申请删除")
    assert guess("李四", "13900001111") != stored
    # The registration's retry still answers its first answer and writes nothing.
    position = app.last_position()
    assert register(app, tree, 7, request_id="req-7", name="李四", phone="13900001111")[
        "rider_id"] == rider_id
    assert app.last_position() == position


def test_the_same_request_id_with_other_personal_data_is_another_request(app, tree):
    register(app, tree, 8, request_id="req-8", phone="13900003333")
    with pytest.raises(InvalidArgument) as error:
        register(app, tree, 8, request_id="req-8", phone="13900004444")
    assert [(v.field, v.reason) for v in error.value.violations] == [
        ("request_id", "REQUEST_ID_REUSED")]
