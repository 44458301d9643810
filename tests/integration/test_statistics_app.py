"""The city's figures over real in-process services (tests/inprocess.py) on both stores: what
identity and training record becomes figures by place and period, "as of" a moment stays what
it was after later events (a late result shows as the difference), each event counts once
however often its batch is offered, a tampered event stops the figures there, and each caller
sees its own part of the city."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from services.identity.domain.values import (
    Amenity,
    CareerMilestoneKind,
    DepartmentFunction,
    OrganisationKind,
)
from services.statistics.application import (
    DAY,
    MONTH,
    WHOLE_RANGE,
    FigureQuery,
    Statistics,
    Viewer,
)
from services.statistics.domain.facts import Dimension
from services.statistics.domain.periods import city_day, day_start
from services.statistics.store import Batch, PositionMoved
from services.training.domain.values import (
    CompletionResult,
    CourseFormat,
    InstructorKind,
    Track,
)
from shared.errors import InvalidArgument, NotFound, PermissionDenied
from shared.followers import LocalFeed
from shared.integrity import ALARM, EventMac, audit_key
from shared.tenancy import TenancyDirectory
from tests.conftest import MASTER_KEY, actor, as_actor, badges_key_env, settings_for
from tests.inprocess import InProcessQiji

ADMIN = actor("city", "city_admin")
EVERYTHING = Viewer(everything=True)


class Clock:
    """training's clock, moved by the test (sessions start in its future, riders check in at
    their start); it starts at the real now, as identity's events carry real times."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now


def statistics_for(q: InProcessQiji, env: dict[str, str]) -> Statistics:
    """The figures of `q`'s five services, in a schema of their own on PostgreSQL."""
    own = {**env, "STATISTICS_POSTGRES_SCHEMA": f"s_{uuid.uuid4().hex[:12]}"}
    return Statistics(settings_for("statistics", own),
                      {name: LocalFeed(app) for name, app in q.apps.items()},
                      EventMac(audit_key(MASTER_KEY)),
                      TenancyDirectory(LocalFeed(q.apps["identity"])))


@pytest.fixture
def city(store_env: dict[str, str], tmp_path: Path) -> Iterator[dict[str, Any]]:
    """常州市: 钟楼区 with 荷花池街道 (and its 北大街社区 and 驿站), 天宁区 with 红梅街道; two
    platforms with a station each; the social-work department and the petitions office."""
    q = InProcessQiji({**store_env, **badges_key_env()}, tmp_path / "tokens.json")
    identity, training = q.apps["identity"], q.apps["training"]
    clock = Clock()
    training.clock = clock  # type: ignore[attr-defined]
    w: dict[str, Any] = {"q": q, "clock": clock, "riders": 0}
    with as_actor(ADMIN):
        def org(name: str, kind: OrganisationKind, parent: str = "",
                function: DepartmentFunction | None = None) -> str:
            w[name] = identity.create_organisation(  # type: ignore[attr-defined]
                kind=kind, name=name, parent_id=parent,
                department_function=function)["organisation_id"]
            return w[name]
        org("常州市", OrganisationKind.CITY)
        org("钟楼区", OrganisationKind.DISTRICT, w["常州市"])
        org("荷花池街道", OrganisationKind.STREET, w["钟楼区"])
        org("北大街社区", OrganisationKind.COMMUNITY, w["荷花池街道"])
        org("天宁区", OrganisationKind.DISTRICT, w["常州市"])
        org("红梅街道", OrganisationKind.STREET, w["天宁区"])
        org("骑迹外卖", OrganisationKind.PLATFORM)
        org("荷花池站", OrganisationKind.STATION, w["骑迹外卖"])
        org("别家外卖", OrganisationKind.PLATFORM)
        org("红梅站", OrganisationKind.STATION, w["别家外卖"])
        org("市委社会工作部", OrganisationKind.DEPARTMENT, w["常州市"],
            DepartmentFunction.SOCIAL_WORK)
        org("市信访局", OrganisationKind.DEPARTMENT, w["常州市"], DepartmentFunction.PETITIONS)
        org("江苏理工学院", OrganisationKind.EDUCATION_PROVIDER)
        for street in ("荷花池街道", "红梅街道"):
            w[f"{street}驿站"] = identity.create_service_space(  # type: ignore[attr-defined]
                street_id=w[street], name=f"{street}驿站", address="1 号",
                amenities=[Amenity.REST, Amenity.CHARGING],
                opening_hours=[])["service_space_id"]
    w["stats"] = statistics_for(q, store_env)
    yield w
    w["stats"].close()
    q.close()


