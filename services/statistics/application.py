"""The city's figures as a service layer: follows the five services' feeds into the read model
(exactly once, under leadership) and answers queries by measure, dimension and period, as of
any moment, within the caller's scope. The API and the console use only this interface."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import grpc
import structlog

from services.statistics.domain import catalogue
from services.statistics.domain.facts import (
    Dimension,
    Event,
    Fact,
    Measure,
    MeasureKind,
    Where,
)
from services.statistics.domain.periods import (
    DAY,
    GRANULARITIES,
    MONTH,
    WEEK,
    WHOLE_RANGE,
    Period,
    check_range,
    day_number,
    periods,
)
from services.statistics.store import (
    Batch,
    Filter,
    OrganisationRow,
    PositionMoved,
    StoredFact,
    from_micros,
    micros,
    open_store,
)
from shared import auth, paging
from shared.context import Actor
from shared.errors import (
    ENUM_VALUE_REQUIRED,
    FIELD_REQUIRED,
    ORGANISATION_KIND_NOT_ALLOWED,
    PermissionDenied,
    QijiError,
    Unavailable,
    Violations,
    check_id,
)
from shared.integrity import ALARM, MAC_PROBLEM
from shared.leadership import leadership
from shared.store import STORE_DOWN_ERRORS
from shared.tenancy import ORGANISATION_CREATED

log = structlog.get_logger(__name__)

__all__ = ["DAY", "DEFAULT_PAGE_SIZE", "GRANULARITIES", "MAX_PAGE_SIZE", "MONTH", "WEEK",
           "WHOLE_RANGE", "FeedPosition", "FigurePage", "FigureQuery", "FigureRow",
           "Statistics", "Viewer"]

DEFAULT_PAGE_SIZE = 500
MAX_PAGE_SIZE = 5000
# Events read from a log at once: one transaction each.
BATCH = 500
# The reader's name in the integrity alarm (`qiji.integrity`, /metrics).
READER = "statistics"
# How often an idle leader says how fresh the figures are (a write to the tracking table).
FRESHNESS_EVERY_SECONDS = 5.0
# A rebuild says how far it is every this many events.
PROGRESS_EVERY = 20_000

# Reasons of a query's field violations.
MEASURE_UNKNOWN = "MEASURE_UNKNOWN"
DIMENSION_NOT_APPLICABLE = "DIMENSION_NOT_APPLICABLE"
AS_OF_IN_FUTURE = "AS_OF_IN_FUTURE"
TIME_ZONE_REQUIRED = "TIME_ZONE_REQUIRED"
OUT_OF_SCOPE = "OUT_OF_SCOPE"

# The column each dimension reads (CITY: none, one figure).
_COLUMN = {
    Dimension.DISTRICT: "district_id", Dimension.STREET: "street_id",
    Dimension.COMMUNITY: "community_id", Dimension.STATION: "station_id",
    Dimension.MERCHANT: "merchant_id", Dimension.PLATFORM: "platform_id",
    Dimension.TRACK: "track", Dimension.REPORT_KIND: "report_kind",
    Dimension.REPORT_CATEGORY: "report_category"}
# What a drill-down into an organisation of each kind keeps: the facts of that column.
_WITHIN = {"DISTRICT": Dimension.DISTRICT, "STREET": Dimension.STREET,
           "COMMUNITY": Dimension.COMMUNITY, "STATION": Dimension.STATION,
           "MERCHANT": Dimension.MERCHANT, "PLATFORM": Dimension.PLATFORM}
_ORGANISATION_DIMENSIONS = frozenset(_WITHIN.values())
# What a key the facts leave empty is called (a rider with no station, say).
UNATTRIBUTED = "未归属"
CITY_LABEL = "全市"
# City-wide roles that read every figure (the public credentials face reads none).
_EVERYTHING_ROLES = frozenset({auth.CITY_ADMIN, auth.AUDITOR, auth.OPERATOR, auth.SERVICE})


@dataclass(frozen=True)
class FigureQuery:
    """One query: a measure by one dimension over [start, end) cut into periods, as of a moment
    (None: now), within one organisation ("": the caller's whole scope)."""

    measure: str
    dimension: Dimension
    granularity: str  # DAY | WEEK | MONTH | WHOLE_RANGE
    start: datetime
    end: datetime
    as_of: datetime | None = None
    within: str = ""
    page_size: int = 0
    page_token: str = ""


@dataclass(frozen=True)
class FigureRow:
    period_start: datetime
    period_end: datetime
    period_label: str
    key: str
    key_label: str
    value: Decimal
    # Only when the query was as of a moment: the same figure as it stands now.
    current_value: Decimal | None = None


@dataclass(frozen=True)
class FeedPosition:
    service: str
    # The last position of the service's log the figures include.
    position: int
    # The service's last position as last seen (0: not reached yet).
    last_position: int
    # When the figures last read it (None: never).
    read_at: datetime | None


@dataclass(frozen=True)
class FigurePage:
    rows: list[FigureRow]
    next_page_token: str
    measure: Measure
    # The moment the figures stand at (the query's as_of, or the time of the answer).
    as_of: datetime
    positions: list[FeedPosition]


@dataclass(frozen=True)
class Viewer:
    """What a caller may see of the figures: everything (the city), or the facts of its streets
    (their communities included), of its communities, of its platform's riders, of its
    merchant."""

    everything: bool = False
    street_ids: frozenset[str] = frozenset()
    community_ids: frozenset[str] = frozenset()
    platform_id: str = ""
    merchant_id: str = ""

    def filters(self) -> list[Filter]:
        """The facts it may see: any of these (none for everything)."""
        found = []
        if self.street_ids:
            found.append(Filter("street_id", tuple(sorted(self.street_ids))))
        if self.community_ids:
            found.append(Filter("community_id", tuple(sorted(self.community_ids))))
        if self.platform_id:
            found.append(Filter("platform_id", (self.platform_id,)))
        if self.merchant_id:
            found.append(Filter("merchant_id", (self.merchant_id,)))
        return found

    def reaches(self, organisation: OrganisationRow) -> bool:
        """Whether a drill-down into `organisation` stays within what it may see."""
        if self.everything:
            return True
        ident, parent = organisation.id, organisation.parent_id
        return ((ident in self.street_ids)
                or (organisation.kind == "COMMUNITY" and parent in self.street_ids)
                or ident in self.community_ids
                or (bool(self.platform_id) and (ident == self.platform_id or (
                    organisation.kind == "STATION" and parent == self.platform_id)))
                or (bool(self.merchant_id) and ident == self.merchant_id))


@dataclass(frozen=True)
class _Checked:
    measure: Measure
    cut: list[Period]
    granularity: str
    key: str | None
    filters: list[list[Filter]]
    as_of: datetime
    # Whether the figures stand at `as_of` (a moment asked, or a later page's); else they are
    # everything stored, as of the answer (`as_of` is then the moment of the answer).
    pinned: bool
    compare: bool  # the query named a moment: show today's figures beside
    size: int
    offset: int
    fingerprint: str
    within: OrganisationRow | None


class _BatchMemory:
    """A mapper's memory while a batch is read: what the batch wrote, else the store's."""

    def __init__(self, store: Any, batch: Batch):
        self._store = store
        self._batch = batch

    def get(self, kind: str, ident: str) -> Mapping[str, Any] | None:
        found = self._batch.memory.get((kind, ident))
        if found is not None:
            return found
        return self._store.remembered(self._batch.service, kind, ident)

    def put(self, kind: str, ident: str, value: Mapping[str, Any]) -> None:
        self._batch.memory[(kind, ident)] = dict(value)


class Statistics:
    """The read model's service layer.

    `settings`: the process's (persistence, data dir or PostgreSQL schema `statistics`);
    `feeds`: the five services' feeds by name (shared.followers GrpcFeed.of(s, settings), or
    LocalFeed in tests and tools); `event_mac`: shared.integrity EventMac of the audit key,
    which checks each upstream event; `directory`: a shared.tenancy TenancyDirectory on a feed
    of identity's own (not one of `feeds`: a feed remembers its last failure); `clock`: "now"
    (tests)."""

    def __init__(self, settings: Any, feeds: Mapping[str, Any], event_mac: Any,
                 directory: Any, *, clock: Callable[[], datetime] | None = None):
        self.settings = settings
        self.feeds = dict(feeds)
        self.directory = directory
        self._check_mac = event_mac.check
        self._clock = clock or (lambda: datetime.now(UTC))
        self._measures = catalogue.measures()
        self._labels = catalogue.key_labels()
        self._mappers = {s: catalogue.mappers(s) for s in catalogue.SERVICES}
        self._topics = {s: sorted({*m, *([ORGANISATION_CREATED] if s == "identity" else [])})
                        for s, m in self._mappers.items()}
        self.store = open_store(settings)
        self.store.ensure_services(catalogue.SERVICES)
        # One writer per service at a time in this process (replicas: the store's check).
        self._locks = {s: threading.Lock() for s in catalogue.SERVICES}
        self._quiet_since: dict[str, float] = {}
        self._down: set[str] = set()

    # ------------------------------------------------------------------ answers

    def measures(self) -> list[Measure]:
        return list(self._measures.values())

    def viewer(self, actor: Actor) -> Viewer:
        """What `actor` may see; PermissionDenied for a caller with no figures to see."""
        roles = actor.roles
        if roles & _EVERYTHING_ROLES:
            return Viewer(everything=True)
        organisation = actor.organisation_id
        if auth.DEPARTMENT in roles and organisation:
            found = self._organisation(organisation)
            if found is not None and found.kind == "DEPARTMENT" and (
                    found.department_function == "SOCIAL_WORK"):
                return Viewer(everything=True)
        viewer = Viewer(
            street_ids=frozenset({organisation} if auth.STREET_OFFICE in roles else ()),
            community_ids=frozenset({organisation} if auth.COMMUNITY in roles else ()),
            platform_id=organisation if auth.PLATFORM in roles else "",
            merchant_id=organisation if auth.MERCHANT in roles else "")
        if organisation and viewer.filters():
            return viewer
        raise PermissionDenied(
            f"{actor.principal} has no figures to see: the city's figures are read by the city "
            "admin, auditors, operators and the social-work department (the whole city), a "
            "street office (its street), a community, a platform (its own riders) and a "
            "merchant (its own perks)", reason=OUT_OF_SCOPE)

    def query(self, q: FigureQuery, viewer: Viewer) -> FigurePage:
        checked = self._check(q, viewer)
        rows = self._rows(checked, viewer)
        page = rows[checked.offset:checked.offset + checked.size]
        after = checked.offset + len(page)
        token = self._token(after, checked) if after < len(rows) else ""
        return FigurePage(rows=page, next_page_token=token, measure=checked.measure,
                          as_of=checked.as_of, positions=self.freshness())

    def figures(self, q: FigureQuery, viewer: Viewer) -> Iterator[FigureRow]:
        """Every row of the query from its page token on, computed once at one moment (an
        export's rows all stand as of the same moment)."""
        checked = self._check(q, viewer)
        yield from self._rows(checked, viewer)[checked.offset:]

    def count(self, q: FigureQuery, viewer: Viewer) -> int:
        """How many rows `figures` gives."""
        checked = self._check(q, viewer)
        return max(0, len(self._rows(checked, viewer)) - checked.offset)

    def freshness(self) -> list[FeedPosition]:
        tracked = self.store.tracked()
        return [FeedPosition(s, max(t.position, t.caught_up_to), t.last_position, t.read_at)
                for s in catalogue.SERVICES if (t := tracked.get(s)) is not None]

    # ------------------------------------------------------------------ checking a query

    def _check(self, q: FigureQuery, viewer: Viewer) -> _Checked:
        violations = Violations()
        measure = self._measures.get(q.measure)
        if not q.measure:
            violations.add("measure", "is required: a measure's name from ListMeasures",
                           FIELD_REQUIRED)
        elif measure is None:
            violations.add("measure", f"no measure is called {q.measure!r}: ListMeasures "
                           "names them", MEASURE_UNKNOWN)
        dimension = _dimension(q.dimension)
        if dimension is None:
            violations.add("dimension", "must be specified (not DIMENSION_UNSPECIFIED)",
                           ENUM_VALUE_REQUIRED)
        elif measure is not None and dimension not in measure.dimensions:
            violations.add("dimension", f"{measure.name} cannot be broken down by "
                           f"DIMENSION_{dimension.value}; it can by "
                           + ", ".join(f"DIMENSION_{d.value}" for d in _ordered(measure)),
                           DIMENSION_NOT_APPLICABLE)
        if q.granularity not in GRANULARITIES:
            violations.add("granularity", "must be specified: GRANULARITY_DAY, _WEEK, _MONTH "
                           "or _WHOLE_RANGE", ENUM_VALUE_REQUIRED)
        times_ok = True
        for name, value in (("start_time", q.start), ("end_time", q.end)):
            if value is None:
                violations.require_given(None, name, "is required", FIELD_REQUIRED)
                times_ok = False
            elif value.tzinfo is None:
                violations.add(name, "must carry its time zone", TIME_ZONE_REQUIRED)
                times_ok = False
        if times_ok and q.granularity in GRANULARITIES:
            check_range(violations, q.granularity, q.start, q.end)
        now = self._clock()
        if q.as_of is not None:
            if q.as_of.tzinfo is None:
                violations.add("as_of_time", "must carry its time zone", TIME_ZONE_REQUIRED)
            elif q.as_of > now:
                violations.add("as_of_time", "must not be in the future: the figures as they "
                               "stood then", AS_OF_IN_FUTURE)
        within = None
        if q.within and check_id(violations, "within_organisation_id", q.within):
            within = self._organisation(q.within)
            if within is None:
                violations.missing("within_organisation_id", "organisation", q.within)
            elif within.kind not in _WITHIN and within.kind != "CITY":
                violations.add("within_organisation_id", "a drill-down goes into a district, "
                               "street, community, station, merchant or platform (or the city), "
                               f"not an ORGANISATION_KIND_{within.kind}",
                               ORGANISATION_KIND_NOT_ALLOWED)
            elif measure is not None and within.kind in _WITHIN and (
                    _WITHIN[within.kind] not in measure.dimensions):
                violations.add("within_organisation_id", f"{measure.name} is not broken down "
                               f"by DIMENSION_{_WITHIN[within.kind].value}",
                               DIMENSION_NOT_APPLICABLE)
        size = violations.collect(lambda: paging.check_page_size(
            q.page_size, default=DEFAULT_PAGE_SIZE, maximum=MAX_PAGE_SIZE))
        fingerprint = _fingerprint(q, viewer)
        pinned = violations.collect(lambda: _decode_token(q.page_token, fingerprint))
        violations.raise_if_any()
        assert measure is not None and dimension is not None and size is not None
        assert pinned is not None
        if within is not None and not viewer.reaches(within):
            raise PermissionDenied(f"organisation {within.id} lies outside what the caller's "
                                   "figures cover", reason=OUT_OF_SCOPE)
        offset, moment = pinned
        filters: list[list[Filter]] = []
        if not viewer.everything:
            filters.append(viewer.filters())
        if within is not None and within.kind in _WITHIN:
            filters.append([Filter(_COLUMN[_WITHIN[within.kind]], (within.id,))])
        # A first page of "now" reads everything stored (the rollup alone); its later pages
        # stand at the first page's moment, which the token carries.
        pinned_at = q.as_of if q.as_of is not None else moment
        return _Checked(measure=measure, cut=periods(q.granularity, q.start, q.end),
                        granularity=q.granularity, key=_COLUMN.get(dimension),
                        filters=filters, as_of=pinned_at or now, pinned=pinned_at is not None,
                        compare=q.as_of is not None, size=size, offset=offset,
                        fingerprint=fingerprint, within=within)

    def _token(self, after: int, checked: _Checked) -> str:
        # The moment travels with the token: every page of one listing stands at the moment
        # of its first page, so rows neither move nor repeat as events arrive.
        return paging.write_token({"o": after, "t": micros(checked.as_of)}, checked.fingerprint)

    # ------------------------------------------------------------------ computing figures

    def _values(self, c: _Checked) -> dict[tuple[int, str], tuple[int, int]]:
        """Summed stored values by (period index, key), each (as the figures stand, now); a
        stock's are running totals from before the first period on, for every key that has a
        fact by the period's end."""
        as_of = c.as_of if c.pinned else None
        store = self.store
        sums = store.sums(c.measure.name, c.key, c.cut, c.granularity, c.filters, as_of)
        if c.measure.kind is not MeasureKind.STOCK:
            return sums
        opening = store.sums(c.measure.name, c.key, c.cut, c.granularity, c.filters, as_of,
                             before=True)
        running = {k: list(v) for (_, k), v in opening.items()}
        by_period: dict[int, dict[str, tuple[int, int]]] = defaultdict(dict)
        for (i, k), v in sums.items():
            by_period[i][k] = v
        totals: dict[tuple[int, str], tuple[int, int]] = {}
        for i in range(len(c.cut)):
            for k, (then, now) in by_period.get(i, {}).items():
                total = running.setdefault(k, [0, 0])
                total[0] += then
                total[1] += now
            for k, (then, now) in running.items():
                totals[(i, k)] = (then, now)
        return totals

    def _rows(self, c: _Checked, viewer: Viewer) -> list[FigureRow]:
        values = self._values(c)
        labels = self._key_labeller(c, viewer)
        measure = c.measure
        rows = []
        for (i, k), (then, now) in values.items():
            period = c.cut[i]
            rows.append(FigureRow(
                period_start=period.start, period_end=period.end, period_label=period.label,
                key=k, key_label=labels(k), value=measure.value(then),
                current_value=measure.value(now) if c.compare else None))
        rows.sort(key=lambda r: (r.period_start, r.key == "", r.key_label, r.key))
        return rows

    def _key_labeller(self, c: _Checked, viewer: Viewer) -> Callable[[str], str]:
        if c.key is None:
            label = self._scope_label(c, viewer)
            return lambda _: label
        dimension = next(d for d, col in _COLUMN.items() if col == c.key)
        if dimension in _ORGANISATION_DIMENSIONS:
            organisations = self.store.organisations()
            return lambda k: (organisations[k].name if k in organisations
                              else (k or UNATTRIBUTED))
        names = self._labels.get(dimension, {})
        return lambda k: names.get(k, k) if k else UNATTRIBUTED

    def _scope_label(self, c: _Checked, viewer: Viewer) -> str:
        if c.within is not None:
            return c.within.name
        organisations = self.store.organisations()
        if viewer.everything:
            return next((o.name for o in organisations.values() if o.kind == "CITY"),
                        CITY_LABEL)
        ids = [*sorted(viewer.street_ids), *sorted(viewer.community_ids), viewer.platform_id,
               viewer.merchant_id]
        return "、".join(organisations[i].name for i in ids if i in organisations) or CITY_LABEL

    def _organisation(self, ident: str) -> OrganisationRow | None:
        found = self.store.organisations().get(ident)
        if found is None and self.feeds.get("identity") is not None:
            # Created a moment ago, perhaps: read identity's log once more (safe beside the
            # leader: a batch applies once, whoever reads it).
            try:
                self._follow("identity")
            except (grpc.RpcError, QijiError):
                return None
            found = self.store.organisations().get(ident)
        return found

    # ------------------------------------------------------------------ following

    def catch_up(self) -> int:
        """Applies what every upstream has now; returns how many events it applied. An upstream
        out of reach raises (grpc.RpcError, or Unavailable for identity's directory)."""
        return sum(self._follow(s) for s in catalogue.SERVICES)

    def run_forever(self, stopping: threading.Event, idle_wait: float = 0.5) -> None:
        """Follows the five feeds until `stopping` is set, as the leader among replicas; an
        upstream out of reach delays its figures only, and its position waits for it."""
        key = f"{self.settings.postgres_schema}:statistics"
        while not stopping.is_set():
            with leadership(self.settings, key, ".statistics-follows.lock", stopping,
                            work="statistics") as lease:
                if lease is None:
                    return
                try:
                    while not stopping.is_set() and lease.held():
                        if self._follow_tolerant() == 0:
                            stopping.wait(idle_wait)
                finally:
                    for service in catalogue.SERVICES:
                        ALARM.withdraw(service, READER)

    def _follow_tolerant(self) -> int:
        done = 0
        for service in catalogue.SERVICES:
            try:
                done += self._follow(service)
                if service in self._down:
                    log.info("statistics.upstream_back", upstream=service)
                    self._down.discard(service)
            except (grpc.RpcError, Unavailable) as error:
                if service not in self._down:  # said once, not every half second
                    # The code, as followers say it: a gRPC error's text is a repr of many
                    # lines, and a refused token needs the operator, not a retry.
                    code = (error.code().name if isinstance(error, grpc.Call)
                            else getattr(error, "reason", type(error).__name__))
                    log.warning("statistics.upstream_unavailable", upstream=service, code=code)
                    self._down.add(service)
            except STORE_DOWN_ERRORS as error:
                log.warning("statistics.store_unavailable", error=str(error).strip()[:200])
                time.sleep(1.0)
                return done
            except Exception:
                log.exception("statistics.follow_failed", upstream=service)
                time.sleep(2.0)
        return done

    def rebuild(self) -> int:
        """Drops the read model and reads every log again from position 1, saying how far it
        is as it goes. Safe beside a running leader: each batch applies once, whoever reads
        it."""
        started = time.monotonic()
        log.info("statistics.rebuild.started")
        self.store.clear()
        total = 0
        for service in catalogue.SERVICES:
            total += self._follow(service, progress=True)
        log.info("statistics.rebuild.done", events=total,
                 seconds=round(time.monotonic() - started, 1))
        return total

    def close(self) -> None:
        self.store.close()

    def _follow(self, service: str, *, progress: bool = False) -> int:
        """Applies what `service`'s log has now, a batch at a time; stops at an event that
        fails its integrity check (and raises the alarm)."""
        done, facts, started = 0, 0, time.monotonic()
        with self._locks[service]:
            while True:
                applied, produced, more = self._apply_batch(service)
                done += applied
                facts += produced
                if progress and applied and done % PROGRESS_EVERY < applied:
                    tracked = self.store.tracked()[service]
                    log.info("statistics.rebuild.progress", service=service,
                             position=tracked.position, last_position=tracked.last_position,
                             events=done, facts=facts,
                             per_second=round(done / max(time.monotonic() - started, 1e-6)))
                if not more:
                    return done

    def _apply_batch(self, service: str) -> tuple[int, int, bool]:
        """One batch: (events applied, facts written, whether more may be waiting)."""
        feed = self.feeds[service]
        tracked = self.store.tracked()[service]
        after = tracked.position
        self.store.expect(service, after)
        events = feed.read(after + 1, BATCH, self._topics[service])
        failure = feed.failure
        good = []
        bad = None
        for event in events:
            if not self._check_mac(event.originator_id, event.originator_version, event.topic,
                                   event.stored_state):
                bad = (event.position, f"{MAC_PROBLEM}; the figures do not count it")
                break
            good.append(event)
        if bad is None and failure is not None:
            bad = (failure.position, f"{failure.problem}; the figures do not count it")
        full = len(events) == BATCH and bad is None
        if good:
            # Every rider and organisation an event names was registered before it: caught up
            # now, the directory knows them all.
            self.directory.catch_up()
            batch = Batch(service, after=after, through=good[-1].position,
                          last_position=feed.last_position, caught_up=not full and bad is None)
            self._map(service, good, batch)
            try:
                self.store.commit(batch)
            except PositionMoved as moved:
                log.info("statistics.position_moved", upstream=service, why=str(moved))
                return 0, 0, True
        elif bad is None:
            self._note_quiet(service, feed.last_position, after)
        if bad is not None:
            ALARM.broken(service, READER, bad[0], bad[1])
            return len(good), 0, False
        ALARM.passed(service, READER, after + 1,
                     events[-1].position if full else max(
                         [feed.last_position, *(e.position for e in events)]))
        return len(good), len(batch.facts) if good else 0, full

    def _note_quiet(self, service: str, last_position: int, position: int) -> None:
        now = time.monotonic()
        if now - self._quiet_since.get(service, 0.0) >= FRESHNESS_EVERY_SECONDS:
            self._quiet_since[service] = now
            self.store.note_read(service, last_position, max(position, last_position))

    def _map(self, service: str, events: Sequence[Any], batch: Batch) -> None:
        mappers = self._mappers[service]
        memory = _BatchMemory(self.store, batch)
        for upstream in events:
            if upstream.topic == ORGANISATION_CREATED:
                state = upstream.state
                batch.organisations.append(OrganisationRow(
                    str(upstream.originator_id), str(state["kind"]), str(state["name"]),
                    str(state.get("parent_id") or ""),
                    str(state.get("department_function") or "")))
            mapper = mappers.get(upstream.topic)
            if mapper is None:
                continue
            event = Event(service=service, position=upstream.position,
                          originator_id=str(upstream.originator_id),
                          originator_version=upstream.originator_version,
                          topic=upstream.topic, state=upstream.state)
            for fact in mapper(event, self.directory, memory):
                batch.facts.append(self._stored(fact, service, upstream.position))

    def _stored(self, fact: Fact, service: str, position: int) -> StoredFact:
        if fact.measure not in self._measures:
            raise ValueError(f"a mapper of {service} counted an unknown measure {fact.measure}")
        w = self._complete(fact.where)
        return StoredFact(
            measure=fact.measure, value=int(fact.value),
            effective_at=micros(fact.effective_at), recorded_at=micros(fact.recorded_at),
            effective_day=day_number(fact.effective_at),
            recorded_day=day_number(fact.recorded_at),
            dims=(w.district_id, w.street_id, w.community_id, w.station_id, w.merchant_id,
                  w.platform_id, fact.track, fact.report_kind, fact.report_category),
            service=service, position=position)

    def _complete(self, where: Where) -> Where:
        """The coarser places a mapper leaves out, from the finer ones: a community's street,
        a street's district, a station's platform."""
        street, district, platform = where.street_id, where.district_id, where.platform_id
        if where.community_id and not street:
            street = self._parent(where.community_id)
        if street and not district:
            district = self._parent(street)
        if where.station_id and not platform:
            platform = self._parent(where.station_id)
        if (street, district, platform) == (where.street_id, where.district_id,
                                            where.platform_id):
            return where
        return Where(district_id=district, street_id=street, community_id=where.community_id,
                     station_id=where.station_id, merchant_id=where.merchant_id,
                     platform_id=platform)

    def _parent(self, ident: str) -> str:
        found = self.directory.organisation(ident)
        return found.parent_id if found is not None else ""


# ---------------------------------------------------------------------------- helpers


def _dimension(value: Any) -> Dimension | None:
    if isinstance(value, Dimension):
        return value
    try:
        return Dimension(str(value)) if value else None
    except ValueError:
        return None


def _ordered(measure: Measure) -> list[Dimension]:
    return [d for d in Dimension if d in measure.dimensions]


def _fingerprint(q: FigureQuery, viewer: Viewer) -> str:
    fields = [q.measure, str(q.dimension), q.granularity, _iso(q.start), _iso(q.end),
              _iso(q.as_of), q.within, viewer.everything, sorted(viewer.street_ids),
              sorted(viewer.community_ids), viewer.platform_id, viewer.merchant_id]
    return hashlib.sha256(json.dumps(fields, default=str).encode()).hexdigest()[:16]


def _iso(at: datetime | None) -> str:
    return at.astimezone(UTC).isoformat() if at is not None and at.tzinfo else str(at)


def _decode_token(token: str, fingerprint: str) -> tuple[int, datetime | None]:
    """(rows to skip, the moment the listing stands at) from a page token of this query (and
    viewer: the fingerprint holds both), read by shared/paging.py's codec."""
    if not token:
        return 0, None

    def read(fields: dict[str, Any]) -> tuple[int, datetime | None]:
        offset, moment = int(fields["o"]), int(fields["t"])
        if offset < 0:
            raise ValueError("negative")
        return offset, from_micros(moment)
    return paging.read_token(
        token, fingerprint, read,
        changed="was made for a query with other fields (measure, dimension, granularity, "
                "range, as_of_time, within_organisation_id): send them unchanged")
