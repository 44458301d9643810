"""Audit: tamper evidence for the event log, and the history of any aggregate.

Three layers, each catching what the one before cannot:

1. Every event carries a MAC (shared/integrity.py) under a key derived from the master key,
   which the database never holds: a row forged or altered by someone with only database access
   fails it, and every reader (this sealer, followers, views, the public feed behind the
   platform gateway and the relay) stops there.
2. A sealer in each service chains every event, in log order, a moment after it is stored:
   seal N = HMAC(key, seal N-1 ‖ SHA-256(position, aggregate, version, topic, state)), kept in
   `audit_seals`. A row deleted, inserted or moved inside the sealed log breaks the chain. The
   sealer checks each event before sealing it — its MAC, and that its version follows its
   aggregate's previous one — and stops at the first that fails: it never seals past it.
3. Signed checkpoints (shared/checkpoints.py): every N events or T seconds the sealer signs the
   head of the chain (position, seal) with the audit signing key and stores it as an event of
   the log, which the platform feed and the relay publish. Parties outside the city's database
   keep them. Deleting the newest events together with their seals, or deleting an event and
   every seal after it so that the chain is rebuilt, both leave the log and its chain
   consistent with themselves; neither is consistent with a checkpoint signed before.

`verify` walks the log and the seals together in one snapshot (memory flat, whatever the log's
length), with the checkpoints found in the log and any an auditor brings, and names the first
position that fails.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from typing import Any

import orjson
import psycopg
import structlog
from eventsourcing.persistence import IntegrityError
from psycopg import sql

from shared import context, masking, metrics, replay
from shared.application import MAC_KEY, META_KEY, QijiApplication
from shared.checkpoints import (
    CHECKPOINT_TOPIC,
    BadCheckpoint,
    Checkpoint,
    CheckpointSigner,
    CheckpointVerifier,
    LogCheckpoint,
    unverified,
)
from shared.context import Actor, RequestContext
from shared.integrity import ALARM, MAC_PROBLEM, V2_MARK, V2_TAIL, Hmac, id_bytes
from shared.persistence import STORE_DOWN_ERRORS, OutageNotice, postgres_conninfo

log = structlog.get_logger(__name__)

BATCH = 1000
GENESIS = b"qiji-audit-genesis"
SEALER = "sealer"
# The sealer's memory of aggregates' newest versions: bounded, so it stays flat on any log (a
# miss costs one query per page for the aggregates it misses).
VERSIONS_REMEMBERED = 100_000
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
    def __init__(self, app: QijiApplication):
        settings = app.settings
        self._app = app
        self._datastore = app.recorder.datastore  # type: ignore[attr-defined]
        self.postgres = settings.persistence == "postgres"
        # The schema name is checked to be a plain identifier by the configuration loader.
        self.table = (f'"{settings.postgres_schema}".audit_seals' if self.postgres
                      else "audit_seals")
        recorder: Any = app.recorder
        self.events_table = (f'"{settings.postgres_schema}".{recorder.events_table_name}'
                             if self.postgres else recorder.events_table_name)
        self.position_column = "notification_id" if self.postgres else "rowid"
        self._p = "%s" if self.postgres else "?"
        blob = "BYTEA" if self.postgres else "BLOB"
        with self._datastore.transaction(commit=True) as curs:
            curs.execute(f"CREATE TABLE IF NOT EXISTS {self.table} ("
                         f" notification_id BIGINT PRIMARY KEY, seal {blob} NOT NULL,"
                         f" sealed_at TEXT NOT NULL)")

    def head(self) -> tuple[int, bytes]:
        with self._datastore.transaction(commit=False) as curs:
            curs.execute(f"SELECT notification_id, seal FROM {self.table}"  # noqa: S608
                         f" ORDER BY notification_id DESC LIMIT 1")
            row = curs.fetchone()
        return (int(row["notification_id"]), bytes(row["seal"])) if row else (0, GENESIS)

    def at(self, position: int) -> bytes | None:
        with self._datastore.transaction(commit=False) as curs:
            curs.execute(f"SELECT seal FROM {self.table}"  # noqa: S608
                         f" WHERE notification_id = {self._p}", (position,))
            row = curs.fetchone()
        return bytes(row["seal"]) if row else None

    def add(self, seals: list[tuple[int, bytes]]) -> None:
        now = datetime.now(UTC).isoformat()
        with self._datastore.transaction(commit=True) as curs:
            curs.executemany(f"INSERT INTO {self.table} (notification_id, seal, sealed_at)"  # noqa: S608
                             f" VALUES ({self._p}, {self._p}, {self._p})",
                             [(notification_id, seal, now) for notification_id, seal in seals])

    def range(self, start: int, stop: int) -> list[tuple[int, bytes]]:
        with self._datastore.transaction(commit=False) as curs:
            curs.execute(f"SELECT notification_id, seal FROM {self.table}"  # noqa: S608
                         f" WHERE notification_id >= {self._p} AND notification_id <= {self._p}"
                         f" ORDER BY notification_id", (start, stop))
            return [(int(r["notification_id"]), bytes(r["seal"])) for r in curs.fetchall()]

    def newest_checkpoint(self) -> tuple[int, Checkpoint] | None:
        """The newest checkpoint stored in the log, with its own position; None if there is
        none (or if its MAC fails: the sealer stops at that row when it gets there)."""
        with self._datastore.transaction(commit=False) as curs:
            curs.execute(f"SELECT {self.position_column} AS position, originator_id,"  # noqa: S608
                         f" originator_version, topic, state FROM {self.events_table}"
                         f" WHERE topic = {self._p} ORDER BY {self.position_column} DESC"
                         f" LIMIT 1", (CHECKPOINT_TOPIC,))
            row = curs.fetchone()
        if row is None:
            return None
        originator_id = row["originator_id"]
        if not self.postgres:  # SQLite keeps the id's hex form
            originator_id = uuid.UUID(originator_id)
        if not self._app.event_mac.check(originator_id, row["originator_version"],
                                         row["topic"], bytes(row["state"])):
            return None
        return int(row["position"]), checkpoint_in(bytes(row["state"]))

    def newest_versions(self, originator_ids: Sequence[Any], through: int) -> dict[Any, int]:
        """Each aggregate's newest version stored at or before position `through`."""
        if not originator_ids:
            return {}
        with self._datastore.transaction(commit=False) as curs:
            if self.postgres:
                curs.execute(f"SELECT originator_id, max(originator_version) AS version"  # noqa: S608
                             f" FROM {self.events_table} WHERE originator_id = ANY(%s)"
                             f" AND notification_id <= %s GROUP BY originator_id",
                             (list(originator_ids), through))
                return {r["originator_id"]: int(r["version"]) for r in curs.fetchall()}
            # SQLite keeps ids in their hex form (the library's SQLite recorder).
            by_text = {i.hex if isinstance(i, uuid.UUID) else str(i): i for i in originator_ids}
            marks = ",".join("?" * len(by_text))
            curs.execute(f"SELECT originator_id, max(originator_version) AS version"  # noqa: S608
                         f" FROM {self.events_table} WHERE originator_id IN ({marks})"
                         f" AND rowid <= ? GROUP BY originator_id", [*by_text, through])
            return {by_text[r["originator_id"]]: int(r["version"]) for r in curs.fetchall()
                    if r["originator_id"] in by_text}


