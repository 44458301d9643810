"""Signed checkpoints of a service's log: the head of its seal chain (a position and the seal
there), signed with the audit signing key (Ed25519) and published on the platform feed and
over AMQP, so that parties outside the city's database keep copies they can produce later.

The approach is Certificate Transparency's signed tree heads (RFC 9162 §4.10) and their
witnesses, in the text format the transparency-log ecosystem uses for them: a checkpoint is a
C2SP signed note (c2sp.org/signed-note, c2sp.org/tlog-checkpoint):

    qiji.local/identity                        <- origin: the log's name
    12345                                      <- the log position it covers through
    q3Lk1b1M3K6nRj9m2cS7V0rj6xBzJ2aE3mXoZp0s9xw=   <- the seal at that position, base64
                                               <- blank line
    — qiji.local/identity AbCd1234...          <- Ed25519 signature: key id (4 bytes) || sig

Where it differs from CT, and why: CT's head is the root of an unkeyed Merkle tree, so anyone
holding the entries can check a consistency proof. Qiji's head is the newest link of a keyed
HMAC chain (shared/audit.py), because the entries hold personal data that never leaves the
city: consistency is proven by the city's auditor, who holds the key, recomputing the chain
(`qiji audit verify --checkpoints FILE`). What the witnesses hold is still what makes a
rewrite show: a signed statement of the seal at a position, which no later rewrite of anything
at or before that position can match, and which the city cannot deny having signed. Two
checkpoints of one origin that disagree about one position are proof on their own, with no key
at all, that the log was rewritten.

The module is pure (no SQL, no gRPC): the sealer signs, the feed publishes, verify checks."""

from __future__ import annotations

import base64
import binascii
import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from eventsourcing.domain import Aggregate, event
from eventsourcing.utils import get_topic

ED25519 = b"\x01"  # the signed-note signature type of Ed25519
DASH = "\u2014"
_NAMESPACE = uuid.UUID("0b8c8a31-5e2f-4c1d-9b6a-7f3e2d1c0a99")


class BadCheckpoint(ValueError):
    """Not a checkpoint this verifier accepts: malformed, or not signed by a key it trusts."""


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    position: int
    seal: bytes
    note: str  # the whole signed note, as published

    @property
    def body(self) -> str:
        return checkpoint_body(self.origin, self.position, self.seal)


def checkpoint_body(origin: str, position: int, seal: bytes) -> str:
    return f"{origin}\n{position}\n{base64.b64encode(seal).decode()}\n"


def key_id(name: str, public: bytes) -> bytes:
    """c2sp.org/signed-note: SHA-256(key name || 0x0A || signature type || public key)[:4]."""
    return hashlib.sha256(name.encode() + b"\n" + ED25519 + public).digest()[:4]


class CheckpointSigner:
    """Signs one log's checkpoints: the key name is the log's origin, as c2sp.org/tlog-
    checkpoint recommends."""

    def __init__(self, seed: bytes, origin: str):
        if not origin or any(c.isspace() or c == "+" for c in origin):
            raise ValueError(f"a log's origin must be non-empty, without spaces or '+': "
                             f"{origin!r}")
        self.origin = origin
        self._private = Ed25519PrivateKey.from_private_bytes(seed)
        self.public = self._private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.key_id = key_id(origin, self.public)

    @property
    def verifier_key(self) -> str:
        """What an auditor pins to check these checkpoints: `name+keyid+base64(type||key)`, the
        form golang.org/x/mod/sumdb/note reads too."""
        return (f"{self.origin}+{self.key_id.hex()}+"
                f"{base64.b64encode(ED25519 + self.public).decode()}")

    def verifier(self) -> CheckpointVerifier:
        return CheckpointVerifier.parse(self.verifier_key)

    def sign(self, position: int, seal: bytes) -> Checkpoint:
        return Checkpoint(self.origin, position, seal,
                          self.sign_text(checkpoint_body(self.origin, position, seal)))

    def sign_text(self, text: str) -> str:
        """A signed note of `text` (which ends in a newline), c2sp.org/signed-note."""
        signature = base64.b64encode(self.key_id + self._private.sign(text.encode())).decode()
        return f"{text}\n{DASH} {self.origin} {signature}\n"


