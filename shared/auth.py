"""Who is calling: a bearer token per calling system, mapped to a principal and its roles by the
tokens file. The file holds only SHA-256 hashes of tokens, never tokens themselves, and is read
again when it changes, so a token can be added or rotated without a restart."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import threading
from pathlib import Path

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


class TokenRegistry:
    def __init__(self, path: Path):
        self._path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._by_hash: dict[str, Actor] = {}

    def authenticate(self, bearer: str | None) -> Actor:
        if not bearer:
            raise Unauthenticated("missing bearer token: send 'authorization: Bearer <token>'")
        actor = self._entries().get(hash_token(bearer))
        if actor is None:
            raise Unauthenticated("unknown or revoked token")
        return actor

    def _entries(self) -> dict[str, Actor]:
        try:
            st = os.stat(self._path)
            stamp = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        with self._lock:
            if stamp != self._stamp:
                self._by_hash = load_tokens(self._path) if stamp else {}
                self._stamp = stamp
            return self._by_hash


def load_tokens(path: Path) -> dict[str, Actor]:
    data = json.loads(Path(path).read_text() or "{}")
    entries: dict[str, Actor] = {}
    for caller in data.get("callers", []):
        roles = frozenset(caller.get("roles", []))
        unknown = roles - ROLES
        if unknown:
            raise ValueError(f"tokens file {path}: unknown roles {sorted(unknown)}")
        entries[caller["token_sha256"]] = Actor(
            principal=caller["principal"], roles=roles,
            organisation_id=caller.get("organisation_id", ""),
            subscriptions=frozenset(caller.get("subscriptions", [])),
        )
    return entries


def add_caller(path: Path, principal: str, roles: list[str], organisation_id: str = "",
               subscriptions: list[str] | None = None) -> str:
    """Adds (or replaces, i.e. rotates) a caller's token and returns the new token. The old
    token of that principal stops working as soon as the file is written."""
    unknown = set(roles) - ROLES
    if unknown:
        raise ValueError(f"unknown roles {sorted(unknown)}; known: {sorted(ROLES)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(path.read_text() or "{}") if path.exists() else {}
    callers = [c for c in data.get("callers", []) if c["principal"] != principal]
    token = new_token()
    callers.append({"principal": principal, "roles": sorted(roles),
                    "organisation_id": organisation_id, "token_sha256": hash_token(token),
                    **({"subscriptions": sorted(subscriptions)} if subscriptions else {})})
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"callers": callers}, f, indent=2)
    os.replace(tmp, path)
    return token
