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
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from shared.context import Actor
from shared.errors import Unauthenticated, is_uuid
from shared.files import write_private

CITY_ADMIN = "city_admin"
STREET_OFFICE = "street_office"
DEPARTMENT = "department"
PLATFORM = "platform"
MERCHANT = "merchant"
OPERATOR = "operator"
AUDITOR = "auditor"
# A community (社区) confirms the volunteer service done at it.
COMMUNITY = "community"
# A university, an enterprise or an industry association running its own courses.
EDUCATION_PROVIDER = "education_provider"
# Qiji's own processes (followers, the relay) reading other services' feeds.
SERVICE = "service"
# The public credentials face, which the internet reaches: it reads what every role may read
# (the access tables' `public(ROLES)` entries: badge classes, issuer keys and profiles, status
# lists, verification) and nothing else, acting for no organisation.
PUBLIC_READER = "public_reader"

# Roles that act for the whole city; every other role acts for the one organisation its token
# names (shared/tenancy.py), and a token of such a role that names none is refused at load.
CITY_WIDE_ROLES = frozenset({CITY_ADMIN, AUDITOR, OPERATOR, SERVICE, PUBLIC_READER})
ORGANISATION_ROLES = frozenset({STREET_OFFICE, DEPARTMENT, PLATFORM, MERCHANT, COMMUNITY,
                                EDUCATION_PROVIDER})
ROLES = CITY_WIDE_ROLES | ORGANISATION_ROLES
TOKEN_PREFIX = "qiji_"  # noqa: S105 - a prefix that makes leaked tokens easy to grep for

log = structlog.get_logger(__name__)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Callers:
    """The tokens file, indexed: by token hash, and by registered certificate subject. An entry
    that cannot stand (a role that acts for one organisation, with none named) is refused:
    its token authenticates nobody, and the caller is told why."""

    by_token_hash: dict[str, Actor] = field(default_factory=dict)
    by_certificate_subject: dict[str, Actor] = field(default_factory=dict)
    refused_by_token_hash: dict[str, str] = field(default_factory=dict)


def entry_problem(roles: Iterable[str], organisation_id: str) -> str:
    """Why a caller with these roles and this organisation may not be registered, or ""."""
    roles = set(roles)
    unknown = roles - ROLES
    if unknown:
        return f"unknown roles {sorted(unknown)}; known: {sorted(ROLES)}"
    if not roles:
        return "a caller needs at least one role"
    if organisation_id and not is_uuid(organisation_id):
        return f"organisation id {organisation_id[:40]!r} is not a valid id"
    if organisation_id and PUBLIC_READER in roles:
        return "a public_reader token acts for no organisation (no --organisation-id)"
    bound = sorted(roles & ORGANISATION_ROLES)
    if bound and not organisation_id:
        return (f"a {'/'.join(bound)} token must name the organisation it acts for "
                "(--organisation-id)")
    return ""


class TokenRegistry:
    def __init__(self, path: Path):
        self._path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._callers = Callers()

    def authenticate(self, bearer: str | None) -> Actor:
        if not bearer:
            raise Unauthenticated("missing bearer token: send 'authorization: Bearer <token>'")
        callers = self._entries()
        digest = hash_token(bearer)
        actor = callers.by_token_hash.get(digest)
        if actor is None:
            why = callers.refused_by_token_hash.get(digest)
            if why is not None:
                raise Unauthenticated(f"this token's entry in the tokens file is refused: {why}; "
                                      "an operator can fix it with `qiji tokens assign`",
                                      reason="TOKEN_ENTRY_REFUSED")
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
                else:
                    for principal, why in refused_entries(self._path, self._callers):
                        log.error("tokens.entry_refused", path=str(self._path),
                                  principal=principal, why=why,
                                  fix="qiji tokens assign <principal> --organisation-id <id>")
                self._stamp = stamp
            return self._callers


def refused_entries(path: Path, callers: Callers | None = None) -> list[tuple[str, str]]:
    """(principal, why) of every entry of the tokens file that is refused."""
    data = json.loads(Path(path).read_text() or "{}") if Path(path).exists() else {}
    found = []
    for caller in data.get("callers", []):
        why = entry_problem(caller.get("roles", []), caller.get("organisation_id", ""))
        if why and not why.startswith("unknown roles"):
            found.append((caller["principal"], why))
    return found


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
        organisation_id = caller.get("organisation_id", "")
        why = entry_problem(roles, organisation_id)
        if why:
            # One bad entry refuses its own caller, not everyone's.
            callers.refused_by_token_hash[caller["token_sha256"]] = why
            continue
        actor = Actor(
            principal=caller["principal"], roles=roles,
            organisation_id=organisation_id,
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
    why = entry_problem(roles, organisation_id)
    if why:
        raise ValueError(why)
    with _locked(path):
        return _replace_caller(Path(path), principal, roles, organisation_id, subscriptions,
                               certificate_subject)


def assign_organisation(path: Path, principal: str, organisation_id: str) -> None:
    """Names the organisation an existing caller acts for, keeping its token: how a tokens
    file written before tokens had to name one is brought across (`qiji tokens assign`)."""
    with _locked(path):
        path = Path(path)
        data = json.loads(path.read_text() or "{}") if path.exists() else {}
        callers = data.get("callers", [])
        entry = next((c for c in callers if c["principal"] == principal), None)
        if entry is None:
            raise ValueError(f"no caller named {principal!r} in {path}")
        why = entry_problem(entry.get("roles", []), organisation_id)
        if why:
            raise ValueError(why)
        entry["organisation_id"] = organisation_id
        _write(path, callers)


def list_callers(path: Path) -> list[dict[str, Any]]:
    """Every entry of the tokens file (without its token hash), with why it is refused, if
    it is."""
    path = Path(path)
    data = json.loads(path.read_text() or "{}") if path.exists() else {}
    return [{"principal": c["principal"], "roles": sorted(c.get("roles", [])),
             "organisation_id": c.get("organisation_id", ""),
             "subscriptions": sorted(c.get("subscriptions", [])),
             "certificate_subject": c.get("certificate_subject", ""),
             "refused": entry_problem(c.get("roles", []), c.get("organisation_id", ""))}
            for c in data.get("callers", [])]


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    # Read-modify-write under a lock file: two callers added at once must both be kept.
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


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
    _write(path, callers)
    return token


def _write(path: Path, callers: list[dict[str, Any]]) -> None:
    write_private(path, json.dumps({"callers": callers}, indent=2))
