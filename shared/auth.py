"""Who is calling: a bearer token per calling system, mapped to a principal and its roles by the
tokens file. The file holds only SHA-256 hashes of tokens, never tokens themselves, and is read
again when it changes, so a token can be added or rotated without a restart.

Where the port requires client certificates (mTLS), a caller may instead be known by its
certificate: an entry's `certificate_subject` names the one certificate name (common name or a
subject alternative name) that stands for that principal. A certificate the client CA signed
but no entry names authenticates nobody."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from shared.context import Actor
from shared.errors import Unauthenticated

CITY_ADMIN = "city_admin"
STREET_OFFICE = "street_office"
DEPARTMENT = "department"
PLATFORM = "platform"
MERCHANT = "merchant"
OPERATOR = "operator"
AUDITOR = "auditor"
# Qiji's own processes (followers, the relay) reading other services' feeds.
SERVICE = "service"

ROLES = frozenset({CITY_ADMIN, STREET_OFFICE, DEPARTMENT, PLATFORM, MERCHANT, OPERATOR,
                   AUDITOR, SERVICE})
TOKEN_PREFIX = "qiji_"  # noqa: S105 - a prefix that makes leaked tokens easy to grep for

log = structlog.get_logger(__name__)


def acts_for(actor: Actor, role: str, organisation_id: str, *, city_wide_ok: bool) -> bool:
    """The actor holds `role` for that organisation: its token names the organisation, or, where
    `city_wide_ok`, names none (a city-wide system of that role, e.g. the street offices'
    shared case system). A merchant always acts for itself only."""
    if role not in actor.roles:
        return False
    return actor.organisation_id == organisation_id or (
        city_wide_ok and actor.organisation_id == "")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Callers:
    """The tokens file, indexed: by token hash, and by registered certificate subject."""

    by_token_hash: dict[str, Actor] = field(default_factory=dict)
    by_certificate_subject: dict[str, Actor] = field(default_factory=dict)


class TokenRegistry:
    def __init__(self, path: Path):
        self._path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._callers = Callers()

    def authenticate(self, bearer: str | None) -> Actor:
        if not bearer:
            raise Unauthenticated("missing bearer token: send 'authorization: Bearer <token>'")
        actor = self._entries().by_token_hash.get(hash_token(bearer))
        if actor is None:
            raise Unauthenticated("unknown or revoked token")
        return actor

    def authenticate_certificate(self, names: Iterable[str]) -> Actor:
        """The principal registered for one of the names of a verified client certificate."""
        names = sorted(set(names))
        by_subject = self._entries().by_certificate_subject
        actors = {by_subject[n].principal: by_subject[n] for n in names if n in by_subject}
        if not actors:
            raise Unauthenticated(f"the client certificate ({', '.join(names)}) is registered "
                                  "for no caller; send a bearer token or register it")
        if len(actors) > 1:
            raise Unauthenticated("the client certificate names several registered callers "
                                  f"({', '.join(sorted(actors))}); it stands for none of them")
        return next(iter(actors.values()))

    def _entries(self) -> Callers:
        try:
            st = os.stat(self._path)
            stamp = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        with self._lock:
            if stamp != self._stamp:
                try:
                    self._callers = load_callers(self._path) if stamp else Callers()
                except (ValueError, KeyError, TypeError, AttributeError) as error:
                    # A hand edit gone wrong (or an unknown role): keep answering with the
                    # last good copy rather than failing every call, and say so loudly.
                    # `qiji token` itself never writes such a file.
                    log.error("tokens.file_unreadable", path=str(self._path), error=str(error),
                              keeping=len(self._callers.by_token_hash))
                self._stamp = stamp
            return self._callers


def load_tokens(path: Path) -> dict[str, Actor]:
    return load_callers(path).by_token_hash


def load_callers(path: Path) -> Callers:
    data = json.loads(Path(path).read_text() or "{}")
    callers = Callers()
    claimed: dict[str, set[str]] = {}
    for caller in data.get("callers", []):
        roles = frozenset(caller.get("roles", []))
        unknown = roles - ROLES
        if unknown:
            raise ValueError(f"tokens file {path}: unknown roles {sorted(unknown)}")
        actor = Actor(
            principal=caller["principal"], roles=roles,
            organisation_id=caller.get("organisation_id", ""),
            subscriptions=frozenset(caller.get("subscriptions", [])),
        )
        callers.by_token_hash[caller["token_sha256"]] = actor
        subject = caller.get("certificate_subject", "")
        if subject:
            callers.by_certificate_subject[subject] = actor
            claimed.setdefault(subject, set()).add(actor.principal)
    for subject, principals in claimed.items():
        if len(principals) > 1:
            # A hand-edited file: the certificate stands for nobody rather than for either.
            del callers.by_certificate_subject[subject]
            log.warning("tokens.certificate_subject_ambiguous", subject=subject,
                        principals=sorted(principals))
    return callers


def add_caller(path: Path, principal: str, roles: list[str], organisation_id: str = "",
               subscriptions: list[str] | None = None, certificate_subject: str = "") -> str:
    """Adds (or replaces, i.e. rotates) a caller's token and returns the new token. The old
    token of that principal stops working as soon as the file is written. The entry is
    replaced whole: a `certificate_subject` not given again is no longer registered."""
    unknown = set(roles) - ROLES
    if unknown:
        raise ValueError(f"unknown roles {sorted(unknown)}; known: {sorted(ROLES)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Read-modify-write under a lock file: two callers added at once must both be kept.
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _replace_caller(path, principal, roles, organisation_id, subscriptions,
                               certificate_subject)


def _replace_caller(path: Path, principal: str, roles: list[str], organisation_id: str,
                    subscriptions: list[str] | None, certificate_subject: str) -> str:
    data = json.loads(path.read_text() or "{}") if path.exists() else {}
    callers = [c for c in data.get("callers", []) if c["principal"] != principal]
    if certificate_subject:
        holder = next((c["principal"] for c in callers
                       if c.get("certificate_subject") == certificate_subject), None)
        if holder is not None:
            raise ValueError(f"certificate subject {certificate_subject!r} is already "
                             f"registered for {holder}")
    token = new_token()
    callers.append({"principal": principal, "roles": sorted(roles),
                    "organisation_id": organisation_id, "token_sha256": hash_token(token),
                    **({"subscriptions": sorted(subscriptions)} if subscriptions else {}),
                    **({"certificate_subject": certificate_subject}
                       if certificate_subject else {})})
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"callers": callers}, f, indent=2)
    os.replace(tmp, path)
    return token
