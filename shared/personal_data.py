"""Personal data (phone, national id, name) sealed per subject, so one rider's data can be erased
by destroying one key (crypto-shredding) while the rest of the history still replays.

Each subject has its own 256-bit data key, stored wrapped by the master key in a small key
table beside the event store. Keys are secrets, not domain state: they are the one thing that
is deliberately mutable (and deletable) outside the event log.
"""

from __future__ import annotations

import base64
import os
import threading
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from eventsourcing.persistence import InterfaceError, OperationalError
from eventsourcing.utils import retry

from shared.signing import load_key
from shared.store import RowsBeside

SEAL_PREFIX = "pd1:"
ERASED = "[erased]"


class PersonalDataErased(Exception):
    """The subject's key was destroyed: nothing more can be sealed or opened for it."""


class KeyStore:
    """The wrapped data keys, in the service's own database (SQLite file or PostgreSQL schema)."""

    def __init__(self, datastore: Any, *, dialect: str, schema: str = ""):
        self._datastore = datastore
        self._dialect = dialect
        # The schema name is checked to be a plain identifier by the configuration loader;
        # SQL text is built from it (and from the placeholder style) only, never from data.
        self._table = f'"{schema}".personal_data_keys' if dialect == "postgres" else (
            "personal_data_keys"
        )
        self._p = "%s" if dialect == "postgres" else "?"
        blob = "BYTEA" if dialect == "postgres" else "BLOB"
        with self._datastore.transaction(commit=True) as curs:
            curs.execute(
                f"CREATE TABLE IF NOT EXISTS {self._table} ("
                f" subject_id TEXT PRIMARY KEY, wrapped_key {blob},"
                f" created_at TEXT NOT NULL, erased_at TEXT)"
            )

    # As the store's own reads: a pooled connection that a restart of the database broke is
    # retried on a fresh one. A command's first statement may be one of these (a new rider's
    # key), so it must not be the one that finds the pool's broken connections for everyone.
    @retry((InterfaceError, OperationalError), max_attempts=3, wait=0.2)
    def get(self, subject_id: str) -> tuple[bytes | None, bool] | None:
        """(wrapped key, erased) for a subject, or None if it has no key yet."""
        query = f"SELECT wrapped_key, erased_at FROM {self._table} WHERE subject_id = {self._p}"  # noqa: S608
        if self._dialect == "postgres":
            # One statement on an autocommit connection: one round trip, no BEGIN/ROLLBACK.
            with self._datastore.get_connection() as conn:
                row = conn.execute(query, (subject_id,)).fetchone()
        else:
            with self._datastore.transaction(commit=False) as curs:
                curs.execute(query, (subject_id,))
                row = curs.fetchone()
        if row is None:
            return None
        wrapped = row["wrapped_key"]
        return (bytes(wrapped) if wrapped is not None else None, row["erased_at"] is not None)

    @retry((InterfaceError, OperationalError), max_attempts=3, wait=0.2)
    def put_if_absent(self, subject_id: str, wrapped: bytes) -> bool:
        """True when this call stored the key, False when the subject already had one (a
        retry after a connection lost mid-commit may say False for its own key: the vault
        then reads the stored key, which is that same key)."""
        now = datetime.now(UTC).isoformat()
        insert = (f"INSERT INTO {self._table} (subject_id, wrapped_key, created_at)"  # noqa: S608
                  f" VALUES ({self._p}, {self._p}, {self._p}) ON CONFLICT (subject_id) DO NOTHING"
                  " RETURNING subject_id")
        if self._dialect == "postgres":
            # One statement on an autocommit connection: one round trip, no BEGIN/COMMIT.
            with self._datastore.get_connection() as conn:
                return conn.execute(insert, (subject_id, wrapped, now)).fetchone() is not None
        with self._datastore.transaction(commit=True) as curs:
            curs.execute(insert, (subject_id, wrapped, now))
            return curs.fetchone() is not None

    def rows_beside(self, keys: dict[str, bytes]) -> RowsBeside | None:
        """New subjects' wrapped keys as rows for the PostgreSQL recorder to insert with the
        save that uses them (shared/store/recorder.py RowsBeside): a plain insert, so a subject
        that has a key already (registered before, or erased: its tombstone) fails the save
        rather than being given a second key. None on SQLite, which stores them at once."""
        if self._dialect != "postgres":
            return None
        now = datetime.now(UTC).isoformat()
        return RowsBeside(
            "personal_data_keys",
            (("subject_id", "text"), ("wrapped_key", "bytea"), ("created_at", "text")),
            tuple((subject, wrapped, now) for subject, wrapped in keys.items()))

    def erase(self, subject_id: str) -> None:
        """Destroys the key but keeps a tombstone, so no new key is quietly made for the subject."""
        now = datetime.now(UTC).isoformat()
        with self._datastore.transaction(commit=True) as curs:
            curs.execute(
                f"INSERT INTO {self._table} (subject_id, wrapped_key, created_at, erased_at)"  # noqa: S608
                f" VALUES ({self._p}, NULL, {self._p}, {self._p})"
                f" ON CONFLICT (subject_id) DO UPDATE SET wrapped_key = NULL,"
                f" erased_at = excluded.erased_at",
                (subject_id, now, now),
            )


