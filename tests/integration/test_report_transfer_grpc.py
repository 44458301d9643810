"""Transfer, notes and the rider's rating over the wire, through the real guards, between two
tenants (streets A and B with their departments, platforms A and B): who may do what to whose
report, and what each platform's feed carries."""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc
import pytest
from qiji.governance.v1 import governance_service_pb2 as gpb

from tests.integration.test_tenancy import a_world, platform_feed
from tests.tenancy_world import World, rid


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def tenants(store: str, request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield from a_world(store, request, tmp_path_factory)


def refused_out_of_scope(w: World, rpc: str, request: object, token: str) -> None:
    before = w.qiji.positions()
    answer = w.qiji.call("governance", rpc, request, token)
    assert (answer.code, answer.reason) == (grpc.StatusCode.PERMISSION_DENIED,
                                            "OUT_OF_SCOPE"), (rpc, answer)
    assert w.qiji.positions() == before, f"a refused {rpc} wrote something"


@pytest.mark.postgres
def test_a_report_moves_between_departments_and_its_outcome_back_to_its_rider_only(
        tenants: World) -> None:
    q, a, b = tenants.qiji, tenants.tenants["a"], tenants.tenants["b"]
    dept_a, dept_b = tenants.token("a", "department"), tenants.token("b", "department")
    office_a, office_b = tenants.token("a", "street_office"), tenants.token("b", "street_office")
    platform_a, platform_b = tenants.token("a", "platform"), tenants.token("b", "platform")

    # Another department cannot transfer A's assignment, not even naming A's department.
    for department in (b.department, a.department):
        refused_out_of_scope(tenants, "TransferAssignment", gpb.TransferAssignmentRequest(
            request_id=rid(), report_id=a.report, department_id=department,
            to_department_id=b.department, reason="不是我们的"), dept_b)
    # Nor anyone but the report's own platform rate it, nor another street office assign it.
    refused_out_of_scope(tenants, "AssignReport", gpb.AssignReportRequest(
        report_id=a.report, department_id=b.department, reason="x"), office_b)

    report = q.ok("governance", "TransferAssignment", gpb.TransferAssignmentRequest(
        request_id=rid(), report_id=a.report, department_id=a.department,
        to_department_id=b.department, reason="属B区管辖"), dept_a).report
    statuses = {x.department_id: x.status for x in report.assignments}
    assert statuses == {a.department: gpb.ASSIGNMENT_STATUS_TRANSFERRED,
                        b.department: gpb.ASSIGNMENT_STATUS_ROUTED}
    back = q.call("governance", "TransferAssignment", gpb.TransferAssignmentRequest(
        request_id=rid(), report_id=a.report, department_id=b.department,
        to_department_id=a.department, reason="退回"), dept_b)
    assert (back.code, back.reason) == (grpc.StatusCode.FAILED_PRECONDITION,
                                        "TRANSFER_WOULD_BOUNCE")

    # Both departments (the one that held it, the one that holds it) and A's office share
    # notes; B's office is not on the report.
    for token, text in ((office_a, "请B区尽快处理"), (dept_a, "已电话告知B区"),
                        (dept_b, "已受理")):
        q.ok("governance", "AddReportNote", gpb.AddReportNoteRequest(
            request_id=rid(), report_id=a.report, text=text), token)
    refused_out_of_scope(tenants, "AddReportNote", gpb.AddReportNoteRequest(
        request_id=rid(), report_id=a.report, text="x"), office_b)
    seen = q.ok("governance", "GetReport", gpb.GetReportRequest(report_id=a.report),
                office_a).report
    assert [(n.author_id, n.text) for n in seen.notes] == [
        (a.street, "请B区尽快处理"), (a.department, "已电话告知B区"), (b.department, "已受理")]

    for rpc, request in (
            ("AcknowledgeAssignment", gpb.AcknowledgeAssignmentRequest),
            ("StartAssignmentWork", gpb.StartAssignmentWorkRequest)):
        q.ok("governance", rpc, request(report_id=a.report, department_id=b.department),
             dept_b)
    q.ok("governance", "ResolveAssignment", gpb.ResolveAssignmentRequest(
        report_id=a.report, department_id=b.department, resolution="路面已修复"), dept_b)

    refused_out_of_scope(tenants, "RateReportOutcome", gpb.RateReportOutcomeRequest(
        report_id=a.report, rating=gpb.SATISFACTION_RATING_SATISFIED), platform_b)
    unknown = q.call("governance", "RateReportOutcome", gpb.RateReportOutcomeRequest(
        report_id=a.report, rating=7), platform_a)
    assert (unknown.code, unknown.reason) == (grpc.StatusCode.INVALID_ARGUMENT,
                                              "ENUM_VALUE_UNKNOWN")
    rated = q.ok("governance", "RateReportOutcome", gpb.RateReportOutcomeRequest(
        request_id=rid(), report_id=a.report, rating=gpb.SATISFACTION_RATING_UNSATISFIED,
        comment="还是坑坑洼洼"), platform_a)
    assert rated.reopened and rated.report.status == gpb.REPORT_STATUS_REOPENED
    # The rider's platform reads the outcome and its own rider's words, never the notes.
    assert not rated.report.notes
    assert [x.resolution for x in rated.report.assignments
            if x.department_id == b.department] == ["路面已修复"]
    assert [r.comment for r in rated.report.ratings] == ["还是坑坑洼洼"]

    upheld = q.ok("governance", "UpholdReportOutcome", gpb.UpholdReportOutcomeRequest(
        report_id=a.report, note="复核：已修复"), office_a).report
    assert upheld.status == gpb.REPORT_STATUS_RESOLVED and upheld.rate_until_time.seconds

    ours = [e for e in platform_feed(tenants, a.platform)
            if e["type"].startswith("qiji.governance.v1.Report")]
    assert [e["type"] for e in ours] == ["qiji.governance.v1.ReportClosed",
                                         "qiji.governance.v1.ReportReopened",
                                         "qiji.governance.v1.ReportClosed"]
    first = json.loads(ours[0]["text"])
    assert [r["resolution"] for r in first["resolutions"]] == ["路面已修复"]
    assert all(s not in " ".join(e["text"] for e in ours)
               for s in ("属B区管辖", "已受理", "复核"))
    theirs = " ".join(e["text"] for e in platform_feed(tenants, b.platform))
    assert a.report not in theirs and "路面已修复" not in theirs
