"""governance's gRPC entry point: translate the request, call one application method, render the
answer. Rules live in the domain and the application, roles and tenancy scopes in ACCESS below."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration
from qiji.governance.v1 import governance_service_pb2 as pb
from qiji.governance.v1 import governance_service_pb2_grpc as pb_grpc

from services.governance.application import (
    CategoryClockInput,
    DeadlineInput,
    GovernanceApplication,
    MediationCaseView,
    MediationPolicyView,
    Party,
    PledgeView,
    ReportView,
    RoutingRulesView,
    RuleInput,
    ServiceRatesView,
    SessionInput,
    SignatureEntry,
    WorkingCalendarView,
)
from services.governance.domain.values import (
    Category,
    DepartmentFunction,
    FollowUpResult,
    Location,
    MediationStatus,
    PartyRole,
    PauseReason,
    PledgeKind,
    RejectionReason,
    ReportKind,
    ReportStatus,
    SatisfactionRating,
)
from services.governance.help_grpc import HelpServicer
from services.governance.history import HistoryEntry
from services.governance.views import MediationStatisticsRow, QueueEntry, StatisticsRow
from shared.application import CommandResult
from shared.auth import (
    CITY_ADMIN,
    DEPARTMENT,
    ROLES,
    STREET_OFFICE,
)
from shared.errors import Violations
from shared.grpc.convert import enum_in, enum_out, optional_time, timestamp
from shared.tenancy import (
    CITY_READERS,
    RIDER,
    Ref,
    Rows,
    access_table,
    city_wide,
    each,
    once,
    public,
    scoped,
)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["GovernanceService"].full_name

# A report is its street office's (where it happened), each assigned department's, and the
# reporting rider's platform's.
REPORT = Ref("report_id", "report")
REPORT_ROWS = Rows("organisation", "street_id")
ASSIGNED_ROWS = Rows("organisation", "department_ids")
# The department a request names is the caller itself.
DEPARTMENT_ITSELF = Ref("department_id", "organisation")
# A mediation case is the street office's that opened it.
CASE = Ref("case_id", "mediation_case")

# The organisation a co-building signature is for: the caller itself, or its street office.
SIGNER = Ref("organisation_id", "organisation")
PLEDGE_SIGNER_ROWS = Rows("pledge_signer", "signer")

# A help request (帮扶) is each department's it was given to, the rider's home street office's
# and the rider's platform's (GovernanceApplication._help_request_owners).
HELP_REQUEST = Ref("help_request_id", "help_request")
HELP_ROWS = Rows("organisation", "department_ids")

# Who may call each RPC, and for each role that acts for one organisation, what that
# organisation must own (shared/tenancy.py). An RPC missing here is refused to everyone.
ACCESS = access_table(SERVICE_NAME, {
    # Riders report through their platform's app, or at a street office's counter (their
    # own street's, or the street where it happened).
    "SubmitReport": once(scoped(platform=RIDER,
                           street_office=RIDER | Ref("location.street_id", "organisation"))),
    # The rider follows their own reports in the platform's app: the platform reads its own
    # riders' reports, and lists them one rider at a time (rider_id is its own rider's).
    "GetReport": scoped(CITY_READERS, department=REPORT, street_office=REPORT, platform=REPORT),
    "ListReports": scoped(CITY_READERS, department=ASSIGNED_ROWS, street_office=REPORT_ROWS,
                          platform=RIDER),
    "GetReportHistory": scoped(CITY_READERS, department=REPORT, street_office=REPORT,
                               platform=REPORT),
    # A department works only its own assignments, as itself.
    "AcknowledgeAssignment": scoped(department=DEPARTMENT_ITSELF & REPORT),
    "StartAssignmentWork": scoped(department=DEPARTMENT_ITSELF & REPORT),
    "ResolveAssignment": scoped(department=DEPARTMENT_ITSELF & REPORT),
    "RejectAssignment": scoped(department=DEPARTMENT_ITSELF & REPORT),
    "PauseAssignmentClock": scoped(department=DEPARTMENT_ITSELF & REPORT),
    "ResumeAssignmentClock": scoped(department=DEPARTMENT_ITSELF & REPORT),
    # The street office where it happened vouches for the resolution.
    "VerifyReport": scoped(street_office=REPORT),
    # A department transfers only its own assignment, as itself; the receiver may be any
    # department of the city (the application checks it is one).
    "TransferAssignment": scoped(department=DEPARTMENT_ITSELF & REPORT),
    # The street office gives its report to any department (and so sees every transfer back),
    # and reviews a reopened report.
    "AssignReport": scoped(street_office=REPORT),
    "UpholdReportOutcome": scoped(street_office=REPORT),
    # Departments that hold or held an assignment of the report (the report's owners) and its
    # street office share notes; each call adds one.
    "AddReportNote": once(scoped(department=REPORT, street_office=REPORT)),
    # The rider rates the outcome through their own platform, and only it.
    "RateReportOutcome": scoped(platform=REPORT),
    "ListDepartmentQueue": scoped(CITY_READERS, department=DEPARTMENT_ITSELF),
    "GetReportStatistics": scoped(CITY_READERS,
                                  street_office=Ref("street_id", "organisation")),
    # The three rates: a department its own, a street office its own street's; a district has
    # no token of its own (no role acts for one), so its figures are the city-wide readers'.
    # Each tenant role names its own unit in its own field (left empty: FIELD_REQUIRED).
    "GetServiceRates": scoped(CITY_READERS, department=DEPARTMENT_ITSELF,
                              street_office=Ref("street_id", "organisation")),
    "SetRoutingRules": city_wide(CITY_ADMIN),
    # The rules are the city's configuration, read by its officials.
    "GetRoutingRules": public(CITY_READERS, STREET_OFFICE, DEPARTMENT),
    "SetWorkingCalendar": city_wide(CITY_ADMIN),
    # Read as the routing rules: departments see when their clocks run.
    "GetWorkingCalendar": public(CITY_READERS, STREET_OFFICE, DEPARTMENT),
    # The case's street, and the report it follows from (if it names one), are the office's.
    "OpenMediationCase": once(scoped(street_office=Ref("street_id", "organisation")
                                & Ref("report_id", "report", optional=True))),
    "RecordMediationSession": once(scoped(street_office=CASE)),
    "RecordMediationAgreement": scoped(street_office=CASE),
    "RecordMediationFailure": scoped(street_office=CASE),
    "GetMediationCase": scoped(CITY_READERS, street_office=CASE),
    "ListMediationCases": scoped(CITY_READERS, street_office=REPORT_ROWS),
    # The office that mediated follows the agreement up; every follow-up counts, so each
    # carries a request id.
    "RecordMediationFollowUp": once(scoped(street_office=CASE)),
    "SetMediationPolicy": city_wide(CITY_ADMIN),
    # The city's configuration, read by its officials (as the routing rules).
    "GetMediationPolicy": public(CITY_READERS, STREET_OFFICE),
    # Counts only, no party: a street office its own street, the city every street.
    "GetMediationStatistics": scoped(CITY_READERS,
                                     street_office=Ref("street_id", "organisation")),
    "PublishPledge": once(city_wide(CITY_ADMIN)),
    # The platform shows riders the text they sign.
    "GetPledge": public(ROLES),
    "SignPledge": scoped(platform=RIDER, street_office=RIDER),
    # An organisation signs the co-building pledge by its own token; a street office for its
    # street, and for the communities, merchants and business areas of its street (a
    # community's committee signs at the street office's counter; a business area has no
    # token of its own); the city admin in anyone's stead.
    "SignCoBuildingPledge": scoped(CITY_ADMIN, tenants=each(SIGNER)),
    # Organisations' signatures are public; riders' are the officials': the city-wide
    # readers, and each street office its own residents' (PLEDGE_SIGNER_ROWS, resolved by
    # the application's "pledge_signer" owners).
    "ListPledgeSignatures": scoped(CITY_READERS, tenants=each(PLEDGE_SIGNER_ROWS)),
    # Help requests (帮扶): the rider asks through their platform's app, or at their home
    # street office's counter.
    "RequestHelp": once(scoped(platform=RIDER, street_office=RIDER)),
    # What was said is shown as the masking table says (HELP_TEXT, HELP_OUTCOME): the street
    # office and the platform read the facts (the platform the outcome too).
    "GetHelpRequest": scoped(CITY_READERS, department=HELP_REQUEST,
                             street_office=HELP_REQUEST, platform=HELP_REQUEST),
    # A department's queue; the city-wide readers every request.
    "ListHelpRequests": scoped(CITY_READERS, department=HELP_ROWS),
    "GetHelpRequestHistory": scoped(CITY_READERS, department=HELP_REQUEST),
    # A department works only the requests given to it, as itself.
    "AssignCaseworker": scoped(department=DEPARTMENT_ITSELF & HELP_REQUEST),
    "RecordHelpContact": once(scoped(department=DEPARTMENT_ITSELF & HELP_REQUEST)),
    "RecordHelpReferral": once(scoped(department=DEPARTMENT_ITSELF & HELP_REQUEST)),
    "GiveHelpOutcome": scoped(department=DEPARTMENT_ITSELF & HELP_REQUEST),
    # The rider rates where they asked: through their platform, or at their street office's
    # counter (the application holds them to it: RATE_WHERE_ASKED).
    "RateHelpOutcome": scoped(platform=HELP_REQUEST, street_office=HELP_REQUEST),
    # Counts only: a department its own, the city every department.
    "GetHelpStatistics": scoped(CITY_READERS, department=DEPARTMENT_ITSELF),
    "SetHelpRouting": city_wide(CITY_ADMIN),
    # The city's configuration, read by its officials (as the routing rules).
    "GetHelpRouting": public(CITY_READERS, STREET_OFFICE, DEPARTMENT),
})


class GovernanceServicer(HelpServicer, pb_grpc.GovernanceServiceServicer):
    def __init__(self, app: GovernanceApplication):
        self.app = app

    # ------------------------------------------------------------------ reports

    def SubmitReport(self, request: pb.SubmitReportRequest, context: grpc.ServicerContext
                     ) -> pb.SubmitReportResponse:
        violations = Violations()  # reported with the application's findings, in one answer
        location = None
        if request.HasField("location"):
            location = Location(request.location.street_id, request.location.latitude,
                                request.location.longitude)
        result = self.app.submit_report(
            rider_id=request.rider_id,
            kind=enum_in(request.kind, pb.ReportKind, ReportKind, violations, "kind"),
            category=enum_in(request.category, pb.Category, Category, violations, "category"),
            location=location, text=request.text, attachment_refs=list(request.attachment_refs),
            observed_at=optional_time(request, "observe_time", violations),
            violations=violations)
        return pb.SubmitReportResponse(report=self._report_at(result))

    def GetReport(self, request: pb.GetReportRequest, context: grpc.ServicerContext
                  ) -> pb.GetReportResponse:
        return pb.GetReportResponse(report=self._report(self.app.report(request.report_id)))

    def ListReports(self, request: pb.ListReportsRequest, context: grpc.ServicerContext
                    ) -> pb.ListReportsResponse:
        violations = Violations()
        found, token = self.app.list_reports(
            street_id=request.street_id,
            kind=enum_in(request.kind, pb.ReportKind, ReportKind, violations, "kind"),
            status=enum_in(request.status, pb.ReportStatus, ReportStatus, violations, "status"),
            rider_id=request.rider_id, page_size=request.page_size,
            page_token=request.page_token, violations=violations)
        return pb.ListReportsResponse(reports=[self._report(r) for r in found],
                                      next_page_token=token)

    def GetReportHistory(self, request: pb.GetReportHistoryRequest, context: grpc.ServicerContext
                         ) -> pb.GetReportHistoryResponse:
        entries = self.app.report_history(request.report_id)
        return pb.GetReportHistoryResponse(report_id=request.report_id,
                                           entries=[self._history(e) for e in entries])

    # ------------------------------------------------------------------ departments' work

    def AcknowledgeAssignment(self, request: pb.AcknowledgeAssignmentRequest,
                              context: grpc.ServicerContext) -> pb.AcknowledgeAssignmentResponse:
        result = self.app.acknowledge_assignment(
            report_id=request.report_id, department_id=request.department_id)
        return pb.AcknowledgeAssignmentResponse(report=self._report_at(result))

    def StartAssignmentWork(self, request: pb.StartAssignmentWorkRequest,
                            context: grpc.ServicerContext) -> pb.StartAssignmentWorkResponse:
        result = self.app.start_assignment_work(
            report_id=request.report_id, department_id=request.department_id,
            note=request.note)
        return pb.StartAssignmentWorkResponse(report=self._report_at(result))

    def ResolveAssignment(self, request: pb.ResolveAssignmentRequest, context: grpc.ServicerContext
                          ) -> pb.ResolveAssignmentResponse:
        result = self.app.resolve_assignment(
            report_id=request.report_id, department_id=request.department_id,
            resolution=request.resolution)
        return pb.ResolveAssignmentResponse(report=self._report_at(result))

    def RejectAssignment(self, request: pb.RejectAssignmentRequest, context: grpc.ServicerContext
                         ) -> pb.RejectAssignmentResponse:
        violations = Violations()
        result = self.app.reject_assignment(
            report_id=request.report_id, department_id=request.department_id,
            reason=enum_in(request.reason, pb.RejectionReason, RejectionReason, violations,
                           "reason"),
            note=request.note, violations=violations)
        return pb.RejectAssignmentResponse(report=self._report_at(result))

    def PauseAssignmentClock(self, request: pb.PauseAssignmentClockRequest,
                             context: grpc.ServicerContext) -> pb.PauseAssignmentClockResponse:
        violations = Violations()
        result = self.app.pause_assignment_clock(
            report_id=request.report_id, department_id=request.department_id,
            reason=enum_in(request.reason, pb.PauseReason, PauseReason, violations, "reason"),
            note=request.note, violations=violations)
        return pb.PauseAssignmentClockResponse(report=self._report_at(result))

    def ResumeAssignmentClock(self, request: pb.ResumeAssignmentClockRequest,
                              context: grpc.ServicerContext) -> pb.ResumeAssignmentClockResponse:
        result = self.app.resume_assignment_clock(
            report_id=request.report_id, department_id=request.department_id)
        return pb.ResumeAssignmentClockResponse(report=self._report_at(result))

    def VerifyReport(self, request: pb.VerifyReportRequest, context: grpc.ServicerContext
                     ) -> pb.VerifyReportResponse:
        result = self.app.verify_report(report_id=request.report_id, note=request.note)
        return pb.VerifyReportResponse(report=self._report_at(result))

    def TransferAssignment(self, request: pb.TransferAssignmentRequest,
                           context: grpc.ServicerContext) -> pb.TransferAssignmentResponse:
        result = self.app.transfer_assignment(
            report_id=request.report_id, department_id=request.department_id,
            to_department_id=request.to_department_id, reason=request.reason)
        return pb.TransferAssignmentResponse(report=self._report_at(result))

    def AssignReport(self, request: pb.AssignReportRequest, context: grpc.ServicerContext
                     ) -> pb.AssignReportResponse:
        result = self.app.assign_report(report_id=request.report_id,
                                        department_id=request.department_id,
                                        reason=request.reason)
        return pb.AssignReportResponse(report=self._report_at(result))

    def AddReportNote(self, request: pb.AddReportNoteRequest, context: grpc.ServicerContext
                      ) -> pb.AddReportNoteResponse:
        result = self.app.add_report_note(report_id=request.report_id, text=request.text)
        return pb.AddReportNoteResponse(report=self._report_at(result))

    def RateReportOutcome(self, request: pb.RateReportOutcomeRequest, context: grpc.ServicerContext
                          ) -> pb.RateReportOutcomeResponse:
        violations = Violations()
        result = self.app.rate_report_outcome(
            report_id=request.report_id,
            rating=enum_in(request.rating, pb.SatisfactionRating, SatisfactionRating, violations,
                           "rating"),
            comment=request.comment, violations=violations)
        return pb.RateReportOutcomeResponse(report=self._report_at(result),
                                            reopened=result["reopened"])

    def UpholdReportOutcome(self, request: pb.UpholdReportOutcomeRequest,
                            context: grpc.ServicerContext) -> pb.UpholdReportOutcomeResponse:
        result = self.app.uphold_report_outcome(report_id=request.report_id,
                                                note=request.note)
        return pb.UpholdReportOutcomeResponse(report=self._report_at(result))

    # ------------------------------------------------------------------ queue, statistics

    def ListDepartmentQueue(self, request: pb.ListDepartmentQueueRequest,
                            context: grpc.ServicerContext) -> pb.ListDepartmentQueueResponse:
        found, token = self.app.department_queue(department_id=request.department_id,
                                                 page_size=request.page_size,
                                                 page_token=request.page_token)
        return pb.ListDepartmentQueueResponse(entries=[self._queue_entry(e) for e in found],
                                              next_page_token=token)

    def GetReportStatistics(self, request: pb.GetReportStatisticsRequest,
                            context: grpc.ServicerContext) -> pb.GetReportStatisticsResponse:
        violations = Violations()
        rows = self.app.report_statistics(
            street_id=request.street_id,
            kind=enum_in(request.kind, pb.ReportKind, ReportKind, violations, "kind"),
            start=optional_time(request, "start_time", violations),
            end=optional_time(request, "end_time", violations), violations=violations)
        return pb.GetReportStatisticsResponse(statistics=[self._statistics(r) for r in rows])

    def GetServiceRates(self, request: pb.GetServiceRatesRequest, context: grpc.ServicerContext
                        ) -> pb.GetServiceRatesResponse:
        violations = Violations()
        found = self.app.service_rates(
            department_id=request.department_id, street_id=request.street_id,
            district_id=request.district_id,
            start=optional_time(request, "start_time", violations),
            end=optional_time(request, "end_time", violations),
            as_of=optional_time(request, "as_of_time", violations), violations=violations)
        return pb.GetServiceRatesResponse(service_rates=_service_rates(found))

    # ------------------------------------------------------------------ routing rules

    def SetRoutingRules(self, request: pb.SetRoutingRulesRequest, context: grpc.ServicerContext
                        ) -> pb.SetRoutingRulesResponse:
        # A rule's kind or category *_UNSPECIFIED matches any (the contract says so); a number
        # the contract does not define is refused, never taken for "any".
        violations = Violations()
        rules = [RuleInput(
            name=r.name,
            kind=enum_in(r.kind, pb.ReportKind, ReportKind, violations, f"rules[{i}].kind"),
            category=enum_in(r.category, pb.Category, Category, violations,
                             f"rules[{i}].category"),
            street_id=r.street_id,
            department_functions=[
                enum_in(f, pb.DepartmentFunction, DepartmentFunction, violations,
                        f"rules[{i}].department_functions[{j}]")
                for j, f in enumerate(r.department_functions)],
            department_ids=list(r.department_ids)) for i, r in enumerate(request.rules)]
        deadlines = [DeadlineInput(
            kind=enum_in(d.kind, pb.ReportKind, ReportKind, violations, f"deadlines[{i}].kind"),
            acknowledge_within=_timedelta(d, "acknowledge_within"),
            resolve_within=_timedelta(d, "resolve_within"))
            for i, d in enumerate(request.deadlines)]
        category_deadlines = [CategoryClockInput(
            category=enum_in(c.category, pb.Category, Category, violations,
                             f"category_deadlines[{i}].category"),
            acknowledge_within=_timedelta(c, "acknowledge_within"),
            resolve_within=_timedelta(c, "resolve_within"),
            around_the_clock=c.around_the_clock)
            for i, c in enumerate(request.category_deadlines)]
        result = self.app.set_routing_rules(rules=rules, deadlines=deadlines,
                                            category_deadlines=category_deadlines,
                                            at_risk_percent=request.at_risk_percent,
                                            violations=violations)
        return pb.SetRoutingRulesResponse(
            routing_rules=self._rules(self.app.routing_rules(result.version)))

    def GetRoutingRules(self, request: pb.GetRoutingRulesRequest, context: grpc.ServicerContext
                        ) -> pb.GetRoutingRulesResponse:
        return pb.GetRoutingRulesResponse(
            routing_rules=self._rules(self.app.routing_rules(request.version)))

    # ------------------------------------------------------------------ working calendar

    def SetWorkingCalendar(self, request: pb.SetWorkingCalendarRequest,
                           context: grpc.ServicerContext) -> pb.SetWorkingCalendarResponse:
        result = self.app.set_working_calendar(
            spans=[(h.start, h.end) for h in request.working_hours],
            weekdays=list(request.working_weekdays), holidays=list(request.holidays),
            working_days=list(request.adjusted_working_days))
        return pb.SetWorkingCalendarResponse(
            working_calendar=_calendar(self.app.working_calendar(result.version)))

    def GetWorkingCalendar(self, request: pb.GetWorkingCalendarRequest,
                           context: grpc.ServicerContext) -> pb.GetWorkingCalendarResponse:
        return pb.GetWorkingCalendarResponse(
            working_calendar=_calendar(self.app.working_calendar(request.version)))

    # ------------------------------------------------------------------ mediation

    def OpenMediationCase(self, request: pb.OpenMediationCaseRequest, context: grpc.ServicerContext
                          ) -> pb.OpenMediationCaseResponse:
        violations = Violations()
        result = self.app.open_mediation_case(
            street_id=request.street_id, report_id=request.report_id, subject=request.subject,
            mediator_name=request.mediator_name,
            parties=[Party(role=enum_in(p.role, pb.PartyRole, PartyRole, violations,
                                        f"parties[{i}].role"), name=p.name, rider_id=p.rider_id)
                     for i, p in enumerate(request.parties)], violations=violations)
        return pb.OpenMediationCaseResponse(mediation_case=self._case_at(result))

    def RecordMediationSession(self, request: pb.RecordMediationSessionRequest,
                               context: grpc.ServicerContext) -> pb.RecordMediationSessionResponse:
        violations = Violations()
        session = None
        if request.HasField("session"):
            session = SessionInput(
                held_at=optional_time(request.session, "hold_time", violations,
                                      path="session.hold_time"),
                place=request.session.place, notes=request.session.notes)
        result = self.app.record_mediation_session(case_id=request.case_id, session=session,
                                                   violations=violations)
        return pb.RecordMediationSessionResponse(mediation_case=self._case_at(result))

    def RecordMediationAgreement(self, request: pb.RecordMediationAgreementRequest,
                                 context: grpc.ServicerContext
                                 ) -> pb.RecordMediationAgreementResponse:
        result = self.app.record_mediation_agreement(
            case_id=request.case_id, outcome=request.outcome)
        return pb.RecordMediationAgreementResponse(mediation_case=self._case_at(result))

    def RecordMediationFailure(self, request: pb.RecordMediationFailureRequest,
                               context: grpc.ServicerContext) -> pb.RecordMediationFailureResponse:
        result = self.app.record_mediation_failure(
            case_id=request.case_id, reason=request.reason)
        return pb.RecordMediationFailureResponse(mediation_case=self._case_at(result))

    def RecordMediationFollowUp(self, request: pb.RecordMediationFollowUpRequest,
                                context: grpc.ServicerContext
                                ) -> pb.RecordMediationFollowUpResponse:
        violations = Violations()
        result = self.app.record_mediation_follow_up(
            case_id=request.case_id, day=request.day,
            result=enum_in(request.result, pb.FollowUpResult, FollowUpResult, violations,
                           "result"),
            note=request.note, reopen=request.reopen, violations=violations)
        return pb.RecordMediationFollowUpResponse(mediation_case=self._case_at(result))

    def SetMediationPolicy(self, request: pb.SetMediationPolicyRequest,
                           context: grpc.ServicerContext) -> pb.SetMediationPolicyResponse:
        result = self.app.set_mediation_policy(follow_up_days=request.follow_up_days)
        return pb.SetMediationPolicyResponse(
            mediation_policy=_policy(self.app.mediation_policy(result.version)))

    def GetMediationPolicy(self, request: pb.GetMediationPolicyRequest,
                           context: grpc.ServicerContext) -> pb.GetMediationPolicyResponse:
        return pb.GetMediationPolicyResponse(
            mediation_policy=_policy(self.app.mediation_policy(request.version)))

    def GetMediationStatistics(self, request: pb.GetMediationStatisticsRequest,
                               context: grpc.ServicerContext) -> pb.GetMediationStatisticsResponse:
        violations = Violations()
        rows = self.app.mediation_statistics(
            street_id=request.street_id,
            start=optional_time(request, "start_time", violations),
            end=optional_time(request, "end_time", violations), violations=violations)
        return pb.GetMediationStatisticsResponse(statistics=[_mediation_row(r) for r in rows])

    def GetMediationCase(self, request: pb.GetMediationCaseRequest, context: grpc.ServicerContext
                         ) -> pb.GetMediationCaseResponse:
        return pb.GetMediationCaseResponse(
            mediation_case=self._case(self.app.mediation_case(request.case_id)))

    def ListMediationCases(self, request: pb.ListMediationCasesRequest,
                           context: grpc.ServicerContext) -> pb.ListMediationCasesResponse:
        violations = Violations()
        found, token = self.app.list_mediation_cases(
            street_id=request.street_id,
            status=enum_in(request.status, pb.MediationStatus, MediationStatus, violations,
                           "status"),
            page_size=request.page_size, page_token=request.page_token, violations=violations)
        return pb.ListMediationCasesResponse(mediation_cases=[self._case(c) for c in found],
                                             next_page_token=token)

    # ------------------------------------------------------------------ pledge

    def PublishPledge(self, request: pb.PublishPledgeRequest, context: grpc.ServicerContext
                      ) -> pb.PublishPledgeResponse:
        violations = Violations()
        kind = enum_in(request.kind, pb.PledgeKind, PledgeKind, violations, "kind")
        result = self.app.publish_pledge(text=request.text, kind=kind, violations=violations)
        return pb.PublishPledgeResponse(
            pledge=self._pledge(self.app.pledge(result["pledge_version"], kind)))

    def GetPledge(self, request: pb.GetPledgeRequest, context: grpc.ServicerContext
                  ) -> pb.GetPledgeResponse:
        violations = Violations()
        kind = enum_in(request.kind, pb.PledgeKind, PledgeKind, violations, "kind")
        return pb.GetPledgeResponse(pledge=self._pledge(
            self.app.pledge(request.version, kind, violations)))

    def SignCoBuildingPledge(self, request: pb.SignCoBuildingPledgeRequest,
                             context: grpc.ServicerContext) -> pb.SignCoBuildingPledgeResponse:
        result = self.app.sign_co_building_pledge(organisation_id=request.organisation_id,
                                                  pledge_version=request.pledge_version)
        return pb.SignCoBuildingPledgeResponse(signature=self._signature(
            self.app.co_building_signature(result.id, result["pledge_version"],
                                           result.version)))

    def ListPledgeSignatures(self, request: pb.ListPledgeSignaturesRequest,
                             context: grpc.ServicerContext) -> pb.ListPledgeSignaturesResponse:
        violations = Violations()
        found, token = self.app.list_pledge_signatures(
            kind=enum_in(request.pledge_kind, pb.PledgeKind, PledgeKind, violations,
                         "pledge_kind"),
            pledge_version=request.pledge_version, page_size=request.page_size,
            page_token=request.page_token, violations=violations)
        return pb.ListPledgeSignaturesResponse(signatures=[self._signature(e) for e in found],
                                               next_page_token=token)

    def SignPledge(self, request: pb.SignPledgeRequest, context: grpc.ServicerContext
                   ) -> pb.SignPledgeResponse:
        result = self.app.sign_pledge(rider_id=request.rider_id,
                                      pledge_version=request.pledge_version)
        signature = self.app.signature(result.id, result["pledge_version"],
                                       result.version)
        return pb.SignPledgeResponse(signature=pb.PledgeSignature(
            rider_id=signature.rider_id, pledge_version=signature.pledge_version,
            sign_time=timestamp(signature.signed_at)))

    # ------------------------------------------------------------------ rendering

    def _report_at(self, result: CommandResult) -> pb.Report:
        # The report as this command left it (also on a retry): the first answer, not today's.
        return self._report(self.app.report(result.id, result.version))

    def _case_at(self, result: CommandResult) -> pb.MediationCase:
        return self._case(self.app.mediation_case(result.id, result.version))

    @staticmethod
    def _report(r: ReportView) -> pb.Report:
        return pb.Report(
            report_id=r.report_id, rider_id=r.rider_id, kind=enum_out(r.kind, pb.ReportKind),
            category=enum_out(r.category, pb.Category),
            location=pb.Location(street_id=r.location.street_id,
                                 latitude=r.location.latitude,
                                 longitude=r.location.longitude),
            text=r.text, attachment_refs=r.attachment_refs,
            observe_time=timestamp(r.observed_at), submit_time=timestamp(r.submitted_at),
            status=enum_out(r.status, pb.ReportStatus),
            assignments=[_assignment(a) for a in r.assignments],
            routing_rules_version=r.rules_version, routing_rule_name=r.rule_name,
            unresolved_functions=[enum_out(f, pb.DepartmentFunction)
                                  for f in r.unresolved_functions],
            duplicate_of_report_id=r.duplicate_of, duplicate_report_ids=r.duplicates,
            close_time=timestamp(r.closed_at), verify_time=timestamp(r.verified_at),
            verification_note=r.verification_note, version=r.version,
            notes=[pb.ReportNote(author_id=n["author_id"], author_role=n["author_role"],
                                 text=n["note"], create_time=timestamp(n["at"]))
                   for n in r.notes],
            ratings=[pb.OutcomeRating(rating=enum_out(x["rating"], pb.SatisfactionRating),
                                      comment=x["comment"], rate_time=timestamp(x["at"]),
                                      close_time=timestamp(x["closed_at"]))
                     for x in r.ratings],
            satisfaction=enum_out(r.satisfaction, pb.SatisfactionRating),
            rate_until_time=timestamp(r.rate_until), reopen_count=r.reopen_count,
            reopen_time=timestamp(r.reopened_at), uphold_time=timestamp(r.upheld_at),
            uphold_note=r.upheld_note,
            past_assignments=[_assignment(a) for a in r.past_assignments],
            clock_policy=_clock_policy(r.clocks))

    @staticmethod
    def _history(e: HistoryEntry) -> pb.HistoryEntry:
        return pb.HistoryEntry(version=e.version, event_type=e.event_type,
                               time=timestamp(e.stored_at), principal=e.principal, rpc=e.rpc,
                               request_id=e.request_id, correlation_id=e.correlation_id,
                               details=e.details)

    @staticmethod
    def _queue_entry(e: QueueEntry) -> pb.QueueEntry:
        return pb.QueueEntry(
            report_id=e.report_id, department_id=e.department_id,
            kind=enum_out(e.kind, pb.ReportKind), category=enum_out(e.category, pb.Category),
            street_id=e.street_id, status=enum_out(e.status, pb.AssignmentStatus),
            deadline=enum_out(e.deadline, pb.DeadlineKind), due_time=timestamp(e.due_at),
            escalation_level=enum_out(e.level, pb.EscalationLevel),
            submit_time=timestamp(e.submitted_at), at_risk=e.at_risk,
            paused=bool(e.pause_reason),
            pause_reason=enum_out(e.pause_reason, pb.PauseReason))

    @staticmethod
    def _statistics(s: StatisticsRow) -> pb.ReportStatistics:
        return pb.ReportStatistics(
            street_id=s.street_id, kind=enum_out(s.kind, pb.ReportKind), submitted=s.submitted,
            duplicates=s.duplicates, open=s.open, resolved=s.resolved, rejected=s.rejected,
            verified=s.verified, escalations=s.escalations,
            acknowledged_assignments=s.acknowledged_assignments,
            median_acknowledge_duration=_duration(s.median_acknowledge),
            resolved_assignments=s.resolved_assignments,
            median_resolve_duration=_duration(s.median_resolve))

    @staticmethod
    def _rules(r: RoutingRulesView) -> pb.RoutingRules:
        return pb.RoutingRules(
            rules=[pb.RoutingRule(
                name=rule["name"], kind=enum_out(rule["kind"], pb.ReportKind),
                category=enum_out(rule["category"], pb.Category), street_id=rule["street_id"],
                department_functions=[enum_out(f, pb.DepartmentFunction)
                                      for f in rule["department_functions"]],
                department_ids=rule["department_ids"]) for rule in r.rules],
            deadlines=[pb.DeadlinePolicy(
                kind=enum_out(kind, pb.ReportKind),
                acknowledge_within=_duration(timedelta(seconds=r.deadlines[kind]["acknowledge"])),
                resolve_within=_duration(timedelta(seconds=r.deadlines[kind]["resolve"])))
                for kind in ReportKind if kind.value in r.deadlines],
            category_deadlines=[_category_deadline(c.value, r.clocks[c.value])
                                for c in Category if c.value in r.clocks],
            version=r.version, update_time=timestamp(r.updated_at),
            at_risk_percent=r.at_risk_percent)

    @staticmethod
    def _case(c: MediationCaseView) -> pb.MediationCase:
        return pb.MediationCase(
            case_id=c.case_id, street_id=c.street_id, report_id=c.report_id,
            subject=c.subject, mediator_name=c.mediator_name,
            parties=[pb.MediationParty(role=enum_out(p["role"], pb.PartyRole), name=p["name"],
                                       rider_id=p["rider_id"]) for p in c.parties],
            sessions=[pb.MediationSession(hold_time=timestamp(s["held_at"]), place=s["place"],
                                          notes=s["notes"]) for s in c.sessions],
            status=enum_out(c.status, pb.MediationStatus), outcome=c.outcome,
            failure_reason=c.failure_reason, open_time=timestamp(c.opened_at),
            close_time=timestamp(c.closed_at), version=c.version,
            follow_ups=[pb.MediationFollowUp(
                day=f["day"].isoformat(), result=enum_out(f["result"], pb.FollowUpResult),
                note=f["note"], record_time=timestamp(f["at"])) for f in c.follow_ups],
            follow_up_due_day=c.follow_up_due.isoformat() if c.follow_up_due else "",
            reopen_count=c.reopen_count)

    @staticmethod
    def _pledge(p: PledgeView) -> pb.Pledge:
        return pb.Pledge(version=p.version, text=p.text, publish_time=timestamp(p.published_at),
                         kind=enum_out(p.kind, pb.PledgeKind))

    @staticmethod
    def _signature(e: SignatureEntry) -> pb.PledgeSignatureEntry:
        return pb.PledgeSignatureEntry(
            pledge_kind=enum_out(e.kind, pb.PledgeKind), pledge_version=e.version,
            rider_id=e.rider_id, organisation_id=e.organisation_id,
            organisation_name=e.organisation_name,
            organisation_kind=f"ORGANISATION_KIND_{e.organisation_kind}"
            if e.organisation_kind else "", sign_time=timestamp(e.signed_at))


def _category_deadline(category: str, clock: dict[str, Any]) -> pb.CategoryDeadline:
    return pb.CategoryDeadline(
        category=enum_out(category, pb.Category),
        acknowledge_within=_duration(timedelta(seconds=clock["acknowledge"])),
        resolve_within=_duration(timedelta(seconds=clock["resolve"])),
        around_the_clock=clock["around_the_clock"])


def _clock_policy(clocks: dict[str, Any] | None) -> Any:
    if clocks is None:
        return None
    return pb.ClockPolicy(
        acknowledge_within=_duration(timedelta(seconds=clocks["acknowledge"])),
        resolve_within=_duration(timedelta(seconds=clocks["resolve"])),
        around_the_clock=clocks["around_the_clock"],
        at_risk_percent=clocks.get("at_risk_percent", 0))


def _calendar(c: WorkingCalendarView) -> pb.WorkingCalendar:
    return pb.WorkingCalendar(
        working_hours=[pb.WorkingHours(start=s["start"], end=s["end"]) for s in c.spans],
        working_weekdays=c.weekdays, holidays=c.holidays,
        adjusted_working_days=c.working_days, version=c.version,
        update_time=timestamp(c.updated_at))


def _pause(p: dict[str, Any]) -> pb.AssignmentPause:
    seconds = p.get("paused_seconds")
    return pb.AssignmentPause(
        reason=enum_out(p["reason"], pb.PauseReason), note=p["note"],
        pause_time=timestamp(p["at"]), resume_time=timestamp(p.get("resumed_at")),
        paused_duration=_duration(timedelta(seconds=seconds)) if seconds is not None else None)


def _policy(p: MediationPolicyView) -> pb.MediationPolicy:
    return pb.MediationPolicy(follow_up_days=p.follow_up_days, version=p.version,
                              update_time=timestamp(p.updated_at))


def _service_rates(v: ServiceRatesView) -> Any:
    r = v.rates

    def rate(x: Any) -> pb.ServiceRate:
        percent = x.percent
        return pb.ServiceRate(numerator=x.numerator, denominator=x.denominator,
                              percent=str(percent) if percent is not None else "")
    return pb.ServiceRates(
        department_id=v.department_id, street_id=v.street_id, district_id=v.district_id,
        start_time=timestamp(v.start), end_time=timestamp(v.end), as_of_time=timestamp(v.as_of),
        assignments=r.assignments, response_rate=rate(r.response),
        awaiting_response=r.awaiting_response, resolution_rate=rate(r.resolution),
        open_assignments=r.open, transferred_assignments=r.transferred, reports=r.reports,
        satisfaction_rate=rate(r.satisfaction), satisfied=r.satisfied,
        basically_satisfied=r.basically_satisfied, unsatisfied=r.unsatisfied,
        rules_version=v.rules_version, rules=list(v.rules))


def _mediation_row(r: MediationStatisticsRow) -> pb.MediationStatistics:
    average = r.average_days_to_agreement
    return pb.MediationStatistics(
        street_id=r.street_id, opened=r.opened, agreed=r.agreed, failed=r.failed, kept=r.kept,
        partly_kept=r.partly_kept, broken=r.broken, reopened=r.reopened,
        average_days_to_agreement=f"{average:.1f}" if average is not None else "",
        follow_ups_overdue=r.follow_ups_overdue)


def _assignment(a: dict[str, Any]) -> pb.Assignment:
    return pb.Assignment(
        department_id=a["department_id"],
        department_function=enum_out(a["department_function"], pb.DepartmentFunction),
        status=enum_out(a["status"], pb.AssignmentStatus), route_time=timestamp(a["routed_at"]),
        acknowledge_due_time=timestamp(a["due"]["ACKNOWLEDGE"]),
        resolve_due_time=timestamp(a["due"]["RESOLVE"]),
        acknowledge_time=timestamp(a["acknowledged_at"]),
        work_start_time=timestamp(a["work_started_at"]), work_note=a["work_note"],
        resolve_time=timestamp(a["resolved_at"]), resolution=a["resolution"],
        reject_time=timestamp(a["rejected_at"]),
        rejection_reason=enum_out(a["rejection_reason"], pb.RejectionReason),
        rejection_note=a["rejection_note"],
        escalation_level=enum_out(a["level"], pb.EscalationLevel),
        escalations=[pb.Escalation(
            deadline=enum_out(deadline, pb.DeadlineKind), due_time=timestamp(e["due_at"]),
            level=enum_out(e["level"], pb.EscalationLevel), escalated_to_id=e["escalated_to"],
            escalate_time=timestamp(e["at"])) for deadline, e in a["escalations"].items()],
        transfer_time=timestamp(a.get("transferred_at")),
        transferred_to_department_id=a.get("transferred_to", ""),
        transfer_reason=a.get("transfer_reason", ""),
        transferred_from_department_id=a.get("transferred_from", ""),
        assignment_reason=a.get("assignment_reason", ""),
        pause=_pause(a["paused"]) if a.get("paused") else None,
        past_pauses=[_pause(p) for p in a.get("pauses", [])],
        acknowledge_at_risk_time=timestamp(a.get("at_risk_from", {}).get("ACKNOWLEDGE")),
        resolve_at_risk_time=timestamp(a.get("at_risk_from", {}).get("RESOLVE")),
        at_risk=[pb.DeadlineAtRisk(deadline=enum_out(deadline, pb.DeadlineKind),
                                   due_time=timestamp(m["due_at"]), mark_time=timestamp(m["at"]))
                 for deadline, m in a.get("at_risk", {}).items()])


def _timedelta(message: Any, field: str) -> timedelta | None:
    """None when absent or beyond what a timedelta holds; the application says which. A
    fraction finer than a timedelta's microsecond is kept as one, so that the application
    sees the duration is not whole seconds (ToTimedelta would drop it)."""
    if not message.HasField(field):
        return None
    duration = getattr(message, field)
    try:
        value = duration.ToTimedelta()
    except (ValueError, OverflowError):
        return None
    if duration.nanos % 1000:
        value += timedelta(microseconds=1 if duration.nanos > 0 else -1)
    return value


def _duration(value: timedelta | None) -> Duration | None:
    if value is None:
        return None
    duration = Duration()
    duration.FromTimedelta(value)
    return duration


def add_servicers(server: grpc.Server, app: Any) -> list[str]:
    pb_grpc.add_GovernanceServiceServicer_to_server(GovernanceServicer(app), server)
    return [SERVICE_NAME]
