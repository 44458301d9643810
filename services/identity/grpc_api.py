"""identity's gRPC entry point: translate the request, call one application method, render the
answer. Rules live in the domain and the application, roles and tenancy scopes in ACCESS below."""

from __future__ import annotations

from typing import Any

import grpc
from qiji.badges.v1 import badges_service_pb2 as badges_pb
from qiji.governance.v1 import governance_service_pb2 as governance_pb
from qiji.identity.v1 import identity_service_pb2 as pb
from qiji.identity.v1 import identity_service_pb2_grpc as pb_grpc
from qiji.merchants.v1 import merchants_service_pb2 as merchants_pb
from qiji.training.v1 import training_service_pb2 as training_pb

from services.identity.application import (
    CriteriaView,
    FriendlyMarkView,
    IdentityApplication,
    OrganisationView,
    PartnerView,
    RiderView,
    ServiceSpaceView,
    SpaceUseView,
)
from services.identity.domain.friendly import FriendlyMarkStatus
from services.identity.domain.model import Rider
from services.identity.domain.values import (
    Amenity,
    CareerMilestoneKind,
    ConsentScope,
    DepartmentFunction,
    OfferKind,
    OrganisationKind,
    PartnerCategory,
    RiderStatus,
)
from services.identity.rider_record import RiderRecord
from shared.application import CommandResult
from shared.auth import CITY_ADMIN, DEPARTMENT, EDUCATION_PROVIDER, MERCHANT, PLATFORM, ROLES
from shared.errors import Violations
from shared.grpc.convert import (
    enum_in,
    enum_out,
    geo_point_in,
    geo_point_out,
    optional_time,
    timestamp,
)
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
from shared.values import GeoPoint

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["IdentityService"].full_name

RIDER_ROWS = Rows("rider", "id")


def _registered_rider(request: Any) -> str:
    # The rider a registration makes: its id is derived, so it is known before it exists.
    return str(Rider.create_id(request.platform_id, request.platform_rider_id))


# Who may call each RPC, and for each role that acts for one organisation, what that
# organisation must own (shared/tenancy.py). An RPC missing here, or a role without a scope,
# is refused to everyone; the tenancy matrix test tries every entry with two tenants.
ACCESS = access_table(SERVICE_NAME, {
    "CreateOrganisation": once(city_wide(CITY_ADMIN)),
    # The organisation tree and the service spaces are the city's reference data.
    "GetOrganisation": public(ROLES),
    "ListOrganisations": public(ROLES),
    # The partner register: the city decides who is a partner; a partner revises what it
    # offers with its own token (the role its organisation's kind acts in), or the city admin
    # for it. What partners offer and gave is public: nothing personal is in it.
    "RegisterPartner": once(city_wide(CITY_ADMIN)),
    "RevisePartner": scoped(CITY_ADMIN, tenants=each(Ref("organisation_id", "organisation"),
                                                      EDUCATION_PROVIDER, MERCHANT, DEPARTMENT,
                                                      PLATFORM)),
    "GetPartner": public(ROLES),
    "ListPartners": public(ROLES),
    "CreateServiceSpace": once(scoped(CITY_ADMIN, street_office=Ref("street_id", "organisation"))),
    "UpdateServiceSpace": scoped(CITY_ADMIN,
                                 street_office=Ref("service_space_id", "service_space")),
    "GetServiceSpace": public(ROLES),
    "ListServiceSpaces": public(ROLES),
    # Visits, counts only: the staff at a space act for its street. Every call adds to the
    # counts, so it carries a request id (a retry must not count twice).
    "RecordSpaceUse": once(scoped(CITY_ADMIN,
                                  street_office=Ref("service_space_id", "service_space"))),
    "GetSpaceUse": scoped(CITY_READERS, street_office=Ref("service_space_id", "service_space")),
    # A street office lists its own street's spaces (naming it); the city reads every street.
    "ListSpaceUse": scoped(CITY_READERS, street_office=Ref("street_id", "organisation")),
    # A platform registers, verifies and lets go of its own riders; the city admin may act in
    # its stead. The registration's personal fields are fingerprinted under the rider's key.
    "RegisterRider": scoped(CITY_ADMIN, platform=Ref("platform_id", "organisation"),
                            personal=("name", "phone", "national_id"),
                            subject=_registered_rider),
    "VerifyRider": scoped(CITY_ADMIN, platform=RIDER),
    "SuspendRider": scoped(CITY_ADMIN, platform=RIDER, street_office=RIDER),
    "ReinstateRider": scoped(CITY_ADMIN, platform=RIDER, street_office=RIDER),
    "RecordRiderLeft": scoped(CITY_ADMIN, platform=RIDER),
    "RecordCareerMilestone": scoped(CITY_ADMIN, platform=RIDER, street_office=RIDER),
    # Consent is the rider's: recorded by their platform's app, or at their street office's
    # counter.
    "GrantConsent": scoped(CITY_ADMIN, platform=RIDER, street_office=RIDER),
    "WithdrawConsent": scoped(CITY_ADMIN, platform=RIDER, street_office=RIDER),
    "GetRider": scoped(CITY_READERS, platform=RIDER, street_office=RIDER),
    # A rider's own record: their platform's app shows it to them; their street office and
    # the city read it too. Nobody else's platform, not even whether the rider exists.
    "GetRiderRecord": scoped(CITY_READERS, platform=RIDER, street_office=RIDER),
    # Looking a rider up by the platform's own rider id is the platform's own namespace.
    "LookupRider": scoped(CITY_READERS, platform=Ref("platform_id", "organisation")),
    "ListRiders": scoped(CITY_READERS, platform=RIDER_ROWS, street_office=RIDER_ROWS),
    "EraseRiderPersonalData": city_wide(CITY_ADMIN),
    # Friendly marks (友好社区): the criteria are the city's; a street office applies for its
    # own street's communities (a community's owners are itself and its street office: only
    # the office applies); the city awards and withdraws; the marks are public recognition.
    "SetFriendlyMarkCriteria": city_wide(CITY_ADMIN),
    "GetFriendlyMarkCriteria": public(ROLES),
    "ApplyFriendlyMark": scoped(CITY_ADMIN, street_office=Ref("area_id", "organisation")),
    "AwardFriendlyMark": city_wide(CITY_ADMIN),
    "WithdrawFriendlyMark": city_wide(CITY_ADMIN),
    "GetFriendlyMark": public(ROLES),
    "ListFriendlyMarks": public(ROLES),
})


