"""Integrity of stored events: the MAC every event carries, checked by every reader before it
acts, and the alarm a reader raises when it stops at an event that fails.

Every event is MACed when it is stored (shared/application.py, MetadataMapper) under the audit
key, which is derived from the master key and never held by the database. Two forms exist:

- v1 (events stored before this module): `"_mac": "<hex>"`, an HMAC-SHA256 over the aggregate,
  version, topic and a canonical (sorted) JSON form of the decoded state. Checking one means
  decoding and re-encoding the state.
- v2 (every event stored now): `"_mac": "2:<hex>"`, a keyed BLAKE2b-256 (RFC 7693; its own key,
  derived from the audit key) over the aggregate id's 16 bytes, the version, the topic and the
  exact bytes the library's transcoder wrote, which are the stored state minus its last member.
  Checking one is slicing and hashing bytes: no JSON at all, and one hash in place of HMAC's two
  (the cheapest standard MAC in Python's standard library), so every reader can afford it on
  every read of every event.

Readers stop at an event that fails and never go past it (no skipping: what comes after may
depend on it). They say so through `ALARM`: one error log line naming the log and position, the
metric `qiji_audit_intact{log, reader} 0`, and the health name `qiji.integrity` NOT_SERVING in
the process that found it (shared/grpc/server.py)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import orjson
import structlog
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from shared import metrics
from shared.errors import DataLoss

log = structlog.get_logger(__name__)

MAC_KEY = "_mac"
# The health name that is NOT_SERVING while a reader of the process is stopped at a bad event.
HEALTH = "qiji.integrity"
MAC_PROBLEM = "the event's MAC does not match: it was forged or altered in the database"
V2_MARK = b',"_mac":"2:'
# `,"_mac":"2:` + 64 hex digits + `"}`: the fixed tail of a v2 state.
V2_TAIL = len(V2_MARK) + 64 + 2


def audit_key(master_key: bytes) -> bytes:
    """The key that MACs every event and keys the seal chain: derived from the master key, so
    that a process holding it cannot open personal data with it."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=b"qiji-audit-seal").derive(master_key)


