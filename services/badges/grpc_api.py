"""badges' gRPC entry point: translate, call one application method, render."""

from __future__ import annotations

import base64
import json
from typing import Any

import grpc
from qiji.badges.v1 import badges_service_pb2 as pb
from qiji.badges.v1 import badges_service_pb2_grpc as pb_grpc

from services.badges.application import BadgesApplication, SignUpView, narrative_shown
from services.badges.credentials import image_url
from services.badges.domain.activities import (
    VolunteerActivity,
    VolunteerActivityKind,
    VolunteerSignUpStatus,
)
from services.badges.domain.criteria import Criteria, Track
from services.badges.domain.model import Award, AwardCeremony, BadgeClass, VolunteerShift
from services.badges.domain.recognition import Recognition, RecognitionTitle
from shared import masking
from shared.application import CommandResult
from shared.auth import CITY_ADMIN, ROLES
from shared.errors import Violations
from shared.grpc.convert import enum_in, enum_out, optional_time, timestamp
from shared.tenancy import (
    CITY_READERS,
    RIDER,
    Ref,
    Rows,
    access_table,
    city_wide,
    once,
    public,
    scoped,
)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["BadgesService"].full_name

# Volunteer service is the rider's (their platform's, their street office's) and, for
# confirming it, the community's where it was done (and that community's street office's).
SHIFT_AT = Ref("shift_id", "shift_community")
COMMUNITY_OF_REQUEST = Ref("community_id", "organisation")
# An award is its rider's: their platform's, their street office's.
AWARD = Ref("award_id", "award")
# A ceremony is its street's (each award it presents is checked against the caller too).
CEREMONY_STREET = Ref("street_id", "organisation")
# A volunteer activity is its community's, and that community's street office's.
ACTIVITY = Ref("activity_id", "activity")
# A sign-up shows to the activity's community (and street office) and to the rider's platform.
SIGN_UP_AT = Rows("organisation", "community_id")

# Who may call each RPC, and for each role that acts for one organisation, what that
# organisation must own (shared/tenancy.py). An RPC missing here is refused to everyone.
ACCESS = access_table(SERVICE_NAME, {
    # Service is logged by the rider's app (their platform) or at the community's desk, and
    # confirmed by the community where it was done (or its street office).
    "LogVolunteerService": once(scoped(CITY_ADMIN, platform=RIDER, community=COMMUNITY_OF_REQUEST,
                                  street_office=COMMUNITY_OF_REQUEST)),
    "ConfirmVolunteerService": scoped(CITY_ADMIN, community=SHIFT_AT, street_office=SHIFT_AT),
    "RejectVolunteerService": scoped(CITY_ADMIN, community=SHIFT_AT, street_office=SHIFT_AT),
    "ListVolunteerService": scoped(CITY_READERS, platform=RIDER, street_office=RIDER,
                                   community=Rows("shift_community", "id")),
    # A community publishes its activities and records who came (its street office may act
    # for it); riders sign up and withdraw through their platform's app. Published activities
    # are public, like badge classes: riders' apps browse them; who signed up is not in them.
    "PublishVolunteerActivity": once(scoped(CITY_ADMIN, community=COMMUNITY_OF_REQUEST,
                                            street_office=COMMUNITY_OF_REQUEST)),
    "ReviseVolunteerActivity": scoped(CITY_ADMIN, community=ACTIVITY, street_office=ACTIVITY),
    "CancelVolunteerActivity": scoped(CITY_ADMIN, community=ACTIVITY, street_office=ACTIVITY),
    "RecordVolunteerAttendance": scoped(CITY_ADMIN, community=ACTIVITY, street_office=ACTIVITY),
    "GetVolunteerActivity": public(ROLES),
    "ListVolunteerActivities": public(ROLES),
    "SignUpForVolunteerActivity": scoped(CITY_ADMIN, platform=RIDER),
    "WithdrawVolunteerSignUp": scoped(CITY_ADMIN, platform=RIDER),
    "ListVolunteerSignUps": scoped(CITY_READERS, platform=Rows("rider", "rider_id"),
                                   community=SIGN_UP_AT, street_office=SIGN_UP_AT),
    "CreateBadgeClass": once(city_wide(CITY_ADMIN)),
    "ReviseBadgeCriteria": city_wide(CITY_ADMIN),
    # Badge classes and the issuer's keys are public: a merchant checks a badge-only perk,
    # anyone checks a credential a rider shows them.
    "GetBadgeClass": public(ROLES),
    "ListBadgeClasses": public(ROLES),
    "UploadBadgeImage": city_wide(CITY_ADMIN),
    "GrantBadge": scoped(CITY_ADMIN, street_office=RIDER),
    "RevokeAward": scoped(CITY_ADMIN, street_office=AWARD),
    "GetAward": scoped(CITY_READERS, platform=AWARD, street_office=AWARD),
    "ListRiderAwards": scoped(CITY_READERS, platform=RIDER, street_office=RIDER),
    "ListBadgeHolders": scoped(CITY_READERS, platform=Rows("rider", "rider_id"),
                               street_office=Rows("rider", "rider_id")),
    "ExplainAward": scoped(CITY_READERS, platform=RIDER, street_office=RIDER),
    "ExportCredential": scoped(CITY_READERS, platform=AWARD, street_office=AWARD),
    "VerifyCredential": public(ROLES),
    "GetIssuerKeys": public(ROLES),
    # What the public credentials face serves to anyone without a token (it reads them with
    # the `service` role): no personal data, the same answer for every caller.
    "GetIssuerProfile": public(ROLES),
    "GetAchievement": public(ROLES),
    "ListAchievements": public(ROLES),
    "GetBadgeImage": public(ROLES),
    "GetStatusList": public(ROLES),
    # A ladder is the city's, like the criteria; a ceremony is held by a street office (for
    # its own riders' awards) or the city.
    "ReviseBadgeProgression": city_wide(CITY_ADMIN),
    "RecordAwardCeremony": once(scoped(CITY_ADMIN, street_office=CEREMONY_STREET)),
    "ListAwardCeremonies": scoped(CITY_READERS, street_office=Rows("organisation", "street_id")),
    # Titles (城市治理合伙人) are the city's to define; a street office confers them on its own
    # riders (and revokes its riders'), as it grants badges.
    "CreateRecognitionTitle": once(city_wide(CITY_ADMIN)),
    "ReviseRecognitionTitle": city_wide(CITY_ADMIN),
    "ListRecognitionTitles": public(ROLES),
    "ConferRecognition": scoped(CITY_ADMIN, street_office=RIDER),
    "RevokeRecognition": scoped(CITY_ADMIN,
                                street_office=Ref("recognition_id", "recognition")),
    "ListRiderRecognitions": scoped(CITY_READERS, platform=RIDER, street_office=RIDER),
})


