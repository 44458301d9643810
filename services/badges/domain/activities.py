"""Volunteer activities (爱心公益活动): what a community publishes and riders sign up for.

An activity guards its places: every sign-up, withdrawal and attendance is an event of the
activity itself, so two riders racing for the last place are decided by one aggregate's
versions (the loser decides again from what the winner stored). Attendance is where volunteer
hours come from: the application turns each into a confirmed VolunteerShift in the same save,
so badges' evaluation follows exactly as for hours logged after the fact.

Why "full" and no waiting list: riders plan their days around delivery work, and a place that
frees up hours before the start would commit someone who signed up for a queue days ago to
something they may no longer be able to do. A freed place reopens instead: the activity's
`places_left` shows it, and the platform learns of it from the feed's withdrawn sign-up.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar

from eventsourcing.domain import Aggregate, event
from immutables import Map

from services.badges.domain.model import VolunteerShift
from shared import rolls
from shared.errors import (
    END_TIME_NOT_AFTER_START_TIME,
    ENUM_VALUE_REQUIRED,
    FIELD_REQUIRED,
    TIME_IN_THE_PAST,
    VALUE_OUT_OF_RANGE,
    AlreadyExists,
    FailedPrecondition,
    NotFound,
    Violations,
    check_text,
)
from shared.wire import must_be_specified, wire_name

_NS = uuid.UUID("0b6f5f0e-4d8e-4f35-9c0e-7f5a2d1c8b31")

MAX_TITLE = 200
MAX_DESCRIPTION = 2000
MAX_ADDRESS = 200
MAX_PLACES = 1000
# An activity is one stretch of service: at most a day, as a logged shift is (parse_hours).
MAX_LENGTH = timedelta(hours=24)
# Published no further ahead than a year: a typo in the year is caught, not stored.
MAX_LEAD = timedelta(days=366)


class VolunteerActivityKind(StrEnum):
    """What the service is, for riders choosing and for the city's figures."""

    COMMUNITY_SERVICE = "COMMUNITY_SERVICE"  # 社区服务
    ELDERLY_CARE = "ELDERLY_CARE"  # 助老助残
    CIVILISED_TRAFFIC = "CIVILISED_TRAFFIC"  # 文明交通劝导
    ENVIRONMENT = "ENVIRONMENT"  # 环境保护、巡河
    SAFETY_PATROL = "SAFETY_PATROL"  # 平安巡防
    EMERGENCY_DUTY = "EMERGENCY_DUTY"  # 防汛、应急值守
    CHARITY = "CHARITY"  # 爱心义卖、募捐
    OTHER = "OTHER"


class VolunteerActivityStatus(StrEnum):
    OPEN = "OPEN"  # published (and perhaps revised): riders may sign up until the deadline
    CANCELLED = "CANCELLED"


class VolunteerSignUpStatus(StrEnum):
    SIGNED_UP = "SIGNED_UP"  # holds a place
    WITHDRAWN = "WITHDRAWN"  # the rider gave the place back before the deadline
    CANCELLED = "CANCELLED"  # the community cancelled the activity
    ATTENDED = "ATTENDED"  # attendance recorded; the hours are confirmed volunteer service


HOLDS_A_PLACE = (VolunteerSignUpStatus.SIGNED_UP, VolunteerSignUpStatus.ATTENDED)


@dataclass(frozen=True)
class ActivityPlan:
    """What a community publishes, and every revision replaces whole."""

    title: str
    description: str
    kind: VolunteerActivityKind
    starts_at: datetime
    ends_at: datetime
    service_space_id: str
    address: str
    places: int
    sign_up_deadline: datetime

    def state(self) -> dict[str, Any]:
        return {"title": self.title, "description": self.description, "kind": self.kind.value,
                "starts_at": self.starts_at, "ends_at": self.ends_at,
                "service_space_id": self.service_space_id, "address": self.address,
                "places": self.places, "sign_up_deadline": self.sign_up_deadline}


