"""Read models rebuilt through the bulk scan (shared/replay.py) are the ones built live, and
the scan reads every stored event as the library's mapper does. Pages are made tiny here so
that a small log crosses many of them (the scan is what a rebuild of a long log takes)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from services.identity.application import IdentityApplication
from shared import replay, views
from tests.conftest import MASTER_KEY, settings_for
from tests.integration.test_audit import ADMIN, as_actor, build


@pytest.fixture
def small_pages(monkeypatch):
    monkeypatch.setattr(views, "BATCH", 4)
    monkeypatch.setattr(replay, "PAGE", 3)


@pytest.fixture
def app(store_env):
    application = IdentityApplication(settings_for("identity", store_env), MASTER_KEY)
    yield application
    application.close()


def test_a_read_model_rebuilt_through_the_scan_equals_the_one_built_live(
        app, store_env, small_pages):
    riders = build(app, 6)
    with as_actor(ADMIN):
        app.verify_rider(rider_id=riders[0])
        app.suspend_rider(rider_id=riders[1], reason="x")
        app.reinstate_rider(rider_id=riders[1], reason="y")
        app.record_rider_left(rider_id=riders[2], reason="z")
    app.views.catch_up()
    live = (app.views.riders.snapshot(), app.views.organisations.snapshot())
    assert len(live[0]) == 6 and app.last_position() > 3 * views.BATCH
    rebuilt = IdentityApplication(settings_for("identity", store_env), MASTER_KEY)
    try:
        assert rebuilt.views.position == app.last_position()
        assert (rebuilt.views.riders.snapshot(), rebuilt.views.organisations.snapshot()) == live
        # ... and it keeps following: what is stored later is applied on the next catch-up.
        more = build(app, 1)
        assert rebuilt.views.catch_up() > 0
        assert more[0] in {row[1] for row in rebuilt.views.riders.snapshot()}
    finally:
        rebuilt.close()


def test_the_scan_reads_every_event_as_the_library_mapper_does(app, small_pages):
    build(app, 3)
    expected = [(n.id, app.mapper.to_domain_event(n)) for n in app.read_log(1, 10_000)]
    scanned = list(replay.scan(app, 1))
    assert [p for p, _ in scanned] == [p for p, _ in expected]
    for (_, got), (_, want) in zip(scanned, expected, strict=True):
        assert type(got) is type(want) and vars(got) == vars(want)
    assert [p for p, _ in replay.scan(app, expected[5][0])] == [p for p, _ in expected[5:]]


def test_a_scan_left_half_way_stops_its_reader(app, small_pages):
    build(app, 3)
    events = replay.scan(app, 1)
    next(events)
    events.close()
    assert not [t for t in threading.enumerate() if t.name.endswith("-replay")]


@contextmanager
def events_table(app: Any, store_env: dict[str, str]) -> Iterator[tuple[Any, str]]:
    """An administrator's own connection to the service's events table, and its name."""
    import psycopg
    table = f'"{store_env["QIJI_POSTGRES_SCHEMA"]}"."{app.recorder.events_table_name}"'
    with psycopg.connect(dbname=store_env["QIJI_POSTGRES_DBNAME"], host=store_env[
            "QIJI_POSTGRES_HOST"], user=store_env["QIJI_POSTGRES_USER"],
            autocommit=True) as conn:
        yield conn, table


def change_a_byte(conn: Any, table: str, position: int) -> None:
    conn.execute(f"UPDATE {table} SET state = set_byte(state, 3, ascii('X')) "
                 "WHERE notification_id = %s", (position,))


@pytest.mark.postgres
@pytest.mark.parametrize("store_env", ["postgres"], indirect=True)
def test_the_scan_checks_every_mac_a_changed_byte_or_a_mac_moved_to_another_row_stops_it(
        app, store_env, small_pages):
    # The scan checks the usual row's MAC inline (not through EventMac.check): a row whose
    # bytes changed, or which carries another row's state and MAC, stops it at that row.
    from shared.integrity import EventIntegrityError
    build(app, 3)
    rows = [(n.id, n.state) for n in app.read_log(1, 10_000)]
    changed, moved = rows[4][0], rows[7][0]
    with events_table(app, store_env) as (conn, table):
        change_a_byte(conn, table, changed)
        with pytest.raises(EventIntegrityError) as first:
            list(replay.scan(app, 1))
        assert first.value.position == changed
        conn.execute(f"UPDATE {table} SET state = %s WHERE notification_id = %s",
                     (rows[4][1], changed))
        assert len(list(replay.scan(app, 1))) == len(rows)  # repaired: all of it again
        conn.execute(f"UPDATE {table} SET state = %s WHERE notification_id = %s",
                     (rows[6][1], moved))
        with pytest.raises(EventIntegrityError) as second:
            list(replay.scan(app, 1))
        assert second.value.position == moved


def test_a_scan_told_what_a_view_reads_decodes_only_those_and_passes_every_position(
        app, small_pages):
    # A view that reads riders only: every other event comes as (position, None), undecoded,
    # in its place, so the view's position still moves over it.
    from services.identity.domain.model import Rider
    build(app, 3)
    everything = list(replay.scan(app, 1))
    some = list(replay.scan(app, 1, reads=lambda cls: issubclass(cls, Rider.Event)))
    assert [p for p, _ in some] == [p for p, _ in everything]
    riders = [(p, e) for p, e in everything if isinstance(e, Rider.Event)]
    assert riders and len(riders) < len(everything)  # the log holds other events too
    assert [(p, e) for p, e in some if e is not None] == [
        (p, e) for p, e in riders]
    for (_, got), (_, want) in zip([x for x in some if x[1] is not None], riders, strict=True):
        assert type(got) is type(want) and vars(got) == vars(want)


def test_a_view_told_what_it_reads_is_built_as_one_that_reads_everything(app, small_pages):
    from services.identity.domain.model import Rider
    build(app, 3)
    applied_all: list[tuple[int, str]] = []
    applied_some: list[tuple[int, str]] = []
    everything = views.LogFollower(app, "all", lambda p, e: applied_all.append(
        (p, type(e).__qualname__)) if isinstance(e, Rider.Event) else None)
    some = views.LogFollower(app, "some", lambda p, e: applied_some.append(
        (p, type(e).__qualname__)), reads=(Rider.Event,))
    everything.catch_up()
    some.catch_up()
    assert applied_some == applied_all and applied_all
    assert some.position == everything.position == app.last_position()


@pytest.mark.postgres
@pytest.mark.parametrize("store_env", ["postgres"], indirect=True)
def test_an_event_a_view_does_not_read_is_still_mac_checked(app, store_env, small_pages):
    # Skipping the decode never skips the check: a changed byte in an event of a class the
    # view does not read stops the scan at that row all the same.
    from services.identity.domain.model import Rider
    from shared.integrity import EventIntegrityError
    build(app, 3)
    skipped = [p for p, e in replay.scan(app, 1) if not isinstance(e, Rider.Event)]
    changed = skipped[len(skipped) // 2]
    with events_table(app, store_env) as (conn, table):
        change_a_byte(conn, table, changed)
    with pytest.raises(EventIntegrityError) as stopped:
        list(replay.scan(app, 1, reads=lambda cls: issubclass(cls, Rider.Event)))
    assert stopped.value.position == changed


def test_a_view_never_sees_the_request_records_and_still_passes_their_positions(
        app, small_pages):
    # Request records (the first answer of each command) are no view's data: a view is not
    # handed them (nor are they decoded), but its position moves over them.
    from shared.context import RequestContext, acting_as
    from shared.idempotency import RequestRecord
    from tests.integration.test_audit import PLATFORM, city
    orgs = city(app)
    for n in range(3):  # commands with request ids: each stores its record
        with acting_as(RequestContext(actor=PLATFORM, request_id=f"r-{n}")):
            app.register_rider(
                platform_id=orgs["platform"], platform_rider_id=f"R{n}", name="骑手",
                phone="13800000000", national_id="", home_street_id=orgs["street"],
                station_id=orgs["station"])
    stored = list(replay.scan(app, 1))
    records = [p for p, e in stored if isinstance(e, RequestRecord.Event)]
    assert records  # the commands stored their records
    seen: list[tuple[int, object]] = []
    view = views.LogFollower(app, "all", lambda p, e: seen.append((p, e)))
    view.catch_up()
    assert [p for p, _ in seen] == [p for p, e in stored if p not in records]
    assert not [e for _, e in seen if isinstance(e, RequestRecord.Event)]
    assert view.position == app.last_position()


def test_a_view_that_fails_to_apply_an_event_reads_it_again_without_a_false_alarm(app):
    """A view's own fault applying an event (a bug in it, a resource gone for a moment) is
    raised to the query that caught up, and the next catch-up reads the event again: its
    version must not be taken for one that comes twice, which would stop the view with an
    integrity alarm over an intact log."""
    from shared.integrity import ALARM
    failing = {"left": 0}
    seen: list[int] = []

    def apply(position: int, event: object) -> None:
        if failing["left"]:
            failing["left"] -= 1
            raise ValueError("the view's own fault")
        seen.append(position)
    build(app, 1)
    view = views.LogFollower(app, "flaky", apply)
    view.catch_up()  # past the start of the log: what it remembers of the aggregates counts
    build(app, 1)
    failing["left"] = 1
    with pytest.raises(ValueError):
        view.catch_up()
    view.catch_up()  # reads it again, and applies it
    assert view.position == app.last_position()
    assert not ALARM.stopped_at(app.name, f"{app.name}.view.flaky")
