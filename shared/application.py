"""The base of every service's application (its service layer): one eventsourcing Application
over the service's own store, with event metadata, idempotent commands, sealed personal data and
a readable log for the service's feed."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, cast

import psycopg
import structlog
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from eventsourcing.application import AggregateNotFoundError, Recording
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError, Mapper, Notification

from shared import context, metrics
from shared.config import Settings
from shared.errors import (
    FIELD_REQUIRED,
    INVALID_ID,
    Aborted,
    FieldViolation,
    InvalidArgument,
    NotFound,
    Violations,
    check_id,
)
from shared.idempotency import RequestRecord
from shared.integrity import MAC_KEY, EventIntegrityError, EventMac, audit_key
from shared.personal_data import KeyStore, PersonalDataVault
from shared.store import StoredApplication
from shared.store.persistence import postgres_conninfo
from shared.store.wake import LogWake, NotifyListener
from shared.tenancy import Owners, TenancyDirectory

log = structlog.get_logger(__name__)

META_KEY = "_meta"
# Optimistic concurrency: a command that lost a race re-reads and decides again this many times.
MAX_ATTEMPTS = 8


class MetadataMapper(Mapper):
    """Stamps every event with who acted, the request id and the correlation id, taken from the
    request context at the moment the event is stored, and with a MAC over everything stored
    (aggregate, version, topic, state) under a key the database never holds
    (shared/integrity.py). Every event read back is checked before anything is built from it:
    a row forged or altered by someone with only database access is never acted on, and
    `qiji audit verify` names it."""

    def __init__(self, *args: Any, mac: EventMac, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.mac = mac

    def to_stored_event(self, domain_event: Any) -> Any:
        if META_KEY not in vars(domain_event):
            object.__setattr__(domain_event, META_KEY, context.current().event_metadata())
        vars(domain_event).pop(MAC_KEY, None)
        stored = super().to_stored_event(domain_event)
        return type(stored)(originator_id=stored.originator_id,
                            originator_version=stored.originator_version, topic=stored.topic,
                            state=self.mac.seal_state(stored.originator_id,
                                                      stored.originator_version, stored.topic,
                                                      stored.state))

    def to_domain_event(self, stored_event: Any) -> Any:
        if not self.mac.check(stored_event.originator_id, stored_event.originator_version,
                              stored_event.topic, stored_event.state):
            raise EventIntegrityError(stored_event.originator_id,
                                      stored_event.originator_version,
                                      position=getattr(stored_event, "id", None))
        return super().to_domain_event(stored_event)


def event_metadata(domain_event: Any) -> dict[str, str]:
    return dict(vars(domain_event).get(META_KEY) or {})


@dataclass
class Outcome:
    """What a command decided: the aggregates whose new events to store, and the answer, a small
    JSON-able dict from which the entry point renders its response (also on a retry): stored as
    it is in the request's record, and given back as a CommandResult."""

    aggregates: Sequence[Aggregate]
    result: dict[str, Any] = field(default_factory=dict)


# eq=False: compared as a Mapping, so it equals the answer's dict as the stored dict did.
@dataclass(frozen=True, eq=False)
class CommandResult(Mapping[str, Any]):
    """What a command answered, the same on a retry of its request id: the aggregate it acted
    on (`id`, "" when it names none) at the `version` its events left it (0: none), which is
    what an entry point renders, and the whole answer as the request's record stores it
    (`answer`; also read by its keys, such as a perk's remaining quota)."""

    id: str
    version: int
    answer: Mapping[str, Any]

    @classmethod
    def of(cls, answer: Mapping[str, Any], id_key: str) -> CommandResult:
        # A command that names its aggregate's key must answer it: a missing key is a fault
        # in the command (KeyError, loudly), never an entry point rendering id "".
        return cls(id=str(answer[id_key]) if id_key else "",
                   version=int(answer.get("version") or 0), answer=answer)

    def __getitem__(self, key: str) -> Any:
        return self.answer[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.answer)

    def __len__(self) -> int:
        return len(self.answer)


