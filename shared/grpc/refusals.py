"""Refused calls as structured log lines a security team can alert on: one `rpc.refused`
warning per (code, method, caller) at most every RATE_SECONDS, with how many like it were
left out since, and a counter in /metrics (`qiji_rpc_refused_total`).

Who the caller is: the principal when the token was known (PERMISSION_DENIED), else the
client certificate's names (mTLS ports) and the peer address; never the token itself.

Refused TLS handshakes (no certificate, one the client CA did not sign, a protocol mismatch)
never reach Python: grpcio ends them in its C core before any servicer or interceptor runs and
offers no callback for them. The only trace is the core's own log (GRPC_VERBOSITY=debug,
GRPC_TRACE=tsi), unstructured, on stderr; alert on the clients' side, or terminate TLS in a
proxy that logs handshakes."""

from __future__ import annotations

import threading
import time
from typing import Any

import grpc
import structlog

from shared import metrics
from shared.grpc.tls import certificate_names

log = structlog.get_logger(__name__)

RATE_SECONDS = 10.0
REFUSED = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
_MAX_KEYS = 10_000  # a caller spraying names must not grow this without bound

_lock = threading.Lock()
_last: dict[tuple[str, str, str], tuple[float, int]] = {}


def note(status: grpc.Status, error: Exception, method: str, context: grpc.ServicerContext,
         service: str) -> None:
    """Called by the guard for every failed call; notes the refused ones."""
    if status.code not in REFUSED:
        return
    rpc = method.rsplit("/", 1)[-1]
    metrics.REFUSED.labels(service, rpc, status.code.name).inc()
    principal = str(getattr(error, "metadata", {}).get("principal", "")) if hasattr(
        error, "metadata") else ""
    try:
        subject = ",".join(certificate_names(context))
    except Exception:  # a plaintext port has no auth context: nothing to name
        subject = ""
    peer = _peer(context)
    key = (status.code.name, rpc, principal or subject or peer.rsplit(":", 1)[0])
    now = time.monotonic()
    with _lock:
        last, suppressed = _last.get(key, (0.0, 0))
        if now - last < RATE_SECONDS:
            _last[key] = (last, suppressed + 1)
            return
        if len(_last) >= _MAX_KEYS:
            _last.clear()
        _last[key] = (now, 0)
    log.warning("rpc.refused", code=status.code.name, method=rpc, principal=principal or None,
                certificate_subject=subject or None, peer=peer, suppressed_since_last=suppressed)


def _peer(context: Any) -> str:
    try:
        return str(context.peer())
    except Exception:
        return ""
