"""Where the public face gets what it serves: badges' gRPC API, called with a `public_reader`
token (it reaches badges' public reads and nothing else), each answer kept a moment so that
the public's traffic does not become badges' load.

Status lists are kept one second (a revocation shows within about a second); everything else
ten seconds, "not found" included (a public GET of a made-up id costs badges one call, not
one per request). Calls beyond CREDENTIALS_CALLS_PER_SECOND are not made: the face
answers 429 and badges keeps serving the city."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from qiji.badges.v1 import badges_service_pb2 as pb
from qiji.badges.v1 import badges_service_pb2_grpc as pb_grpc

from shared.config import TlsSettings
from shared.grpc.channels import open_channel

T = TypeVar("T")
CALL_TIMEOUT = 5.0
STATUS_LIST_SECONDS = 1.0
DOCUMENT_SECONDS = 10.0


class NotFoundUpstream(Exception):
    """badges has no such issuer, achievement, image or list."""


class BadRequest(Exception):
    """badges refused the request's input: `field` and what was wrong with it."""

    def __init__(self, field: str, description: str):
        super().__init__(f"{field}: {description}")
        self.field = field
        self.description = description


class Unreachable(Exception):
    """badges cannot be asked just now (down, overloaded, misconfigured token)."""


class Busy(Exception):
    """The face has made as many calls to badges as it may this second."""


class _Budget:
    """A token bucket: `per_second` calls a second, as many at once after a quiet second."""

    def __init__(self, per_second: int, clock: Callable[[], float]):
        self._rate = float(per_second)
        self._left = self._rate
        self._clock = clock
        self._at = clock()
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            now = self._clock()
            self._left = min(self._rate, self._left + (now - self._at) * self._rate)
            self._at = now
            if self._left < 1:
                return False
            self._left -= 1
            return True


class BadgesSource:
    def __init__(self, address: str, token: str, tls: TlsSettings | None = None,
                 clock: Callable[[], float] = time.monotonic, calls_per_second: int = 50,
                 stub: Any = None):
        self._channel = open_channel(address, tls)
        self._stub = stub or pb_grpc.BadgesServiceStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),)
        self._clock = clock
        self._budget = _Budget(calls_per_second, clock)
        # key -> (until when, the answer or the NotFoundUpstream to raise again)
        self._cache: dict[tuple[Any, ...], tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        self._channel.close()

    # ------------------------------------------------------------------ calls

    def _call(self, rpc: str, request: Any, *, budgeted: bool = True) -> Any:
        if budgeted and not self._budget.take():
            raise Busy()
        try:
            return getattr(self._stub, rpc)(request, metadata=self._metadata,
                                            timeout=CALL_TIMEOUT)
        except grpc.RpcError as error:
            raise _translated(error) from None

    def _kept(self, key: tuple[Any, ...], seconds: float, fetch: Callable[[], T]) -> T:
        now = self._clock()
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            if isinstance(hit[1], NotFoundUpstream):
                raise hit[1]
            return hit[1]
        value: Any
        try:
            value = fetch()
        except NotFoundUpstream as missing:
            value = missing
        with self._lock:
            if len(self._cache) > 10_000:  # bounded: ids come from the public
                self._cache.clear()
            self._cache[key] = (now + seconds, value)
        if isinstance(value, NotFoundUpstream):
            raise value
        return value

    def ping(self) -> None:
        """Raises Unreachable unless badges answers the public face's token now (outside the
        budget: a face busy with the public is still ready)."""
        self._call("GetIssuerKeys", pb.GetIssuerKeysRequest(), budgeted=False)

    def jwks(self) -> dict[str, Any]:
        return self._kept(("jwks",), DOCUMENT_SECONDS, lambda: json.loads(
            self._call("GetIssuerKeys", pb.GetIssuerKeysRequest()).jwks_json))

    def issuer(self, issuer_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        def fetch() -> tuple[dict[str, Any], dict[str, Any]]:
            reply = self._call("GetIssuerProfile",
                               pb.GetIssuerProfileRequest(issuer_id=issuer_id))
            return json.loads(reply.profile_json), json.loads(reply.did_document_json)
        return self._kept(("issuer", issuer_id), DOCUMENT_SECONDS, fetch)

    def achievement(self, badge_class_id: str) -> dict[str, Any]:
        return self._kept(("achievement", badge_class_id), DOCUMENT_SECONDS, lambda: json.loads(
            self._call("GetAchievement", pb.GetAchievementRequest(
                badge_class_id=badge_class_id)).achievement_json))

    def achievements(self, issuer_id: str, page_token: str) -> tuple[list[dict[str, Any]], str]:
        def fetch() -> tuple[list[dict[str, Any]], str]:
            reply = self._call("ListAchievements", pb.ListAchievementsRequest(
                issuer_id=issuer_id, page_size=100, page_token=page_token))
            return [json.loads(a) for a in reply.achievement_json], reply.next_page_token
        return self._kept(("achievements", issuer_id, page_token), DOCUMENT_SECONDS, fetch)

    def image(self, badge_class_id: str) -> tuple[bytes, str, str]:
        def fetch() -> tuple[bytes, str, str]:
            reply = self._call("GetBadgeImage",
                               pb.GetBadgeImageRequest(badge_class_id=badge_class_id))
            return reply.image, reply.image_media_type, reply.image_sha256
        return self._kept(("image", badge_class_id), DOCUMENT_SECONDS, fetch)

    def status_list(self, issuer_id: str, list_number: int) -> tuple[dict[str, Any], str]:
        def fetch() -> tuple[dict[str, Any], str]:
            reply = self._call("GetStatusList", pb.GetStatusListRequest(
                issuer_id=issuer_id, list_number=list_number))
            return json.loads(reply.status_list_json), reply.status_list_jwt
        return self._kept(("status", issuer_id, list_number), STATUS_LIST_SECONDS, fetch)

    def verify(self, jwt: str) -> dict[str, Any]:
        """Never kept: a verdict is about now."""
        reply = self._call("VerifyCredential", pb.VerifyCredentialRequest(credential_jwt=jwt))
        return {
            "verdict": pb.CredentialVerdict.Name(reply.verdict).removeprefix(
                "CREDENTIAL_VERDICT_"),
            "valid": reply.valid,
            "signature_valid": reply.signature_valid,
            "problems": list(reply.problems),
            "credential": json.loads(reply.credential_json) if reply.credential_json else None,
        }


def _translated(error: grpc.RpcError) -> Exception:
    code = error.code() if isinstance(error, grpc.Call) else None
    if code is grpc.StatusCode.NOT_FOUND:
        return NotFoundUpstream(error.details() if isinstance(error, grpc.Call) else "")
    if code is grpc.StatusCode.INVALID_ARGUMENT and isinstance(error, grpc.Call):
        status = rpc_status.from_call(error)
        for detail in status.details if status is not None else []:
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                if bad.field_violations:
                    v = bad.field_violations[0]
                    return BadRequest(v.field, v.description)
        return BadRequest("request", error.details() or "invalid")
    return Unreachable(code.name if code else type(error).__name__)
