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

import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from typing import Any

from shared import metrics
from shared.config import Settings

PROBE_WORKERS = 2


class Lane(futures.ThreadPoolExecutor):
    """A pool of threads that times how long each call waits for one of them."""

    def __init__(self, service: str, lane: str, workers: int):
        super().__init__(max_workers=workers, thread_name_prefix=f"{service}-{lane}")
        self._waited = metrics.RPC_QUEUED_SECONDS.labels(service, lane)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
               ) -> futures.Future[Any]:
        queued = time.perf_counter()
        observe = self._waited.observe

        def run() -> Any:
            observe(time.perf_counter() - queued)
            return fn(*args, **kwargs)
        return super().submit(run)


@dataclass(frozen=True)
class Lanes:
    wide: futures.ThreadPoolExecutor
    # None: the wide pool serves every call but health checks (a process whose unary calls
    # wait on other services, as the gateway's and the figures' do)...
    quick: futures.ThreadPoolExecutor | None
    # ...and, with QIJI_GRPC_QUICK_WORKERS=0, health checks too.
    probes: futures.ThreadPoolExecutor | None

    @classmethod
    def of(cls, name: str, settings: Settings, *, quick: bool = True) -> Lanes:
        wide = Lane(name, "wide", settings.grpc_workers)
        if settings.grpc_quick_workers == 0:
            return cls(wide, None, None)
        probes = Lane(name, "probe", PROBE_WORKERS)
        if not quick:
            return cls(wide, None, probes)
        return cls(wide, Lane(name, "quick", settings.grpc_quick_workers), probes)

    def for_unary(self, *, probe: bool, wide: bool) -> futures.ThreadPoolExecutor | None:
        """The pool of a unary call (None: the server's own, the wide pool). Streams always
        run on the wide pool."""
        if probe:
            return self.probes
        return None if wide else self.quick

    def shutdown(self) -> None:
        """After the server's stop, which ended its calls (grpcio leaves even its own pool, the
        wide one, running): a call still queued for a thread is dropped, not run against an
        application about to close."""
        for pool in (self.quick, self.probes, self.wide):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