def checkpoint_in(state: bytes) -> Checkpoint:
    """The checkpoint a stored LogCheckpoint.Signed event holds (its MAC checked already)."""
    return unverified(orjson.loads(state)["note"])


class Continuity:
    """Checks that each aggregate's versions follow on in log order (1, 2, 3 ...): an event
    deleted before it was sealed, or two of one aggregate's events swapped, shows as a version
    that does not follow the one before it. Remembers at most VERSIONS_REMEMBERED aggregates;
    the others' newest versions are asked of the store, a page at a time."""

    def __init__(self, store: SealStore):
        self._store = store
        self._newest: dict[Any, int] = {}

    def prime(self, rows: Sequence[tuple[Any, ...]], through: int) -> None:
        """Looks up, in one query, the aggregates of `rows` (the page after position
        `through`) it does not remember."""
        newest = self._newest
        if len(newest) > VERSIONS_REMEMBERED:
            newest.clear()
        wanted = {row[1] for row in rows if row[2] > 1 and row[1] not in newest}
        if wanted:
            found = self._store.newest_versions(list(wanted), through)
            for originator_id in wanted:
                newest[originator_id] = found.get(originator_id, 0)

    def follow(self, originator_id: Any, version: int) -> str:
        """"" when `version` follows the aggregate's newest version so far (then it is the
        newest); otherwise what is wrong. Only for rows of a page `prime`d."""
        newest = self._newest.get(originator_id, 0)
        if version != newest + 1:
            if version <= newest:
                return (f"version {version} of {originator_id} comes after its version "
                        f"{newest}: events were moved or inserted")
            return (f"version {version} of {originator_id} follows its version {newest}: "
                    f"version {newest + 1} is missing (deleted) or comes later (moved)")
        self._newest[originator_id] = version
        return ""

    def forget(self) -> None:
        self._newest.clear()