def rider(w: dict[str, Any], street: str = "荷花池街道", platform: str = "骑迹外卖",
          station: str = "荷花池站", verify: bool = True) -> str:
    w["riders"] += 1
    with as_actor(actor("platform", "platform", organisation_id=w[platform])):
        ident = w["q"].apps["identity"].register_rider(
            platform_id=w[platform], platform_rider_id=f"R{w['riders']}", name="骑手",
            phone="13812345678", national_id="", home_street_id=w[street],
            station_id=w[station])["rider_id"]
        if verify:
            w["q"].apps["identity"].verify_rider(rider_id=ident)
    return ident


def course(w: dict[str, Any], track: Track, hours: str) -> str:
    training = w["q"].apps["training"]
    with as_actor(ADMIN):
        ident = training.draft_course(
            track=track, title="第一课", description="", hours=hours,
            formats=[CourseFormat.CLASSROOM], provider_id=w["江苏理工学院"],
            instructor_name="张老师", instructor_kind=InstructorKind.TEACHER)["course_id"]
        training.publish_course(course_id=ident)
    return ident


def held_session(w: dict[str, Any], course_id: str, street: str, riders: list[str],
                 passed: list[str]) -> str:
    """A session at `street`'s space starting half an hour from training's now: `riders`
    enrol and check in at its start, `passed` pass; the clock then stands after its end."""
    training, clock = w["q"].apps["training"], w["clock"]
    starts = clock.now + timedelta(minutes=30)
    with as_actor(ADMIN):
        session = training.schedule_session(
            course_id=course_id, service_space_id=w[f"{street}驿站"], starts_at=starts,
            ends_at=starts + timedelta(hours=2), capacity=50)["session_id"]
        for r in riders:
            training.enrol_rider(session_id=session, rider_id=r)
        clock.now = starts + timedelta(minutes=5)
        for r in riders:
            training.check_in_rider(session_id=session, rider_id=r)
        for r in passed:
            training.record_completion(session_id=session, rider_id=r,
                                       result=CompletionResult.PASSED, score=90)
    clock.now = starts + timedelta(hours=2, minutes=1)  # over: the next may be booked
    return session


def around_today(measure: str, dimension: Dimension, granularity: str = WHOLE_RANGE,
                 **fields: Any) -> FigureQuery:
    """Yesterday to two days on, in the city's days: today's events and today's sessions."""
    today = city_day(datetime.now(UTC))
    return FigureQuery(measure=measure, dimension=dimension, granularity=granularity,
                       start=day_start(today - timedelta(days=1)),
                       end=day_start(today + timedelta(days=2)), **fields)


def figures(stats: Statistics, q: FigureQuery, viewer: Viewer = EVERYTHING
            ) -> dict[str, Decimal]:
    """key label -> value (one period)."""
    return {r.key_label: r.value for r in stats.query(q, viewer).rows}


# ---------------------------------------------------------------------------- figures


