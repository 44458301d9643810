"""Growth paths and riders' growth plans (量身定制): the city's path from rider to volunteer,
station master or community social worker, and how far one rider has come along it.

A path is the city's configuration, versioned like badge criteria and routing rules: each
revision is kept, and a plan names the version it follows, so a step reached under version 2 is
explained by version 2 for ever, whatever the path says today. A step asks for training only —
hours passed per track (四时课程), named courses passed, the pre-job certification (岗前培训) —
which is what training itself knows; the evaluation is a pure function of the rider's
completions."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar

from eventsourcing.domain import Aggregate, event

from shared.errors import FailedPrecondition

PASSED = "PASSED"


class GrowthRole(StrEnum):
    """The role a step leads to, named as identity's career milestones are
    (CareerMilestoneKind): identity's RecordCareerMilestone stays the official record of a role
    taken; a step only says its training is done."""

    VOLUNTEER = "VOLUNTEER"  # 志愿者
    STATION_MASTER = "STATION_MASTER"  # 站长
    COMMUNITY_SOCIAL_WORKER = "COMMUNITY_SOCIAL_WORKER"  # 社区社工


class GrowthPlanStatus(StrEnum):
    OPEN = "OPEN"
    CLOSED = "CLOSED"


@dataclass(frozen=True)
class StepProgress:
    """One step of a plan, evaluated from the rider's completions: met or not, and what is
    missing (hours by track still to pass, courses not yet passed, the certification)."""

    index: int
    key: str
    title: str
    role: str
    met: bool
    hours_required: dict[str, Decimal] = field(default_factory=dict)
    hours_passed: dict[str, Decimal] = field(default_factory=dict)
    hours_missing: dict[str, Decimal] = field(default_factory=dict)
    courses_missing: tuple[str, ...] = ()
    pre_job_asked: bool = False
    pre_job_missing: bool = False
    # The completions that meet what the step asks (passed ones, of the step's tracks and
    # courses), each as the transcript holds it: what StepReached names as its evidence.
    evidence: tuple[dict[str, Any], ...] = ()


def evaluate_step(index: int, step: dict[str, Any], completions: list[dict[str, Any]],
                  certified_at: datetime | None) -> StepProgress:
    passed = [c for c in completions if c["result"] == PASSED]
    hours_required: dict[str, Decimal] = {}
    hours_passed: dict[str, Decimal] = {}
    hours_missing: dict[str, Decimal] = {}
    evidence: list[dict[str, Any]] = []
    for track, text in sorted(step.get("hours_by_track", {}).items()):
        needed = hours_required[track] = Decimal(text)
        hits = [c for c in passed if c["track"] == track]
        done = sum((Decimal(c["hours"]) for c in hits), Decimal(0))
        hours_passed[track] = done
        if done < needed:
            hours_missing[track] = needed - done
        evidence += [c for c in hits if c not in evidence]
    courses_missing = []
    for course_id in step.get("course_ids", []):
        hit = next((c for c in passed if c["course_id"] == course_id), None)
        if hit is None:
            courses_missing.append(course_id)
        elif hit not in evidence:
            evidence.append(hit)
    pre_job_asked = bool(step.get("pre_job_certified"))
    pre_job_missing = pre_job_asked and certified_at is None
    met = not hours_missing and not courses_missing and not pre_job_missing
    return StepProgress(index=index, key=step["key"], title=step["title"],
                        role=step.get("role", ""), met=met, hours_required=hours_required,
                        hours_passed=hours_passed,
                        hours_missing=hours_missing, courses_missing=tuple(courses_missing),
                        pre_job_asked=pre_job_asked, pre_job_missing=pre_job_missing,
                        evidence=tuple(sorted(evidence, key=lambda c: c["at"])))


def evaluate_path(steps: list[dict[str, Any]], completions: list[dict[str, Any]],
                  certified_at: datetime | None) -> list[StepProgress]:
    return [evaluate_step(i, s, completions, certified_at) for i, s in enumerate(steps)]


class GrowthPath(Aggregate):
    """A path the city configures (骑手 → 志愿者 → 站长 → 社区社工): ordered steps, each with the
    training it asks. Every revision is a new version; old versions stay readable."""

    if TYPE_CHECKING:  # the event classes @event makes (for readers' isinstance)
        Defined: ClassVar[type[Any]]
        Revised: ClassVar[type[Any]]

    @event("Defined")
    def __init__(self, name: str, description: str, steps: list[dict[str, Any]]):
        self.versions: list[dict[str, Any]] = [
            {"name": name, "description": description, "steps": steps}]

    @property
    def path_version(self) -> int:
        return len(self.versions)

    def at(self, path_version: int) -> dict[str, Any]:
        """The path as version `path_version` (1-based) defined it."""
        return self.versions[path_version - 1]

    def has_version(self, path_version: int) -> bool:
        return 1 <= path_version <= len(self.versions)

    @event("Revised")
    def revise(self, name: str, description: str, steps: list[dict[str, Any]]) -> None:
        # Plans on an older version keep it: the version a step was reached under explains it.
        self.versions.append({"name": name, "description": description, "steps": steps})


class GrowthPlan(Aggregate):
    """One rider's plan on one path version: goals and chosen tracks, and the steps reached.

    A step is reached when its training is met and every step before it has been reached, so
    a plan climbs the path in order; each is stored once (StepReached), with the path version
    and the completions that met it."""

    if TYPE_CHECKING:  # the event classes @event makes (for readers' isinstance)
        Opened: ClassVar[type[Any]]
        Revised: ClassVar[type[Any]]
        Closed: ClassVar[type[Any]]
        StepReached: ClassVar[type[Any]]

    @event("Opened")
    def __init__(self, rider_id: str, growth_path_id: str, path_version: int, goals: str,
                 tracks: list[str], opened_by: str):
        self.rider_id = rider_id
        self.growth_path_id = growth_path_id
        self.path_version = path_version
        self.goals = goals
        self.tracks = list(tracks)
        # The organisation that opened it (the rider's platform, or their street office).
        self.opened_by = opened_by
        self.status = GrowthPlanStatus.OPEN
        self.close_reason = ""
        # step key -> {"index", "path_version", "at"}
        self.reached: dict[str, dict[str, Any]] = {}

    @property
    def is_open(self) -> bool:
        return self.status is GrowthPlanStatus.OPEN

    def require_open(self) -> None:
        if not self.is_open:
            raise FailedPrecondition("the growth plan is closed", reason="GROWTH_PLAN_CLOSED")

    def revise(self, goals: str, tracks: list[str], path_version: int) -> None:
        self.require_open()
        if path_version < self.path_version:
            raise FailedPrecondition(
                f"a plan moves only to a newer path version (it follows version "
                f"{self.path_version})", reason="PATH_VERSION_OLDER")
        self._revised(goals=goals, tracks=list(tracks), path_version=path_version)

    @event("Revised")
    def _revised(self, goals: str, tracks: list[str], path_version: int) -> None:
        self.goals = goals
        self.tracks = list(tracks)
        self.path_version = path_version

    def close(self, reason: str) -> None:
        self.require_open()
        self._closed(reason=reason)

    @event("Closed")
    def _closed(self, reason: str) -> None:
        self.status = GrowthPlanStatus.CLOSED
        self.close_reason = reason

    def advance(self, progress: list[StepProgress], certified_at: datetime | None,
                at: datetime) -> list[str]:
        """Stores StepReached for each step newly reached, in path order: the keys reached.
        Only an open plan advances; a step already reached (under any version) is not again."""
        if not self.is_open:
            return []
        reached = []
        for step in progress:
            if step.key in self.reached:
                continue
            if not step.met:
                break
            self._step_reached(
                step_key=step.key, step_index=step.index, title=step.title, role=step.role,
                path_version=self.path_version,
                evidence=[{"course_id": c["course_id"], "session_id": c["session_id"],
                           "track": c["track"], "hours": Decimal(c["hours"]),
                           "completed_at": c["at"]} for c in step.evidence],
                pre_job_certified_at=certified_at if step.pre_job_asked else None, at=at)
            reached.append(step.key)
        return reached

    @event("StepReached")
    def _step_reached(self, step_key: str, step_index: int, title: str, role: str,
                      path_version: int, evidence: list[dict[str, Any]],
                      pre_job_certified_at: datetime | None, at: datetime) -> None:
        self.reached[step_key] = {"index": step_index, "path_version": path_version, "at": at}