class FriendlyMarks:
    """The friendly-mark RPCs of IdentityServicer (a mixin, to keep the servicer readable)."""

    app: IdentityApplication

    def SetFriendlyMarkCriteria(self, request: pb.SetFriendlyMarkCriteriaRequest,
                                context: grpc.ServicerContext
                                ) -> pb.SetFriendlyMarkCriteriaResponse:
        violations = Violations()
        c = request.criteria
        result = self.app.set_friendly_mark_criteria(
            min_service_spaces=c.min_service_spaces,
            space_amenities=[enum_in(a, pb.Amenity, Amenity, violations,
                                     f"criteria.space_amenities[{i}]")
                             for i, a in enumerate(c.space_amenities)],
            min_friendly_merchants=c.min_friendly_merchants,
            co_building_pledge=c.co_building_pledge, street_attestation=c.street_attestation,
            area_kind=_area_kind(c.area_kind, violations, "criteria.area_kind"),
            violations=violations)
        # A retry's answer is the stored one, with the kind by its name.
        criteria = self.app.friendly_mark_criteria(result.version,
                                                   OrganisationKind(result["area_kind"]))
        return pb.SetFriendlyMarkCriteriaResponse(criteria=_criteria(criteria),
                                                  set_time=timestamp(criteria.set_at))

    def GetFriendlyMarkCriteria(self, request: pb.GetFriendlyMarkCriteriaRequest,
                                context: grpc.ServicerContext
                                ) -> pb.GetFriendlyMarkCriteriaResponse:
        violations = Violations()
        criteria = self.app.friendly_mark_criteria(
            request.version, _area_kind(request.area_kind, violations, "area_kind"),
            violations)
        return pb.GetFriendlyMarkCriteriaResponse(criteria=_criteria(criteria),
                                                  set_time=timestamp(criteria.set_at))

    def ApplyFriendlyMark(self, request: pb.ApplyFriendlyMarkRequest, context: grpc.ServicerContext
                          ) -> pb.ApplyFriendlyMarkResponse:
        result = self.app.apply_friendly_mark(area_id=request.area_id,
                                              brand_name=request.brand_name,
                                              street_attestation=request.street_attestation)
        return pb.ApplyFriendlyMarkResponse(mark=self._mark_at(result))

    def AwardFriendlyMark(self, request: pb.AwardFriendlyMarkRequest, context: grpc.ServicerContext
                          ) -> pb.AwardFriendlyMarkResponse:
        result = self.app.award_friendly_mark(mark_id=request.mark_id,
                                              criteria_version=request.criteria_version)
        return pb.AwardFriendlyMarkResponse(mark=self._mark_at(result))

    def WithdrawFriendlyMark(self, request: pb.WithdrawFriendlyMarkRequest,
                             context: grpc.ServicerContext) -> pb.WithdrawFriendlyMarkResponse:
        result = self.app.withdraw_friendly_mark(mark_id=request.mark_id, reason=request.reason)
        return pb.WithdrawFriendlyMarkResponse(mark=self._mark_at(result))

    def GetFriendlyMark(self, request: pb.GetFriendlyMarkRequest, context: grpc.ServicerContext
                        ) -> pb.GetFriendlyMarkResponse:
        return pb.GetFriendlyMarkResponse(mark=_mark(self.app.friendly_mark(request.mark_id)))

    def ListFriendlyMarks(self, request: pb.ListFriendlyMarksRequest, context: grpc.ServicerContext
                          ) -> pb.ListFriendlyMarksResponse:
        violations = Violations()
        found, token = self.app.list_friendly_marks(
            street_id=request.street_id,
            status=enum_in(request.status, pb.FriendlyMarkStatus, FriendlyMarkStatus, violations,
                           "status"),
            page_size=request.page_size, page_token=request.page_token, violations=violations)
        return pb.ListFriendlyMarksResponse(marks=[_mark(m) for m in found],
                                            next_page_token=token)

    def _mark_at(self, result: CommandResult) -> pb.FriendlyMark:
        # As stored by the command (its version): a retry renders the first answer's mark.
        return _mark(self.app.friendly_mark(result.id, result.version))