def test_riders_and_training_become_figures_by_place_and_track(city):
    w, stats = city, city["stats"]
    a, b = rider(w), rider(w)
    c = rider(w, street="红梅街道", platform="别家外卖", station="红梅站")
    rider(w, verify=False)
    with as_actor(ADMIN):
        w["q"].apps["identity"].suspend_rider(rider_id=c, reason="投诉")
        w["q"].apps["identity"].record_career_milestone(
            rider_id=a, kind=CareerMilestoneKind.COMMUNITY_SOCIAL_WORKER,
            organisation_id=w["北大街社区"], effective_at=None, note="")
        w["q"].apps["identity"].record_space_use(
            service_space_id=w["红梅街道驿站"], amenity=Amenity.CHARGING, count=7, day="")
    civic = course(w, Track.CIVIC_EDUCATION, "1.5")
    with as_actor(ADMIN):
        w["q"].apps["training"].set_pre_job_courses(course_ids=[civic])
    w["q"].sync()
    held_session(w, civic, "红梅街道", [a, b], passed=[a, b])
    held_session(w, course(w, Track.SKILLS, "2"), "荷花池街道", [a], passed=[a])
    stats.catch_up()

    assert figures(stats, around_today("riders_registered", Dimension.STREET)) == {
        "荷花池街道": 3, "红梅街道": 1}
    assert figures(stats, around_today("riders_registered", Dimension.DISTRICT)) == {
        "钟楼区": 3, "天宁区": 1}
    assert figures(stats, around_today("riders_verified", Dimension.PLATFORM)) == {
        "骑迹外卖": 2, "别家外卖": 1}
    # Active at the end of the range: verified, not suspended (a stock).
    assert figures(stats, around_today("riders_active", Dimension.CITY)) == {"常州市": 2}
    assert figures(stats, around_today("riders_became_social_worker", Dimension.COMMUNITY)) == {
        "北大街社区": 1}
    assert figures(stats, around_today("space_riders_served", Dimension.STREET)) == {
        "红梅街道": 7}
    # Training counts where the session was held, for the riders' own platform and station.
    assert figures(stats, around_today("training_attendance", Dimension.STREET)) == {
        "红梅街道": 2, "荷花池街道": 1}
    assert figures(stats, around_today("training_hours", Dimension.TRACK)) == {
        "红色思政": Decimal("3"), "技能培训": Decimal("2")}
    assert figures(stats, around_today("training_hours", Dimension.STATION)) == {
        "荷花池站": Decimal("5")}
    assert figures(stats, around_today("training_sessions", Dimension.TRACK)) == {
        "红色思政": 1, "技能培训": 1}
    assert figures(stats, around_today("riders_certified", Dimension.STREET)) == {
        "荷花池街道": 2}
    positions = {p.service: p for p in stats.freshness()}
    assert positions["identity"].position == w["q"].apps["identity"].last_position()
    assert positions["training"].position == w["q"].apps["training"].last_position()


def test_a_stock_carries_each_key_into_the_periods_after_its_facts(city):
    w, stats = city, city["stats"]
    rider(w)
    rider(w)
    stats.catch_up()
    today = city_day(datetime.now(UTC))
    q = FigureQuery("riders_active", Dimension.STREET, DAY, day_start(today),
                    day_start(today + timedelta(days=3)))
    rows = stats.query(q, EVERYTHING).rows
    assert [(r.period_label, r.key_label, r.value) for r in rows] == [
        ((today + timedelta(days=i)).isoformat(), "荷花池街道", 2) for i in range(3)]
    # The flow of the same days: only the day it happened.
    rows = stats.query(replace(q, measure="riders_verified"), EVERYTHING).rows
    assert [(r.period_label, r.value) for r in rows] == [(today.isoformat(), 2)]


