"""The three rates (GetServiceRates) from governance's log, on SQLite and PostgreSQL: a
department's, a street's and a district's response, resolution and satisfaction over a period,
as the log stood at any moment — March's figures as reported on 1 April stay exactly as they
were while today's view of March takes the corrections recorded since — and, over the wire, only
to whoever may read that unit.

Events are stamped with the test's clock here (`recorded_on_the_clock`), as they are with the
wall clock in production: "as of 1 April" is what was recorded by the clock's 1 April."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import eventsourcing.domain
import grpc
import pytest
from qiji.governance.v1 import governance_service_pb2 as gpb

from services.governance.application import ServiceRatesView
from services.governance.domain.rates import RULES, RULES_VERSION, Rate
from services.governance.domain.values import Category, RejectionReason, ReportKind
from shared.errors import InvalidArgument, NotFound
from tests.conftest import actor, as_actor

# governance's world (a city, a district with two streets, departments, riders) and its clock:
# the imported fixtures provide them.
from tests.integration.test_governance_app import (  # noqa: F401
    LAT,
    clock,
    new_rider,
    open_governance,
    standard_rules,
    submit,
    work,
    world,
)
from tests.integration.test_tenancy import a_world
from tests.tenancy_world import World, ts

ADMIN = actor("city", "city_admin")
MINUTE, HOUR, DAY = timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)
KM = 0.01  # of latitude, about 1.1 km: reports this far apart are never one incident


@pytest.fixture
def recorded_on_the_clock(monkeypatch, clock):  # noqa: F811
    """Each stored event's time is the test's clock, moved on first past every event the world
    was made with, so that the log's times only grow."""
    clock.now += DAY
    monkeypatch.setattr(eventsourcing.domain, "datetime_now_with_tzinfo", lambda: clock.now)
    return clock


class Month:
    """A period of thirty days from the clock's now: "March", ending at "1 April"."""

    def __init__(self, clock) -> None:  # noqa: F811
        self.start = clock.now
        self.end = self.start + 30 * DAY


def rates(w, month: Month, as_of=None, **unit: str) -> ServiceRatesView:
    with as_actor(ADMIN):
        return w["governance"].service_rates(
            department_id=unit.get("department_id", ""), street_id=unit.get("street_id", ""),
            district_id=unit.get("district_id", ""), start=month.start, end=month.end,
            as_of=as_of)


def acknowledge(w, report_id: str) -> None:
    work(w, "police", report_id, "acknowledge_assignment")


def resolve(w, report_id: str) -> None:
    work(w, "police", report_id, "start_assignment_work", note="")
    work(w, "police", report_id, "resolve_assignment", resolution="已处置")


def test_march_as_reported_on_1_april_stays_so_while_todays_march_takes_later_corrections(
        world, recorded_on_the_clock):  # noqa: F811
    """Emergencies go to the police, to be acknowledged within 15 minutes. In March: one is
    acknowledged in ten minutes and resolved, one acknowledged after forty minutes, one comes in
    five minutes before the month ends. On 1 April the month is reported; on 3 April the late
    one is resolved and the last one acknowledged — late. The figures as of 1 April never
    change; today's view of March shows both corrections; April's report is not March's."""
    city_clock = recorded_on_the_clock
    standard_rules(world)
    rider, march = new_rider(world), Month(recorded_on_the_clock)
    police = {"department_id": world["police"]}

    city_clock.now = march.start + HOUR
    quick = submit(world, rider, lat=LAT)["report_id"]
    city_clock.now += 10 * MINUTE
    acknowledge(world, quick)
    resolve(world, quick)
    city_clock.now = march.start + 2 * DAY
    slow = submit(world, rider, lat=LAT + KM)["report_id"]
    city_clock.now += 40 * MINUTE
    acknowledge(world, slow)
    city_clock.now = march.end - 5 * MINUTE
    last = submit(world, rider, lat=LAT + 2 * KM)["report_id"]  # due 10 minutes into April

    city_clock.now = reported = march.end + 5 * MINUTE
    then = rates(world, march, reported, **police)
    assert then.as_of == reported
    assert (then.rates.assignments, then.rates.response, then.rates.awaiting_response,
            then.rates.resolution, then.rates.open) == (3, Rate(1, 2), 1, Rate(1, 1), 2)
    assert then.rates.response.percent == 50
    assert (then.rules_version, then.rules) == (RULES_VERSION, RULES)

    city_clock.now = march.end + 2 * DAY
    resolve(world, slow)
    acknowledge(world, last)
    submit(world, rider, lat=LAT + 3 * KM)  # April's

    today = rates(world, march, **police)
    assert today.as_of == city_clock.now
    assert (today.rates.assignments, today.rates.response, today.rates.awaiting_response,
            today.rates.resolution, today.rates.open) == (3, Rate(1, 3), 0, Rate(2, 2), 1)
    assert rates(world, march, reported, **police) == then
    # The street where it all happened says the same of its reports (all the police's here).
    street = rates(world, march, reported, street_id=world["street"])
    assert street.rates == then.rates
    assert street.street_id == world["street"] and not street.department_id

    # Restarted, governance rebuilds its views from the log: the same figures, both ways.
    world["governance"].close()
    world["governance"] = open_governance(world["env"], city_clock, world["identity"])
    assert rates(world, march, reported, **police) == then
    assert rates(world, march, **police).rates == today.rates


