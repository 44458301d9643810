"""The figures' store on both databases: a figure "as of" any moment is exactly the sum of the
facts recorded by then, whether it reads the daily rollup, the day's own facts or both; by any
period, key and filter."""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.statistics.domain.periods import (
    DAY,
    GRANULARITIES,
    bucket,
    day_number,
    periods,
)
from services.statistics.store import (
    DIMENSION_COLUMNS,
    Batch,
    Filter,
    StoredFact,
    micros,
    open_store,
)
from shared.values import CITY_TIME
from tests.conftest import settings_for

ORIGIN = datetime(2026, 3, 1, tzinfo=CITY_TIME)
STREETS = ("street-a", "street-b", "")
STATIONS = ("station-1", "station-2")


@pytest.fixture
def store(store_env: dict[str, str], tmp_path: Path):
    env = {**store_env, "STATISTICS_POSTGRES_SCHEMA": f"s_{uuid.uuid4().hex[:12]}"}
    s = open_store(settings_for("statistics", env))
    s.ensure_services(["identity"])
    yield s
    s.close()


facts_strategy = st.lists(st.tuples(
    st.integers(0, 60 * 24 * 40),  # effective: minutes after the origin
    st.integers(0, 60 * 24 * 10),  # recorded this many minutes after it
    st.integers(-3, 5), st.sampled_from(STREETS), st.sampled_from(STATIONS)),
    min_size=1, max_size=40)


def stored(measure: str, position: int, effective: int, lag: int, value: int, street: str,
           station: str) -> StoredFact:
    effective_at = ORIGIN + timedelta(minutes=effective)
    recorded_at = effective_at + timedelta(minutes=lag)
    dims = dict.fromkeys(DIMENSION_COLUMNS, "")
    dims.update(street_id=street, station_id=station)
    return StoredFact(measure, value, micros(effective_at), micros(recorded_at),
                      day_number(effective_at), day_number(recorded_at),
                      tuple(dims[c] for c in DIMENSION_COLUMNS), "identity", position)


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(facts=facts_strategy, granularity=st.sampled_from(GRANULARITIES),
       as_of_minutes=st.one_of(st.none(), st.integers(0, 60 * 24 * 52)),
       scope=st.sampled_from([(), ("street-a",), ("street-a", "street-b")]),
       key_name=st.sampled_from(["street", "station", "city"]), batches=st.integers(1, 4))
def test_figures_as_of_any_moment_are_the_facts_recorded_by_then(
        store, facts, granularity, as_of_minutes, scope, key_name, batches):
    """Whichever rollup answers (by one dimension: unfiltered, filtered on the key's own
    dimension, or one figure of one filter; else by every dimension)."""
    measure = f"m{uuid.uuid4().hex[:8]}"  # each example its own measure: one store for all
    rows = [stored(measure, 0, *f) for f in facts]
    start = ORIGIN + timedelta(days=2)
    end = ORIGIN + timedelta(days=35)
    cut = periods(granularity, start, end)
    for chunk in (rows[i::batches] for i in range(batches)):
        if not chunk:
            continue
        after = store.tracked()["identity"].position
        through = after + len(chunk)
        store.expect("identity", after)
        store.commit(Batch("identity", after=after, through=through, facts=chunk))
    as_of = ORIGIN + timedelta(minutes=as_of_minutes) if as_of_minutes is not None else None
    filters = [[Filter("street_id", scope)]] if scope else []
    key = {"street": "street_id", "station": "station_id", "city": None}[key_name]
    got = store.sums(measure, key, cut, granularity, filters, as_of)
    expected: dict[tuple[int, str], list[int]] = defaultdict(lambda: [0, 0])
    for f in rows:
        b = bucket(cut, f.effective_day)
        street = f.dims[DIMENSION_COLUMNS.index("street_id")]
        if b is None or (scope and street not in scope):
            continue
        k = f.dims[DIMENSION_COLUMNS.index(key)] if key else ""
        expected[(b, k)][1] += f.value
        if as_of is None or f.recorded_at <= micros(as_of):
            expected[(b, k)][0] += f.value
    # A key whose facts sum to nothing may be left out or shown as 0: both are 0.
    assert {k: v for k, v in got.items() if any(v)} == {
        k: tuple(v) for k, v in expected.items() if any(v)}
    opening = store.sums(measure, None, cut, granularity, filters, as_of, before=True)
    assert sum(then for then, _ in opening.values()) == sum(
        f.value for f in rows if f.effective_day < cut[0].first_day
        and (not scope or f.dims[DIMENSION_COLUMNS.index("street_id")] in scope)
        and (as_of is None or f.recorded_at <= micros(as_of)))


def test_one_rollup_row_holds_a_days_facts_of_one_key(store):
    facts = [stored("riders_registered", p, 60 * 24, 5, 1, "street-a", "station-1")
             for p in range(1, 101)]
    store.commit(Batch("identity", after=0, through=100, facts=facts))
    with store._read() as cur:
        cur.execute("SELECT COUNT(*), SUM(value), SUM(facts) FROM rollup")
        assert cur.fetchone() == (1, 100, 100)
    cut = periods(DAY, ORIGIN, ORIGIN + timedelta(days=3))
    assert store.sums("riders_registered", None, cut, DAY, [], None) == {(1, ""): (100, 100)}
    assert store.sums("riders_registered", None, cut, DAY, [[Filter("street_id", ())]],
                      None) == {}


def test_a_large_batch_merges_its_rollup_in_one_go_and_adds_to_what_is_there(store):
    """A rebuild's batch (thousands of keys: PostgreSQL copies them in and merges) adds to the
    rows already there exactly as small batches do."""
    def batch_of(after: int, value: int) -> Batch:
        facts = [stored("riders_registered", 0, 60 * 24 * (n % 30), 0, value,
                        f"street-{n}", "station-1") for n in range(3000)]
        return Batch("identity", after=after, through=after + 1, facts=facts)
    store.commit(batch_of(0, 1))
    store.commit(batch_of(1, 2))
    with store._read() as cur:
        cur.execute("SELECT COUNT(*), SUM(value), SUM(facts) FROM rollup")
        assert cur.fetchone() == (3000, 9000, 6000)
    cut = periods(DAY, ORIGIN, ORIGIN + timedelta(days=30))
    sums = store.sums("riders_registered", "street_id", cut, DAY, [], None)
    assert len(sums) == 3000 and set(sums.values()) == {(3, 3)}