class IdentityServicer(FriendlyMarks, pb_grpc.IdentityServiceServicer):
    def __init__(self, app: IdentityApplication):
        self.app = app

    # ------------------------------------------------------------------ organisations

    def CreateOrganisation(self, request: pb.CreateOrganisationRequest,
                           context: grpc.ServicerContext) -> pb.CreateOrganisationResponse:
        violations = Violations()  # reported with the application's findings, in one answer
        result = self.app.create_organisation(
            kind=enum_in(request.kind, pb.OrganisationKind, OrganisationKind, violations, "kind"),
            name=request.name, parent_id=request.parent_id,
            department_function=enum_in(request.department_function, pb.DepartmentFunction,
                                        DepartmentFunction, violations, "department_function"),
            violations=violations)
        return pb.CreateOrganisationResponse(organisation=self._organisation(
            self.app.organisation(result.id, result.version)))

    def GetOrganisation(self, request: pb.GetOrganisationRequest, context: grpc.ServicerContext
                        ) -> pb.GetOrganisationResponse:
        return pb.GetOrganisationResponse(
            organisation=self._organisation(self.app.organisation(request.organisation_id)))

    def ListOrganisations(self, request: pb.ListOrganisationsRequest, context: grpc.ServicerContext
                          ) -> pb.ListOrganisationsResponse:
        violations = Violations()
        found, token = self.app.list_organisations(
            kind=enum_in(request.kind, pb.OrganisationKind, OrganisationKind, violations, "kind"),
            parent_id=request.parent_id, page_size=request.page_size,
            page_token=request.page_token, violations=violations)
        return pb.ListOrganisationsResponse(
            organisations=[self._organisation(o) for o in found], next_page_token=token)

    # ------------------------------------------------------------------ partners

    def RegisterPartner(self, request: pb.RegisterPartnerRequest, context: grpc.ServicerContext
                        ) -> pb.RegisterPartnerResponse:
        violations = Violations()
        result = self.app.register_partner(
            organisation_id=request.organisation_id,
            category=enum_in(request.category, pb.PartnerCategory, PartnerCategory,
                             violations, "category"),
            offers=_offers(request.offers, violations), violations=violations)
        return pb.RegisterPartnerResponse(partner=_partner(
            self.app.partner(result.id, result.version)))

    def RevisePartner(self, request: pb.RevisePartnerRequest, context: grpc.ServicerContext
                      ) -> pb.RevisePartnerResponse:
        violations = Violations()
        result = self.app.revise_partner(
            organisation_id=request.organisation_id,
            category=enum_in(request.category, pb.PartnerCategory, PartnerCategory,
                             violations, "category"),
            offers=_offers(request.offers, violations), violations=violations)
        return pb.RevisePartnerResponse(partner=_partner(
            self.app.partner(result.id, result.version)))

    def GetPartner(self, request: pb.GetPartnerRequest, context: grpc.ServicerContext
                   ) -> pb.GetPartnerResponse:
        return pb.GetPartnerResponse(partner=_partner(
            self.app.partner(request.organisation_id, request.version)))

    def ListPartners(self, request: pb.ListPartnersRequest, context: grpc.ServicerContext
                     ) -> pb.ListPartnersResponse:
        violations = Violations()
        found, token = self.app.list_partners(
            category=enum_in(request.category, pb.PartnerCategory, PartnerCategory,
                             violations, "category"),
            offer_kind=enum_in(request.offer_kind, pb.OfferKind, OfferKind, violations,
                               "offer_kind"),
            page_size=request.page_size, page_token=request.page_token, violations=violations)
        return pb.ListPartnersResponse(partners=[_partner(p) for p in found],
                                       next_page_token=token)

    # ------------------------------------------------------------------ service spaces

    def CreateServiceSpace(self, request: pb.CreateServiceSpaceRequest,
                           context: grpc.ServicerContext) -> pb.CreateServiceSpaceResponse:
        violations = Violations()
        result = self.app.create_service_space(
            street_id=request.street_id, name=request.name, address=request.address,
            amenities=self._amenities(request.amenities, violations),
            opening_hours=self._hours(request.opening_hours),
            location=self._location(request, violations), violations=violations)
        return pb.CreateServiceSpaceResponse(service_space=self._space(
            self.app.service_space(result.id, result.version)))

    def UpdateServiceSpace(self, request: pb.UpdateServiceSpaceRequest,
                           context: grpc.ServicerContext) -> pb.UpdateServiceSpaceResponse:
        violations = Violations()
        result = self.app.update_service_space(
            service_space_id=request.service_space_id,
            amenities=self._amenities(request.amenities, violations),
            opening_hours=self._hours(request.opening_hours),
            location=self._location(request, violations), violations=violations)
        return pb.UpdateServiceSpaceResponse(service_space=self._space(
            self.app.service_space(result.id, result.version)))

    def GetServiceSpace(self, request: pb.GetServiceSpaceRequest, context: grpc.ServicerContext
                        ) -> pb.GetServiceSpaceResponse:
        return pb.GetServiceSpaceResponse(
            service_space=self._space(self.app.service_space(request.service_space_id)))

    def ListServiceSpaces(self, request: pb.ListServiceSpacesRequest, context: grpc.ServicerContext
                          ) -> pb.ListServiceSpacesResponse:
        violations = Violations()
        found, token = self.app.list_service_spaces(
            street_id=request.street_id,
            amenities=[a for a in self._amenities(request.amenities, violations) if a],
            page_size=request.page_size, page_token=request.page_token, violations=violations)
        return pb.ListServiceSpacesResponse(service_spaces=[self._space(s) for s in found],
                                            next_page_token=token)

    # ------------------------------------------------------------------ visits

    def RecordSpaceUse(self, request: pb.RecordSpaceUseRequest, context: grpc.ServicerContext
                       ) -> pb.RecordSpaceUseResponse:
        violations = Violations()
        result = self.app.record_space_use(
            service_space_id=request.service_space_id,
            amenity=enum_in(request.amenity, pb.Amenity, Amenity, violations, "amenity"),
            count=request.count, day=request.day, violations=violations)
        # Rendered from the answer stored with the request id: a retry gets the first one.
        return pb.RecordSpaceUseResponse(
            service_space_id=result.id,
            day=_use_day(result["day"], {Amenity(a): n for a, n in result["counts"].items()}))

    def GetSpaceUse(self, request: pb.GetSpaceUseRequest, context: grpc.ServicerContext
                    ) -> pb.GetSpaceUseResponse:
        use = self.app.space_use(service_space_id=request.service_space_id,
                                 from_day=request.from_day, to_day=request.to_day)
        return pb.GetSpaceUseResponse(
            service_space_id=use.service_space_id, from_day=use.from_day.isoformat(),
            to_day=use.to_day.isoformat(),
            days=[_use_day(d.isoformat(), counts) for d, counts in use.days],
            totals=_uses(use.totals), total=sum(use.totals.values()))

    def ListSpaceUse(self, request: pb.ListSpaceUseRequest, context: grpc.ServicerContext
                     ) -> pb.ListSpaceUseResponse:
        found, token, (from_day, to_day) = self.app.list_space_use(
            street_id=request.street_id, from_day=request.from_day, to_day=request.to_day,
            page_size=request.page_size, page_token=request.page_token)
        return pb.ListSpaceUseResponse(
            spaces=[_use_total(u) for u in found], from_day=from_day.isoformat(),
            to_day=to_day.isoformat(), next_page_token=token)

    # ------------------------------------------------------------------ riders

    def RegisterRider(self, request: pb.RegisterRiderRequest, context: grpc.ServicerContext
                      ) -> pb.RegisterRiderResponse:
        result = self.app.register_rider(
            platform_id=request.platform_id, platform_rider_id=request.platform_rider_id,
            name=request.name, phone=request.phone, national_id=request.national_id,
            home_street_id=request.home_street_id, station_id=request.station_id)
        return pb.RegisterRiderResponse(rider=self._rider_at(result))

    def VerifyRider(self, request: pb.VerifyRiderRequest, context: grpc.ServicerContext
                    ) -> pb.VerifyRiderResponse:
        result = self.app.verify_rider(rider_id=request.rider_id)
        return pb.VerifyRiderResponse(rider=self._rider_at(result))

    def SuspendRider(self, request: pb.SuspendRiderRequest, context: grpc.ServicerContext
                     ) -> pb.SuspendRiderResponse:
        result = self.app.suspend_rider(rider_id=request.rider_id, reason=request.reason)
        return pb.SuspendRiderResponse(rider=self._rider_at(result))

    def ReinstateRider(self, request: pb.ReinstateRiderRequest, context: grpc.ServicerContext
                       ) -> pb.ReinstateRiderResponse:
        result = self.app.reinstate_rider(rider_id=request.rider_id, reason=request.reason)
        return pb.ReinstateRiderResponse(rider=self._rider_at(result))

    def RecordRiderLeft(self, request: pb.RecordRiderLeftRequest, context: grpc.ServicerContext
                        ) -> pb.RecordRiderLeftResponse:
        result = self.app.record_rider_left(rider_id=request.rider_id, reason=request.reason)
        return pb.RecordRiderLeftResponse(rider=self._rider_at(result))

    def RecordCareerMilestone(self, request: pb.RecordCareerMilestoneRequest,
                              context: grpc.ServicerContext) -> pb.RecordCareerMilestoneResponse:
        violations = Violations()  # reported with the application's findings, in one answer
        result = self.app.record_career_milestone(
            rider_id=request.rider_id,
            kind=enum_in(request.kind, pb.CareerMilestoneKind, CareerMilestoneKind, violations,
                         "kind"),
            organisation_id=request.organisation_id,
            effective_at=optional_time(request, "effective_time", violations),
            note=request.note, violations=violations)
        return pb.RecordCareerMilestoneResponse(rider=self._rider_at(result))

    def GrantConsent(self, request: pb.GrantConsentRequest, context: grpc.ServicerContext
                     ) -> pb.GrantConsentResponse:
        violations = Violations()
        result = self.app.grant_consent(
            rider_id=request.rider_id,
            scope=enum_in(request.scope, pb.ConsentScope, ConsentScope, violations, "scope"),
            recipient_id=request.recipient_id, violations=violations)
        return pb.GrantConsentResponse(rider=self._rider_at(result),
                                       consent_id=result["consent_id"])

    def WithdrawConsent(self, request: pb.WithdrawConsentRequest, context: grpc.ServicerContext
                        ) -> pb.WithdrawConsentResponse:
        result = self.app.withdraw_consent(rider_id=request.rider_id,
                                           consent_id=request.consent_id)
        return pb.WithdrawConsentResponse(rider=self._rider_at(result))

    def GetRider(self, request: pb.GetRiderRequest, context: grpc.ServicerContext
                 ) -> pb.GetRiderResponse:
        return pb.GetRiderResponse(rider=self._rider(self.app.rider(request.rider_id)))

    def GetRiderRecord(self, request: pb.GetRiderRecordRequest, context: grpc.ServicerContext
                       ) -> pb.GetRiderRecordResponse:
        rider, record, departments = self.app.rider_record(request.rider_id)
        return pb.GetRiderRecordResponse(record=_record(self._rider(rider), record, departments))

    def LookupRider(self, request: pb.LookupRiderRequest, context: grpc.ServicerContext
                    ) -> pb.LookupRiderResponse:
        return pb.LookupRiderResponse(rider=self._rider(self.app.lookup_rider(
            platform_id=request.platform_id, platform_rider_id=request.platform_rider_id)))

    def ListRiders(self, request: pb.ListRidersRequest, context: grpc.ServicerContext
                   ) -> pb.ListRidersResponse:
        violations = Violations()
        found, token = self.app.list_riders(
            home_street_id=request.home_street_id, station_id=request.station_id,
            status=enum_in(request.status, pb.RiderStatus, RiderStatus, violations, "status"),
            page_size=request.page_size, page_token=request.page_token, violations=violations)
        return pb.ListRidersResponse(riders=[self._rider(r) for r in found],
                                     next_page_token=token)

    def EraseRiderPersonalData(self, request: pb.EraseRiderPersonalDataRequest,
                               context: grpc.ServicerContext) -> pb.EraseRiderPersonalDataResponse:
        result = self.app.erase_rider_personal_data(
            rider_id=request.rider_id, reason=request.reason)
        return pb.EraseRiderPersonalDataResponse(rider=self._rider_at(result))

    # ------------------------------------------------------------------ rendering

    def _rider_at(self, result: CommandResult) -> pb.Rider:
        # The rider as this command left it (also on a retry): the first answer, not today's.
        return self._rider(self.app.rider(result.id, result.version))

    @staticmethod
    def _organisation(o: OrganisationView) -> pb.Organisation:
        return pb.Organisation(
            organisation_id=o.organisation_id, kind=enum_out(o.kind, pb.OrganisationKind),
            name=o.name, parent_id=o.parent_id,
            department_function=enum_out(o.department_function, pb.DepartmentFunction),
            create_time=timestamp(o.created_at), version=o.version)

    @staticmethod
    def _space(s: ServiceSpaceView) -> pb.ServiceSpace:
        return pb.ServiceSpace(
            service_space_id=s.service_space_id, street_id=s.street_id, name=s.name,
            address=s.address, amenities=[enum_out(a, pb.Amenity) for a in s.amenities],
            opening_hours=[pb.OpeningHours(**h) for h in s.opening_hours],
            create_time=timestamp(s.created_at), version=s.version,
            location=geo_point_out(s.location["latitude"], s.location["longitude"], pb.Location,
                                   pb.CoordinateSystem) if s.location else None)

    @staticmethod
    def _rider(r: RiderView) -> pb.Rider:
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
    def _amenities(values: Any, violations: Violations) -> list[Amenity | None]:
        return [enum_in(v, pb.Amenity, Amenity, violations, f"amenities[{i}]")
                for i, v in enumerate(values)]

    @staticmethod
    def _location(request: Any, violations: Violations) -> GeoPoint | None:
        if not request.HasField("location"):
            return None
        return geo_point_in(request.location, pb.CoordinateSystem, violations, "location")

    @staticmethod
    def _hours(values: Any) -> list[dict[str, Any]]:
        return [{"weekday": h.weekday, "opens": h.opens, "closes": h.closes} for h in values]


