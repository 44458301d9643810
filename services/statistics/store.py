"""The figures' own tables: every fact, two daily rollups of them (by every dimension at once,
and by one dimension at a time), the mappers' memory, the organisations (labels, drill-down,
scopes) and where each service's log was read to — in a
SQLite file (`<data dir>/statistics.sqlite3`, the embedded default) or in the process's own
PostgreSQL schema (`STATISTICS_POSTGRES_SCHEMA`, default `statistics`): the same
`QIJI_PERSISTENCE` switch as the services. Never the services' tables.

Exactly once: a batch of one service's events is written in one transaction with the facts and
memory it produced and the tracking position after it, and only if the tracking position is
still the one the batch was read after (compare and set, under a row lock). A crash before the
commit leaves nothing; a second replica, or a rebuild racing a leader, finds the position moved
and reads again. The rows are derived: dropping them and reading the logs again (rebuild)
gives the same figures.

Times are stored as microseconds since the epoch and days as ordinals of the city's calendar
(services/statistics/domain/periods.py): integers compare, sum and bucket alike in both
databases. "As of" a moment T reads the rollup for what was recorded on days before T's and the
facts themselves for T's own day up to T: exact at any moment, and a whole day's worth read
from the rollup. A query by one dimension (unfiltered, or filtered on that same dimension)
reads the rollup by one dimension, a few rows a day; one filtered across dimensions (a
platform's riders by station) reads the rollup by every dimension, which holds nearly a row
per fact (BENCHMARKS.md)."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections import OrderedDict, defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import psycopg_pool
import structlog

from services.statistics.domain.periods import DAY, WHOLE_RANGE, Period, day_number
from shared.config import Settings
from shared.store import ensure_postgres_schema, postgres_conninfo

log = structlog.get_logger(__name__)

# The columns a fact can be broken down by, in the rollup's key order.
DIMENSION_COLUMNS = ("district_id", "street_id", "community_id", "station_id", "merchant_id",
                     "platform_id", "track", "report_kind", "report_category")
FACT_COLUMNS = ("measure", "value", "effective_at", "recorded_at", "effective_day",
                "recorded_day", *DIMENSION_COLUMNS, "service", "position")
ROLLUP_KEY = ("measure", "effective_day", "recorded_day", *DIMENSION_COLUMNS)
BY_KEY_KEY = ("measure", "dimension", "effective_day", "recorded_day", "key")
# Memory entries kept in this process per service: a rebuild's mappers look up sessions,
# courses and riders many times over; the cache is dropped when another writer moved on.
MEMORY_CACHE_SIZE = 300_000


def micros(at: datetime) -> int:
    """A moment as stored: microseconds since the epoch (UTC)."""
    delta = at.astimezone(UTC) - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=value)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class StoredFact:
    """A fact as written: its measure and value, its moments and days, its dimensions (every
    column of DIMENSION_COLUMNS, "" when it does not apply) and the event it came from."""

    measure: str
    value: int
    effective_at: int
    recorded_at: int
    effective_day: int
    recorded_day: int
    dims: tuple[str, ...]
    service: str
    position: int

    def row(self) -> tuple[Any, ...]:
        return (self.measure, self.value, self.effective_at, self.recorded_at,
                self.effective_day, self.recorded_day, *self.dims, self.service, self.position)


@dataclass(frozen=True)
class OrganisationRow:
    id: str
    kind: str
    name: str
    parent_id: str
    department_function: str


@dataclass(frozen=True)
class Tracked:
    service: str
    # The last event of the service's log applied here.
    position: int
    # Every event up to here was looked at (the read that found nothing more ended here).
    caught_up_to: int
    # The service's last position as last seen, and when (None: never read).
    last_position: int
    read_at: datetime | None


@dataclass
class Batch:
    """What one read of a service's log produced, to be written at once: read after `after`
    (the tracking position it expects), through `through`."""

    service: str
    after: int
    through: int
    facts: list[StoredFact] = field(default_factory=list)
    memory: dict[tuple[str, str], Mapping[str, Any]] = field(default_factory=dict)
    organisations: list[OrganisationRow] = field(default_factory=list)
    last_position: int = 0
    caught_up: bool = False


@dataclass(frozen=True)
class Filter:
    """Facts whose `column` is one of `values` (an empty tuple matches nothing)."""

    column: str
    values: tuple[str, ...]


class PositionMoved(Exception):
    """Another writer applied events of this service since the batch was read."""


class Store(Protocol):
    def tracked(self) -> dict[str, Tracked]: ...
    def remembered(self, service: str, kind: str, ident: str) -> Mapping[str, Any] | None: ...
    def commit(self, batch: Batch) -> None: ...
    def note_read(self, service: str, last_position: int, caught_up_to: int) -> None: ...
    def organisations(self) -> dict[str, OrganisationRow]: ...
    def sums(self, measure: str, key: str | None, cut: Sequence[Period], granularity: str,
             filters: Sequence[Sequence[Filter]], as_of: datetime | None, *,
             before: bool = False) -> dict[tuple[int, str], tuple[int, int]]: ...
    def clear(self) -> None: ...
    def close(self) -> None: ...


_TABLES = {
    "facts": ("CREATE TABLE IF NOT EXISTS facts ({id}, measure TEXT NOT NULL, "
              "value BIGINT NOT NULL, effective_at BIGINT NOT NULL, recorded_at BIGINT NOT NULL, "
              "effective_day INTEGER NOT NULL, recorded_day INTEGER NOT NULL, "
              + ", ".join(f"{c} TEXT NOT NULL DEFAULT ''" for c in DIMENSION_COLUMNS)
              + ", service TEXT NOT NULL, position BIGINT NOT NULL)"),
    "rollup": ("CREATE TABLE IF NOT EXISTS rollup (measure TEXT NOT NULL, "
               "effective_day INTEGER NOT NULL, recorded_day INTEGER NOT NULL, "
               + ", ".join(f"{c} TEXT NOT NULL" for c in DIMENSION_COLUMNS)
               + ", value BIGINT NOT NULL, facts BIGINT NOT NULL, PRIMARY KEY ("
               + ", ".join(ROLLUP_KEY) + "))"),
    # The same sums by one dimension at a time (dimension: a column of DIMENSION_COLUMNS, or
    # "" for the city): what a query by one dimension, unfiltered or filtered on that same
    # dimension, reads — a few rows a day, where the rollup by every dimension at once holds
    # nearly a row per fact (a year of a city's facts seldom share all their dimensions).
    "rollup_by_key": ("CREATE TABLE IF NOT EXISTS rollup_by_key (measure TEXT NOT NULL, "
                      "dimension TEXT NOT NULL, effective_day INTEGER NOT NULL, "
                      "recorded_day INTEGER NOT NULL, key TEXT NOT NULL, "
                      "value BIGINT NOT NULL, facts BIGINT NOT NULL, PRIMARY KEY ("
                      + ", ".join(BY_KEY_KEY) + "))"),
    "memory": ("CREATE TABLE IF NOT EXISTS memory (service TEXT NOT NULL, kind TEXT NOT NULL, "
               "ident TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (service, kind, ident))"),
    "organisations": ("CREATE TABLE IF NOT EXISTS organisations (id TEXT PRIMARY KEY, "
                      "kind TEXT NOT NULL, name TEXT NOT NULL, parent_id TEXT NOT NULL, "
                      "department_function TEXT NOT NULL)"),
    "tracking": ("CREATE TABLE IF NOT EXISTS tracking (service TEXT PRIMARY KEY, "
                 "position BIGINT NOT NULL, caught_up_to BIGINT NOT NULL, "
                 "last_position BIGINT NOT NULL, read_at BIGINT)"),
}
_INDEXES = (
    # "As of" a moment reads the facts of its own day.
    "CREATE INDEX IF NOT EXISTS facts_recorded ON facts (measure, recorded_day, recorded_at)",
    # A rebuild or an operator finds a fact's event.
    "CREATE INDEX IF NOT EXISTS facts_event ON facts (service, position)",
)
# Statements made of the fixed column names above (nothing a caller gives).
_INSERT_FACT = (f"INSERT INTO facts ({', '.join(FACT_COLUMNS)}) "  # noqa: S608
                f"VALUES ({', '.join('?' for _ in FACT_COLUMNS)})")


def _upsert(table: str, key: Sequence[str]) -> str:
    return (f"INSERT INTO {table} ({', '.join(key)}, value, facts) "  # noqa: S608
            f"VALUES ({', '.join('?' for _ in key)}, ?, ?) "
            f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET "
            f"value = {table}.value + excluded.value, facts = {table}.facts + excluded.facts")


def _merge(table: str, key: Sequence[str]) -> str:
    return (f"INSERT INTO {table} ({', '.join(key)}, value, facts) "  # noqa: S608
            f"SELECT {', '.join(key)}, value, facts FROM {table}_in "
            f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET "
            f"value = {table}.value + excluded.value, facts = {table}.facts + excluded.facts")


# The two rollups, each by its key columns.
ROLLUPS = {"rollup": ROLLUP_KEY, "rollup_by_key": BY_KEY_KEY}
# From this many rows on, PostgreSQL merges a rollup's rows through COPY (a rebuild's batches).
BULK_ROWS = 2000


def _rollup_rows(facts: Iterable[StoredFact]) -> dict[str, list[tuple[Any, ...]]]:
    """The batch's facts summed by each rollup's key: one upsert per key, not per fact."""
    full: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0, 0])
    by_key: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0, 0])
    for f in facts:
        for entry in (full[(f.measure, f.effective_day, f.recorded_day, *f.dims)],
                      by_key[(f.measure, "", f.effective_day, f.recorded_day, "")],
                      *(by_key[(f.measure, column, f.effective_day, f.recorded_day, value)]
                        for column, value in zip(DIMENSION_COLUMNS, f.dims, strict=True))):
            entry[0] += f.value
            entry[1] += 1
    return {table: [(*key, value, count) for key, (value, count) in summed.items()]
            for table, summed in (("rollup", full), ("rollup_by_key", by_key))}


class _MemoryCache:
    def __init__(self) -> None:
        self._entries: OrderedDict[tuple[str, str, str], Mapping[str, Any] | None] = OrderedDict()
        self._lock = threading.Lock()
        # Per service: the tracking position this cache reflects.
        self.at: dict[str, int] = {}

    def get(self, key: tuple[str, str, str]) -> tuple[bool, Mapping[str, Any] | None]:
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return True, self._entries[key]
            return False, None

    def put(self, key: tuple[str, str, str], value: Mapping[str, Any] | None) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > MEMORY_CACHE_SIZE:
                self._entries.popitem(last=False)

    def drop(self, service: str) -> None:
        with self._lock:
            for key in [k for k in self._entries if k[0] == service]:
                del self._entries[key]
            self.at.pop(service, None)


class SqlStore:
    """The statements both databases share; the subclasses connect, lock and copy."""

    placeholder = "?"
    id_column = ""

    def __init__(self) -> None:
        self._cache = _MemoryCache()
        self._organisations: dict[str, OrganisationRow] | None = None
        self._organisations_lock = threading.Lock()

    # ------------------------------------------------------------------ plumbing

    @contextmanager
    def _read(self) -> Iterator[Any]:
        raise NotImplementedError

    @contextmanager
    def _write(self) -> Iterator[Any]:
        raise NotImplementedError

    def _q(self, statement: str) -> str:
        return statement if self.placeholder == "?" else statement.replace("?", "%s")

    def _lock_tracking(self, cur: Any, service: str) -> int:
        raise NotImplementedError

    def _insert_facts(self, cur: Any, facts: Sequence[StoredFact]) -> None:
        cur.executemany(self._q(_INSERT_FACT), [f.row() for f in facts])

    def _upsert_rollup(self, cur: Any, table: str, rows: list[tuple[Any, ...]]) -> None:
        cur.executemany(self._q(_upsert(table, ROLLUPS[table])), rows)

    def _create(self, cur: Any) -> None:
        for statement in _TABLES.values():
            cur.execute(statement.format(id=self.id_column))
        for statement in _INDEXES:
            cur.execute(statement)

    # ------------------------------------------------------------------ writing

    def tracked(self) -> dict[str, Tracked]:
        with self._read() as cur:
            cur.execute("SELECT service, position, caught_up_to, last_position, read_at "
                        "FROM tracking")
            rows = cur.fetchall()
        return {r[0]: Tracked(r[0], r[1], r[2], r[3],
                              from_micros(r[4]) if r[4] is not None else None) for r in rows}

    def remembered(self, service: str, kind: str, ident: str) -> Mapping[str, Any] | None:
        key = (service, kind, ident)
        hit, value = self._cache.get(key)
        if hit:
            return value
        with self._read() as cur:
            cur.execute(self._q("SELECT value FROM memory WHERE service = ? AND kind = ? "
                                "AND ident = ?"), key)
            row = cur.fetchone()
        found = json.loads(row[0]) if row else None
        self._cache.put(key, found)
        return found

    def expect(self, service: str, position: int) -> None:
        """The next batch of `service` is read after `position`: what this process remembers
        of its memory holds only if nobody else has written past it."""
        if self._cache.at.get(service) != position:
            self._cache.drop(service)
            self._cache.at[service] = position

    def commit(self, batch: Batch) -> None:
        """Writes the batch and moves the service's tracking position to its end, in one
        transaction; PositionMoved (nothing written) if the position is no longer
        `batch.after`."""
        try:
            with self._write() as cur:
                stored = self._lock_tracking(cur, batch.service)
                if stored != batch.after:
                    raise PositionMoved(f"{batch.service} is at {stored}, not {batch.after}")
                if batch.facts:
                    self._insert_facts(cur, batch.facts)
                    for table, rows in _rollup_rows(batch.facts).items():
                        self._upsert_rollup(cur, table, rows)
                if batch.memory:
                    cur.executemany(self._q(
                        "INSERT INTO memory (service, kind, ident, value) VALUES (?, ?, ?, ?) "
                        "ON CONFLICT (service, kind, ident) DO UPDATE SET value = "
                        "excluded.value"),
                        [(batch.service, kind, ident, json.dumps(value, sort_keys=True))
                         for (kind, ident), value in batch.memory.items()])
                if batch.organisations:
                    cur.executemany(self._q(
                        "INSERT INTO organisations (id, kind, name, parent_id, "
                        "department_function) VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO "
                        "NOTHING"),
                        [(o.id, o.kind, o.name, o.parent_id, o.department_function)
                         for o in batch.organisations])
                caught_up_to = batch.last_position if batch.caught_up else batch.through
                cur.execute(self._q(
                    "UPDATE tracking SET position = ?, caught_up_to = ?, last_position = ?, "
                    "read_at = ? WHERE service = ?"),
                    (batch.through, max(caught_up_to, batch.through),
                     max(batch.last_position, batch.through),
                     micros(datetime.now(UTC)), batch.service))
        except BaseException:
            self._cache.drop(batch.service)
            raise
        for (kind, ident), value in batch.memory.items():
            self._cache.put((batch.service, kind, ident), value)
        self._cache.at[batch.service] = batch.through
        if batch.organisations:
            with self._organisations_lock:
                self._organisations = None

    def note_read(self, service: str, last_position: int, caught_up_to: int) -> None:
        """A read that found nothing new: the service's last position and the moment (the
        figures are that fresh). Never moves `position`."""
        with self._write() as cur:
            cur.execute(self._q(
                "UPDATE tracking SET last_position = ?, read_at = ?, caught_up_to = "
                "CASE WHEN caught_up_to > ? THEN caught_up_to ELSE ? END WHERE service = ?"),
                (last_position, micros(datetime.now(UTC)), caught_up_to, caught_up_to,
                 service))

    def clear(self) -> None:
        """Drops every derived row (a rebuild starts from position 0)."""
        with self._write() as cur:
            for table in ("facts", "rollup", "rollup_by_key", "memory", "organisations"):
                cur.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed table names
            cur.execute("UPDATE tracking SET position = 0, caught_up_to = 0")
        self._cache = _MemoryCache()
        with self._organisations_lock:
            self._organisations = None

    def ensure_services(self, services: Iterable[str]) -> None:
        with self._write() as cur:
            for service in services:
                cur.execute(self._q(
                    "INSERT INTO tracking (service, position, caught_up_to, last_position) "
                    "VALUES (?, 0, 0, 0) ON CONFLICT (service) DO NOTHING"), (service,))

    # ------------------------------------------------------------------ reading

    def organisations(self) -> dict[str, OrganisationRow]:
        """Every organisation known (a few thousand in a city): cached until the next batch
        that adds one."""
        with self._organisations_lock:
            if self._organisations is None:
                with self._read() as cur:
                    cur.execute("SELECT id, kind, name, parent_id, department_function "
                                "FROM organisations")
                    self._organisations = {r[0]: OrganisationRow(*r) for r in cur.fetchall()}
            return self._organisations

    def sums(self, measure: str, key: str | None, cut: Sequence[Period], granularity: str,
             filters: Sequence[Sequence[Filter]], as_of: datetime | None, *,
             before: bool = False) -> dict[tuple[int, str], tuple[int, int]]:
        """The measure's summed values by (period index, key), each as (as of `as_of`, now):
        the facts effective within the periods of `cut`, or, `before`, effective before its
        first period (period index -1: a stock's opening balance). `key` the dimension column
        (None: one key, ""); `filters` all hold, each one of its alternatives (scope,
        drill-down). As of a moment: the rollup's days before the moment's day, and that
        day's own facts up to the moment; now: the rollup alone. One pass gives both."""
        first, end = cut[0].first_day, cut[-1].end_day
        if before:
            bucket, days, params = "-1", "effective_day < ?", [first]
        else:
            bucket, days, params = _bucket(cut, granularity), \
                "effective_day >= ? AND effective_day < ?", [first, end]
        table, key_sql, conditions, args = self._source(measure, key, filters)
        where = " AND ".join([*conditions, days])
        day = day_number(as_of) if as_of is not None else None
        found: dict[tuple[int, str], list[int]] = defaultdict(lambda: [0, 0])
        earlier = ("SUM(CASE WHEN recorded_day < ? THEN value ELSE 0 END)" if day is not None
                   else "0")
        with self._read() as cur:
            cur.execute(self._q(
                f"SELECT {bucket} AS b, {key_sql} AS k, {earlier}, SUM(value) "  # noqa: S608
                f"FROM {table} WHERE {where} GROUP BY 1, 2"),
                ([day] if day is not None else []) + args + params)
            for b, k, then, now in cur.fetchall():
                entry = found[(int(b), k)]
                entry[0] += int(then) if day is not None else int(now)
                entry[1] += int(now)
            if day is not None and as_of is not None:
                # The moment's own day: its facts up to the moment.
                _, fact_key, fact_conditions, fact_args = self._source(measure, key, filters,
                                                                       facts=True)
                cur.execute(self._q(
                    f"SELECT {bucket} AS b, {fact_key} AS k, SUM(value) FROM facts "  # noqa: S608
                    f"WHERE {' AND '.join([*fact_conditions, days])} AND recorded_day = ? "
                    "AND recorded_at <= ? GROUP BY 1, 2"),
                    fact_args + params + [day, micros(as_of)])
                for b, k, value in cur.fetchall():
                    found[(int(b), k)][0] += int(value)
        return {k: (v[0], v[1]) for k, v in found.items()}

    def _source(self, measure: str, key: str | None, filters: Sequence[Sequence[Filter]], *,
                facts: bool = False) -> tuple[str, str, list[str], list[Any]]:
        """Where the sums are read (table, key expression, conditions, their arguments): the
        rollup by one dimension when every filter is on that dimension (or, for one figure,
        when one filter alone names the dimension), else the rollup by every dimension."""
        columns = {f.column for group in filters for f in group}
        one_dimension = columns <= {key} if key else not filters
        if not facts:
            if one_dimension:
                return ("rollup_by_key", "key", ["measure = ?", "dimension = ?",
                                                 *_filter_sql(filters, "key")],
                        [measure, key or "", *_filter_args(filters)])
            if key is None and len(filters) == 1 and len(filters[0]) == 1:
                only = filters[0][0]
                return ("rollup_by_key", "''", ["measure = ?", "dimension = ?",
                                                *_filter_sql(filters, "key")],
                        [measure, _column(only.column), *_filter_args(filters)])
        return ("facts" if facts else "rollup", key or "''",
                ["measure = ?", *_filter_sql(filters)], [measure, *_filter_args(filters)])


def _filter_sql(filters: Sequence[Sequence[Filter]], column: str | None = None) -> list[str]:
    """Each group of alternatives as one condition (on `column` instead of each filter's own,
    when the rollup by one dimension is read)."""
    found = []
    for alternatives in filters:
        parts = []
        for f in alternatives:
            name = column or _column(f.column)
            parts.append(f"{name} IN ({', '.join('?' for _ in f.values)})" if f.values
                         else "1 = 0")
        found.append("(" + " OR ".join(parts) + ")")
    return found


def _filter_args(filters: Sequence[Sequence[Filter]]) -> list[Any]:
    return [v for alternatives in filters for f in alternatives for v in f.values]


def _column(name: str) -> str:
    if name not in DIMENSION_COLUMNS:
        raise ValueError(f"no such dimension column: {name}")
    return name


def _bucket(cut: Sequence[Period], granularity: str) -> str:
    """The period index of a row's effective_day, in SQL both databases read (integers only:
    the values are the cut's own day numbers, never the caller's text)."""
    first = cut[0].first_day
    if granularity == DAY:
        return f"(effective_day - {int(first)})"
    if granularity == WHOLE_RANGE or len(cut) == 1:
        return "0"
    whens = " ".join(f"WHEN effective_day < {int(p.end_day)} THEN {i}"
                     for i, p in enumerate(cut[:-1]))
    return f"(CASE {whens} ELSE {len(cut) - 1} END)"


class SqliteStore(SqlStore):
    """A file under the data dir; one connection per thread (WAL: readers never wait for the
    writer, which holds the file's write lock from the start of its transaction)."""

    id_column = "id INTEGER PRIMARY KEY"

    def __init__(self, settings: Settings):
        super().__init__()
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.path = settings.data_dir / "statistics.sqlite3"
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        with self._write() as cur:
            self._create(cur)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
            with self._all_lock:
                self._all.append(conn)
        return conn

    @contextmanager
    def _read(self) -> Iterator[Any]:
        cur = self._conn().cursor()
        try:
            yield cur
        finally:
            cur.close()

    @contextmanager
    def _write(self) -> Iterator[Any]:
        conn = self._conn()
        cur = conn.cursor()
        # IMMEDIATE: the write lock from the start, so the tracking check and the writes after
        # it see the same file (no other writer can slip in between).
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
        except BaseException:
            conn.rollback()
            raise
        else:
            conn.commit()
        finally:
            cur.close()

    def _lock_tracking(self, cur: Any, service: str) -> int:
        cur.execute("SELECT position FROM tracking WHERE service = ?", (service,))
        row = cur.fetchone()
        if row is None:
            cur.execute("INSERT INTO tracking (service, position, caught_up_to, last_position) "
                        "VALUES (?, 0, 0, 0)", (service,))
            return 0
        return int(row[0])

    def close(self) -> None:
        with self._all_lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()


class PostgresStore(SqlStore):
    """Tables in the process's own schema, through a small pool (the gRPC threads read, the
    projection writes)."""

    placeholder = "%s"
    id_column = "id BIGSERIAL PRIMARY KEY"

    def __init__(self, settings: Settings):
        super().__init__()
        ensure_postgres_schema(settings)
        self.schema = settings.postgres_schema
        self._pool = psycopg_pool.ConnectionPool(
            postgres_conninfo(settings), min_size=1, max_size=max(2, settings.postgres_pool_size),
            kwargs={"options": f"-c search_path={settings.postgres_schema}"}, open=True,
            name="statistics", reconnect_timeout=10.0)
        with self._write() as cur:
            # Replicas starting together would collide creating the same tables.
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))",
                        (f"{self.schema}.statistics",))
            self._create(cur)

    @contextmanager
    def _read(self) -> Iterator[Any]:
        with self._pool.connection() as conn, conn.cursor() as cur:
            yield cur

    @contextmanager
    def _write(self) -> Iterator[Any]:
        with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            yield cur

    def _lock_tracking(self, cur: Any, service: str) -> int:
        cur.execute("INSERT INTO tracking (service, position, caught_up_to, last_position) "
                    "VALUES (%s, 0, 0, 0) ON CONFLICT (service) DO NOTHING", (service,))
        # The row lock makes a racing writer wait for this commit, then see the new position.
        cur.execute("SELECT position FROM tracking WHERE service = %s FOR UPDATE", (service,))
        return int(cur.fetchone()[0])

    def _insert_facts(self, cur: Any, facts: Sequence[StoredFact]) -> None:
        # COPY: a rebuild writes millions of facts.
        with cur.copy(f"COPY facts ({', '.join(FACT_COLUMNS)}) FROM STDIN") as copy:
            for f in facts:
                copy.write_row(f.row())

    def _upsert_rollup(self, cur: Any, table: str, rows: list[tuple[Any, ...]]) -> None:
        if len(rows) < BULK_ROWS:
            super()._upsert_rollup(cur, table, rows)
            return
        # A rebuild's batches: copied into a scratch table and merged in one statement (the
        # rows are already summed by key, so no key comes twice).
        cur.execute(f"CREATE TEMPORARY TABLE IF NOT EXISTS {table}_in (LIKE {table}) "
                    "ON COMMIT DELETE ROWS")
        with cur.copy(f"COPY {table}_in ({', '.join(ROLLUPS[table])}, value, facts) "
                      "FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        cur.execute(_merge(table, ROLLUPS[table]))

    def close(self) -> None:
        self._pool.close()


def open_store(settings: Settings) -> SqliteStore | PostgresStore:
    if settings.persistence == "postgres":
        return PostgresStore(settings)
    return SqliteStore(settings)


__all__ = ["DIMENSION_COLUMNS", "Batch", "Filter", "OrganisationRow", "PositionMoved",
           "PostgresStore", "SqliteStore", "StoredFact", "Tracked", "micros", "open_store"]
