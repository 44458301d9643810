"""identity's gRPC entry point: translate the request, call one application method, render the
answer. Rules live in the domain and the application, roles in PERMISSIONS below."""

from __future__ import annotations

from typing import Any

import grpc
from qiji.identity.v1 import identity_service_pb2 as pb
from qiji.identity.v1 import identity_service_pb2_grpc as pb_grpc

from services.identity.application import (
    IdentityApplication,
    OrganisationView,
    RiderView,
    ServiceSpaceView,
)
from services.identity.domain.values import (
    Amenity,
    CareerMilestoneKind,
    ConsentScope,
    DepartmentFunction,
    OrganisationKind,
    RiderStatus,
)
from shared.auth import (
    AUDITOR,
    CITY_ADMIN,
    DEPARTMENT,
    MERCHANT,
    OPERATOR,
    PLATFORM,
    SERVICE,
    STREET_OFFICE,
)
from shared.grpc.convert import enum_in, enum_out, optional_time, request_fingerprint, timestamp

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["IdentityService"].full_name

_READERS = frozenset({CITY_ADMIN, STREET_OFFICE, DEPARTMENT, PLATFORM, OPERATOR, AUDITOR,
                      SERVICE})
_OFFICIALS = frozenset({CITY_ADMIN, STREET_OFFICE})

# Which roles may call each RPC. An RPC missing here is refused to everyone (the guard fails
# closed), and a test checks that every RPC of the service is listed.
PERMISSIONS: dict[str, frozenset[str]] = {f"/{SERVICE_NAME}/{rpc}": roles for rpc, roles in {
    "CreateOrganisation": frozenset({CITY_ADMIN}),
    "GetOrganisation": _READERS | {MERCHANT},
    "ListOrganisations": _READERS | {MERCHANT},
    "CreateServiceSpace": _OFFICIALS,
    "UpdateServiceSpace": _OFFICIALS,
    "GetServiceSpace": _READERS | {MERCHANT},
    "ListServiceSpaces": _READERS | {MERCHANT},
    # The platform registers and verifies its riders; officials may act in its stead.
    "RegisterRider": frozenset({PLATFORM, CITY_ADMIN}),
    "VerifyRider": frozenset({PLATFORM, CITY_ADMIN}),
    "SuspendRider": frozenset({PLATFORM, CITY_ADMIN, STREET_OFFICE}),
    "ReinstateRider": frozenset({PLATFORM, CITY_ADMIN, STREET_OFFICE}),
    "RecordRiderLeft": frozenset({PLATFORM, CITY_ADMIN}),
    "RecordCareerMilestone": _OFFICIALS | {PLATFORM},
    # Consent is the rider's: recorded by the platform's app or at a street office's counter.
    "GrantConsent": frozenset({PLATFORM, CITY_ADMIN, STREET_OFFICE}),
    "WithdrawConsent": frozenset({PLATFORM, CITY_ADMIN, STREET_OFFICE}),
    "GetRider": _READERS,
    "LookupRider": _READERS,
    "ListRiders": _READERS,
    "EraseRiderPersonalData": frozenset({CITY_ADMIN}),
}.items()}


