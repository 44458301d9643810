"""Badge criteria: what a machine checks, and the check itself.

Criteria are values stored in events (a version per revision), so the award made under version
2 is explained by version 2 for ever, whatever the class's criteria are today."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

from shared.errors import (
    DUPLICATE_VALUE,
    ENUM_VALUE_REQUIRED,
    INVALID_ID,
    TEXT_TOO_LONG,
    VALUE_OUT_OF_RANGE,
    Violations,
)
from shared.values import parse_hours
from shared.wire import one_of


class Track(StrEnum):
    CIVIC_EDUCATION = "CIVIC_EDUCATION"
    SKILLS = "SKILLS"
    PERSONAL_DEVELOPMENT = "PERSONAL_DEVELOPMENT"
    GRASSROOTS_GOVERNANCE = "GRASSROOTS_GOVERNANCE"


@dataclass(frozen=True)
class Criteria:
    min_volunteer_hours: Decimal = Decimal(0)
    required_course_ids: tuple[str, ...] = ()
    track_requirements: dict[str, int] = field(default_factory=dict)
    min_verified_reports: int = 0
    within_days: int = 0
    narrative: str = ""

    def to_state(self) -> dict[str, Any]:
        return {"min_volunteer_hours": str(self.min_volunteer_hours),
                "required_course_ids": list(self.required_course_ids),
                "track_requirements": dict(self.track_requirements),
                "min_verified_reports": self.min_verified_reports,
                "within_days": self.within_days, "narrative": self.narrative}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Criteria:
        return cls(min_volunteer_hours=Decimal(state["min_volunteer_hours"]),
                   required_course_ids=tuple(state["required_course_ids"]),
                   track_requirements=dict(state["track_requirements"]),
                   min_verified_reports=state["min_verified_reports"],
                   within_days=state["within_days"], narrative=state["narrative"])

    def describe(self) -> str:
        parts = []
        if self.min_volunteer_hours:
            parts.append(f"{self.min_volunteer_hours} hours of confirmed volunteer service")
        if self.required_course_ids:
            parts.append(f"passing courses {', '.join(self.required_course_ids)}")
        parts += [f"{n} course(s) passed in {track}"
                  for track, n in sorted(self.track_requirements.items())]
        if self.min_verified_reports:
            parts.append(f"{self.min_verified_reports} verified governance report(s)")
        text = "; ".join(parts)
        return f"{text}, within the last {self.within_days} days" if self.within_days else text


def parse_criteria(v: Violations, *, min_volunteer_hours: str, required_course_ids: list[str],
                   track_requirements: list[tuple[Track | None, int]],
                   min_verified_reports: int, within_days: int, narrative: str,
                   is_uuid: Any) -> Criteria | None:
    """Criteria from a request, refusing any that could never be met."""
    hours = Decimal(0)
    if min_volunteer_hours:
        hours = parse_hours(v, "criteria.min_volunteer_hours", min_volunteer_hours,
                            maximum=Decimal(100_000), quarters=False,
                            allow_zero=True) or Decimal(0)
    for i, course_id in enumerate(required_course_ids):
        v.require(is_uuid(course_id), f"criteria.required_course_ids[{i}]",
                  "is not a course id (a UUID)", INVALID_ID)
    v.require(len(set(required_course_ids)) == len(required_course_ids),
              "criteria.required_course_ids", "lists a course twice", DUPLICATE_VALUE)
    tracks: dict[str, int] = {}
    for i, (track, count) in enumerate(track_requirements):
        if track is None:  # unless the entry point found a number the contract lacks
            v.require(v.about(f"criteria.track_requirements[{i}].track"),
                      f"criteria.track_requirements[{i}].track", one_of(Track),
                      ENUM_VALUE_REQUIRED)
        elif track.value in tracks:
            v.add(f"criteria.track_requirements[{i}].track", "given twice", DUPLICATE_VALUE)
        else:
            tracks[track.value] = count
        v.require(1 <= count <= 1000, f"criteria.track_requirements[{i}].courses_passed",
                  "must be 1 to 1000", VALUE_OUT_OF_RANGE)
    v.require(0 <= min_verified_reports <= 10_000, "criteria.min_verified_reports",
              "must be 0 to 10000", VALUE_OUT_OF_RANGE)
    v.require(0 <= within_days <= 3650, "criteria.within_days", "must be 0 to 3650",
              VALUE_OUT_OF_RANGE)
    if within_days and hours > within_days * 24:
        # More hours than the window has: a badge no one could ever earn.
        v.add("criteria.min_volunteer_hours",
              f"cannot exceed the {within_days * 24} hours in {within_days} days",
              "CRITERIA_UNREACHABLE")
    v.require(bool(hours or required_course_ids or tracks or min_verified_reports),
              "criteria", "set at least one requirement: an empty criteria would award everyone",
              "CRITERIA_EMPTY")
    v.require(len(narrative) <= 1000, "criteria.narrative", "at most 1000 characters",
              TEXT_TOO_LONG)
    if v.items:
        return None
    return Criteria(hours, tuple(required_course_ids), tracks, min_verified_reports,
                    within_days, narrative.strip())


def evaluate(criteria: Criteria, record: Any, now: datetime) -> list[dict[str, Any]] | None:
    """The evidence that meets the criteria from a rider's record, or None if unmet. Evidence
    names each fact used, so an award can say exactly why it was made."""
    since = now - timedelta(days=criteria.within_days) if criteria.within_days else None

    def recent(at: datetime) -> bool:
        return since is None or at >= since

    evidence: list[dict[str, Any]] = []
    if criteria.min_volunteer_hours:
        shifts = [s for s in record.shifts.values() if recent(s["at"])]
        total = sum((s["hours"] for s in shifts), Decimal(0))
        if total < criteria.min_volunteer_hours:
            return None
        evidence += [{"source": "badges", "reference": s["shift_id"], "position": 0,
                      "narrative": f"{s['hours']} h of volunteer service confirmed",
                      "at": s["at"]} for s in shifts]
    passed = [c for c in record.completions if c["result"] == "PASSED" and recent(c["at"])]
    for course_id in criteria.required_course_ids:
        hit = next((c for c in passed if c["course_id"] == course_id), None)
        if hit is None:
            return None
        evidence.append(_completion_evidence(hit))
    for track, count in sorted(criteria.track_requirements.items()):
        hits = [c for c in passed if c["track"] == track]
        if len(hits) < count:
            return None
        evidence += [_completion_evidence(c) for c in hits[:count]
                     if _completion_evidence(c) not in evidence]
    if criteria.min_verified_reports:
        reports = [r for r in record.verified_reports.values() if recent(r["at"])]
        if len(reports) < criteria.min_verified_reports:
            return None
        evidence += [{"source": "governance", "reference": r["report_id"],
                      "position": r["position"], "narrative": "report resolved and verified",
                      "at": r["at"]} for r in reports]
    return evidence


def _completion_evidence(c: dict[str, Any]) -> dict[str, Any]:
    return {"source": "training", "reference": c["course_id"], "position": c["position"],
            "narrative": f"passed a {c['track']} course", "at": c["at"]}