class Hmac:
    """HMAC-SHA256 under one key, with the key's inner and outer pads hashed once (RFC 2104):
    half the cost of `hmac.digest` per message, which matters at a million events."""

    def __init__(self, key: bytes):
        if len(key) > 64:
            key = hashlib.sha256(key).digest()
        key = key.ljust(64, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))

    def pads(self) -> tuple[Callable[[], Any], Callable[[], Any]]:
        """Copies of the hashed inner and outer pads, for a loop that inlines the HMAC:
        digest(m) = outer().update(inner().update(m).digest()).digest()."""
        return self._inner.copy, self._outer.copy

    def digest(self, message: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


def _header(originator_id: Any, version: int, topic: str) -> bytes:
    return f"{originator_id}\n{version}\n{topic}\n".encode()


def v2_message(ident: bytes, version: int, topic: bytes, content_open: bytes) -> bytes:
    """What a v2 MAC covers: the id's 16 bytes, the version, the topic, and the content as
    stored up to (not including) its closing brace."""
    return b"%s%d\n%s\n%s" % (ident, version, topic, content_open)


def id_bytes(originator_id: Any) -> bytes:
    """An aggregate id's 16 bytes (Qiji's ids are UUIDs; SQLite and some readers hand them over
    as text)."""
    if type(originator_id) is uuid.UUID:
        return originator_id.bytes
    return uuid.UUID(str(originator_id)).bytes


class EventMac:
    """Makes and checks the MAC of stored events under the audit key."""

    def __init__(self, key: bytes):
        self._key = key
        self._hmac = Hmac(key)
        # v2's key: the audit key keys HMAC-SHA256 (v1, the seal chain); BLAKE2b gets its own.
        self._v2 = hashlib.blake2b(key=self._hmac.digest(b"qiji-event-mac-v2"),
                                   digest_size=32).copy

    def v2(self) -> Callable[[], Any]:
        """A fresh keyed BLAKE2b-256 to update with `v2_message` and compare: for a loop that
        inlines the check."""
        return self._v2

    def seal_state(self, originator_id: Any, version: int, topic: str, content: bytes) -> bytes:
        """The stored state: `content` (a JSON object as the transcoder wrote it) with the v2
        MAC over it as its last member."""
        if content[:1] != b"{" or content[-1:] != b"}" or content == b"{}":
            raise ValueError("an event's state must be a non-empty JSON object")
        mac = self._v2()
        mac.update(v2_message(id_bytes(originator_id), version, topic.encode(), content[:-1]))
        return b"%s%s%s\"}" % (content[:-1], V2_MARK, mac.hexdigest().encode())

    def check(self, originator_id: Any, version: int, topic: str, state: bytes) -> bool:
        """True when `state` carries a MAC that matches the aggregate, version, topic and
        state it is stored with."""
        if type(state) is not bytes:
            state = bytes(state)
        if state[-V2_TAIL:-66] == V2_MARK and state[-2:] == b'"}':
            try:
                ident = id_bytes(originator_id)
            except ValueError:
                return False
            mac = self._v2()
            mac.update(v2_message(ident, version, topic.encode(), state[:-V2_TAIL]))
            return hmac.compare_digest(state[-66:-2], mac.hexdigest().encode())
        return self._check_v1(originator_id, version, topic, state)

    def _check_v1(self, originator_id: Any, version: int, topic: str, state: bytes) -> bool:
        try:
            content = orjson.loads(state)
        except orjson.JSONDecodeError:
            content = None
        if type(content) is not dict:
            return self._check_v1_exactly(originator_id, version, topic, state)
        stored = content.pop(MAC_KEY, None)
        if type(stored) is not str:
            return False
        # orjson's canonical form is the standard library's for nearly every state; where it
        # is not (floats written differently, say) the MAC does not match it and the exact
        # form decides. A match can only come from the very content that was MACed.
        fast = orjson.dumps(content, option=orjson.OPT_SORT_KEYS)
        if hmac.compare_digest(stored.encode(), self._hmac.digest(
                _header(originator_id, version, topic) + fast).hex().encode()):
            return True
        return self._check_v1_exactly(originator_id, version, topic, state)

    def _check_v1_exactly(self, originator_id: Any, version: int, topic: str,
                          state: bytes) -> bool:
        try:
            content = json.loads(state)
        except (ValueError, UnicodeDecodeError):
            return False
        if not isinstance(content, dict):
            return False
        return hmac.compare_digest(str(content.get(MAC_KEY, "")),
                                   event_mac_v1(self._key, originator_id, version, topic, content))


def event_mac_v1(key: bytes, originator_id: Any, version: int, topic: str,
                 content: dict[str, Any]) -> str:
    """The v1 MAC of a stored event (events stored before v2): over a canonical form of its
    decoded state without the MAC itself."""
    content = {k: v for k, v in content.items() if k != MAC_KEY}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hmac.new(key, _header(originator_id, version, topic) + canonical.encode(),
                    hashlib.sha256).hexdigest()


class EventIntegrityError(DataLoss):
    """A stored event fails its integrity check: its MAC does not match (it was forged, or
    altered after it was stored), or it breaks its aggregate's run of versions. Nothing may
    act on it; the caller gets DATA_LOSS and the operators an alarm."""

    reason = "EVENT_INTEGRITY_FAILED"

    def __init__(self, originator_id: Any, version: int, problem: str = "",
                 position: int | None = None):
        self.originator_id = originator_id
        self.version = version
        self.position = position
        self.problem = problem or MAC_PROBLEM
        where = f" at log position {position}" if position else ""
        super().__init__(
            f"the stored event {originator_id} v{version}{where} fails its integrity check "
            f"({self.problem}); nothing acts on it and the operators are alerted",
            aggregate_id=str(originator_id), version=str(version),
            **({"position": str(position)} if position else {}))


# ---------------------------------------------------------------------- the alarm


@dataclass(frozen=True)
class Broken:
    log: str
    reader: str
    position: int
    problem: str
    # Which later reads count as having passed `position` again: those that cover one of these
    # kinds (the stopped event's topic, with each consumer that was stopped there). None: any
    # read of this reader's that passes the position.
    kinds: frozenset[str] | None = None


class IntegrityAlarm:
    """Where each reader of this process stands: stopped at a bad event, or not. One per process
    (`ALARM`); the health service and the metrics follow it, and the readers ask it where they
    stopped rather than keep that themselves.

    A reader that reads everything from where it stands each time (the sealer, a view) says
    `intact` after a good round. A reader whose reads differ (the public feed serves consumers at
    any position, for any types; the gateway likewise) says `passed`: its alarm clears only when
    a read that started at or before where it stopped, of the stopped event's kind and for a
    consumer that was stopped there, got past it. A read of other types, from further on, or
    for a consumer whose answer never needed the bad event does not clear it. A reader that
    stands down (a follower or the relay losing leadership) says `withdraw`: the replica that
    leads now reports for it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._broken: dict[tuple[str, str], Broken] = {}
        self._listeners: list[Callable[[bool], None]] = []

    def broken(self, log_name: str, reader: str, position: int, problem: str,
               kinds: Collection[str] | None = None) -> None:
        """`reader` stopped at `position` of `log_name`'s log and will not go past it; `kinds`:
        which later reads would show it past (None: any that passes the position). Several
        consumers stopped at one position add up: any of them getting past clears it."""
        with self._lock:
            known = self._broken.get((log_name, reader))
            if kinds is not None and known is not None and known.position == position and (
                    known.kinds is not None):
                kinds = known.kinds | set(kinds)
            found = Broken(log_name, reader, position, problem,
                           None if kinds is None else frozenset(kinds))
            self._broken[(log_name, reader)] = found
            listeners = list(self._listeners)
        metrics.AUDIT_INTACT.labels(log_name, reader).set(0)
        metrics.AUDIT_BROKEN_POSITION.labels(log_name, reader).set(position)
        if known is None or (known.position, known.problem) != (position, problem):
            # Said once, not on every retry of a stopped reader.
            log.error("integrity.broken", log=log_name, reader=reader, position=position,
                      problem=problem,
                      action="stopped here: nothing past this position is sealed, followed or "
                             "published until it is repaired (deploy/README.md)")
        for listener in listeners:
            listener(True)

    def intact(self, log_name: str, reader: str) -> None:
        """`reader` read `log_name`'s log from where it stands and found it intact."""
        self._clear(log_name, reader, lambda _: True)

    def passed(self, log_name: str, reader: str, start: int, through: int,
               kinds: Collection[str] | None = None) -> None:
        """`reader` read `log_name`'s log from position `start` through `through`, for `kinds`
        (None: everything it reads), and found it intact: its alarm clears only if that read
        got past where it stopped, as one of the kinds stopped there."""
        def past(known: Broken) -> bool:
            return start <= known.position <= through and (
                known.kinds is None or kinds is None or not known.kinds.isdisjoint(kinds))
        self._clear(log_name, reader, past)

    def withdraw(self, log_name: str, reader: str) -> None:
        """`reader` no longer reads `log_name`'s log here (it stood down for another replica):
        its alarm and its series go, whatever they said; the one that reads now reports."""
        with self._lock:
            was = self._broken.pop((log_name, reader), None)
            any_left = bool(self._broken)
            listeners = list(self._listeners)
        metrics.AUDIT_INTACT.remove(log_name, reader)
        metrics.AUDIT_BROKEN_POSITION.remove(log_name, reader)
        if was is not None:
            log.info("integrity.withdrawn", log=log_name, reader=reader,
                     was_stopped_at=was.position, why="stood down: the leading replica reports")
            for listener in listeners:
                listener(any_left)

    def _clear(self, log_name: str, reader: str, cleared: Callable[[Broken], bool]) -> None:
        with self._lock:
            was = self._broken.get((log_name, reader))
            if was is not None:
                if not cleared(was):
                    return
                del self._broken[(log_name, reader)]
            any_left = bool(self._broken)
            listeners = list(self._listeners)
        metrics.AUDIT_INTACT.labels(log_name, reader).set(1)
        metrics.AUDIT_BROKEN_POSITION.labels(log_name, reader).set(0)
        if was is not None:
            log.warning("integrity.restored", log=log_name, reader=reader,
                        was_stopped_at=was.position)
            for listener in listeners:
                listener(any_left)

    def stopped_at(self, log_name: str, reader: str) -> int:
        """The position `reader` is stopped at in `log_name`'s log; 0 if it is not stopped."""
        with self._lock:
            found = self._broken.get((log_name, reader))
        return found.position if found is not None else 0

    def found(self) -> list[Broken]:
        with self._lock:
            return list(self._broken.values())

    def listen(self, listener: Callable[[bool], None]) -> None:
        """`listener(any_broken)` is called whenever a reader stops or resumes."""
        with self._lock:
            self._listeners.append(listener)

    def forget(self, listener: Callable[[bool], None]) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)


ALARM = IntegrityAlarm()