class BadgesServicer(pb_grpc.BadgesServiceServicer):
    def __init__(self, app: BadgesApplication):
        self.app = app

    # ------------------------------------------------------------------ volunteer service

    def LogVolunteerService(self, request: pb.LogVolunteerServiceRequest,
                            context: grpc.ServicerContext) -> pb.LogVolunteerServiceResponse:
        violations = Violations()  # reported with the application's findings, in one answer
        result = self.app.log_volunteer_service(
            rider_id=request.rider_id, community_id=request.community_id,
            activity=request.activity,
            started_at=optional_time(request, "start_time", violations), hours=request.hours,
            violations=violations)
        return pb.LogVolunteerServiceResponse(shift=self._shift_at(result))

    def ConfirmVolunteerService(self, request: pb.ConfirmVolunteerServiceRequest,
                                context: grpc.ServicerContext
                                ) -> pb.ConfirmVolunteerServiceResponse:
        result = self.app.confirm_volunteer_service(shift_id=request.shift_id)
        return pb.ConfirmVolunteerServiceResponse(shift=self._shift_at(result),
                                                  award_ids=result["award_ids"])

    def RejectVolunteerService(self, request: pb.RejectVolunteerServiceRequest,
                               context: grpc.ServicerContext) -> pb.RejectVolunteerServiceResponse:
        result = self.app.reject_volunteer_service(shift_id=request.shift_id,
                                                   reason=request.reason)
        return pb.RejectVolunteerServiceResponse(shift=self._shift_at(result))

    def ListVolunteerService(self, request: pb.ListVolunteerServiceRequest,
                             context: grpc.ServicerContext) -> pb.ListVolunteerServiceResponse:
        violations = Violations()
        status = enum_in(request.status, pb.ShiftStatus, str, violations, "status") or ""
        shifts, token, hours = self.app.volunteer_service(
            rider_id=request.rider_id, status=status, page_size=request.page_size,
            page_token=request.page_token, violations=violations)
        return pb.ListVolunteerServiceResponse(shifts=[self._shift(s) for s in shifts],
                                               next_page_token=token,
                                               confirmed_hours=_decimal(hours))

    # ------------------------------------------------------------------ volunteer activities

    def PublishVolunteerActivity(self, request: pb.PublishVolunteerActivityRequest,
                                 context: grpc.ServicerContext
                                 ) -> pb.PublishVolunteerActivityResponse:
        violations = Violations()
        result = self.app.publish_volunteer_activity(
            community_id=request.community_id, **self._plan_in(request, violations),
            violations=violations)
        return pb.PublishVolunteerActivityResponse(activity=self._activity_at(result))

    def ReviseVolunteerActivity(self, request: pb.ReviseVolunteerActivityRequest,
                                context: grpc.ServicerContext
                                ) -> pb.ReviseVolunteerActivityResponse:
        violations = Violations()
        result = self.app.revise_volunteer_activity(
            activity_id=request.activity_id, **self._plan_in(request, violations),
            violations=violations)
        return pb.ReviseVolunteerActivityResponse(activity=self._activity_at(result))

    def CancelVolunteerActivity(self, request: pb.CancelVolunteerActivityRequest,
                                context: grpc.ServicerContext
                                ) -> pb.CancelVolunteerActivityResponse:
        result = self.app.cancel_volunteer_activity(activity_id=request.activity_id,
                                                    reason=request.reason)
        # The whole roll to the activity's own (community, street office, city); a platform
        # never calls this.
        return pb.CancelVolunteerActivityResponse(
            activity=self._activity_at(result),
            cancelled_rider_ids=[r for r in result["cancelled_rider_ids"]
                                 if self.app.caller_owns("activity", request.activity_id)
                                 or self.app.sees_rider(r)])

    def GetVolunteerActivity(self, request: pb.GetVolunteerActivityRequest,
                             context: grpc.ServicerContext) -> pb.GetVolunteerActivityResponse:
        return pb.GetVolunteerActivityResponse(
            activity=self._activity(self.app.volunteer_activity(request.activity_id)))

    def ListVolunteerActivities(self, request: pb.ListVolunteerActivitiesRequest,
                                context: grpc.ServicerContext
                                ) -> pb.ListVolunteerActivitiesResponse:
        violations = Violations()
        kind = enum_in(request.kind, pb.VolunteerActivityKind, VolunteerActivityKind, violations,
                       "kind")
        found, token = self.app.list_volunteer_activities(
            community_id=request.community_id, street_id=request.street_id,
            open_for_sign_up=request.open_for_sign_up, kind=kind, page_size=request.page_size,
            page_token=request.page_token, violations=violations)
        return pb.ListVolunteerActivitiesResponse(activities=[self._activity(a) for a in found],
                                                  next_page_token=token)

    def SignUpForVolunteerActivity(self, request: pb.SignUpForVolunteerActivityRequest,
                                   context: grpc.ServicerContext
                                   ) -> pb.SignUpForVolunteerActivityResponse:
        result = self.app.sign_up_for_volunteer_activity(activity_id=request.activity_id,
                                                         rider_id=request.rider_id)
        return pb.SignUpForVolunteerActivityResponse(sign_up=self._sign_up_at(result),
                                                     activity=self._activity_at(result))

    def WithdrawVolunteerSignUp(self, request: pb.WithdrawVolunteerSignUpRequest,
                                context: grpc.ServicerContext
                                ) -> pb.WithdrawVolunteerSignUpResponse:
        result = self.app.withdraw_volunteer_sign_up(activity_id=request.activity_id,
                                                     rider_id=request.rider_id)
        return pb.WithdrawVolunteerSignUpResponse(sign_up=self._sign_up_at(result),
                                                  activity=self._activity_at(result))

    def RecordVolunteerAttendance(self, request: pb.RecordVolunteerAttendanceRequest,
                                  context: grpc.ServicerContext
                                  ) -> pb.RecordVolunteerAttendanceResponse:
        result = self.app.record_volunteer_attendance(
            activity_id=request.activity_id, rider_id=request.rider_id, hours=request.hours)
        return pb.RecordVolunteerAttendanceResponse(
            sign_up=self._sign_up_at(result),
            shift=self._shift(self.app.shift(result["shift_id"], result["shift_version"])),
            award_ids=result["award_ids"])

    def ListVolunteerSignUps(self, request: pb.ListVolunteerSignUpsRequest,
                             context: grpc.ServicerContext) -> pb.ListVolunteerSignUpsResponse:
        violations = Violations()
        status = enum_in(request.status, pb.VolunteerSignUpStatus, VolunteerSignUpStatus,
                         violations, "status")
        found, token = self.app.volunteer_sign_ups(
            activity_id=request.activity_id, rider_id=request.rider_id, status=status,
            page_size=request.page_size, page_token=request.page_token, violations=violations)
        return pb.ListVolunteerSignUpsResponse(sign_ups=[self._sign_up(s) for s in found],
                                               next_page_token=token)

    @staticmethod
    def _plan_in(request: Any, violations: Violations) -> dict[str, Any]:
        return {"title": request.title, "description": request.description,
                "kind": enum_in(request.kind, pb.VolunteerActivityKind, VolunteerActivityKind,
                                violations, "kind"),
                "starts_at": optional_time(request, "start_time", violations),
                "ends_at": optional_time(request, "end_time", violations),
                "service_space_id": request.service_space_id, "address": request.address,
                "places": request.places,
                "sign_up_deadline": optional_time(request, "sign_up_deadline", violations)}

    # ------------------------------------------------------------------ badge classes

    def CreateBadgeClass(self, request: pb.CreateBadgeClassRequest, context: grpc.ServicerContext
                         ) -> pb.CreateBadgeClassResponse:
        violations = Violations()
        result = self.app.create_badge_class(
            name=request.name, description=request.description, image_url=request.image_url,
            issuer_id=request.issuer_id, criteria=self._criteria_in(request.criteria, violations),
            validity_days=request.validity_days, image=request.image,
            image_media_type=request.image_media_type,
            grows_from_badge_class_id=request.grows_from_badge_class_id, violations=violations)
        return pb.CreateBadgeClassResponse(badge_class=self._class_at(result))

    def UploadBadgeImage(self, request: pb.UploadBadgeImageRequest, context: grpc.ServicerContext
                         ) -> pb.UploadBadgeImageResponse:
        result = self.app.upload_badge_image(
            badge_class_id=request.badge_class_id, image=request.image,
            media_type=request.image_media_type)
        return pb.UploadBadgeImageResponse(badge_class=self._class_at(result))

    def ReviseBadgeCriteria(self, request: pb.ReviseBadgeCriteriaRequest,
                            context: grpc.ServicerContext) -> pb.ReviseBadgeCriteriaResponse:
        violations = Violations()
        result = self.app.revise_badge_criteria(
            badge_class_id=request.badge_class_id,
            criteria=self._criteria_in(request.criteria, violations), violations=violations)
        return pb.ReviseBadgeCriteriaResponse(badge_class=self._class_at(result))

    def GetBadgeClass(self, request: pb.GetBadgeClassRequest, context: grpc.ServicerContext
                      ) -> pb.GetBadgeClassResponse:
        return pb.GetBadgeClassResponse(
            badge_class=self._class(self.app.badge_class(request.badge_class_id)))

    def ListBadgeClasses(self, request: pb.ListBadgeClassesRequest, context: grpc.ServicerContext
                         ) -> pb.ListBadgeClassesResponse:
        found, token = self.app.list_badge_classes(page_size=request.page_size,
                                                   page_token=request.page_token)
        return pb.ListBadgeClassesResponse(badge_classes=[self._class(c) for c in found],
                                           next_page_token=token)

    # ------------------------------------------------------------------ awards

    def GrantBadge(self, request: pb.GrantBadgeRequest, context: grpc.ServicerContext
                   ) -> pb.GrantBadgeResponse:
        violations = Violations()
        result = self.app.grant_badge(
            rider_id=request.rider_id, badge_class_id=request.badge_class_id,
            reason=request.reason,
            evidence=[{"reference": e.source + ":" + e.reference if e.source else e.reference,
                       "narrative": e.narrative,
                       "at": optional_time(e, "time", violations, path=f"evidence[{i}].time")}
                      for i, e in enumerate(request.evidence)], violations=violations)
        return pb.GrantBadgeResponse(award=self._award_at(result))

    def RevokeAward(self, request: pb.RevokeAwardRequest, context: grpc.ServicerContext
                    ) -> pb.RevokeAwardResponse:
        result = self.app.revoke_award(award_id=request.award_id, reason=request.reason)
        return pb.RevokeAwardResponse(award=self._award_at(result))

    def GetAward(self, request: pb.GetAwardRequest, context: grpc.ServicerContext
                 ) -> pb.GetAwardResponse:
        return pb.GetAwardResponse(award=self._award(self.app.award(request.award_id)))

    def ListRiderAwards(self, request: pb.ListRiderAwardsRequest, context: grpc.ServicerContext
                        ) -> pb.ListRiderAwardsResponse:
        awards = self.app.rider_awards(rider_id=request.rider_id,
                                       include_inactive=request.include_inactive)
        return pb.ListRiderAwardsResponse(awards=[self._award(a) for a in awards])

    def ListBadgeHolders(self, request: pb.ListBadgeHoldersRequest, context: grpc.ServicerContext
                         ) -> pb.ListBadgeHoldersResponse:
        found, token = self.app.badge_holders(badge_class_id=request.badge_class_id,
                                              page_size=request.page_size,
                                              page_token=request.page_token)
        return pb.ListBadgeHoldersResponse(awards=[self._award(a) for a in found],
                                           next_page_token=token)

    def ExplainAward(self, request: pb.ExplainAwardRequest, context: grpc.ServicerContext
                     ) -> pb.ExplainAwardResponse:
        e = self.app.explain(rider_id=request.rider_id, badge_class_id=request.badge_class_id)
        return pb.ExplainAwardResponse(award=self._award(e.award),
                                       badge_class=self._class(e.badge_class),
                                       criteria=self._criteria_out(e.criteria),
                                       explanation=e.text)

    # ------------------------------------------------------------------ credentials

    def ExportCredential(self, request: pb.ExportCredentialRequest, context: grpc.ServicerContext
                         ) -> pb.ExportCredentialResponse:
        credential, jwt = self.app.export_credential(award_id=request.award_id)
        baked, media_type = self.app.baked_credential(
            award_id=request.award_id, jwt=jwt) if request.baked else (b"", "")
        return pb.ExportCredentialResponse(
            credential_json=json.dumps(credential, ensure_ascii=False, indent=2),
            credential_jwt=jwt, key_id=_header(jwt)["kid"], baked_image=baked,
            baked_image_media_type=media_type)

    def VerifyCredential(self, request: pb.VerifyCredentialRequest, context: grpc.ServicerContext
                         ) -> pb.VerifyCredentialResponse:
        r = self.app.verify_credential(jwt=request.credential_jwt)
        return pb.VerifyCredentialResponse(
            signature_valid=r["signature_valid"],
            status=enum_out(r["status"], pb.AwardStatus), valid=r["valid"],
            problems=r["problems"], award_id=r["award_id"],
            verdict=enum_out(r["verdict"], pb.CredentialVerdict),
            credential_json=json.dumps(r["credential"], ensure_ascii=False)
            if r["credential"] is not None else "")

    def GetIssuerKeys(self, request: pb.GetIssuerKeysRequest, context: grpc.ServicerContext
                      ) -> pb.GetIssuerKeysResponse:
        keys = self.app.issuer_keys
        return pb.GetIssuerKeysResponse(
            jwks_json=json.dumps(self.app.issuer_keys_json()),
            signing_key_id=keys.jwk(keys.active, self.app.urls)["kid"])

    def GetIssuerProfile(self, request: pb.GetIssuerProfileRequest, context: grpc.ServicerContext
                         ) -> pb.GetIssuerProfileResponse:
        profile, did = self.app.issuer_profile(issuer_id=request.issuer_id)
        return pb.GetIssuerProfileResponse(profile_json=_json(profile),
                                           did_document_json=_json(did))

    def GetAchievement(self, request: pb.GetAchievementRequest, context: grpc.ServicerContext
                       ) -> pb.GetAchievementResponse:
        return pb.GetAchievementResponse(achievement_json=_json(
            self.app.achievement(badge_class_id=request.badge_class_id)))

    def ListAchievements(self, request: pb.ListAchievementsRequest, context: grpc.ServicerContext
                         ) -> pb.ListAchievementsResponse:
        found, token = self.app.achievements(issuer_id=request.issuer_id,
                                             page_size=request.page_size,
                                             page_token=request.page_token)
        return pb.ListAchievementsResponse(achievement_json=[_json(a) for a in found],
                                           next_page_token=token)

    def GetBadgeImage(self, request: pb.GetBadgeImageRequest, context: grpc.ServicerContext
                      ) -> pb.GetBadgeImageResponse:
        image = self.app.badge_image(badge_class_id=request.badge_class_id)
        return pb.GetBadgeImageResponse(image=image["data"],
                                        image_media_type=image["media_type"],
                                        image_sha256=image["sha256"])

    def GetStatusList(self, request: pb.GetStatusListRequest, context: grpc.ServicerContext
                      ) -> pb.GetStatusListResponse:
        credential, jwt = self.app.status_list(issuer_id=request.issuer_id,
                                               list_number=request.list_number)
        return pb.GetStatusListResponse(status_list_json=_json(credential),
                                        status_list_jwt=jwt)

    # ------------------------------------------------------------------ ladders, ceremonies

    def ReviseBadgeProgression(self, request: pb.ReviseBadgeProgressionRequest,
                               context: grpc.ServicerContext) -> pb.ReviseBadgeProgressionResponse:
        result = self.app.revise_badge_progression(
            badge_class_id=request.badge_class_id,
            grows_from_badge_class_id=request.grows_from_badge_class_id)
        return pb.ReviseBadgeProgressionResponse(badge_class=self._class_at(result))

    def RecordAwardCeremony(self, request: pb.RecordAwardCeremonyRequest,
                            context: grpc.ServicerContext) -> pb.RecordAwardCeremonyResponse:
        violations = Violations()
        result = self.app.record_award_ceremony(
            street_id=request.street_id,
            held_at=optional_time(request, "held_time", violations),
            service_space_id=request.service_space_id, place=request.place,
            officials=[{"name": o.name, "role": o.role} for o in request.officials],
            award_ids=list(request.award_ids), violations=violations)
        return pb.RecordAwardCeremonyResponse(
            ceremony=self._ceremony(self.app.ceremony(result.id)))

    def ListAwardCeremonies(self, request: pb.ListAwardCeremoniesRequest,
                            context: grpc.ServicerContext) -> pb.ListAwardCeremoniesResponse:
        found, token = self.app.award_ceremonies(street_id=request.street_id,
                                                 page_size=request.page_size,
                                                 page_token=request.page_token)
        return pb.ListAwardCeremoniesResponse(ceremonies=[self._ceremony(c) for c in found],
                                              next_page_token=token)

    # ------------------------------------------------------------------ recognition

    def CreateRecognitionTitle(self, request: pb.CreateRecognitionTitleRequest,
                               context: grpc.ServicerContext) -> pb.CreateRecognitionTitleResponse:
        violations = Violations()
        result = self.app.create_recognition_title(
            name=request.name, description=request.description,
            criteria=self._criteria_in(request.criteria, violations),
            required_badge_class_ids=list(request.required_badge_class_ids),
            term_days=request.term_days, violations=violations)
        return pb.CreateRecognitionTitleResponse(title=self._title_at(result))

    def ReviseRecognitionTitle(self, request: pb.ReviseRecognitionTitleRequest,
                               context: grpc.ServicerContext) -> pb.ReviseRecognitionTitleResponse:
        violations = Violations()
        result = self.app.revise_recognition_title(
            title_id=request.title_id,
            criteria=self._criteria_in(request.criteria, violations),
            required_badge_class_ids=list(request.required_badge_class_ids),
            term_days=request.term_days, violations=violations)
        return pb.ReviseRecognitionTitleResponse(title=self._title_at(result))

    def ListRecognitionTitles(self, request: pb.ListRecognitionTitlesRequest,
                              context: grpc.ServicerContext) -> pb.ListRecognitionTitlesResponse:
        found, token = self.app.recognition_titles(page_size=request.page_size,
                                                   page_token=request.page_token)
        return pb.ListRecognitionTitlesResponse(titles=[self._title(t) for t in found],
                                                next_page_token=token)

    def ConferRecognition(self, request: pb.ConferRecognitionRequest, context: grpc.ServicerContext
                          ) -> pb.ConferRecognitionResponse:
        result = self.app.confer_recognition(rider_id=request.rider_id,
                                             title_id=request.title_id, reason=request.reason)
        return pb.ConferRecognitionResponse(recognition=self._recognition_at(result))

    def RevokeRecognition(self, request: pb.RevokeRecognitionRequest, context: grpc.ServicerContext
                          ) -> pb.RevokeRecognitionResponse:
        result = self.app.revoke_recognition(recognition_id=request.recognition_id,
                                             reason=request.reason)
        return pb.RevokeRecognitionResponse(recognition=self._recognition_at(result))

    def ListRiderRecognitions(self, request: pb.ListRiderRecognitionsRequest,
                              context: grpc.ServicerContext) -> pb.ListRiderRecognitionsResponse:
        found = self.app.rider_recognitions(rider_id=request.rider_id,
                                            include_inactive=request.include_inactive)
        return pb.ListRiderRecognitionsResponse(recognitions=[self._recognition(r)
                                                              for r in found])

    def _title_at(self, result: CommandResult) -> pb.RecognitionTitle:
        return self._title(self.app.recognition_title(result.id, result.version))

    def _recognition_at(self, result: CommandResult) -> pb.Recognition:
        return self._recognition(self.app.recognition(result.id,
                                                      result.version))

    def _title(self, t: RecognitionTitle) -> pb.RecognitionTitle:
        return pb.RecognitionTitle(
            title_id=str(t.id), name=t.name, description=t.description,
            criteria=self._criteria_out(t.criteria()),
            required_badge_class_ids=t.requirements()["required_badge_class_ids"],
            requirements_version=t.requirements_version, term_days=t.term_days,
            version=t.version)

    def _recognition(self, r: Recognition) -> pb.Recognition:
        return pb.Recognition(
            recognition_id=str(r.id), rider_id=r.rider_id, title_id=r.title_id,
            requirements_version=r.requirements_version,
            status=enum_out(r.status_at(self.app.clock()), pb.RecognitionStatus),
            evidence=[pb.Evidence(source=e["source"], reference=e["reference"],
                                  position=e["position"], narrative=narrative_shown(e),
                                  time=timestamp(e["at"])) for e in r.evidence],
            reason=masking.show_to_caller(masking.FREE_TEXT, r.reason),
            conferred_by=r.conferred_by, confer_time=timestamp(r.conferred_at),
            end_time=timestamp(r.ends_at), revoke_time=timestamp(r.revoked_at),
            revoke_reason=masking.show_to_caller(masking.FREE_TEXT, r.revoke_reason),
            revoked_by=r.revoked_by, version=r.version)

    # ------------------------------------------------------------------ rendering

    def _activity_at(self, result: CommandResult) -> pb.VolunteerActivity:
        return self._activity(self.app.volunteer_activity(result.id, result.version))

    def _sign_up_at(self, result: CommandResult) -> pb.VolunteerSignUp:
        return self._sign_up(self.app.sign_up_view(result.id, result["rider_id"],
                                                   result.version))

    def _activity(self, a: VolunteerActivity) -> pb.VolunteerActivity:
        return pb.VolunteerActivity(
            activity_id=str(a.id), community_id=a.community_id, street_id=a.street_id,
            title=a.title, description=a.description,
            kind=enum_out(a.kind, pb.VolunteerActivityKind), start_time=timestamp(a.starts_at),
            end_time=timestamp(a.ends_at), service_space_id=a.service_space_id,
            address=a.address, places=a.places, places_taken=a.places_taken,
            places_left=a.places_left, sign_up_deadline=timestamp(a.sign_up_deadline),
            status=enum_out(a.status, pb.VolunteerActivityStatus),
            open_for_sign_up=a.open_for_sign_up(self.app.clock()),
            cancel_reason=masking.show_to_caller(masking.FREE_TEXT, a.cancel_reason),
            cancel_time=timestamp(a.cancelled_at), length_hours=_decimal(a.length_hours),
            version=a.version)

    @staticmethod
    def _sign_up(s: SignUpView) -> pb.VolunteerSignUp:
        return pb.VolunteerSignUp(
            activity_id=s.activity_id, rider_id=s.rider_id, community_id=s.community_id,
            status=enum_out(s.status, pb.VolunteerSignUpStatus),
            sign_up_time=timestamp(s.signed_up_at), withdraw_time=timestamp(s.withdrawn_at),
            hours=_decimal(s.hours) if s.hours is not None else "", shift_id=s.shift_id,
            attend_time=timestamp(s.attended_at), start_time=timestamp(s.starts_at),
            title=s.title)

    def _shift_at(self, result: CommandResult) -> pb.VolunteerShift:
        return self._shift(self.app.shift(result.id, result.version))

    def _class_at(self, result: CommandResult) -> pb.BadgeClass:
        return self._class(self.app.badge_class(result.id, result.version))

    def _award_at(self, result: CommandResult) -> pb.Award:
        return self._award(self.app.award(result.id, result.version))

    @staticmethod
    def _shift(s: VolunteerShift) -> pb.VolunteerShift:
        return pb.VolunteerShift(
            shift_id=str(s.id), rider_id=s.rider_id, community_id=s.community_id,
            activity=s.activity, start_time=timestamp(s.started_at), hours=_decimal(s.hours),
            status=enum_out(s.status, pb.ShiftStatus),
            reason=masking.show_to_caller(masking.FREE_TEXT, s.reason), version=s.version)

    def _class(self, c: BadgeClass) -> pb.BadgeClass:
        return pb.BadgeClass(
            badge_class_id=str(c.id), name=c.name, description=c.description,
            image_url=image_url(self.app.urls, c), issuer_id=c.issuer_id,
            criteria=self._criteria_out(c.criteria()), criteria_version=c.criteria_version,
            validity_days=c.validity_days, version=c.version,
            image_media_type=(c.image or {}).get("media_type", ""),
            image_sha256=(c.image or {}).get("sha256", ""),
            grows_from_badge_class_id=c.grows_from,
            progression_version=c.progression_version)

    def _award(self, a: Award) -> pb.Award:
        return pb.Award(
            award_id=str(a.id), rider_id=a.rider_id, badge_class_id=a.badge_class_id,
            criteria_version=a.criteria_version, kind=enum_out(a.kind, pb.AwardKind),
            # As of now, as VerifyCredential and the holder lists judge it: an award past its
            # expiry reads EXPIRED before the expiry job has stored that it is.
            status=enum_out(a.status_at(self.app.clock()), pb.AwardStatus),
            # An official's reason and narratives may name people: the masking table decides.
            evidence=[pb.Evidence(source=e["source"], reference=e["reference"],
                                  position=e["position"],
                                  narrative=narrative_shown(e),
                                  time=timestamp(e["at"])) for e in a.evidence],
            reason=masking.show_to_caller(masking.FREE_TEXT, a.reason),
            awarded_by=a.awarded_by, award_time=timestamp(a.awarded_at),
            expire_time=timestamp(a.expires_at), revoke_time=timestamp(a.revoked_at),
            revoke_reason=masking.show_to_caller(masking.FREE_TEXT, a.revoke_reason),
            revoked_by=a.revoked_by, version=a.version, grown_into_award_id=a.grown_into,
            grow_time=timestamp(a.grown_at), grown_from_award_id=a.grown_from,
            ceremony_id=a.ceremony_id, present_time=timestamp(a.presented_at))

    @staticmethod
    def _ceremony(c: AwardCeremony) -> pb.AwardCeremony:
        return pb.AwardCeremony(
            ceremony_id=str(c.id), street_id=c.street_id, held_time=timestamp(c.held_at),
            service_space_id=c.service_space_id,
            place=masking.show_to_caller(masking.FREE_TEXT, c.place),
            officials=[pb.Official(name=masking.show_to_caller(masking.NAME, o["official_name"]),
                                   role=o["role"]) for o in c.officials],
            award_ids=c.award_ids, recorded_by=c.recorded_by, version=c.version)

    @staticmethod
    def _criteria_in(c: Any, violations: Violations) -> dict[str, Any]:
        return {"min_volunteer_hours": c.min_volunteer_hours,
                "required_course_ids": list(c.required_course_ids),
                "track_requirements": [
                    (enum_in(t.track, pb.Track, Track, violations,
                             f"criteria.track_requirements[{i}].track"), t.courses_passed)
                    for i, t in enumerate(c.track_requirements)],
                "min_verified_reports": c.min_verified_reports, "within_days": c.within_days,
                "narrative": c.narrative}

    @staticmethod
    def _criteria_out(c: Criteria) -> pb.Criteria:
        return pb.Criteria(
            min_volunteer_hours=_decimal(c.min_volunteer_hours) if c.min_volunteer_hours else "",
            required_course_ids=list(c.required_course_ids),
            track_requirements=[pb.TrackRequirement(track=enum_out(t, pb.Track),
                                                    courses_passed=n)
                                for t, n in sorted(c.track_requirements.items())],
            min_verified_reports=c.min_verified_reports, within_days=c.within_days,
            narrative=c.narrative)


def _json(document: Any) -> str:
    return json.dumps(document, ensure_ascii=False)


def _header(jwt: str) -> dict[str, Any]:
    head = jwt.split(".", 1)[0]
    return json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))


def _decimal(value: Any) -> str:
    return format(value.normalize(), "f") if value else "0"


def add_servicers(server: grpc.Server, app: Any) -> list[str]:
    pb_grpc.add_BadgesServiceServicer_to_server(BadgesServicer(app), server)
    return [SERVICE_NAME]
