"""What the city's figures cost (issue 18): queries of the statistics read model over a year of
a city — BENCH_STATISTICS_RIDERS riders (100,000) and about 20 facts each (some 2 million) —
on PostgreSQL in a scratch database (BENCH_STATISTICS_STORE=sqlite: a scratch folder).

Set-up: a city of 7 districts, 63 streets, 189 communities, 3 platforms with 150 stations; a
year (2026 in the city's time) of riders registered, verified, suspended and leaving, 20,000
training sessions on the four tracks with their enrolments, check-ins, completions and hours,
certifications and the service spaces' daily use. 3% of results are recorded days after the
session (late corrections). The facts are loaded straight into the store through the same
commit the projection uses (facts, rollup and tracking in one transaction per batch).

Figures, p50 and p99 of BENCH_STATISTICS_CALLS calls each, in milliseconds, for several
measure × dimension × granularity cases, now and as of a moment (1 July, noon: the "as
reported" figures, with today's beside them):
- qiji: Statistics.query, the whole answer (checks, the rollup's sums, stock running totals,
  labels, ordering, the first page);
- raw baseline, same run: one SQL aggregate over the facts table itself (with an index on
  measure and effective day, so it is no straw man) giving the same sums by period and key,
  with recorded_at <= the moment for "as of"."""

from __future__ import annotations

import os
import random
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import partial
from typing import Any

from bench.common import PG, Figure, print_figures, scratch_database
from services.statistics.application import (
    DAY,
    MONTH,
    WEEK,
    WHOLE_RANGE,
    FigureQuery,
    Statistics,
    Viewer,
)
from services.statistics.domain import catalogue
from services.statistics.domain.facts import Dimension
from services.statistics.domain.periods import day_start, periods
from services.statistics.store import (
    DIMENSION_COLUMNS,
    Batch,
    OrganisationRow,
    StoredFact,
    _bucket,
    micros,
)
from shared.config import load_settings
from shared.integrity import EventMac, audit_key
from shared.values import CITY_TIME

RIDERS = int(os.environ.get("BENCH_STATISTICS_RIDERS", "100000"))
CALLS = int(os.environ.get("BENCH_STATISTICS_CALLS", "30"))
STORE = os.environ.get("BENCH_STATISTICS_STORE", "postgres")
# Facts written per transaction while loading (a rebuild's batches are as large).
LOAD_BATCH = 50_000
YEAR = date(2026, 1, 1)
DAYS = 365
AS_OF = datetime(2026, 7, 1, 12, 0, tzinfo=CITY_TIME)
TRACKS = ("CIVIC_EDUCATION", "SKILLS", "PERSONAL_DEVELOPMENT", "GRASSROOTS_GOVERNANCE")
EVERYTHING = Viewer(everything=True)


def uid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


@dataclass
class City:
    organisations: list[OrganisationRow]
    districts: list[str]
    streets: list[str]
    communities: dict[str, list[str]]
    stations_of_street: dict[str, list[str]]
    platform_of: dict[str, str]
    district_of: dict[str, str]
    platforms: list[str]


def make_city(rng: random.Random) -> City:
    orgs: list[OrganisationRow] = []

    def org(kind: str, name: str, parent: str = "", function: str = "") -> str:
        ident = uid(rng)
        orgs.append(OrganisationRow(ident, kind, name, parent, function))
        return ident
    city = org("CITY", "常州市")
    org("DEPARTMENT", "市委社会工作部", city, "SOCIAL_WORK")
    districts = [org("DISTRICT", name, city) for name in
                 ("钟楼区", "天宁区", "新北区", "武进区", "金坛区", "溧阳市", "经开区")]
    streets: list[str] = []
    district_of: dict[str, str] = {}
    communities: dict[str, list[str]] = {}
    for d in districts:
        for _ in range(9):
            s = org("STREET", f"街道{len(streets) + 1}", d)
            streets.append(s)
            district_of[s] = d
            communities[s] = [org("COMMUNITY", f"社区{len(streets)}-{k}", s) for k in range(3)]
    platforms = [org("PLATFORM", name) for name in ("骑迹外卖", "飞毛腿", "闪送达")]
    platform_of: dict[str, str] = {}
    stations_of_street: dict[str, list[str]] = {s: [] for s in streets}
    for n in range(150):
        platform = platforms[n % 3]
        station = org("STATION", f"站点{n + 1}", platform)
        platform_of[station] = platform
        # A station serves the riders of a few neighbouring streets.
        for s in rng.sample(streets, 3):
            stations_of_street[s].append(station)
    for s in streets:
        if not stations_of_street[s]:
            stations_of_street[s].append(rng.choice(list(platform_of)))
    return City(orgs, districts, streets, communities, stations_of_street, platform_of,
                district_of, platforms)


