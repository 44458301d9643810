"""grpc.health.v1 whose Watch streams end when the server stops.

grpcio's own servicer keeps a Watch stream open for as long as its client stays. A server's
`stop(grace)` waits for every call in flight, so each stop waited its whole grace (5 s) while
anything watched: a load balancer, or a client doing gRPC's client-side health checking, which
holds a Watch open on every server it balances over. Here the stop first tells every watcher
NOT_SERVING, for good (the library's graceful shutdown), then ends each stream with OK, so that
its client, told the server is going, goes elsewhere at once and the stop takes what the calls
really need."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2


class HealthServicer(health.HealthServicer):
    def __init__(self) -> None:
        super().__init__(experimental_non_blocking=True)
        self._watches_lock = threading.Lock()
        # How to end each open Watch stream.
        self._watches: dict[int, Callable[[], None]] = {}
        self._ended = False

    def Watch(self, request: health_pb2.HealthCheckRequest,
              context: grpc.ServicerContext,
              send_response_callback: Callable[[Any], None] | None = None) -> Any:
        watcher = super().Watch(request, context, send_response_callback)
        # The library hands back a blocking iterator when given no callback (grpcio's sync
        # server), and answers through the callback otherwise: None there ends the stream.
        end: Callable[[], None]
        if watcher is not None:
            end = watcher.close
        else:
            assert send_response_callback is not None
            end = functools.partial(send_response_callback, None)
        key = id(end)
        with self._watches_lock:
            ended = self._ended
            if not ended:
                self._watches[key] = end
        if ended:
            end()  # came in after the stop began: its first answer (NOT_SERVING), then the end
        else:
            context.add_callback(lambda: self._forget(key))
        return watcher

    def _forget(self, key: int) -> None:
        with self._watches_lock:
            self._watches.pop(key, None)

    def end_watches(self) -> None:
        """Every name NOT_SERVING from now on (what a watcher hears first), then every open
        Watch stream ends, and any that opens later ends after its first answer."""
        self.enter_graceful_shutdown()
        with self._watches_lock:
            self._ended = True
            ends, self._watches = list(self._watches.values()), {}
        for end in ends:
            end()
