"""The deadline scheduler: finds acknowledgement and resolution deadlines whose clocks ran
their at-risk share (marking each at risk once) or passed with the work still not done
(escalating each one level up the tree exactly once). Paused clocks are skipped.

It keeps no timers and no state of its own. What is due is read from the service's views,
which are rebuilt from the log at start, and each escalation goes through the normal command
path with a request id made from the assignment and the deadline. So a restart, a crash between
a save and the next look, or a second replica finds the escalation already stored and stores
nothing twice; a deadline that passed while the process was down is escalated on the first
pass after it starts."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import structlog

from services.governance.domain.values import DeadlineKind
from shared.background import PeriodicJob
from shared.errors import FailedPrecondition

if TYPE_CHECKING:
    from services.governance.application import GovernanceApplication

log = structlog.get_logger(__name__)

DEFAULT_POLL_SECONDS = 1.0


class DeadlineScheduler(PeriodicJob["GovernanceApplication"]):
    """A periodic job (shared/background.py): the server factory runs it in a background thread
    beside the followers and stops it with them. One replica escalates at a time (its
    leadership lock is named by `upstream`), from its first look at start."""

    upstream = "deadlines"
    job = "deadline"
    led = at_start = True

    def __init__(self, app: GovernanceApplication,
                 poll_seconds: float = DEFAULT_POLL_SECONDS):
        super().__init__(app, poll_seconds)
        self._lock = threading.Lock()

    def round(self) -> int:
        """Marks every deadline at risk by now, and escalates every one missed by now;
        returns how many events it stored."""
        app = self.app
        with self._lock:
            app.views.catch_up()
            stored = store_each(
                app.views.at_risk_deadlines(app.clock()),
                lambda r, d, k: app.mark_deadline_at_risk(report_id=r, department_id=d,
                                                          deadline=k),
                "deadline.at_risk", "deadline.not_at_risk")
            return stored + store_each(
                app.views.due_deadlines(app.clock()),
                lambda r, d, k: app.escalate_missed_deadline(report_id=r, department_id=d,
                                                             deadline=k),
                "deadline.escalated", "deadline.not_due")


def store_each(found: Iterable[tuple[str, str, DeadlineKind]],
               store: Callable[[str, str, DeadlineKind], object], stored_event: str,
               refused_event: str, id_field: str = "report_id") -> int:
    """Stores, through the command path, one event for each (case id, department, deadline)
    found in a view; returns how many it stored. One the aggregate refuses was done (or stored
    by another replica) after the view was read: the aggregate decided, nothing is due."""
    stored = 0
    for case_id, department_id, deadline in found:
        fields = {id_field: case_id, "department_id": department_id,
                  "deadline": deadline.value}
        try:
            store(case_id, department_id, deadline)
        except FailedPrecondition as refused:
            log.info(refused_event, **fields, reason=refused.reason)
            continue
        stored += 1
        log.info(stored_event, **fields)
    return stored
