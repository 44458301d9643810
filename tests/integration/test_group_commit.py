"""Group commit against PostgreSQL: concurrent saves share commits, and still every
acknowledged save is stored once, conflicts fail alone, and notification order has no gaps."""

from __future__ import annotations

import threading
import uuid
from collections import Counter

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent, Tracking

from services.identity.application import IdentityApplication
from shared import metrics
from shared.store import GroupCommitRecorder, RowsBeside, postgres_conninfo
from tests.conftest import MASTER_KEY, actor, as_actor, city_tree, settings_for

THREADS = 24


@pytest.fixture
def app(postgres_env):
    application = IdentityApplication(settings_for("identity", postgres_env), MASTER_KEY)
    yield application
    application.close()


def event(originator: uuid.UUID, version: int) -> StoredEvent:
    return StoredEvent(originator_id=originator, originator_version=version,
                       topic="tests:Probe", state=b'{"n":1}')


def batches_seen(schema: str) -> tuple[float, float]:
    """(saves, commits) the batch histogram has counted for a schema so far."""
    samples = {s.name: s.value for m in metrics.REGISTRY.collect()
               if m.name == "qiji_commit_batch_saves" for s in m.samples
               if s.labels.get("schema") == schema}
    return samples.get("qiji_commit_batch_saves_sum", 0.0), samples.get(
        "qiji_commit_batch_saves_count", 0.0)


