"""Read models of badges: derived from the log, rebuilt at start."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from services.badges.domain.model import Award, BadgeClass, VolunteerShift
from shared.views import Index, LogFollower

if TYPE_CHECKING:
    from shared.application import QijiApplication


class BadgesViews:
    def __init__(self, app: QijiApplication):
        self.shifts = Index()
        self.classes = Index()
        self.awards = Index()
        self._follower = LogFollower(app, "badges", self._apply)

    def catch_up(self) -> int:
        return self._follower.catch_up()

    def class_ids(self) -> list[str]:
        self.catch_up()
        with self.classes.lock:
            return [self.classes.rows[k].aggregate_id for k in self.classes.keys]

    def awards_of(self, rider_id: str) -> list[str]:
        with self.awards.lock:
            return [r.aggregate_id for r in (self.awards.rows[k] for k in self.awards.keys)
                    if r.attrs["rider_id"] == rider_id]

    def due_awards(self, now: datetime) -> list[str]:
        self.catch_up()
        with self.awards.lock:
            return [r.aggregate_id for r in (self.awards.rows[k] for k in self.awards.keys)
                    if r.attrs["status"] == "ACTIVE" and r.attrs["expires_at"] is not None
                    and r.attrs["expires_at"] <= now]

    def _apply(self, position: int, event: Any) -> None:
        ident = str(event.originator_id)
        if isinstance(event, VolunteerShift.Logged):
            self.shifts.add(position, ident, rider_id=event.rider_id, status="LOGGED")
        elif isinstance(event, VolunteerShift.Confirmed):
            self.shifts.update(ident, status="CONFIRMED")
        elif isinstance(event, VolunteerShift.Rejected):
            self.shifts.update(ident, status="REJECTED")
        elif isinstance(event, BadgeClass.Created):
            self.classes.add(position, ident)
        elif isinstance(event, Award.Granted):
            self.awards.add(position, ident, rider_id=event.rider_id,
                            badge_class_id=event.badge_class_id, status="ACTIVE",
                            expires_at=event.expires_at)
        elif isinstance(event, Award.Revoked):
            self.awards.update(ident, status="REVOKED")
        elif isinstance(event, Award.Expired):
            self.awards.update(ident, status="EXPIRED")