class _Stop(Exception):
    def __init__(self, position: int, problem: str):
        super().__init__(problem)
        self.position = position
        self.problem = problem
        self.sealed = 0


def _row_pages(app: QijiApplication, start: int, size: int = BATCH
               ) -> Iterator[list[tuple[Any, ...]]]:
    """Pages of stored rows from `start`: the usual handful with one query; a long stretch
    (a first sealing, a long absence) streamed through one cursor."""
    first = [(n.id, n.originator_id, n.originator_version, n.topic, n.state)
             for n in app.read_log(start, size)]
    if first:
        yield first
    if len(first) < size:
        return
    rest = replay.rows(app, first[-1][0] + 1)
    while page := list(islice(rest, size)):
        yield page


class Sealer:
    """Follows the service's own log and seals each event once, after checking it; signs
    checkpoints of the chain's head. Runs in every replica; the seals' primary key lets only one
    replica's seal of a position be stored, and a checkpoint's id (from its position) only one
    replica's checkpoint."""

    upstream = "seal"

    def __init__(self, app: QijiApplication, every_seconds: float = 1.0, *,
                 signer: CheckpointSigner | None = None, checkpoint_events: int = 1000,
                 checkpoint_seconds: float = 60.0):
        self.app = app
        self.store = SealStore(app)
        self.chain = Chain(app.audit_key)
        self.every = every_seconds
        self.signer = signer
        self.checkpoint_events = checkpoint_events
        self.checkpoint_seconds = checkpoint_seconds
        self.stopped: tuple[int, str] | None = None
        self._lock = threading.Lock()
        self._outage = OutageNotice("sealer")
        self._continuity = Continuity(self.store)
        self._newest: tuple[int, Checkpoint] | None = None
        self._newest_loaded = False
        self._signed_at = time.monotonic()
        self._signed_position = 0

    def run_once(self) -> int:
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
            self.stopped = None
            ALARM.intact(self.app.name, SEALER)
            self._maybe_checkpoint()
            return sealed

    def _seal(self) -> int:
        position, previous = self.store.head()
        self._check_head(position)
        metrics.AUDIT_SEALED_THROUGH.labels(self.app.name).set(position)
        check, link, continuity = self.app.event_mac.check, self.chain.link, self._continuity
        sealed = 0
        for page in _row_pages(self.app, position + 1):
            continuity.prime(page, position)
            seals: list[tuple[int, bytes]] = []
            try:
                for pos, originator_id, version, topic, state in page:
                    if not check(originator_id, version, topic, state):
                        raise _Stop(pos, MAC_PROBLEM)
                    problem = continuity.follow(originator_id, version)
                    if problem:
                        raise _Stop(pos, problem)
                    previous = link(previous, pos, originator_id, version, topic, state)
                    seals.append((pos, previous))
                    if topic == CHECKPOINT_TOPIC:
                        self._passed_checkpoint(pos, bytes(state), seals)
            except _Stop as stop:
                if seals and self._add(seals):
                    sealed += len(seals)
                stop.sealed = sealed
                raise
            if not self._add(seals):
                return sealed  # another replica sealed these first: go on from its head next
            sealed += len(seals)
            position = page[-1][0]
            metrics.AUDIT_SEALED_THROUGH.labels(self.app.name).set(position)
        return sealed

    def _add(self, seals: list[tuple[int, bytes]]) -> bool:
        try:
            self.store.add(seals)
        except STORE_DOWN_ERRORS:
            raise
        except Exception:  # the primary key: another replica sealed these positions first
            log.info("sealer.raced", position=seals[0][0])
            self._continuity.forget()
            return False
        return True

    def _newest_checkpoint(self) -> tuple[int, Checkpoint] | None:
        # Looked up in the log once; from then on the sealer itself sees every checkpoint it
        # seals, and remembers the newest even if the row is later deleted.
        if not self._newest_loaded:
            self._newest = self.store.newest_checkpoint()
            self._newest_loaded = True
            if self._newest is not None:
                metrics.AUDIT_CHECKPOINT_POSITION.labels(self.app.name).set(
                    self._newest[1].position)
        return self._newest

    def _check_head(self, position: int) -> None:
        """The chain still reaches, and still agrees with, the newest checkpoint: if seals were
        deleted, the sealer must not rebuild the chain over what was deleted."""
        newest = self._newest_checkpoint()
        if newest is None:
            return
        at, checkpoint = newest
        if checkpoint.position > position:
            raise _Stop(position + 1, (
                f"the seal chain ends at position {position}, but the checkpoint signed at "
                f"position {at} covers through {checkpoint.position}: the seals after "
                f"{position} were deleted (with the events they sealed, or to rebuild the "
                "chain without them)"))
        if self.store.at(checkpoint.position) != checkpoint.seal:
            raise _Stop(checkpoint.position, (
                f"the seal at position {checkpoint.position} is not the one the checkpoint "
                f"signed at position {at} holds: the chain was rebuilt after something at or "
                "before it was changed, deleted or inserted"))

    def _passed_checkpoint(self, pos: int, state: bytes,
                           seals: list[tuple[int, bytes]]) -> None:
        try:
            checkpoint = checkpoint_in(state)
        except (BadCheckpoint, KeyError, ValueError, orjson.JSONDecodeError):
            raise _Stop(pos, "a checkpoint event that holds no checkpoint") from None
        seal = next((s for p, s in reversed(seals) if p == checkpoint.position), None)
        if seal is None:
            seal = self.store.at(checkpoint.position)
        if seal != checkpoint.seal:
            raise _Stop(pos, (
                f"the checkpoint stored at position {pos} signed seal "
                f"{checkpoint.seal.hex()[:16]}… for position {checkpoint.position}; the chain "
                "now gives another: something at or before it was changed, deleted or "
                "inserted"))
        self._newest = (pos, checkpoint)
        metrics.AUDIT_CHECKPOINT_POSITION.labels(self.app.name).set(checkpoint.position)

    def _maybe_checkpoint(self) -> None:
        """Signs the chain's head every `checkpoint_events` events or `checkpoint_seconds`
        seconds, whichever comes first, and only when something besides the newest checkpoint
        itself was stored since: an idle log signs nothing."""
        if self.signer is None:
            return
        position, seal = self.store.head()
        if position == 0 or position == self._signed_position:
            return
        newest = self._newest_checkpoint()
        at, covered = (newest[0], newest[1].position) if newest is not None else (0, 0)
        if position <= at:
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

    def run_forever(self, stopping: threading.Event) -> None:
        while not stopping.wait(self.every):
            try:
                self.run_once()
                self._outage.worked()
            except STORE_DOWN_ERRORS as error:  # the store is restarting: sealed later
                self._outage.failed(error)
            except Exception:
                log.exception("sealer.failed")


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

    @property
    def intact(self) -> bool:
        return not self.problem


