"""Read models of help requests (帮扶): derived from governance's log, rebuilt at start, caught
up before each query. They hold no word of what was said — only facts: which kind, which
department, when, in what state — so statistics and queues can never show content."""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from services.governance.domain.help import HelpRequest
from services.governance.domain.values import (
    DeadlineKind,
    HelpAssignmentStatus,
    HelpStatus,
)
from shared.application import event_metadata
from shared.views import Index, LogFollower

if TYPE_CHECKING:
    from shared.application import QijiApplication


@dataclass
class HelpAssignmentRow:
    status: HelpAssignmentStatus
    due: dict[str, datetime]
    escalated: set[str] = field(default_factory=set)


@dataclass
class HelpRow:
    kind: str
    requested_at: datetime
    correlation_id: str
    status: HelpStatus = HelpStatus.OPEN
    departments: list[str] = field(default_factory=list)
    rating: str = ""


@dataclass(frozen=True)
class HelpStatisticsRow:
    """What one department did with the help requests of one kind made in a period."""

    department_id: str
    kind: str
    assigned: int  # routed or referred to it
    caseworker_assigned: int
    outcomes_given: int
    open: int  # still without its outcome
    escalations: int
    referrals_made: int
    satisfied: int  # riders' ratings of the requests it took part in
    basically_satisfied: int
    unsatisfied: int


class HelpViews:
    def __init__(self, app: QijiApplication):
        self.requests = Index()
        self._lock = threading.RLock()
        self._rows: dict[str, HelpRow] = {}
        self._assignments: dict[tuple[str, str], HelpAssignmentRow] = {}
        self._open: set[tuple[str, str]] = set()
        self._escalations: dict[tuple[str, str], int] = defaultdict(int)
        self._referrals: dict[tuple[str, str], int] = defaultdict(int)
        # Help requests only (governance's log is mostly reports): the rest is checked by the
        # scan but not decoded for this view.
        self._follower = LogFollower(app, "help", self._apply, reads=(HelpRequest.Event,))

    def catch_up(self) -> int:
        return self._follower.catch_up()

    # ------------------------------------------------------------------ queries

    def correlation_id(self, help_request_id: str) -> str:
        with self._lock:
            row = self._rows.get(help_request_id)
            return row.correlation_id if row else ""

    def due_deadlines(self, now: datetime) -> list[tuple[str, str, DeadlineKind]]:
        """(help request, department, deadline) for every deadline past and not escalated,
        the longest overdue first."""
        due: list[tuple[datetime, str, str, DeadlineKind]] = []
        with self._lock:
            for key in self._open:
                row = self._assignments[key]
                for deadline in DeadlineKind:
                    if deadline.value in row.escalated or row.due[deadline.value] > now:
                        continue
                    if (deadline is DeadlineKind.ACKNOWLEDGE
                            and row.status is not HelpAssignmentStatus.ROUTED):
                        continue
                    due.append((row.due[deadline.value], *key, deadline))
        return [(h, d, deadline) for _, h, d, deadline in sorted(due)]

    def statistics(self, *, department_id: str, kind: str, start: datetime | None,
                   end: datetime | None) -> list[HelpStatisticsRow]:
        """Per department and kind, over help requests made in [start, end)."""
        counts: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
        with self._lock:
            for help_id, row in self._rows.items():
                if ((kind and row.kind != kind) or (start and row.requested_at < start)
                        or (end and row.requested_at >= end)):
                    continue
                for dept in row.departments:
                    if department_id and dept != department_id:
                        continue
                    c = counts[(dept, row.kind)]
                    a = self._assignments[(help_id, dept)]
                    c["assigned"] += 1
                    if a.status is not HelpAssignmentStatus.ROUTED:
                        c["caseworker_assigned"] += 1
                    if a.status is HelpAssignmentStatus.OUTCOME_GIVEN:
                        c["outcomes_given"] += 1
                    else:
                        c["open"] += 1
                    c["escalations"] += self._escalations[(help_id, dept)]
                    c["referrals_made"] += self._referrals[(help_id, dept)]
                    if row.rating:
                        c[row.rating] += 1
        return [HelpStatisticsRow(
            department_id=dept, kind=k, assigned=c["assigned"],
            caseworker_assigned=c["caseworker_assigned"], outcomes_given=c["outcomes_given"],
            open=c["open"], escalations=c["escalations"], referrals_made=c["referrals_made"],
            satisfied=c["SATISFIED"], basically_satisfied=c["BASICALLY_SATISFIED"],
            unsatisfied=c["UNSATISFIED"]) for (dept, k), c in sorted(counts.items())]

    # ------------------------------------------------------------------ building

    def _apply(self, position: int, event: Any) -> None:
        if not isinstance(event, HelpRequest.Event):
            return
        with self._lock:
            self._apply_locked(position, event)

    def _apply_locked(self, position: int, event: Any) -> None:
        ident = str(event.originator_id)
        if isinstance(event, HelpRequest.Requested):
            self._rows[ident] = HelpRow(
                kind=event.kind, requested_at=event.requested_at,
                correlation_id=event_metadata(event).get("correlation_id", ""))
            self.requests.add(position, ident, kind=event.kind, rider_id=event.rider_id,
                              home_street_id=event.home_street_id,
                              status=HelpStatus.OPEN.value, department_ids=[])
        elif isinstance(event, HelpRequest.Routed):
            for a in event.assignments:
                self._assign(ident, a["department_id"], a["acknowledge_due"], a["resolve_due"])
        elif isinstance(event, HelpRequest.Referred):
            self._referrals[(ident, event.department_id)] += 1
            self._assign(ident, event.to_department_id, event.acknowledge_due,
                         event.resolve_due)
        elif isinstance(event, HelpRequest.CaseworkerAssigned):
            self._assignments[(ident, event.department_id)].status = \
                HelpAssignmentStatus.CASEWORKER_ASSIGNED
        elif isinstance(event, HelpRequest.OutcomeGiven):
            self._assignments[(ident, event.department_id)].status = \
                HelpAssignmentStatus.OUTCOME_GIVEN
            self._open.discard((ident, event.department_id))
        elif isinstance(event, HelpRequest.Closed):
            self._rows[ident].status = HelpStatus.CLOSED
            self.requests.update(ident, status=HelpStatus.CLOSED.value)
        elif isinstance(event, HelpRequest.Rated):
            self._rows[ident].rating = event.rating
        elif isinstance(event, HelpRequest.Escalated):
            self._assignments[(ident, event.department_id)].escalated.add(event.deadline)
            self._escalations[(ident, event.department_id)] += 1

    def _assign(self, ident: str, department_id: str, acknowledge_due: datetime,
                resolve_due: datetime) -> None:
        row = self._rows[ident]
        row.departments.append(department_id)
        self._assignments[(ident, department_id)] = HelpAssignmentRow(
            status=HelpAssignmentStatus.ROUTED,
            due={DeadlineKind.ACKNOWLEDGE.value: acknowledge_due,
                 DeadlineKind.RESOLVE.value: resolve_due})
        self._open.add((ident, department_id))
        # Who the request is given to decides which departments see it in lists.
        self.requests.update(ident, department_ids=list(row.departments))
