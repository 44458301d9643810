"""The access tables and the guard's tenancy decision, without stores or servers: every RPC
every process serves has an entry that can stand; for every RPC and every role that acts for
one organisation, a caller of the owning organisation is admitted and a caller of another is
refused (or, for a list, given only its own rows); an RPC without an entry, or with a role but
no scope, is refused to everyone. Milliseconds for the whole table."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import FieldDescriptor

from services.badges.service import SPEC as BADGES
from services.governance.service import SPEC as GOVERNANCE
from services.identity.service import SPEC as IDENTITY
from services.merchants.service import SPEC as MERCHANTS
from services.platform.grpc_api import ACCESS as PLATFORM_ACCESS
from services.platform.grpc_api import SERVICE_NAME as PLATFORM_SERVICE
from services.statistics.grpc_api import ACCESS as STATISTICS_ACCESS
from services.statistics.grpc_api import SERVICE_NAME as STATISTICS_SERVICE
from services.training.service import SPEC as TRAINING
from shared import auth
from shared.context import Actor
from shared.grpc.server import service_access
from shared.tenancy import (
    CITY_WIDE_ROLES,
    EVERYTHING,
    TENANT_ROLES,
    Access,
    AllOf,
    AnyOf,
    OutOfScope,
    Own,
    Owners,
    Ref,
    Rows,
    decide,
    scoped,
)

SPECS = (IDENTITY, TRAINING, MERCHANTS, BADGES, GOVERNANCE)
OWNER = "11111111-1111-4111-8111-111111111111"
STRANGER = "22222222-2222-4222-8222-222222222222"
KERNEL = ("qiji.feed.v1.FeedService", "qiji.feed.v1.PublicFeedService",
          "qiji.audit.v1.AuditService")


def methods_served(spec: Any) -> list[str]:
    pool = descriptor_pool.Default()
    names = [f"qiji.{spec.name}.v1.{spec.name.capitalize()}Service", *KERNEL]
    return [f"/{n}/{m.name}" for n in names for m in pool.FindServiceByName(n).methods]


def all_entries() -> list[Any]:
    cases = [pytest.param(spec.name, path, access, id=f"{spec.name}{path}")
             for spec in SPECS for path, access in service_access(spec).items()]
    cases += [pytest.param("platform", path, access, id=f"platform{path}")
              for path, access in PLATFORM_ACCESS.items()]
    cases += [pytest.param("statistics", path, access, id=f"statistics{path}")
              for path, access in STATISTICS_ACCESS.items()]
    return cases


def tenant_cases() -> list[Any]:
    return [pytest.param(service, path, access, role, id=f"{service}{path}-{role}")
            for service, path, access in (p.values for p in all_entries())
            for role in sorted(access.roles & TENANT_ROLES)]


def request_for(path: str) -> Any:
    """A request of the method's type with every id field naming one thing (a UUID)."""
    service, rpc = path.strip("/").split("/")
    method = descriptor_pool.Default().FindServiceByName(service).methods_by_name[rpc]
    request = message_factory.GetMessageClass(method.input_type)()
    _fill(request)
    return request


def _fill(message: Any) -> None:
    for f in message.DESCRIPTOR.fields:
        if f.is_repeated:
            continue
        if f.type == FieldDescriptor.TYPE_STRING:
            setattr(message, f.name, str(uuid.uuid4()))
        elif f.type == FieldDescriptor.TYPE_MESSAGE and f.message_type.full_name.startswith(
                "qiji."):
            _fill(getattr(message, f.name))


def owned_by(organisation: str, *, public: bool = False) -> Any:
    """A resolver for which every thing belongs to `organisation`, in every role."""
    def resolve(kind: str, ident: str) -> Owners:
        return Owners({role: frozenset({organisation}) for role in TENANT_ROLES}, public)
    return resolve


def caller(role: str, organisation: str) -> Actor:
    return Actor(principal=f"{role}-caller", roles=frozenset({role}),
                 organisation_id=organisation)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_every_method_a_service_serves_has_an_entry_that_can_stand(spec: Any) -> None:
    table = service_access(spec)
    assert set(table) == set(methods_served(spec))
    for path, access in table.items():
        assert access.roles, f"{path} admits nobody"
        assert not access.problems(), f"{path}: {access.problems()}"


def test_the_platform_gateway_table_covers_its_service() -> None:
    methods = descriptor_pool.Default().FindServiceByName(PLATFORM_SERVICE).methods
    assert set(PLATFORM_ACCESS) == {f"/{PLATFORM_SERVICE}/{m.name}" for m in methods}
    assert all(a.roles == {auth.PLATFORM} for a in PLATFORM_ACCESS.values())