class PersonalDataVault:
    def __init__(self, keystore: KeyStore, master_key: bytes, *, cache_size: int = 10_000):
        if len(master_key) != 32:
            raise ValueError("the master key must be 32 bytes (AES-256)")
        self._keystore = keystore
        self._master = AESGCM(master_key)
        # Unwrapped keys are cached with their cipher: every read of a rider opens two or three
        # fields, and building an AESGCM per field was most of what opening one cost. Bounded
        # (least recently used first out). An erased subject's entry is dropped by `erase`, and
        # `_erasures` keeps a read that fetched the key before an erasure from caching it after
        # (a key destroyed in the store must never open anything again from here).
        self._cache: OrderedDict[str, tuple[bytes, AESGCM]] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._erasures = 0
        # This thread's command's new subjects (`new_subject`): their keys, not yet stored.
        self._unsaved = threading.local()

    @property
    def _new(self) -> dict[str, tuple[bytes, bytes]]:
        try:
            new: dict[str, tuple[bytes, bytes]] = self._unsaved.keys
        except AttributeError:
            new = self._unsaved.keys = {}
        return new

    def new_subject(self, subject_id: str) -> None:
        """This thread's command is making `subject_id` (a new rider, nearly always): its key,
        made by the next `seal`, is not stored at once but handed to the command's save by
        `unsaved_keys`, which stores it in the transaction that stores the events sealed with
        it, one round trip for both. If the subject has a key after all (registered before, or
        erased), that save fails as a conflict, storing neither; the command's next attempt
        then asks the store as before. The key is remembered (cached) only once its save has
        committed (`saved`): a key that was never stored never opens anything. SQLite stores
        the key at once, as before."""
        if self._keystore.rows_beside({}) is None:
            return
        with self._lock:
            if subject_id in self._cache:
                return
        self._new[subject_id] = (b"", b"")

    def unsaved_keys(self) -> RowsBeside | None:
        """This thread's new subjects' keys (made by `seal` since `new_subject`), as rows for
        the save; None when there are none."""
        made = {s: wrapped for s, (dek, wrapped) in self._new.items() if dek}
        return self._keystore.rows_beside(made) if made else None

    def saved(self, committed: bool) -> None:
        """The command's save has returned: its new keys are stored (`committed`), and so may
        be remembered, or were not, and are forgotten. Either way this thread has no new
        subject left."""
        new, self._unsaved.keys = self._new, {}
        if committed:
            for subject, (dek, _) in new.items():
                if dek:
                    # Just stored, for a subject new in this command: no erasure can concern it.
                    self._remember(subject, dek, self._erasures)

    def seal(self, subject_id: str, plaintext: str) -> str:
        entry = self._key(subject_id, create=True)
        assert entry is not None
        nonce = os.urandom(12)
        # The subject id is bound as associated data: a sealed value moved to another rider's
        # event does not open.
        ciphertext = entry[1].encrypt(nonce, plaintext.encode(), subject_id.encode())
        return SEAL_PREFIX + base64.b64encode(nonce + ciphertext).decode("ascii")

    def open(self, subject_id: str, sealed: str) -> str:
        """The plaintext, or ERASED when the subject's key was destroyed."""
        if not sealed:
            return ""
        if not sealed.startswith(SEAL_PREFIX):
            raise ValueError("not a sealed value")
        entry = self._key(subject_id, create=False)
        if entry is None:
            return ERASED
        raw = base64.b64decode(sealed[len(SEAL_PREFIX):])
        try:
            return entry[1].decrypt(raw[:12], raw[12:], subject_id.encode()).decode()
        except InvalidTag:
            raise ValueError(f"sealed value does not belong to subject {subject_id}") from None

    def fingerprint_key(self, subject_id: str, *, create: bool) -> bytes | None:
        """A key for fingerprinting the subject's personal data in request records, derived
        from the subject's data key: it dies with the data key when the subject is erased.
        None when the subject has no key (or it was erased) and `create` is off."""
        try:
            entry = self._key(subject_id, create=create)
        except PersonalDataErased:
            return None
        if entry is None:
            return None
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                    info=b"qiji-request-fingerprint:" + subject_id.encode()).derive(entry[0])

    def erase(self, subject_id: str) -> None:
        self._keystore.erase(subject_id)
        with self._lock:
            self._cache.pop(subject_id, None)
            # A read that fetched the key before the erasure committed does not cache it.
            self._erasures += 1

    def forget(self, subject_id: str) -> None:
        """Drops this process's cached key of a subject whose erasure it learnt of from the
        log (another replica erased the key: this cache would otherwise keep opening what the
        store can no longer open), and keeps a read in flight from caching it again."""
        with self._lock:
            self._cache.pop(subject_id, None)
            self._erasures += 1

    def is_erased(self, subject_id: str) -> bool:
        found = self._keystore.get(subject_id)
        return found is not None and found[1]

    def _key(self, subject_id: str, *, create: bool) -> tuple[bytes, AESGCM] | None:
        """(data key, its cipher) for a subject, or None when it has none (or it was erased)."""
        with self._lock:
            entry = self._cache.get(subject_id)
            if entry is not None:
                self._cache.move_to_end(subject_id)
                return entry
            erasures = self._erasures
        if self._new:
            new = self._new.get(subject_id)
            if new is not None:
                if create and not new[0]:
                    dek = AESGCM.generate_key(bit_length=256)
                    new = self._new[subject_id] = (dek, self._wrap(subject_id, dek))
                if new[0]:
                    return new[0], AESGCM(new[0])
        if create:
            # A new subject is the common case when sealing: try to store a fresh key first
            # (one round trip) and read only if the subject already had one.
            dek = AESGCM.generate_key(bit_length=256)
            if self._keystore.put_if_absent(subject_id, self._wrap(subject_id, dek)):
                return self._remember(subject_id, dek, erasures)
        found = self._keystore.get(subject_id)
        if found is None:
            return None
        wrapped, erased = found
        if erased or wrapped is None:
            if create:
                raise PersonalDataErased(subject_id)
            return None
        return self._remember(subject_id, self._unwrap(subject_id, wrapped), erasures)

    def _remember(self, subject_id: str, dek: bytes, erasures: int) -> tuple[bytes, AESGCM]:
        entry = (dek, AESGCM(dek))
        with self._lock:
            # Not cached when any subject was erased since the key was read: it may be this one.
            if self._erasures == erasures:
                self._cache[subject_id] = entry
                if len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return entry

    def _wrap(self, subject_id: str, dek: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._master.encrypt(nonce, dek, b"qiji-dek:" + subject_id.encode())

    def _unwrap(self, subject_id: str, wrapped: bytes) -> bytes:
        return self._master.decrypt(wrapped[:12], wrapped[12:], b"qiji-dek:" + subject_id.encode())


def load_master_key(value: str, key_file: os.PathLike[str] | str, *, create: bool) -> bytes:
    """The master key from its setting (base64), else from its file; `create` makes the file for
    the embedded default, where there is no operator to hand one out."""
    return load_key(value, key_file, create=create, setting="QIJI_MASTER_KEY",
                    what="master key")
