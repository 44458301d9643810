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
guard, which wraps every handler once, names the pool (shared/grpc/guard.py)."""

from __future__ import annotations

from concurrent import futures
from dataclasses import dataclass

from shared.config import Settings

PROBE_WORKERS = 2


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
        wide = futures.ThreadPoolExecutor(max_workers=settings.grpc_workers,
                                          thread_name_prefix=f"{name}-rpc")
        if settings.grpc_quick_workers == 0:
            return cls(wide, None, None)
        probes = futures.ThreadPoolExecutor(max_workers=PROBE_WORKERS,
                                            thread_name_prefix=f"{name}-probe")
        if not quick:
            return cls(wide, None, probes)
        return cls(wide, futures.ThreadPoolExecutor(max_workers=settings.grpc_quick_workers,
                                                    thread_name_prefix=f"{name}-quick"), probes)

    def for_unary(self, *, probe: bool, wide: bool) -> futures.ThreadPoolExecutor | None:
        """The pool of a unary call (None: the server's own, the wide pool). Streams always
        run on the wide pool."""
        if probe:
            return self.probes
        return None if wide else self.quick

    def shutdown(self) -> None:
        """After the server's stop: its calls have ended, so the threads are idle. The wide pool
        is the server's own, which grpcio leaves running too."""
        for pool in (self.quick, self.probes, self.wide):
            if pool is not None:
                pool.shutdown(wait=False)