def check_plan(v: Violations, *, title: str, description: str, kind: VolunteerActivityKind | None,
               starts_at: datetime | None, ends_at: datetime | None, service_space_id: str,
               address: str, places: int, sign_up_deadline: datetime | None, now: datetime,
               unchanged_deadline: datetime | None = None) -> ActivityPlan | None:
    """Every fault of an activity as published or revised, added to `v`; the plan when there
    is none. (That `service_space_id` names a space is the application's to check.)
    `unchanged_deadline`: a revision may keep a deadline that has passed (a revised
    description after sign-up closed), never set a new one in the past."""
    check_text(v, "title", title, MAX_TITLE)
    check_text(v, "description", description, MAX_DESCRIPTION, required=False)
    check_text(v, "address", address, MAX_ADDRESS, required=False)
    v.require_given(kind, "kind", must_be_specified(VolunteerActivityKind),
                    ENUM_VALUE_REQUIRED)
    # Where: a service space of the street, or an address (both: the space and where in it).
    v.require(bool(service_space_id or address.strip()), "service_space_id",
              "a service space or an address is required", "PLACE_REQUIRED")
    v.require(1 <= places <= MAX_PLACES, "places", f"must be 1 to {MAX_PLACES}",
              VALUE_OUT_OF_RANGE)
    v.require_given(starts_at, "start_time", "must be set", FIELD_REQUIRED)
    v.require_given(ends_at, "end_time", "must be set", FIELD_REQUIRED)
    v.require_given(sign_up_deadline, "sign_up_deadline", "must be set", FIELD_REQUIRED)
    if starts_at is not None:
        v.require(starts_at > now, "start_time", "must be still to come", TIME_IN_THE_PAST)
        v.require(starts_at <= now + MAX_LEAD, "start_time", "at most a year ahead",
                  VALUE_OUT_OF_RANGE)
    if starts_at is not None and ends_at is not None:
        if ends_at <= starts_at:
            v.add("end_time", "must be after start_time", END_TIME_NOT_AFTER_START_TIME)
        elif ends_at - starts_at > MAX_LENGTH:
            v.add("end_time", "an activity lasts at most 24 hours", VALUE_OUT_OF_RANGE)
    if sign_up_deadline is not None:
        if sign_up_deadline != unchanged_deadline:
            v.require(sign_up_deadline > now, "sign_up_deadline", "must be still to come",
                      TIME_IN_THE_PAST)
        if starts_at is not None:
            v.require(sign_up_deadline <= starts_at, "sign_up_deadline",
                      "must be at or before start_time", "DEADLINE_AFTER_START")
    if v or kind is None or starts_at is None or ends_at is None or sign_up_deadline is None:
        return None
    return ActivityPlan(title=title.strip(), description=description.strip(), kind=kind,
                        starts_at=starts_at, ends_at=ends_at, service_space_id=service_space_id,
                        address=address.strip(), places=places,
                        sign_up_deadline=sign_up_deadline)


