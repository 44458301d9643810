"""One city for every tier: 常州市 › 钟楼区 › 荷花池街道 (and, where a test asks, a community,
a department, an education provider, a merchant), beside the platform 骑迹外卖 and its station
荷花池站, as a city admin creates them.

The tree is said once here; how it reaches identity is the tier's: `in_application` calls
the identity application in this process (unit of the integration tier), `in_process` calls
its servicer through the guard (tests/inprocess.py), `over_grpc` calls a running identity
process (tests/e2e). A test that needs more than the tree (a second street, another platform)
adds it with the same maker: `City.add`."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from qiji.identity.v1 import identity_service_pb2 as ipb

from services.identity.domain.values import DepartmentFunction, OrganisationKind

# (kind, name, parent, department function or "") -> the new organisation's id. Kinds and
# functions are the domain's names ("STREET", "SOCIAL_WORK"); each maker turns them into what
# its tier takes.
Maker = Callable[[str, str, str, str], str]

# The tree's parts, each with its kind, name and parent part, in the order they are made.
PARTS: dict[str, tuple[str, str, str]] = {
    "city": ("CITY", "常州市", ""),
    "district": ("DISTRICT", "钟楼区", "city"),
    "street": ("STREET", "荷花池街道", "district"),
    "community": ("COMMUNITY", "北大街社区", "street"),
    "department": ("DEPARTMENT", "荷花池街道社会工作部", "street"),
    "platform": ("PLATFORM", "骑迹外卖", ""),
    "station": ("STATION", "荷花池站", "platform"),
    "provider": ("EDUCATION_PROVIDER", "江苏理工学院", ""),
    "merchant": ("MERCHANT", "荷花池面馆", "street"),
}
# What a rider needs to be registered: the tree every tier made before this module.
TREE = ("city", "district", "street", "platform", "station")
DEPARTMENT_FUNCTION = "SOCIAL_WORK"


@dataclass
class City:
    """The ids of what was made, by part ("street") and as attributes (`city.street`)."""

    make: Maker
    ids: dict[str, str] = field(default_factory=dict)

    def __getattr__(self, part: str) -> str:
        try:
            return self.__dict__["ids"][part]
        except KeyError:
            raise AttributeError(part) from None

    def __getitem__(self, part: str) -> str:
        return self.ids[part]

    def as_dict(self) -> dict[str, str]:
        return dict(self.ids)

    def add(self, part: str, kind: str, name: str, parent: str = "",
            function: str = "") -> str:
        """One more organisation (`parent`: a part's name or an id), kept as `part`."""
        self.ids[part] = self.make(kind, name, self.ids.get(parent, parent), function)
        return self.ids[part]


def build_city(make: Maker, parts: Iterable[str] = TREE, *, also: Iterable[str] = (),
               names: dict[str, str] | None = None, label: str = "",
               within: dict[str, str] | None = None) -> City:
    """The city's `parts` and `also` (their parents first, whether asked for or not; by
    default the tree a rider needs, and `also` beside it), made by `make`;
    `names` overrides the default name of a part, `label` is appended to every name (two
    tenants in one store), and the parts in `within` (ids) are not made again but used (a
    second street in the same district: `within={"city": .., "district": ..}`)."""
    city = City(make, dict(within or {}))
    wanted = {*parts, *also}
    for part in list(wanted):
        parent = PARTS[part][2]
        while parent:
            wanted.add(parent)
            parent = PARTS[parent][2]
    for part, (kind, name, parent) in PARTS.items():
        if part in wanted and part not in city.ids:
            city.add(part, kind, (names or {}).get(part, name) + label, parent,
                     DEPARTMENT_FUNCTION if kind == "DEPARTMENT" else "")
    return city


# ---------------------------------------------------------------------------- makers


def in_application(identity: Any) -> Maker:
    """Through the identity application, acting as a city admin (the integration tier)."""
    from tests.conftest import actor, as_actor

    def make(kind: str, name: str, parent: str, function: str) -> str:
        with as_actor(actor("city", "city_admin")):
            return identity.create_organisation(
                kind=OrganisationKind(kind), name=name, parent_id=parent,
                department_function=DepartmentFunction(function) if function else None,
            )["organisation_id"]
    return make


def request(kind: str, name: str, parent: str, function: str) -> ipb.CreateOrganisationRequest:
    """The CreateOrganisation request a city admin sends, with a new request id."""
    return ipb.CreateOrganisationRequest(
        request_id=str(uuid.uuid4()), kind=f"ORGANISATION_KIND_{kind}", name=name,
        parent_id=parent,
        department_function=f"DEPARTMENT_FUNCTION_{function}" if function else None)


def in_process(qiji: Any, admin_token: str) -> Maker:
    """Through identity's guard and servicer in this process (tests/inprocess.py), with a
    city admin's token."""
    def make(kind: str, name: str, parent: str, function: str) -> str:
        return qiji.ok("identity", "CreateOrganisation", request(kind, name, parent, function),
                       admin_token).organisation.organisation_id
    return make


def over_grpc(admin: Any) -> Maker:
    """Over gRPC to a running identity, as the city admin `admin` (a tests.e2e.client.Client)."""
    def make(kind: str, name: str, parent: str, function: str) -> str:
        return admin.CreateOrganisation(request(kind, name, parent, function)
                                        ).organisation.organisation_id
    return make


def over_stub(stub: Any, metadata: Any) -> Maker:
    """Over gRPC through a plain IdentityServiceStub with the caller's metadata (bench/)."""
    def make(kind: str, name: str, parent: str, function: str) -> str:
        return stub.CreateOrganisation(request(kind, name, parent, function),
                                       metadata=metadata).organisation.organisation_id
    return make