def _teaching_pair(pair: dict[str, dict[str, str]]) -> Any:
    """training's SESSION_SCHEDULED pair in its contract's message; None (unset) for nobody."""
    if not pair:
        return None
    return training_pb.TeachingPair(
        station_master=training_pb.StationMaster(**pair["station_master"])
        if "station_master" in pair else None,
        teacher=training_pb.Teacher(**pair["teacher"]) if "teacher" in pair else None)


def _area_kind(value: int, violations: Violations, field: str) -> OrganisationKind | None:
    """The kind of area criteria are for; unspecified is a community's (as every call meant
    before business areas existed)."""
    if value == 0:
        return OrganisationKind.COMMUNITY
    return enum_in(value, pb.OrganisationKind, OrganisationKind, violations, field)


def _criteria(c: CriteriaView) -> pb.FriendlyMarkCriteria:
    return pb.FriendlyMarkCriteria(
        version=c.version, area_kind=enum_out(c.area_kind, pb.OrganisationKind),
        min_service_spaces=c.min_service_spaces,
        space_amenities=[enum_out(a, pb.Amenity) for a in c.space_amenities],
        min_friendly_merchants=c.min_friendly_merchants,
        co_building_pledge=c.co_building_pledge, street_attestation=c.street_attestation)


def _mark(m: FriendlyMarkView) -> pb.FriendlyMark:
    return pb.FriendlyMark(
        mark_id=m.mark_id, area_id=m.area_id, area_kind=enum_out(m.area_kind,
                                                                 pb.OrganisationKind),
        area_name=m.area_name, street_id=m.street_id, brand_name=m.brand_name,
        street_attestation=m.street_attestation,
        status=enum_out(m.status, pb.FriendlyMarkStatus), apply_time=timestamp(m.applied_at),
        criteria_version=m.criteria_version,
        results=[pb.FriendlyMarkCriterionResult(
            criterion=enum_out(r["criterion"], pb.FriendlyMarkCriterion),
            required=r["required"], found=r["found"], met=r["met"],
            evidence=[pb.FriendlyMarkEvidence(kind=e["kind"], id=e["id"], name=e["name"],
                                              source=e["source"], position=e["position"])
                      for e in r["evidence"]]) for r in m.results],
        award_time=timestamp(m.awarded_at), withdraw_time=timestamp(m.withdrawn_at),
        withdrawal_reason=m.withdrawal_reason, version=m.version)


