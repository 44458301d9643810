"""governance's gRPC entry point for help requests (帮扶): the servicer methods (mixed into
GovernanceServicer): translate the request, call one application method, render the answer.
Who may call them is grpc_api.ACCESS's."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration
from qiji.governance.v1 import governance_service_pb2 as pb

from services.governance.domain.values import (
    ContactChannel,
    DepartmentFunction,
    HelpKind,
    HelpStatus,
    SatisfactionRating,
)
from services.governance.help_application import (
    HelpRequestView,
    HelpRouteInput,
    HelpRoutingView,
)
from services.governance.help_views import HelpStatisticsRow
from services.governance.history import HistoryEntry
from shared.application import CommandResult
from shared.errors import Violations
from shared.grpc.convert import enum_in, enum_out, optional_time, timestamp


class HelpServicer:
    # GovernanceServicer's, which this is mixed into: its application, and how it renders a
    # history entry (one for reports and help requests).
    app: Any
    _history: Callable[[HistoryEntry], Any]

    def RequestHelp(self, request: pb.RequestHelpRequest, context: grpc.ServicerContext
                    ) -> pb.RequestHelpResponse:
        violations = Violations()
        result = self.app.request_help(
            rider_id=request.rider_id,
            kind=enum_in(request.kind, pb.HelpKind, HelpKind, violations, "kind"),
            text=request.text,
            contact_preference=enum_in(request.contact_preference, pb.ContactChannel,
                                       ContactChannel, violations, "contact_preference"),
            violations=violations)
        return pb.RequestHelpResponse(help_request=self._help_at(result))

    def GetHelpRequest(self, request: pb.GetHelpRequestRequest, context: grpc.ServicerContext
                       ) -> pb.GetHelpRequestResponse:
        return pb.GetHelpRequestResponse(
            help_request=_help(self.app.help_request(request.help_request_id)))

    def ListHelpRequests(self, request: pb.ListHelpRequestsRequest, context: grpc.ServicerContext
                         ) -> pb.ListHelpRequestsResponse:
        violations = Violations()
        found, token = self.app.list_help_requests(
            department_id=request.department_id,
            kind=enum_in(request.kind, pb.HelpKind, HelpKind, violations, "kind"),
            status=enum_in(request.status, pb.HelpStatus, HelpStatus, violations, "status"),
            page_size=request.page_size, page_token=request.page_token, violations=violations)
        return pb.ListHelpRequestsResponse(help_requests=[_help(h) for h in found],
                                           next_page_token=token)

    def GetHelpRequestHistory(self, request: pb.GetHelpRequestHistoryRequest,
                              context: grpc.ServicerContext) -> pb.GetHelpRequestHistoryResponse:
        entries = self.app.help_request_history(request.help_request_id)
        return pb.GetHelpRequestHistoryResponse(help_request_id=request.help_request_id,
                                                entries=[self._history(e) for e in entries])

    def AssignCaseworker(self, request: pb.AssignCaseworkerRequest, context: grpc.ServicerContext
                         ) -> pb.AssignCaseworkerResponse:
        result = self.app.assign_caseworker(
            help_request_id=request.help_request_id, department_id=request.department_id,
            caseworker_name=request.caseworker_name)
        return pb.AssignCaseworkerResponse(help_request=self._help_at(result))

    def RecordHelpContact(self, request: pb.RecordHelpContactRequest, context: grpc.ServicerContext
                          ) -> pb.RecordHelpContactResponse:
        violations = Violations()
        result = self.app.record_help_contact(
            help_request_id=request.help_request_id, department_id=request.department_id,
            channel=enum_in(request.channel, pb.ContactChannel, ContactChannel, violations,
                            "channel"),
            contacted_at=optional_time(request, "contact_time", violations),
            note=request.note, violations=violations)
        return pb.RecordHelpContactResponse(help_request=self._help_at(result),
                                            contact_id=result["contact_id"])

    def RecordHelpReferral(self, request: pb.RecordHelpReferralRequest,
                           context: grpc.ServicerContext) -> pb.RecordHelpReferralResponse:
        result = self.app.record_help_referral(
            help_request_id=request.help_request_id, department_id=request.department_id,
            to_department_id=request.to_department_id, note=request.note)
        return pb.RecordHelpReferralResponse(help_request=self._help_at(result),
                                             referral_id=result["referral_id"])

    def GiveHelpOutcome(self, request: pb.GiveHelpOutcomeRequest, context: grpc.ServicerContext
                        ) -> pb.GiveHelpOutcomeResponse:
        result = self.app.give_help_outcome(
            help_request_id=request.help_request_id, department_id=request.department_id,
            outcome=request.outcome)
        return pb.GiveHelpOutcomeResponse(help_request=self._help_at(result))

    def RateHelpOutcome(self, request: pb.RateHelpOutcomeRequest, context: grpc.ServicerContext
                        ) -> pb.RateHelpOutcomeResponse:
        violations = Violations()
        result = self.app.rate_help_outcome(
            help_request_id=request.help_request_id,
            rating=enum_in(request.rating, pb.SatisfactionRating, SatisfactionRating, violations,
                           "rating"), violations=violations)
        return pb.RateHelpOutcomeResponse(help_request=self._help_at(result))

    def GetHelpStatistics(self, request: pb.GetHelpStatisticsRequest, context: grpc.ServicerContext
                          ) -> pb.GetHelpStatisticsResponse:
        violations = Violations()
        rows = self.app.help_statistics(
            department_id=request.department_id,
            kind=enum_in(request.kind, pb.HelpKind, HelpKind, violations, "kind"),
            start=optional_time(request, "start_time", violations),
            end=optional_time(request, "end_time", violations), violations=violations)
        return pb.GetHelpStatisticsResponse(statistics=[_statistics(r) for r in rows])

    def SetHelpRouting(self, request: pb.SetHelpRoutingRequest, context: grpc.ServicerContext
                       ) -> pb.SetHelpRoutingResponse:
        violations = Violations()
        routes = [HelpRouteInput(
            kind=enum_in(r.kind, pb.HelpKind, HelpKind, violations, f"routes[{i}].kind"),
            functions=[enum_in(f, pb.DepartmentFunction, DepartmentFunction, violations,
                               f"routes[{i}].department_functions[{j}]")
                       for j, f in enumerate(r.department_functions)],
            acknowledge_within=_timedelta(r, "acknowledge_within"),
            resolve_within=_timedelta(r, "resolve_within"))
            for i, r in enumerate(request.routes)]
        result = self.app.set_help_routing(routes=routes, violations=violations)
        return pb.SetHelpRoutingResponse(
            help_routing=_routing(self.app.help_routing(result.version)))

    def GetHelpRouting(self, request: pb.GetHelpRoutingRequest, context: grpc.ServicerContext
                       ) -> pb.GetHelpRoutingResponse:
        return pb.GetHelpRoutingResponse(
            help_routing=_routing(self.app.help_routing(request.version)))

    def _help_at(self, result: CommandResult) -> pb.HelpRequest:
        # The request as this command left it (also on a retry): the first answer.
        return _help(self.app.help_request(result.id, result.version))


def _help(h: HelpRequestView) -> pb.HelpRequest:
    return pb.HelpRequest(
        help_request_id=h.help_request_id, rider_id=h.rider_id,
        kind=enum_out(h.kind, pb.HelpKind), home_street_id=h.home_street_id, text=h.text,
        contact_preference=enum_out(h.contact_preference, pb.ContactChannel)
        if h.contact_preference else pb.CONTACT_CHANNEL_UNSPECIFIED,
        request_time=timestamp(h.requested_at), status=enum_out(h.status, pb.HelpStatus),
        assignments=[_assignment(a) for a in h.assignments],
        contacts=[pb.HelpContact(
            contact_id=c["contact_id"], department_id=c["department_id"],
            channel=enum_out(c["channel"], pb.ContactChannel),
            contact_time=timestamp(c["contacted_at"]), note=c["note"],
            record_time=timestamp(c["at"])) for c in h.contacts],
        referrals=[pb.HelpReferral(
            referral_id=r["referral_id"], department_id=r["department_id"],
            to_department_id=r["to_department_id"], note=r["note"],
            refer_time=timestamp(r["at"])) for r in h.referrals],
        close_time=timestamp(h.closed_at),
        satisfaction=enum_out(h.satisfaction["rating"], pb.SatisfactionRating)
        if h.satisfaction else pb.SATISFACTION_RATING_UNSPECIFIED,
        rate_time=timestamp(h.satisfaction["at"]) if h.satisfaction else None,
        version=h.version, help_routing_version=h.routing_version,
        asked_through=enum_out(h.asked_through, pb.HelpChannel))


def _routing(r: HelpRoutingView) -> pb.HelpRouting:
    return pb.HelpRouting(
        routes=[pb.HelpRoute(
            kind=enum_out(kind, pb.HelpKind),
            department_functions=[enum_out(f, pb.DepartmentFunction)
                                  for f in r.routes[kind.value]["functions"]],
            acknowledge_within=_duration(r.routes[kind.value]["acknowledge"]),
            resolve_within=_duration(r.routes[kind.value]["resolve"]))
            for kind in HelpKind if kind.value in r.routes],
        version=r.version, update_time=timestamp(r.updated_at))


def _duration(seconds: int) -> Duration:
    duration = Duration()
    duration.FromTimedelta(timedelta(seconds=seconds))
    return duration


def _timedelta(message: Any, field: str) -> timedelta | None:
    # As the routing rules read theirs (grpc_api._timedelta): None when absent or beyond a
    # timedelta; a fraction below a microsecond kept as one, so it is refused, not dropped.
    # Imported here: grpc_api imports this module to build its servicer.
    from services.governance.grpc_api import _timedelta as read
    return read(message, field)


def _assignment(a: dict[str, Any]) -> pb.HelpAssignment:
    return pb.HelpAssignment(
        department_id=a["department_id"],
        department_function=enum_out(a["department_function"], pb.DepartmentFunction),
        status=enum_out(a["status"], pb.HelpAssignmentStatus),
        route_time=timestamp(a["routed_at"]), referred_by_department_id=a["referred_by"],
        caseworker_due_time=timestamp(a["due"]["ACKNOWLEDGE"]),
        outcome_due_time=timestamp(a["due"]["RESOLVE"]),
        caseworker_name=a["caseworker_name"],
        caseworker_assign_time=timestamp(a["caseworker_assigned_at"]),
        outcome=a["outcome"], outcome_time=timestamp(a["outcome_given_at"]),
        escalation_level=enum_out(a["level"], pb.EscalationLevel),
        escalations=[pb.Escalation(
            deadline=enum_out(deadline, pb.DeadlineKind), due_time=timestamp(e["due_at"]),
            level=enum_out(e["level"], pb.EscalationLevel), escalated_to_id=e["escalated_to"],
            escalate_time=timestamp(e["at"])) for deadline, e in a["escalations"].items()])


def _statistics(r: HelpStatisticsRow) -> pb.HelpStatistics:
    return pb.HelpStatistics(
        department_id=r.department_id, kind=enum_out(r.kind, pb.HelpKind), assigned=r.assigned,
        caseworker_assigned=r.caseworker_assigned, outcomes_given=r.outcomes_given,
        open=r.open, escalations=r.escalations, referrals_made=r.referrals_made,
        satisfied=r.satisfied, basically_satisfied=r.basically_satisfied,
        unsatisfied=r.unsatisfied)
