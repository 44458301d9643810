"""The store room: everything of Qiji that knows how the eventsourcing library works inside.

The rest of Qiji uses the library's public API (aggregates, events, `Application.save`, the
notification log) and what this package exports below. An upgrade of eventsourcing means
auditing this package, then running tests/integration/test_store_contract.py (the library's own
recorder and transcoder contract tests, run against Qiji's recorders and transcoder on SQLite
and PostgreSQL).

Modules
- application.py: `StoredApplication`, the library's Application with Qiji's store: settings,
  process recorder, transcoder, the aggregate cache, the store gate; `record` for a follower's
  reaction with its tracking record; `Collected`, what a save or a reaction collects.
- cache.py: `AggregateCache`, copy-on-write; `read_only` and `writable` reads; `LogWatermark`,
  whether cached aggregates are current, from one look at the log shared by concurrent reads.
- persistence.py: the library's settings for a service's store (`eventsourcing_env`), the
  PostgreSQL schema and connection strings, `StoreGate` (fail at once while the store is away),
  `OutageNotice`, `STORE_DOWN_ERRORS`.
- recorder.py: `GroupCommitRecorder`, PostgreSQL saves sharing one commit (BENCHMARKS.md);
  `BatchTracking`, a follower's one tracking record for a batch, refused if another replica
  tracked past where the batch was read.
- transcoding.py: `FastJSONTranscoder`, the library's transcodings decoded with orjson.
- decoding.py: `EventDecoder`, stored rows to domain events for replays.

Private names of the library used (each one here, nowhere else in Qiji)
- `PostgresProcessRecorder._insert_tracking` (recorder.py `_insert_one`): a follower's
  tracking record written in the same transaction and savepoint as the events it caused,
  inside a group-committed batch. The public `insert_tracking` commits a transaction of its
  own; the library's statement (and its check of the tracking table's kind) is the
  tracking table's truth, so it is called rather than copied.
- `Application._record`, `_take_snapshots`, `_notify` (application.py `save`): the library's
  `save` line for line, so that its events are collected by `Collected` (without the
  library's runtime Protocol checks, issue 20); tests/unit/test_collected.py holds what is
  collected to the library's `ProcessingEvent`. `_take_snapshots` is Qiji's own (a snapshot
  of the saved copy at a step, shared/snapshots.py): the library's rebuilt the aggregate from
  the store at fixed intervals and kept every snapshot.

Undocumented attributes and behaviour relied on (public names, but the library's insides)
- `recorder.datastore` (`get_connection`, `transaction`, `schema`, `originator_id_type`,
  `lock_timeout`, `pool`), `recorder.events_table_name`, `recorder.channel_name`,
  `recorder.lock_table_statements`: the group-commit recorder's server-side insert function
  (`qiji_insert_<table>`: the library's lock, notify and insert as one call) and its savepoint
  path; readers elsewhere (shared/replay.py, shared/continuity.py, shared/audit.py,
  shared/personal_data.py) read the same table and datastore through `datastore` and
  `events_table_name`.
- `StoreGate` replaces `datastore.get_connection` and sets `datastore.pool.timeout` and
  `reconnect_timeout`: every recorder takes its connections through that one method.
- `Repository.cache` (`get`, `put`): the cache is the library's, kept current by
  cache.py instead of by the library's in-place fast-forward (cache.py says why).
- `EventStore.put(events, tracking=...)` and `ProcessingEvent.saved_kwargs`: what the
  library's private `Application._record` does, which `StoredApplication.record` does instead.
- The upcasting protocol (`class_version`, `upcast_v<n>_v<n+1>`) and `find_id_convertor`,
  `resolve_topic`: `EventDecoder` repeats `Mapper.to_domain_event` (decoding.py says why).

Settings the library reads from Qiji (persistence.py `eventsourcing_env`): PERSISTENCE_MODULE,
SQLITE_DBNAME, SQLITE_LOCK_TIMEOUT, POSTGRES_* (connection, pool, lock timeout, no pre-ping),
ORIGINATOR_ID_TYPE, PROCESS_RECORDER_TOPIC (the group-commit recorder) and
AGGREGATE_CACHE_MAXSIZE."""

from shared.store.application import Collected, StoredApplication
from shared.store.cache import AggregateCache, PendingReactions
from shared.store.decoding import EventDecoder
from shared.store.persistence import (
    STORE_DOWN_ERRORS,
    OutageNotice,
    StoreGate,
    StoreUnavailable,
    ensure_postgres_schema,
    eventsourcing_env,
    postgres_conninfo,
)
from shared.store.recorder import BatchTracking, GroupCommitRecorder, RowsBeside
from shared.store.transcoding import FastJSONTranscoder, qiji_transcoder

__all__ = [
    "STORE_DOWN_ERRORS",
    "AggregateCache",
    "BatchTracking",
    "Collected",
    "EventDecoder",
    "FastJSONTranscoder",
    "GroupCommitRecorder",
    "OutageNotice",
    "PendingReactions",
    "RowsBeside",
    "StoreGate",
    "StoreUnavailable",
    "StoredApplication",
    "ensure_postgres_schema",
    "eventsourcing_env",
    "postgres_conninfo",
    "qiji_transcoder",
]
