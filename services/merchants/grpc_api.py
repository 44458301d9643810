"""merchants' gRPC entry point: translate, call one application method, render."""

from __future__ import annotations

from typing import Any

import grpc
from qiji.merchants.v1 import merchants_service_pb2 as pb
from qiji.merchants.v1 import merchants_service_pb2_grpc as pb_grpc

from services.merchants.application import (
    CampaignView,
    CareItem,
    CareRuleInput,
    CareRulesView,
    ClaimView,
    MerchantsApplication,
    MerchantView,
    NearbyView,
    PerkView,
)
from services.merchants.domain.values import (
    CareRuleKind,
    Eligibility,
    LimitPeriod,
    MerchantAmenity,
    MerchantStatus,
    PerkKind,
    PerkStatus,
    PlaceAmenity,
    PlaceKind,
)
from shared.application import CommandResult
from shared.auth import (
    AUDITOR,
    CITY_ADMIN,
    DEPARTMENT,
    MERCHANT,
    PLATFORM,
    STREET_OFFICE,
)
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
    AllOf,
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

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["MerchantsService"].full_name

# A merchant is its own and its street office's; an approved one is in the public directory.
MERCHANT_ = Ref("merchant_id", "merchant")
MERCHANT_READ = Ref("merchant_id", "merchant", read=True)
# A perk is its merchant's (and the merchant's street office's); published, anyone reads it.
PERK = Ref("perk_id", "perk")
PERK_READ = Ref("perk_id", "perk", read=True)
# A claim is the rider's (their platform's, their street office's) and the merchant's.
CLAIM = Ref("claim_id", "claim")
# A care campaign is its street office's; who got a package is each rider's platform's.
CAMPAIGN = Ref("campaign_id", "campaign")
CAMPAIGN_READ = Ref("campaign_id", "campaign", read=True)
# The rider's map: places are public reference data, so a request naming no rider reaches
# nothing anyone owns (the optional ref asks nothing); one naming a rider reaches that rider,
# and only the rider's owners may ask it (an unknown rider is no one's: refused alike).
NEARBY = AllOf((Ref("rider_id", "rider", optional=True, read=True),))


