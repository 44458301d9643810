"""Audit: tamper evidence for the event log, and the history of any aggregate.

Tamper evidence is a seal chain across the whole log, written by a sealer that follows the log
a moment behind the writers: seal N = HMAC(key, seal N-1 ‖ digest of stored row N), keyed by a
key derived from the master key, which the database never holds. Someone with direct database
access can change, delete, insert or reorder event rows, but cannot make seals that match:
`verify` then names the first broken event. Sealing off the write path costs commands nothing
(measured in bench/); the price is a short window (about a second) between commit and seal,
and a log whose newest rows *and* seals are both deleted looks merely shorter — anchor the head
seal elsewhere (the operator's status output prints it) to close that.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from shared import context, masking
from shared.application import MAC_KEY, META_KEY, QijiApplication, event_mac
from shared.persistence import STORE_DOWN_ERRORS, OutageNotice

log = structlog.get_logger(__name__)

BATCH = 1000
GENESIS = b"qiji-audit-genesis"


def row_digest(notification: Any) -> bytes:
    """Everything a stored event is: its position, aggregate, version, topic and state."""
    h = hashlib.sha256()
    for part in (str(notification.id), str(notification.originator_id),
                 str(notification.originator_version), notification.topic):
        h.update(part.encode())
        h.update(b"\x00")
    h.update(bytes(notification.state))
    return h.digest()


class SealStore:
    def __init__(self, app: QijiApplication):
        settings = app.settings
        self._datastore = app.recorder.datastore  # type: ignore[attr-defined]
        postgres = settings.persistence == "postgres"
        # The schema name is checked to be a plain identifier by the configuration loader.
        self._table = (f'"{settings.postgres_schema}".audit_seals' if postgres
                       else "audit_seals")
        self._p = "%s" if postgres else "?"
        blob = "BYTEA" if postgres else "BLOB"
        with self._datastore.transaction(commit=True) as curs:
            curs.execute(f"CREATE TABLE IF NOT EXISTS {self._table} ("
                         f" notification_id BIGINT PRIMARY KEY, seal {blob} NOT NULL,"
                         f" sealed_at TEXT NOT NULL)")

    def head(self) -> tuple[int, bytes]:
        with self._datastore.transaction(commit=False) as curs:
            curs.execute(f"SELECT notification_id, seal FROM {self._table}"  # noqa: S608
                         f" ORDER BY notification_id DESC LIMIT 1")
            row = curs.fetchone()
        return (int(row["notification_id"]), bytes(row["seal"])) if row else (0, GENESIS)

    def add(self, seals: list[tuple[int, bytes]]) -> None:
        now = datetime.now(UTC).isoformat()
        with self._datastore.transaction(commit=True) as curs:
            curs.executemany(f"INSERT INTO {self._table} (notification_id, seal, sealed_at)"  # noqa: S608
                             f" VALUES ({self._p}, {self._p}, {self._p})",
                             [(notification_id, seal, now) for notification_id, seal in seals])

    def range(self, start: int, stop: int) -> dict[int, bytes]:
        with self._datastore.transaction(commit=False) as curs:
            curs.execute(f"SELECT notification_id, seal FROM {self._table}"  # noqa: S608
                         f" WHERE notification_id >= {self._p} AND notification_id <= {self._p}",
                         (start, stop))
            return {int(r["notification_id"]): bytes(r["seal"]) for r in curs.fetchall()}


class Sealer:
    """Follows the service's own log and seals each event once. Runs in every replica; the
    seals' primary key lets only one replica's seal of a position be stored."""

    upstream = "seal"

    def __init__(self, app: QijiApplication, every_seconds: float = 1.0):
        self.app = app
        self.store = SealStore(app)
        self._key = app.audit_key
        self.every = every_seconds
        self._lock = threading.Lock()
        self._outage = OutageNotice("sealer")

    def run_once(self) -> int:
        sealed = 0
        with self._lock:
            position, previous = self.store.head()
            while True:
                batch = self.app.read_log(position + 1, BATCH)
                if not batch:
                    return sealed
                seals = []
                for notification in batch:
                    previous = hmac.new(self._key, previous + row_digest(notification),
                                        hashlib.sha256).digest()
                    seals.append((notification.id, previous))
                try:
                    self.store.add(seals)
                except Exception:  # another replica sealed these first: start from its head
                    log.info("sealer.raced", position=position)
                    position, previous = self.store.head()
                    continue
                position = batch[-1].id
                sealed += len(batch)

    def run_forever(self, stopping: threading.Event) -> None:
        while not stopping.wait(self.every):
            try:
                self.run_once()
                self._outage.worked()
            except STORE_DOWN_ERRORS as error:  # the store is restarting: sealed later
                self._outage.failed(error)
            except Exception:
                log.exception("sealer.failed")


@dataclass
class Verdict:
    checked: int
    sealed_through: int
    head_seal: str
    first_broken: int = 0
    problem: str = ""

    @property
    def intact(self) -> bool:
        return not self.problem


def verify(app: QijiApplication, *, progress_every: int = 100_000) -> Iterator[Verdict]:
    """Walks the log and the seals together in batches (memory does not grow with the log),
    checking each event's MAC and the seal chain; yields a progress verdict now and then and
    the final verdict last."""
    key = app.audit_key
    store = SealStore(app)
    head_position, head_seal = store.head()
    previous = GENESIS
    checked = 0
    position = 0
    started = time.perf_counter()
    while True:
        rows = app.read_log(position + 1, BATCH)
        for row in rows:
            if not _mac_ok(key, row):
                yield Verdict(checked, head_position, head_seal.hex(), row.id,
                              "the event's MAC does not match: it was forged or altered")
                return
        if not rows:
            break
        if position >= head_position:  # past the seals: newer events are checked by MAC only
            checked += len(rows)
            position = rows[-1].id
            continue
        rows = [r for r in rows if r.id <= head_position]
        stop = rows[-1].id if rows else head_position
        seals = store.range(position + 1, stop if rows else head_position)
        sealed_ids = sorted(seals)
        cursor = 0  # walks the sealed positions alongside the rows: a sealed one skipped over
        seen = set()  # is a deleted (or moved) event
        for row in rows:
            seen.add(row.id)
            expected = seals.get(row.id)
            while cursor < len(sealed_ids) and sealed_ids[cursor] < row.id:
                if sealed_ids[cursor] not in seen:
                    yield Verdict(checked, head_position, head_seal.hex(), sealed_ids[cursor],
                                  "a sealed event is missing (deleted, or its position "
                                  "changed)")
                    return
                cursor += 1
            if expected is None:
                yield Verdict(checked, head_position, head_seal.hex(), row.id,
                              "an event that was never sealed sits inside the sealed log "
                              "(inserted, or moved here)")
                return
            previous = hmac.new(key, previous + row_digest(row), hashlib.sha256).digest()
            if not hmac.compare_digest(previous, expected):
                yield Verdict(checked, head_position, head_seal.hex(), row.id,
                              "the event differs from what was sealed (changed or reordered)")
                return
            checked += 1
            if checked % progress_every == 0:
                log.info("audit.verify.progress", checked=checked, position=row.id,
                         per_second=round(checked / (time.perf_counter() - started)))
                yield Verdict(checked, head_position, head_seal.hex())
        missing = sorted(p for p in seals if p not in seen)
        if missing:
            yield Verdict(checked, head_position, head_seal.hex(), missing[0],
                          "a sealed event is missing (deleted, or its position changed)")
            return
        position = stop
    yield Verdict(checked, head_position, head_seal.hex())


def _mac_ok(key: bytes, row: Any) -> bool:
    content = json.loads(row.state)
    expected = event_mac(key, row.originator_id, row.originator_version, row.topic, content)
    return hmac.compare_digest(str(content.get(MAC_KEY, "")), expected)


@dataclass(frozen=True)
class HistoryEntry:
    position_version: int
    topic: str
    time: datetime
    principal: str
    roles: str
    request_id: str
    correlation_id: str
    summary: str


_HIDDEN = {"timestamp", "originator_topic", META_KEY, MAC_KEY}


def history(app: QijiApplication, aggregate_id: Any) -> list[HistoryEntry]:
    """Every event of one aggregate, in order, with who acted and why, and a readable summary.
    Sealed personal data is shown as sealed, never opened here; free text and names as the
    masking table shows them to the caller."""
    entries = []
    roles = context.current().actor.roles
    for event in app.events.get(aggregate_id):
        state = masking.redact(dict(vars(event)), roles)
        meta = state.get(META_KEY) or {}
        name = type(event).__qualname__
        fields = ", ".join(
            f"{k}={'[sealed]' if k.startswith('sealed_') and v else _short(v)}"
            for k, v in state.items()
            if k not in _HIDDEN and k not in ("originator_id", "originator_version"))
        entries.append(HistoryEntry(
            position_version=event.originator_version, topic=name, time=event.timestamp,
            principal=meta.get("principal", ""), roles=meta.get("roles", ""),
            request_id=meta.get("request_id", ""), correlation_id=meta.get("correlation_id", ""),
            summary=f"{name}({fields})" if fields else name))
    return entries


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 120 else text[:117] + "..."


def state_as_of(app: QijiApplication, aggregate_id: Any, when: datetime) -> dict[str, Any]:
    """The aggregate rebuilt from its events up to `when` (empty before it existed)."""
    version = app.version_at(aggregate_id, when)
    if version is None:
        return {}
    aggregate = app.repository.get(aggregate_id, version=version)
    state = {k.lstrip("_"): ("[sealed]" if k.startswith("sealed_") and v else v)
             for k, v in vars(aggregate).items() if k not in ("_pending_events",)}
    return masking.redact(state, context.current().actor.roles)
