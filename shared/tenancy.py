"""Who acts for whom: the scope every RPC declares beside its roles, decided in one place.

Several platform companies, many merchants, departments, streets and communities share one
Qiji. A caller's token names the one organisation it acts for; each RPC's entry in its
service's access table says, for each role that may call it, which organisation must own what
the request reaches (a rider of the caller's platform, the caller's street, the department a
report is assigned to...). The guard resolves the request's targets to their owners before the
handler runs and refuses the call — PERMISSION_DENIED, whether or not the target exists
(AIP-211) — when the caller's organisation owns none of them. A list is not refused: its rows
are filtered to what the caller may see. An RPC missing from the table, or a role allowed
without a scope, is refused to everyone: the table fails closed.

City-wide roles act for the whole city: the city admin for everything, auditors and operators
read everything (their personal data masked, shared/masking.py), and `service` is Qiji's own
processes."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import grpc
import structlog

from shared import auth, context
from shared.background import keep_behind
from shared.errors import (
    InvalidArgument,
    Unavailable,
    Violations,
    check_id,
)

log = structlog.get_logger(__name__)

CITY_WIDE_ROLES = auth.CITY_WIDE_ROLES
TENANT_ROLES = auth.ORGANISATION_ROLES

# Which role acts for an organisation of each kind identity knows (a district or the city
# itself has no role of its own: the city admin acts for them).
ROLE_OF_KIND = {
    "PLATFORM": auth.PLATFORM,
    "MERCHANT": auth.MERCHANT,
    "DEPARTMENT": auth.DEPARTMENT,
    "STREET": auth.STREET_OFFICE,
    "COMMUNITY": auth.COMMUNITY,
    "EDUCATION_PROVIDER": auth.EDUCATION_PROVIDER,
}


# ---------------------------------------------------------------------------- owners


@dataclass(frozen=True)
class Owners:
    """Which organisations, acting in which role, may reach one thing. `public`: every role the
    RPC allows may reach it (a published perk, a published course); its owners may still do
    more where an RPC asks for an owner."""

    by_role: Mapping[str, frozenset[str]] = field(default_factory=dict)
    public: bool = False

    def admits(self, role: str, organisation_id: str) -> bool:
        return bool(organisation_id) and organisation_id in self.by_role.get(role, ())

    def __or__(self, other: Owners) -> Owners:
        roles = {r: frozenset(self.by_role.get(r, ())) | frozenset(other.by_role.get(r, ()))
                 for r in {*self.by_role, *other.by_role}}
        return Owners(roles, self.public or other.public)

    @staticmethod
    def of(**roles: str | Iterable[str]) -> Owners:
        """Owners by role: `Owners.of(platform=p, street_office=s)`; empty ids are dropped."""
        found: dict[str, frozenset[str]] = {}
        for role, ids in roles.items():
            # One id (a rider's platform, its street): the common case of every tenant's call.
            kept = (frozenset((ids,)) if ids else None) if isinstance(ids, str) \
                else frozenset(v for v in ids if v)
            if kept:
                found[role] = kept
        return Owners(found)


NOBODY = Owners()
EVERYONE = Owners(public=True)

# kind, id -> its owners, or None when no such thing is known (after catching up)
Resolver = Callable[[str, str], Owners | None]


# ---------------------------------------------------------------------------- scopes


@dataclass(frozen=True)
class Ref:
    """The request field `field` names a thing of `kind` (a rider, a perk, a report...): the
    caller must act for one of its owners. `optional`: an empty field reaches nothing, so it
    grants nothing either (another Ref of the role must hold)."""

    field: str
    kind: str
    optional: bool = False
    # A read: a thing its owners made public (a published perk, a scheduled session) may be
    # read by anyone the RPC allows. A command always needs an owner.
    read: bool = False

    def __or__(self, other: Ref | AnyOf) -> AnyOf:
        return AnyOf((self,)) | other

    def __and__(self, other: Ref) -> AllOf:
        return AllOf((self, other))

    def describe(self) -> str:
        return f"the {self.kind} of {self.field}"


# The rider a request names by its `rider_id`: a platform's own, a street office's resident.
RIDER = Ref("rider_id", "rider")
# The city-wide roles that read a service's tenant data (its lists and gets), personal data
# masked as shared/masking.py says.
CITY_READERS = frozenset({auth.CITY_ADMIN, auth.OPERATOR, auth.AUDITOR, auth.SERVICE})


@dataclass(frozen=True)
class Rows:
    """A list: each row whose `attr` names a thing of `kind` the caller's organisation owns is
    shown; others are left out (the list is never refused for them)."""

    kind: str
    attr: str

    def describe(self) -> str:
        return f"rows whose {self.attr} is a {self.kind} of yours"


@dataclass(frozen=True)
class AllOf:
    """Every one of these must hold (e.g. the department the request names is the caller, and
    the report is assigned to it); an optional one only when the request fills it."""

    refs: tuple[Ref, ...]

    def describe(self) -> str:
        return " and ".join(r.describe() for r in self.refs)


@dataclass(frozen=True)
class AnyOf:
    """Any one of these suffices (e.g. the street of the rider, or of the session's place)."""

    refs: tuple[Ref | AllOf, ...]

    def __or__(self, other: Ref | AllOf | AnyOf) -> AnyOf:
        more = other.refs if isinstance(other, AnyOf) else (other,)
        return AnyOf(self.refs + more)

    def describe(self) -> str:
        return " or ".join(r.describe() for r in self.refs)


@dataclass(frozen=True)
class Own:
    """The request reaches only the caller's own organisation's data, which the handler reads
    from the request context, never from the request (a platform's own feed)."""

    def describe(self) -> str:
        return "your own organisation's data"


OWN = Own()
Target = Ref | Rows | AllOf | AnyOf | Own


@dataclass(frozen=True)
class Access:
    """One RPC's entry: the roles that may call it and, for each tenant role among them, what
    its organisation must own. `public`: reference data every allowed role may read whatever
    it acts for (the organisation tree, published courses, badge classes)."""

    roles: frozenset[str]
    scopes: Mapping[str, Target] = field(default_factory=dict)
    public: bool = False
    # Request fields holding a rider's personal data, and the rider they belong to (a function
    # of the request): the request fingerprint keys them with that rider's own key, so that
    # nothing stored confirms a guess of them once the rider is erased.
    personal: tuple[str, ...] = ()
    subject: Callable[[Any], str] | None = None
    # Every call makes something new (an organisation, a report, an hour of service): a retry
    # without a request_id would make a second one, so the request must carry one (AIP-155).
    request_id_required: bool = False
    # Served on the server's wide pool of threads, not on the few that serve gets and commands
    # (shared/grpc/lanes.py): a call that may wait on purpose (a long poll until the log
    # grows), which would hold one of the few for seconds, or a read of the log that another
    # Qiji process follows (a feed), whose lag that process's readers feel, which must not
    # queue behind a burst of callers.
    wide_pool: bool = False

    def problems(self) -> list[str]:
        """What makes this entry unusable (the guard refuses such an RPC to everyone)."""
        found = []
        unknown = self.roles - auth.ROLES
        if unknown:
            found.append(f"unknown roles {sorted(unknown)}")
        if not self.public:
            for role in sorted(self.roles & TENANT_ROLES):
                if role not in self.scopes:
                    found.append(f"role {role} is allowed without a scope")
        extra = set(self.scopes) - self.roles
        if extra:
            found.append(f"scopes for roles it does not allow: {sorted(extra)}")
        if self.personal and self.subject is None:
            found.append("personal fields without the rider they belong to")
        return found


def once(access: Access) -> Access:
    """The same entry, for an RPC whose every call makes something new: it must carry a
    request_id, so that a caller's retry returns the first answer instead of making a second
    thing (a second city of the same name, a report counted twice, hours logged twice)."""
    return replace(access, request_id_required=True)


def on_wide_pool(access: Access) -> Access:
    """The same entry, for a unary RPC served on the wide pool (a long poll, a feed's read:
    `Access.wide_pool`)."""
    return replace(access, wide_pool=True)


def city_wide(*roles: str | frozenset[str]) -> Access:
    """Only roles that act for the whole city: nothing to scope."""
    flat = _flatten(roles)
    tenant = flat & TENANT_ROLES
    if tenant:
        raise ValueError(f"{sorted(tenant)} act for one organisation: use scoped()")
    return Access(frozenset(flat))


def public(*roles: str | frozenset[str]) -> Access:
    """Reference data: every allowed role reads it, whatever organisation it acts for."""
    return Access(frozenset(_flatten(roles)), public=True)


def scoped(*city_roles: str | frozenset[str], personal: Sequence[str] = (),
           subject: Callable[[Any], str] | None = None,
           tenants: Mapping[str, Target] | None = None, **scopes: Target) -> Access:
    """City-wide roles as given, and each tenant role named as a keyword with what its
    organisation must own: `scoped(CITY_ADMIN, platform=RIDER, street_office=RIDER)`; or
    several roles at once as `tenants` (`tenants=each(COURSE_READ)`)."""
    scopes = {**(tenants or {}), **scopes}
    flat = _flatten(city_roles)
    tenant = flat & TENANT_ROLES
    if tenant:
        raise ValueError(f"{sorted(tenant)} act for one organisation: give each a scope")
    unknown = set(scopes) - TENANT_ROLES
    if unknown:
        raise ValueError(f"{sorted(unknown)} are not roles that act for one organisation")
    return Access(frozenset(flat | set(scopes)), dict(scopes), personal=tuple(personal),
                  subject=subject)


def each(target: Target, *roles: str) -> dict[str, Target]:
    """The same scope for several tenant roles (all of them when none are named), for a read
    every tenant may make of what it owns: `scoped(CITY_READERS, tenants=each(COURSE_READ))`."""
    return dict.fromkeys(roles or sorted(TENANT_ROLES), target)


def _flatten(roles: Iterable[str | frozenset[str]]) -> set[str]:
    flat: set[str] = set()
    for r in roles:
        flat |= {r} if isinstance(r, str) else set(r)
    return flat


def access_table(service_name: str, entries: Mapping[str, Access]) -> dict[str, Access]:
    """The table keyed by full method name ("/pkg.Service/Method"), as the guard looks it up."""
    return {f"/{service_name}/{rpc}": access for rpc, access in entries.items()}


# ---------------------------------------------------------------------------- decisions


@dataclass(frozen=True)
class Reach:
    """What the caller of the request being served may see, for the code that renders lists
    and nested collections (a session's enrolments, a campaign's allocations). City-wide
    callers, and callers of public reads, see everything."""

    organisation_id: str = ""
    # role -> the Rows its organisation must own (lists), or None: no row filter.
    rows: Mapping[str, Rows] | None = None
    roles: frozenset[str] = frozenset()
    resolve: Resolver | None = None
    # Only EVERYTHING (a city-wide caller, a public read) sees everything: the default sees
    # nothing it does not own.
    everything: bool = False

    def admits_row(self, attrs: Mapping[str, Any]) -> bool:
        if self.rows is None:
            return True
        for role, rows in self.rows.items():
            value = attrs.get(rows.attr)
            # A row may name several (a report's assigned departments): one of them will do.
            values = value if isinstance(value, list | tuple | set | frozenset) else [value]
            if any(v and self._owns(rows.kind, str(v), role) for v in values):
                return True
        return False

    def sees(self, kind: str, ident: str) -> bool:
        """The caller may see that thing (a rider id inside another answer, say): it owns it,
        or it is public."""
        if self.everything:
            return True
        return any(self._owns(kind, ident, role) for role in self.roles)

    def owns(self, kind: str, ident: str) -> bool:
        """The caller's organisation owns that thing (public or not): a session's provider
        sees every enrolment in it, where others see only their own riders'."""
        if self.everything:
            return True
        return any(self._owns(kind, ident, role, public_counts=False) for role in self.roles)

    def _owns(self, kind: str, ident: str, role: str, *, public_counts: bool = True) -> bool:
        if self.resolve is None or not ident:
            return False
        try:
            owners = self.resolve(kind, ident)
        except InvalidArgument:
            return False
        return owners is not None and ((public_counts and owners.public)
                                       or owners.admits(role, self.organisation_id))


EVERYTHING = Reach(everything=True)


class OutOfScope(Exception):
    """The caller's organisation owns nothing the request reaches."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def decide(access: Access, actor: Any, request: Any, resolve: Resolver) -> Reach:
    """The caller may make this request (its Reach for rendering), or OutOfScope. Roles were
    checked before: the actor holds at least one role the access allows."""
    allowed = actor.roles & access.roles
    if access.public or allowed & CITY_WIDE_ROLES:
        return EVERYTHING
    organisation = actor.organisation_id
    rows: dict[str, Rows] = {}
    tenant_roles = frozenset(allowed & TENANT_ROLES)
    if organisation:
        for role in sorted(tenant_roles):
            target = access.scopes.get(role)
            if target is None:
                continue  # a broken table: the role reaches nothing (the tests catch it)
            if isinstance(target, Rows):
                rows[role] = target
                continue
            if isinstance(target, Own):
                return Reach(organisation, None, tenant_roles, resolve, everything=False)
            for ref in (target.refs if isinstance(target, AnyOf) else (target,)):
                if _holds(ref, role, organisation, request, resolve):
                    return Reach(organisation, None, tenant_roles, resolve, everything=False)
    if rows:
        return Reach(organisation, rows, tenant_roles, resolve, everything=False)
    if not organisation:
        raise OutOfScope(f"{actor.principal} acts for no organisation; its token must name "
                         "the one it acts for")
    what = "; ".join(f"{role}: {access.scopes[role].describe()}"
                     for role in sorted(tenant_roles) if role in access.scopes)
    raise OutOfScope(f"{actor.principal} acts for organisation {organisation}, which may not "
                     f"reach what this request names ({what})")


def no_owners(kind: str, ident: str) -> Owners | None:
    """The resolver of a process that owns nothing (the platform gateway)."""
    return None


def _holds(ref: Ref | AllOf, role: str, organisation: str, request: Any,
           resolve: Resolver) -> bool:
    if isinstance(ref, AllOf):
        # An optional ref of an AllOf that the request leaves empty asks nothing; one it fills
        # must hold like the others (a mediation case's report, if it names one).
        return all(_holds(r, role, organisation, request, resolve) for r in ref.refs
                   if not (r.optional and not _field(request, r.field)))
    owners = _owners_of(ref, request, resolve)
    return owners is not None and (owners.admits(role, organisation)
                                   or (ref.read and owners.public))


def _field(request: Any, path: str) -> Any:
    value = request
    for name in path.split("."):
        value = getattr(value, name, "")
    return value


def _owners_of(ref: Ref, request: Any, resolve: Resolver) -> Owners | None:
    value = _field(request, ref.field)
    if not value and ref.optional:
        return None
    # FIELD_REQUIRED when empty, INVALID_ID when malformed: the one id check of every field.
    violations = Violations()
    check_id(violations, ref.field, value)
    violations.raise_if_any()
    return resolve(ref.kind, value)


# ---------------------------------------------------------------------------- the directory


@dataclass(frozen=True)
class OrganisationEntry:
    kind: str
    parent_id: str


@dataclass(frozen=True)
class RiderEntry:
    platform_id: str
    home_street_id: str
    station_id: str
    # When identity registered the rider (merchants' "new rider" care-package rule).
    registered_at: datetime | None = None


# identity's topics the directory reads (they never change once stored: a rider's platform,
# home street and station, an organisation's kind and parent, a service space's street).
ORGANISATION_CREATED = "services.identity.domain.model:Organisation.Created"
RIDER_REGISTERED = "services.identity.domain.model:Rider.Registered"
SERVICE_SPACE_OPENED = "services.identity.domain.model:ServiceSpace.Opened"
DIRECTORY_TOPICS = (ORGANISATION_CREATED, RIDER_REGISTERED, SERVICE_SPACE_OPENED)
BATCH = 1000


class TenancyDirectory:
    """Who owns what, as identity recorded it: each rider's platform and home street, each
    organisation's kind and parent, each service space's street. A derived read model of
    identity's log, read through identity's feed (identity reads its own log), kept in memory
    and rebuilt from position 1 when the process starts: dropping it loses nothing.

    Every entry is immutable once stored, so an entry found is never stale; a miss catches up
    with the feed once before it counts as unknown (something registered a moment ago)."""

    # The name of its thread among a service's background work.
    upstream = "identity-directory"

    def __init__(self, feed: Any):
        self._feed = feed
        self._lock = threading.Lock()
        self.position = 0
        self.organisations: dict[str, OrganisationEntry] = {}
        self.riders: dict[str, RiderEntry] = {}
        self.service_spaces: dict[str, str] = {}
        self._miss_lock = threading.Lock()
        # Catch-ups started, and the number of the newest that completed: a miss coalesces
        # with any catch-up that started after it.
        self._started = 0
        self._completed = 0

    def catch_up(self, *, redial: bool = False) -> int:
        """Applies what identity stored since the last look. identity out of reach is the
        caller's UNAVAILABLE (retry): who owns a rider cannot be guessed. `redial`: a request
        waits on it (Feed.read)."""
        try:
            return self._catch_up(redial)
        except grpc.RpcError as error:
            raise Unavailable("identity cannot be reached to tell who owns this; retry shortly",
                              reason="UPSTREAM_UNAVAILABLE", upstream="identity",
                              code=error.code().name) from None

    def run_forever(self, stopping: threading.Event, every: float = 2.0) -> None:
        """Built as the process starts and kept close behind identity."""
        keep_behind(lambda: self.catch_up() >= 0, stopping, name=self.upstream, every=every)

    def _catch_up(self, redial: bool) -> int:
        with self._lock:
            self._started += 1
            number = self._started
            applied = 0
            while True:
                events = self._feed.read(self.position + 1, BATCH, list(DIRECTORY_TOPICS),
                                         redial=redial)
                for e in events:
                    self._apply(e.topic, str(e.originator_id), e.state)
                    self.position = e.position
                applied += len(events)
                if len(events) < BATCH:
                    self._completed = number
                    break
                if applied % 10_000 < BATCH:
                    log.info("tenancy.directory.progress", events=applied,
                             position=self.position)
            return applied

    def _apply(self, topic: str, ident: str, state: Mapping[str, Any]) -> None:
        if topic == ORGANISATION_CREATED:
            self.organisations[ident] = OrganisationEntry(str(state["kind"]),
                                                          state.get("parent_id", "") or "")
        elif topic == RIDER_REGISTERED:
            self.riders[ident] = RiderEntry(state["platform_id"], state["home_street_id"],
                                            state.get("station_id", ""),
                                            state.get("timestamp"))
        elif topic == SERVICE_SPACE_OPENED:
            self.service_spaces[ident] = state["street_id"]

    def _found(self, table: dict[str, Any], ident: str) -> Any:
        found = table.get(ident)
        if found is None:
            # Within a request served, once is enough: what identity stored before the request
            # came is then known (a request naming twenty unknown organisations is one read).
            caught_up = context.current().caught_up
            if caught_up is not None and self.upstream in caught_up:
                return None
            missed = self._started
            with self._miss_lock:
                # A miss needs a catch-up that began after it (so that what identity stored
                # before it is seen); one another miss already ran will do. A caller sending
                # many unknown ids at once costs one read of identity's feed, not one each.
                if self._completed <= missed:
                    self.catch_up(redial=True)
            if caught_up is not None:
                caught_up.add(self.upstream)
            found = table.get(ident)
        return found

    def organisation(self, ident: str) -> OrganisationEntry | None:
        return self._found(self.organisations, ident)

    def rider(self, ident: str) -> RiderEntry | None:
        return self._found(self.riders, ident)

    def service_space_street(self, ident: str) -> str | None:
        return self._found(self.service_spaces, ident)

    # -------------------------------------------------------------- owners

    def organisation_owners(self, ident: str) -> Owners | None:
        """An organisation is its own (in the role its kind implies); a community is also its
        street office's, a station its platform's, a merchant its street office's; a business
        area (which has no role of its own) is its street office's alone."""
        org = self.organisation(ident)
        if org is None:
            return None
        owners = Owners.of(**{ROLE_OF_KIND[org.kind]: ident}) if org.kind in ROLE_OF_KIND \
            else NOBODY
        if org.kind in ("COMMUNITY", "MERCHANT", "BUSINESS_AREA") and org.parent_id:
            owners = owners | Owners.of(street_office=org.parent_id)
        elif org.kind == "STATION":
            owners = owners | Owners.of(platform=org.parent_id)
        return owners

    def rider_owners(self, ident: str) -> Owners | None:
        """A rider is its platform's, and its home street office's."""
        rider = self.rider(ident)
        if rider is None:
            return None
        return Owners.of(platform=rider.platform_id, street_office=rider.home_street_id)

    def service_space_owners(self, ident: str) -> Owners | None:
        street = self.service_space_street(ident)
        return None if street is None else Owners.of(street_office=street)
