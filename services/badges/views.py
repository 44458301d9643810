"""Read models of badges: derived from the log, rebuilt at start."""

from __future__ import annotations

import hashlib
import threading
from collections import defaultdict
from datetime import datetime
from typing import TYPE_CHECKING, Any

from services.badges.credentials import STATUS_LIST_SIZE, StatusEntry
from services.badges.domain.activities import VolunteerActivity
from services.badges.domain.model import (
    Award,
    AwardCeremony,
    BadgeClass,
    Reevaluation,
    RiderRecord,
    VolunteerShift,
)
from services.badges.domain.recognition import Recognition, RecognitionTitle
from shared.views import Index, LogFollower

if TYPE_CHECKING:
    from shared.application import QijiApplication


class BadgesViews:
    def __init__(self, app: QijiApplication):
        self.shifts = Index()
        self.classes = Index()
        self.awards = Index()
        # Volunteer activities, with what "open for sign-up" needs; their sign-ups, one row
        # per rider and activity (a rider who withdrew and signed up again keeps their row).
        self.activities = Index()
        self.sign_ups = Index()
        self.status_lists = StatusLists()
        # Every rider badges knows of, in the order their records opened: what a
        # re-evaluation walks, resuming after the position it last saved.
        self.riders = Index()
        self.reevaluations = Index()
        self.ceremonies = Index()
        self.titles = Index()
        self.recognitions = Index()
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

    def riders_after(self, position: int, limit: int) -> list[tuple[int, str]]:
        """Up to `limit` riders whose records opened after log position `position`."""
        self.catch_up()
        with self.riders.lock:
            keys = [k for k in self.riders.keys if k > position][:limit]
            return [(k, self.riders.rows[k].attrs["rider_id"]) for k in keys]

    def running_reevaluations(self) -> list[str]:
        self.catch_up()
        with self.reevaluations.lock:
            return [r.aggregate_id for r in (self.reevaluations.rows[k]
                                             for k in self.reevaluations.keys)
                    if r.attrs["status"] == "RUNNING"]

    def due_awards(self, now: datetime) -> list[str]:
        self.catch_up()
        with self.awards.lock:
            return [r.aggregate_id for r in (self.awards.rows[k] for k in self.awards.keys)
                    if r.attrs["status"] == "ACTIVE" and r.attrs["expires_at"] is not None
                    and r.attrs["expires_at"] <= now]

    def _apply(self, position: int, event: Any) -> None:
        ident = str(event.originator_id)
        if isinstance(event, VolunteerActivity.Event):
            self._apply_activity(position, ident, event)
        elif isinstance(event, VolunteerShift.Logged):
            self.shifts.add(position, ident, rider_id=event.rider_id, status="LOGGED")
        elif isinstance(event, VolunteerShift.Confirmed):
            self.shifts.update(ident, status="CONFIRMED")
        elif isinstance(event, VolunteerShift.Rejected):
            self.shifts.update(ident, status="REJECTED")
        elif isinstance(event, BadgeClass.Created):
            self.classes.add(position, ident, issuer_id=event.issuer_id)
            self.status_lists.note_class(ident, event.issuer_id)
        elif isinstance(event, Award.Granted):
            self.awards.add(position, ident, rider_id=event.rider_id,
                            badge_class_id=event.badge_class_id, status="ACTIVE",
                            expires_at=event.expires_at)
            self.status_lists.allocate(ident, event.badge_class_id, event.timestamp)
        elif isinstance(event, Award.Revoked):
            self.awards.update(ident, status="REVOKED")
            self.status_lists.revoke(ident, event.timestamp)
        elif isinstance(event, Award.Expired):
            self.awards.update(ident, status="EXPIRED")
        elif isinstance(event, Award.GrownInto):
            self.awards.update(ident, status="GROWN")
        elif isinstance(event, RiderRecord.Opened):
            self.riders.add(position, ident, rider_id=event.rider_id)
        elif isinstance(event, Reevaluation.Started):
            self.reevaluations.add(position, ident, badge_class_id=event.badge_class_id,
                                   status="RUNNING")
        elif isinstance(event, Reevaluation.Finished):
            self.reevaluations.update(ident, status="DONE")
        elif isinstance(event, AwardCeremony.Recorded):
            self.ceremonies.add(position, ident, street_id=event.street_id)
        elif isinstance(event, RecognitionTitle.Created):
            self.titles.add(position, ident)
        elif isinstance(event, Recognition.Conferred):
            self.recognitions.add(position, ident, rider_id=event.rider_id)

    def _apply_activity(self, position: int, ident: str, event: Any) -> None:
        if isinstance(event, VolunteerActivity.Published):
            self.activities.add(position, ident, community_id=event.community_id,
                                street_id=event.street_id, kind=event.kind, status="OPEN",
                                deadline=event.sign_up_deadline, places=event.places, taken=0)
        elif isinstance(event, VolunteerActivity.Revised):
            self.activities.update(ident, kind=event.kind, deadline=event.sign_up_deadline,
                                   places=event.places)
        elif isinstance(event, VolunteerActivity.Cancelled):
            self.activities.update(ident, status="CANCELLED")
        elif isinstance(event, VolunteerActivity.SignedUp):
            self._taken(ident, +1)
            key = f"{ident}/{event.rider_id}"
            if key in self.sign_ups.by_id:
                self.sign_ups.update(key, status="SIGNED_UP")
            else:
                community = self._activity_attr(ident, "community_id")
                self.sign_ups.add(position, key, activity_id=ident, rider_id=event.rider_id,
                                  community_id=community, status="SIGNED_UP")
        elif isinstance(event, VolunteerActivity.SignUpWithdrawn):
            self._taken(ident, -1)
            self.sign_ups.update(f"{ident}/{event.rider_id}", status="WITHDRAWN")
        elif isinstance(event, VolunteerActivity.SignUpCancelled):
            self._taken(ident, -1)
            self.sign_ups.update(f"{ident}/{event.rider_id}", status="CANCELLED")
        elif isinstance(event, VolunteerActivity.AttendanceRecorded):
            self.sign_ups.update(f"{ident}/{event.rider_id}", status="ATTENDED")

    def _activity_attr(self, ident: str, name: str) -> Any:
        with self.activities.lock:
            return self.activities.rows[self.activities.by_id[ident]].attrs[name]

    def _taken(self, ident: str, change: int) -> None:
        self.activities.update(ident, taken=self._activity_attr(ident, "taken") + change)