def test_figures_as_of_a_moment_stay_what_they_were_after_a_late_result(city):
    """The March figures as they stood on 1 April, beside today's: a result recorded after the
    moment, for a session inside the period, shows only as the difference."""
    w, stats = city, city["stats"]
    a, b = rider(w), rider(w)
    w["q"].sync()
    skills = course(w, Track.SKILLS, "2.25")
    session = held_session(w, skills, "荷花池街道", [a, b], passed=[a])
    stats.catch_up()
    moment = datetime.now(UTC)
    q = around_today("training_hours", Dimension.TRACK, granularity=DAY, as_of=moment)
    before = stats.query(q, EVERYTHING)
    assert [(r.key_label, r.value, r.current_value) for r in before.rows] == [
        ("技能培训", Decimal("2.25"), Decimal("2.25"))]
    assert before.as_of == moment

    with as_actor(ADMIN):  # the late result: b passed, recorded after the moment
        w["q"].apps["training"].record_completion(session_id=session, rider_id=b,
                                                  result=CompletionResult.PASSED, score=70)
    rider(w)
    stats.catch_up()
    after = stats.query(q, EVERYTHING)
    assert [(r.period_label, r.key_label, r.value) for r in after.rows] == [
        (r.period_label, r.key_label, r.value) for r in before.rows]
    assert [r.current_value for r in after.rows] == [Decimal("4.5")]
    now = stats.query(replace(q, as_of=None), EVERYTHING)
    assert [(r.value, r.current_value) for r in now.rows] == [(Decimal("4.5"), None)]


def test_a_rebuild_gives_the_same_figures(city):
    w, stats = city, city["stats"]
    a = rider(w)
    w["q"].sync()
    held_session(w, course(w, Track.PERSONAL_DEVELOPMENT, "1"), "红梅街道", [a], passed=[a])
    stats.catch_up()
    queries = [around_today(m.name, Dimension.CITY) for m in stats.measures()
               if m.service in ("identity", "training")]
    before = [stats.query(q, EVERYTHING).rows for q in queries]
    assert stats.rebuild() > 0
    assert [stats.query(q, EVERYTHING).rows for q in queries] == before


# ---------------------------------------------------------------------------- exactly once


def test_a_batch_offered_twice_counts_once(city):
    """A crash after the facts were written but before the position moved cannot happen (one
    transaction); a batch read again after its commit finds the position moved and writes
    nothing."""
    w, stats = city, city["stats"]
    rider(w)
    stats.catch_up()
    tracked = stats.store.tracked()["identity"]
    replayed = Batch("identity", after=0, through=tracked.position)
    with pytest.raises(PositionMoved):
        stats.store.commit(replayed)
    assert figures(stats, around_today("riders_registered", Dimension.CITY)) == {"常州市": 1}


def test_a_crash_after_the_facts_before_the_position_leaves_nothing(city, monkeypatch):
    """The facts, rollup and memory of a batch are written, then the process dies before the
    tracking position moves: the transaction takes them all back, and the batch read again
    counts once."""
    w, stats = city, city["stats"]
    rider(w)
    real = stats.store._q

    def crash_at_the_position(statement: str) -> str:
        if statement.startswith("UPDATE tracking SET position"):
            raise RuntimeError("crashed before the position moved")
        return real(statement)

    monkeypatch.setattr(stats.store, "_q", crash_at_the_position)
    with pytest.raises(RuntimeError):
        stats.catch_up()
    monkeypatch.setattr(stats.store, "_q", real)
    assert stats.store.tracked()["identity"].position == 0
    with stats.store._read() as cur:
        cur.execute("SELECT COUNT(*) FROM facts")
        assert cur.fetchone()[0] == 0
        cur.execute("SELECT COUNT(*) FROM memory")
        assert cur.fetchone()[0] == 0
    stats.catch_up()
    stats.catch_up()
    assert figures(stats, around_today("riders_registered", Dimension.CITY)) == {"常州市": 1}


