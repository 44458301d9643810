"""The public face's HTTP routes (Starlette): translate a request, ask badges (through
`BadgesSource`), render. Bad input is a 400 saying what was wrong; nothing reaches a caller
as a traceback."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import structlog
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from services.credentials import pages
from services.credentials.source import (
    BadgesSource,
    BadRequest,
    Busy,
    NotFoundUpstream,
    Unreachable,
)
from shared.baking import MAX_CREDENTIAL_CHARS, NotBaked, unbake
from shared.errors import is_uuid
from shared.web import Observed

log = structlog.get_logger(__name__)

# A credential is a few KB; a baked badge carries its picture (at most 256 KiB) too.
MAX_BODY = 400_000
_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
# Pages run no script; pictures come from here or from a badge's own https address.
_HTML_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src 'self' https: data:; "
             "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
# An uploaded SVG is shown, never run (badges refuses scripts in it too).
_IMAGE_CSP = "default-src 'none'; style-src 'unsafe-inline'; sandbox"

class Problem(Exception):
    """An answer that is not a document: status, what was wrong, and (for 400) which part."""

    def __init__(self, status: int, error: str, field: str = ""):
        super().__init__(error)
        self.status = status
        self.error = error
        self.field = field


def _uuid(value: str, field: str) -> str:
    if not is_uuid(value):
        raise Problem(400, f"{field} must be a UUID such as "
                      f"3f1c2a4e-0b6d-4c1e-9a57-2f0e8d7c6b5a, got {value[:80]!r}", field)
    return str(uuid.UUID(value))


def _json(document: Any, media_type: str = "application/json", max_age: int = 10) -> Response:
    return Response(json.dumps(document, ensure_ascii=False, indent=2).encode(),
                    media_type=media_type, headers={
                        "Cache-Control": f"public, max-age={max_age}",
                        "Access-Control-Allow-Origin": "*"})


def build_app(source: BadgesSource, *, service: str = "credentials") -> Observed:
    """The ASGI application over `source` (badges over gRPC, or a stand-in in tests)."""

    async def call(fn: Callable[..., Any], *args: Any) -> Any:
        # The gRPC client blocks: run it off the event loop.
        try:
            return await run_in_threadpool(fn, *args)
        except NotFoundUpstream:
            raise Problem(404, "not found") from None
        except BadRequest as bad:
            # badges' field names, as this face's callers know them.
            field = {"credential_jwt": "credential"}.get(bad.field, bad.field)
            raise Problem(400, bad.description, field) from None
        except Busy:
            raise Problem(429, "too many requests just now; try again in a second") from None
        except Unreachable as down:
            log.warning("badges.unreachable", code=str(down))
            raise Problem(503, "the badges service cannot be reached just now; try again in "
                          "a moment") from None

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        try:
            await call(source.ping)
        except Problem:
            return JSONResponse({"status": "unavailable", "badges": "unreachable"},
                                status_code=503)
        return JSONResponse({"status": "ok"})

    async def jwks(request: Request) -> Response:
        return _json(await call(source.jwks), "application/jwk-set+json", max_age=300)

    async def key(request: Request) -> Response:
        kid = request.path_params["kid"]
        for jwk in (await call(source.jwks))["keys"]:
            if jwk["kid"].rsplit("/", 1)[-1] == kid:
                return _json(jwk, "application/jwk+json", max_age=300)
        raise Problem(404, f"no key {kid[:80]!r}")

    async def issuer(request: Request) -> Response:
        profile, _did = await call(source.issuer, _uuid(request.path_params["issuer_id"],
                                                        "issuer_id"))
        return _json(profile, "application/ld+json")

    async def did_document(request: Request) -> Response:
        _profile, did = await call(source.issuer, _uuid(request.path_params["issuer_id"],
                                                        "issuer_id"))
        return _json(did, "application/did+json")

    async def achievements(request: Request) -> Response:
        issuer_id = request.query_params.get("issuer_id", "")
        found, token = await call(source.achievements,
                                  _uuid(issuer_id, "issuer_id") if issuer_id else "",
                                  request.query_params.get("page_token", ""))
        return _json({"achievements": found, "next_page_token": token})

    async def achievement(request: Request) -> Response:
        return _json(await call(source.achievement, _uuid(
            request.path_params["badge_class_id"], "badge_class_id")), "application/ld+json")

    async def image(request: Request) -> Response:
        data, media_type, sha256 = await call(source.image, _uuid(
            request.path_params["badge_class_id"], "badge_class_id"))
        etag = f'"{sha256}"'
        headers = {"ETag": etag, "Cache-Control": "public, max-age=300",
                   "Content-Security-Policy": _IMAGE_CSP,
                   "Access-Control-Allow-Origin": "*"}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(data, media_type=media_type, headers=headers)

    async def status_list(request: Request) -> Response:
        issuer_id = _uuid(request.path_params["issuer_id"], "issuer_id")
        raw = request.path_params["list_number"]
        # ASCII digits only: str.isdigit() also takes "²", which int() refuses.
        if not re.fullmatch("[0-9]{1,6}", raw):
            raise Problem(400, f"the list number must be a whole number from 0 to 999999, "
                          f"got {raw[:20]!r}", "list_number")
        credential, jwt = await call(source.status_list, issuer_id, int(raw))
        # A verifier dereferencing statusListCredential gets the secured form (VC-JWT);
        # ?format=json (or Accept: application/json) shows the same credential unsigned.
        if request.query_params.get("format") == "json" or \
                request.headers.get("accept", "").startswith("application/json"):
            return _json(credential, max_age=1)
        return Response(jwt, media_type="application/vc+jwt", headers={
            "Cache-Control": "public, max-age=1", "Access-Control-Allow-Origin": "*"})

    async def verify_page(request: Request) -> Response:
        if request.method == "GET":
            return _html(pages.form())
        form = parse_qs((await _body(request)).decode("utf-8", "replace"))
        jwt = (form.get("credential") or [""])[0].strip()
        try:
            outcome = await call(source.verify, _credential(jwt))
        except Problem as problem:
            if problem.status != 400:
                raise
            return _html(pages.form(jwt, problem.error), status=400)
        return _html(pages.result(outcome, _image_of(outcome)))

    async def verify_api(request: Request) -> Response:
        raw = await _body(request)
        content_type = request.headers.get("content-type", "")
        if content_type.startswith(("image/png", "image/svg+xml")):
            # A baked badge (OB 3.0 §5.3): the credential inside the picture.
            try:
                # Off the event loop: a large picture must not hold up /healthz and others.
                raw = (await run_in_threadpool(unbake, raw)).encode()
            except NotBaked as error:
                raise Problem(400, f"no credential in this image: {error}", "image") from None
        body = raw.decode("utf-8", "replace").strip()
        if content_type.startswith("application/json"):
            try:
                parsed = json.loads(body)
            except (ValueError, RecursionError):  # RecursionError: "[[[[..." from anyone
                raise Problem(400, "the body is not JSON", "body") from None
            if not isinstance(parsed, dict) or not isinstance(parsed.get("credential"), str):
                raise Problem(400, 'send {"credential": "<the VC-JWT>"} or the JWT alone as '
                              "text/plain", "credential")
            body = parsed["credential"].strip()
        outcome = await call(source.verify, _credential(body))
        return JSONResponse({**outcome, "verdict": outcome["verdict"].lower()},
                            headers={"Access-Control-Allow-Origin": "*"})

    async def index(request: Request) -> Response:
        return Response(status_code=303, headers={"Location": "verify"})

    routes = [
        Route("/", index),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/.well-known/jwks.json", jwks),
        Route("/keys/{kid}", key),
        Route("/issuers/{issuer_id}", issuer),
        Route("/issuers/{issuer_id}/did.json", did_document),
        Route("/achievements", achievements),
        Route("/achievements/{badge_class_id}", achievement),
        Route("/achievements/{badge_class_id}/image", image),
        Route("/status/{issuer_id}/revocation/{list_number}", status_list),
        Route("/verify", verify_page, methods=["GET", "POST"]),
        Route("/api/verify", verify_api, methods=["POST"]),
    ]

    async def problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Problem)
        body = {"error": exc.error, **({"field": exc.field} if exc.field else {})}
        return JSONResponse(body, status_code=exc.status,
                            headers={"Retry-After": "1"} if exc.status == 429 else None)

    async def http_problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    async def unexpected(request: Request, exc: Exception) -> Response:
        correlation = uuid.uuid4().hex
        log.exception("http.failed", path=request.url.path, correlation_id=correlation)
        return JSONResponse({"error": "internal error", "correlation_id": correlation},
                            status_code=500)

    app = Starlette(routes=routes, exception_handlers={
        Problem: problem, HTTPException: http_problem, Exception: unexpected})
    return Observed(app, service)


def _credential(jwt: str) -> str:
    if not jwt:
        raise Problem(400, "paste the credential: a VC-JWT (header.payload.signature)",
                      "credential")
    if len(jwt) > MAX_CREDENTIAL_CHARS or not _JWS.fullmatch(jwt):
        raise Problem(400, "this is not a VC-JWT: three base64url parts separated by dots "
                      "(header.payload.signature)", "credential")
    return jwt


async def _body(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise Problem(413, f"the body may hold at most {MAX_BODY} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise Problem(413, f"the body may hold at most {MAX_BODY} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _image_of(outcome: dict[str, Any]) -> str:
    credential = outcome.get("credential") or {}
    achievement = (credential.get("credentialSubject") or {}).get("achievement") or {}
    picture = achievement.get("image") or credential.get("image") or {}
    url = picture.get("id", "") if isinstance(picture, dict) else str(picture)
    return url if url.startswith(("https://", "http://")) else ""


def _html(text: str, status: int = 200) -> Response:
    return HTMLResponse(text, status_code=status, headers={
        "Content-Security-Policy": _HTML_CSP, "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer"})
