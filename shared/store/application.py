"""The store side of every Qiji application: the library's Application with Qiji's settings,
recorder, transcoder, aggregate cache and store gate. shared/application.py builds the service
layer on it and asks the store only through what is here."""

from __future__ import annotations

import uuid
from typing import Any

from eventsourcing.application import Application, ProcessingEvent, Recording
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import Transcoder

from shared.config import Settings
from shared.store.cache import AggregateCache
from shared.store.persistence import StoreGate, eventsourcing_env
from shared.store.transcoding import qiji_transcoder


class StoredApplication(Application[uuid.UUID]):
    """An eventsourcing Application over one service's store (SQLite or PostgreSQL, as
    `settings` say), whose aggregates are read through `aggregates` (copy-on-write cache) and
    whose every commit, a command's or a follower's, ends in `stored`."""

    def __init__(self, settings: Settings):
        super().__init__(env=eventsourcing_env(settings))
        self.aggregates = AggregateCache(self.repository, self.recorder)
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