@pytest.mark.parametrize("store_env", ["postgres"], indirect=True)
def test_two_projections_racing_count_each_event_once(city, store_env):
    """Two replicas (no leadership between them) read the same logs at once on PostgreSQL:
    the tracking row's lock and check let each batch through once."""
    w = city
    for _ in range(12):
        rider(w)
    w["q"].sync()
    first = w["stats"]
    second = Statistics(first.settings, {n: LocalFeed(a) for n, a in w["q"].apps.items()},
                        EventMac(audit_key(MASTER_KEY)),
                        TenancyDirectory(LocalFeed(w["q"].apps["identity"])))
    try:
        start = threading.Barrier(4)
        errors: list[BaseException] = []

        def follow(stats: Statistics) -> None:
            try:
                start.wait()
                for _ in range(5):
                    stats.catch_up()
            except BaseException as error:  # reported below
                errors.append(error)

        threads = [threading.Thread(target=follow, args=(s,))
                   for s in (first, second, first, second)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert figures(first, around_today("riders_registered", Dimension.CITY)) == {
            "常州市": 12}
        assert figures(second, around_today("riders_verified", Dimension.CITY)) == {
            "常州市": 12}
    finally:
        second.close()


# ---------------------------------------------------------------------------- integrity


def test_a_tampered_event_stops_the_figures_there(city, store_env):
    w, stats = city, city["stats"]
    rider(w)
    stats.catch_up()
    bad = rider(w)
    rider(w)
    identity = w["q"].apps["identity"]
    position = _tamper(identity, bad, store_env)
    try:
        stats.catch_up()
        assert ALARM.stopped_at("identity", "statistics") == position
        # Nothing at or after the bad event counts.
        assert stats.store.tracked()["identity"].position == position - 1
        assert figures(stats, around_today("riders_registered", Dimension.CITY)) == {
            "常州市": 1}
    finally:
        ALARM.withdraw("identity", "statistics")


def _tamper(app: Any, rider_id: str, env: dict[str, str]) -> int:
    """Rewrites the stored state of a rider's registration (a forgery in the database): its MAC
    no longer matches. Returns its position."""
    recorder = app.recorder
    stored = recorder.select_events(uuid.UUID(rider_id), lte=1)[0]
    forged = stored.state.replace(b'"R2"', b'"R9"')
    assert forged != stored.state
    if env.get("QIJI_PERSISTENCE") == "postgres":
        table = f'"{recorder.datastore.schema}"."{recorder.events_table_name}"'
        with recorder.datastore.transaction(commit=True) as curs:
            curs.execute(f"UPDATE {table} SET state = %s WHERE originator_id = %s "
                         "AND originator_version = 1 RETURNING notification_id",
                         (forged, uuid.UUID(rider_id)))
            return int(curs.fetchone()["notification_id"])
    table = recorder.events_table_name
    with recorder.datastore.transaction(commit=True) as c:
        c.execute(f"UPDATE {table} SET state = ? WHERE originator_id = ? "
                  "AND originator_version = 1", (forged, uuid.UUID(rider_id).hex))
        c.execute(f"SELECT rowid FROM {table} WHERE originator_id = ? "
                  "AND originator_version = 1", (uuid.UUID(rider_id).hex,))
        return int(c.fetchone()[0])


# ---------------------------------------------------------------------------- scopes


def test_each_caller_sees_its_own_part_of_the_city(city):
    w, stats = city, city["stats"]
    rider(w)
    rider(w, street="红梅街道", platform="别家外卖", station="红梅站")
    stats.catch_up()
    q = around_today("riders_registered", Dimension.STREET)

    def seen(*roles: str, organisation: str = "") -> dict[str, Decimal]:
        who = actor("caller", *roles, organisation_id=w[organisation] if organisation else "")
        return figures(stats, q, stats.viewer(who))

    assert seen("auditor") == {"荷花池街道": 1, "红梅街道": 1}
    assert seen("department", organisation="市委社会工作部") == {"荷花池街道": 1, "红梅街道": 1}
    assert seen("street_office", organisation="红梅街道") == {"红梅街道": 1}
    assert seen("platform", organisation="骑迹外卖") == {"荷花池街道": 1}
    assert seen("community", organisation="北大街社区") == {}
    for refused in (("department", "市信访局"), ("education_provider", "江苏理工学院")):
        with pytest.raises(PermissionDenied) as error:
            seen(refused[0], organisation=refused[1])
        assert error.value.reason == "OUT_OF_SCOPE"
    with pytest.raises(PermissionDenied):
        seen("public_reader")
    # A drill-down stays inside the caller's scope.
    street = stats.viewer(actor("s", "street_office", organisation_id=w["红梅街道"]))
    assert figures(stats, replace(q, within=w["红梅街道"]), street) == {"红梅街道": 1}
    with pytest.raises(PermissionDenied) as error:
        stats.query(replace(q, within=w["荷花池街道"]), street)
    assert error.value.reason == "OUT_OF_SCOPE"
    # The city drills down into a district.
    assert figures(stats, replace(q, within=w["天宁区"])) == {"红梅街道": 1}


def test_a_query_with_faults_is_refused_with_every_fault(city):
    stats = city["stats"]
    now = datetime.now(UTC)
    with pytest.raises(InvalidArgument) as error:
        stats.query(FigureQuery("no_such_measure", Dimension.CITY, "HOURLY", now,
                                now - timedelta(days=1), as_of=now + timedelta(days=1),
                                within="not-a-uuid", page_size=-1), EVERYTHING)
    reasons = {(v.field, v.reason) for v in error.value.violations}
    assert reasons == {("measure", "MEASURE_UNKNOWN"),
                       ("granularity", "ENUM_VALUE_REQUIRED"),
                       ("as_of_time", "AS_OF_IN_FUTURE"),
                       ("within_organisation_id", "INVALID_ID"),
                       ("page_size", "PAGE_SIZE_NEGATIVE")}
    with pytest.raises(InvalidArgument) as error:
        stats.query(FigureQuery("training_sessions", Dimension.STATION, DAY, now,
                                now + timedelta(days=400)), EVERYTHING)
    assert {v.reason for v in error.value.violations} == {"DIMENSION_NOT_APPLICABLE",
                                                          "RANGE_TOO_LONG"}
    with pytest.raises(NotFound):
        stats.query(FigureQuery("riders_registered", Dimension.CITY, MONTH, now,
                                now + timedelta(days=1), within=str(uuid.uuid4())),
                    EVERYTHING)


def test_pages_follow_one_another_and_a_token_is_tied_to_its_query(city):
    w, stats = city, city["stats"]
    for street in ("荷花池街道", "红梅街道"):
        rider(w, street=street)
    stats.catch_up()
    today = city_day(datetime.now(UTC))
    q = FigureQuery("riders_active", Dimension.STREET, DAY, day_start(today),
                    day_start(today + timedelta(days=3)), page_size=4)
    first = stats.query(q, EVERYTHING)
    assert len(first.rows) == 4 and first.next_page_token
    rider(w)  # arrives between the pages: the listing stands at its first page's moment
    stats.catch_up()
    second = stats.query(replace(q, page_token=first.next_page_token), EVERYTHING)
    assert len(second.rows) == 2 and not second.next_page_token
    assert second.as_of == first.as_of
    assert all(r.value == 1 for r in first.rows + second.rows)
    assert stats.count(q, EVERYTHING) == 6
    assert list(stats.figures(q, EVERYTHING)) != []
    with pytest.raises(InvalidArgument) as error:
        stats.query(replace(q, measure="riders_registered", page_token=first.next_page_token),
                    EVERYTHING)
    assert error.value.reason == "PAGE_TOKEN_FILTERS_CHANGED"
    with pytest.raises(InvalidArgument) as error:
        stats.query(replace(q, page_token="garbage!"), EVERYTHING)
    assert error.value.reason == "PAGE_TOKEN_INVALID"


def test_the_leader_follows_the_logs_until_stopped(city):
    """run_forever: as the one leader (a file lock or an advisory lock), the figures keep up
    with the services; stopped, it stands down and its alarms go with it."""
    w, stats = city, city["stats"]
    stopping = threading.Event()
    leader = threading.Thread(target=stats.run_forever, args=(stopping, 0.05), daemon=True)
    leader.start()
    try:
        rider(w)
        q = around_today("riders_registered", Dimension.CITY)
        for _ in range(200):
            if figures(stats, q) == {"常州市": 1}:
                break
            stopping.wait(0.05)
        assert figures(stats, q) == {"常州市": 1}
    finally:
        stopping.set()
        leader.join(10)
    assert not leader.is_alive()
