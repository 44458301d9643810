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
       batches=st.integers(1, 4))
def test_figures_as_of_any_moment_are_the_facts_recorded_by_then(
        store, facts, granularity, as_of_minutes, scope, batches):
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
    got = store.sums(measure, "street_id", cut, granularity, filters, as_of)
    expected: dict[tuple[int, str], int] = defaultdict(int)
    for f in rows:
        b = bucket(cut, f.effective_day)
        street = f.dims[DIMENSION_COLUMNS.index("street_id")]
        if b is None or (as_of is not None and f.recorded_at > micros(as_of)):
            continue
        if scope and street not in scope:
            continue
        expected[(b, street)] += f.value
    # A key whose facts sum to nothing may be left out or shown as 0: both are 0.
    assert {k: v for k, v in got.items() if v} == {k: v for k, v in expected.items() if v}
    opening = store.sums(measure, None, cut, granularity, [], as_of, before=True)
    assert sum(opening.values()) == sum(
        f.value for f in rows if f.effective_day < cut[0].first_day
        and (as_of is None or f.recorded_at <= micros(as_of)))


def test_one_rollup_row_holds_a_days_facts_of_one_key(store):
    facts = [stored("riders_registered", p, 60 * 24, 5, 1, "street-a", "station-1")
             for p in range(1, 101)]
    store.commit(Batch("identity", after=0, through=100, facts=facts))
    with store._read() as cur:
        cur.execute("SELECT COUNT(*), SUM(value), SUM(facts) FROM rollup")
        assert cur.fetchone() == (1, 100, 100)
    cut = periods(DAY, ORIGIN, ORIGIN + timedelta(days=3))
    assert store.sums("riders_registered", None, cut, DAY, [], None) == {(1, ""): 100}
    assert store.sums("riders_registered", None, cut, DAY, [[Filter("street_id", ())]],
                      None) == {}