def add_servicers(server: grpc.Server, app: Any) -> list[str]:
    pb_grpc.add_IdentityServiceServicer_to_server(IdentityServicer(app), server)
    return [SERVICE_NAME]


def _offers(values: Any, violations: Violations) -> list[tuple[OfferKind | None, str]]:
    return [(enum_in(o.kind, pb.OfferKind, OfferKind, violations, f"offers[{i}].kind"),
             o.description) for i, o in enumerate(values)]


def _partner(p: PartnerView) -> pb.Partner:
    """The profile; with what the partner gave when the view answered it (GetPartner of the
    current version), in training's and merchants' own words."""
    c = p.contributions
    return pb.Partner(
        organisation_id=p.organisation_id, organisation_name=p.organisation_name,
        organisation_kind=enum_out(p.organisation_kind, pb.OrganisationKind),
        category=enum_out(p.category, pb.PartnerCategory),
        offers=[pb.PartnerOffer(kind=enum_out(k, pb.OfferKind), description=d)
                for k, d in p.offers],
        register_time=timestamp(p.registered_at), revise_time=timestamp(p.revised_at),
        version=p.version,
        courses=[pb.PartnerCourse(
            course_id=e.course_id, title=e.title, track=enum_out(e.track, training_pb.Track),
            hours=str(e.hours), status=enum_out(e.status, training_pb.CourseStatus),
            publish_time=timestamp(e.published_at)) for e in c.courses] if c else [],
        perks=[pb.PartnerPerk(
            perk_id=e.perk_id, title=e.title, status=enum_out(e.status, merchants_pb.PerkStatus),
            publish_time=timestamp(e.published_at)) for e in c.perks] if c else [],
        sources=[pb.RecordSource(service=s.service, position=s.position, current=s.current,
                                 problem=s.problem, stopped_at=s.stopped_at)
                 for s in c.sources] if c else [],
        donations=[pb.PartnerDonation(
            donation_id=d.donation_id, campaign_id=d.campaign_id, campaign_name=d.campaign_name,
            street_id=d.street_id, packages=d.packages,
            items=[merchants_pb.CareItem(item=i, quantity=q) for i, q in d.items],
            donate_time=timestamp(d.donated_at)) for d in c.donations] if c else [])