@dataclass
class _Claim:
    """A checkpoint to hold the chain to: where it came from, for the verdict's words."""

    checkpoint: Checkpoint
    source: str


def accepted_checkpoints(notes: Sequence[str], verifier: CheckpointVerifier | None
                         ) -> tuple[list[_Claim], list[str]]:
    """The checkpoints among `notes` that this log's key signed (others' origins are left
    out silently: a witness's file holds every service's), and why the rest were not used."""
    claims, rejected = [], []
    for index, note in enumerate(notes):
        try:
            checkpoint = unverified(note)
        except BadCheckpoint as bad:
            rejected.append(f"checkpoint #{index + 1}: {bad}")
            continue
        if verifier is not None and checkpoint.origin != verifier.name:
            continue
        if verifier is None:
            rejected.append(f"checkpoint #{index + 1}: no key to check its signature with")
            continue
        try:
            checkpoint = verifier.verify(note)
        except BadCheckpoint as bad:
            rejected.append(f"checkpoint #{index + 1} ({checkpoint.origin} "
                            f"{checkpoint.position}): {bad}")
            continue
        claims.append(_Claim(checkpoint, f"the checkpoint brought for position "
                                         f"{checkpoint.position}"))
    return claims, rejected


def verify(app: QijiApplication, *, checkpoints: Sequence[str] = (),
           verifier: CheckpointVerifier | None = None,
           progress_every: int = 100_000) -> Iterator[Verdict]:
    """Walks the log and the seals together (in one snapshot on PostgreSQL; memory does not
    grow with the log), checking each event's MAC, the seal chain, and the chain against every
    checkpoint: those stored in the log, and `checkpoints` (signed notes an outside party kept,
    used only if `verifier` — this log's key — signed them). Yields a progress verdict now and
    then and the final verdict last."""
    claims, rejected = accepted_checkpoints(checkpoints, verifier)
    walk = _Walk(app, claims, rejected)
    yield from walk.run(progress_every)


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
        pages = _verify_pages(self.app) if self.store.postgres else _sqlite_verify_pages(
            self.app, self.store)
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
        continuity = Continuity(self.store)
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
        metrics.AUDIT_SEALED_THROUGH.labels(self.app.name).set(self.head[0])
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