class CheckpointVerifier:
    """Checks notes against one pinned verifier key."""

    def __init__(self, name: str, key: Ed25519PublicKey, ident: bytes, text: str):
        self.name = name
        self._key = key
        self.key_id = ident
        self.key_text = text

    @classmethod
    def parse(cls, text: str) -> CheckpointVerifier:
        try:
            name, ident_hex, encoded = text.strip().split("+", 2)
            raw = base64.b64decode(encoded, validate=True)
            ident = bytes.fromhex(ident_hex)
        except (ValueError, binascii.Error):
            raise BadCheckpoint(f"not a verifier key (name+keyid+base64): {text[:60]!r}"
                                ) from None
        if raw[:1] != ED25519 or len(raw) != 33 or key_id(name, raw[1:]) != ident:
            raise BadCheckpoint(f"not an Ed25519 verifier key, or its key id does not match: "
                                f"{text[:60]!r}")
        return cls(name, Ed25519PublicKey.from_public_bytes(raw[1:]), ident, text.strip())

    def verify(self, note: str) -> Checkpoint:
        """The checkpoint in `note` if this key signed it; BadCheckpoint otherwise."""
        return parse_body(self.open(note), note)

    def open(self, note: str) -> str:
        """The text of `note` if this key signed it; BadCheckpoint otherwise (notes signed
        only by other keys included: c2sp.org/signed-note says to ignore those)."""
        body, signatures = split_note(note)
        good = False
        for name, blob in signatures:
            if name != self.name or blob[:4] != self.key_id:
                continue  # someone else's signature (a witness's cosignature, say)
            try:
                self._key.verify(blob[4:], body.encode())
            except InvalidSignature:
                raise BadCheckpoint(f"the signature of {name} does not verify: the note was "
                                    "altered, or was never signed by this key") from None
            good = True
        if not good:
            raise BadCheckpoint(f"not signed by {self.name} (key id {self.key_id.hex()})")
        return body


def split_note(note: str) -> tuple[str, list[tuple[str, bytes]]]:
    """(text, [(key name, key id || signature)]) of a signed note (c2sp.org/signed-note)."""
    if not note.endswith("\n") or "\n\n" not in note:
        raise BadCheckpoint("not a signed note (text, a blank line, signature lines)")
    cut = note.rindex("\n\n")
    body, lines = note[:cut + 1], note[cut + 2:].splitlines()
    signatures = []
    for line in lines:
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != DASH:
            raise BadCheckpoint(f"not a signature line: {line[:60]!r}")
        try:
            blob = base64.b64decode(parts[2], validate=True)
        except (ValueError, binascii.Error):
            raise BadCheckpoint(f"a signature that is not base64: {line[:60]!r}") from None
        if len(blob) < 5:
            raise BadCheckpoint(f"a signature too short to hold a key id: {line[:60]!r}")
        signatures.append((parts[1], blob))
    if not signatures:
        raise BadCheckpoint("a note without signatures")
    return body, signatures


def parse_body(body: str, note: str) -> Checkpoint:
    lines = body.split("\n")[:-1]
    if len(lines) < 3 or not all(lines[:3]):
        raise BadCheckpoint("a checkpoint's text has an origin, a position and a seal")
    origin, position_text, seal_text = lines[:3]
    if not position_text.isdigit() or (position_text != "0" and position_text[0] == "0"):
        raise BadCheckpoint(f"not a log position: {position_text[:30]!r}")
    try:
        seal = base64.b64decode(seal_text, validate=True)
    except (ValueError, binascii.Error):
        raise BadCheckpoint("the seal is not base64") from None
    if len(seal) != 32:
        raise BadCheckpoint("the seal is not 32 bytes")
    return Checkpoint(origin, int(position_text), seal, note)


def unverified(note: str) -> Checkpoint:
    """The checkpoint a note claims to be, signature unchecked (for reading one's own log,
    whose events are MACed anyway, and for comparing two notes)."""
    body, _ = split_note(note)
    return parse_body(body, note)


def readable(notes: Sequence[str], what: str = "checkpoint"
             ) -> tuple[list[tuple[str, str, Checkpoint]], list[str]]:
    """(name, note, checkpoint) of each of `notes` that reads as a checkpoint, signature
    unchecked, named by its place among them ("checkpoint #3"); and why each other does not."""
    found, unreadable = [], []
    for index, note in enumerate(notes, 1):
        try:
            found.append((f"{what} #{index}", note, unverified(note)))
        except BadCheckpoint as bad:
            unreadable.append(f"{what} #{index}: {bad}")
    return found, unreadable


def origin_of(base: str, service: str) -> str:
    return f"{base}/{service}"


class LogCheckpoint(Aggregate):
    """One signed checkpoint, stored in the log it covers (so the public feed and the relay
    carry it like any other event, and a later checkpoint's seal covers it in turn). Its id
    follows from the origin and position: replicas signing the same head store it once."""

    if TYPE_CHECKING:  # the event classes @event makes (for readers' isinstance)
        Signed: ClassVar[type[Any]]

    @event("Signed")
    def __init__(self, origin: str, position: int, seal: str, key_id: str, note: str):
        self.origin = origin
        self.position = position
        self.seal = seal
        self.key_id = key_id
        self.note = note

    @staticmethod
    def create_id(origin: str, position: int, **_: Any) -> uuid.UUID:
        return uuid.uuid5(_NAMESPACE, f"{origin}\n{position}")

    @classmethod
    def of(cls, checkpoint: Checkpoint, signer: CheckpointSigner) -> LogCheckpoint:
        return cls(origin=checkpoint.origin, position=checkpoint.position,
                   seal=base64.b64encode(checkpoint.seal).decode(),
                   key_id=signer.key_id.hex(), note=checkpoint.note)


CHECKPOINT_TOPIC = get_topic(LogCheckpoint.Signed)
