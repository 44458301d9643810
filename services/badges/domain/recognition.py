"""Recognition of riders as the city's partners (城市治理合伙人): a title the city defines, with
requirements it versions, conferred on a rider by their street office (or the city) for a term,
revocable with a reason.

Why not one more badge: a badge says what a rider has done and is awarded the moment its
criteria are met; a partnership is a role the city gives, for a while, to a rider it trusts
to go on serving (a mobile probe, a voice at the street's meetings). So the requirements only
make a rider eligible, an official decides and gives a reason, and the title ends with its
term unless conferred again."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from eventsourcing.domain import Aggregate, event

from services.badges.domain.criteria import Criteria
from shared.errors import FailedPrecondition


class RecognitionTitle(Aggregate):
    """A title such as 城市治理合伙人 and what a rider must meet to be eligible for it.

    `requirements`: {"criteria": Criteria.to_state() (may require nothing of its own),
    "required_badge_class_ids": [...]}; one entry per version, as badge criteria are."""

    if TYPE_CHECKING:  # the event classes @event makes (for readers' isinstance)
        Created: ClassVar[type[Any]]
        Revised: ClassVar[type[Any]]

    @event("Created")
    def __init__(self, name: str, description: str, requirements: dict[str, Any],
                 term_days: int):
        self.name = name
        self.description = description
        self.requirement_versions: list[dict[str, Any]] = [requirements]
        self.term_days = term_days

    @property
    def requirements_version(self) -> int:
        return len(self.requirement_versions)

    def requirements(self, version: int | None = None) -> dict[str, Any]:
        return self.requirement_versions[(version or self.requirements_version) - 1]

    def criteria(self, version: int | None = None) -> Criteria:
        return Criteria.from_state(self.requirements(version)["criteria"])

    @event("Revised")
    def revise(self, requirements: dict[str, Any], term_days: int) -> None:
        # Titles conferred before keep the version they were conferred under, and their term.
        self.requirement_versions.append(requirements)
        self.term_days = term_days


class Recognition(Aggregate):
    """A title conferred on one rider, for a term."""

    if TYPE_CHECKING:  # the event classes @event makes (for readers' isinstance)
        Conferred: ClassVar[type[Any]]
        Revoked: ClassVar[type[Any]]

    @event("Conferred")
    def __init__(self, rider_id: str, title_id: str, requirements_version: int,
                 evidence: list[dict[str, Any]], reason: str, conferred_by: str,
                 conferred_at: datetime, ends_at: datetime):
        self.rider_id = rider_id
        self.title_id = title_id
        self.requirements_version = requirements_version
        self.evidence = evidence
        self.reason = reason
        self.conferred_by = conferred_by
        self.conferred_at = conferred_at
        self.ends_at = ends_at
        self.revoked = False
        self.revoked_at: datetime | None = None
        self.revoke_reason = ""
        self.revoked_by = ""

    def revoke(self, reason: str, by: str, at: datetime) -> None:
        status = self.status_at(at)
        if status != "ACTIVE":
            raise FailedPrecondition(f"the recognition is already {status.lower()}",
                                     reason=f"RECOGNITION_{status}")
        self._revoked(reason=reason, by=by, at=at)

    @event("Revoked")
    def _revoked(self, reason: str, by: str, at: datetime) -> None:
        self.revoked = True
        self.revoked_at = at
        self.revoke_reason = reason
        self.revoked_by = by

    def status_at(self, now: datetime) -> str:
        """ACTIVE during its term, ENDED after it (no event needed: the term was known when
        it was conferred), REVOKED when an official withdrew it."""
        if self.revoked:
            return "REVOKED"
        return "ACTIVE" if now < self.ends_at else "ENDED"
