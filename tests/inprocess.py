"""The five services in one process, each behind its own guard, called by method name with a
bearer token: the tokens file, the guard, the access tables, the servicers and the
applications exactly as a deployment runs them, on a real store, without the network. What the
tenancy matrix and the role matrix call, hundreds of times, in seconds.

Followers read their upstreams in-process (LocalFeed); a service catches up with identity by
itself when a request names something new, and `sync()` applies every follower's backlog for
reactions that happen in the background (an award after a course, say)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pool, message_factory
from google.rpc import error_details_pb2, status_pb2

from services.badges.service import SPEC as BADGES
from services.governance.service import SPEC as GOVERNANCE
from services.identity.partners import SOURCES as PARTNER_SOURCES
from services.identity.partners import PartnerContributions
from services.identity.rider_record import SOURCES as RECORD_SOURCES
from services.identity.rider_record import RiderRecords
from services.identity.service import SPEC as IDENTITY
from services.merchants.badge_classes import BadgeClassDirectory
from services.merchants.service import SPEC as MERCHANTS
from services.training.service import SPEC as TRAINING
from shared import metrics
from shared.application import QijiApplication
from shared.auth import TokenRegistry, add_caller
from shared.followers import Follower, LocalFeed
from shared.grpc import audit as audit_api
from shared.grpc import feed
from shared.grpc import public_feed as public_feed_api
from shared.grpc.guard import Guard
from shared.grpc.server import ServiceSpec, service_access
from shared.public_feed import PublicCatalogue
from tests.conftest import MASTER_KEY, settings_for

SPECS: dict[str, ServiceSpec] = {s.name: s for s in (IDENTITY, TRAINING, MERCHANTS, BADGES,
                                                    GOVERNANCE)}


@dataclass
class Answer:
    """What a call answered: the response, or the status it was refused with."""

    response: Any = None
    code: grpc.StatusCode = grpc.StatusCode.OK
    message: str = ""
    reason: str = ""
    domain: str = ""
    fields: list[str] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    # The google.rpc.Status as the caller receives it, every detail, byte for byte.
    raw: bytes = b""

    @property
    def ok(self) -> bool:
        return self.code is grpc.StatusCode.OK


class Aborted(Exception):
    def __init__(self, status: grpc.Status):
        self.status = status


class CallContext:
    """The part of a grpc.ServicerContext the guard and the servicers use: a caller with a
    bearer token (or none, or `header` as the raw authorization metadata)."""

    # A stream with nothing to send ends after this long, as if its caller had gone.
    STREAM_PATIENCE = 2.0

    def __init__(self, token: str | None, header: str | None = None):
        if header is not None:
            self._metadata: tuple[tuple[str, str], ...] = (("authorization", header),)
        else:
            self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._until = time.monotonic() + self.STREAM_PATIENCE

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def send_initial_metadata(self, metadata: Any) -> None:
        pass

    def abort_with_status(self, status: grpc.Status) -> None:
        raise Aborted(status)

    def is_active(self) -> bool:
        return time.monotonic() < self._until

    def auth_context(self) -> dict[str, Any]:
        return {}

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"


class Registrar:
    """Stands in for a grpc.Server while servicers register: keeps their method handlers."""

    def __init__(self) -> None:
        self.handlers: dict[str, Any] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        for name, handler in handlers.items():
            self.handlers[f"/{service}/{name}"] = handler


def decode(status: grpc.Status) -> Answer:
    details = dict(status.trailing_metadata or ())
    answer = Answer(code=status.code, message=status.details)
    raw = details.get("grpc-status-details-bin")
    if isinstance(raw, bytes) and raw:  # a "-bin" key's value is always bytes
        answer.raw = raw
        for packed in status_pb2.Status.FromString(raw).details:
            info = error_details_pb2.ErrorInfo()
            bad = error_details_pb2.BadRequest()
            if packed.Unpack(info):
                answer.reason, answer.domain = info.reason, info.domain
                answer.metadata = dict(info.metadata)
            elif packed.Unpack(bad):
                answer.fields = [v.field for v in bad.field_violations]
    return answer


class Service:
    """One service: its application and its guarded handlers."""

    def __init__(self, spec: ServiceSpec, app: QijiApplication, tokens_file: Path):
        self.spec = spec
        self.app = app
        registrar = Registrar()
        spec.add_servicers(registrar, app)  # type: ignore[arg-type]
        feed.register(registrar, app, threading.Event())  # type: ignore[arg-type]
        public_feed_api.register(registrar, app,  # type: ignore[arg-type]
                                 spec.public_events or PublicCatalogue(spec.name, []))
        audit_api.register(registrar, app)  # type: ignore[arg-type]
        self.access = service_access(spec)
        guard = Guard(tokens=TokenRegistry(tokens_file), access=self.access, resolve=app.owners,
                      error_domain=f"{spec.name}.qiji", on_rpc=metrics.rpc_observer(spec.name))
        self.methods = {path: guard._wrap(path, handler)
                        for path, handler in registrar.handlers.items()}
        self.raw = registrar.handlers

    def call(self, path: str, request: Any, token: str | None) -> Answer:
        handler = self.methods[path]
        context = CallContext(token)
        try:
            if handler.unary_unary is not None:
                return Answer(response=handler.unary_unary(request, context))
            stream: Iterator[Any] = handler.unary_stream(request, context)
            return Answer(response=next(stream, None))
        except Aborted as aborted:
            return decode(aborted.status)

    @staticmethod
    def request_of(path: str) -> Any:
        """An empty request of the method's input type."""
        return message_factory.GetMessageClass(descriptor(path).input_type)()


