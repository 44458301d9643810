"""The three rates a city judges each unit by, as Beijing's 12345 does (接诉即办): response
(响应率), resolution (解决率) and satisfaction (满意率) of a department, a street or a district
over a period. Pure: a function of reports as they stood at one moment, so that the same log
read as of the same moment always gives the same figures.

The rules are written out below (RULES) and returned with every answer, so that an auditor
reads how the figures were made beside the counts they were made from. A change of rule is a
new RULES_VERSION: figures reported under an older one stay explainable."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from services.governance.domain.values import (
    AssignmentStatus,
    DeadlineKind,
    SatisfactionRating,
)

RULES_VERSION = 1
RULES: tuple[str, ...] = (
    "period: an assignment counts when it was routed (given to its department, at routing or "
    "by a transfer or a new assignment) at or after start_time and before end_time; a "
    "department's are its own, a street's those of every report made in the street (whichever "
    "department holds them), a district's those of its streets",
    "as of: each report as its stored events stood at as_of_time (events recorded after it are "
    "not seen); a due time has passed when it is at or before as_of_time",
    "response: assignments first acted on (acknowledged, rejected or transferred) at or before "
    "their acknowledgement due time, out of those acted on by as_of_time or whose "
    "acknowledgement due time had passed (the due time as it then stood, moved on by pauses); "
    "the others await their response and are in neither count",
    "resolution: assignments RESOLVED, out of those done (RESOLVED or REJECTED); an assignment "
    "TRANSFERRED away is in neither count (the receiving department's assignment answers for "
    "the report), and one still open is in neither",
    "satisfaction: reports rated SATISFIED or BASICALLY_SATISFIED, out of those rated, each by "
    "its latest rating as of as_of_time (after a reopening, the rating it then had); a street "
    "or district counts a report in the period of its first routing, a department each report "
    "it held an assignment of that was routed in the period and not transferred away",
    "percent: numerator / denominator x 100 with two decimals, rounded half up; none when the "
    "denominator is 0",
)

# The status of an assignment its department handed on to another (转派): the receiving
# department holds a new assignment.
TRANSFERRED = AssignmentStatus.TRANSFERRED.value
RESOLVED = AssignmentStatus.RESOLVED.value
REJECTED = AssignmentStatus.REJECTED.value
# The rider's ratings (满意度), as the report keeps its latest: {"rating": ..., "at": ...}.
SATISFIED = SatisfactionRating.SATISFIED.value
BASICALLY_SATISFIED = SatisfactionRating.BASICALLY_SATISFIED.value
UNSATISFIED = SatisfactionRating.UNSATISFIED.value
_ACKNOWLEDGE = DeadlineKind.ACKNOWLEDGE.value

# One answer reads the reports of at most this long a period: a year's figures, a leap year's
# too. A longer one is asked as several.
MAX_PERIOD = timedelta(days=366)
# Reasons of GetServiceRates' field violations.
UNIT_REQUIRED = "UNIT_REQUIRED"  # none of department_id, street_id, district_id
MORE_THAN_ONE_UNIT = "MORE_THAN_ONE_UNIT"  # two or three of them
AS_OF_BEFORE_START = "AS_OF_BEFORE_START"  # figures of a period before it began
PERIOD_TOO_LONG = "PERIOD_TOO_LONG"
_PERCENT = Decimal("0.01")


@dataclass(frozen=True)
class Unit:
    """Whose figures: one department's own assignments (`department_id`), or every assignment
    of the reports made in some streets (one street's, or all of a district's)."""

    department_id: str = ""
    street_ids: frozenset[str] = frozenset()

    def holds(self, street_id: str, department_id: str) -> bool:
        if self.department_id:
            return department_id == self.department_id
        return street_id in self.street_ids


@dataclass(frozen=True)
class Rate:
    numerator: int
    denominator: int

    @property
    def percent(self) -> Decimal | None:
        """numerator / denominator in per cent, two decimals, half up; None with nothing to
        judge (a rate of 0 out of 0 is no rate, not 0% nor 100%)."""
        if not self.denominator:
            return None
        return (Decimal(100 * self.numerator) / Decimal(self.denominator)).quantize(
            _PERCENT, rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class ServiceRates:
    """The three rates of one unit over one period as of one moment, with every count they
    are made of: each rate's numerator and denominator, and what is in neither."""

    assignments: int  # routed in the period
    response: Rate
    awaiting_response: int  # not acted on, and its acknowledgement due time not passed
    resolution: Rate
    open: int  # neither done nor transferred
    transferred: int
    reports: int  # in the satisfaction count's reach: rated or not
    satisfaction: Rate
    satisfied: int
    basically_satisfied: int
    unsatisfied: int


