"""A service process's pools of threads, and which call runs on which.

Measured for issue #20 (BENCHMARKS.md): with one wide pool, eight clients keep eight of its
threads taking calls in turn, and they pass the GIL between them 30–37 times per get; the same
get costs 211 µs of CPU in one thread but 600–900 µs there. So the calls answered from the
process's own store at once — every unary get and command — run on a few threads (the quick
lane, `QIJI_GRPC_QUICK_WORKERS`), where a burst of callers waits its turn in a queue instead of
contending for the GIL. The wide pool (`QIJI_GRPC_WORKERS`) keeps what holds a thread for its
whole length on purpose: streams (health's Watch and reflection among them) and long polls, so
that no number of them can hold up a get or a command; and the feeds other Qiji processes
follow, so that a burst of callers never delays the followers, the relay and the gateway (an
`Access` marked `wide_pool`).

Health checks have a lane of their own (the probe lane, two threads): a liveness probe is
answered while long polls fill the wide pool and while the quick lane waits on a store that
hangs. Restarting every replica because its database is slow would only add a cold start to
the outage (shared/grpc/server.py LIVENESS); readiness says the store is away.

grpcio runs a handler on the pool its behaviour names (`experimental_thread_pool`, read in
grpc/_server.py `_select_thread_pool_for_behavior`), and on the server's own pool otherwise; the
guard, which wraps every handler once, names the pool (shared/grpc/guard.py).

Each lane measures how long its calls waited for a thread (`qiji_rpc_queue_seconds`): calls
that queue on the quick lane say the process is saturated, or that its threads wait on slow
commits; on the wide pool, that streams and long polls fill it (deploy/README.md, Alerts:
QijiCallsQueueing)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import structlog

from shared import metrics
from shared.config import Settings

PROBE_WORKERS = 2

log = structlog.get_logger(__name__)


class Lane(futures.ThreadPoolExecutor):
    """A pool of threads that times how long each call waits for one of them, and knows how
    many calls are running on it (`idle`)."""

    def __init__(self, service: str, lane: str, workers: int):
        super().__init__(max_workers=workers, thread_name_prefix=f"{service}-{lane}")
        self._waited = metrics.RPC_QUEUED_SECONDS.labels(service, lane)
        self._running = 0
        self._settled = threading.Condition()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
               ) -> futures.Future[Any]:
        queued = time.perf_counter()
        observe = self._waited.observe
        settled = self._settled

        def run() -> Any:
            observe(time.perf_counter() - queued)
            with settled:
                self._running += 1
            try:
                return fn(*args, **kwargs)
            finally:
                with settled:
                    self._running -= 1
                    if not self._running:
                        settled.notify_all()
        return super().submit(run)

    def idle(self, deadline: float) -> bool:
        """Waits until no call runs on this lane, or until `deadline` (time.monotonic());
        True when none does."""
        with self._settled:
            return self._settled.wait_for(lambda: not self._running,
                                          max(0.0, deadline - time.monotonic()))


@dataclass(frozen=True)
class Lanes:
    service: str
    wide: Lane
    # None: the wide pool serves every call but health checks (a process whose unary calls
    # wait on other services, as the gateway's and the figures' do)...
    quick: Lane | None
    # ...and, with QIJI_GRPC_QUICK_WORKERS=0, health checks too.
    probes: Lane | None

    @classmethod
    def of(cls, name: str, settings: Settings, *, quick: bool = True) -> Lanes:
        wide = Lane(name, "wide", settings.grpc_workers)
        if settings.grpc_quick_workers == 0:
            return cls(name, wide, None, None)
        probes = Lane(name, "probe", PROBE_WORKERS)
        if not quick:
            return cls(name, wide, None, probes)
        return cls(name, wide, Lane(name, "quick", settings.grpc_quick_workers), probes)

    def for_unary(self, *, probe: bool, wide: bool) -> Lane | None:
        """The pool of a unary call (None: the server's own, the wide pool). Streams always
        run on the wide pool."""
        if probe:
            return self.probes
        return None if wide else self.quick

    def shutdown(self, grace: float = 0.0) -> bool:
        """After the server's stop (grpcio leaves even its own pool, the wide one, running): a
        call still queued for a thread is dropped, not run against an application about to
        close; and a call still running is waited for, at most `grace` seconds. grpcio's stop
        ends a call past its grace for the caller, but its handler runs on in its thread: the
        application must not close under it (on SQLite, a connection closed under a statement
        can crash the process). True when no call is running any more; else the stop is
        logged as closing under them (the process is ending: it closes anyway)."""
        pools = [pool for pool in (self.quick, self.probes, self.wide) if pool is not None]
        for pool in pools:
            pool.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + grace
        idle = all(pool.idle(deadline) for pool in pools)
        if not idle:
            log.warning("service.stop.calls_still_running", service=self.service,
                        grace_seconds=grace)
        return idle