def _uses(counts: dict[Amenity, int]) -> list[Any]:
    """Counts by amenity, in the contract's enum order; unused amenities left out."""
    return [pb.AmenityUse(amenity=enum_out(a, pb.Amenity), count=counts[a])
            for a in Amenity if counts.get(a)]


def _use_day(day: str, counts: dict[Amenity, int]) -> pb.SpaceUseDay:
    return pb.SpaceUseDay(day=day, uses=_uses(counts), total=sum(counts.values()))


def _use_total(u: SpaceUseView) -> pb.SpaceUseTotal:
    return pb.SpaceUseTotal(service_space_id=u.service_space_id, name=u.name,
                            totals=_uses(u.totals), total=sum(u.totals.values()))


def _record(rider: Any, r: RiderRecord, departments: dict[str, str]) -> pb.RiderRecord:
    """The record in the contract's words: the other services' own enums, decimal strings."""
    return pb.RiderRecord(
        rider=rider,
        sessions=[pb.RecordSession(
            session_id=e.session_id, course_id=e.course_id, course_title=e.course_title,
            track=enum_out(e.track, training_pb.Track), service_space_id=e.service_space_id,
            start_time=timestamp(e.starts_at), end_time=timestamp(e.ends_at),
            status=enum_out(e.status, training_pb.EnrolmentStatus), score=e.score,
            enrol_time=timestamp(e.enrolled_at), pair=_teaching_pair(e.pair))
            for e in r.sessions],
        completions=[pb.RecordCompletion(
            course_id=c.course_id, course_title=c.course_title, session_id=c.session_id,
            track=enum_out(c.track, training_pb.Track), hours=str(c.hours),
            result=enum_out(c.result, training_pb.CompletionResult), score=c.score,
            complete_time=timestamp(c.completed_at)) for c in r.completions],
        hours_by_track=[pb.RecordTrackHours(track=enum_out(t, training_pb.Track), hours=str(h))
                        for t, h in sorted(r.hours_by_track.items())],
        pre_job_certified_time=timestamp(r.certified_at),
        pre_job_course_ids=list(r.certified_course_ids),
        awards=[pb.RecordAward(
            award_id=a.award_id, badge_class_id=a.badge_class_id, badge_name=a.badge_name,
            kind=enum_out(a.kind, badges_pb.AwardKind),
            status=enum_out(a.status, badges_pb.AwardStatus),
            award_time=timestamp(a.awarded_at), expire_time=timestamp(a.expires_at),
            revoke_time=timestamp(a.revoked_at)) for a in r.awards],
        claims=[pb.RecordClaim(
            claim_id=c.claim_id, perk_id=c.perk_id, perk_title=c.perk_title,
            merchant_id=c.merchant_id, merchant_name=c.merchant_name,
            status=enum_out(c.status, merchants_pb.ClaimStatus), code=c.code,
            claim_time=timestamp(c.claimed_at), expire_time=timestamp(c.expires_at),
            redeem_time=timestamp(c.redeemed_at), reverse_time=timestamp(c.reversed_at))
            for c in r.claims],
        care_packages=[pb.RecordCarePackage(
            campaign_id=p.campaign_id, campaign_name=p.campaign_name, street_id=p.street_id,
            allocate_time=timestamp(p.allocated_at), hand_over_time=timestamp(p.handed_over_at))
            for p in r.packages],
        volunteer_shifts=[pb.RecordVolunteerShift(
            shift_id=s.shift_id, community_id=s.community_id, activity=s.activity,
            start_time=timestamp(s.started_at), hours=str(s.hours),
            status=enum_out(s.status, badges_pb.ShiftStatus)) for s in r.shifts],
        confirmed_volunteer_hours=str(r.confirmed_volunteer_hours),
        reports=[pb.RecordReport(
            report_id=e.report_id, kind=enum_out(e.kind, governance_pb.ReportKind),
            category=enum_out(e.category, governance_pb.Category), street_id=e.street_id,
            observe_time=timestamp(e.observed_at), submit_time=timestamp(e.submitted_at),
            status=enum_out(e.status, governance_pb.ReportStatus),
            assignments=[pb.RecordAssignment(
                department_id=a.department_id, department_name=departments.get(
                    a.department_id, ""),
                status=enum_out(a.status, governance_pb.AssignmentStatus),
                update_time=timestamp(a.changed_at)) for a in e.assignments],
            close_time=timestamp(e.closed_at), verify_time=timestamp(e.verified_at),
            duplicate_of_report_id=e.duplicate_of) for e in r.reports],
        pledge_signatures=[pb.RecordPledgeSignature(pledge_version=p.version,
                                                    sign_time=timestamp(p.signed_at))
                           for p in r.pledges],
        sources=[pb.RecordSource(service=s.service, position=s.position, current=s.current,
                                 problem=s.problem, stopped_at=s.stopped_at)
                 for s in r.sources])