# Who may call each RPC, and for each role that acts for one organisation, what that
# organisation must own (shared/tenancy.py). An RPC missing here is refused to everyone.
ACCESS = access_table(SERVICE_NAME, {
    # A merchant applies for itself, or its street office for it.
    "ApplyMerchant": scoped(CITY_ADMIN, street_office=Ref("street_id", "organisation"),
                            merchant=Ref("merchant_id", "organisation")),
    "ApproveMerchant": scoped(CITY_ADMIN, street_office=MERCHANT_),
    "RejectMerchant": scoped(CITY_ADMIN, street_office=MERCHANT_),
    "SuspendMerchant": scoped(CITY_ADMIN, street_office=MERCHANT_),
    "ReinstateMerchant": scoped(CITY_ADMIN, street_office=MERCHANT_),
    "UpdateMerchantAmenities": scoped(CITY_ADMIN, street_office=MERCHANT_, merchant=MERCHANT_),
    "UpdateMerchantPlace": scoped(CITY_ADMIN, street_office=MERCHANT_, merchant=MERCHANT_),
    "GetMerchant": scoped(CITY_READERS, tenants=each(MERCHANT_READ)),
    "ListMerchants": scoped(CITY_READERS, tenants=each(Rows("merchant", "id"))),
    "CreatePerkOffer": once(scoped(CITY_ADMIN, merchant=MERCHANT_)),
    "PublishPerkOffer": scoped(CITY_ADMIN, merchant=PERK),
    "PausePerkOffer": scoped(CITY_ADMIN, merchant=PERK),
    "WithdrawPerkOffer": scoped(CITY_ADMIN, merchant=PERK),
    "GetPerkOffer": scoped(CITY_READERS, tenants=each(PERK_READ)),
    "ListPerkOffers": scoped(CITY_READERS, tenants=each(Rows("perk", "id"))),
    # The rider's side is their platform's app (or their street office's counter).
    "ListPerksForRider": scoped(CITY_ADMIN, platform=RIDER, street_office=RIDER),
    "ClaimPerk": once(scoped(platform=RIDER, street_office=RIDER)),
    "GetClaim": scoped(CITY_ADMIN, AUDITOR, platform=CLAIM, street_office=CLAIM),
    # A merchant redeems at its own counter: a code of another merchant is, to it, no code.
    "RedeemCode": scoped(merchant=MERCHANT_),
    "ReverseRedemption": scoped(merchant=CLAIM),
    # Not "merchant": an approved merchant is public, its redemptions are not.
    "ListRedemptions": scoped(CITY_ADMIN, AUDITOR,
                              tenants=each(Rows("merchant_books", "merchant_id"),
                                               MERCHANT, STREET_OFFICE)),
    "CreateCareCampaign": once(scoped(CITY_ADMIN, street_office=Ref("street_id", "organisation"))),
    # The campaign's street office records what a sponsor gave; the sponsor itself is not a
    # tenant of the campaign (giving grants no access to who received a package).
    "RecordCareDonation": once(scoped(CITY_ADMIN, street_office=CAMPAIGN)),
    # The rider's side, as ListPerksForRider: their platform's app, their street office.
    "ListCareCampaignsForRider": scoped(CITY_ADMIN, platform=RIDER, street_office=RIDER),
    # The city's own data: the city admin sets it, whoever may read campaigns reads it.
    "SetCareEligibilityRules": city_wide(CITY_ADMIN),
    "GetCareEligibilityRules": public(CITY_READERS, STREET_OFFICE, DEPARTMENT, PLATFORM),
    "AllocateCarePackage": scoped(CITY_ADMIN, street_office=CAMPAIGN),
    "RecordHandOver": scoped(CITY_ADMIN, street_office=CAMPAIGN),
    "GetCareCampaign": scoped(CITY_READERS, tenants=each(CAMPAIGN_READ, STREET_OFFICE,
                                                              DEPARTMENT, PLATFORM)),
    "ListCareCampaigns": scoped(CITY_READERS, tenants=each(Rows("campaign", "id"), STREET_OFFICE,
                                                                DEPARTMENT, PLATFORM)),
    # As GetCareCampaign, page by page: a platform lists its own riders' packages only.
    "ListCarePackageAllocations": scoped(CITY_READERS, tenants=each(
        CAMPAIGN_READ, STREET_OFFICE, DEPARTMENT, PLATFORM)),
    # Every role; with a rider_id only the rider's platform and home street office (the
    # rider's owners, as for ListPerksForRider) among the tenants.
    "FindNearby": scoped(CITY_READERS, tenants=each(NEARBY)),
})


