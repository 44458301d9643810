"""Read models of training, for the list queries: derived from the log, rebuilt at start."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from services.training.domain.growth import GrowthPath
from services.training.domain.model import Course, TrainingSession
from services.training.domain.values import CourseStatus
from shared.views import Index, LogFollower

if TYPE_CHECKING:
    from shared.application import QijiApplication


class _Sessions(Index):
    def page(self, *, course_id: str, service_space_id: str, start_after: datetime | None,
             page_size: int, page_token: str) -> tuple[list[str], str]:
        return self.select({"course_id": course_id, "service_space_id": service_space_id},
                           page_size=page_size, page_token=page_token,
                           extra=(lambda attrs, _id: attrs["starts_at"] >= start_after)
                           if start_after else None,
                           filters=[f"start_after={start_after.isoformat()}"]
                           if start_after else ())


class TrainingViews:
    def __init__(self, app: QijiApplication):
        self.courses = Index()
        self.sessions = _Sessions()
        self.growth_paths = Index()
        self._follower = LogFollower(app, "training", self._apply)

    def catch_up(self) -> int:
        return self._follower.catch_up()

    def _apply(self, position: int, event: Any) -> None:
        ident = str(event.originator_id)
        if isinstance(event, Course.Drafted):
            self.courses.add(position, ident, track=event.track,
                             status=CourseStatus.DRAFT.value)
        elif isinstance(event, Course.Published):
            self.courses.update(ident, status=CourseStatus.PUBLISHED.value)
        elif isinstance(event, Course.Retired):
            self.courses.update(ident, status=CourseStatus.RETIRED.value)
        elif isinstance(event, GrowthPath.Defined):
            self.growth_paths.add(position, ident)
        elif isinstance(event, TrainingSession.Scheduled):
            self.sessions.add(position, ident, course_id=event.course_id,
                              service_space_id=event.service_space_id,
                              starts_at=event.starts_at)
