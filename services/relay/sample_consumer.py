"""A sample platform adapter: how the platform company's engineers consume Qiji's event feed
over AMQP with nameko. Run it with

    PLATFORM_ADAPTER_DB=adapter.sqlite3 .venv/bin/nameko run \\
        --config services/relay/sample_consumer.yaml services.relay.sample_consumer

(`AMQP_URI` in the config file, or the environment variable it names), with
`PLATFORM_ADAPTER_PLATFORM_ID` set to the platform's organisation id. Each `@event_handler`
gets one public type through a durable queue of its own, `evt-qiji-<key>--platform_adapter.
<method>`, bound to the exchange `qiji.events`: an event about a rider with the key
`platform.<the platform's id>.<type>` (the relay sends a rider's events to the rider's own
platform only, and the broker lets the platform's user bind nothing else), an event about no
rider (a checkpoint) with its type. The queue is declared when the service starts and keeps
messages while the adapter is down.

Delivery is at least once: the relay publishes an event again after a crash, with the same
CloudEvents `id`. The adapter keeps its own record (a SQLite file keyed by `id`) and handles an
id once: the record and the adapter's effect are written in one SQLite transaction, and the
message is acknowledged after it (nameko acks when the handler returns), so a crash in between
redelivers a message that is then recognised. The record is a nameko DependencyProvider
(`AdapterRecord`): opened once when the service starts and handed to every worker — nameko
makes a new service instance for each message, so state built in `__init__` would open the
file again for every message.

Messages never hold personal data (no name, no phone): consented fields come only through the
gRPC feed, to a token of the platform's organisation. Runs under eventlet (`nameko run`): it
imports no grpc and no psycopg.

The adapter is also a witness: every service's signed checkpoints
(`qiji.<service>.v1.LogCheckpointSigned`) are appended, once each, to the file named by
`PLATFORM_ADAPTER_CHECKPOINTS` (default `platform_checkpoints.jsonl`), one CloudEvent per line —
the file the city's auditor runs `qiji audit verify --checkpoints` with. Keep it where nobody
at the city can write."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from typing import Any

from nameko.events import event_handler
from nameko.extensions import DependencyProvider

SOURCE = "qiji"  # the exchange `qiji.events`
DB_ENV = "PLATFORM_ADAPTER_DB"
CHECKPOINTS_ENV = "PLATFORM_ADAPTER_CHECKPOINTS"
PLATFORM_ENV = "PLATFORM_ADAPTER_PLATFORM_ID"
# Read when the module is imported: nameko binds the queues from the handlers' keys.
PLATFORM = os.environ.get(PLATFORM_ENV, "")


def ours(type_name: str) -> str:
    """The routing key of an event about one of our riders."""
    return f"platform.{PLATFORM or 'unset'}.{type_name}"

SCHEMA = """
CREATE TABLE IF NOT EXISTS seen (
    id TEXT PRIMARY KEY,            -- the CloudEvents id: duplicates are dropped on it
    type TEXT NOT NULL,
    subject TEXT NOT NULL,
    time TEXT NOT NULL,
    received_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE TABLE IF NOT EXISTS riders (
    rider_id TEXT PRIMARY KEY,
    verified_time TEXT,
    certified_time TEXT,
    badges TEXT NOT NULL DEFAULT '[]'
);
"""


class Record:
    """The adapter's own idempotent record of what it saw, and the file it keeps checkpoints
    in as a witness."""

    def __init__(self, path: str, checkpoints: str = "platform_checkpoints.jsonl"):
        self.db = sqlite3.connect(path, timeout=10, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)
        self.checkpoints = checkpoints
        # Workers share the one connection: one transaction on it at a time. (Under `nameko
        # run` threading is monkeypatched: this is a green lock, workers are green threads.)
        self._lock = threading.Lock()

    def once(self, event: dict[str, Any], effect: Any) -> bool:
        """Applies `effect(db, event)` unless this id was handled; False for a duplicate."""
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                inserted = self.db.execute(
                    "INSERT OR IGNORE INTO seen (id, type, subject, time) VALUES (?, ?, ?, ?)",
                    (event["id"], event["type"], event.get("subject") or "", event["time"])
                ).rowcount
                if inserted:
                    effect(self.db, event)
                self.db.execute("COMMIT")
                return bool(inserted)
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        self.db.close()


class AdapterRecord(DependencyProvider):
    """The Record as a nameko dependency: one per service container, opened when the container
    starts (from PLATFORM_ADAPTER_DB and PLATFORM_ADAPTER_CHECKPOINTS) and closed when it
    stops; every worker gets the same one. A missing platform id stops the adapter at start,
    not at its first message."""

    record: Record | None = None

    def setup(self) -> None:
        if not PLATFORM:
            raise RuntimeError(f"set {PLATFORM_ENV} to the platform's organisation id: the "
                               "adapter receives its own riders' events only")
        self.record = Record(os.environ.get(DB_ENV, "platform_adapter.sqlite3"),
                             os.environ.get(CHECKPOINTS_ENV, "platform_checkpoints.jsonl"))

    def get_dependency(self, worker_ctx: Any) -> Record | None:
        return self.record

    def stop(self) -> None:
        if self.record is not None:
            self.record.close()
            self.record = None

    def kill(self) -> None:
        self.stop()


def _rider(db: sqlite3.Connection, rider_id: str) -> None:
    db.execute("INSERT OR IGNORE INTO riders (rider_id) VALUES (?)", (rider_id,))


class PlatformAdapter:
    name = "platform_adapter"

    # The record, as a nameko dependency: nameko makes an instance of this class for every
    # message it handles, and sets `record` on it from the container's one AdapterRecord.
    record = AdapterRecord()

    def _keep(self, event: dict[str, Any]) -> None:
        """A checkpoint, appended once (a repeat delivery appends nothing: same id)."""
        def effect(_db: sqlite3.Connection, e: dict[str, Any]) -> None:
            with open(self.record.checkpoints, "a", encoding="utf-8") as f:
                f.write(json.dumps(e, ensure_ascii=False, sort_keys=True) + "\n")
        self.record.once(event, effect)

    @event_handler(SOURCE, "qiji.identity.v1.LogCheckpointSigned")
    def identity_checkpoint(self, event: dict[str, Any]) -> None:
        self._keep(event)

    @event_handler(SOURCE, "qiji.training.v1.LogCheckpointSigned")
    def training_checkpoint(self, event: dict[str, Any]) -> None:
        self._keep(event)

    @event_handler(SOURCE, "qiji.merchants.v1.LogCheckpointSigned")
    def merchants_checkpoint(self, event: dict[str, Any]) -> None:
        self._keep(event)

    @event_handler(SOURCE, "qiji.badges.v1.LogCheckpointSigned")
    def badges_checkpoint(self, event: dict[str, Any]) -> None:
        self._keep(event)

    @event_handler(SOURCE, "qiji.governance.v1.LogCheckpointSigned")
    def governance_checkpoint(self, event: dict[str, Any]) -> None:
        self._keep(event)

    @event_handler(SOURCE, ours("qiji.identity.v1.RiderVerified"))
    def rider_verified(self, event: dict[str, Any]) -> None:
        def effect(db: sqlite3.Connection, e: dict[str, Any]) -> None:
            _rider(db, e["data"]["rider_id"])
            db.execute("UPDATE riders SET verified_time = ? WHERE rider_id = ?",
                       (e["data"]["verified_time"], e["data"]["rider_id"]))
        self.record.once(event, effect)

    @event_handler(SOURCE, ours("qiji.training.v1.PreJobCertified"))
    def pre_job_certified(self, event: dict[str, Any]) -> None:
        def effect(db: sqlite3.Connection, e: dict[str, Any]) -> None:
            _rider(db, e["data"]["rider_id"])
            db.execute("UPDATE riders SET certified_time = ? WHERE rider_id = ?",
                       (e["data"]["certified_time"], e["data"]["rider_id"]))
        self.record.once(event, effect)

    @event_handler(SOURCE, ours("qiji.badges.v1.BadgeAwarded"))
    def badge_awarded(self, event: dict[str, Any]) -> None:
        def effect(db: sqlite3.Connection, e: dict[str, Any]) -> None:
            rider_id = e["data"]["rider_id"]
            _rider(db, rider_id)
            (badges,) = db.execute("SELECT badges FROM riders WHERE rider_id = ?",
                                   (rider_id,)).fetchone()
            held = sorted({*json.loads(badges), e["data"]["badge_class_id"]})
            db.execute("UPDATE riders SET badges = ? WHERE rider_id = ?",
                       (json.dumps(held), rider_id))
        self.record.once(event, effect)

    @event_handler(SOURCE, ours("qiji.identity.v1.RiderPersonalDataErased"))
    def personal_data_erased(self, event: dict[str, Any]) -> None:
        # The adapter holds no personal data from AMQP; anything it got through the gRPC feed
        # with consent must be deleted here.
        self.record.once(event, lambda db, e: None)
