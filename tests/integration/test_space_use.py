"""Visits (到访) over a real store, on SQLite and PostgreSQL: a space's street office records
that riders used its amenities — counts only — and the street reads which spaces serve
riders."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from qiji.identity.v1 import identity_service_pb2 as ipb

from services.identity.application import IdentityApplication
from services.identity.domain.model import SpaceUseDay
from services.identity.domain.values import Amenity, OrganisationKind
from services.identity.grpc_api import ACCESS, SERVICE_NAME
from shared.errors import Aborted, FailedPrecondition, InvalidArgument, NotFound
from shared.values import city_day
from tests.conftest import MASTER_KEY, actor, as_actor, city_tree, settings_for

ADMIN = actor("city", "city_admin")
TODAY = city_day(datetime.now(UTC))


def open_app(env, clock=None) -> IdentityApplication:
    return IdentityApplication(settings_for("identity", env), MASTER_KEY, clock=clock)


@pytest.fixture
def app(store_env):
    application = open_app(store_env)
    yield application
    application.close()


@pytest.fixture
def spaces(app):
    """Two spaces of 荷花池街道 (one offering rest, charging and water, one only rest) and one
    of another street."""
    made = city_tree(app)
    with as_actor(ADMIN):
        made["other_street"] = app.create_organisation(
            kind=OrganisationKind.STREET, name="西林街道", parent_id=made["district"],
            department_function=None)["organisation_id"]

        def space(street: str, name: str, *amenities: Amenity) -> str:
            return app.create_service_space(street_id=street, name=name, address="路1号",
                                            amenities=list(amenities), opening_hours=[]
                                            )["service_space_id"]
        made["space"] = space(made["street"], "外卖人才联合服务空间", Amenity.REST,
                              Amenity.CHARGING, Amenity.DRINKING_WATER)
        made["quiet_space"] = space(made["street"], "小驿站", Amenity.REST)
        made["other_space"] = space(made["other_street"], "西林驿站", Amenity.REST)
    return made


def record(app, space, amenity=Amenity.REST, count=1, day="", request_id=None):
    """RecordSpaceUse as the guard hands it to the application: the request (which the kernel
    fingerprints for a retry) in the context."""
    request_id = request_id or str(uuid.uuid4())
    request = ipb.RecordSpaceUseRequest(
        request_id=request_id, service_space_id=space,
        amenity=ipb.Amenity.Value(f"AMENITY_{amenity.value}") if amenity else 0, count=count,
        day=day)
    with as_actor(ADMIN, "RecordSpaceUse", request_id, request=request,
                  access=ACCESS[f"/{SERVICE_NAME}/RecordSpaceUse"]):
        return app.record_space_use(service_space_id=space, amenity=amenity, count=count,
                                    day=day)


def faults(error: pytest.ExceptionInfo) -> dict[str, str]:
    return {v.field: v.reason for v in error.value.violations}


def test_uses_add_up_by_day_and_amenity_and_the_answer_is_the_days_counts(app, spaces):
    record(app, spaces["space"], Amenity.REST, 3)
    record(app, spaces["space"], Amenity.CHARGING, 2)
    answer = record(app, spaces["space"], Amenity.REST, 4)
    assert answer == {"service_space_id": spaces["space"], "day": TODAY.isoformat(),
                      "counts": {"REST": 7, "CHARGING": 2}}
    use = app.space_use(service_space_id=spaces["space"], from_day="", to_day="")
    assert (use.from_day, use.to_day) == (TODAY - timedelta(days=29), TODAY)
    assert use.days == [(TODAY, {Amenity.REST: 7, Amenity.CHARGING: 2})]
    assert use.totals == {Amenity.REST: 7, Amenity.CHARGING: 2}


def test_a_past_day_after_the_space_opened_counts_on_that_day(store_env, spaces, app):
    later = open_app(store_env, clock=lambda: datetime.now(UTC) + timedelta(days=3))
    try:
        tomorrow = (TODAY + timedelta(days=1)).isoformat()
        record(later, spaces["space"], Amenity.DRINKING_WATER, 5, day=tomorrow)
        record(later, spaces["space"], Amenity.DRINKING_WATER, 1)
        use = later.space_use(service_space_id=spaces["space"], from_day=TODAY.isoformat(),
                              to_day="")
        assert [(d.isoformat(), c) for d, c in use.days] == [
            (tomorrow, {Amenity.DRINKING_WATER: 5}),
            ((TODAY + timedelta(days=3)).isoformat(), {Amenity.DRINKING_WATER: 1})]
        assert use.totals == {Amenity.DRINKING_WATER: 6}
    finally:
        later.close()


def test_every_fault_of_a_recording_is_told_at_once_and_nothing_is_stored(app, spaces):
    position = app.last_position()
    with pytest.raises(InvalidArgument) as error:
        record(app, spaces["space"], None, 501, day=(TODAY + timedelta(days=1)).isoformat())
    assert faults(error) == {"amenity": "ENUM_VALUE_REQUIRED", "count": "VALUE_OUT_OF_RANGE",
                             "day": "DAY_IN_THE_FUTURE"}
    with pytest.raises(InvalidArgument) as error:
        record(app, spaces["space"], day=(TODAY - timedelta(days=1)).isoformat())
    assert faults(error) == {"day": "DAY_BEFORE_SPACE_OPENED"}
    with pytest.raises(InvalidArgument) as error:
        record(app, "not-an-id", count=0, day="2026-02-30")
    assert faults(error) == {"service_space_id": "INVALID_ID", "count": "VALUE_OUT_OF_RANGE",
                             "day": "DAY_INVALID"}
    assert app.last_position() == position


def test_an_amenity_the_space_does_not_offer_is_a_failed_precondition(app, spaces):
    with pytest.raises(FailedPrecondition) as error:
        record(app, spaces["quiet_space"], Amenity.CHARGING)
    assert error.value.reason == "AMENITY_NOT_OFFERED"


def test_use_of_no_space_is_not_found(app, spaces):
    with pytest.raises(NotFound):
        record(app, str(uuid.uuid4()))
    with pytest.raises(NotFound):
        app.space_use(service_space_id=str(uuid.uuid4()), from_day="", to_day="")


def test_a_retry_with_the_same_request_id_counts_once_and_answers_the_first_answer(
        app, spaces):
    first = record(app, spaces["space"], Amenity.REST, 2, request_id="visit-1")
    position = app.last_position()
    assert record(app, spaces["space"], Amenity.REST, 2, request_id="visit-1") == first
    assert app.last_position() == position
    with pytest.raises(InvalidArgument) as error:
        record(app, spaces["space"], Amenity.REST, 3, request_id="visit-1")
    assert faults(error) == {"request_id": "REQUEST_ID_REUSED"}
    assert app.space_use(service_space_id=spaces["space"], from_day="",
                         to_day="").totals == {Amenity.REST: 2}


def test_the_street_lists_every_space_of_its_own_with_its_totals(app, spaces):
    record(app, spaces["space"], Amenity.REST, 3)
    record(app, spaces["space"], Amenity.CHARGING, 2)
    record(app, spaces["other_space"], Amenity.REST, 9)
    listed, token, period = app.list_space_use(street_id=spaces["street"], from_day="",
                                               to_day="", page_size=0, page_token="")
    assert token == "" and period == (TODAY - timedelta(days=29), TODAY)
    assert [(u.name, u.totals) for u in listed] == [
        ("外卖人才联合服务空间", {Amenity.REST: 3, Amenity.CHARGING: 2}), ("小驿站", {})]
    first, token, _ = app.list_space_use(street_id=spaces["street"], from_day="", to_day="",
                                         page_size=1, page_token="")
    rest, last, _ = app.list_space_use(street_id=spaces["street"], from_day="", to_day="",
                                       page_size=1, page_token=token)
    assert [u.service_space_id for u in first + rest] == [spaces["space"],
                                                          spaces["quiet_space"]]
    assert last == ""
    with pytest.raises(InvalidArgument) as error:  # a token is bound to its period
        app.list_space_use(street_id=spaces["street"], from_day=TODAY.isoformat(),
                           to_day="", page_size=1, page_token=token)
    assert faults(error) == {"page_token": "PAGE_TOKEN_FILTERS_CHANGED"}


def test_a_bad_period_is_told_in_one_answer(app, spaces):
    with pytest.raises(InvalidArgument) as error:
        app.space_use(service_space_id="x", from_day="2026-13-01", to_day="2026/06/01")
    assert faults(error) == {"service_space_id": "INVALID_ID", "from_day": "DAY_INVALID",
                             "to_day": "DAY_INVALID"}
    with pytest.raises(InvalidArgument) as error:
        app.list_space_use(street_id=spaces["street"], from_day="2026-06-05",
                           to_day="2026-06-04", page_size=-1, page_token="")
    assert faults(error) == {"from_day": "PERIOD_REVERSED", "page_size": "PAGE_SIZE_NEGATIVE"}
    with pytest.raises(InvalidArgument) as error:
        app.space_use(service_space_id=spaces["space"], from_day="2025-01-01",
                      to_day="2026-01-02")
    assert faults(error) == {"to_day": "PERIOD_TOO_LONG"}


def test_the_counts_are_rebuilt_from_the_log_after_a_restart(store_env, app, spaces):
    record(app, spaces["space"], Amenity.REST, 3)
    record(app, spaces["space"], Amenity.CHARGING, 2)
    reopened = open_app(store_env)
    try:
        assert reopened.space_use(service_space_id=spaces["space"], from_day="", to_day=""
                                  ).totals == {Amenity.REST: 3, Amenity.CHARGING: 2}
    finally:
        reopened.close()


@pytest.mark.postgres
def test_recordings_at_once_on_one_space_and_day_all_count(postgres_env):
    """20 threads × 5 recordings on one space-day, over two replicas of one store: within a
    replica they queue; between the two they collide, and the loser re-reads and adds (and,
    after eight collisions in a row, answers ABORTED for the client to retry). Every one
    counts, none twice."""
    first, second = open_app(postgres_env), open_app(postgres_env)
    try:
        space = city_tree_space(first)
        barrier = threading.Barrier(20)
        errors: list[Exception] = []

        def visits(n: int) -> None:
            replica = (first, second)[n % 2]
            barrier.wait()
            try:
                for _ in range(5):
                    # As a client does: ABORTED (it kept colliding) is retried with the same
                    # request id, which counts it once whichever attempt got in.
                    request_id = str(uuid.uuid4())
                    for _attempt in range(5):
                        try:
                            record(replica, space, Amenity.REST, 1, request_id=request_id)
                            break
                        except Aborted:
                            continue
                    else:
                        raise AssertionError("ABORTED five times in a row")
            except Exception as e:
                errors.append(e)

        threads = [threading.Thread(target=visits, args=(n,)) for n in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        for replica in (first, second):
            assert replica.space_use(service_space_id=space, from_day="", to_day=""
                                     ).totals == {Amenity.REST: 100}
        day = first.get(SpaceUseDay.create_id(space, TODAY.isoformat()), SpaceUseDay,
                        "space_use")
        assert (day.counts, day.version) == ({"REST": 100}, 101)  # Started, 100 × UseRecorded
    finally:
        first.close()
        second.close()


def city_tree_space(app: IdentityApplication) -> str:
    tree = city_tree(app)
    with as_actor(ADMIN):
        return app.create_service_space(street_id=tree["street"], name="驿站", address="路1号",
                                        amenities=[Amenity.REST], opening_hours=[]
                                        )["service_space_id"]