def descriptor(path: str) -> Any:
    """The method descriptor of "/pkg.Service/Rpc"."""
    service, rpc = path.strip("/").split("/")
    return descriptor_pool.Default().FindServiceByName(service).methods_by_name[rpc]


class InProcessQiji:
    def __init__(self, env: dict[str, str], tokens_file: Path):
        self.tokens_file = tokens_file
        apps: dict[str, QijiApplication] = {
            name: spec.make_app(settings_for(name, env), MASTER_KEY)
            for name, spec in SPECS.items()}
        self.apps = apps
        self.followers: list[Follower] = []
        for name, upstreams in {"training": ["identity"], "merchants": ["identity", "badges"],
                                "badges": ["identity", "training", "governance"],
                                "governance": ["identity"],
                                "identity": ["merchants", "governance"]}.items():
            app = apps[name]
            for upstream in upstreams:
                policy = getattr(app, f"follow_{upstream}")
                topics = getattr(type(app), f"{upstream.upper()}_TOPICS")
                follower = Follower(app, LocalFeed(apps[upstream]), policy, topics=topics)
                if upstream == "identity" or name == "identity":
                    setattr(app, f"{upstream}_follower", follower)
                self.followers.append(follower)
        # merchants knows badges' classes (a perk naming none that exists is refused).
        apps["merchants"].badge_classes = BadgeClassDirectory(  # type: ignore[attr-defined]
            LocalFeed(apps["badges"]))
        # identity keeps riders' records from the other four services' feeds.
        identity = apps["identity"]
        identity.records = RiderRecords(  # type: ignore[attr-defined]
            {name: LocalFeed(apps[name]) for name in RECORD_SOURCES},
            check_mac=identity.event_mac.check, master_key=MASTER_KEY,
            clock=identity.clock)  # type: ignore[attr-defined]
        # ...and what partners gave, from training's and merchants'.
        identity.partners = PartnerContributions(  # type: ignore[attr-defined]
            {name: LocalFeed(apps[name]) for name in PARTNER_SOURCES},
            check_mac=identity.event_mac.check)
        self.services = {name: Service(SPECS[name], app, tokens_file)
                         for name, app in apps.items()}

    def token(self, principal: str, *roles: str, organisation_id: str = "") -> str:
        return add_caller(self.tokens_file, principal, list(roles), organisation_id)

    def call(self, service: str, method: str, request: Any, token: str | None) -> Answer:
        """`method` of `service`: an RPC of its own API by name ("RegisterRider"), or any
        method it serves by full path ("/qiji.feed.v1.FeedService/ReadEvents")."""
        path = method if method.startswith("/") else f"/{API_NAMES[service]}/{method}"
        return self.services[service].call(path, request, token)

    def ok(self, service: str, method: str, request: Any, token: str) -> Any:
        answer = self.call(service, method, request, token)
        assert answer.ok, f"{service}.{method}: {answer.code.name} {answer.reason} " \
                          f"{answer.message}"
        return answer.response

    def sync(self) -> None:
        """Applies every follower's backlog, until nothing moves (reactions feed reactions)."""
        while sum(f.run_once() for f in self.followers):
            pass

    def positions(self) -> dict[str, int]:
        return {name: app.last_position() for name, app in self.apps.items()}

    def close(self) -> None:
        for app in self.apps.values():
            app.close()


API_NAMES = {"identity": "qiji.identity.v1.IdentityService",
             "training": "qiji.training.v1.TrainingService",
             "merchants": "qiji.merchants.v1.MerchantsService",
             "badges": "qiji.badges.v1.BadgesService",
             "governance": "qiji.governance.v1.GovernanceService"}


class Figures:
    """The city's figures (services/statistics) as the process serves them: their servicer
    behind its own guard and the tokens file, over a read model of in-process services' logs;
    called by RPC name ("QueryFigures"), an export answering its every message as a list."""

    def __init__(self, statistics: Any, tokens_file: Path):
        from services.statistics.grpc_api import ACCESS, add_servicers
        from shared.tenancy import no_owners
        self.statistics = statistics
        self.tokens_file = tokens_file
        registrar = Registrar()
        add_servicers(registrar, statistics)  # type: ignore[arg-type]
        guard = Guard(tokens=TokenRegistry(tokens_file), access=ACCESS, resolve=no_owners,
                      error_domain="statistics.qiji", on_rpc=metrics.rpc_observer("statistics"))
        self.methods = {path.rsplit("/", 1)[1]: guard._wrap(path, handler)
                        for path, handler in registrar.handlers.items()}
        self.paths = list(registrar.handlers)

    @classmethod
    def over(cls, q: InProcessQiji, env: dict[str, str]) -> Figures:
        """The figures of `q`'s five services, in a store of their own (`env`: the store's
        settings, STATISTICS_*), caught up with every log."""
        from services.statistics.application import Statistics
        from shared.integrity import EventMac, audit_key
        from shared.tenancy import TenancyDirectory
        statistics = Statistics(settings_for("statistics", env),
                                {name: LocalFeed(app) for name, app in q.apps.items()},
                                EventMac(audit_key(MASTER_KEY)),
                                TenancyDirectory(LocalFeed(q.apps["identity"])))
        statistics.catch_up()
        return cls(statistics, q.tokens_file)

    def call(self, rpc: str, request: Any, token: str | None) -> Answer:
        handler = self.methods[rpc.rsplit("/", 1)[-1]]
        context = CallContext(token)
        try:
            if handler.unary_unary is not None:
                return Answer(response=handler.unary_unary(request, context))
            return Answer(response=list(handler.unary_stream(request, context)))
        except Aborted as aborted:
            return decode(aborted.status)

    def close(self) -> None:
        self.statistics.close()
