"""Wraps every RPC handler of a service: authenticates the caller, checks the RPC's allowed
roles and its tenancy scope (shared/tenancy.py: the caller's organisation must own what the
request reaches), sets the request context (actor, request, request id, correlation id, what
the caller may see) and turns every error into a precise status. Nothing else ever reaches a
caller, and a handler never runs for a call its access entry does not admit.

Who the caller is: its bearer token when it sends one; otherwise, on a port that requires
client certificates, the principal registered for its certificate. A token wins over a
certificate: the certificate has already done its part (only holders of one the client CA
signed connect at all), and the token is the narrower claim a calling system chose to make."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import grpc
import structlog

from shared import errors
from shared.auth import TokenRegistry
from shared.context import Actor, RequestContext, acting_as, new_correlation_id, serving
from shared.grpc import refusals
from shared.grpc.errors import internal_status, to_status
from shared.grpc.lanes import Lanes
from shared.grpc.tls import certificate_names
from shared.store import STORE_DOWN_ERRORS
from shared.tenancy import Access, OutOfScope, Owners, Resolver, decide

log = structlog.get_logger(__name__)

# Standard services that any client (a load balancer, grpcurl) may call without a token.
OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.v1alpha.ServerReflection/",
                 "/grpc.reflection.v1.ServerReflection/")
MAX_REQUEST_ID_LENGTH = 128


class Guard(grpc.ServerInterceptor):
    def __init__(self, *, tokens: TokenRegistry, access: Mapping[str, Access],
                 resolve: Resolver, error_domain: str,
                 on_rpc: Callable[[str, str, float], None] | None = None,
                 certificates: bool = False,
                 lanes: Lanes | None = None):
        """`access` maps full method names ("/pkg.Service/Method") to their entries (roles and
        scopes); `resolve` finds the owners of what a request names. A method missing from the
        table, or whose entry is broken, is refused to everyone: the table fails closed.
        `certificates`: the port requires and verifies client certificates, so their names may
        be trusted. `lanes`: the pools that serve unary calls (shared/grpc/lanes.py); None, the
        server's own pool serves every call."""
        self._tokens = tokens
        self._lanes = lanes
        self._certificates = certificates
        self._wrapped: dict[str, Any] = {}
        self._access = {m: a for m, a in access.items() if not a.problems()}
        for method, entry in access.items():
            if entry.problems():
                log.error("guard.access_entry_broken", method=method, problems=entry.problems())
        self._resolve = resolve
        self._domain = error_domain
        self._on_rpc = on_rpc

    def intercept_service(self, continuation: Any, details: Any) -> Any:
        # A method's handler never changes: wrap it once, not on every call.
        method = details.method
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            wrapped = self._wrapped[method] = self._wrap(method, continuation(details))
        return wrapped

    def _wrap(self, method: str, handler: Any) -> Any:
        if handler is None:
            return handler
        open_service = method.startswith(OPEN_SERVICES)
        if handler.unary_unary is not None:
            if open_service:  # unguarded; a function of its own only to name its pool
                def handle(request: Any, context: grpc.ServicerContext,
                           behaviour: Callable[..., Any] = handler.unary_unary) -> Any:
                    return behaviour(request, context)
            else:
                handle = self._wrap_unary(method, handler.unary_unary)
            access = self._access.get(method)
            lane = self._lanes.for_unary(
                probe=open_service, wide=access is not None and access.wide_pool) \
                if self._lanes is not None else None
            if lane is not None:
                # grpcio runs the call on the pool its behaviour names (shared/grpc/lanes.py).
                handle.experimental_thread_pool = lane  # type: ignore[attr-defined]
            return grpc.unary_unary_rpc_method_handler(
                handle,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if open_service:
            return handler
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(method, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler  # no client-streaming RPCs exist; nothing to wrap

    # ------------------------------------------------------------------

    def _enter(self, method: str, request: Any, context: grpc.ServicerContext) -> RequestContext:
        # Only text metadata is read here (binary values, under keys ending -bin, are bytes).
        metadata = {k.lower(): v for k, v in context.invocation_metadata() if isinstance(v, str)}
        correlation_id = metadata.get("x-correlation-id") or new_correlation_id()
        context.send_initial_metadata((("x-correlation-id", correlation_id),))
        auth = metadata.get("authorization", "")
        bearer = auth[7:].strip() if auth.lower().startswith("bearer ") else None
        actor = self._authenticate(bearer, context)
        rpc = method.rsplit("/", 1)[-1]
        access = self._access.get(method)
        if access is None or not actor.has_any(access.roles):
            raise errors.PermissionDenied(f"{actor.principal} may not call {rpc}",
                                          reason="ROLE_NOT_ALLOWED", principal=actor.principal)
        request_id = getattr(request, "request_id", "")
        violations = errors.Violations()
        violations.require(len(request_id) <= MAX_REQUEST_ID_LENGTH, "request_id",
                           f"at most {MAX_REQUEST_ID_LENGTH} characters", errors.TEXT_TOO_LONG)
        violations.require(request_id.isprintable(), "request_id",
                           "printable characters only (no control characters)",
                           errors.TEXT_INVALID)
        # Refused before anything is decided or written: without an id, the caller's retry of
        # this call would make a second thing (AIP-155).
        violations.require(bool(request_id) or not access.request_id_required, "request_id",
                           f"is required: every {rpc} makes something new, and a retry "
                           "without the first call's request_id would make a second one",
                           "REQUEST_ID_REQUIRED")
        violations.raise_if_any()
        caught_up: set[str] = set()
        owners = self._resolve

        def resolve(kind: str, ident: str) -> Owners | None:
            # The owners are found as part of this request, inside its context: a look at
            # the log made to find them (the cached perk or report a scope names) is the
            # request's one look, which its handler then shares through `caught_up`, instead
            # of a look before the request's context exists and another in the handler. (A
            # Reach keeps this function for rendering; there the request is already served.)
            if serving() is not None:
                return owners(kind, ident)
            with acting_as(RequestContext(actor=actor, rpc=rpc, request_id=request_id,
                                          correlation_id=correlation_id, request=request,
                                          access=access, caught_up=caught_up)):
                return owners(kind, ident)

        try:
            reach = decide(access, actor, request, resolve)
        except OutOfScope as refused:
            # The same answer whether or not what the request names exists (AIP-211).
            raise errors.PermissionDenied(refused.message, reason="OUT_OF_SCOPE",
                                          principal=actor.principal) from None
        return RequestContext(actor=actor, rpc=rpc, request_id=request_id,
                              correlation_id=correlation_id, request=request, access=access,
                              reach=reach, caught_up=caught_up)

    def _authenticate(self, bearer: str | None, context: grpc.ServicerContext) -> Actor:
        if not bearer and self._certificates:
            names = certificate_names(context)
            if names:
                return self._tokens.authenticate_certificate(names)
        return self._tokens.authenticate(bearer)

    def _wrap_unary(self, method: str, behaviour: Callable[..., Any]) -> Callable[..., Any]:
        def handle(request: Any, context: grpc.ServicerContext) -> Any:
            started = time.perf_counter()
            code = "OK"
            correlation_id = ""
            try:
                ctx = self._enter(method, request, context)
                correlation_id = ctx.correlation_id
                # What the handler logs carries the request's ids: shared/logging.py reads
                # them from this context when a line is logged (nothing bound per call).
                with acting_as(ctx):
                    return behaviour(request, context)
            except Exception as error:  # every failure becomes a precise status below
                status = self._status_for(error, method, correlation_id, request)
                code = status.code.name
                refusals.note(status, error, method, context, self._domain.split(".")[0])
                context.abort_with_status(status)
            finally:
                self._observe(method, code, started)
        return handle

    def _wrap_stream(self, method: str, behaviour: Callable[..., Any]) -> Callable[..., Any]:
        def handle(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            started = time.perf_counter()
            code = "OK"
            correlation_id = ""
            try:
                ctx = self._enter(method, request, context)
                correlation_id = ctx.correlation_id
                with acting_as(ctx):
                    yield from behaviour(request, context)
            except Exception as error:
                status = self._status_for(error, method, correlation_id, request)
                code = status.code.name
                refusals.note(status, error, method, context, self._domain.split(".")[0])
                context.abort_with_status(status)
            finally:
                self._observe(method, code, started)
        return handle

    def _status_for(self, error: Exception, method: str, correlation_id: str,
                    request: Any = None) -> grpc.Status:
        if isinstance(error, errors.QijiError):
            status = to_status(error, self._domain, request)
        elif isinstance(error, STORE_DOWN_ERRORS):
            status = to_status(errors.Unavailable("the event store is unavailable; retry later"),
                               self._domain)
            # Info, not a warning: the store gate says once that the store went away
            # (store.unavailable); every call refused meanwhile is not news.
            log.info("rpc.store_unavailable", method=method, error=str(error),
                     correlation_id=correlation_id)
        else:
            log.exception("rpc.internal_error", method=method, correlation_id=correlation_id)
            status = internal_status(correlation_id or "-")
        return status

    def _observe(self, method: str, code: str, started: float) -> None:
        if self._on_rpc is not None:
            self._on_rpc(method, code, time.perf_counter() - started)

