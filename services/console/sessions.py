"""Signed-in sessions: the caller's bearer token stays on the server, behind a random session
id that the browser holds in an HttpOnly, SameSite=Strict cookie. A session ends when signed
out, after CONSOLE_SESSION_IDLE_SECONDS without a request, after CONSOLE_SESSION_MAX_SECONDS
in all, or when the process stops (sessions are kept in memory only: nothing of a token is
ever written down; several replicas need sticky sessions at the load balancer)."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# Enough for every official of a city at once; the oldest go first beyond it.
MAX_SESSIONS = 10_000


@dataclass
class Session:
    token: str
    started: float
    seen: float
    # Sent back with the sign-out form: a cross-site page cannot sign a caller out.
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    # What the session asked the services once and may keep a moment (the catalogue).
    kept: dict[str, tuple[float, Any]] = field(default_factory=dict)


class Sessions:
    def __init__(self, idle_seconds: float, max_seconds: float,
                 clock: Callable[[], float] = time.monotonic):
        self._idle = idle_seconds
        self._max = max_seconds
        self._clock = clock
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def start(self, token: str) -> tuple[str, Session]:
        """A new session for `token`: its id (256 random bits) and the session."""
        now = self._clock()
        ident = secrets.token_urlsafe(32)
        session = Session(token=token, started=now, seen=now)
        with self._lock:
            self._forget_expired(now)
            if len(self._sessions) >= MAX_SESSIONS:
                oldest = min(self._sessions, key=lambda k: self._sessions[k].seen)
                del self._sessions[oldest]
            self._sessions[ident] = session
        return ident, session

    def get(self, ident: str) -> Session | None:
        """The live session of `ident` (and it is seen now), or None: unknown or expired."""
        now = self._clock()
        with self._lock:
            session = self._sessions.get(ident)
            if session is None:
                return None
            if self._expired(session, now):
                del self._sessions[ident]
                return None
            session.seen = now
            return session

    def end(self, ident: str) -> None:
        with self._lock:
            self._sessions.pop(ident, None)

    def __len__(self) -> int:
        return len(self._sessions)

    def _expired(self, session: Session, now: float) -> bool:
        return now - session.seen > self._idle or now - session.started > self._max

    def _forget_expired(self, now: float) -> None:
        for ident in [k for k, s in self._sessions.items() if self._expired(s, now)]:
            del self._sessions[ident]