def test_the_figures_table_covers_their_service_and_scopes_each_tenant_to_its_own() -> None:
    """The figures are filtered by the read model's Viewer, from the caller's own organisation
    (never from the request): each tenant role that may hold figures is scoped OWN; a caller
    that acts for nobody, an education provider and the public face are refused."""
    methods = descriptor_pool.Default().FindServiceByName(STATISTICS_SERVICE).methods
    assert set(STATISTICS_ACCESS) == {f"/{STATISTICS_SERVICE}/{m.name}" for m in methods}
    for path, access in STATISTICS_ACCESS.items():
        assert not access.problems() and not access.public, path
        assert access.roles & CITY_WIDE_ROLES == {auth.CITY_ADMIN, auth.AUDITOR, auth.OPERATOR,
                                                  auth.SERVICE}, path
        assert set(access.scopes) == {auth.STREET_OFFICE, auth.COMMUNITY, auth.PLATFORM,
                                      auth.MERCHANT, auth.DEPARTMENT}, path
        assert all(isinstance(t, Own) for t in access.scopes.values()), path
        assert not access.request_id_required, path  # the figures make nothing


@pytest.mark.parametrize(("service", "path", "access", "role"), tenant_cases())
def test_a_caller_of_the_owning_organisation_is_admitted_and_another_is_not(
        service: str, path: str, access: Access, role: str) -> None:
    request = request_for(path)
    admitted = decide(access, caller(role, OWNER), request, owned_by(OWNER))
    target = access.scopes.get(role)
    if access.public:
        assert admitted is EVERYTHING
        return
    assert target is not None
    if isinstance(target, Rows):
        # A list: never refused, but what it shows is filtered to the caller's own rows.
        stranger = decide(access, caller(role, STRANGER), request, owned_by(OWNER))
        assert stranger.admits_row({target.attr: OWNER}) is False
        assert admitted.admits_row({target.attr: OWNER}) is True
        return
    assert not admitted.everything, "a tenant's reach is never the whole city"
    if isinstance(target, Own):
        return
    with pytest.raises(OutOfScope):
        decide(access, caller(role, STRANGER), request, owned_by(OWNER))


@pytest.mark.parametrize(("service", "path", "access", "role"), tenant_cases())
def test_a_token_that_names_no_organisation_reaches_nothing(
        service: str, path: str, access: Access, role: str) -> None:
    if access.public:
        return
    with pytest.raises(OutOfScope):
        decide(access, caller(role, ""), request_for(path), owned_by(""))


@pytest.mark.parametrize(("service", "path", "access", "role"), tenant_cases())
def test_what_is_unknown_is_refused_as_what_is_someone_elses(
        service: str, path: str, access: Access, role: str) -> None:
    """AIP-211: a caller learns nothing of what exists outside its organisation."""
    target = access.scopes.get(role)
    if access.public or isinstance(target, Rows | Own):
        return
    with pytest.raises(OutOfScope) as unknown:
        decide(access, caller(role, OWNER), request_for(path), lambda kind, ident: None)
    with pytest.raises(OutOfScope) as others:
        decide(access, caller(role, OWNER), request_for(path), owned_by(STRANGER))
    assert unknown.value.message == others.value.message


def test_a_command_never_reaches_a_public_thing_it_does_not_own() -> None:
    command = scoped(merchant=Ref("perk_id", "perk"))
    read = scoped(merchant=Ref("perk_id", "perk", read=True))
    request = request_for("/qiji.merchants.v1.MerchantsService/PublishPerkOffer")
    published = owned_by(OWNER, public=True)
    with pytest.raises(OutOfScope):
        decide(command, caller(auth.MERCHANT, STRANGER), request, published)
    assert not decide(read, caller(auth.MERCHANT, STRANGER), request, published).everything


def test_every_ref_of_an_all_of_must_hold() -> None:
    access = scoped(department=AllOf((Ref("department_id", "organisation"),
                                      Ref("report_id", "report"))))
    request = request_for("/qiji.governance.v1.GovernanceService/AcknowledgeAssignment")

    def resolve(kind: str, ident: str) -> Owners:
        # The report is assigned to OWNER, but the request names another department.
        owner = OWNER if kind == "report" else STRANGER
        return Owners.of(department=owner)
    with pytest.raises(OutOfScope):
        decide(access, caller(auth.DEPARTMENT, OWNER), request, resolve)


def test_any_of_admits_on_any_one_ref() -> None:
    access = scoped(street_office=AnyOf((Ref("rider_id", "rider"), Ref("session_id", "session"))))
    request = request_for("/qiji.training.v1.TrainingService/EnrolRider")

    def resolve(kind: str, ident: str) -> Owners:
        return Owners.of(street_office=OWNER if kind == "session" else STRANGER)
    assert not decide(access, caller(auth.STREET_OFFICE, OWNER), request, resolve).everything


