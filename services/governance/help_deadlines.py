"""The deadline scheduler of help requests (帮扶): as reports' (deadlines.py), it finds the
caseworker and outcome deadlines that passed with the work not done and escalates each one
level up the rider's home street's tree exactly once — through the command path, with a request
id made of the assignment and the deadline, so a restart or a second replica stores nothing
twice. A scheduler of its own (its own thread and leadership lock) so that help and reports
never wait on each other's scans."""

from __future__ import annotations

import structlog

from services.governance.deadlines import DeadlineScheduler
from shared.errors import FailedPrecondition

log = structlog.get_logger(__name__)


class HelpDeadlineScheduler(DeadlineScheduler):
    upstream = "help-deadlines"

    def run_once(self) -> int:
        """Escalates every help deadline missed by now; returns how many it stored."""
        stored = 0
        with self._lock:
            self.app.help_views.catch_up()
            for help_id, department_id, deadline in self.app.help_views.due_deadlines(
                    self.app.clock()):
                try:
                    self.app.escalate_missed_help_deadline(
                        help_request_id=help_id, department_id=department_id,
                        deadline=deadline)
                except FailedPrecondition as refused:
                    # Done (or escalated by another replica) since the view was read.
                    log.info("help_deadline.not_due", help_request_id=help_id,
                             department_id=department_id, deadline=deadline.value,
                             reason=refused.reason)
                    continue
                stored += 1
                log.info("help_deadline.escalated", help_request_id=help_id,
                         department_id=department_id, deadline=deadline.value)
        return stored
