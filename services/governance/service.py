"""What makes governance a Qiji service: its application, servicers, roles, the follower of
identity's feed and the deadline scheduler."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from services.governance.application import GovernanceApplication
from services.governance.deadlines import DeadlineScheduler
from services.governance.grpc_api import ACCESS, add_servicers
from services.governance.help_deadlines import HelpDeadlineScheduler
from services.governance.public_events import CATALOGUE as PUBLIC_EVENTS
from shared.config import ConfigError, Settings
from shared.followers import FeedSource
from shared.grpc.server import ServiceSpec

log = structlog.get_logger(__name__)

# FOR TESTS AND DRILLS ONLY: a file holding an ISO-8601 time that the service takes for "now",
# read again on every look at the clock, so a test (or an operators' drill of escalations) can
# move time forward without waiting 15 minutes. Never set it in production: deadlines and
# every recorded time would follow the file.
CLOCK_FILE_SETTING = "GOVERNANCE_CLOCK_FILE"


class FileClock:
    """The time taken for "now", read from a file (tests and drills only; see
    CLOCK_FILE_SETTING)."""

    def __init__(self, path: Path):
        self.path = path
        self()  # a missing or malformed file stops the process at start, not at a request

    def __call__(self) -> datetime:
        text = self.path.read_text().strip()
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            raise ConfigError(f"{CLOCK_FILE_SETTING} {self.path}: not an ISO-8601 time: "
                              f"{text[:40]!r}") from None
        return when if when.tzinfo else when.replace(tzinfo=UTC)


def clock_from_settings(settings: Settings) -> Callable[[], datetime] | None:
    path: Path | None = settings.own_setting("CLOCK_FILE")
    if path is None:
        return None
    log.warning("clock.from_file", path=str(path),
                note="for tests and drills only: time is read from this file")
    return FileClock(path)


def make_app(settings: Settings, master_key: bytes, *,
             feeds: FeedSource | None = None) -> GovernanceApplication:
    return GovernanceApplication(settings, master_key, clock=clock_from_settings(settings),
                                 feeds=feeds)


def make_followers(app: GovernanceApplication, settings: Settings) -> list[Any]:
    """The follower of identity's feed and the directory the application made, and the
    deadline schedulers (reports', help requests'): periodic jobs run beside them."""
    # Checked at start with every other setting (shared/config.py OWN_SETTINGS).
    poll: float = settings.own_setting("DEADLINE_POLL_SECONDS")
    return [app.identity_follower, app.directory, DeadlineScheduler(app, poll_seconds=poll),
            HelpDeadlineScheduler(app, poll_seconds=poll)]


SPEC = ServiceSpec(name="governance", make_app=make_app, add_servicers=add_servicers,
                   access=ACCESS, make_followers=make_followers,
                   public_events=PUBLIC_EVENTS)