def _sqlite_verify_pages(app: QijiApplication, store: SealStore) -> Iterator[Any]:
    """The head of the chain, then pages of (rows, their seals)."""
    yield store.head()
    start = 1
    while True:
        batch = app.read_log(start, PAGE)
        if not batch:
            yield [], store.range(start, 2**63 - 1)
            return
        yield ([(n.id, str(n.originator_id), n.originator_version, n.topic, bytes(n.state),
                 id_bytes(n.originator_id)) for n in batch], store.range(start, batch[-1].id))
        start = batch[-1].id + 1


def _verify_pages(app: QijiApplication) -> Iterator[Any]:
    """The head of the chain, then pages of (rows, the seals of positions up to the page's last
    row), read in one REPEATABLE READ snapshot through two server-side binary cursors by a
    thread one page ahead (PostgreSQL works on the other core meanwhile)."""
    recorder: Any = app.recorder
    schema = sql.Identifier(recorder.datastore.schema)
    # The id as text (the chain hashes it) and as its 16 bytes (the MAC does): PostgreSQL makes
    # both faster than a UUID object in Python would.
    events = sql.SQL("SELECT notification_id, originator_id::text, originator_version, topic,"
                     " state, pg_catalog.uuid_send(originator_id) FROM {}.{}"
                     " ORDER BY notification_id").format(
        schema, sql.Identifier(recorder.events_table_name))
    seals = sql.SQL("SELECT notification_id, seal FROM {}.audit_seals ORDER BY "
                    "notification_id").format(schema)
    head = sql.SQL("SELECT notification_id, seal FROM {}.audit_seals ORDER BY notification_id"
                   " DESC LIMIT 1").format(schema)

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
                se.execute(seals)
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
