"""Audit: tamper evidence for the event log, and the history of any aggregate.

Three layers, each catching what the one before cannot:

1. Every event carries a MAC (shared/integrity.py) under a key derived from the master key,
   which the database never holds: a row forged or altered by someone with only database access
   fails it, and every reader (this sealer, followers, views, the public feed behind the
   platform gateway and the relay) stops there; as at an event out of its place among its
   aggregate's versions (shared/continuity.py), which the MAC, blind to positions, misses.
2. A sealer in each service chains every event, in log order, a moment after it is stored:
   seal N = HMAC(key, seal N-1 ‖ SHA-256(position, aggregate, version, topic, state)), kept in
   `audit_seals`. A row deleted, inserted or moved inside the sealed log breaks the chain. The
   sealer checks each event before sealing it — its MAC, and that its version follows its
   aggregate's previous one — and stops at the first that fails: it never seals past it. It
   believes nothing in `audit_seals` it did not compute or check itself (see Sealer).
3. Signed checkpoints (shared/checkpoints.py): every N events or T seconds the sealer signs the
   head of the chain (position, seal) with the audit signing key and stores it as an event of
   the log, which the platform feed and the relay publish. Parties outside the city's database
   keep them. Deleting the newest events together with their seals, or deleting an event and
   every seal after it so that the chain is rebuilt, both leave the log and its chain
   consistent with themselves; neither is consistent with a checkpoint signed before.

`verify` walks the log and the seals together in one snapshot (memory flat, whatever the log's
length), with the checkpoints found in the log and any an auditor brings, and names the first
position that fails. Then it checks every stored snapshot (shared/snapshots.py): a snapshot is
a cache of its aggregate's events, passed over by reads when its MAC fails, so an altered one
never misleads a reader; but it is evidence of tampering an auditor must be told of, and one
the service wrote wrongly (a fault, a format not raised) would mislead every first read. Each
must pass its MAC and equal its aggregate replayed from the log to the same version.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, cast

import orjson
import psycopg
import structlog
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError
from psycopg import sql

from shared import context, masking, metrics, replay
from shared.application import MAC_KEY, META_KEY, QijiApplication
from shared.background import PeriodicJob
from shared.checkpoints import (
    CHECKPOINT_TOPIC,
    BadCheckpoint,
    Checkpoint,
    CheckpointSigner,
    CheckpointVerifier,
    LogCheckpoint,
    readable,
    unverified,
)
from shared.context import Actor, RequestContext
from shared.continuity import Continuity, EventsTable
from shared.integrity import (
    ALARM,
    MAC_PROBLEM,
    V2_MARK,
    V2_TAIL,
    EventIntegrityError,
    Hmac,
    id_bytes,
)
from shared.store import postgres_conninfo
from shared.store.application import stored_snapshots
from shared.store.cache import project

log = structlog.get_logger(__name__)

BATCH = 1000
GENESIS = b"qiji-audit-genesis"
SEALER = "sealer"
SEALER_ACTOR = Actor(principal="qiji-audit-sealer", roles=frozenset({"system"}))


class Chain:
    """The seal chain's link function, with the key's HMAC pads computed once."""

    def __init__(self, key: bytes):
        self._hmac = Hmac(key)

    def link(self, previous: bytes, position: int, originator_id: Any, version: int,
             topic: str, state: bytes) -> bytes:
        digest = hashlib.sha256(b"%d\x00%s\x00%d\x00%s\x00%s" % (
            position, str(originator_id).encode(), version, topic.encode(), state)).digest()
        return self._hmac.digest(previous + digest)


class SealStore:
    """The `audit_seals` table: the chain's links, by position. Only sealers write it, but
    anyone with write access to the database can: a sealer believes none of it that it did not
    compute or check itself, and verify recomputes all of it."""

    def __init__(self, app: QijiApplication, *, create: bool = False):
        """`create`: make the table if it is not there (the sealer, `deploy/schemas`); a reader
        (verify, an auditor's call) never changes the schema, and finds a missing table
        empty."""
        self.events = EventsTable(app)
        self._datastore = self.events.datastore
        self.postgres = self.events.postgres
        self.table = (f'"{app.settings.postgres_schema}".audit_seals' if self.postgres
                      else "audit_seals")
        self._p = self.events.mark
        blob = "BYTEA" if self.postgres else "BLOB"
        with self._datastore.transaction(commit=create) as curs:
            if create:
                curs.execute(f"CREATE TABLE IF NOT EXISTS {self.table} ("
                             f" notification_id BIGINT PRIMARY KEY, seal {blob} NOT NULL,"
                             f" sealed_at TEXT NOT NULL)")
                self.missing = False
            else:
                if self.postgres:
                    curs.execute("SELECT to_regclass(%s) IS NULL AS missing", (self.table,))
                else:
                    curs.execute("SELECT NOT EXISTS (SELECT 1 FROM sqlite_master WHERE type ="
                                 " 'table' AND name = 'audit_seals') AS missing")
                self.missing = bool(curs.fetchone()["missing"])

    def _one(self, query: str, args: Sequence[Any] = ()) -> Any:
        with self._datastore.transaction(commit=False) as curs:
            curs.execute(query, args)
            return curs.fetchone()

    def head(self) -> tuple[int, bytes]:
        """The newest stored seal (whoever stored it), or the chain's start."""
        if self.missing:
            return 0, GENESIS
        row = self._one(f"SELECT notification_id, seal FROM {self.table}"  # noqa: S608
                        f" ORDER BY notification_id DESC LIMIT 1")
        return (int(row["notification_id"]), bytes(row["seal"])) if row else (0, GENESIS)

    def at(self, position: int) -> bytes | None:
        if self.missing:
            return None
        row = self._one(f"SELECT seal FROM {self.table}"  # noqa: S608
                        f" WHERE notification_id = {self._p}", (position,))
        return bytes(row["seal"]) if row else None

    def sealed_before(self, position: int) -> int:
        """The newest position sealed before `position` (0 if none)."""
        row = self._one(f"SELECT max(notification_id) AS position FROM {self.table}"  # noqa: S608
                        f" WHERE notification_id < {self._p}", (position,))
        return int(row["position"] or 0)

    def still(self, position: int) -> tuple[bytes | None, bool]:
        """The seal stored at `position`, and whether the event there is still stored."""
        events = self.events
        row = self._one(f"SELECT (SELECT seal FROM {self.table} WHERE notification_id ="  # noqa: S608
                        f" {self._p}) AS seal, EXISTS (SELECT 1 FROM {events.name} WHERE"
                        f" {events.position} = {self._p}) AS stored", (position, position))
        return (bytes(row["seal"]) if row["seal"] is not None else None), bool(row["stored"])

    def ahead(self, position: int) -> tuple[int, int | None]:
        """After `position`: the newest stored seal's position (`position` if none), and the
        first stored seal with no event at its position (None if every one has its event).
        A sealer stores a seal only after the event is committed, so a seal without an event
        is never a race: the event was deleted, or the seal was written by someone else."""
        events = self.events
        row = self._one(f"SELECT max(s.notification_id) AS newest, min(CASE WHEN"  # noqa: S608
                        f" e.{events.position} IS NULL THEN s.notification_id END) AS orphan"
                        f" FROM {self.table} s LEFT JOIN {events.name} e"
                        f" ON e.{events.position} = s.notification_id"
                        f" WHERE s.notification_id > {self._p}", (position,))
        newest, orphan = row["newest"], row["orphan"]
        return (int(newest) if newest is not None else position,
                int(orphan) if orphan is not None else None)

    def add(self, seals: list[tuple[int, bytes]]) -> None:
        now = datetime.now(UTC).isoformat()
        with self._datastore.transaction(commit=True) as curs:
            curs.executemany(f"INSERT INTO {self.table} (notification_id, seal, sealed_at)"  # noqa: S608
                             f" VALUES ({self._p}, {self._p}, {self._p})",
                             [(notification_id, seal, now) for notification_id, seal in seals])

    def range(self, start: int, stop: int) -> list[tuple[int, bytes]]:
        if self.missing:
            return []
        with self._datastore.transaction(commit=False) as curs:
            curs.execute(f"SELECT notification_id, seal FROM {self.table}"  # noqa: S608
                         f" WHERE notification_id >= {self._p} AND notification_id <= {self._p}"
                         f" ORDER BY notification_id", (start, stop))
            return [(int(r["notification_id"]), bytes(r["seal"])) for r in curs.fetchall()]

    def newest_checkpoint(self) -> tuple[int, Any, int, str, bytes] | None:
        """The newest checkpoint event stored in the log, unchecked: (position, aggregate,
        version, topic, state); None if there is none."""
        events = self.events
        row = self._one(f"SELECT {events.position} AS position, originator_id,"  # noqa: S608
                        f" originator_version, topic, state FROM {events.name}"
                        f" WHERE topic = {self._p} ORDER BY {events.position} DESC"
                        f" LIMIT 1", (CHECKPOINT_TOPIC,))
        if row is None:
            return None
        originator_id = row["originator_id"]
        if not self.postgres:  # SQLite keeps the id's hex form
            originator_id = uuid.UUID(originator_id)
        return (int(row["position"]), originator_id, int(row["originator_version"]),
                row["topic"], bytes(row["state"]))


def checkpoint_in(state: bytes) -> Checkpoint:
    """The checkpoint a stored LogCheckpoint.Signed event holds (its MAC checked already)."""
    return unverified(orjson.loads(state)["note"])


class _Stop(Exception):
    def __init__(self, position: int, problem: str):
        super().__init__(problem)
        self.position = position
        self.problem = problem
        self.sealed = 0


class Sealer(PeriodicJob[QijiApplication]):
    """Follows the service's own log and seals each event once, after checking it; signs
    checkpoints of the chain's head. Runs in every replica: the seals' primary key lets only one
    replica's seal of a position be stored, and a checkpoint's id (from its position) only one
    replica's checkpoint.

    It trusts nothing in `audit_seals` (anyone with write access to the database can write
    there) that it did not compute or check itself. It keeps the head of the chain in memory —
    the position and seal it reached — and goes on from there each round: a seal another
    replica stored must be the one it computes for that event; a seal with no event, an event
    with no seal among sealed ones, or its own head's seal or event gone, stops it. It signs
    only its own head. Starting, it takes up the chain at the newest checkpoint in the log
    (which the log's MAC vouches for) and checks everything stored after it again: at most one
    checkpoint interval (N events or T seconds), or the whole log if it has no checkpoint."""

    # A periodic job (shared/background.py) on every replica, every second.
    upstream = "seal"
    job = "sealer"

    def __init__(self, app: QijiApplication, every_seconds: float = 1.0, *,
                 signer: CheckpointSigner | None = None, checkpoint_events: int = 1000,
                 checkpoint_seconds: float = 60.0):
        super().__init__(app, every_seconds)
        self.store = SealStore(app, create=True)
        self.chain = Chain(app.audit_key)
        self.signer = signer
        self.checkpoint_events = checkpoint_events
        self.checkpoint_seconds = checkpoint_seconds
        self.stopped: tuple[int, str] | None = None
        # (position, seal): the chain's head as this sealer computed or checked it; None until
        # it has taken up the chain.
        self.head: tuple[int, bytes] | None = None
        self._lock = threading.Lock()
        self._continuity = Continuity(self.store.events)
        # The newest checkpoint in the log: (its own position, the checkpoint).
        self._newest: tuple[int, Checkpoint] | None = None
        self._signed_at = time.monotonic()
        self._signed_position = 0
        # The newest position this sealer chained that is not a checkpoint: what makes a new
        # checkpoint worth signing. (A checkpoint is stored after whatever arrived while it was
        # being signed, so its own position says nothing of what it covers.)
        self._business_through = 0

    def round(self) -> int:
        """Seals what is stored now; returns how many events it sealed."""
        with self._lock:
            try:
                sealed = self._seal()
            except _Stop as stop:
                self.stopped = (stop.position, stop.problem)
                ALARM.broken(self.app.name, SEALER, stop.position, stop.problem)
                # What it remembers of versions may include what an attacker just removed:
                # the next try asks the store again.
                self._continuity.forget()
                return stop.sealed
            except BaseException:
                # The round failed part way (the store went away while it stored the seals):
                # it followed versions it did not seal, and the next round reads them again,
                # which must not look like events come twice (a false integrity alarm, seen
                # after a PostgreSQL restart under load).
                self._continuity.forget()
                raise
            self.stopped = None
            ALARM.intact(self.app.name, SEALER)
            self._maybe_checkpoint()
            return sealed

    def _seal(self) -> int:
        if self.head is None:
            self.head = self._take_up()
            metrics.AUDIT_SEALED_THROUGH.labels(self.app.name).set(self.head[0])
        else:
            self._still_there(*self.head)
        position, previous = self.head
        newest, orphan = self.store.ahead(position)
        if orphan is not None:
            raise _Stop(orphan, "a seal with no event at its position: the event was deleted, "
                                "or the seal was written by someone other than a sealer")
        check, link, continuity = self.app.event_mac.check, self.chain.link, self._continuity
        sealed = 0
        business = self._business_through
        for page in replay.pages(self.app, position + 1, BATCH):
            continuity.prime(page, position)
            stored = self.store.range(position + 1, page[-1][0])
            si = 0
            chained: list[tuple[int, bytes]] = []
            new: list[tuple[int, bytes]] = []
            try:
                for pos, originator_id, version, topic, state in page:
                    if si < len(stored) and stored[si][0] < pos:
                        raise _Stop(stored[si][0], "a sealed event is missing (deleted, or its "
                                                   "position changed)")
                    if not check(originator_id, version, topic, state):
                        raise _Stop(pos, MAC_PROBLEM)
                    problem = continuity.follow(originator_id, version)
                    if problem:
                        raise _Stop(pos, problem)
                    previous = link(previous, pos, originator_id, version, topic, state)
                    sealed_before = si < len(stored) and stored[si][0] == pos
                    # Another replica (or an earlier run) sealed it: it must have computed
                    # what this one does.
                    if sealed_before and stored[si][1] != previous:
                        raise _Stop(pos, "the seal stored for this event is not the one it "
                                         "chains to: the event was changed, or the seal was "
                                         "written by someone other than a sealer")
                    if not sealed_before and pos < newest:
                        raise _Stop(pos, "an event that was never sealed sits inside the "
                                         "sealed log (inserted, or moved here)")
                    if topic == CHECKPOINT_TOPIC:  # held to the chain before it is sealed
                        self._passed_checkpoint(pos, bytes(state), chained)
                    else:
                        business = pos
                    if sealed_before:
                        si += 1
                    else:
                        new.append((pos, previous))
                    chained.append((pos, previous))
                if si < len(stored):
                    raise _Stop(stored[si][0], "a sealed event is missing (deleted, or its "
                                               "position changed)")
            except _Stop as stop:
                # What came before the bad event is checked: seal it, and stand there.
                if self._add(new):
                    sealed += len(new)
                    if chained:
                        self._reached(chained[-1], business)
                stop.sealed = sealed
                raise
            if not self._add(new):
                return sealed  # another replica sealed these first: compared next round
            sealed += len(new)
            self._reached(chained[-1], business)
            position = page[-1][0]
        return sealed

    def _reached(self, head: tuple[int, bytes], business_through: int) -> None:
        self.head = head
        self._business_through = max(self._business_through, business_through)
        metrics.AUDIT_SEALED_THROUGH.labels(self.app.name).set(head[0])

    def _add(self, seals: list[tuple[int, bytes]]) -> bool:
        """Stores `seals`; False when another replica stored some of these positions first
        (the primary key), which the next round compares with its own."""
        if not seals:
            return True
        try:
            self.store.add(seals)
        except (IntegrityError, psycopg.IntegrityError):
            # Only a race if someone stored a seal there meanwhile; anything else (a trigger, a
            # constraint) is a failure to say so, not to pass over.
            if not self.store.range(seals[0][0], seals[-1][0]):
                raise
            log.info("sealer.raced", position=seals[0][0])
            self._continuity.forget()
            return False
        return True

    def _take_up(self) -> tuple[int, bytes]:
        """Where a starting sealer takes up the chain: the position and seal of the newest
        checkpoint in the log, which the log's own MAC vouches for (the seals table, nobody),
        provided the chain still reaches it and agrees with it; the start of the log if it has
        no checkpoint. Everything stored after it is checked again by the round."""
        found = self.store.newest_checkpoint()
        if found is None:
            return 0, GENESIS
        at, originator_id, version, topic, state = found
        # A checkpoint row that fails is where the sealer stops: not a reason to start without
        # one, which would let it rebuild the chain over what the checkpoint covers.
        if not self.app.event_mac.check(originator_id, version, topic, state):
            raise _Stop(at, MAC_PROBLEM)
        try:
            checkpoint = checkpoint_in(state)
        except (BadCheckpoint, KeyError, ValueError, orjson.JSONDecodeError):
            raise _Stop(at, "a checkpoint event that holds no checkpoint") from None
        self._newest = (at, checkpoint)
        metrics.AUDIT_CHECKPOINT_POSITION.labels(self.app.name).set(checkpoint.position)
        seal = self.store.at(checkpoint.position)
        if seal is None:
            below = self.store.sealed_before(checkpoint.position)
            raise _Stop(below + 1, (
                f"the seal chain ends at position {below}, but the checkpoint signed at "
                f"position {at} covers through {checkpoint.position}: the seals after {below} "
                "were deleted (with the events they sealed, or to rebuild the chain without "
                "them)"))
        if seal != checkpoint.seal:
            raise _Stop(checkpoint.position, (
                f"the seal at position {checkpoint.position} is not the one the checkpoint "
                f"signed at position {at} holds: the chain was rebuilt after something at or "
                "before it was changed, deleted or inserted"))
        return checkpoint.position, checkpoint.seal

    def _still_there(self, position: int, seal: bytes) -> None:
        """The head this sealer reached is still stored as it left it: its seal, and its
        event. (Deleting the newest events with their seals leaves a log that agrees with
        itself; only one who remembers the head sees it.)"""
        if position == 0:
            return
        stored, event = self.store.still(position)
        if stored is None:
            below = self.store.sealed_before(position)
            raise _Stop(below + 1, (
                f"the seal chain ends at position {below}, but this sealer sealed through "
                f"{position}: the seals after {below} were deleted (with the events they "
                "sealed, or to rebuild the chain without them)"))
        if stored != seal:
            raise _Stop(position, f"the seal stored at position {position} is not the one this "
                                  "sealer computed there: it was replaced")
        if not event:
            raise _Stop(position, f"the event at position {position}, which this sealer "
                                  "sealed, was deleted")

    def _passed_checkpoint(self, pos: int, state: bytes,
                           chained: list[tuple[int, bytes]]) -> None:
        try:
            checkpoint = checkpoint_in(state)
        except (BadCheckpoint, KeyError, ValueError, orjson.JSONDecodeError):
            raise _Stop(pos, "a checkpoint event that holds no checkpoint") from None
        # The chain's value where the checkpoint signed it: computed in this round, this
        # sealer's head before it, or (another replica's, signed further back) as stored, which
        # can only make a mismatch of a genuine checkpoint, never hide one.
        seal = next((s for p, s in reversed(chained) if p == checkpoint.position), None)
        if seal is None:
            assert self.head is not None
            seal = (self.head[1] if self.head[0] == checkpoint.position
                    else self.store.at(checkpoint.position))
        if seal != checkpoint.seal:
            raise _Stop(pos, (
                f"the checkpoint stored at position {pos} signed seal "
                f"{checkpoint.seal.hex()[:16]}… for position {checkpoint.position}; the chain "
                "now gives another: something at or before it was changed, deleted or "
                "inserted"))
        self._newest = (pos, checkpoint)
        metrics.AUDIT_CHECKPOINT_POSITION.labels(self.app.name).set(checkpoint.position)

    def _maybe_checkpoint(self) -> None:
        """Signs the chain's head — this sealer's, never the table's — every
        `checkpoint_events` events or `checkpoint_seconds` seconds, whichever comes first, and
        only when something besides checkpoints was stored after what the newest checkpoint
        covers: an idle log signs nothing, and no command is left uncovered because the
        checkpoint signed before it was sealed was stored after it."""
        if self.signer is None or self.head is None:
            return
        position, seal = self.head
        if position == 0 or position == self._signed_position:
            return
        newest = self._newest
        at, covered = (newest[0], newest[1].position) if newest is not None else (0, 0)
        if position < at or self._business_through <= covered:
            return
        if (position - covered < self.checkpoint_events
                and time.monotonic() - self._signed_at < self.checkpoint_seconds):
            return
        signed = self.signer.sign(position, seal)
        with context.acting_as(RequestContext(actor=SEALER_ACTOR, rpc="audit:checkpoint")):
            try:
                recordings = self.app.save(LogCheckpoint.of(signed, self.signer))
            except IntegrityError:
                pass  # another replica signed this very head first
            else:
                # Remembered at once, not only once sealed: a witness may hold it before the
                # sealer's next round, and the log must never be let fall behind it.
                self._newest = (recordings[-1].notification.id, signed)
                metrics.AUDIT_CHECKPOINT_POSITION.labels(self.app.name).set(position)
        self._signed_at = time.monotonic()
        self._signed_position = position
        log.info("audit.checkpoint_signed", position=position, seal=seal.hex())


# ---------------------------------------------------------------------- verification


@dataclass
class Verdict:
    checked: int
    sealed_through: int
    head_seal: str
    first_broken: int = 0
    problem: str = ""
    # Checkpoints compared with the chain: those an auditor brought and those in the log.
    checkpoints_checked: int = 0
    # The newest checkpoint stored in the log (its signed note), "" if none.
    newest_checkpoint: str = ""
    # Checkpoints brought that were not used, and why (not signed by this log's key ...).
    rejected: list[str] = field(default_factory=list)
    # After the log: the stored snapshots checked so far, and what is wrong with any of them.
    snapshots_checked: int = 0
    snapshot_problems: list[str] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.problem


@dataclass
class _Claim:
    """A checkpoint to hold the chain to: where it came from, for the verdict's words."""

    checkpoint: Checkpoint
    source: str


def accepted_checkpoints(notes: Sequence[str], verifier: CheckpointVerifier | None,
                         pinned: Sequence[str] = ()) -> tuple[list[_Claim], list[str]]:
    """The checkpoints to hold the chain to, and why the rest of those given were not used.
    `notes`: used if this log's key (`verifier`) signed them for this log's origin. `pinned`:
    notes the auditor's own tool already verified with a key the auditor pinned, used whatever
    key and origin this service has now (one who rebuilt the chain could have changed both)."""
    found, rejected = readable(notes)
    claims = []
    for name, note, checkpoint in found:
        if verifier is None:
            rejected.append(f"{name}: no key to check its signature with")
        elif checkpoint.origin != verifier.name:
            rejected.append(f"{name}: of the log {checkpoint.origin}; this is {verifier.name}")
        else:
            try:
                claims.append(_Claim(verifier.verify(note), f"the checkpoint brought for "
                                                            f"position {checkpoint.position}"))
            except BadCheckpoint as bad:
                rejected.append(f"{name} ({checkpoint.origin} {checkpoint.position}): {bad}")
    found, unreadable = readable(pinned, "pinned checkpoint")
    rejected += unreadable
    claims += [_Claim(checkpoint, f"the checkpoint you verified for position "
                                  f"{checkpoint.position}") for _, _, checkpoint in found]
    return claims, rejected


def verify(app: QijiApplication, *, checkpoints: Sequence[str] = (),
           verifier: CheckpointVerifier | None = None, pinned: Sequence[str] = (),
           progress_every: int = 100_000) -> Iterator[Verdict]:
    """Walks the log and the seals together (in one snapshot on PostgreSQL; memory does not
    grow with the log), checking each event's MAC, the seal chain, and the chain against every
    checkpoint: those stored in the log, `checkpoints` (signed notes an outside party kept,
    used only if `verifier` — this log's key — signed them) and `pinned` (notes the caller
    verified itself with keys it pinned). Then every stored snapshot (check_snapshots). Yields
    a progress verdict now and then (and after each snapshot: one of a perk claimed a million
    times takes a minute to replay) and the final verdict last. It reads only: it never writes,
    nor creates a table."""
    claims, rejected = accepted_checkpoints(checkpoints, verifier, pinned)
    walk = _Walk(app, claims, rejected)
    last = None
    for verdict in walk.run(progress_every):
        if last is not None:
            yield last
        last = verdict
    if last is None:
        return
    # The verdict on the log; the snapshots' is added to it.
    for problem in check_snapshots(app):
        last.snapshots_checked += 1
        if problem:
            last.snapshot_problems.append(problem)
        yield replace(last, snapshot_problems=list(last.snapshot_problems))  # progress
    yield last


def check_snapshots(app: QijiApplication) -> Iterator[str]:
    """For each stored snapshot, what is wrong with it ("" when nothing): its MAC, then — when
    today's code keeps its kind's state in the snapshot's shape — that it reads back as the very
    aggregate its events make at its version (one of another format is passed over by every
    read, so it misleads no one; only its MAC is checked). Reads only. A problem names the
    aggregate, the version and the fields that differ, never a value."""
    if app.snapshots is None:
        return
    for ident, version in stored_snapshots(app.snapshots.recorder):
        where = f"the snapshot of {ident} at version {version}"
        started = time.perf_counter()
        try:
            found = list(app.snapshots.get(ident, gt=version - 1, lte=version))
        except EventIntegrityError:
            yield (f"{where}: its MAC fails (written or altered by someone other than the "
                   "service; reads pass it over for the events)")
            continue
        if not found:
            continue  # replaced by a newer one since it was listed
        problem = _snapshot_problem(app, found[0])
        log.info("audit.verify.snapshot", aggregate_id=str(ident), version=version,
                 intact=not problem, seconds=round(time.perf_counter() - started, 3))
        yield f"{where}: {problem}" if problem else ""


def _snapshot_problem(app: QijiApplication, snapshot: Any) -> str:
    """What is wrong with a snapshot whose MAC holds ("" when nothing)."""
    if not snapshot.usable():
        return ""
    try:
        held = snapshot.mutate(None)
    except Exception as error:
        return (f"today's code cannot read it ({type(error).__name__}; reads pass it over for "
                "the events)")
    version = snapshot.originator_version
    try:
        replayed = project(None, app.events.get(snapshot.originator_id, lte=version))
    except EventIntegrityError as error:
        return f"the events it was taken from fail their checks ({error})"
    if replayed is None or replayed.version != version:
        return ("the log holds " + (f"only {replayed.version} versions" if replayed is not None
                                    else "no events") + " of that aggregate")
    ours, theirs = vars(held), vars(replayed)
    differ = sorted(name for name in ours.keys() | theirs.keys()
                    if ours.get(name, _ABSENT) != theirs.get(name, _ABSENT))
    if differ:
        return ("it is not the state its events make (differs in "
                f"{', '.join(name.lstrip('_') for name in differ)})")
    return ""


_ABSENT = object()


class _Walk:
    def __init__(self, app: QijiApplication, claims: list[_Claim], rejected: list[str]):
        self.app = app
        self.store = SealStore(app)
        self.rejected = rejected
        self.claims = sorted(claims, key=lambda c: c.checkpoint.position)
        self.checked = 0
        self.head = (0, GENESIS)
        self.checkpoints_checked = 0
        self.newest_note = ""
        self.last_vouched = 0  # the newest position a checkpoint held up to
        self.farthest: _Claim | None = None  # the checkpoint that covers the most

    def verdict(self, broken: int = 0, problem: str = "") -> Verdict:
        return Verdict(self.checked, self.head[0], self.head[1].hex(), broken, problem,
                       self.checkpoints_checked, self.newest_note, list(self.rejected))

    def run(self, progress_every: int) -> Iterator[Verdict]:
        # Two checkpoints signed for one position that disagree prove a rewrite on their own.
        seen: dict[int, _Claim] = {}
        for claim in self.claims:
            other = seen.setdefault(claim.checkpoint.position, claim)
            if other.checkpoint.seal != claim.checkpoint.seal:
                yield self.verdict(claim.checkpoint.position, (
                    f"two checkpoints signed for position {claim.checkpoint.position} hold "
                    "different seals: the log was rewritten and its head signed again"))
                return
        for claim in self.claims:
            self._covers(claim)
        pages = (_verify_pages(self.app, seals=not self.store.missing) if self.store.postgres
                 else _sqlite_verify_pages(self.app, self.store))
        try:
            yield from self._walk(pages, progress_every)
        finally:
            pages.close()

    def _covers(self, claim: _Claim) -> None:
        farthest = self.farthest
        if farthest is None or claim.checkpoint.position > farthest.checkpoint.position:
            self.farthest = claim

    def _walk(self, pages: Iterator[Any], progress_every: int) -> Iterator[Verdict]:
        # The usual row (sealed, with a v2 MAC) is checked inline: its MAC, and its link of the
        # chain with the key's HMAC pads hashed once — the same computations as EventMac.check
        # and Chain.link (tests hold the sealer and verify to each other) without a call per
        # step; anything else takes the general path.
        check = self.app.event_mac.check
        new_mac = self.app.event_mac.v2()
        chain_inner, chain_outer = Hmac(self.app.audit_key).pads()
        sha256 = hashlib.sha256
        kinds: dict[str, bytes] = {}  # topics, encoded once
        continuity = Continuity(self.store.events)
        claims, wanted = self.claims, 0
        next_claim = claims[0].checkpoint.position if claims else _NEVER
        previous = GENESIS
        last_row = 0
        head_position = -1
        started = time.perf_counter()
        for item in pages:
            if head_position < 0:
                self.head = item  # the first item is the head of the chain, in the snapshot
                head_position = item[0]
                continue
            rows, seals = item
            si, ns = 0, len(seals)
            tail = [(r[0], uuid.UUID(r[1]), *r[2:5]) for r in rows if r[0] > head_position]
            if tail:
                continuity.prime(tail, tail[0][0] - 1)
            for pos, originator_id, version, topic, state, ident16 in rows:
                if si < ns and seals[si][0] == pos:
                    ident = originator_id.encode()
                    kind = kinds.get(topic)
                    if kind is None:
                        kind = kinds[topic] = topic.encode()
                    if state[-V2_TAIL:-66] == V2_MARK and state[-2:] == b'"}':
                        mac = new_mac()
                        mac.update(b"%s%d\n%s\n%s" % (ident16, version, kind, state[:-V2_TAIL]))
                        intact = mac.hexdigest().encode() == state[-66:-2]
                    else:
                        intact = check(originator_id, version, topic, state)
                    if not intact:
                        yield self.verdict(pos, MAC_PROBLEM)
                        return
                    inner = chain_inner()
                    inner.update(previous + sha256(b"%d\x00%s\x00%d\x00%s\x00%s" % (
                        pos, ident, version, kind, state)).digest())
                    outer = chain_outer()
                    outer.update(inner.digest())
                    previous = outer.digest()
                    if previous != seals[si][1]:
                        yield self.verdict(pos, "the event differs from what was sealed "
                                                "(changed or reordered)")
                        return
                    si += 1
                else:
                    if si < ns and seals[si][0] < pos:
                        yield self.verdict(seals[si][0], "a sealed event is missing (deleted, "
                                                         "or its position changed)")
                        return
                    if not check(originator_id, version, topic, state):
                        yield self.verdict(pos, MAC_PROBLEM)
                        return
                    if pos <= head_position:
                        yield self.verdict(pos, "an event that was never sealed sits inside "
                                                "the sealed log (inserted, or moved here)")
                        return
                    problem = continuity.follow(uuid.UUID(originator_id), version)
                    if problem:
                        yield self.verdict(pos, problem)
                        return
                while next_claim <= pos:
                    claim = claims[wanted]
                    wanted += 1
                    next_claim = (claims[wanted].checkpoint.position if wanted < len(claims)
                                  else _NEVER)
                    found = self._hold(claim, pos, previous if pos <= head_position else None)
                    if found:
                        yield self.verdict(*found)
                        return
                if topic == CHECKPOINT_TOPIC:
                    found = self._in_log(pos, bytes(state))
                    if found:
                        yield self.verdict(*found)
                        return
                last_row = pos
                self.checked += 1
                if self.checked % progress_every == 0:
                    log.info("audit.verify.progress", checked=self.checked, position=pos,
                             per_second=round(self.checked / (time.perf_counter() - started)))
                    yield self.verdict()
            if si < ns:  # seals left over with no event after them: the newest were deleted
                yield self.verdict(seals[si][0], "a sealed event is missing (deleted, or its "
                                                 "position changed)")
                return
        farthest = self.farthest
        if farthest is not None and farthest.checkpoint.position > last_row:
            yield self.verdict(last_row + 1, (
                f"the log ends at position {last_row}, but {farthest.source} covers through "
                f"{farthest.checkpoint.position}: the events after {last_row} were deleted, "
                "with their seals"))
            return
        if farthest is not None and farthest.checkpoint.position > self.head[0]:
            yield self.verdict(self.head[0] + 1, (
                f"the seal chain ends at position {self.head[0]}, but {farthest.source} "
                f"covers through {farthest.checkpoint.position}: the seals after "
                f"{self.head[0]} were deleted"))
            return
        yield self.verdict()

    def _hold(self, claim: _Claim, pos: int, chained: bytes | None) -> tuple[int, str] | None:
        """Compares a checkpoint with the chain when the walk reaches its position (`pos`:
        the row just checked; `chained`: the chain's value there if it is sealed)."""
        checkpoint = claim.checkpoint
        if checkpoint.position < pos:
            return checkpoint.position, (
                f"{claim.source} covers the event at position {checkpoint.position}, which "
                "the log no longer holds (deleted, or moved)")
        if chained is None:
            return None  # in the unsealed tail: the end of the walk judges it
        return self._compare(claim, chained)

    def _in_log(self, pos: int, state: bytes) -> tuple[int, str] | None:
        try:
            checkpoint = checkpoint_in(state)
        except (BadCheckpoint, KeyError, ValueError, orjson.JSONDecodeError):
            return pos, "a checkpoint event that holds no checkpoint"
        self.newest_note = checkpoint.note
        claim = _Claim(checkpoint, f"the checkpoint stored at position {pos}")
        self._covers(claim)
        if checkpoint.position > self.head[0]:
            return None  # beyond the seals: the end of the walk judges it
        # The walk has found the stored seals up to here to be the chain's own values.
        return self._compare(claim, self.store.at(checkpoint.position))

    def _compare(self, claim: _Claim, seal: bytes | None) -> tuple[int, str] | None:
        checkpoint = claim.checkpoint
        self.checkpoints_checked += 1
        if seal == checkpoint.seal:
            self.last_vouched = max(self.last_vouched, checkpoint.position)
            return None
        return self.last_vouched + 1, (
            f"the chain at position {checkpoint.position} is not what {claim.source} signed: "
            f"an event after position {self.last_vouched} and at or before "
            f"{checkpoint.position} was changed, deleted or inserted, and the chain rebuilt")


PAGE = replay.PAGE
_NEVER = 2**63


def _sqlite_verify_pages(app: QijiApplication, store: SealStore) -> Generator[Any, None, None]:
    """The head of the chain, then pages of (rows, the seals up to the page's last row)."""
    yield store.head()
    start = 1
    for page in replay.pages(app, 1):
        yield ([(pos, str(i), version, topic, bytes(state), id_bytes(i))
                for pos, i, version, topic, state in page], store.range(start, page[-1][0]))
        start = page[-1][0] + 1
    yield [], store.range(start, 2**63 - 1)


def _verify_pages(app: QijiApplication, *, seals: bool = True) -> Generator[Any, None, None]:
    """The head of the chain, then pages of (rows, the seals of positions up to the page's last
    row), read in one REPEATABLE READ snapshot through two server-side binary cursors by a
    thread one page ahead (PostgreSQL works on the other core meanwhile). `seals` False: there
    is no seals table (never sealed, or dropped), every page has none."""
    recorder: Any = app.recorder
    schema = sql.Identifier(recorder.datastore.schema)
    # The id as text (the chain hashes it) and as its 16 bytes (the MAC does): PostgreSQL makes
    # both faster than a UUID object in Python would.
    events = sql.SQL("SELECT notification_id, originator_id::text, originator_version, topic,"
                     " state, pg_catalog.uuid_send(originator_id) FROM {}.{}"
                     " ORDER BY notification_id").format(
        schema, sql.Identifier(recorder.events_table_name))
    # Without the table: the same two queries, over no rows.
    table = sql.SQL("{}.audit_seals").format(schema) if seals else sql.SQL(
        "(SELECT 0::bigint AS notification_id, ''::bytea AS seal WHERE false) AS none")
    seals_query = sql.SQL("SELECT notification_id, seal FROM {} ORDER BY "
                          "notification_id").format(table)
    head = sql.SQL("SELECT notification_id, seal FROM {} ORDER BY notification_id"
                   " DESC LIMIT 1").format(table)

    def fetch(put: Callable[[Any], bool]) -> None:
        with psycopg.connect(postgres_conninfo(app.settings)) as conn:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            row = conn.execute(head).fetchone()
            if not put((int(row[0]), bytes(row[1])) if row else (0, GENESIS)):
                return
            with conn.cursor(name="qiji_verify_events", binary=True) as ev, conn.cursor(
                    name="qiji_verify_seals", binary=True) as se:
                ev.execute(events)
                se.execute(seals_query)
                waiting: list[Any] = []
                more_seals = True
                while True:
                    rows = ev.fetchmany(PAGE)
                    last = rows[-1][0] if rows else None
                    # The seals up to the page's last row (all that are left, after the
                    # last page): sealed positions with no row show as deleted.
                    while more_seals and (last is None or not waiting
                                          or waiting[-1][0] <= last):
                        got = se.fetchmany(PAGE)
                        waiting += got
                        more_seals = bool(got)
                    cut = len(waiting)
                    while last is not None and cut and waiting[cut - 1][0] > last:
                        cut -= 1
                    if not put((rows, waiting[:cut])) or not rows:
                        return
                    waiting = waiting[cut:]

    return replay.prefetched(fetch, f"{app.name}-verify")


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
    # Every event Qiji stores is an aggregate's, which has a timestamp.
    for event in cast("Iterator[Aggregate.Event]", app.events.get(aggregate_id)):
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
    aggregate: Aggregate = app.aggregates.replayed(aggregate_id, version)
    state = {k.lstrip("_"): ("[sealed]" if k.startswith("sealed_") and v else _plain(v))
             for k, v in vars(aggregate).items() if k not in ("_pending_events",)}
    return masking.redact(state, context.current().actor.roles)


def _in_key_order(keys: Mapping[Any, Any]) -> list[Any]:
    try:
        return sorted(keys)
    except TypeError:  # keys of several kinds
        return sorted(keys, key=str)


def _plain(value: Any) -> Any:
    """An aggregate's value as the fields an auditor reads: what aggregates keep as values
    (an immutables.Map, a named tuple, a value that says what its state is, such as a perk's
    quota ledger) as dicts, so that masking sees every field and no repr reaches the page."""
    as_state = getattr(value, "as_state", None)
    if callable(as_state):
        return _plain(as_state())
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, Mapping):
        # A mapping that keeps no order (an immutables.Map iterates in hash order, which
        # differs from process to process): by key, so that the same state reads the same
        # (numbers as numbers: a campaign's packages by the order they went out).
        return {k: _plain(value[k]) for k in _in_key_order(value)}
    if isinstance(value, tuple) and hasattr(value, "_asdict"):
        return _plain(value._asdict())
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