def moment(day: int, minute: int) -> datetime:
    return day_start(YEAR + timedelta(days=day)) + timedelta(minutes=minute)


def facts_of_a_year(city: City, rng: random.Random) -> Iterator[tuple[str, StoredFact]]:
    """(service, fact) for a year of the city, about 20 facts a rider."""
    index = {c: i for i, c in enumerate(DIMENSION_COLUMNS)}

    def fact(measure: str, value: int, effective: datetime, recorded: datetime,
             **dims: str) -> StoredFact:
        row = [""] * len(DIMENSION_COLUMNS)
        for name, v in dims.items():
            row[index[name]] = v
        return StoredFact(measure, value, micros(effective), micros(recorded),
                          effective.astimezone(CITY_TIME).date().toordinal(),
                          recorded.astimezone(CITY_TIME).date().toordinal(),
                          tuple(row), "", 0)

    sessions = []
    for _ in range(max(1, RIDERS // 5)):
        street = rng.choice(city.streets)
        sessions.append((street, city.district_of[street], rng.choice(TRACKS),
                         moment(rng.randrange(DAYS), rng.randrange(8 * 60, 20 * 60)),
                         rng.choice((60, 90, 120, 180))))
    for street, district, track, starts, _ in sessions:
        yield "training", fact("training_sessions", 1, starts, starts - timedelta(days=3),
                               street_id=street, district_id=district, track=track)
    for _ in range(RIDERS):
        home = rng.choice(city.streets)
        station = rng.choice(city.stations_of_street[home])
        rider = {"street_id": home, "district_id": city.district_of[home],
                 "station_id": station, "platform_id": city.platform_of[station]}
        joined = rng.randrange(DAYS - 10)
        registered = moment(joined, rng.randrange(1440))
        yield "identity", fact("riders_registered", 1, registered, registered, **rider)
        if rng.random() < 0.95:
            verified = registered + timedelta(hours=rng.randrange(1, 72))
            yield "identity", fact("riders_verified", 1, verified, verified, **rider)
            yield "identity", fact("riders_active", 1, verified, verified, **rider)
            if rng.random() < 0.12:
                gone = verified + timedelta(days=rng.randrange(1, 200))
                measure = "riders_suspended" if rng.random() < 0.6 else "riders_left"
                yield "identity", fact(measure, 1, gone, gone, **rider)
                yield "identity", fact("riders_active", -1, gone, gone, **rider)
        for _ in range(rng.choice((4, 4, 5, 5))):
            street, district, track, starts, minutes = rng.choice(sessions)
            at_session = {**rider, "street_id": street, "district_id": district,
                          "track": track}
            enrolled = starts - timedelta(hours=rng.randrange(2, 200))
            yield "training", fact("training_enrolments", 1, enrolled, enrolled, **at_session)
            if rng.random() < 0.9:
                yield "training", fact("training_attendance", 1, starts,
                                       starts + timedelta(minutes=rng.randrange(-30, 20)),
                                       **at_session)
                if rng.random() < 0.88:
                    late = rng.random() < 0.03
                    marked = starts + (timedelta(days=rng.randrange(5, 20)) if late
                                       else timedelta(hours=rng.randrange(2, 30)))
                    yield "training", fact("training_completions", 1, starts, marked,
                                           **at_session)
                    yield "training", fact("training_hours", minutes, starts, marked,
                                           **at_session)
        if rng.random() < 0.6:
            certified = registered + timedelta(days=rng.randrange(1, 30))
            yield "training", fact("riders_certified", 1, certified, certified, **rider)
    for street in city.streets:
        for day in range(DAYS):
            recorded = moment(day, 22 * 60)
            yield "identity", fact("space_riders_served", rng.randrange(5, 60),
                                   moment(day, 0), recorded, street_id=street,
                                   district_id=city.district_of[street])


@contextmanager
def a_store() -> Iterator[dict[str, str]]:
    if STORE == "sqlite":
        folder = tempfile.mkdtemp(prefix="qiji-bench-statistics-")
        try:
            yield {"QIJI_PERSISTENCE": "sqlite", "QIJI_DATA_DIR": folder}
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    with scratch_database() as db:
        folder = tempfile.mkdtemp(prefix="qiji-bench-statistics-")
        try:
            yield {"QIJI_PERSISTENCE": "postgres", "QIJI_POSTGRES_DBNAME": db,
                   "QIJI_POSTGRES_HOST": PG["host"], "QIJI_DATA_DIR": folder,
                   "STATISTICS_POSTGRES_POOL_SIZE": "2"}
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def load(stats: Statistics, city: City, rng: random.Random) -> int:
    store = stats.store
    store.commit(Batch("identity", after=0, through=1, organisations=city.organisations))
    positions = {"identity": 1, "training": 0}
    pending: dict[str, list[StoredFact]] = {"identity": [], "training": []}
    total = 0
    started = time.perf_counter()

    def flush(service: str) -> None:
        nonlocal total
        facts = pending[service]
        after = positions[service]
        through = after + len(facts)
        store.commit(Batch(service, after=after, through=through, facts=facts))
        positions[service] = through
        total += len(facts)
        pending[service] = []
        print(f"  loaded {total:,} facts ({total / (time.perf_counter() - started):,.0f}/s)",
              flush=True)

    for service, fact in facts_of_a_year(city, rng):
        pending[service].append(fact)
        if len(pending[service]) >= LOAD_BATCH:
            flush(service)
    for service in pending:
        if pending[service]:
            flush(service)
    return total


def percentile(samples: list[float], share: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def timed(call: Callable[[], object], calls: int) -> list[float]:
    call()
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


@dataclass(frozen=True)
class Case:
    name: str
    query: FigureQuery
    viewer: Viewer = EVERYTHING
    # The raw aggregate's extra condition on the facts (the scope or the drill-down).
    where: str = ""


def raw_aggregate(stats: Statistics, case: Case, as_of: datetime | None) -> Callable[[], Any]:
    """The same sums by period and key, straight from the facts table."""
    q = case.query
    measure = catalogue.measures()[q.measure]
    cut = periods(q.granularity, q.start, q.end)
    key = {Dimension.CITY: "''", Dimension.DISTRICT: "district_id",
           Dimension.STREET: "street_id", Dimension.STATION: "station_id",
           Dimension.TRACK: "track", Dimension.PLATFORM: "platform_id",
           Dimension.COMMUNITY: "community_id"}[q.dimension]
    first, end = cut[0].first_day, cut[-1].end_day
    if measure.kind == "STOCK":
        # Everything before the end, the days before the range as one opening bucket.
        bucket = f"CASE WHEN effective_day < {first} THEN -1 ELSE {_bucket(cut, q.granularity)} END"
        days = f"effective_day < {end}"
    else:
        bucket, days = _bucket(cut, q.granularity), \
            f"effective_day >= {first} AND effective_day < {end}"
    conditions = [f"measure = '{q.measure}'", days]
    if case.where:
        conditions.append(case.where)
    if as_of is not None:
        conditions.append(f"recorded_at <= {micros(as_of)}")
    statement = (f"SELECT {bucket}, {key}, SUM(value) FROM facts WHERE "
                 f"{' AND '.join(conditions)} GROUP BY 1, 2")

    def run() -> Any:
        with stats.store._read() as cur:
            cur.execute(statement)
            return cur.fetchall()
    return run


def cases(city: City) -> list[Case]:
    year = (day_start(YEAR), day_start(YEAR + timedelta(days=DAYS)))
    h1 = (day_start(YEAR), day_start(date(2026, 7, 1)))
    quarter = (day_start(date(2026, 4, 1)), day_start(date(2026, 7, 1)))
    street, platform, district = city.streets[0], city.platforms[0], city.districts[1]
    return [
        Case("riders registered × street × month, a year",
             FigureQuery("riders_registered", Dimension.STREET, MONTH, *year)),
        Case("training hours × track × week, a year",
             FigureQuery("training_hours", Dimension.TRACK, WEEK, *year)),
        Case("attendance × station × day, a quarter",
             FigureQuery("training_attendance", Dimension.STATION, DAY, *quarter,
                         page_size=5000)),
        Case("riders active (stock) × district × month, a year",
             FigureQuery("riders_active", Dimension.DISTRICT, MONTH, *year)),
        Case("completions × city × whole range, within a district",
             FigureQuery("training_completions", Dimension.CITY, WHOLE_RANGE, *h1,
                         within=district), where=f"district_id = '{district}'"),
        Case("enrolments × street × month, a street office",
             FigureQuery("training_enrolments", Dimension.STREET, MONTH, *year),
             Viewer(street_ids=frozenset({street})), where=f"street_id = '{street}'"),
        Case("certified × station × month, a platform",
             FigureQuery("riders_certified", Dimension.STATION, MONTH, *year),
             Viewer(platform_id=platform), where=f"platform_id = '{platform}'"),
    ]


def main() -> None:
    rng = random.Random(18)
    city = make_city(rng)
    figures: list[Figure] = []
    with a_store() as env:
        settings = load_settings("statistics", env)
        stats = Statistics(settings, {}, EventMac(audit_key(os.urandom(32))), None)
        started = time.perf_counter()
        total = load(stats, city, rng)
        loading = time.perf_counter() - started
        with stats.store._read() as cur:
            cur.execute("SELECT COUNT(*) FROM rollup")
            rollup_rows = cur.fetchone()[0]
            if STORE == "postgres":
                cur.execute("ANALYZE")
        # The baseline's own index: the raw aggregate reads the facts by measure and day.
        with stats.store._write() as cur:
            cur.execute("CREATE INDEX IF NOT EXISTS facts_effective ON facts "
                        "(measure, effective_day)")
            if STORE == "postgres":
                cur.execute("ANALYZE facts")
        print(f"set-up: {total:,} facts of {RIDERS:,} riders loaded in {loading:.0f} s "
              f"({total / loading:,.0f} facts/s); {rollup_rows:,} rollup rows", flush=True)
        for case in cases(city):
            for as_of in (None, AS_OF):
                q = case.query if as_of is None else FigureQuery(**{
                    **case.query.__dict__, "as_of": as_of})
                page = stats.query(q, case.viewer)
                rows = stats.count(q, case.viewer)
                ours = timed(partial(stats.query, q, case.viewer), CALLS)
                raw = timed(raw_aggregate(stats, case, as_of), CALLS)
                when = "now" if as_of is None else "as of 1 July"
                print(f"  {case.name}, {when}: {rows} figures "
                      f"(first page {len(page.rows)}); qiji mean {statistics.fmean(ours):.1f} "
                      f"ms, raw mean {statistics.fmean(raw):.1f} ms", flush=True)
                for label, share in (("p50", 0.5), ("p99", 0.99)):
                    figures.append(Figure(
                        f"figures: {case.name}, {when}, {label}", percentile(ours, share),
                        percentile(raw, share), unit="ms",
                        baseline_name="one SQL aggregate over the facts"))
        stats.close()
    print_figures(f"the city's figures ({STORE}; {total:,} facts, {RIDERS:,} riders; "
                  f"{CALLS} calls each)", figures)


if __name__ == "__main__":
    main()