class MerchantsServicer(pb_grpc.MerchantsServiceServicer):
    def __init__(self, app: MerchantsApplication):
        self.app = app

    # ------------------------------------------------------------------ merchants

    def ApplyMerchant(self, request: pb.ApplyMerchantRequest, context: grpc.ServicerContext
                      ) -> pb.ApplyMerchantResponse:
        violations = Violations()  # reported with the application's findings, in one answer
        result = self.app.apply_merchant(
            merchant_id=request.merchant_id, name=request.name, street_id=request.street_id,
            category=request.category, latitude=request.location.latitude,
            longitude=request.location.longitude, address=request.location.address,
            amenities=self._amenities(request.amenities, violations),
            coordinate_system=geo_point_in(request.location, pb.CoordinateSystem, violations,
                                           "location").system,
            opening_hours=self._hours(request.opening_hours),
            business_area_id=request.business_area_id, violations=violations)
        return pb.ApplyMerchantResponse(merchant=self._merchant_at(result))

    def ApproveMerchant(self, request: pb.ApproveMerchantRequest, context: grpc.ServicerContext
                        ) -> pb.ApproveMerchantResponse:
        result = self.app.approve_merchant(merchant_id=request.merchant_id)
        return pb.ApproveMerchantResponse(merchant=self._merchant_at(result))

    def RejectMerchant(self, request: pb.RejectMerchantRequest, context: grpc.ServicerContext
                       ) -> pb.RejectMerchantResponse:
        result = self.app.reject_merchant(merchant_id=request.merchant_id,
                                          reason=request.reason)
        return pb.RejectMerchantResponse(merchant=self._merchant_at(result))

    def SuspendMerchant(self, request: pb.SuspendMerchantRequest, context: grpc.ServicerContext
                        ) -> pb.SuspendMerchantResponse:
        result = self.app.suspend_merchant(merchant_id=request.merchant_id,
                                           reason=request.reason)
        return pb.SuspendMerchantResponse(merchant=self._merchant_at(result))

    def ReinstateMerchant(self, request: pb.ReinstateMerchantRequest, context: grpc.ServicerContext
                          ) -> pb.ReinstateMerchantResponse:
        result = self.app.reinstate_merchant(merchant_id=request.merchant_id,
                                             reason=request.reason)
        return pb.ReinstateMerchantResponse(merchant=self._merchant_at(result))

    def UpdateMerchantAmenities(self, request: pb.UpdateMerchantAmenitiesRequest,
                                context: grpc.ServicerContext
                                ) -> pb.UpdateMerchantAmenitiesResponse:
        violations = Violations()
        result = self.app.update_merchant_amenities(
            merchant_id=request.merchant_id,
            amenities=self._amenities(request.amenities, violations), violations=violations)
        return pb.UpdateMerchantAmenitiesResponse(merchant=self._merchant_at(result))

    def UpdateMerchantPlace(self, request: pb.UpdateMerchantPlaceRequest,
                            context: grpc.ServicerContext) -> pb.UpdateMerchantPlaceResponse:
        violations = Violations()
        result = self.app.update_merchant_place(
            merchant_id=request.merchant_id, location=self._location(request, violations),
            address=request.location.address, opening_hours=self._hours(request.opening_hours),
            business_area_id=request.business_area_id, violations=violations)
        return pb.UpdateMerchantPlaceResponse(merchant=self._merchant_at(result))

    def GetMerchant(self, request: pb.GetMerchantRequest, context: grpc.ServicerContext
                    ) -> pb.GetMerchantResponse:
        return pb.GetMerchantResponse(
            merchant=self._merchant(self.app.merchant(request.merchant_id)))

    def ListMerchants(self, request: pb.ListMerchantsRequest, context: grpc.ServicerContext
                      ) -> pb.ListMerchantsResponse:
        violations = Violations()
        found, token = self.app.list_merchants(
            street_id=request.street_id,
            status=enum_in(request.status, pb.MerchantStatus, MerchantStatus, violations,
                           "status"),
            amenities=[a for a in self._amenities(request.amenities, violations) if a],
            page_size=request.page_size, page_token=request.page_token, violations=violations)
        return pb.ListMerchantsResponse(merchants=[self._merchant(m) for m in found],
                                        next_page_token=token)

    # ------------------------------------------------------------------ perks

    def CreatePerkOffer(self, request: pb.CreatePerkOfferRequest, context: grpc.ServicerContext
                        ) -> pb.CreatePerkOfferResponse:
        violations = Violations()
        result = self.app.create_perk_offer(
            merchant_id=request.merchant_id, title=request.title,
            kind=enum_in(request.kind, pb.PerkKind, PerkKind, violations, "kind"),
            percent_off=request.percent_off, amount_off_fen=request.amount_off_fen,
            free_item=request.free_item,
            eligibility=enum_in(request.eligibility, pb.Eligibility, Eligibility, violations,
                                "eligibility"),
            badge_class_id=request.badge_class_id, total_quota=request.total_quota,
            per_rider_limit=request.per_rider_limit,
            limit_period=enum_in(request.limit_period, pb.LimitPeriod, LimitPeriod, violations,
                                 "limit_period"),
            valid_from=optional_time(request, "valid_from_time", violations),
            valid_until=optional_time(request, "valid_until_time", violations),
            code_ttl_minutes=request.code_ttl_minutes, violations=violations)
        return pb.CreatePerkOfferResponse(perk_offer=self._perk_at(result))

    def PublishPerkOffer(self, request: pb.PublishPerkOfferRequest, context: grpc.ServicerContext
                         ) -> pb.PublishPerkOfferResponse:
        result = self.app.publish_perk_offer(perk_id=request.perk_id)
        return pb.PublishPerkOfferResponse(perk_offer=self._perk_at(result))

    def PausePerkOffer(self, request: pb.PausePerkOfferRequest, context: grpc.ServicerContext
                       ) -> pb.PausePerkOfferResponse:
        result = self.app.pause_perk_offer(perk_id=request.perk_id)
        return pb.PausePerkOfferResponse(perk_offer=self._perk_at(result))

    def WithdrawPerkOffer(self, request: pb.WithdrawPerkOfferRequest, context: grpc.ServicerContext
                          ) -> pb.WithdrawPerkOfferResponse:
        result = self.app.withdraw_perk_offer(perk_id=request.perk_id)
        return pb.WithdrawPerkOfferResponse(perk_offer=self._perk_at(result))

    def GetPerkOffer(self, request: pb.GetPerkOfferRequest, context: grpc.ServicerContext
                     ) -> pb.GetPerkOfferResponse:
        return pb.GetPerkOfferResponse(perk_offer=self._perk(self.app.perk(request.perk_id)))

    def ListPerkOffers(self, request: pb.ListPerkOffersRequest, context: grpc.ServicerContext
                       ) -> pb.ListPerkOffersResponse:
        violations = Violations()
        found, token = self.app.list_perk_offers(
            merchant_id=request.merchant_id,
            status=enum_in(request.status, pb.PerkStatus, PerkStatus, violations, "status"),
            page_size=request.page_size, page_token=request.page_token, violations=violations)
        return pb.ListPerkOffersResponse(perk_offers=[self._perk(p) for p in found],
                                         next_page_token=token)

    def ListPerksForRider(self, request: pb.ListPerksForRiderRequest, context: grpc.ServicerContext
                          ) -> pb.ListPerksForRiderResponse:
        found, token = self.app.perks_for_rider(
            rider_id=request.rider_id, street_id=request.street_id,
            page_size=request.page_size, page_token=request.page_token)
        return pb.ListPerksForRiderResponse(perk_offers=[self._perk(p) for p in found],
                                            next_page_token=token)

    # ------------------------------------------------------------------ claims

    def ClaimPerk(self, request: pb.ClaimPerkRequest, context: grpc.ServicerContext
                  ) -> pb.ClaimPerkResponse:
        result = self.app.claim_perk(perk_id=request.perk_id, rider_id=request.rider_id)
        return pb.ClaimPerkResponse(
            claim=self._claim(self.app.claim(result.id, result.version)),
            remaining_quota=result["remaining"])

    def GetClaim(self, request: pb.GetClaimRequest, context: grpc.ServicerContext
                 ) -> pb.GetClaimResponse:
        return pb.GetClaimResponse(claim=self._claim(self.app.claim(request.claim_id)))

    def RedeemCode(self, request: pb.RedeemCodeRequest, context: grpc.ServicerContext
                   ) -> pb.RedeemCodeResponse:
        result = self.app.redeem_code(merchant_id=request.merchant_id, code=request.code)
        return pb.RedeemCodeResponse(
            claim=self._claim(self.app.claim(result.id, result.version)),
            perk_offer=self._perk(self.app.perk(result["perk_id"], result["perk_version"])))

    def ReverseRedemption(self, request: pb.ReverseRedemptionRequest, context: grpc.ServicerContext
                          ) -> pb.ReverseRedemptionResponse:
        result = self.app.reverse_redemption(claim_id=request.claim_id, reason=request.reason)
        return pb.ReverseRedemptionResponse(
            claim=self._claim(self.app.claim(result.id, result.version)),
            remaining_quota=result["remaining"])

    def ListRedemptions(self, request: pb.ListRedemptionsRequest, context: grpc.ServicerContext
                        ) -> pb.ListRedemptionsResponse:
        found, token = self.app.redemptions(
            merchant_id=request.merchant_id, perk_id=request.perk_id,
            page_size=request.page_size, page_token=request.page_token)
        return pb.ListRedemptionsResponse(redemptions=[pb.Redemption(
            claim_id=r["id"], perk_id=r["perk_id"], rider_id=r["rider_id"],
            redeem_time=timestamp(r["redeemed_at"]), remaining_quota_after=r["remaining_after"],
            reversed=r["reversed"],
            reverse_time=timestamp(r.get("reversed_at")),
            remaining_quota_after_reversal=r.get("remaining_after_reversal", 0))
            for r in found], next_page_token=token)

    # ------------------------------------------------------------------ care packages

    def CreateCareCampaign(self, request: pb.CreateCareCampaignRequest,
                           context: grpc.ServicerContext) -> pb.CreateCareCampaignResponse:
        result = self.app.create_care_campaign(
            street_id=request.street_id, name=request.name, description=request.description,
            stock=request.stock, contents=self._items(request.contents),
            eligibility_rules=list(request.eligibility_rules))
        return pb.CreateCareCampaignResponse(campaign=self._campaign_at(result))

    def RecordCareDonation(self, request: pb.RecordCareDonationRequest,
                           context: grpc.ServicerContext) -> pb.RecordCareDonationResponse:
        result = self.app.record_care_donation(
            campaign_id=request.campaign_id, sponsor_id=request.sponsor_id,
            packages=request.packages, items=self._items(request.items))
        return pb.RecordCareDonationResponse(campaign=self._campaign_at(result))

    def ListCareCampaignsForRider(self, request: pb.ListCareCampaignsForRiderRequest,
                                  context: grpc.ServicerContext
                                  ) -> pb.ListCareCampaignsForRiderResponse:
        found, token = self.app.campaigns_for_rider(
            rider_id=request.rider_id, page_size=request.page_size,
            page_token=request.page_token)
        return pb.ListCareCampaignsForRiderResponse(
            campaigns=[self._campaign(c) for c in found], next_page_token=token)

    def SetCareEligibilityRules(self, request: pb.SetCareEligibilityRulesRequest,
                                context: grpc.ServicerContext
                                ) -> pb.SetCareEligibilityRulesResponse:
        violations = Violations()
        rules = [CareRuleInput(
            name=r.name, kind=enum_in(r.kind, pb.CareRuleKind, CareRuleKind, violations,
                                      f"rules[{i}].kind"),
            days=r.days, badge_class_id=r.badge_class_id) for i, r in enumerate(request.rules)]
        result = self.app.set_care_eligibility_rules(rules=rules, violations=violations)
        return pb.SetCareEligibilityRulesResponse(
            rules=self._care_rules(self.app.care_eligibility_rules(result.version)))

    def GetCareEligibilityRules(self, request: pb.GetCareEligibilityRulesRequest,
                                context: grpc.ServicerContext
                                ) -> pb.GetCareEligibilityRulesResponse:
        return pb.GetCareEligibilityRulesResponse(
            rules=self._care_rules(self.app.care_eligibility_rules(request.version)))

    def AllocateCarePackage(self, request: pb.AllocateCarePackageRequest,
                            context: grpc.ServicerContext) -> pb.AllocateCarePackageResponse:
        result = self.app.allocate_care_package(campaign_id=request.campaign_id,
                                                rider_id=request.rider_id)
        campaign = self.app.campaign(result.id, result.version, rider_id=request.rider_id)
        return pb.AllocateCarePackageResponse(campaign=self._campaign(campaign),
                                              allocation=self._allocation_of(campaign))

    def RecordHandOver(self, request: pb.RecordHandOverRequest, context: grpc.ServicerContext
                       ) -> pb.RecordHandOverResponse:
        result = self.app.record_hand_over(campaign_id=request.campaign_id,
                                           rider_id=request.rider_id,
                                           handed_over_by=request.handed_over_by)
        campaign = self.app.campaign(result.id, result.version, rider_id=request.rider_id)
        return pb.RecordHandOverResponse(campaign=self._campaign(campaign),
                                         allocation=self._allocation_of(campaign))

    def GetCareCampaign(self, request: pb.GetCareCampaignRequest, context: grpc.ServicerContext
                        ) -> pb.GetCareCampaignResponse:
        return pb.GetCareCampaignResponse(
            campaign=self._campaign(self.app.campaign(request.campaign_id)))

    def ListCareCampaigns(self, request: pb.ListCareCampaignsRequest, context: grpc.ServicerContext
                          ) -> pb.ListCareCampaignsResponse:
        found, token = self.app.list_campaigns(street_id=request.street_id,
                                               page_size=request.page_size,
                                               page_token=request.page_token)
        return pb.ListCareCampaignsResponse(campaigns=[self._campaign(c) for c in found],
                                            next_page_token=token)

    def ListCarePackageAllocations(self, request: pb.ListCarePackageAllocationsRequest,
                                   context: grpc.ServicerContext
                                   ) -> pb.ListCarePackageAllocationsResponse:
        found, token = self.app.campaign_allocations(campaign_id=request.campaign_id,
                                                     page_size=request.page_size,
                                                     page_token=request.page_token)
        return pb.ListCarePackageAllocationsResponse(
            allocations=[self._allocation(rider_id, a) for rider_id, a in found],
            next_page_token=token)

    # ------------------------------------------------------------------ the rider's map

    def FindNearby(self, request: pb.FindNearbyRequest, context: grpc.ServicerContext
                   ) -> pb.FindNearbyResponse:
        violations = Violations()
        found, token = self.app.find_nearby(
            location=self._location(request, violations),
            radius_metres=request.radius_metres,
            amenities=[enum_in(v, pb.PlaceAmenity, PlaceAmenity, violations, f"amenities[{i}]")
                       for i, v in enumerate(request.amenities)],
            open_now=request.open_now,
            kinds=[enum_in(v, pb.PlaceKind, PlaceKind, violations, f"kinds[{i}]")
                   for i, v in enumerate(request.kinds)],
            rider_id=request.rider_id, page_size=request.page_size,
            page_token=request.page_token, violations=violations)
        return pb.FindNearbyResponse(places=[self._nearby(n) for n in found],
                                     next_page_token=token)

    # ------------------------------------------------------------------ rendering

    def _merchant_at(self, result: CommandResult) -> pb.Merchant:
        return self._merchant(self.app.merchant(result.id, result.version))

    def _perk_at(self, result: CommandResult) -> pb.PerkOffer:
        return self._perk(self.app.perk(result.id, result.version))

    def _campaign_at(self, result: CommandResult) -> pb.CareCampaign:
        return self._campaign(self.app.campaign(result.id, result.version))

    @staticmethod
    def _merchant(m: MerchantView) -> pb.Merchant:
        return pb.Merchant(
            merchant_id=m.merchant_id, name=m.name, street_id=m.street_id, category=m.category,
            location=geo_point_out(m.latitude, m.longitude, pb.Location, pb.CoordinateSystem,
                                   address=m.address),
            amenities=[enum_out(a, pb.MerchantAmenity) for a in m.amenities],
            status=enum_out(m.status, pb.MerchantStatus), status_reason=m.status_reason,
            version=m.version, opening_hours=[pb.OpeningHours(**h) for h in m.opening_hours],
            business_area_id=m.business_area_id)

    def _nearby(self, n: NearbyView) -> pb.NearbyPlace:
        p = n.place
        return pb.NearbyPlace(
            kind=enum_out(p.kind, pb.PlaceKind),
            service_space_id=p.ident if p.kind is PlaceKind.SERVICE_SPACE else "",
            merchant_id=p.ident if p.kind is PlaceKind.MERCHANT else "",
            name=p.name,
            location=geo_point_out(p.latitude, p.longitude, pb.Location, pb.CoordinateSystem,
                                   address=p.address),
            distance_metres=n.distance_metres,
            amenities=sorted(enum_out(a, pb.PlaceAmenity) for a in p.amenities),
            opening_hours=[pb.OpeningHours(weekday=h["weekday"], opens=h["opens"],
                                           closes=h["closes"]) for h in p.opening_hours],
            open_now=n.open_now, claimable_perks=[self._perk(k) for k in n.claimable_perks])

    @staticmethod
    def _perk(p: PerkView) -> pb.PerkOffer:
        return pb.PerkOffer(
            perk_id=p.perk_id, merchant_id=p.merchant_id, title=p.title,
            kind=enum_out(p.kind, pb.PerkKind), percent_off=p.percent_off,
            amount_off_fen=p.amount_off_fen, free_item=p.free_item,
            eligibility=enum_out(p.eligibility, pb.Eligibility),
            badge_class_id=p.badge_class_id, total_quota=p.total_quota,
            per_rider_limit=p.per_rider_limit,
            limit_period=enum_out(p.limit_period, pb.LimitPeriod),
            valid_from_time=timestamp(p.valid_from), valid_until_time=timestamp(p.valid_until),
            code_ttl_minutes=p.code_ttl_minutes, status=enum_out(p.status, pb.PerkStatus),
            remaining_quota=p.remaining, outstanding_codes=p.outstanding,
            redeemed_count=p.redeemed, version=p.version)

    @staticmethod
    def _claim(c: ClaimView) -> pb.Claim:
        return pb.Claim(
            claim_id=c.claim_id, perk_id=c.perk_id, merchant_id=c.merchant_id,
            rider_id=c.rider_id, code=c.code, status=enum_out(c.status, pb.ClaimStatus),
            claim_time=timestamp(c.claimed_at), expire_time=timestamp(c.expires_at),
            redeem_time=timestamp(c.redeemed_at), reverse_time=timestamp(c.reversed_at),
            reverse_reason=c.reverse_reason, version=c.version)

    @staticmethod
    def _campaign(c: CampaignView) -> pb.CareCampaign:
        return pb.CareCampaign(
            campaign_id=c.campaign_id, street_id=c.street_id, name=c.name,
            description=c.description, stock=c.stock, allocated=c.allocated,
            handed_over=c.handed_over,
            allocations=[MerchantsServicer._allocation(rider_id, a)
                         for rider_id, a in c.allocations.items()],
            allocations_next_page_token=c.allocations_next_page_token,
            version=c.version, contents=[pb.CareItem(**i) for i in c.contents],
            eligibility_rules=[MerchantsServicer._care_rule(r) for r in c.rules],
            eligibility_rules_version=c.rules_version,
            donations=[pb.CareDonation(
                sponsor_id=d["sponsor_id"], packages=d["packages"],
                items=[pb.CareItem(**i) for i in d["items"]], record_time=timestamp(d["at"]),
                recorded_by=d["recorded_by"]) for d in c.donations],
            remaining=c.remaining)

    @staticmethod
    def _allocation(rider_id: str, a: dict[str, Any]) -> pb.CarePackageAllocation:
        return pb.CarePackageAllocation(
            rider_id=rider_id, allocate_time=timestamp(a["allocated_at"]),
            hand_over_time=timestamp(a["handed_over_at"]),
            handed_over_by=a["handed_over_by"], recorded_by=a["recorded_by"])

    @staticmethod
    def _allocation_of(c: CampaignView) -> pb.CarePackageAllocation:
        """The package the command named (campaign(rider_id=...))."""
        assert c.allocation is not None
        return MerchantsServicer._allocation(c.allocation["rider_id"], c.allocation)

    @staticmethod
    def _care_rule(r: dict[str, Any]) -> pb.CareEligibilityRule:
        return pb.CareEligibilityRule(name=r["name"], kind=enum_out(r["kind"], pb.CareRuleKind),
                                      days=r["days"], badge_class_id=r["badge_class_id"])

    def _care_rules(self, view: CareRulesView) -> pb.CareEligibilityRules:
        return pb.CareEligibilityRules(rules=[self._care_rule(r) for r in view.rules],
                                       version=view.version,
                                       update_time=timestamp(view.updated_at))

    @staticmethod
    def _items(values: Any) -> list[CareItem]:
        return [CareItem(item=i.item, quantity=i.quantity) for i in values]

    @staticmethod
    def _location(request: Any, violations: Violations) -> GeoPoint | None:
        if not request.HasField("location"):
            return None
        return geo_point_in(request.location, pb.CoordinateSystem, violations, "location")

    @staticmethod
    def _hours(values: Any) -> list[dict[str, Any]]:
        return [{"weekday": h.weekday, "opens": h.opens, "closes": h.closes} for h in values]

    @staticmethod
    def _amenities(values: Any, violations: Violations) -> list[MerchantAmenity | None]:
        return [enum_in(v, pb.MerchantAmenity, MerchantAmenity, violations, f"amenities[{i}]")
                for i, v in enumerate(values)]


def add_servicers(server: grpc.Server, app: Any) -> list[str]:
    pb_grpc.add_MerchantsServiceServicer_to_server(MerchantsServicer(app), server)
    return [SERVICE_NAME]
