"""The store side of every Qiji application: the library's Application with Qiji's settings,
recorder, transcoder, aggregate cache and store gate. shared/application.py builds the service
layer on it and asks the store only through what is here."""

from __future__ import annotations

import contextlib
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import structlog
from eventsourcing.application import Application, ProcessingEvent, Recording
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import Transcoder
from psycopg import sql

from shared.config import Settings
from shared.snapshots import crosses_step, takes_snapshots
from shared.store.cache import AggregateCache
from shared.store.persistence import StoreGate, eventsourcing_env
from shared.store.transcoding import qiji_transcoder

log = structlog.get_logger(__name__)


class StoredApplication(Application[uuid.UUID]):
    """An eventsourcing Application over one service's store (SQLite or PostgreSQL, as
    `settings` say), whose aggregates are read through `aggregates` (copy-on-write cache) and
    whose every commit, a command's or a follower's, ends in `stored`."""

    # The aggregate classes of this service that take snapshots (shared/snapshots.py): the
    # service has a snapshot store when it names any, and the snapshot catch-up job
    # (shared/snapshot_catch_up.py) looks for those that lack one.
    snapshot_kinds: ClassVar[tuple[type[Aggregate], ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # One rule, not two: the library's switch follows the kinds named, and a kind named
        # must be one that can take a snapshot (else every one it crossed a step for would
        # fail, logged, at run time).
        for kind in cls.snapshot_kinds:
            if not takes_snapshots(kind):
                raise TypeError(f"{cls.__name__}.snapshot_kinds names {kind.__name__}, which "
                                "defines no Snapshot (shared/snapshots.py)")
        cls.is_snapshotting_enabled = bool(cls.snapshot_kinds)

    def __init__(self, settings: Settings):
        super().__init__(env=eventsourcing_env(settings))
        # The snapshot store is there when the service's class names `snapshot_kinds`
        # (shared/snapshots.py: which aggregates, and why).
        self.aggregates = AggregateCache(self.repository, self.recorder, self.snapshots,
                                         service=self.name)
        # Snapshots are taken by a thread of their own, beside the command's answer: one of
        # a perk claimed 40,000 times is about 150 ms of work, which would be one till's wait.
        self._snapshotter = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"{self.name}-snapshots") \
            if self.snapshots is not None else None
        self.store_gate = StoreGate(settings, self.datastore)

    @property
    def datastore(self) -> Any:
        """The recorder's datastore (connections and transactions of the service's store),
        for the tables Qiji keeps beside the library's (data keys, seals, the audit log)."""
        return self.recorder.datastore  # type: ignore[attr-defined]

    def construct_transcoder(self) -> Transcoder:
        # The library's transcodings, decoded with orjson (shared/store/transcoding.py):
        # replaying the log into read models is mostly JSON decoding.
        return qiji_transcoder()

    def construct_recorder(self) -> Any:
        # A process recorder: an application recorder that can also store tracking records
        # atomically with events, which every service's followers need.
        return self.factory.process_recorder()

    def save(self, *objs: Any, **kwargs: Any) -> list[Recording[uuid.UUID]]:
        # The library's Application.save (eventsourcing 9.5.6) line for line, collecting
        # through Collected rather than ProcessingEvent. Its private
        # hooks (`_record`, `_take_snapshots`, `_notify`) are called as its save calls them.
        processing: ProcessingEvent[uuid.UUID] = Collected()
        processing.collect_events(*objs, **kwargs)
        recordings = self._record(processing)
        self._take_snapshots(processing)
        self._notify(recordings)
        self.notify(processing.events)  # the library's deprecated hook, as its save calls it
        self.aggregates.saved((o for o in objs if isinstance(o, Aggregate)),
                              _positions(recordings))
        self.stored(recordings)
        return recordings

    def _take_snapshots(self, processing: ProcessingEvent[uuid.UUID]) -> None:
        """After the commit: a snapshot of each aggregate that takes them and whose save moved
        it past a step (shared/snapshots.py), then its older snapshots deleted, by the
        snapshot thread. The saved copy is never changed again (the cache is copy-on-write),
        so that thread reads it as it was stored. Never the command's failure: its events are
        stored, and a snapshot not taken now is taken at the next step (meanwhile the first
        read after a restart reads more events)."""
        if self._snapshotter is None:
            return
        counts: dict[uuid.UUID, int] = {}
        for event in processing.events:
            counts[event.originator_id] = counts.get(event.originator_id, 0) + 1
        for ident, aggregate in processing.aggregates.items():
            if not takes_snapshots(aggregate) or not crosses_step(
                    aggregate.version - counts.get(ident, 0), aggregate.version):
                continue
            with contextlib.suppress(RuntimeError):  # shutting down: taken at the next step
                self._snapshotter.submit(self.store_snapshot, aggregate)

    def store_snapshot(self, aggregate: Any, *, replacing: bool = False) -> bool:
        """Stores a snapshot of `aggregate` as it is (never changed again: a saved or cached
        copy) and deletes its older ones; False, logged, when it could not (never raised: a
        snapshot is a cache). `replacing`: one of the same version may be stored already (of
        another format): it is deleted first."""
        try:
            assert self.snapshots is not None
            snapshot: Any = type(aggregate).Snapshot
            if replacing:
                forget_older(self.snapshots.recorder, aggregate.id, aggregate.version + 1)
            self.snapshots.put([snapshot.take(aggregate)])
            forget_older(self.snapshots.recorder, aggregate.id, aggregate.version)
        except Exception as error:
            log.warning("snapshot.not_taken", aggregate_id=str(aggregate.id),
                        version=aggregate.version, error=repr(error))
            return False
        return True

    def settle_snapshots(self) -> None:
        """Returns once every snapshot asked for so far is taken (or has failed)."""
        if self._snapshotter is not None:
            self._snapshotter.submit(lambda: None).result()

    def record(self, processing: ProcessingEvent[uuid.UUID]) -> list[Recording[uuid.UUID]]:
        """Stores a follower's reaction: its events and its tracking record in one transaction.
        (The library's `save` cannot take a tracking record; this is what its `_record` does,
        through the event store's public `put`, and the cache as `save` leaves it.)"""
        recordings = self.events.put(processing.events, tracking=processing.tracking,
                                     **processing.saved_kwargs)
        self.aggregates.saved(processing.aggregates.values(), _positions(recordings))
        self.stored(recordings)
        return recordings

    def stored(self, recordings: list[Recording[uuid.UUID]]) -> None:
        """Called after every commit with what it stored (nothing here)."""

    def close(self) -> None:
        if self._snapshotter is not None:
            # A snapshot under way is finished; those not begun are taken at the next step.
            self._snapshotter.shutdown(wait=True, cancel_futures=True)
        self.store_gate.close()
        super().close()


class Collected(ProcessingEvent[uuid.UUID]):
    """The library's ProcessingEvent, collecting an Aggregate's events without asking
    whether it is a DomainEventProtocol, then a CollectEventsProtocol: the two runtime
    Protocol checks cost about 13 µs per aggregate, 40 µs for a command's three (and a sixth
    of a reacting follower's time), for an answer an isinstance of Aggregate gives at once.
    Anything else (an event, None) is the library's to collect, as before. What a command's
    save and a follower's reaction (shared/followers.py) collect into."""

    def collect_events(self, *objs: Any, **kwargs: Any) -> None:
        for obj in objs:  # in the order given, as the library's
            if isinstance(obj, Aggregate):
                self.events.extend(obj.collect_events())
                self.aggregates[obj.id] = obj
            else:
                super().collect_events(obj)
        self.saved_kwargs.update(kwargs)


def _positions(recordings: list[Recording[uuid.UUID]]) -> dict[Any, int]:
    """The log position of each aggregate's newest event in a commit."""
    positions: dict[Any, int] = {}
    for recording in recordings:
        notification = recording.notification
        positions[notification.originator_id] = max(
            notification.id, positions.get(notification.originator_id, 0))
    return positions


def stored_snapshots(recorder: Any) -> list[tuple[uuid.UUID, int]]:
    """(aggregate id, version) of every snapshot stored, in that order (SQLite or PostgreSQL:
    the library's aggregate recorder of the snapshots table, which offers no listing)."""
    table = recorder.events_table_name
    if hasattr(recorder.datastore, "schema"):  # PostgreSQL
        statement: Any = sql.SQL(
            "SELECT originator_id, originator_version FROM {}"
            " ORDER BY originator_id, originator_version").format(
            sql.Identifier(recorder.datastore.schema, table))
        with recorder.datastore.transaction(commit=False) as cursor:
            cursor.execute(statement)
            return [(row["originator_id"], row["originator_version"])
                    for row in cursor.fetchall()]
    with recorder.datastore.transaction(commit=False) as cursor:
        cursor.execute(f"SELECT originator_id, originator_version FROM {table}"  # noqa: S608
                       " ORDER BY originator_id, originator_version")
        return [(uuid.UUID(row["originator_id"]), row["originator_version"])
                for row in cursor.fetchall()]


def aggregates_reaching(recorder: Any, kind_topic: str, version: int
                        ) -> list[tuple[uuid.UUID, int]]:
    """(id, newest version) of every aggregate of the class `kind_topic` names that has
    reached `version` (SQLite or PostgreSQL: the application recorder's events table). One
    scan of the log, filtered by version first: only long histories pass."""
    table = recorder.events_table_name
    prefix = kind_topic + "."  # the topics of its events: `module:Class.Event`
    if hasattr(recorder.datastore, "schema"):  # PostgreSQL
        statement: Any = sql.SQL(
            "SELECT originator_id, max(originator_version) AS newest FROM {}"
            " WHERE originator_version >= %s AND substr(topic, 1, %s) = %s"
            " GROUP BY originator_id ORDER BY originator_id").format(
            sql.Identifier(recorder.datastore.schema, table))
        with recorder.datastore.transaction(commit=False) as cursor:
            cursor.execute(statement, (version, len(prefix), prefix))
            return [(row["originator_id"], row["newest"]) for row in cursor.fetchall()]
    with recorder.datastore.transaction(commit=False) as cursor:
        cursor.execute("SELECT originator_id, max(originator_version) AS newest"  # noqa: S608
                       f" FROM {table} WHERE originator_version >= ?"
                       " AND substr(topic, 1, ?) = ? GROUP BY originator_id"
                       " ORDER BY originator_id", (version, len(prefix), prefix))
        return [(uuid.UUID(row["originator_id"]), row["newest"]) for row in cursor.fetchall()]


def forget_older(recorder: Any, ident: uuid.UUID, version: int) -> None:
    """Deletes the snapshots of `ident` older than `version` (SQLite or PostgreSQL: the
    library's aggregate recorder of the snapshots table)."""
    table = recorder.events_table_name
    if hasattr(recorder.datastore, "schema"):  # PostgreSQL
        statement: Any = sql.SQL(
            "DELETE FROM {} WHERE originator_id = %s AND originator_version < %s").format(
            sql.Identifier(recorder.datastore.schema, table))
        with recorder.datastore.transaction(commit=True) as cursor:
            cursor.execute(statement, (ident, version))
        return
    with recorder.datastore.transaction(commit=True) as cursor:
        cursor.execute(f"DELETE FROM {table} WHERE originator_id = ? "  # noqa: S608
                       "AND originator_version < ?", (ident.hex, version))