class StatusLists:
    """Each issuer's Bitstring status lists, derived from the log: every award gets a place
    (list, index) the moment its Granted event is applied, and its bit is set when it is
    revoked. Places depend only on the log's order, so every replica, and every rebuild years
    later, gives an award the place its exported credential names.

    Within a list the index is the first free one from a hash of the award id (W3C Bitstring
    Status List §6.1 asks for indexes that do not reveal the order of issue); list n holds an
    issuer's awards n*131072 .. (n+1)*131072-1 in order of issue."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._issuer_of_class: dict[str, str] = {}
        self._issued: dict[str, int] = defaultdict(int)
        self._taken: dict[tuple[str, int], set[int]] = defaultdict(set)
        self._revoked: dict[tuple[str, int], set[int]] = defaultdict(set)
        self._changed: dict[tuple[str, int], datetime] = {}
        self._places: dict[str, tuple[str, StatusEntry]] = {}

    def note_class(self, badge_class_id: str, issuer_id: str) -> None:
        with self._lock:
            self._issuer_of_class[badge_class_id] = issuer_id

    def allocate(self, award_id: str, badge_class_id: str, at: datetime) -> None:
        with self._lock:
            issuer = self._issuer_of_class[badge_class_id]
            list_number = self._issued[issuer] // STATUS_LIST_SIZE
            self._issued[issuer] += 1
            taken = self._taken[issuer, list_number]
            index = int.from_bytes(hashlib.sha256(award_id.encode()).digest()[:8], "big") \
                % STATUS_LIST_SIZE
            while index in taken:  # a list never holds more than it has places
                index = (index + 1) % STATUS_LIST_SIZE
            taken.add(index)
            self._places[award_id] = (issuer, StatusEntry(list_number, index))
            self._changed.setdefault((issuer, list_number), at)

    def revoke(self, award_id: str, at: datetime) -> None:
        with self._lock:
            issuer, entry = self._places[award_id]
            self._revoked[issuer, entry.list_number].add(entry.index)
            self._changed[issuer, entry.list_number] = at

    def place(self, award_id: str) -> StatusEntry:
        with self._lock:
            return self._places[award_id][1]

    def list_of(self, issuer_id: str, list_number: int) -> tuple[frozenset[int], datetime] | None:
        """The revoked indexes of one list and when it last changed; None if it has no award
        yet (or the issuer issues none)."""
        with self._lock:
            changed = self._changed.get((issuer_id, list_number))
            if changed is None:
                return None
            return frozenset(self._revoked[issuer_id, list_number]), changed

    def issuers(self) -> set[str]:
        with self._lock:
            return set(self._issuer_of_class.values())
