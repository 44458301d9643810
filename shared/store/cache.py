"""The aggregate cache, copy-on-write: aggregates stay cached between requests and are brought
up to date with only the events stored since (by any replica), never changed in place.

The cache itself is the library's (`Repository.cache`, sized by AGGREGATE_CACHE_MAXSIZE); its
way of keeping a cached aggregate current is not used. The library's `Repository.get`
fast-forwards the cached object in place, under a lock of its own: a query rendering that very
object meanwhile would see it half-applied, and a thread applying newer events to a copy of it
met it changing under it (OriginatorVersionError under 200 concurrent claims; both fixed in
commits 5823864 and 061be24, sixteen minutes apart, when the cache lived in
shared/application.py). Here newer events are applied to a copy that then replaces the cached
one, so an aggregate handed out read-only never changes.

Two kinds of read, by two calls: `read_only` hands out the cached object itself, for a query
that only renders it (a deep copy is a quarter of a get's time); `writable` hands out a copy a
command may change. A command never uses `read_only`: what it changes would be the cache.

Whether a cached aggregate is current (PostgreSQL): not one `SELECT 1` per aggregate read, but
one look at the log for everything stored since the last look (`LogWatermark`), shared by the
reads that wait for it and by the rest of their request. A read is answered only after a look
that began after the read (or its request) began, so it sees every event any replica had
committed by then, exactly as the per-aggregate check did."""

from __future__ import annotations

import gc
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from copy import deepcopy
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from enum import Enum
from typing import Any

import structlog
from eventsourcing.application import AggregateNotFoundError, Repository
from eventsourcing.domain import Aggregate
from immutables import Map

from shared import metrics
from shared.integrity import EventIntegrityError
from shared.snapshots import takes_snapshots

log = structlog.get_logger(__name__)


_paused = 0
_paused_lock = threading.Lock()
_was_enabled = False


@contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off for the block, in every thread (it is the process's),
    and on again when the last of the blocks that paused it ends, if it was on before the
    first. For building a large state at once (a snapshot read: a campaign of 40,000 packages
    is 40,000 rows decoded and as many allocations built). Every container made counts towards
    the next collection, and the full ones walk the whole heap, the snapshot's half-built
    state with it: 500-600 ms became 120-130 ms at 40,000 packages, in one process. Garbage
    made meanwhile is freed by reference counting as always; only cycles wait for the end."""
    global _paused, _was_enabled
    with _paused_lock:
        if _paused == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _paused += 1
    try:
        yield
    finally:
        with _paused_lock:
            _paused -= 1
            if _paused == 0 and _was_enabled:
                gc.enable()


class PendingReactions(Exception):
    """A view was read in a thread whose follower holds reactions not yet committed."""


def _cached(cache: Any, ident: uuid.UUID) -> bool:
    try:
        cache.get(ident)
    except KeyError:
        return False
    return True


class AggregateCache:
    """The aggregates of one application's store, as stored now or at a version."""

    def __init__(self, repository: Repository[uuid.UUID], recorder: Any,
                 snapshots: Any = None, service: str = ""):
        self._repository = repository
        # Counted so that an operator sees when the cache is too small for the city
        # (QIJI_AGGREGATE_CACHE_SIZE): loads that keep pace with the commands.
        self._loaded = metrics.AGGREGATES_LOADED.labels(service)
        self._events = repository.event_store
        # The newest snapshot of an aggregate that takes them (shared/snapshots.py).
        self._snapshots = snapshots
        # On PostgreSQL (GroupCommitRecorder) one prepared `SELECT 1` says whether anything
        # newer is stored; elsewhere the newer events are simply asked for.
        self._newer_than = getattr(recorder, "has_events_after", None)
        # And one statement says which of a follower's batch of aggregates exist.
        self._stored_among = getattr(recorder, "stored_among", None)
        # And, there, one look at the log serves every read that waits for it (LogWatermark).
        changes = getattr(recorder, "changes_after", None)
        self.watermark = LogWatermark(changes, recorder.max_notification_id) \
            if changes is not None else None
        # The set a request keeps of what it has caught up with (RequestContext.caught_up),
        # None outside a request: a request looks at the log once, not once per read.
        self.request_memo: Callable[[], set[str] | None] = lambda: None
        self._memo_key = f"log:{id(self)}"
        # A follower's batch not yet committed, for reads in the follower's thread only.
        self._batch = threading.local()
        # The aggregates being read from the store into the cache now, each by one reader.
        self._loading: dict[uuid.UUID, threading.Event] = {}
        self._loading_lock = threading.Lock()

    @contextmanager
    def pending(self, aggregates: dict[uuid.UUID, Any], events: list[Any]) -> Iterator[None]:
        """Reads in this thread find `aggregates` (id → the aggregate as a batch of reactions
        left it, not committed yet) as if they were stored: a follower applying several
        upstream events in one transaction decides each as it would have after the ones
        before it were committed (shared/followers.py). Other threads do not see them.
        `events`: the batch's reactions so far, which no view has seen (`require_no_pending`)."""
        self._batch.aggregates, self._batch.events = aggregates, events
        try:
            yield
        finally:
            self._batch.aggregates = self._batch.events = None

    @contextmanager
    def existence_of(self, idents: Iterable[uuid.UUID]) -> Iterator[None]:
        """For a follower's batch: whether each of `idents` is stored, asked of the store in
        one statement (PostgreSQL) rather than one `exists` query per upstream event — the
        reacting follower spent 42 % of its time in those. Until the block ends, `exists` in
        this thread answers for them from it (after the batch's own pending reactions, which
        it would not show). An aggregate that another writer creates meanwhile is not missed:
        the batch's reaction that creates it again conflicts when stored, and the follower
        decides that event again one by one, asking the store afresh."""
        stored_among = self._stored_among
        cache = self._cache
        wanted = [ident for ident in dict.fromkeys(idents)
                  if cache is None or not _cached(cache, ident)]
        if stored_among is None or not wanted:
            yield
            return
        found = stored_among(wanted)
        self._batch.exists = {ident: ident in found for ident in wanted}
        try:
            yield
        finally:
            self._batch.exists = None

    def require_no_pending(self) -> None:
        """Raises PendingReactions in a thread holding reactions not committed yet: a view of
        this store (shared/views.py) cannot show them, so a policy reading one would decide on
        a state without them. The follower then commits what it holds and decides again."""
        if getattr(self._batch, "events", None):
            raise PendingReactions

    def _pending(self, ident: uuid.UUID, version: int | None) -> Any | None:
        batch = getattr(self._batch, "aggregates", None)
        if not batch or version is not None:
            return None
        return batch.get(ident)

    @property
    def _cache(self) -> Any:
        # Read each time: a benchmark starts rounds from a cold cache by replacing it.
        return self._repository.cache

    def read_only(self, ident: uuid.UUID, version: int | None = None, *,
                  kind: type | None = None) -> Any:
        """The aggregate (AggregateNotFoundError if none is stored), not to be changed: the
        cached object itself when it is current (or at `version`). `kind`: the class the
        caller expects, when it knows it (a read from the store then asks for a snapshot only
        of a class that takes them)."""
        pending = self._pending(ident, version)
        if pending is not None:
            return pending
        return self._find(ident, version, kind)[0]

    def writable(self, ident: uuid.UUID, version: int | None = None, *,
                 kind: type | None = None) -> Any:
        """The aggregate (AggregateNotFoundError if none is stored), a copy of its own that a
        command may change."""
        pending = self._pending(ident, version)
        if pending is not None:
            return copy_aggregate(pending)
        aggregate, shared = self._find(ident, version, kind)
        return copy_aggregate(aggregate) if shared else aggregate

    def cached_at(self, ident: uuid.UUID, version: int) -> Any | None:
        """The cached aggregate if it is at `version` (read-only), else None. The state at a
        version never changes: the copy a command just cached answers its response without
        asking the store for newer events."""
        cache = self._cache
        if cache is None:
            return None
        try:
            aggregate = cache.get(ident)
        except KeyError:
            return None
        return aggregate if aggregate.version == version else None

    def read_only_at(self, ident: uuid.UUID, version: int) -> Any:
        """The aggregate at `version`, not to be changed: the cached one when it is at that
        version, else rebuilt from its events up to that version in one read (not the current
        one brought up to date first, which would read the store once more for nothing)."""
        cached = self.cached_at(ident, version)
        return cached if cached is not None else self.replayed(ident, version)

    def replayed(self, ident: uuid.UUID, version: int) -> Any:
        """The aggregate rebuilt from its stored events up to `version` (AggregateNotFoundError
        if none is stored), never cached: a version a command answered before, or the state as
        of a moment an auditor asks for."""
        start, after = self._snapshot(ident, version)
        aggregate = project(start, self._events.get(ident, gt=after, lte=version))
        if aggregate is None:
            raise AggregateNotFoundError(ident)
        return aggregate

    def _snapshot(self, ident: uuid.UUID, version: int | None = None,
                  kind: type | None = None) -> tuple[Any | None, int | None]:
        """(the aggregate as its newest usable snapshot at or before `version` holds it, the
        snapshot's version), or (None, None): no snapshot store, a `kind` that takes none (not
        asked: a round trip saved on every first read of a claim or a merchant), no snapshot,
        or one that cannot be used (shared/snapshots.py), which is passed over."""
        if self._snapshots is None or (kind is not None and not takes_snapshots(kind)):
            return None, None
        # The round trip before the collector's pause, which holds only the work of building
        # the state: a store that hangs must not keep the process's collector off.
        stored = self._snapshots.recorder.select_events(ident, desc=True, limit=1, lte=version)
        if not stored:
            return None, None
        with collector_paused():
            return self._from_snapshot(ident, stored[0])

    def _from_snapshot(self, ident: uuid.UUID, stored: Any) -> tuple[Any | None, int | None]:
        try:
            snapshot: Any = self._snapshots.mapper.to_domain_event(stored)
        except EventIntegrityError as error:
            log.error("snapshot.refused", aggregate_id=str(ident), problem=str(error),
                      why="its MAC fails: written or altered by someone other than the "
                          "service; read from the events instead")
            return None, None
        if not snapshot.usable():
            return None, None
        try:
            return snapshot.mutate(None), snapshot.originator_version
        except Exception as error:
            # The service's own snapshot that today's code cannot read (a fault of that code,
            # or a format not raised when it should have been): a cache must not stop a read.
            log.error("snapshot.unreadable", aggregate_id=str(ident),
                      version=snapshot.originator_version, error=repr(error))
            return None, None

    def exists(self, ident: uuid.UUID) -> bool:
        """Whether any event of `ident` is stored. Events are never deleted: a cached aggregate
        exists. Otherwise one lean statement rather than the library's way of asking
        (rebuilding the aggregate from all of its events just to learn that there are some)."""
        if self._pending(ident, None) is not None:
            return True
        cache = self._cache
        if cache is not None:
            try:
                cache.get(ident)
                return True
            except KeyError:
                pass
        known = getattr(self._batch, "exists", None)
        if known:
            answer = known.get(ident)
            if answer is not None:
                return answer
        if self._known_absent(ident):
            return False
        if self._newer_than is not None:
            looked = self.watermark.position if self.watermark is not None else 0
            found = bool(self._newer_than(ident, 0))
            if not found and self.watermark is not None:
                self.watermark.current_through(ident, ABSENT, looked)
            return found
        try:
            self._current(ident)
        except AggregateNotFoundError:
            return False
        return True

    def saved(self, aggregates: Iterable[Any], positions: Mapping[uuid.UUID, int] | None = None
              ) -> None:
        """Committed: the command's own copy, at the version it stored, replaces the cached one.
        The response renders it without asking the store, and the next read finds it current.
        Nothing changes it after this (the command is done with it). `positions`: the log
        position of each aggregate's newest event just stored: the copy is current through it
        (anyone else's later event of it comes after, or its save would have conflicted)."""
        cache = self._cache
        if cache is not None:
            for aggregate in aggregates:
                cache.put(aggregate.id, aggregate)
                if self.watermark is not None:
                    position = (positions or {}).get(aggregate.id)
                    if position is not None:
                        self.watermark.current_through(aggregate.id, aggregate.version,
                                                       position)

    def _find(self, ident: uuid.UUID, version: int | None, kind: type | None = None
              ) -> tuple[Any, bool]:
        """(aggregate, whether it is shared with the cache)."""
        if version is not None:
            cached = self.cached_at(ident, version)
            if cached is not None:
                return cached, True
        aggregate = self._current(ident, kind)
        if version is not None and aggregate.version != version:
            # Only an older version is replayed from the store (a retry's first answer); the
            # version a command just stored is the cached, current one.
            return self.replayed(ident, version), False
        return aggregate, self._cache is not None

    def _current(self, ident: uuid.UUID, kind: type | None = None) -> Any:
        """The aggregate as stored now, from the cache when it is there and current: checked
        against what any replica stored since, else brought up to date on a copy."""
        cache = self._cache
        aggregate = None
        if cache is not None:
            try:
                aggregate = cache.get(ident)
            except KeyError:
                pass
        watermark = self.watermark
        if aggregate is None:
            if self._known_absent(ident):
                raise AggregateNotFoundError(ident)
            if cache is None:
                return self._load(ident, kind=kind)
            aggregate = self._load_once(ident, cache, kind)
            if aggregate is not None:
                return aggregate
            # Another reader loaded it meanwhile: checked below as any cached copy is.
            try:
                aggregate = cache.get(ident)
            except KeyError:  # not found, or its load failed: this read asks for itself
                return self._load(ident, cache, kind)
        stale = None
        looked = 0
        if watermark is not None:
            self._look_at_log(watermark)
            looked = watermark.position
            stale = watermark.changed(ident, aggregate.version)
        if stale is None:  # not known: ask the store about this one aggregate
            stale = self._newer_than is None or self._newer_than(ident, aggregate.version)
        if stale:
            newer = list(self._events.get(ident, gt=aggregate.version))
            if newer:
                aggregate = project(copy_aggregate(aggregate), newer)
                cache.put(ident, aggregate)
        if watermark is not None and aggregate is not None:
            watermark.current_through(ident, aggregate.version, looked)
        return aggregate

    def _load_once(self, ident: uuid.UUID, cache: Any, kind: type | None) -> Any | None:
        """The aggregate read from the store and cached by this reader, or None once another
        reader who was already loading it has finished (cached, absent or failed: the caller
        looks in the cache again). A perk claimed for weeks is thousands of events: after a
        restart, every till's first claim and every rider's first look at it came at once,
        and each read all of its events (8 readers at once took 8 times one's CPU)."""
        with self._loading_lock:
            loading = self._loading.get(ident)
            leader = loading is None
            if leader:
                loading = self._loading[ident] = threading.Event()
        assert loading is not None
        if not leader:
            # Whatever this reader must see that the load began without, the cached copy's
            # check against the log (for this read's request) finds, as for any cached copy.
            loading.wait()
            return None
        try:
            return self._load(ident, cache, kind)
        finally:
            with self._loading_lock:
                del self._loading[ident]
            loading.set()

    def _load(self, ident: uuid.UUID, cache: Any = None, kind: type | None = None) -> Any:
        """The aggregate read from all of its stored events, and cached when there is a cache
        (AggregateNotFoundError if none is stored)."""
        watermark = self.watermark
        # What the log had been looked at through before the store is asked: what it
        # answers includes all of that.
        looked = watermark.position if watermark is not None else 0
        start, after = self._snapshot(ident, kind=kind)
        aggregate = project(start, self._events.get(ident, gt=after))
        self._loaded.inc()
        if aggregate is None:
            if watermark is not None:
                watermark.current_through(ident, ABSENT, looked)
            raise AggregateNotFoundError(ident)
        if cache is not None:
            cache.put(ident, aggregate)
            if watermark is not None:
                watermark.current_through(ident, aggregate.version, looked)
        return aggregate

    def forget_look(self) -> None:
        """The request's next read looks at the log again, rather than answering as of the
        request's first look: after its save conflicted, or its decision failed, a command asks
        whether a copy of its own request committed meanwhile (QijiApplication._prior_result),
        which that first look predates. (Above all for what the log was last seen without:
        an absent mark would otherwise answer "not there" of what is there now.)"""
        memo = self.request_memo()
        if memo is not None:
            memo.discard(self._memo_key)

    def _known_absent(self, ident: uuid.UUID) -> bool:
        """No event of `ident` is stored, as far as the log has been looked at for this read:
        the store said so through a position, and no look since saw one of it. A singleton
        that was never made (the city's calendar, the pre-job programme) is asked about on
        every command that reads it; without this, each asked the store again.
        Only in a request that has looked at the log already (its reads of cached aggregates
        do, first thing): a look is never made for this alone, which would cost a read of
        `ident` alone (a follower, outside any request) a second query, not save one."""
        watermark = self.watermark
        memo = self.request_memo()
        if watermark is None or memo is None or self._memo_key not in memo:
            return False
        return watermark.changed(ident, ABSENT) is False

    def _look_at_log(self, watermark: LogWatermark) -> None:
        """Waits for a look at the log that began after this read, or after the request it is
        part of began (once per request: the request is then answered as of its start, as a
        single read of each aggregate would be)."""
        memo = self.request_memo()
        if memo is not None and self._memo_key in memo:
            return
        watermark.look()
        if memo is not None:
            memo.add(self._memo_key)


def project(aggregate: Any, events: Iterable[Any]) -> Any:
    """The aggregate with `events` applied in turn: the library's `project_aggregate` without
    its `assert isinstance(event, CanMutateProtocol)`, a runtime Protocol check of 29 µs an
    event on Python 3.11, more than applying a perk's claim to its ledger (11–20 µs): about
    two fifths of a perk's first read. Every event here comes from the store's mapper, an
    instance of the library's domain event classes, which define `mutate`."""
    for event in events:
        aggregate = event.mutate(aggregate)
    return aggregate


# The version a mark gives an aggregate with no event stored: "absent through a position".
ABSENT = 0


class _Look:
    """One look at the log: the lock its maker sleeps on until the look before it ends, and
    those of the readers waiting for it to end."""

    __slots__ = ("failed", "maker", "waiters")

    def __init__(self) -> None:
        self.maker: threading.Lock | None = None
        self.waiters: list[threading.Lock] = []
        self.failed = False


class LogWatermark:
    """How far this process has looked at its store's log for events stored by anyone, and
    which aggregates they changed: one query (`changes_after`) for everything stored since the
    last look, shared by every read waiting for it, instead of one `SELECT 1` per read.

    Positions are given out in commit order (the recorder's table lock is held through each
    commit), so every event committed before a look began is at or below the position that
    look reaches. A mark says that an aggregate at a version is current through a position
    (where the log had been looked at through when it was read from the store, or the position
    of its own newest event when it was stored): true whoever wrote it, since a version's state
    never changes. The cached copy is stale when a look saw an event of it past its mark. What
    is not known — no mark for the cached copy's version, or a mark older than the changes
    last forgotten (at `FORGET_AFTER` entries, to bound memory; the first look forgets all that
    came before it) — is asked of the store for that aggregate alone, as before."""

    PAGE = 1000
    FORGET_AFTER = 100_000

    def __init__(self, changes_after: Callable[[int, int], Sequence[tuple[int, uuid.UUID]]],
                 head: Callable[[], int | None]):
        self._changes_after = changes_after
        self._head = head
        self._lock = threading.Lock()
        # The look in flight (None: none), and the next one, which the readers that came
        # while it was in flight wait for.
        self._current: _Look | None = None
        self._next: _Look | None = None
        self.position = 0
        # The newest position of each aggregate with an event seen by a look...
        self._changed_at: dict[uuid.UUID, int] = {}
        # ...and the marks: (version, position it is current through) of cached aggregates.
        self._marks: dict[uuid.UUID, tuple[int, int]] = {}
        # Changes at or below this are not in `_changed_at`: a mark below it tells nothing.
        self._forgotten_through: int | None = None  # None: no look yet

    def look(self) -> None:
        """Returns once a look that began after this call has reached the log's head.

        A call with no look in flight makes one at once. A call that comes while one is in
        flight (it may have begun before the call) waits for the next, which begins when that
        one ends; the first to wait for it makes it. Each waiting reader sleeps on a lock of
        its own, released once, when its look is done (or it is handed the look to make): with
        a Condition's notify_all every waiter woke at the end of every look, took the shared
        lock in turn and, but for one, went back to sleep — a thread hand-off or two more per
        get under load, on two cores shared with grpcio's own threads."""
        with self._lock:
            if self._current is None:
                mine = self._current = _Look()
                wake = None
            else:
                waiting = self._next
                maker = waiting is None
                mine = self._next = _Look() if waiting is None else waiting
                wake = threading.Lock()
                wake.acquire()
                if maker:
                    mine.maker = wake
                else:
                    mine.waiters.append(wake)
        if wake is not None:
            wake.acquire()  # released by the look before: ours is done, or ours to make
            if mine.maker is not wake:
                if mine.failed:
                    self.look()  # as if just arrived: a look that begins after now
                return
        self._make(mine)

    def _make(self, mine: _Look) -> None:
        """Makes the look `mine` (now `_current`), then wakes its waiters and hands the next
        look, if anyone waits for it, to its maker."""
        failed = True
        try:
            first = self._forgotten_through is None
            if first:
                changed: dict[uuid.UUID, int] = {}
                position = self._head() or 0
            else:
                changed, position = self._read(self.position)
            with self._lock:
                if first or len(self._changed_at) + len(changed) > self.FORGET_AFTER:
                    self._changed_at.clear()
                    self._marks.clear()
                    self._forgotten_through = position
                else:
                    self._changed_at.update(changed)
                self.position = position
            failed = False
        finally:
            with self._lock:
                following = self._current = self._next
                self._next = None
            # A failed look's waiters look again, each as if it had just come.
            mine.failed = failed
            if following is not None:
                assert following.maker is not None
                following.maker.release()
            for wake in mine.waiters:
                wake.release()

    def _read(self, position: int) -> tuple[dict[uuid.UUID, int], int]:
        changed: dict[uuid.UUID, int] = {}
        while True:
            rows = self._changes_after(position, self.PAGE)
            for notification_id, originator_id in rows:
                changed[originator_id] = notification_id
            if rows:
                position = rows[-1][0]
            if len(rows) < self.PAGE:
                return changed, position

    def changed(self, ident: uuid.UUID, version: int) -> bool | None:
        """Whether the log holds an event of `ident` past where its copy at `version` is known
        current; None when that is not known here."""
        with self._lock:
            mark = self._marks.get(ident)
            if mark is None or mark[0] != version or self._forgotten_through is None \
                    or mark[1] < self._forgotten_through:
                return None
            return self._changed_at.get(ident, 0) > mark[1]

    def current_through(self, ident: uuid.UUID, version: int, position: int) -> None:
        """`ident` at `version` is current through log position `position`. A mark of the
        same version through a later position stays: both are true, and the later one says
        more. (A request that stored the aggregate and then read it back to answer marked it
        through where its request had looked at the log, before its own save: the next command
        on it then took its own event for someone else's and read the aggregate's events
        again, a round trip and a copy for nothing.)"""
        with self._lock:
            if len(self._marks) > self.FORGET_AFTER:
                self._marks.clear()
            mark = self._marks.get(ident)
            if mark is not None and mark[0] == version and mark[1] >= position:
                return
            self._marks[ident] = (version, position)


# What a copy of an aggregate shares with the original: values no one can change. (An Enum
# member is one too: Enum's own __deepcopy__ answers the member itself.) An immutables.Map is
# one: what grows with an aggregate's history (a session's enrolments, a campaign's
# allocations) is held in one so that a command's copy shares it, and an aggregate puts only
# immutable values in it (Maps, strings, times...), never a dict a command could change.
_IMMUTABLE: frozenset[type] = frozenset({
    str, int, float, bool, bytes, complex, type(None), uuid.UUID, datetime, date, time,
    timedelta, timezone, Decimal, Map})
# Aggregate classes whose copy is their __dict__'s copy (as deepcopy's own would be): True
# when the class changes nothing of how deepcopy copies its objects.
_PLAIN: dict[type, bool] = {}


def copy_aggregate(aggregate: Any) -> Any:
    """A deep copy of `aggregate`, equal to `copy.deepcopy`'s (the same classes, the same
    sharing among its parts), for a command to change: the copy a command is handed is made on
    every write, and deepcopy took 35–80 µs per aggregate, mostly in asking each UUID, datetime
    and Decimal how to copy itself (`__reduce_ex__`) only to rebuild an equal immutable value.
    Here immutable values are shared, plain dicts, lists, sets and tuples and the aggregate's
    own attributes copied directly; anything else (a value class of a domain, a subclass of a
    container) is deepcopy's, with the same memo."""
    return _copy(aggregate, {})


def _copy(value: Any, memo: dict[int, Any]) -> Any:
    cls = type(value)
    if cls in _IMMUTABLE or isinstance(value, Enum):
        return value
    found = memo.get(id(value), memo)
    if found is not memo:
        return found
    copied: Any
    if cls is dict:
        # All of it immutable (a standing's ids, a table of counts): C's copy. The types are
        # gathered in C too; the loop below costs a call per key and per value.
        if _all_immutable(value.values()) and _all_immutable(value.keys()):
            copied = memo[id(value)] = value.copy()
        else:
            copied = memo[id(value)] = {}
            for key, item in value.items():
                copied[_copy(key, memo)] = _copy(item, memo)
    elif cls is list:
        if _all_immutable(value):
            copied = memo[id(value)] = value.copy()
        else:
            copied = memo[id(value)] = []
            copied.extend([_copy(item, memo) for item in value])
    elif cls is set:
        copied = memo[id(value)] = {_copy(item, memo) for item in value}
    elif cls is tuple:
        items = tuple([_copy(item, memo) for item in value])
        copied = value if all(a is b for a, b in zip(items, value, strict=True)) else items
        memo[id(value)] = copied
    elif isinstance(value, Aggregate) and _plain(cls):
        copied = memo[id(value)] = object.__new__(cls)
        copied.__dict__.update({name: _copy(item, memo)
                                for name, item in value.__dict__.items()})
    else:
        return deepcopy(value, memo)
    return copied


def _all_immutable(items: Iterable[Any]) -> bool:
    return set(map(type, items)) <= _IMMUTABLE


def _plain(cls: type) -> bool:
    plain = _PLAIN.get(cls)
    if plain is None:
        plain = _PLAIN[cls] = (
            getattr(cls, "__deepcopy__", None) is None
            and cls.__new__ is object.__new__  # made as deepcopy makes it (cls.__new__(cls))
            and cls.__reduce_ex__ is object.__reduce_ex__
            and cls.__reduce__ is object.__reduce__
            and cls.__getstate__ is object.__getstate__
            and not hasattr(cls, "__setstate__")
            # Attributes in slots are not in __dict__ (typing.Generic's empty slots hold none).
            and not any(vars(k).get("__slots__") for k in cls.__mro__))
    return plain