def test_reading_the_rates_writes_nothing(world, recorded_on_the_clock):  # noqa: F811
    standard_rules(world)
    march = Month(recorded_on_the_clock)
    submit(world, new_rider(world))
    recorded_on_the_clock.now += HOUR
    world["governance"].catch_up_upstream()
    before = world["governance"].last_position()
    rates(world, march, department_id=world["police"])
    rates(world, march, march.start + MINUTE, district_id=world["district"])
    assert world["governance"].last_position() == before


def test_as_of_a_moment_before_a_report_was_made_it_is_not_there(
        world, recorded_on_the_clock):  # noqa: F811
    city_clock = recorded_on_the_clock
    standard_rules(world)
    rider, march = new_rider(world), Month(city_clock)
    city_clock.now = march.start + HOUR
    first = submit(world, rider)["report_id"]
    city_clock.now += 5 * MINUTE
    acknowledge(world, first)
    city_clock.now = march.start + 2 * DAY
    submit(world, rider, lat=LAT + KM)
    city_clock.now += HOUR
    police = {"department_id": world["police"]}
    assert rates(world, march, march.start + DAY, **police).rates.assignments == 1
    assert rates(world, march, march.start + DAY, **police).rates.response == Rate(1, 1)
    assert rates(world, march, march.start + 30 * MINUTE, **police).rates.assignments == 0
    assert rates(world, march, **police).rates.assignments == 2


def test_a_department_a_street_and_a_district_each_count_their_own(
        world, recorded_on_the_clock):  # noqa: F811
    """Emergencies go to the police (at the district), the rest to the street's social work;
    one report in the other street. The district is both streets; a department its own
    assignments in either street."""
    city_clock = recorded_on_the_clock
    standard_rules(world)
    rider, march = new_rider(world), Month(city_clock)
    city_clock.now += HOUR
    fire = submit(world, rider)["report_id"]
    hazard = submit(world, rider, kind=ReportKind.ANOMALY_WARNING, category=Category.OTHER,
                    lat=LAT + KM)["report_id"]
    elsewhere = submit(world, rider, street=world["other_street"], lat=LAT + 2 * KM)[
        "report_id"]
    city_clock.now += 5 * MINUTE
    for report in (fire, elsewhere):
        acknowledge(world, report)
        resolve(world, report)
    work(world, "social", hazard, "reject_assignment", reason=RejectionReason.NOT_ACTIONABLE,
         note="")
    city_clock.now += HOUR

    police = rates(world, march, department_id=world["police"]).rates
    social = rates(world, march, department_id=world["social"]).rates
    street = rates(world, march, street_id=world["street"]).rates
    district = rates(world, march, district_id=world["district"]).rates
    assert (police.assignments, police.resolution) == (2, Rate(2, 2))
    assert (social.assignments, social.resolution, social.response) == (
        1, Rate(0, 1), Rate(1, 1))
    assert (street.assignments, street.resolution) == (2, Rate(1, 2))
    assert (district.assignments, district.resolution, district.response) == (
        3, Rate(2, 3), Rate(3, 3))
    # No rating is kept yet on these reports: each is reached, none rated, no rate.
    assert (district.reports, district.satisfaction, district.satisfaction.percent) == (
        3, Rate(0, 0), None)


# ---------------------------------------------------------------------------- bad questions


def ask(w, **fields):
    values = {"department_id": "", "street_id": "", "district_id": "", "start": None,
              "end": None, "as_of": None, **fields}
    with as_actor(ADMIN):
        return w["governance"].service_rates(**values)


def refused(w, **fields) -> set[tuple[str, str]]:
    w["governance"].catch_up_upstream()  # identity's organisations noted: not the question's
    before = w["governance"].last_position()
    with pytest.raises(InvalidArgument) as error:
        ask(w, **fields)
    assert w["governance"].last_position() == before
    return {(v.field, v.reason) for v in error.value.violations}


