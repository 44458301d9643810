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
command may change. A command never uses `read_only`: what it changes would be the cache."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from copy import deepcopy
from typing import Any

from eventsourcing.application import AggregateNotFoundError, Repository, project_aggregate


class PendingReactions(Exception):
    """A view was read in a thread whose follower holds reactions not yet committed."""


class AggregateCache:
    """The aggregates of one application's store, as stored now or at a version."""

    def __init__(self, repository: Repository[uuid.UUID], recorder: Any):
        self._repository = repository
        self._events = repository.event_store
        # On PostgreSQL (GroupCommitRecorder) one prepared `SELECT 1` says whether anything
        # newer is stored; elsewhere the newer events are simply asked for.
        self._newer_than = getattr(recorder, "has_events_after", None)
        # A follower's batch not yet committed, for reads in the follower's thread only.
        self._batch = threading.local()

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

    def read_only(self, ident: uuid.UUID, version: int | None = None) -> Any:
        """The aggregate (AggregateNotFoundError if none is stored), not to be changed: the
        cached object itself when it is current (or at `version`)."""
        pending = self._pending(ident, version)
        if pending is not None:
            return pending
        return self._find(ident, version)[0]

    def writable(self, ident: uuid.UUID, version: int | None = None) -> Any:
        """The aggregate (AggregateNotFoundError if none is stored), a copy of its own that a
        command may change."""
        pending = self._pending(ident, version)
        if pending is not None:
            return deepcopy(pending)
        aggregate, shared = self._find(ident, version)
        return deepcopy(aggregate) if shared else aggregate

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
        return cached if cached is not None else self._repository.get(ident, version=version)

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
        if self._newer_than is not None:
            return bool(self._newer_than(ident, 0))
        try:
            self._current(ident)
        except AggregateNotFoundError:
            return False
        return True

    def saved(self, aggregates: Iterable[Any]) -> None:
        """Committed: the command's own copy, at the version it stored, replaces the cached one.
        The response renders it without asking the store, and the next read finds it current.
        Nothing changes it after this (the command is done with it)."""
        cache = self._cache
        if cache is not None:
            for aggregate in aggregates:
                cache.put(aggregate.id, aggregate)

    def _find(self, ident: uuid.UUID, version: int | None) -> tuple[Any, bool]:
        """(aggregate, whether it is shared with the cache)."""
        if version is not None:
            cached = self.cached_at(ident, version)
            if cached is not None:
                return cached, True
        aggregate = self._current(ident)
        if version is not None and aggregate.version != version:
            # Only an older version is replayed from the store (a retry's first answer); the
            # version a command just stored is the cached, current one.
            return self._repository.get(ident, version=version), False
        return aggregate, self._cache is not None

    def _current(self, ident: uuid.UUID) -> Any:
        """The aggregate as stored now, from the cache when it is there and current: checked
        against what any replica stored since, else brought up to date on a copy."""
        cache = self._cache
        aggregate = None
        if cache is not None:
            try:
                aggregate = cache.get(ident)
            except KeyError:
                pass
        if aggregate is None:
            aggregate = project_aggregate(None, self._events.get(ident))
            if aggregate is None:
                raise AggregateNotFoundError(ident)
            if cache is not None:
                cache.put(ident, aggregate)
        elif self._newer_than is None or self._newer_than(ident, aggregate.version):
            newer = list(self._events.get(ident, gt=aggregate.version))
            if newer:
                aggregate = project_aggregate(deepcopy(aggregate), newer)
                cache.put(ident, aggregate)
        return aggregate