class QijiApplication(StoredApplication):
    """Subclasses set `name` to the service name (it prefixes the service's settings)."""

    name = "qiji"
    # Stored event topics name modules and classes; keep them stable (ARCHITECTURE.md).
    env: ClassVar[dict[str, str]] = {}

    def __init__(self, settings: Settings, master_key: bytes):
        self.settings = settings
        self.master_key = master_key
        # Derived from the master key, never stored: it MACs every event and keys the seals.
        self.audit_key = audit_key(master_key)
        self.event_mac = EventMac(self.audit_key)
        super().__init__(settings)
        self.vault = PersonalDataVault(
            KeyStore(self.datastore, dialect=settings.persistence,
                     schema=settings.postgres_schema),
            master_key,
        )
        self.fingerprints = Fingerprints(master_key, self.vault)
        # Who owns which rider, organisation and service space, as identity recorded them
        # (shared/tenancy.py); wired by the service to identity's feed.
        self._directory: TenancyDirectory | None = None
        # Readers of the log (feed streams, long-polls) wait on it; what this process stores
        # bumps it at once, a NOTIFY listener (PostgreSQL) what other processes store.
        self.log_wake = LogWake()
        self._listener: NotifyListener | None = None
        self._closed = False
        self._listener_lock = threading.Lock()
        self._keyed_locks = KeyedLocks()
        # A request looks at the log for other writers' events once, not once per aggregate
        # it reads (shared/store/cache.py LogWatermark): the same set it notes its upstream
        # catch-ups in.
        self.aggregates.request_memo = lambda: context.current().caught_up

    # ------------------------------------------------------------------ store

    def construct_mapper(self) -> Mapper[uuid.UUID]:
        return MetadataMapper(transcoder=self.construct_transcoder(), mac=self.event_mac)

    def stored(self, recordings: list[Recording[uuid.UUID]]) -> None:
        if recordings:
            metrics.EVENTS_STORED.labels(self.name).inc(len(recordings))
            metrics.LOG_POSITION.labels(self.name).set(recordings[-1].notification.id)
        self.wake_waiters()

    def get(self, aggregate_id: uuid.UUID | str, kind: type[Aggregate], label: str,
            version: int | None = None, *, field: str = "") -> Any:
        """The aggregate, a copy of its own for a command to change; NotFound when there is
        none of that kind with that id; an id that is not a UUID at all is an invalid
        `<label>_id` argument."""
        return self._read(self.aggregates.writable, aggregate_id, kind, label, version, field)

    def view(self, aggregate_id: uuid.UUID | str, kind: type[Aggregate], label: str,
             version: int | None = None, *, field: str = "") -> Any:
        """As get, for what only reads the aggregate (a query rendering it, or a command
        reading what it decides on): the cached aggregate itself, not a deep copy of it (a copy
        is a quarter of a get's time in this process). Never for an aggregate a command
        changes: what it changed would be the cache."""
        return self._read(self.aggregates.read_only, aggregate_id, kind, label, version, field)

    def _read(self, read: Callable[..., Aggregate],
              aggregate_id: uuid.UUID | str, kind: type[Aggregate], label: str,
              version: int | None, field: str) -> Any:
        ident = self._aggregate_id(aggregate_id, label, field)
        try:
            aggregate = read(ident, version, kind=kind)
        except AggregateNotFoundError:
            raise NotFound(label, str(aggregate_id), field=field) from None
        return self._of_kind(aggregate, kind, label, aggregate_id, field)

    @staticmethod
    def _aggregate_id(aggregate_id: uuid.UUID | str, label: str, field: str) -> uuid.UUID:
        if isinstance(aggregate_id, uuid.UUID):
            return aggregate_id
        try:
            return uuid.UUID(str(aggregate_id))
        except ValueError:
            raise InvalidArgument([FieldViolation(
                field or f"{label}_id",
                "is required" if not str(aggregate_id) else "is not a valid id (a UUID)",
                FIELD_REQUIRED if not str(aggregate_id) else INVALID_ID)]) from None

    def note(self, violations: Violations, aggregate_id: str, kind: type[Aggregate],
             label: str, field: str) -> Any:
        """As get, for an aggregate a command's field names (a course a session is of): what
        is wrong is added to `violations`, with the request's other faults, and None returned
        (a name of nothing alone is still NOT_FOUND: see Violations)."""
        if not check_id(violations, field, aggregate_id):
            return None
        try:
            return self.get(aggregate_id, kind, label)
        except NotFound:
            violations.missing(field, label, aggregate_id)
            return None

    @staticmethod
    def _of_kind(aggregate: Any, kind: type[Aggregate], label: str, shown: object,
                 field: str = "") -> Any:
        if not isinstance(aggregate, kind):
            raise NotFound(label, str(shown), field=field)
        return aggregate

    def current(self, aggregate_id: uuid.UUID) -> Any:
        """The aggregate as stored now, whatever its kind, not to be changed (the cached object
        itself: shared/store/cache.py read_only): for code that already knows the id exists and
        only renders it — the public feed mapping an event, once per event and reader, where a
        deep copy was a quarter of the read."""
        return self.aggregates.read_only(aggregate_id)

    def exists(self, aggregate_id: uuid.UUID) -> bool:
        return self.aggregates.exists(aggregate_id)

    def followed(self, aggregate_id: uuid.UUID, kind: type[Aggregate], label: str,
                 shown_id: str, catch_up: Callable[[], None] | None,
                 refresh_unless: Callable[[Any], bool] | None = None) -> Any:
        """An aggregate this service keeps from an upstream's events (a rider as training or
        badges knows them): caught up once with the upstream on a miss, so something created
        there a moment ago is found; NotFound (naming `shown_id`) if it still is not. With
        `refresh_unless`, also caught up when the copy here fails it (a rider verified a moment
        ago upstream must not be refused here as unverified)."""
        if catch_up is not None and not self.exists(aggregate_id):
            catch_up()
        if not self.exists(aggregate_id):
            raise NotFound(label, shown_id)
        found = self.get(aggregate_id, kind, label)
        if catch_up is not None and refresh_unless is not None and not refresh_unless(found):
            catch_up()
            found = self.get(aggregate_id, kind, label)
        return found

    def require_riders(self, violations: Violations, named: Sequence[tuple[str, str]],
                       create_id: Callable[[str], uuid.UUID], catch_up: Callable[[], None] | None,
                       refresh_unless: Callable[[Any], bool] | None = None) -> None:
        """The riders a command names, as (request field, rider_id), looked up LAST: call it
        once every other check of the request is done (`violations` holds what they found).

        Whether a rider exists is private to their platform, their street office and the city.
        Many commands let a tenant name a rider it does not own: the guard admits the call on
        something else (a street office's own street, session or campaign, a community's own
        desk) and never looks at the rider. Were riders looked up among the request's other
        checks, a request made faulty on purpose would answer with RIDER_NOT_FOUND or without
        it and write nothing — a free oracle of "does platform P employ worker W?" (rider ids
        are derived from a platform's id and its own rider number, both easy to know). So:
        - a malformed rider id is a fault like any other format fault (it tells of nobody);
        - any fault of the request is raised first, and that answer says nothing of the riders,
          neither found nor missing (a request naming nothing else that does not exist is
          NOT_FOUND of that, still saying nothing of the riders);
        - only an otherwise valid request looks them up: a rider unknown here (after catching
          up once, for all of them) is NOT_FOUND. With one rider named, it is named; with
          several, which one is not said — naming the first unknown one would tell the caller
          that those before it exist, and nothing would be written to show that it asked;
        - at most one catch-up with the upstream, however many riders (a request naming twenty
          unknown ids is one read of identity's feed, not twenty).
        `refresh_unless`: a rider found here that fails it is also a reason to catch up (a
        rider verified upstream a moment ago), within that one catch-up."""
        for path, rider_id in named:
            check_id(violations, path, rider_id)
        violations.raise_if_any()
        idents = [create_id(rider_id) for _, rider_id in named]

        def stale(ident: uuid.UUID) -> bool:
            return not self.exists(ident) or (
                refresh_unless is not None and not refresh_unless(
                    self.aggregates.read_only(ident)))
        if catch_up is not None and any(stale(i) for i in idents):
            catch_up()
        unknown = [i for i, ident in enumerate(idents) if not self.exists(ident)]
        if not unknown:
            return
        if len(named) == 1:
            path, rider_id = named[0]
            raise NotFound("rider", rider_id, field=path)
        fields = ", ".join(path for path, _ in named)
        raise NotFound("rider", "", f"a rider that {fields} names is not registered (which "
                       "one is not said: whether a rider exists is for their platform to "
                       "tell)", field=fields)

    def current_or_new(self, aggregate_id: uuid.UUID, kind: type[Aggregate],
                       new: Callable[[], Any]) -> Any:
        """For a follower's policy: the aggregate as stored, or a new one. Never catches up:
        the policy runs inside the very follower that catching up would call."""
        return self.get(aggregate_id, kind, kind.__name__) if self.exists(aggregate_id) else new()

    def version_at(self, aggregate_id: uuid.UUID, when: datetime) -> int | None:
        """The aggregate's version as it stood at `when` (None if it did not exist yet): what
        "rider R's record on 1 March" is rebuilt from, by replaying events up to that moment."""
        version = None
        # Every event Qiji stores is an aggregate's, which has a timestamp.
        events = cast("Iterable[Aggregate.Event]", self.events.get(aggregate_id))
        for stored in events:
            if stored.timestamp > when:
                break
            version = stored.originator_version
        return version

    # ------------------------------------------------------------------ commands

    def execute(self, decide: Callable[[], Outcome], *, id_key: str = "",
                serialise_on: object = None) -> CommandResult:
        """Runs a command: decide → save, atomically with its request record when the request
        carries a request id; retried from a fresh read when a concurrent writer got there first.
        The answer is a CommandResult whose `id` is the answer's `id_key` (the aggregate the
        command acted on, as "claim_id" names it): the same whether decided now or read back
        from the first call's record.

        A retry of a request id answers what the first call answered and stores nothing; a
        request id reused for a different request is refused. What "the same request" means is
        the kernel's: the request the guard put in the context, fingerprinted here
        (`request_fingerprint`), never a value a command passes by hand. `serialise_on` names a
        hot aggregate (a session everyone enrols in): commands on it queue in this process
        instead of colliding; replicas still resolve collisions optimistically.
        """
        if serialise_on is not None:
            with self._keyed_locks.hold(serialise_on):
                return CommandResult.of(self._execute(decide), id_key)
        return CommandResult.of(self._execute(decide), id_key)

    def _execute(self, decide: Callable[[], Outcome]) -> dict[str, Any]:
        ctx = context.current()
        record_id = None
        if ctx.request_id:
            # Not looked up first: nearly every request id is new, and asking the store would
            # cost every command a round trip. The record is saved with the command's events,
            # as version 1 of an aggregate of its own, in one atomic save: a retry's save
            # conflicts on it and stores nothing, and the retry then answers the first answer
            # (below). A retry whose decision fails (the rider it registered exists now, the
            # perk's last claim was its own) answers it too.
            record_id = RequestRecord.create_id(ctx.actor.principal, ctx.rpc, ctx.request_id)
        for attempt in range(MAX_ATTEMPTS):
            try:
                return self._attempt(decide, record_id, ctx)
            except _SaveConflict:
                log.info("command.conflict", rpc=ctx.rpc, attempt=attempt + 1)
                # Jitter, so that colliding writers do not collide again in lockstep.
                time.sleep(random.uniform(0, 0.005 * (attempt + 1)))  # noqa: S311
        raise Aborted(f"{ctx.rpc or 'command'} kept colliding with concurrent changes; retry it")

    def _attempt(self, decide: Callable[[], Outcome], record_id: uuid.UUID | None,
                 ctx: context.RequestContext) -> dict[str, Any]:
        """One decide → save; _SaveConflict when a concurrent writer got there first. A new
        rider's data key (PersonalDataVault.new_subject) is saved in the same statement as the
        events sealed with it, and remembered only once that has committed."""
        committed = False
        try:
            try:
                outcome = decide()
            except Exception:
                self.vault.saved(committed=False)
                # This very request may have committed before (a retry) or since we began (a
                # copy in flight): then its answer is ours, not "already registered" for our
                # own registration. Any failure, not only a rule's: a retry now decides again,
                # and what it meets (a key erased since) must not hide the first answer.
                if record_id is not None:
                    prior = self._prior_result(record_id, ctx)
                    if prior is not None:
                        return prior
                raise
            pending: list[Aggregate] = list(outcome.aggregates)
            if record_id is not None:
                pending.append(RequestRecord(
                    principal=ctx.actor.principal, rpc=ctx.rpc, request_id=ctx.request_id,
                    fingerprint=self.fingerprints.of(ctx, create=True), result=outcome.result,
                ))
            keys = self.vault.unsaved_keys()
            try:
                if keys is None:
                    self.save(*pending)
                else:
                    self.save(*pending, beside=[keys])
                committed = True
            except IntegrityError:
                # Forgotten before the record is read: the first call's key is the stored one.
                self.vault.saved(committed=False)
                if record_id is not None:
                    prior = self._prior_result(record_id, ctx)
                    if prior is not None:
                        return prior
                raise _SaveConflict from None
            return outcome.result
        finally:
            self.vault.saved(committed=committed)

    def _prior_result(self, record_id: uuid.UUID, ctx: context.RequestContext
                      ) -> dict[str, Any] | None:
        # Asked only after a failure or a conflict: ask the lean way first, as of now, not as
        # of the request's first look at the log (a copy in flight may have committed since).
        self.aggregates.forget_look()
        if not self.exists(record_id):
            return None
        try:
            record = self.aggregates.read_only(record_id)
        except AggregateNotFoundError:
            return None
        if not self.fingerprints.matches(record.fingerprint, ctx):
            raise InvalidArgument([FieldViolation(
                "request_id", "already used for a different request; use a new request id",
                "REQUEST_ID_REUSED")])
        return dict(record.result)

    # ------------------------------------------------------------------ tenancy

    @property
    def directory(self) -> TenancyDirectory | None:
        """Who owns which rider, organisation and service space. A service that follows
        identity reads it from the same feed as its follower of identity, unless wired to
        another."""
        if self._directory is None:
            follower = getattr(self, "identity_follower", None)
            if follower is not None:
                self._directory = TenancyDirectory(follower.feed)
        return self._directory

    @directory.setter
    def directory(self, directory: TenancyDirectory | None) -> None:
        self._directory = directory

    def owners(self, kind: str, ident: str) -> Owners | None:
        """Who owns the thing of `kind` with id `ident` (None: no such thing): what the guard
        checks a caller's organisation against (shared/tenancy.py)."""
        resolver = self.owner_resolvers().get(kind)
        if resolver is None:
            raise LookupError(f"{self.name} cannot tell who owns a {kind}")
        return resolver(ident)

    def owner_resolvers(self) -> dict[str, Callable[[str], Owners | None]]:
        """The kinds of thing this service can tell the owners of. Every service knows
        identity's riders, organisations and service spaces (through its directory); a
        service adds its own kinds (a perk, a report...)."""
        directory = self.directory
        if directory is None:
            return {}
        return {"organisation": directory.organisation_owners,
                "rider": directory.rider_owners,
                "service_space": directory.service_space_owners}

    def found(self, aggregate_id: uuid.UUID | str, kind: type[Aggregate]) -> Any | None:
        """The aggregate (not a copy: only to read it), or None when there is none of that
        kind with that id: for an owner resolver, to which an unknown thing is no one's."""
        try:
            return self.view(aggregate_id, kind, kind.__name__)
        except (NotFound, InvalidArgument):
            return None

    def organisation_owners(self, organisation_id: str) -> Owners:
        """The owners of a thing an organisation owns (a course its provider): that
        organisation, in the role its kind implies; no one when identity does not know it."""
        if self.directory is None:
            return Owners()
        return self.directory.organisation_owners(organisation_id) or Owners()

    def sees(self, kind: str, ident: str) -> bool:
        """The caller of the request being served may see that thing inside another answer
        (a rider among a session's enrolments, the report one repeats): it owns it, or it is
        public. Qiji's own work, outside any request, sees everything."""
        reach = context.current().reach
        return reach is None or reach.sees(kind, ident)

    def sees_rider(self, rider_id: str) -> bool:
        return self.sees("rider", rider_id)

    def caller_owns(self, kind: str, ident: str) -> bool:
        """The caller's organisation owns that thing (a session its provider gives, a campaign
        its street office runs): it sees all of it, not only its own riders' part."""
        reach = context.current().reach
        return reach is None or reach.owns(kind, ident)

    # ------------------------------------------------------------------ feed

    def read_log(self, from_position: int, limit: int, topics: Sequence[str] = ()
                 ) -> list[Notification]:
        return list(self.recorder.select_notifications(
            start=max(from_position, 1), limit=limit, topics=list(topics)))

    def last_position(self) -> int:
        return self.recorder.max_notification_id() or 0

    def log_generation(self) -> int:
        """Note it before reading the log; then `wait_for_log_change(since=...)` misses no
        change made after it."""
        self._listen()
        return self.log_wake.generation

    def wait_for_log_change(self, timeout: float, since: int | None = None) -> bool:
        """Waits until the log may have grown past generation `since` (the current one when
        None) or `timeout` passed — the fallback poll for stores that cannot notify. True when
        woken."""
        self._listen()
        return self.log_wake.wait(self.log_wake.generation if since is None else since, timeout)

    def wake_waiters(self) -> None:
        # Wake this process's readers at once; other processes' saves come by NOTIFY
        # (PostgreSQL) or are seen by each reader's fallback poll.
        self.log_wake.changed()

    def _listen(self) -> None:
        """On PostgreSQL, LISTEN to the events table's channel once a reader waits (not before:
        a process that never serves a feed holds no connection for it)."""
        channel = getattr(self.recorder, "channel_name", None)
        if self._listener is not None or self.settings.persistence != "postgres" or not channel:
            return
        with self._listener_lock:
            if self._listener is None and not self._closed:
                conninfo = postgres_conninfo(self.settings)
                self._listener = NotifyListener(
                    lambda: psycopg.connect(conninfo, autocommit=True), channel, self.log_wake,
                    name=self.name).start()

    def close(self) -> None:
        with self._listener_lock:
            self._closed = True  # a reader still waiting must not listen again
            if self._listener is not None:
                self._listener.close()
                self._listener = None
        super().close()

    def to_domain_event(self, notification: Notification) -> Any:
        return self.mapper.to_domain_event(notification)

    def check_store(self) -> bool:
        """True when the store answers; the health service reports it. While it does not,
        commands fail at once as UNAVAILABLE (see StoreGate)."""
        return self.store_gate.probe(self.recorder.max_notification_id)


