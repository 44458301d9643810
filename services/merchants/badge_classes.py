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

from typing import Any

from services.badges import events as badge_events
from shared.background import FeedMirror


class BadgeClassDirectory(FeedMirror):
    upstream = "badges-classes"
    upstream_service = "badges"
    # Whether a class exists cannot be guessed: a perk nobody can claim is not accepted blindly.
    unreachable = "to tell whether the badge class exists"
    topics = (badge_events.BADGE_CLASS_CREATED,)

    def __init__(self, feed: Any):
        super().__init__(feed)
        self.names: dict[str, str] = {}  # badge class id -> its name

    def _apply(self, topic: str, ident: str, state: Any) -> None:
        self.names[ident] = str(state.get("name", ""))

    def exists(self, badge_class_id: str) -> bool:
        if badge_class_id not in self.names:
            self.catch_up()
        return badge_class_id in self.names
