"""training's growth paths and riders' growth plans (量身定制): the service-layer half of
TrainingApplication that runs them (services/training/domain/growth.py holds the rules)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from services.training.domain.growth import (
    GrowthPath,
    GrowthPlan,
    GrowthPlanStatus,
    GrowthRole,
    StepProgress,
    evaluate_path,
)
from services.training.domain.model import Course, Learner
from services.training.domain.values import CourseStatus, Track
from shared import context
from shared.application import CommandResult, Outcome, QijiApplication
from shared.errors import (
    DUPLICATE_VALUE,
    ENUM_VALUE_REQUIRED,
    FIELD_REQUIRED,
    VALUE_OUT_OF_RANGE,
    AlreadyExists,
    FailedPrecondition,
    Violations,
    check_id,
    check_text,
)
from shared.paging import listed
from shared.tenancy import Owners
from shared.values import parse_hours
from shared.wire import must_be_specified

if TYPE_CHECKING:
    from services.training.views import TrainingViews

MAX_PATH_NAME = 100
MAX_PATH_DESCRIPTION = 1000
MAX_STEPS = 20
MAX_STEP_TITLE = 100
MAX_STEP_COURSES = 50
MAX_STEP_HOURS = Decimal(2000)
MAX_GOALS = 500
MAX_CLOSE_REASON = 500
STEP_KEY = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")
# A step that asks nothing would be reached the moment a plan opens: a path of the city's
# must say what each step takes.
STEP_EMPTY = "STEP_EMPTY"
STEP_KEY_INVALID = "STEP_KEY_INVALID"


@dataclass(frozen=True)
class StepInput:
    """One step of a path as a request gives it."""

    key: str
    title: str
    role: GrowthRole | None
    hours_by_track: list[tuple[Track | None, str]]
    course_ids: list[str]
    pre_job_certified: bool


@dataclass(frozen=True)
class GrowthPathView:
    growth_path_id: str
    path_version: int
    name: str
    description: str
    steps: list[dict[str, Any]]
    version: int


@dataclass(frozen=True)
class GrowthPlanView:
    growth_plan_id: str
    rider_id: str
    growth_path_id: str
    path_version: int
    goals: str
    tracks: list[Track]
    status: GrowthPlanStatus
    close_reason: str
    opened_by: str
    opened_at: datetime
    progress: list[StepProgress]
    reached: dict[str, dict[str, Any]]
    version: int


class GrowthPlans(QijiApplication):
    """Mixed into TrainingApplication: paths are the city admin's; a plan is opened for a
    rider by their platform or their home street office (the access table says so)."""

    if TYPE_CHECKING:  # TrainingApplication's, which this part of it uses
        clock: Callable[[], datetime]
        views: TrainingViews

        def catch_up_upstream(self) -> None: ...

        def _learner(self, rider_id: str,
                     refresh_unless: Callable[[Learner], bool] | None = None) -> Learner: ...

    # ------------------------------------------------------------------ paths (the city's)

    def define_growth_path(self, *, name: str, description: str, steps: list[StepInput],
                           violations: Violations | None = None) -> CommandResult:
        violations = violations if violations is not None else Violations()
        stored = self._path_input(violations, name, description, steps)
        violations.raise_if_any()

        def decide() -> Outcome:
            self._require_courses_passable(steps)
            path = GrowthPath(name=name.strip(), description=description.strip(), steps=stored)
            return Outcome([path], {"growth_path_id": str(path.id), "version": path.version})
        return self.execute(decide, id_key="growth_path_id")

    def revise_growth_path(self, *, growth_path_id: str, name: str, description: str,
                           steps: list[StepInput], violations: Violations | None = None
                           ) -> CommandResult:
        violations = violations if violations is not None else Violations()
        self.note(violations, growth_path_id, GrowthPath, "growth_path", "growth_path_id")
        stored = self._path_input(violations, name, description, steps)
        violations.raise_if_any()

        def decide() -> Outcome:
            self._require_courses_passable(steps)
            path = self.get(growth_path_id, GrowthPath, "growth_path")
            path.revise(name=name.strip(), description=description.strip(), steps=stored)
            return Outcome([path], {"growth_path_id": growth_path_id, "version": path.version})
        # Two revisions at once must not both become version N+1.
        return self.execute(decide, id_key="growth_path_id", serialise_on=growth_path_id)

    def growth_path(self, growth_path_id: str, version: int | None = None) -> GrowthPathView:
        path = self.view(growth_path_id, GrowthPath, "growth_path", version)
        current = path.at(path.path_version)
        return GrowthPathView(growth_path_id=str(path.id), path_version=path.path_version,
                              name=current["name"], description=current["description"],
                              steps=[dict(s) for s in current["steps"]], version=path.version)

    def list_growth_paths(self, *, page_size: int, page_token: str,
                          violations: Violations | None = None
                          ) -> tuple[list[GrowthPathView], str]:
        self.views.catch_up()
        ids, token = listed(violations, lambda: self.views.growth_paths.select(
            {}, page_size=page_size, page_token=page_token))
        return [self.growth_path(i) for i in ids], token

    def _path_input(self, v: Violations, name: str, description: str,
                    steps: list[StepInput]) -> list[dict[str, Any]]:
        """The steps as stored, with every fault of the request added to `v`."""
        check_text(v, "name", name, MAX_PATH_NAME, required=True)
        check_text(v, "description", description, MAX_PATH_DESCRIPTION, required=False)
        v.require(1 <= len(steps) <= MAX_STEPS, "steps", f"name 1 to {MAX_STEPS} steps",
                  FIELD_REQUIRED if not steps else VALUE_OUT_OF_RANGE)
        keys: set[str] = set()
        stored = []
        for i, step in enumerate(steps):
            at = f"steps[{i}]"
            if not step.key:
                v.add(f"{at}.key", "is required", FIELD_REQUIRED)
            elif not STEP_KEY.fullmatch(step.key):
                v.add(f"{at}.key", "1 to 40 of a-z, 0-9 and '-', starting with a letter or "
                      "digit", STEP_KEY_INVALID)
            elif step.key in keys:
                v.add(f"{at}.key", "given to an earlier step", DUPLICATE_VALUE)
            keys.add(step.key)
            check_text(v, f"{at}.title", step.title, MAX_STEP_TITLE, required=True)
            hours: dict[str, str] = {}
            for j, (track, text) in enumerate(step.hours_by_track):
                field = f"{at}.track_hours[{j}]"
                v.require_given(track, f"{field}.track", must_be_specified(Track),
                                ENUM_VALUE_REQUIRED)
                parsed = parse_hours(v, f"{field}.hours", text, maximum=MAX_STEP_HOURS)
                if track is not None and track.value in hours:
                    v.add(f"{field}.track", "given twice in this step", DUPLICATE_VALUE)
                elif track is not None and parsed is not None:
                    hours[track.value] = format(parsed.normalize(), "f")
            v.require(len(step.course_ids) <= MAX_STEP_COURSES, f"{at}.course_ids",
                      f"at most {MAX_STEP_COURSES} courses", VALUE_OUT_OF_RANGE)
            v.require(len(set(step.course_ids)) == len(step.course_ids), f"{at}.course_ids",
                      "lists a course twice", DUPLICATE_VALUE)
            for j, course_id in enumerate(step.course_ids):
                self.note(v, course_id, Course, "course", f"{at}.course_ids[{j}]")
            v.require(bool(step.hours_by_track or step.course_ids or step.pre_job_certified),
                      at, "ask for track hours, courses or the pre-job certification: a step "
                      "that asks nothing would be reached by everyone", STEP_EMPTY)
            stored.append({"key": step.key, "title": step.title.strip(),
                           "role": step.role.value if step.role else "",
                           "hours_by_track": hours, "course_ids": list(step.course_ids),
                           "pre_job_certified": step.pre_job_certified})
        return stored

    def _require_courses_passable(self, steps: list[StepInput]) -> None:
        """A draft course can still change (its hours, its track): a path names only courses
        riders can pass, or have passed (a retired one's results stand)."""
        for i, step in enumerate(steps):
            for j, course_id in enumerate(step.course_ids):
                course = self.get(course_id, Course, "course",
                                  field=f"steps[{i}].course_ids[{j}]")
                if course.status is CourseStatus.DRAFT:
                    raise FailedPrecondition(
                        f"steps[{i}].course_ids[{j}] names a draft course",
                        reason="COURSE_NOT_PUBLISHED")

    # ------------------------------------------------------------------ plans

    def open_growth_plan(self, *, rider_id: str, growth_path_id: str, path_version: int,
                         goals: str, tracks: list[Track | None],
                         violations: Violations | None = None) -> CommandResult:
        violations = violations if violations is not None else Violations()
        check_id(violations, "rider_id", rider_id)
        path = self.note(violations, growth_path_id, GrowthPath, "growth_path",
                         "growth_path_id")
        self._plan_input(violations, goals, tracks, path, path_version)
        # The rider last: whether one exists is their platform's to tell (require_riders).
        self.require_riders(violations, [("rider_id", rider_id)], Learner.create_id,
                            self.catch_up_upstream)
        chosen = [t.value for t in tracks if t]

        def decide() -> Outcome:
            learner = self._learner(rider_id)
            if learner.left:
                raise FailedPrecondition("the rider has left the programme", reason="RIDER_LEFT")
            current = self.get(growth_path_id, GrowthPath, "growth_path")
            version = path_version or current.path_version
            for plan_id in learner.growth_plans:
                other = self.view(plan_id, GrowthPlan, "growth_plan")
                if other.is_open and other.growth_path_id == growth_path_id:
                    raise AlreadyExists("the rider already has an open plan on this path",
                                        reason="GROWTH_PLAN_ALREADY_OPEN",
                                        growth_plan_id=plan_id)
            plan = GrowthPlan(rider_id=rider_id, growth_path_id=growth_path_id,
                              path_version=version, goals=goals.strip(), tracks=chosen,
                              opened_by=context.current().organisation_id)
            learner.note_growth_plan(str(plan.id))
            # Training the rider passed before the plan counts: a step may be reached at once.
            self._advance(plan, current, learner, self.clock())
            return Outcome([plan, learner], {"growth_plan_id": str(plan.id),
                                             "version": plan.version})
        # Queued with the rider's completions (which write the same learner) in this process.
        return self.execute(decide, id_key="growth_plan_id", serialise_on=("learner", rider_id))

    def revise_growth_plan(self, *, growth_plan_id: str, goals: str, tracks: list[Track | None],
                           path_version: int, violations: Violations | None = None
                           ) -> CommandResult:
        violations = violations if violations is not None else Violations()
        plan = self.note(violations, growth_plan_id, GrowthPlan, "growth_plan",
                         "growth_plan_id")
        path = self.found(plan.growth_path_id, GrowthPath) if plan is not None else None
        self._plan_input(violations, goals, tracks, path, path_version)
        violations.raise_if_any()
        chosen = [t.value for t in tracks if t]

        def decide() -> Outcome:
            plan = self.get(growth_plan_id, GrowthPlan, "growth_plan")
            current = self.get(plan.growth_path_id, GrowthPath, "growth_path")
            plan.revise(goals.strip(), chosen, path_version or plan.path_version)
            learner = self._learner(plan.rider_id)
            # Written with the learner, so that a completion recorded meanwhile collides with
            # this revision and is evaluated against the plan's new path version.
            learner.note_growth_plan(growth_plan_id)
            self._advance(plan, current, learner, self.clock())
            return Outcome([plan, learner], {"growth_plan_id": growth_plan_id,
                                             "version": plan.version})
        return self.execute(decide, id_key="growth_plan_id", serialise_on=growth_plan_id)

    def close_growth_plan(self, *, growth_plan_id: str, reason: str,
                          violations: Violations | None = None) -> CommandResult:
        violations = violations if violations is not None else Violations()
        self.note(violations, growth_plan_id, GrowthPlan, "growth_plan", "growth_plan_id")
        check_text(violations, "reason", reason, MAX_CLOSE_REASON, required=False)
        violations.raise_if_any()

        def decide() -> Outcome:
            plan = self.get(growth_plan_id, GrowthPlan, "growth_plan")
            plan.close(reason.strip())
            return Outcome([plan], {"growth_plan_id": growth_plan_id, "version": plan.version})
        return self.execute(decide, id_key="growth_plan_id", serialise_on=growth_plan_id)

    def _plan_input(self, v: Violations, goals: str, tracks: list[Track | None],
                    path: GrowthPath | None, path_version: int) -> None:
        check_text(v, "goals", goals, MAX_GOALS, required=False)
        seen: set[Track] = set()
        for i, track in enumerate(tracks):
            v.require_given(track, f"tracks[{i}]", must_be_specified(Track),
                            ENUM_VALUE_REQUIRED)
            if track is not None and track in seen:
                v.add(f"tracks[{i}]", "chosen twice", DUPLICATE_VALUE)
            if track is not None:
                seen.add(track)
        if path_version < 0 or (path is not None and path_version > path.path_version):
            latest = path.path_version if path is not None else 0
            v.add("path_version", f"0 (the latest) or a version the path has (1 to {latest})",
                  VALUE_OUT_OF_RANGE)

    def growth_plan(self, growth_plan_id: str, version: int | None = None) -> GrowthPlanView:
        plan = self.view(growth_plan_id, GrowthPlan, "growth_plan", version)
        path = self.view(plan.growth_path_id, GrowthPath, "growth_path")
        learner = self.view(Learner.create_id(plan.rider_id), Learner, "rider")
        progress = evaluate_path(path.at(plan.path_version)["steps"], learner.completions,
                                 learner.certified_at)
        return GrowthPlanView(
            growth_plan_id=str(plan.id), rider_id=plan.rider_id,
            growth_path_id=plan.growth_path_id, path_version=plan.path_version,
            goals=plan.goals, tracks=[Track(t) for t in plan.tracks], status=plan.status,
            close_reason=plan.close_reason, opened_by=plan.opened_by,
            opened_at=plan.created_on, progress=progress,
            reached={k: dict(r) for k, r in plan.reached.items()}, version=plan.version)

    def list_growth_plans(self, *, rider_id: str) -> list[GrowthPlanView]:
        violations = Violations()
        self.require_riders(violations, [("rider_id", rider_id)], Learner.create_id,
                            self.catch_up_upstream)
        learner = self.view(Learner.create_id(rider_id), Learner, "rider")
        return [self.growth_plan(p) for p in learner.growth_plans]

    # ------------------------------------------------------------------ evaluation

    def advance_growth_plans(self, learner: Learner, at: datetime) -> list[GrowthPlan]:
        """After the learner's transcript changed (in the same save): the open plans that
        reached a step."""
        moved = []
        for plan_id in learner.growth_plans:
            plan = self.get(plan_id, GrowthPlan, "growth_plan")
            if not plan.is_open:
                continue
            path = self.view(plan.growth_path_id, GrowthPath, "growth_path")
            if self._advance(plan, path, learner, at):
                moved.append(plan)
        return moved

    @staticmethod
    def _advance(plan: GrowthPlan, path: GrowthPath, learner: Learner, at: datetime
                 ) -> list[str]:
        progress = evaluate_path(path.at(plan.path_version)["steps"], learner.completions,
                                 learner.certified_at)
        return plan.advance(progress, learner.certified_at, at)

    # ------------------------------------------------------------------ tenancy

    def _growth_plan_owners(self, growth_plan_id: str) -> Owners | None:
        """A plan is its rider's: their platform's and their home street office's."""
        plan = self.found(growth_plan_id, GrowthPlan)
        if plan is None or self.directory is None:
            return None
        return self.directory.rider_owners(plan.rider_id)