def assignments_of(report: Any) -> list[tuple[str, dict[str, Any]]]:
    """(department_id, assignment) for each assignment the report has had: the current ones,
    and those replaced when a department was given the report again (`past_assignments`,
    where the model keeps them)."""
    found = [(d, a) for d, a in report.assignments.items()]
    found += [(a["department_id"], a) for a in getattr(report, "past_assignments", None) or ()]
    return found


def responded_at(assignment: dict[str, Any]) -> datetime | None:
    """When the department first acted on the assignment: acknowledged it, rejected it, or
    handed it on — what ends the wait the acknowledgement deadline measures (the same rule that
    escalates a missed acknowledgement: only an assignment still ROUTED misses it)."""
    times = [t for t in (assignment.get("acknowledged_at"), assignment.get("rejected_at"),
                         assignment.get("transferred_at")) if t is not None]
    return min(times) if times else None


def rating_of(report: Any) -> str | None:
    """The report's latest rating by the rider, or None when it has none (or this copy of the
    model keeps no ratings)."""
    satisfaction = getattr(report, "satisfaction", None)
    return satisfaction.get("rating") if satisfaction else None


def service_rates(reports: Iterable[Any], unit: Unit, start: datetime, end: datetime,
                  as_of: datetime) -> ServiceRates:
    """The unit's rates over [start, end), from `reports` as they stood at `as_of` (each an
    object with street_id, assignments and, where kept, past_assignments and satisfaction).
    Reports outside the unit or the period may be among them: they count nothing."""
    assignments = on_time = judged = resolved = done = transferred = 0
    reached = 0
    ratings = {SATISFIED: 0, BASICALLY_SATISFIED: 0, UNSATISFIED: 0}
    for report in reports:
        every = assignments_of(report)
        counted = [(d, a) for d, a in every
                   if unit.holds(report.street_id, d) and start <= a["routed_at"] < end]
        for _, a in counted:
            assignments += 1
            acted, due = responded_at(a), a["due"].get(_ACKNOWLEDGE)
            if acted is not None or (due is not None and due <= as_of):
                judged += 1
                # A due time unknown (a clock paused before it was ever set) cannot be missed.
                on_time += acted is not None and (due is None or acted <= due)
            status = a["status"]
            if status == TRANSFERRED:
                transferred += 1
            elif status in (RESOLVED, REJECTED):
                done += 1
                resolved += status == RESOLVED
        if _rated_here(report, unit, every, counted, start, end):
            reached += 1
            rating = rating_of(report)
            if rating in ratings:
                ratings[rating] += 1
    rated = sum(ratings.values())
    return ServiceRates(
        assignments=assignments, response=Rate(on_time, judged),
        awaiting_response=assignments - judged, resolution=Rate(resolved, done),
        open=assignments - done - transferred, transferred=transferred, reports=reached,
        satisfaction=Rate(ratings[SATISFIED] + ratings[BASICALLY_SATISFIED], rated),
        satisfied=ratings[SATISFIED], basically_satisfied=ratings[BASICALLY_SATISFIED],
        unsatisfied=ratings[UNSATISFIED])


def _rated_here(report: Any, unit: Unit, every: list[tuple[str, dict[str, Any]]],
                counted: list[tuple[str, dict[str, Any]]], start: datetime, end: datetime
                ) -> bool:
    """Whether the report's rating counts for the unit in this period. A street or a district:
    in the period of the report's first routing, so that a report is counted once however
    long it is worked. A department: when it held an assignment of it routed in the period and
    not handed on — it answered for the outcome the rider rated."""
    if unit.department_id:
        return any(a["status"] != TRANSFERRED for _, a in counted)
    if not counted:
        return False
    first: datetime = min(a["routed_at"] for _, a in every)
    return start <= first < end
