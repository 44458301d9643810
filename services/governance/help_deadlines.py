"""The deadline scheduler of help requests (帮扶): as reports' (deadlines.py), it finds the
caseworker and outcome deadlines that passed with the work not done and escalates each one
level up the rider's home street's tree exactly once — through the command path, with a request
id made of the assignment and the deadline, so a restart or a second replica stores nothing
twice. A scheduler of its own (its own thread and leadership lock) so that help and reports
never wait on each other's scans."""

from __future__ import annotations

from services.governance.deadlines import DeadlineScheduler, store_each


class HelpDeadlineScheduler(DeadlineScheduler):
    upstream = "help-deadlines"

    def round(self) -> int:
        """Escalates every help deadline missed by now; returns how many it stored."""
        app = self.app
        with self._lock:
            app.help_views.catch_up()
            return store_each(
                app.help_views.due_deadlines(app.clock()),
                lambda h, d, k: app.escalate_missed_help_deadline(
                    help_request_id=h, department_id=d, deadline=k),
                "help_deadline.escalated", "help_deadline.not_due", "help_request_id")
