"""A background job meeting an outage of the store says so once, and once when it is over."""

from __future__ import annotations

from eventsourcing.persistence import OperationalError
from structlog.testing import capture_logs

from shared.store import OutageNotice, StoreUnavailable


def test_an_outage_is_told_once_when_it_starts_and_once_when_it_ends() -> None:
    notice = OutageNotice("sealer")
    with capture_logs() as logs:
        for _tick in range(5):
            notice.failed(OperationalError("connection refused"))
        notice.worked()
        notice.worked()
    assert [(line["event"], line["log_level"]) for line in logs] == [
        ("sealer.store_unavailable", "warning"), ("sealer.store_back", "info")]


def test_an_outage_the_store_gate_already_announced_is_information() -> None:
    notice = OutageNotice("follower", upstream="identity")
    with capture_logs() as logs:
        notice.failed(StoreUnavailable("the event store does not answer"))
    assert [(line["event"], line["log_level"], line["upstream"]) for line in logs] == [
        ("follower.store_unavailable", "info", "identity")]
