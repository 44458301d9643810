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
redelivers a message that is then recognised.

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
from typing import Any

from nameko.events import event_handler

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
    """The adapter's own idempotent record of what it saw."""

    def __init__(self, path: str):
        self.db = sqlite3.connect(path, timeout=10, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)

    def once(self, event: dict[str, Any], effect: Any) -> bool:
        """Applies `effect(db, event)` unless this id was handled; False for a duplicate."""
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


def _rider(db: sqlite3.Connection, rider_id: str) -> None:
    db.execute("INSERT OR IGNORE INTO riders (rider_id) VALUES (?)", (rider_id,))


class PlatformAdapter:
    name = "platform_adapter"

    def __init__(self) -> None:
        if not PLATFORM:
            raise RuntimeError(f"set {PLATFORM_ENV} to the platform's organisation id: the "
                               "adapter receives its own riders' events only")
        self.record = Record(os.environ.get(DB_ENV, "platform_adapter.sqlite3"))
        self.checkpoints = os.environ.get(CHECKPOINTS_ENV, "platform_checkpoints.jsonl")

    def _keep(self, event: dict[str, Any]) -> None:
        """A checkpoint, appended once (a repeat delivery appends nothing: same id)."""
        def effect(_db: sqlite3.Connection, e: dict[str, Any]) -> None:
            with open(self.checkpoints, "a", encoding="utf-8") as f:
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
