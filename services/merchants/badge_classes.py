"""The badge classes badges has created, as merchants needs them: to refuse a perk (or a care
campaign's rule) that names a class nobody can ever hold.

Not a follower's job: merchants' follower of badges has long tracked past every
BadgeClass.Created it never asked for, so adding the topic there would never see the classes
that already exist. This directory reads badges' feed from position 1 instead, in memory, kept
close behind by a background loop (as the tenancy directory reads identity's) and rebuilt when
the process starts: dropping it loses nothing. A class is never deleted in badges, so a class
found is never stale; a miss catches up once, within a request, before it counts as unknown (a
class created a moment ago)."""

from __future__ import annotations

import threading
from typing import Any

import grpc

from services.badges import events as badge_events
from shared import context
from shared.background import keep_behind
from shared.errors import Unavailable

BATCH = 1000


class BadgeClassDirectory:
    upstream = "badges-classes"

    def __init__(self, feed: Any):
        self._feed = feed
        self._lock = threading.Lock()
        self.position = 0
        self.names: dict[str, str] = {}  # badge class id -> its name

    def catch_up(self) -> int:
        """Applies what badges stored since the last look. badges out of reach is the caller's
        UNAVAILABLE (retry): whether a class exists cannot be guessed, and a perk nobody can
        claim must not be accepted blindly."""
        try:
            return self._catch_up()
        except grpc.RpcError as error:
            raise Unavailable("badges cannot be reached to tell whether the badge class "
                              "exists; retry shortly", reason="UPSTREAM_UNAVAILABLE",
                              upstream="badges", code=error.code().name) from None

    def run_forever(self, stopping: threading.Event, every: float = 2.0) -> None:
        keep_behind(lambda: self.catch_up() >= 0, stopping, name=self.upstream, every=every)

    def _catch_up(self) -> int:
        with self._lock:
            applied = 0
            while True:
                events = self._feed.read(self.position + 1, BATCH,
                                         [badge_events.BADGE_CLASS_CREATED])
                for e in events:
                    self.names[str(e.originator_id)] = str(e.state.get("name", ""))
                    self.position = e.position
                applied += len(events)
                if len(events) < BATCH:
                    return applied

    def exists(self, badge_class_id: str) -> bool:
        if badge_class_id in self.names:
            return True
        caught_up = context.current().caught_up
        if caught_up is None or self.upstream not in caught_up:
            self.catch_up()
            if caught_up is not None:
                caught_up.add(self.upstream)
        return badge_class_id in self.names
