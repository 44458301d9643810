"""governance's wiring: its access table covers its contract, and its test clock reads a
file."""

from datetime import UTC, datetime, timedelta

import pytest
from qiji.governance.v1 import governance_service_pb2 as pb

from services.governance import service
from services.governance.grpc_api import ACCESS
from shared.auth import DEPARTMENT, PLATFORM, ROLES
from shared.config import ConfigError, load_settings


def test_every_rpc_has_roles_and_only_known_ones():
    methods = pb.DESCRIPTOR.services_by_name["GovernanceService"].methods
    assert set(ACCESS) == {f"/qiji.governance.v1.GovernanceService/{m.name}"
                           for m in methods}
    for path, access in ACCESS.items():
        assert access.roles and access.roles <= ROLES, path
        assert not access.problems(), path


def test_only_departments_work_assignments_and_a_platform_reaches_its_riders_and_the_pledge():
    work = [p for p in ACCESS if p.rsplit("/", 1)[1] in {
        "AcknowledgeAssignment", "StartAssignmentWork", "ResolveAssignment", "RejectAssignment"}]
    assert len(work) == 4 and all(ACCESS[p].roles == {DEPARTMENT} for p in work)
    reachable_by_platform = {p.rsplit("/", 1)[1] for p, access in ACCESS.items()
                             if PLATFORM in access.roles}
    # ... and follows its riders' reports (issue 16, riders as users): reads, never the work.
    # As an organisation it signs the co-building pledge and lists who signed it (issue 22:
    # organisations' signatures only; its riders' are the officials' list).
    # It rates a report's outcome for its rider (issue 17), its one command on a report; and
    # a rider asks help through it, reads the request (the outcome, nothing else said) and
    # rates the outcome (帮扶): never a department's work on it, never its history.
    assert reachable_by_platform == {"SubmitReport", "SignPledge", "GetPledge", "GetReport",
                                     "ListReports", "GetReportHistory",
                                     "SignCoBuildingPledge", "ListPledgeSignatures",
                                     "RateReportOutcome", "RequestHelp", "GetHelpRequest",
                                     "RateHelpOutcome"}
    help_work = [p for p in ACCESS if p.rsplit("/", 1)[1] in {
        "AssignCaseworker", "RecordHelpContact", "RecordHelpReferral", "GiveHelpOutcome"}]
    assert len(help_work) == 4 and all(ACCESS[p].roles == {DEPARTMENT} for p in help_work)


def test_the_file_clock_reads_the_file_on_every_call(tmp_path):
    path = tmp_path / "clock"
    path.write_text("2026-06-05T09:00:00+08:00\n")
    clock = service.FileClock(path)
    assert clock() == datetime(2026, 6, 5, 1, 0, tzinfo=UTC)
    path.write_text("2026-06-05T09:16:00")  # no zone: taken as UTC
    assert clock() - datetime(2026, 6, 5, 9, 0, tzinfo=UTC) == timedelta(minutes=16)


def test_a_malformed_clock_file_stops_the_service_at_start(tmp_path):
    path = tmp_path / "clock"
    path.write_text("next tuesday")
    with pytest.raises(ConfigError):
        service.FileClock(path)
    with pytest.raises(FileNotFoundError):
        service.FileClock(tmp_path / "missing")


def test_without_the_setting_the_real_clock_is_used():
    assert service.clock_from_settings(load_settings("governance", {})) is None


def test_the_clock_file_setting_is_read_like_every_other_setting(tmp_path):
    path = tmp_path / "clock"
    path.write_text("2026-06-05T09:00:00+08:00")
    clock = service.clock_from_settings(
        load_settings("governance", {"GOVERNANCE_CLOCK_FILE": str(path)}))
    assert clock is not None and clock().isoformat() == "2026-06-05T09:00:00+08:00"