def test_each_fault_of_the_question_is_named_in_one_answer(world, clock):  # noqa: F811
    now = clock.now
    month = {"start": now - 30 * DAY, "end": now}
    assert refused(world, **month) == {("department_id", "UNIT_REQUIRED")}
    assert refused(world, department_id=world["police"], street_id=world["street"],
                   district_id=world["district"], **month) == {
        ("street_id", "MORE_THAN_ONE_UNIT"), ("district_id", "MORE_THAN_ONE_UNIT")}
    assert refused(world, district_id=world["street"], **month) == {
        ("district_id", "ORGANISATION_KIND_NOT_ALLOWED")}
    assert refused(world, street_id="not-an-id", **month) == {("street_id", "INVALID_ID")}
    assert refused(world, department_id=world["police"]) == {
        ("start_time", "FIELD_REQUIRED"), ("end_time", "FIELD_REQUIRED")}
    assert refused(world, department_id=world["police"], start=now, end=now - DAY) == {
        ("end_time", "END_TIME_NOT_AFTER_START_TIME")}
    assert refused(world, department_id=world["police"], start=now - 367 * DAY, end=now) == {
        ("end_time", "PERIOD_TOO_LONG")}
    assert refused(world, department_id=world["police"], start=now + DAY,
                   end=now + 2 * DAY) == {("start_time", "TIME_IN_THE_FUTURE")}
    assert refused(world, department_id=world["police"], as_of=now + MINUTE, **month) == {
        ("as_of_time", "TIME_IN_THE_FUTURE")}
    assert refused(world, department_id=world["police"], as_of=now - 31 * DAY, **month) == {
        ("as_of_time", "AS_OF_BEFORE_START")}
    # Everything at once: one answer.
    assert refused(world, street_id=world["district"], start=now, end=now - DAY,
                   as_of=now + DAY) == {
        ("street_id", "ORGANISATION_KIND_NOT_ALLOWED"),
        ("end_time", "END_TIME_NOT_AFTER_START_TIME"), ("as_of_time", "TIME_IN_THE_FUTURE")}


def test_a_year_is_not_too_long_a_leap_year_neither(world, clock):  # noqa: F811
    found = ask(world, district_id=world["district"], start=clock.now - 366 * DAY,
                end=clock.now)
    assert found.rates.assignments == 0


@pytest.mark.parametrize("field", ["department_id", "street_id", "district_id"])
def test_a_unit_that_does_not_exist_is_not_found(world, clock, field):  # noqa: F811
    unknown = "5b0b276e-3dca-4072-bc38-1c35fa3f20b2"
    with pytest.raises(NotFound) as error:
        ask(world, **{field: unknown}, start=clock.now - DAY, end=clock.now)
    assert error.value.reason == f"{field.removesuffix('_id').upper()}_NOT_FOUND"