def hammer(recorder, saves: list[list[StoredEvent]], tracking: list[Tracking | None] | None = None
           ) -> list[object]:
    """Submits every save from its own thread, all released at once; returns what each got."""
    results: list[object] = [None] * len(saves)
    start = threading.Barrier(len(saves))

    def save(index: int) -> None:
        start.wait()
        kwargs = {"tracking": tracking[index]} if tracking else {}
        try:
            results[index] = recorder.insert_events(saves[index], **kwargs)
        except IntegrityError as error:
            results[index] = error

    threads = [threading.Thread(target=save, args=(i,)) for i in range(len(saves))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def stored_rows(app) -> list[tuple[uuid.UUID, int, int]]:
    settings = app.settings
    with psycopg.connect(postgres_conninfo(settings)) as conn:
        return conn.execute(
            f'SELECT originator_id, originator_version, notification_id '
            f'FROM "{settings.postgres_schema}".identity_events ORDER BY notification_id'
        ).fetchall()


def test_the_postgres_store_uses_group_commit(app):
    assert isinstance(app.recorder, GroupCommitRecorder)


def test_concurrent_saves_are_all_stored_once_in_gap_free_order(app):
    before = batches_seen(app.settings.postgres_schema)
    rounds = 5
    for _ in range(rounds):
        saves = [[event(o, 1), event(o, 2)] for o in (uuid.uuid4() for _ in range(THREADS))]
        results = hammer(app.recorder, saves)
        assert all(isinstance(r, list) and len(r) == 2 for r in results), results
        for ids in results:
            assert ids[1] == ids[0] + 1  # a save's events are adjacent in the log
        # Each save is answered its own events' positions, whatever order the batch took.
        stored = {r[2]: (r[0], r[1]) for r in stored_rows(app)}
        for save, ids in zip(saves, results, strict=True):
            assert [stored[i] for i in ids] == [(e.originator_id, e.originator_version)
                                                for e in save]
    rows = stored_rows(app)
    assert len(rows) == rounds * THREADS * 2
    positions = [r[2] for r in rows]
    assert positions == list(range(positions[0], positions[0] + len(positions)))  # no gaps
    saves, commits = (a - b for a, b in zip(batches_seen(app.settings.postgres_schema), before,
                                            strict=True))
    assert saves == rounds * THREADS
    assert commits < saves  # commits were shared: the point of it


def test_a_conflicting_save_fails_alone_and_the_rest_of_its_batch_commits(app):
    taken = [uuid.uuid4() for _ in range(THREADS // 2)]
    app.recorder.insert_events([event(o, 1) for o in taken])
    # Half the saves collide with what is stored, half are new; all arrive together.
    fresh = [uuid.uuid4() for _ in range(THREADS // 2)]
    saves = [[event(o, 1)] for o in taken] + [[event(o, 1)] for o in fresh]
    results = hammer(app.recorder, saves)
    assert all(isinstance(r, IntegrityError) for r in results[: len(taken)])
    assert all(isinstance(r, list) and len(r) == 1 for r in results[len(taken):])
    stored = Counter(r[0] for r in stored_rows(app))
    assert set(stored) == set(taken) | set(fresh)
    assert set(stored.values()) == {1}


def test_two_writers_racing_for_one_version_one_wins(app):
    originator = uuid.uuid4()
    results = hammer(app.recorder, [[event(originator, 1)] for _ in range(THREADS)])
    assert sum(isinstance(r, list) for r in results) == 1
    assert sum(isinstance(r, IntegrityError) for r in results) == THREADS - 1
    assert [r[0] for r in stored_rows(app)].count(originator) == 1


def test_tracking_records_are_kept_with_their_events_and_refused_twice(app):
    # Followers of different upstreams react at the same moment; one reaction is a redelivery
    # of a position its follower has already recorded.
    app.recorder.insert_events([event(uuid.uuid4(), 1)], tracking=Tracking("redelivered", 5))
    saves = [[event(uuid.uuid4(), 1)] for _ in range(THREADS)]
    tracking = [Tracking(f"upstream-{n}", 1) for n in range(THREADS)]
    tracking[-1] = Tracking("redelivered", 5)
    results = hammer(app.recorder, saves, tracking)
    assert [isinstance(r, IntegrityError) for r in results] == [False] * (THREADS - 1) + [True]
    assert len(stored_rows(app)) == 1 + THREADS - 1  # the redelivery's events went with it
    assert all(app.recorder.max_tracking_id(f"upstream-{n}") == 1 for n in range(THREADS - 1))
    assert app.recorder.max_tracking_id("redelivered") == 5


KEY_COLUMNS = (("subject_id", "text"), ("wrapped_key", "bytea"), ("created_at", "text"))


def key_row(subject: str) -> RowsBeside:
    """A row of the data-key table (which identity has), as a new rider's key goes."""
    return RowsBeside("personal_data_keys", KEY_COLUMNS, ((subject, b"k-" + subject.encode(),
                                                           "2026-12-07T00:00:00+00:00"),))


def stored_keys(app) -> set[str]:
    settings = app.settings
    with psycopg.connect(postgres_conninfo(settings)) as conn:
        return {r[0] for r in conn.execute(
            f'SELECT subject_id FROM "{settings.postgres_schema}".personal_data_keys')}


def test_rows_beside_commit_with_their_save_or_not_at_all(app):
    """A new rider's key goes in the statement that stores the events sealed with it: both are
    stored, or, when either conflicts, neither."""
    taken = uuid.uuid4()
    assert len(app.recorder.insert_events([event(taken, 1)], beside=[key_row("a")])) == 1
    assert stored_keys(app) == {"a"}
    # The events conflict: the key is not stored.
    with pytest.raises(IntegrityError):
        app.recorder.insert_events([event(taken, 1)], beside=[key_row("b")])
    # The key is taken (a subject registered or erased before): the events are not stored.
    fresh = uuid.uuid4()
    with pytest.raises(IntegrityError):
        app.recorder.insert_events([event(fresh, 1)], beside=[key_row("a")])
    assert stored_keys(app) == {"a"}
    assert [r[0] for r in stored_rows(app)] == [taken]


def test_a_save_whose_rows_beside_conflict_fails_alone_in_its_batch(app):
    """Saves arriving together are written in one statement; one whose key is taken makes it
    fail, and then, written one savepoint each, fails alone: the others keep their keys."""
    app.recorder.insert_events([event(uuid.uuid4(), 1)], beside=[key_row("taken")])
    originators = [uuid.uuid4() for _ in range(THREADS)]
    subjects = [f"s{n}" for n in range(THREADS - 1)] + ["taken"]
    results: list[object] = [None] * THREADS
    start = threading.Barrier(THREADS)

    def save(n: int) -> None:
        start.wait()
        try:
            results[n] = app.recorder.insert_events([event(originators[n], 1)],
                                                    beside=[key_row(subjects[n])])
        except IntegrityError as error:
            results[n] = error

    threads = [threading.Thread(target=save, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert [isinstance(r, IntegrityError) for r in results] == [False] * (THREADS - 1) + [True]
    assert stored_keys(app) == set(subjects)
    stored = {r[0] for r in stored_rows(app)}
    assert set(originators[:-1]) <= stored and originators[-1] not in stored


def test_commands_through_the_application_under_concurrency(app):
    """What a caller sees: every registration acknowledged is stored, once."""
    tree = city_tree(app)
    street, platform, station = tree["street"], tree["platform"], tree["station"]
    acknowledged: list[str] = []
    start = threading.Barrier(THREADS)

    def register(n: int) -> None:
        with as_actor(actor("platform-co", "platform"), "RegisterRider", f"req-{n}"):
            start.wait()
            result = app.register_rider(
                platform_id=platform, platform_rider_id=f"R{n:04d}", name="骑手",
                phone="13812345678", national_id="", home_street_id=street, station_id=station)
            acknowledged.append(result["rider_id"])

    threads = [threading.Thread(target=register, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(set(acknowledged)) == THREADS
    rows = stored_rows(app)
    positions = [r[2] for r in rows]
    assert positions == list(range(1, len(positions) + 1))
    for rider_id in acknowledged:
        assert app.rider(rider_id).rider_id == rider_id