def test_a_role_allowed_without_a_scope_makes_the_entry_refused_to_everyone() -> None:
    broken = Access(frozenset({auth.CITY_ADMIN, auth.PLATFORM}))
    assert broken.problems() == ["role platform is allowed without a scope"]
    with pytest.raises(ValueError, match="give each a scope"):
        scoped(auth.PLATFORM)


def test_the_public_reader_reaches_only_what_every_role_may_read() -> None:
    """The public credentials face's role (the internet reaches that process): admitted by
    the entries every role may call (`public(ROLES)`) and by no other, in every table."""
    tables = [*(service_access(spec) for spec in SPECS), PLATFORM_ACCESS]
    reached = [path for table in tables for path, access in table.items()
               if auth.PUBLIC_READER in access.roles]
    assert reached, "the face reaches badges' public reads"
    for table in tables:
        for path, access in table.items():
            if auth.PUBLIC_READER in access.roles:
                assert access.public and access.roles == auth.ROLES, path
    assert "/qiji.badges.v1.BadgesService/GetStatusList" in reached
    assert "/qiji.badges.v1.BadgesService/ExportCredential" not in reached


def test_city_wide_roles_reach_everything_and_tenant_roles_never_do() -> None:
    assert CITY_WIDE_ROLES == {auth.CITY_ADMIN, auth.AUDITOR, auth.OPERATOR, auth.SERVICE,
                               auth.PUBLIC_READER}
    assert CITY_WIDE_ROLES | TENANT_ROLES == auth.ROLES
    assert not CITY_WIDE_ROLES & TENANT_ROLES


def test_the_guard_refuses_an_rpc_missing_from_the_table_or_with_a_broken_entry(tmp_path):
    from shared.auth import TokenRegistry, add_caller
    from shared.grpc.guard import Guard
    from tests.inprocess import Aborted, CallContext, decode

    tokens = tmp_path / "tokens.json"
    admin = add_caller(tokens, "admin", [auth.CITY_ADMIN])
    listed = "/qiji.identity.v1.IdentityService/GetOrganisation"
    broken = "/qiji.identity.v1.IdentityService/GetRider"
    guard = Guard(tokens=TokenRegistry(tokens), error_domain="identity.qiji",
                  access={listed: service_access(IDENTITY)[listed],
                          broken: Access(frozenset({auth.CITY_ADMIN, auth.PLATFORM}))},
                  resolve=owned_by(OWNER))
    reached = []
    handler = grpc.unary_unary_rpc_method_handler(lambda request, context: reached.append(1))
    for path in (broken, "/qiji.identity.v1.IdentityService/ListRiders"):
        wrapped = guard._wrap(path, handler)
        with pytest.raises(Aborted) as refused:
            wrapped.unary_unary(request_for(path), CallContext(admin))
        answer = decode(refused.value.status)
        assert (answer.code, answer.reason) == (grpc.StatusCode.PERMISSION_DENIED,
                                                "ROLE_NOT_ALLOWED")
    guard._wrap(listed, handler).unary_unary(request_for(listed), CallContext(admin))
    assert reached == [1]


def test_the_guard_finds_owners_inside_the_request_so_its_one_look_at_the_log_is_shared(
        tmp_path):
    """A resolver that reads a cached aggregate looks at the log once per request (the
    request's `caught_up` memo, shared/store/cache.py). The guard resolves owners inside the
    request's context with the same memo the handler gets, so the look made for the scope
    serves the handler too: one look per request, not one before it and one in it."""
    from shared.auth import TokenRegistry, add_caller
    from shared.context import serving
    from shared.grpc.guard import Guard
    from tests.inprocess import CallContext

    tokens = tmp_path / "tokens.json"
    token = add_caller(tokens, "platform-co", [auth.PLATFORM], OWNER)
    path = "/qiji.identity.v1.IdentityService/GetRider"
    looks: list[str] = []

    def resolve(kind: str, ident: str) -> Owners:
        ctx = serving()
        assert ctx is not None and ctx.caught_up is not None, "owners found outside the request"
        if "log" not in ctx.caught_up:  # what the aggregate cache does once per request
            ctx.caught_up.add("log")
            looks.append(kind)
        return Owners.of(platform=OWNER)

    guard = Guard(tokens=TokenRegistry(tokens), error_domain="identity.qiji",
                  access={path: service_access(IDENTITY)[path]}, resolve=resolve)

    def handler(request: object, context: object) -> None:
        ctx = serving()
        assert ctx is not None and ctx.reach is not None and ctx.caught_up == {"log"}
        resolve("rider", str(request.rider_id))  # type: ignore[attr-defined]
        assert ctx.reach.sees("rider", str(request.rider_id))  # type: ignore[attr-defined]

    wrapped = guard._wrap(path, grpc.unary_unary_rpc_method_handler(handler))
    wrapped.unary_unary(request_for(path), CallContext(token))
    assert looks == ["rider"]