# ---------------------------------------------------------------------------- on the wire


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def tenants(store: str, request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield from a_world(store, request, tmp_path_factory)


@pytest.mark.postgres
def test_each_reads_the_rates_of_what_it_is_and_the_city_every_units(tenants: World) -> None:
    """A department its own, a street office its own street's; neither another's, nor a
    district's (no role acts for a district: the city-wide readers read it)."""
    q, a, b = tenants.qiji, tenants.tenants["a"], tenants.tenants["b"]
    now = q.apps["governance"].clock()
    period = {"start_time": ts(now - DAY), "end_time": ts(now + DAY)}

    def ask_as(token: str, **unit: str):
        return q.call("governance", "GetServiceRates",
                      gpb.GetServiceRatesRequest(**unit, **period), token)

    own = ask_as(tenants.token("a", "department"), department_id=a.department)
    assert own.ok, own
    found = own.response.service_rates
    # The world's report of A's rider, routed to A's street's department, not acknowledged.
    assert (found.department_id, found.assignments, found.awaiting_response,
            found.open_assignments) == (a.department, 1, 1, 1)
    assert (found.response_rate.denominator, found.response_rate.percent) == (0, "")
    assert (found.rules_version, list(found.rules)) == (RULES_VERSION, list(RULES))
    office = ask_as(tenants.token("a", "street_office"), street_id=a.street)
    assert office.ok and office.response.service_rates.assignments == 1
    for token, unit in (
            (tenants.token("b", "department"), {"department_id": a.department}),
            (tenants.token("b", "street_office"), {"street_id": a.street}),
            (tenants.token("a", "platform"), {"street_id": a.street})):
        theirs = ask_as(token, **unit)
        assert theirs.code == grpc.StatusCode.PERMISSION_DENIED, (unit, theirs)
        assert a.report not in theirs.message
    # A department names itself, a street office its street: each in its own field.
    for token, unit, field in (
            (tenants.token("a", "department"), {"street_id": a.street}, "department_id"),
            (tenants.token("a", "street_office"), {"department_id": a.department},
             "street_id"),
            (tenants.token("a", "street_office"), {"district_id": tenants.district},
             "street_id")):
        told = ask_as(token, **unit)
        assert (told.code, told.reason, told.fields) == (
            grpc.StatusCode.INVALID_ARGUMENT, "FIELD_REQUIRED", [field]), (unit, told)
    # Its own street and the district besides: admitted on the street, then refused as two.
    both = ask_as(tenants.token("a", "street_office"), street_id=a.street,
                  district_id=tenants.district)
    assert (both.code, both.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["district_id"])
    district = q.ok("governance", "GetServiceRates", gpb.GetServiceRatesRequest(
        district_id=tenants.district, **period), tenants.auditor).service_rates
    assert (district.district_id, district.assignments) == (tenants.district, 2)
    assert b.street not in {district.department_id, district.street_id}


def test_a_transferred_report_counts_for_the_receiver_from_the_transfer_on(
        world, recorded_on_the_clock):  # noqa: F811
    """The police acknowledge an emergency and hand it to the political-legal committee (转派),
    which acknowledges and resolves it: the police responded and resolved nothing (the
    transferred assignment is in neither count of resolution); the committee's figures hold
    the report from the transfer on; the street counts both assignments."""
    city_clock = recorded_on_the_clock
    standard_rules(world)
    month = Month(city_clock)
    city_clock.now = month.start + HOUR
    report_id = submit(world, new_rider(world))["report_id"]
    city_clock.now += 5 * MINUTE
    acknowledge(world, report_id)
    city_clock.now += HOUR
    before_transfer = city_clock.now - MINUTE
    work(world, "police", report_id, "transfer_assignment", to_department_id=world["legal"],
         reason="属政法委职责")
    city_clock.now += 10 * MINUTE
    work(world, "legal", report_id, "acknowledge_assignment")
    work(world, "legal", report_id, "start_assignment_work", note="")
    work(world, "legal", report_id, "resolve_assignment", resolution="已调解")
    city_clock.now = month.end + DAY

    police = rates(world, month, department_id=world["police"]).rates
    assert (police.assignments, police.response, police.resolution, police.transferred) == (
        1, Rate(1, 1), Rate(0, 0), 1)
    legal = rates(world, month, department_id=world["legal"]).rates
    assert (legal.assignments, legal.response, legal.resolution) == (1, Rate(1, 1), Rate(1, 1))
    street = rates(world, month, street_id=world["street"]).rates
    assert (street.assignments, street.response, street.resolution) == (
        2, Rate(2, 2), Rate(1, 1))
    # As the log stood before the transfer, the committee had nothing.
    assert rates(world, month, as_of=before_transfer,
                 department_id=world["legal"]).rates.assignments == 0


def test_the_rates_read_while_departments_work_are_whole_figures_every_time(
        world, clock):  # noqa: F811
    """Four clerks acknowledge reports while the city reads the police's rates over and over
    (threads; on PostgreSQL, each command its own connection): every reading is a whole
    figure — each report either responded to or awaiting, none lost or counted twice — and
    the last reading counts every acknowledgement."""
    standard_rules(world)
    rider, month = new_rider(world), Month(clock)
    reports = [submit(world, rider, lat=LAT + n * KM)["report_id"] for n in range(12)]
    police = {"department_id": world["police"]}
    errors: list[BaseException] = []
    readings = []
    done = threading.Event()

    def clerk(mine: list[str]) -> None:
        try:
            for report_id in mine:
                acknowledge(world, report_id)
        except BaseException as error:  # reported by the assertion below
            errors.append(error)

    def reader() -> None:
        try:
            while not done.is_set():
                readings.append(rates(world, month, **police).rates)
        except BaseException as error:  # reported by the assertion below
            errors.append(error)

    clerks = [threading.Thread(target=clerk, args=(reports[n::4],)) for n in range(4)]
    watching = threading.Thread(target=reader)
    watching.start()
    for t in clerks:
        t.start()
    for t in clerks:
        t.join()
    done.set()
    watching.join()
    assert not errors
    assert readings
    for reading in readings:
        assert reading.assignments == 12
        assert reading.response.denominator + reading.awaiting_response == 12
        assert reading.response.numerator == reading.response.denominator
    final = rates(world, month, **police).rates
    assert (final.response, final.awaiting_response) == (Rate(12, 12), 0)