class IdentityServicer(pb_grpc.IdentityServiceServicer):
    def __init__(self, app: IdentityApplication):
        self.app = app

    # ------------------------------------------------------------------ organisations

    def CreateOrganisation(self, request: Any, context: Any) -> Any:
        result = self.app.create_organisation(
            kind=enum_in(request.kind, pb.OrganisationKind, OrganisationKind),
            name=request.name, parent_id=request.parent_id,
            department_function=enum_in(request.department_function, pb.DepartmentFunction,
                                        DepartmentFunction),
            fingerprint=request_fingerprint(request))
        return pb.CreateOrganisationResponse(organisation=self._organisation(
            self.app.organisation(result["organisation_id"], result["version"])))

    def GetOrganisation(self, request: Any, context: Any) -> Any:
        return pb.GetOrganisationResponse(
            organisation=self._organisation(self.app.organisation(request.organisation_id)))

    def ListOrganisations(self, request: Any, context: Any) -> Any:
        found, token = self.app.list_organisations(
            kind=enum_in(request.kind, pb.OrganisationKind, OrganisationKind),
            parent_id=request.parent_id, page_size=request.page_size,
            page_token=request.page_token)
        return pb.ListOrganisationsResponse(
            organisations=[self._organisation(o) for o in found], next_page_token=token)

    # ------------------------------------------------------------------ service spaces

    def CreateServiceSpace(self, request: Any, context: Any) -> Any:
        result = self.app.create_service_space(
            street_id=request.street_id, name=request.name, address=request.address,
            amenities=self._amenities(request.amenities),
            opening_hours=self._hours(request.opening_hours),
            fingerprint=request_fingerprint(request))
        return pb.CreateServiceSpaceResponse(service_space=self._space(
            self.app.service_space(result["service_space_id"], result["version"])))

    def UpdateServiceSpace(self, request: Any, context: Any) -> Any:
        result = self.app.update_service_space(
            service_space_id=request.service_space_id,
            amenities=self._amenities(request.amenities),
            opening_hours=self._hours(request.opening_hours),
            fingerprint=request_fingerprint(request))
        return pb.UpdateServiceSpaceResponse(service_space=self._space(
            self.app.service_space(result["service_space_id"], result["version"])))

    def GetServiceSpace(self, request: Any, context: Any) -> Any:
        return pb.GetServiceSpaceResponse(
            service_space=self._space(self.app.service_space(request.service_space_id)))

    def ListServiceSpaces(self, request: Any, context: Any) -> Any:
        found, token = self.app.list_service_spaces(
            street_id=request.street_id,
            amenities=[a for a in self._amenities(request.amenities) if a],
            page_size=request.page_size, page_token=request.page_token)
        return pb.ListServiceSpacesResponse(service_spaces=[self._space(s) for s in found],
                                            next_page_token=token)

    # ------------------------------------------------------------------ riders

    def RegisterRider(self, request: Any, context: Any) -> Any:
        result = self.app.register_rider(
            platform_id=request.platform_id, platform_rider_id=request.platform_rider_id,
            name=request.name, phone=request.phone, national_id=request.national_id,
            home_street_id=request.home_street_id, station_id=request.station_id,
            fingerprint=request_fingerprint(request))
        return pb.RegisterRiderResponse(rider=self._rider_at(result))

    def VerifyRider(self, request: Any, context: Any) -> Any:
        result = self.app.verify_rider(rider_id=request.rider_id,
                                       fingerprint=request_fingerprint(request))
        return pb.VerifyRiderResponse(rider=self._rider_at(result))

    def SuspendRider(self, request: Any, context: Any) -> Any:
        result = self.app.suspend_rider(rider_id=request.rider_id, reason=request.reason,
                                        fingerprint=request_fingerprint(request))
        return pb.SuspendRiderResponse(rider=self._rider_at(result))

    def ReinstateRider(self, request: Any, context: Any) -> Any:
        result = self.app.reinstate_rider(rider_id=request.rider_id, reason=request.reason,
                                          fingerprint=request_fingerprint(request))
        return pb.ReinstateRiderResponse(rider=self._rider_at(result))

    def RecordRiderLeft(self, request: Any, context: Any) -> Any:
        result = self.app.record_rider_left(rider_id=request.rider_id, reason=request.reason,
                                            fingerprint=request_fingerprint(request))
        return pb.RecordRiderLeftResponse(rider=self._rider_at(result))

    def RecordCareerMilestone(self, request: Any, context: Any) -> Any:
        result = self.app.record_career_milestone(
            rider_id=request.rider_id,
            kind=enum_in(request.kind, pb.CareerMilestoneKind, CareerMilestoneKind),
            organisation_id=request.organisation_id,
            effective_at=optional_time(request, "effective_time"), note=request.note,
            fingerprint=request_fingerprint(request))
        return pb.RecordCareerMilestoneResponse(rider=self._rider_at(result))

    def GrantConsent(self, request: Any, context: Any) -> Any:
        result = self.app.grant_consent(
            rider_id=request.rider_id, scope=enum_in(request.scope, pb.ConsentScope, ConsentScope),
            recipient_id=request.recipient_id, fingerprint=request_fingerprint(request))
        return pb.GrantConsentResponse(rider=self._rider_at(result),
                                       consent_id=result["consent_id"])

    def WithdrawConsent(self, request: Any, context: Any) -> Any:
        result = self.app.withdraw_consent(rider_id=request.rider_id,
                                           consent_id=request.consent_id,
                                           fingerprint=request_fingerprint(request))
        return pb.WithdrawConsentResponse(rider=self._rider_at(result))

    def GetRider(self, request: Any, context: Any) -> Any:
        return pb.GetRiderResponse(rider=self._rider(self.app.rider(request.rider_id)))

    def LookupRider(self, request: Any, context: Any) -> Any:
        return pb.LookupRiderResponse(rider=self._rider(self.app.lookup_rider(
            platform_id=request.platform_id, platform_rider_id=request.platform_rider_id)))

    def ListRiders(self, request: Any, context: Any) -> Any:
        found, token = self.app.list_riders(
            home_street_id=request.home_street_id, station_id=request.station_id,
            status=enum_in(request.status, pb.RiderStatus, RiderStatus),
            page_size=request.page_size, page_token=request.page_token)
        return pb.ListRidersResponse(riders=[self._rider(r) for r in found],
                                     next_page_token=token)

    def EraseRiderPersonalData(self, request: Any, context: Any) -> Any:
        result = self.app.erase_rider_personal_data(
            rider_id=request.rider_id, reason=request.reason,
            fingerprint=request_fingerprint(request))
        return pb.EraseRiderPersonalDataResponse(rider=self._rider_at(result))

    # ------------------------------------------------------------------ rendering

    def _rider_at(self, result: dict[str, Any]) -> Any:
        # The rider as this command left it (also on a retry): the first answer, not today's.
        return self._rider(self.app.rider(result["rider_id"], result["version"]))

    @staticmethod
    def _organisation(o: OrganisationView) -> Any:
        return pb.Organisation(
            organisation_id=o.organisation_id, kind=enum_out(o.kind, pb.OrganisationKind),
            name=o.name, parent_id=o.parent_id,
            department_function=enum_out(o.department_function, pb.DepartmentFunction),
            create_time=timestamp(o.created_at), version=o.version)

    @staticmethod
    def _space(s: ServiceSpaceView) -> Any:
        return pb.ServiceSpace(
            service_space_id=s.service_space_id, street_id=s.street_id, name=s.name,
            address=s.address, amenities=[enum_out(a, pb.Amenity) for a in s.amenities],
            opening_hours=[pb.OpeningHours(**h) for h in s.opening_hours],
            create_time=timestamp(s.created_at), version=s.version)

    @staticmethod
    def _rider(r: RiderView) -> Any:
        return pb.Rider(
            rider_id=r.rider_id, platform_id=r.platform_id, platform_rider_id=r.platform_rider_id,
            name=r.name, phone=r.phone, national_id=r.national_id,
            personal_data_erased=r.personal_data_erased, home_street_id=r.home_street_id,
            station_id=r.station_id, status=enum_out(r.status, pb.RiderStatus),
            status_reason=r.status_reason, register_time=timestamp(r.registered_at),
            verify_time=timestamp(r.verified_at),
            career_milestones=[pb.CareerMilestone(
                kind=enum_out(m["kind"], pb.CareerMilestoneKind),
                organisation_id=m["organisation_id"],
                effective_time=timestamp(m["effective_at"]), note=m["note"])
                for m in r.milestones],
            consents=[pb.ConsentGrant(
                consent_id=c["consent_id"], scope=enum_out(c["scope"], pb.ConsentScope),
                recipient_id=c["recipient_id"], grant_time=timestamp(c["granted_at"]),
                withdraw_time=timestamp(c["withdrawn_at"])) for c in r.consents],
            version=r.version)

    @staticmethod
    def _amenities(values: Any) -> list[Amenity | None]:
        return [enum_in(v, pb.Amenity, Amenity) for v in values]

    @staticmethod
    def _hours(values: Any) -> list[dict[str, Any]]:
        return [{"weekday": h.weekday, "opens": h.opens, "closes": h.closes} for h in values]


def add_servicers(server: grpc.Server, app: Any) -> list[str]:
    pb_grpc.add_IdentityServiceServicer_to_server(IdentityServicer(app), server)
    return [SERVICE_NAME]