class KeyedLocks:
    """One lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[object, list[Any]] = {}  # key -> [lock, users]

    @contextmanager
    def hold(self, key: object) -> Iterator[None]:
        with self._guard:
            entry = self._locks.setdefault(key, [threading.Lock(), 0])
            entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            with self._guard:
                entry[1] -= 1
                if entry[1] == 0:
                    del self._locks[key]


def fingerprint_of(payload: bytes) -> str:
    """The unkeyed SHA-256 request records stored before fingerprints were keyed; kept only to
    recognise their retries."""
    return hashlib.sha256(payload).hexdigest()


class _SaveConflict(Exception):
    """A command's save met a concurrent writer's (IntegrityError): decide again."""


class Fingerprints:
    """What "the same request" means for AIP-155 retries, kept so that a stored request record
    reveals nothing: an HMAC of the request (without its request id) under a key derived from
    the master key, and the request's personal fields (a rider's name, phone, national id)
    apart, under a key derived from that rider's own data key. Erasing the rider destroys that
    key: after it, nothing stored — not even with the master key — confirms a guess of them.

    Stored form: "k1:<hmac of the rest>" or "k1:<hmac of the rest>.<hmac of personal fields>";
    records written before (a bare SHA-256 of the whole request) are still recognised."""

    PREFIX = "k1:"

    def __init__(self, master_key: bytes, vault: PersonalDataVault):
        self._key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                         info=b"qiji-request-fingerprint").derive(master_key)
        self._vault = vault

    def of(self, ctx: context.RequestContext, *, create: bool) -> str:
        parts = self._parts(ctx)
        if parts is None:
            return ""
        rest, personal, subject = parts
        found = self.PREFIX + hmac.new(self._key, rest, hashlib.sha256).hexdigest()
        if personal:
            key = self._vault.fingerprint_key(subject, create=create)
            found += "." + (hmac.new(key, personal, hashlib.sha256).hexdigest() if key
                            else "erased")
        return found

    def matches(self, stored: str, ctx: context.RequestContext) -> bool:
        if not stored.startswith(self.PREFIX):
            return stored == self._legacy(ctx)
        rest, _, personal = stored.partition(".")
        now_rest, _, now_personal = self.of(ctx, create=False).partition(".")
        if rest != now_rest:
            return False
        # The rider's key is gone (erased): the personal fields can no longer be compared;
        # answering the first answer again writes nothing.
        return personal == now_personal or now_personal == "erased" or not personal

    def _parts(self, ctx: context.RequestContext) -> tuple[bytes, bytes, str] | None:
        request = ctx.request
        if request is None:
            return None  # a caller inside Qiji that named no request: ids alone decide
        if isinstance(request, bytes):
            return request, b"", ""
        access = ctx.access
        personal_fields = tuple(getattr(access, "personal", ()) or ())
        copy = type(request)()
        copy.CopyFrom(request)
        if "request_id" in copy.DESCRIPTOR.fields_by_name:
            copy.ClearField("request_id")
        personal = b""
        subject = ""
        if personal_fields:
            values = {f: getattr(request, f) for f in personal_fields}
            personal = json.dumps(values, sort_keys=True, ensure_ascii=False).encode()
            subject = access.subject(request)
            for f in personal_fields:
                copy.ClearField(f)
        return copy.SerializeToString(deterministic=True), personal, subject

    @staticmethod
    def _legacy(ctx: context.RequestContext) -> str:
        request = ctx.request
        if request is None:
            return ""
        if isinstance(request, bytes):
            return fingerprint_of(request)
        copy = type(request)()
        copy.CopyFrom(request)
        if "request_id" in copy.DESCRIPTOR.fields_by_name:
            copy.ClearField("request_id")
        return fingerprint_of(copy.SerializeToString(deterministic=True))