class VolunteerActivity(Aggregate):
    """One volunteer activity of a community, its places and who signed up."""

    if TYPE_CHECKING:  # the event classes @event makes (for readers' isinstance)
        Published: ClassVar[type[Any]]
        Revised: ClassVar[type[Any]]
        Cancelled: ClassVar[type[Any]]
        SignUpCancelled: ClassVar[type[Any]]
        AttendanceRecorded: ClassVar[type[Any]]
        SignedUp: ClassVar[type[Any]]
        SignUpWithdrawn: ClassVar[type[Any]]

    @event("Published")
    def __init__(self, community_id: str, street_id: str, title: str, description: str,
                 kind: str, starts_at: datetime, ends_at: datetime, service_space_id: str,
                 address: str, places: int, sign_up_deadline: datetime, published_by: str):
        self.community_id = community_id
        # The community's street, as identity placed it: a street office acts for it.
        self.street_id = street_id
        self._plan(title, description, kind, starts_at, ends_at, service_space_id, address,
                   places, sign_up_deadline)
        self.published_by = published_by
        self.status = VolunteerActivityStatus.OPEN.value
        self.cancel_reason = ""
        self.cancelled_at: datetime | None = None
        # Each rider's sign-up, a roll (shared/rolls.py: a command's copy of the activity
        # shares it; up to MAX_PLACES and the riders who withdrew), and the places they hold,
        # counted as they change rather than walked on each sign-up.
        self.sign_ups: rolls.Roll = Map()
        self.taken = 0

    @classmethod
    def publish(cls, *, community_id: str, street_id: str, plan: ActivityPlan,
                published_by: str) -> VolunteerActivity:
        return cls(community_id=community_id, street_id=street_id, published_by=published_by,
                   **plan.state())

    def _plan(self, title: str, description: str, kind: str, starts_at: datetime,
              ends_at: datetime, service_space_id: str, address: str, places: int,
              sign_up_deadline: datetime) -> None:
        self.title = title
        self.description = description
        self.kind = kind
        self.starts_at = starts_at
        self.ends_at = ends_at
        self.service_space_id = service_space_id
        self.address = address
        self.places = places
        self.sign_up_deadline = sign_up_deadline

    # -------------------------------------------------------------- reading

    @property
    def places_taken(self) -> int:
        return self.taken

    def _sign_up(self, rider_id: str, **changes: Any) -> None:
        """The rider's sign-up with `changes` (a new one when the rider signs up, again or
        for the first time), and the places taken as they now are."""
        self.sign_ups, held = rolls.changed(
            self.sign_ups, rider_id, changes, fresh="signed_up_at" in changes,
            holds_a_place=_holds_a_place)
        self.taken += held

    @property
    def places_left(self) -> int:
        return max(self.places - self.places_taken, 0)

    @property
    def length_hours(self) -> Decimal:
        """The activity's length in hours, to the hundredth (as hours travel)."""
        seconds = Decimal(int((self.ends_at - self.starts_at).total_seconds()))
        return (seconds / Decimal(3600)).quantize(Decimal("0.01"), rounding="ROUND_DOWN")

    def open_for_sign_up(self, at: datetime) -> bool:
        return (self.status == VolunteerActivityStatus.OPEN and at < self.sign_up_deadline
                and self.places_left > 0)

    def status_of(self, rider_id: str) -> VolunteerSignUpStatus | None:
        entry = self.sign_ups.get(rider_id)
        return VolunteerSignUpStatus(entry["status"]) if entry else None

    # -------------------------------------------------------------- the community's

    def revise(self, plan: ActivityPlan, at: datetime) -> None:
        self._require_open()
        if at >= self.starts_at:
            raise FailedPrecondition("the activity has started: it can no longer be revised",
                                     reason="ACTIVITY_STARTED")
        if plan.places < self.places_taken:
            raise FailedPrecondition(
                f"{self.places_taken} riders have signed up: places cannot be fewer",
                reason="PLACES_BELOW_SIGN_UPS", places_taken=str(self.places_taken))
        self._revised(**plan.state())

    @event("Revised")
    def _revised(self, title: str, description: str, kind: str, starts_at: datetime,
                 ends_at: datetime, service_space_id: str, address: str, places: int,
                 sign_up_deadline: datetime) -> None:
        self._plan(title, description, kind, starts_at, ends_at, service_space_id, address,
                   places, sign_up_deadline)

    def cancel(self, reason: str, at: datetime) -> list[str]:
        """Cancels it, and every sign-up still holding a place (each rider is told on their
        platform's feed); returns those riders. Hours already confirmed stand, so an
        activity with attendance recorded is not cancelled."""
        self._require_open()
        if any(s["status"] == VolunteerSignUpStatus.ATTENDED for s in self.sign_ups.values()):
            raise FailedPrecondition("attendance has been recorded: the activity took place",
                                     reason="ATTENDANCE_RECORDED")
        self._cancelled(reason=reason, at=at)
        # In the order the riders signed up (the map keeps none; a replica's process another
        # hash order): the cancellations are stored, and told, the same way every time.
        told = [r for r, s in sorted(self.sign_ups.items(),
                                     key=lambda item: (item[1]["signed_up_at"], item[0]))
                if s["status"] == VolunteerSignUpStatus.SIGNED_UP]
        for rider_id in told:
            self._sign_up_cancelled(rider_id=rider_id)
        return told

    @event("Cancelled")
    def _cancelled(self, reason: str, at: datetime) -> None:
        self.status = VolunteerActivityStatus.CANCELLED.value
        self.cancel_reason = reason
        self.cancelled_at = at

    @event("SignUpCancelled")
    def _sign_up_cancelled(self, rider_id: str) -> None:
        self._sign_up(rider_id, status=VolunteerSignUpStatus.CANCELLED.value)

    def check_attendance(self, rider_id: str, hours: Decimal, at: datetime) -> None:
        """Whether attendance of `hours` may be recorded for the rider at `at`, as far as the
        activity can tell: what record_attendance refuses, without recording."""
        self._require_open()
        if at < self.starts_at:
            raise FailedPrecondition("the activity has not started yet",
                                     reason="ACTIVITY_NOT_STARTED")
        status = self.status_of(rider_id)
        if status is None:
            raise NotFound("sign_up", rider_id)
        if status is VolunteerSignUpStatus.ATTENDED:
            raise AlreadyExists("attendance is already recorded for this rider",
                                reason="ATTENDANCE_ALREADY_RECORDED",
                                shift_id=self.sign_ups[rider_id]["shift_id"])
        if status is not VolunteerSignUpStatus.SIGNED_UP:
            raise FailedPrecondition(f"the sign-up is {wire_name(status)}",
                                     reason=f"SIGN_UP_{status.value}")
        v = Violations()
        self.check_hours(v, "hours", hours)
        v.raise_if_any()

    def check_hours(self, v: Violations, field: str, hours: Decimal) -> None:
        """Hours served are more than none and at most the activity's length."""
        v.require(Decimal(0) < hours <= self.length_hours, field,
                  f"must be more than 0 and at most the activity's length "
                  f"({self.length_hours} h)", "HOURS_ABOVE_ACTIVITY_LENGTH")

    def record_attendance(self, rider_id: str, hours: Decimal, shift_id: str,
                          at: datetime) -> None:
        self.check_attendance(rider_id, hours, at)
        self._attended(rider_id=rider_id, hours=hours, shift_id=shift_id, at=at)

    @event("AttendanceRecorded")
    def _attended(self, rider_id: str, hours: Decimal, shift_id: str, at: datetime) -> None:
        self._sign_up(rider_id, status=VolunteerSignUpStatus.ATTENDED.value, hours=hours,
                      shift_id=shift_id, attended_at=at)

    # -------------------------------------------------------------- the rider's

    def sign_up(self, rider_id: str, at: datetime) -> None:
        self.check_sign_up(rider_id, at)
        self._signed_up(rider_id=rider_id, at=at)

    def check_sign_up(self, rider_id: str, at: datetime) -> None:
        """What sign_up refuses (cancelled, closed, already signed up, full), without
        signing up: checked before the rider is looked up."""
        self._require_open()
        if at >= self.sign_up_deadline:
            raise FailedPrecondition("sign-up for this activity has closed",
                                     reason="SIGN_UP_CLOSED")
        if self.status_of(rider_id) in HOLDS_A_PLACE:
            raise AlreadyExists("the rider has already signed up for this activity",
                                reason="ALREADY_SIGNED_UP")
        if self.places_left <= 0:
            raise FailedPrecondition("the activity is full", reason="ACTIVITY_FULL",
                                     places=str(self.places))

    @event("SignedUp")
    def _signed_up(self, rider_id: str, at: datetime) -> None:
        # A rider who withdrew may sign up again while places are left: a fresh entry.
        self._sign_up(rider_id, status=VolunteerSignUpStatus.SIGNED_UP.value, signed_up_at=at,
                      withdrawn_at=None, hours=None, shift_id="", attended_at=None)

    def withdraw(self, rider_id: str, at: datetime) -> None:
        status = self.status_of(rider_id)
        if status is None:
            raise NotFound("sign_up", rider_id)
        if status is not VolunteerSignUpStatus.SIGNED_UP:
            raise FailedPrecondition(f"the sign-up is {wire_name(status)}",
                                     reason=f"SIGN_UP_{status.value}")
        if at >= self.sign_up_deadline:
            # After the deadline the community counts on the rider: they tell it in person.
            raise FailedPrecondition("sign-up has closed: withdrawing is no longer possible "
                                     "here; tell the community", reason="SIGN_UP_CLOSED")
        self._withdrawn(rider_id=rider_id, at=at)

    @event("SignUpWithdrawn")
    def _withdrawn(self, rider_id: str, at: datetime) -> None:
        self._sign_up(rider_id, status=VolunteerSignUpStatus.WITHDRAWN.value, withdrawn_at=at)

    def _require_open(self) -> None:
        if self.status == VolunteerActivityStatus.CANCELLED:
            raise FailedPrecondition("the activity was cancelled", reason="ACTIVITY_CANCELLED")


def _holds_a_place(sign_up: Map[str, Any]) -> bool:
    return sign_up["status"] in HOLDS_A_PLACE


def shift_id_of(activity_id: str, rider_id: str) -> uuid.UUID:
    """The shift attendance makes: one per rider per activity, whoever records it and however
    often (a second, concurrent recording collides on this id)."""
    return uuid.uuid5(_NS, f"attendance\n{activity_id}\n{rider_id}")


def attended_shift(activity: VolunteerActivity, rider_id: str, hours: Decimal
                   ) -> VolunteerShift:
    """Volunteer service done at the activity, logged as any shift is (the rider's record and
    identity's copy of it read the same events) under the id only this attendance has."""
    return VolunteerShift._create(
        VolunteerShift.Logged, id=shift_id_of(str(activity.id), rider_id), rider_id=rider_id,
        community_id=activity.community_id, activity=activity.title,
        started_at=activity.starts_at, hours=hours)
