"""The identity service as its callers meet it: the real process over PostgreSQL, called with a
plain grpcio client and the tokens an operator would hand out."""

from __future__ import annotations

import base64
import contextlib
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from psycopg import sql
from qiji.feed.v1 import feed_service_pb2 as feed_pb
from qiji.identity.v1 import identity_service_pb2 as pb

from services.identity.grpc_api import ACCESS
from shared.grpc.server import GRACE_SECONDS
from tests.city import build_city, over_grpc
from tests.conftest import PG
from tests.e2e.client import (
    API,
    DENIED,
    EXISTS,
    INVALID,
    NATIONAL_ID,
    NOT_FOUND,
    OTHER_NATIONAL_ID,
    PRECONDITION,
    RIDER_REGISTERED_TOPIC,
    RPC_TIMEOUT,
    Bad,
    Client,
    call_error,
    create_organisation,
    details_of,
    new_request_id,
    on,
    phone_number,
    unique,
)
from tests.e2e.conftest import ServiceProcess

pytestmark = pytest.mark.e2e

IDENTITY = API["identity"].full_name
ALL_WEEK = [pb.OpeningHours(weekday=d, opens="08:00", closes="20:00") for d in range(1, 8)]


def register_request(world: World, **fields: Any) -> pb.RegisterRiderRequest:
    values: dict[str, Any] = {
        "request_id": new_request_id(), "platform_id": world.platform,
        "platform_rider_id": unique("rider"), "name": "王五", "phone": phone_number(),
        "home_street_id": world.street, "station_id": world.station}
    values.update(fields)
    return pb.RegisterRiderRequest(**values)


def register(platform: Client, world: World, **fields: Any) -> pb.Rider:
    return platform.RegisterRider(register_request(world, **fields)).rider


@dataclass(frozen=True)
class World:
    """Organisations and riders in every state the bad-input table needs."""

    city: str
    district: str
    street: str
    community: str
    platform: str
    station: str
    other_platform: str
    other_station: str
    space: str
    active: str
    active_platform_rider_id: str
    foreign: str  # registered by the other platform, living in this street
    foreign_platform_rider_id: str
    suspended: str
    left: str
    standing_consent: str
    withdrawn_consent: str
    riders_page_token: str


@pytest.fixture(scope="module")
def world(identity: ServiceProcess) -> World:
    """The module's platform, street office and merchant callers act for this world's."""
    admin = identity.client("city_admin")
    made = build_city(over_grpc(admin), also=("community", "merchant"), names={
        "district": "天宁区", "street": "天宁街道", "community": "东门社区",
        "platform": "快送平台", "station": "天宁站", "merchant": "天宁面馆"})
    city, district, street, community = made.city, made.district, made.street, made.community
    platform_id, station, merchant = made.platform, made.station, made.merchant
    other_platform = made.add("other_platform", "PLATFORM", "另一平台")
    other_station = made.add("other_station", "STATION", "另一站", "other_platform")
    identity.act_for(platform=platform_id, street_office=street, merchant=merchant)
    platform = identity.client("platform")
    space = admin.CreateServiceSpace(pb.CreateServiceSpaceRequest(
        request_id=new_request_id(), street_id=street, name="天宁驿站", address="天宁路1号",
        amenities=[pb.AMENITY_REST], opening_hours=ALL_WEEK)).service_space.service_space_id
    partial = World(city=city, district=district, street=street, community=community,
                    platform=platform_id, station=station, other_platform=other_platform,
                    other_station=other_station,
                    space=space, active="", active_platform_rider_id="", foreign="",
                    foreign_platform_rider_id="", suspended="", left="",
                    standing_consent="", withdrawn_consent="", riders_page_token="")

    active = register(platform, partial)
    platform.VerifyRider(pb.VerifyRiderRequest(request_id=new_request_id(),
                                               rider_id=active.rider_id))
    platform.RecordCareerMilestone(pb.RecordCareerMilestoneRequest(
        request_id=new_request_id(), rider_id=active.rider_id,
        kind=pb.CAREER_MILESTONE_KIND_VOLUNTEER, organisation_id=community))
    standing = platform.GrantConsent(pb.GrantConsentRequest(
        request_id=new_request_id(), rider_id=active.rider_id, scope=pb.CONSENT_SCOPE_PHONE,
        recipient_id=community)).consent_id
    withdrawn = platform.GrantConsent(pb.GrantConsentRequest(
        request_id=new_request_id(), rider_id=active.rider_id, scope=pb.CONSENT_SCOPE_NAME,
        recipient_id=community)).consent_id
    platform.WithdrawConsent(pb.WithdrawConsentRequest(
        request_id=new_request_id(), rider_id=active.rider_id, consent_id=withdrawn))

    suspended = register(platform, partial).rider_id
    platform.SuspendRider(pb.SuspendRiderRequest(request_id=new_request_id(),
                                                 rider_id=suspended, reason="投诉核查中"))
    left = register(platform, partial).rider_id
    platform.RecordRiderLeft(pb.RecordRiderLeftRequest(request_id=new_request_id(),
                                                       rider_id=left, reason="离职"))
    foreign = register(identity.client_for("platform", other_platform), partial,
                       platform_id=other_platform, station_id=other_station)
    token = platform.ListRiders(pb.ListRidersRequest(page_size=1)).next_page_token
    assert token
    return World(**{**partial.__dict__, "active": active.rider_id,
                    "active_platform_rider_id": active.platform_rider_id,
                    "foreign": foreign.rider_id,
                    "foreign_platform_rider_id": foreign.platform_rider_id,
                    "suspended": suspended, "left": left, "standing_consent": standing,
                    "withdrawn_consent": withdrawn, "riders_page_token": token})


# ---------------------------------------------------------------------------- bad input


RANDOM_ID = str(uuid.uuid4())
OUT_OF_RANGE_PAGE_TOKEN = base64.urlsafe_b64encode(
    b'{"a": 1e999, "f": "0000000000000000"}').decode().rstrip("=")


def org(**fields: Any) -> Callable[[World], Any]:
    def make(w: World) -> Any:
        values = {k: (v(w) if callable(v) else v) for k, v in fields.items()}
        return pb.CreateOrganisationRequest(request_id=new_request_id(), **values)
    return make


def space(**fields: Any) -> Callable[[World], Any]:
    def make(w: World) -> Any:
        values: dict[str, Any] = {"street_id": w.street, "name": "驿站", "address": "路1号",
                                  "amenities": [pb.AMENITY_REST], "opening_hours": ALL_WEEK}
        values.update({k: (v(w) if callable(v) else v) for k, v in fields.items()})
        return pb.CreateServiceSpaceRequest(request_id=new_request_id(), **values)
    return make


def rider(**fields: Any) -> Callable[[World], Any]:
    def make(w: World) -> Any:
        return register_request(w, **{k: (v(w) if callable(v) else v)
                                      for k, v in fields.items()})
    return make


def hours(opens: str = "08:00", closes: str = "20:00", weekday: int = 1) -> list[Any]:
    return [pb.OpeningHours(weekday=weekday, opens=opens, closes=closes)]


BAD_INPUT: dict[str, Bad] = {
    # -- organisations
    "CreateOrganisation-without-kind": Bad(
        "CreateOrganisation", "city_admin", org(name="无类"), INVALID, field="kind",
        reason="ENUM_VALUE_REQUIRED"),
    "CreateOrganisation-empty-name": Bad(
        "CreateOrganisation", "city_admin", org(kind=pb.ORGANISATION_KIND_CITY, name="  "),
        INVALID, field="name",
        reason="FIELD_REQUIRED"),
    "CreateOrganisation-name-too-long": Bad(
        "CreateOrganisation", "city_admin", org(kind=pb.ORGANISATION_KIND_CITY, name="长" * 101),
        INVALID, field="name",
        reason="TEXT_TOO_LONG"),
    "CreateOrganisation-street-under-a-city": Bad(
        "CreateOrganisation", "city_admin",
        org(kind=pb.ORGANISATION_KIND_STREET, name="错街道", parent_id=lambda w: w.city),
        INVALID, field="parent_id",
        reason="PARENT_KIND_NOT_ALLOWED"),
    "CreateOrganisation-city-with-a-parent": Bad(
        "CreateOrganisation", "city_admin",
        org(kind=pb.ORGANISATION_KIND_CITY, name="城中城", parent_id=lambda w: w.city),
        INVALID, field="parent_id",
        reason="PARENT_NOT_ALLOWED"),
    "CreateOrganisation-district-without-parent": Bad(
        "CreateOrganisation", "city_admin", org(kind=pb.ORGANISATION_KIND_DISTRICT, name="孤区"),
        INVALID, field="parent_id",
        reason="PARENT_REQUIRED"),
    "CreateOrganisation-parent-not-a-uuid": Bad(
        "CreateOrganisation", "city_admin",
        org(kind=pb.ORGANISATION_KIND_DISTRICT, name="区", parent_id="not-a-uuid"),
        INVALID, field="parent_id",
        reason="INVALID_ID"),
    "CreateOrganisation-unknown-parent": Bad(
        "CreateOrganisation", "city_admin",
        org(kind=pb.ORGANISATION_KIND_DISTRICT, name="区", parent_id=RANDOM_ID),
        NOT_FOUND, reason="ORGANISATION_NOT_FOUND"),
    "CreateOrganisation-department-without-function": Bad(
        "CreateOrganisation", "city_admin",
        org(kind=pb.ORGANISATION_KIND_DEPARTMENT, name="社工部", parent_id=lambda w: w.city),
        INVALID, field="department_function",
        reason="DEPARTMENT_FUNCTION_REQUIRED"),
    "CreateOrganisation-function-of-a-non-department": Bad(
        "CreateOrganisation", "city_admin",
        org(kind=pb.ORGANISATION_KIND_PLATFORM, name="平台",
            department_function=pb.DEPARTMENT_FUNCTION_SOCIAL_WORK),
        INVALID, field="department_function",
        reason="DEPARTMENT_FUNCTION_NOT_ALLOWED"),
    "CreateOrganisation-request-id-too-long": Bad(
        "CreateOrganisation", "city_admin",
        on(pb.CreateOrganisationRequest, request_id="r" * 129, kind=pb.ORGANISATION_KIND_CITY,
           name="市"), INVALID, field="request_id",
        reason="TEXT_TOO_LONG"),
    "CreateOrganisation-request-id-not-printable": Bad(
        "CreateOrganisation", "city_admin",
        on(pb.CreateOrganisationRequest, request_id="a\nb", kind=pb.ORGANISATION_KIND_CITY,
           name="市"), INVALID, field="request_id",
        reason="TEXT_INVALID"),
    "GetOrganisation-not-a-uuid": Bad(
        "GetOrganisation", "auditor", on(pb.GetOrganisationRequest, organisation_id="nope"),
        INVALID, field="organisation_id",
        reason="INVALID_ID"),
    "GetOrganisation-unknown": Bad(
        "GetOrganisation", "auditor", on(pb.GetOrganisationRequest, organisation_id=RANDOM_ID),
        NOT_FOUND, reason="ORGANISATION_NOT_FOUND"),
    "GetOrganisation-of-a-rider-id": Bad(
        "GetOrganisation", "auditor",
        on(pb.GetOrganisationRequest, organisation_id=lambda w: w.active),
        NOT_FOUND, reason="ORGANISATION_NOT_FOUND"),
    "ListOrganisations-negative-page-size": Bad(
        "ListOrganisations", "auditor", on(pb.ListOrganisationsRequest, page_size=-1),
        INVALID, field="page_size",
        reason="PAGE_SIZE_NEGATIVE"),
    "ListOrganisations-garbage-page-token": Bad(
        "ListOrganisations", "auditor", on(pb.ListOrganisationsRequest, page_token="garbage!"),
        INVALID, field="page_token",
        reason="PAGE_TOKEN_INVALID"),
    # -- service spaces
    "CreateServiceSpace-opens-at-25-00": Bad(
        "CreateServiceSpace", "city_admin", space(opening_hours=hours(opens="25:00")),
        INVALID, field="opening_hours[0].opens",
        reason="TIME_INVALID"),
    "CreateServiceSpace-opens-with-a-trailing-newline": Bad(
        "CreateServiceSpace", "city_admin", space(opening_hours=hours(opens="08:00\n")),
        INVALID, field="opening_hours[0].opens",
        reason="TIME_INVALID"),
    "CreateServiceSpace-closes-before-it-opens": Bad(
        "CreateServiceSpace", "city_admin",
        space(opening_hours=hours(opens="20:00", closes="08:00")),
        INVALID, field="opening_hours[0].closes",
        reason="CLOSES_NOT_AFTER_OPENS"),
    "CreateServiceSpace-weekday-8": Bad(
        "CreateServiceSpace", "city_admin", space(opening_hours=hours(weekday=8)),
        INVALID, field="opening_hours[0].weekday",
        reason="VALUE_OUT_OF_RANGE"),
    "CreateServiceSpace-unspecified-amenity": Bad(
        "CreateServiceSpace", "city_admin",
        space(amenities=[pb.AMENITY_REST, pb.AMENITY_UNSPECIFIED]),
        INVALID, field="amenities[1]",
        reason="ENUM_VALUE_REQUIRED"),
    "CreateServiceSpace-in-a-district": Bad(
        "CreateServiceSpace", "city_admin", space(street_id=lambda w: w.district),
        INVALID, field="street_id",
        reason="ORGANISATION_KIND_NOT_ALLOWED"),
    # A street office opens spaces in its own street only: a district is not its street.
    "CreateServiceSpace-street-office-in-a-district": Bad(
        "CreateServiceSpace", "street_office", space(street_id=lambda w: w.district),
        DENIED, reason="OUT_OF_SCOPE"),
    "CreateServiceSpace-unknown-street": Bad(
        "CreateServiceSpace", "city_admin", space(street_id=RANDOM_ID),
        NOT_FOUND, reason="ORGANISATION_NOT_FOUND"),
    "CreateServiceSpace-without-address": Bad(
        "CreateServiceSpace", "city_admin", space(address=""), INVALID, field="address",
        reason="FIELD_REQUIRED"),
    "UpdateServiceSpace-unknown": Bad(
        "UpdateServiceSpace", "city_admin",
        on(pb.UpdateServiceSpaceRequest, service_space_id=RANDOM_ID),
        NOT_FOUND, reason="SERVICE_SPACE_NOT_FOUND"),
    "UpdateServiceSpace-bad-hours": Bad(
        "UpdateServiceSpace", "street_office",
        on(pb.UpdateServiceSpaceRequest, service_space_id=lambda w: w.space,
           opening_hours=hours(closes="24:00")), INVALID, field="opening_hours[0].closes",
        reason="TIME_INVALID"),
    "GetServiceSpace-not-a-uuid": Bad(
        "GetServiceSpace", "merchant", on(pb.GetServiceSpaceRequest, service_space_id="x"),
        INVALID, field="service_space_id",
        reason="INVALID_ID"),
    "GetServiceSpace-unknown": Bad(
        "GetServiceSpace", "merchant", on(pb.GetServiceSpaceRequest, service_space_id=RANDOM_ID),
        NOT_FOUND, reason="SERVICE_SPACE_NOT_FOUND"),
    "ListServiceSpaces-negative-page-size": Bad(
        "ListServiceSpaces", "merchant", on(pb.ListServiceSpacesRequest, page_size=-1),
        INVALID, field="page_size",
        reason="PAGE_SIZE_NEGATIVE"),
    # -- riders
    "RegisterRider-phone-123": Bad(
        "RegisterRider", "platform", rider(phone="123"), INVALID, field="phone",
        reason="PHONE_INVALID"),
    "RegisterRider-phone-with-a-trailing-newline": Bad(
        "RegisterRider", "platform", rider(phone="13800000000\n"), INVALID, field="phone",
        reason="PHONE_INVALID"),
    "RegisterRider-phone-in-full-width-digits": Bad(
        "RegisterRider", "platform", rider(phone="138" + "\uff10" * 8), INVALID, field="phone",
        reason="PHONE_INVALID"),
    "RegisterRider-bad-national-id-checksum": Bad(
        "RegisterRider", "platform", rider(national_id=NATIONAL_ID[:-1] + "0"),
        INVALID, field="national_id",
        reason="NATIONAL_ID_INVALID"),
    "RegisterRider-national-id-of-superscript-digits": Bad(
        "RegisterRider", "platform", rider(national_id="\u00b2" * 17 + "1"),
        INVALID, field="national_id",
        reason="NATIONAL_ID_INVALID"),
    "RegisterRider-platform-rider-id-with-a-space": Bad(
        "RegisterRider", "platform", rider(platform_rider_id="rider 1"),
        INVALID, field="platform_rider_id",
        reason="PLATFORM_RIDER_ID_INVALID"),
    "RegisterRider-platform-rider-id-with-a-trailing-newline": Bad(
        "RegisterRider", "platform", rider(platform_rider_id="rider-1\n"),
        INVALID, field="platform_rider_id",
        reason="PLATFORM_RIDER_ID_INVALID"),
    "RegisterRider-without-name": Bad(
        "RegisterRider", "platform", rider(name=""), INVALID, field="name",
        reason="FIELD_REQUIRED"),
    "RegisterRider-unknown-platform": Bad(
        "RegisterRider", "city_admin", rider(platform_id=RANDOM_ID),
        NOT_FOUND, reason="ORGANISATION_NOT_FOUND"),
    # A platform registers riders for itself only; whether the platform it names exists or not,
    # the answer is the same (AIP-211).
    "RegisterRider-for-an-unknown-platform-by-a-platform": Bad(
        "RegisterRider", "platform", rider(platform_id=RANDOM_ID),
        DENIED, reason="OUT_OF_SCOPE"),
    "RegisterRider-for-another-platform": Bad(
        "RegisterRider", "platform",
        rider(platform_id=lambda w: w.other_platform, station_id=lambda w: w.other_station),
        DENIED, reason="OUT_OF_SCOPE"),
    "RegisterRider-platform-is-a-city": Bad(
        "RegisterRider", "city_admin", rider(platform_id=lambda w: w.city),
        INVALID, field="platform_id",
        reason="ORGANISATION_KIND_NOT_ALLOWED"),
    "RegisterRider-home-street-is-a-community": Bad(
        "RegisterRider", "platform", rider(home_street_id=lambda w: w.community),
        INVALID, field="home_street_id",
        reason="ORGANISATION_KIND_NOT_ALLOWED"),
    "RegisterRider-station-of-another-platform": Bad(
        "RegisterRider", "platform", rider(station_id=lambda w: w.other_station),
        INVALID, field="station_id",
        reason="STATION_OF_ANOTHER_PLATFORM"),
    "RegisterRider-without-station": Bad(
        "RegisterRider", "platform", rider(station_id=""), INVALID, field="station_id",
        reason="FIELD_REQUIRED"),
    "RegisterRider-already-registered": Bad(
        "RegisterRider", "platform", rider(platform_rider_id=lambda w: w.active_platform_rider_id),
        EXISTS, reason="RIDER_ALREADY_REGISTERED"),
    "VerifyRider-twice": Bad(
        "VerifyRider", "platform", on(pb.VerifyRiderRequest, rider_id=lambda w: w.active),
        PRECONDITION, reason="ALREADY_VERIFIED"),
    "VerifyRider-not-a-uuid": Bad(
        "VerifyRider", "platform", on(pb.VerifyRiderRequest, rider_id="not-a-uuid"),
        INVALID, field="rider_id",
        reason="INVALID_ID"),
    "VerifyRider-unknown": Bad(
        "VerifyRider", "city_admin", on(pb.VerifyRiderRequest, rider_id=RANDOM_ID),
        NOT_FOUND, reason="RIDER_NOT_FOUND"),
    "VerifyRider-unknown-by-a-platform": Bad(
        "VerifyRider", "platform", on(pb.VerifyRiderRequest, rider_id=RANDOM_ID),
        DENIED, reason="OUT_OF_SCOPE"),
    "VerifyRider-of-another-platform": Bad(
        "VerifyRider", "platform", on(pb.VerifyRiderRequest, rider_id=lambda w: w.foreign),
        DENIED, reason="OUT_OF_SCOPE"),
    "VerifyRider-an-organisation": Bad(
        "VerifyRider", "city_admin", on(pb.VerifyRiderRequest, rider_id=lambda w: w.city),
        NOT_FOUND, reason="RIDER_NOT_FOUND"),
    "VerifyRider-who-left": Bad(
        "VerifyRider", "platform", on(pb.VerifyRiderRequest, rider_id=lambda w: w.left),
        PRECONDITION, reason="RIDER_LEFT"),
    "SuspendRider-without-reason": Bad(
        "SuspendRider", "street_office", on(pb.SuspendRiderRequest, rider_id=lambda w: w.active),
        INVALID, field="reason",
        reason="FIELD_REQUIRED"),
    "SuspendRider-reason-too-long": Bad(
        "SuspendRider", "street_office",
        on(pb.SuspendRiderRequest, rider_id=lambda w: w.active, reason="长" * 501),
        INVALID, field="reason",
        reason="TEXT_TOO_LONG"),
    "SuspendRider-already-suspended": Bad(
        "SuspendRider", "platform",
        on(pb.SuspendRiderRequest, rider_id=lambda w: w.suspended, reason="again"),
        PRECONDITION, reason="ALREADY_SUSPENDED"),
    "ReinstateRider-who-is-active": Bad(
        "ReinstateRider", "platform",
        on(pb.ReinstateRiderRequest, rider_id=lambda w: w.active, reason="核查完毕"),
        PRECONDITION, reason="NOT_SUSPENDED"),
    "ReinstateRider-without-reason": Bad(
        "ReinstateRider", "platform",
        on(pb.ReinstateRiderRequest, rider_id=lambda w: w.suspended),
        INVALID, field="reason",
        reason="FIELD_REQUIRED"),
    "RecordRiderLeft-without-reason": Bad(
        "RecordRiderLeft", "platform",
        on(pb.RecordRiderLeftRequest, rider_id=lambda w: w.active, reason=" "),
        INVALID, field="reason",
        reason="FIELD_REQUIRED"),
    "RecordRiderLeft-twice": Bad(
        "RecordRiderLeft", "platform",
        on(pb.RecordRiderLeftRequest, rider_id=lambda w: w.left, reason="again"),
        PRECONDITION, reason="RIDER_LEFT"),
    "RecordCareerMilestone-without-kind": Bad(
        "RecordCareerMilestone", "platform",
        on(pb.RecordCareerMilestoneRequest, rider_id=lambda w: w.active,
           organisation_id=lambda w: w.community), INVALID, field="kind",
        reason="ENUM_VALUE_REQUIRED"),
    "RecordCareerMilestone-without-organisation": Bad(
        "RecordCareerMilestone", "platform",
        on(pb.RecordCareerMilestoneRequest, rider_id=lambda w: w.active,
           kind=pb.CAREER_MILESTONE_KIND_STATION_MASTER), INVALID, field="organisation_id",
        reason="FIELD_REQUIRED"),
    "RecordCareerMilestone-unknown-organisation": Bad(
        "RecordCareerMilestone", "platform",
        on(pb.RecordCareerMilestoneRequest, rider_id=lambda w: w.active,
           kind=pb.CAREER_MILESTONE_KIND_STATION_MASTER, organisation_id=RANDOM_ID),
        NOT_FOUND, reason="ORGANISATION_NOT_FOUND"),
    "RecordCareerMilestone-already-recorded": Bad(
        "RecordCareerMilestone", "street_office",
        on(pb.RecordCareerMilestoneRequest, rider_id=lambda w: w.active,
           kind=pb.CAREER_MILESTONE_KIND_VOLUNTEER, organisation_id=lambda w: w.community),
        EXISTS, reason="MILESTONE_ALREADY_RECORDED"),
    "RecordCareerMilestone-effective-time-out-of-range": Bad(
        "RecordCareerMilestone", "platform",
        on(pb.RecordCareerMilestoneRequest, rider_id=lambda w: w.active,
           kind=pb.CAREER_MILESTONE_KIND_STATION_MASTER, organisation_id=lambda w: w.station,
           effective_time=Timestamp(seconds=10**12)),
        INVALID, field="effective_time",
        reason="TIME_INVALID"),
    "RecordCareerMilestone-unknown-rider": Bad(
        "RecordCareerMilestone", "city_admin",
        on(pb.RecordCareerMilestoneRequest, rider_id=RANDOM_ID,
           kind=pb.CAREER_MILESTONE_KIND_STATION_MASTER, organisation_id=lambda w: w.station),
        NOT_FOUND, reason="RIDER_NOT_FOUND"),
    "RecordCareerMilestone-unknown-rider-by-a-platform": Bad(
        "RecordCareerMilestone", "platform",
        on(pb.RecordCareerMilestoneRequest, rider_id=RANDOM_ID,
           kind=pb.CAREER_MILESTONE_KIND_STATION_MASTER, organisation_id=lambda w: w.station),
        DENIED, reason="OUT_OF_SCOPE"),
    "RecordCareerMilestone-rider-of-another-platform": Bad(
        "RecordCareerMilestone", "platform",
        on(pb.RecordCareerMilestoneRequest, rider_id=lambda w: w.foreign,
           kind=pb.CAREER_MILESTONE_KIND_STATION_MASTER, organisation_id=lambda w: w.station),
        DENIED, reason="OUT_OF_SCOPE"),
    "GrantConsent-without-scope": Bad(
        "GrantConsent", "platform",
        on(pb.GrantConsentRequest, rider_id=lambda w: w.active,
           recipient_id=lambda w: w.community), INVALID, field="scope",
        reason="ENUM_VALUE_REQUIRED"),
    "GrantConsent-unknown-recipient": Bad(
        "GrantConsent", "platform",
        on(pb.GrantConsentRequest, rider_id=lambda w: w.active, scope=pb.CONSENT_SCOPE_NAME,
           recipient_id=RANDOM_ID), NOT_FOUND, reason="ORGANISATION_NOT_FOUND"),
    "GrantConsent-already-standing": Bad(
        "GrantConsent", "street_office",
        on(pb.GrantConsentRequest, rider_id=lambda w: w.active, scope=pb.CONSENT_SCOPE_PHONE,
           recipient_id=lambda w: w.community), EXISTS, reason="CONSENT_EXISTS"),
    # Consent is recorded by the rider's own platform (or street office), never by another
    # platform for itself.
    "GrantConsent-for-a-rider-of-another-platform": Bad(
        "GrantConsent", "platform",
        on(pb.GrantConsentRequest, rider_id=lambda w: w.foreign, scope=pb.CONSENT_SCOPE_PHONE,
           recipient_id=lambda w: w.platform), DENIED, reason="OUT_OF_SCOPE"),
    "GrantConsent-rider-who-left": Bad(
        "GrantConsent", "platform",
        on(pb.GrantConsentRequest, rider_id=lambda w: w.left, scope=pb.CONSENT_SCOPE_PHONE,
           recipient_id=lambda w: w.community), PRECONDITION, reason="RIDER_LEFT"),
    "WithdrawConsent-unknown-consent": Bad(
        "WithdrawConsent", "platform",
        on(pb.WithdrawConsentRequest, rider_id=lambda w: w.active, consent_id=RANDOM_ID),
        NOT_FOUND, reason="CONSENT_NOT_FOUND"),
    "WithdrawConsent-of-another-rider": Bad(
        "WithdrawConsent", "platform",
        on(pb.WithdrawConsentRequest, rider_id=lambda w: w.suspended,
           consent_id=lambda w: w.standing_consent), NOT_FOUND, reason="CONSENT_NOT_FOUND"),
    "WithdrawConsent-twice": Bad(
        "WithdrawConsent", "platform",
        on(pb.WithdrawConsentRequest, rider_id=lambda w: w.active,
           consent_id=lambda w: w.withdrawn_consent),
        PRECONDITION, reason="CONSENT_ALREADY_WITHDRAWN"),
    "WithdrawConsent-without-consent-id": Bad(
        "WithdrawConsent", "platform",
        on(pb.WithdrawConsentRequest, rider_id=lambda w: w.active),
        INVALID, field="consent_id",
        reason="FIELD_REQUIRED"),
    "GetRider-not-a-uuid": Bad(
        "GetRider", "platform", on(pb.GetRiderRequest, rider_id="not-a-uuid"),
        INVALID, field="rider_id",
        reason="INVALID_ID"),
    "GetRider-unknown": Bad(
        "GetRider", "auditor", on(pb.GetRiderRequest, rider_id=RANDOM_ID),
        NOT_FOUND, reason="RIDER_NOT_FOUND"),
    "GetRider-unknown-by-a-platform": Bad(
        "GetRider", "platform", on(pb.GetRiderRequest, rider_id=RANDOM_ID),
        DENIED, reason="OUT_OF_SCOPE"),
    "GetRider-of-another-platform": Bad(
        "GetRider", "platform", on(pb.GetRiderRequest, rider_id=lambda w: w.foreign),
        DENIED, reason="OUT_OF_SCOPE"),
    "LookupRider-without-platform-rider-id": Bad(
        "LookupRider", "platform", on(pb.LookupRiderRequest, platform_id=lambda w: w.platform),
        INVALID, field="platform_rider_id",
        reason="FIELD_REQUIRED"),
    "LookupRider-in-another-platforms-namespace": Bad(
        "LookupRider", "platform",
        on(pb.LookupRiderRequest, platform_id=lambda w: w.other_platform,
           platform_rider_id=lambda w: w.foreign_platform_rider_id),
        DENIED, reason="OUT_OF_SCOPE"),
    "LookupRider-unknown": Bad(
        "LookupRider", "platform",
        on(pb.LookupRiderRequest, platform_id=lambda w: w.platform, platform_rider_id="nobody"),
        NOT_FOUND, reason="RIDER_NOT_FOUND"),
    "ListRiders-negative-page-size": Bad(
        "ListRiders", "platform", on(pb.ListRidersRequest, page_size=-10000),
        INVALID, field="page_size",
        reason="PAGE_SIZE_NEGATIVE"),
    "ListRiders-garbage-page-token": Bad(
        "ListRiders", "platform", on(pb.ListRidersRequest, page_token="%%%garbage%%%"),
        INVALID, field="page_token",
        reason="PAGE_TOKEN_INVALID"),
    "ListRiders-page-token-with-an-out-of-range-number": Bad(
        "ListRiders", "platform", on(pb.ListRidersRequest, page_token=OUT_OF_RANGE_PAGE_TOKEN),
        INVALID, field="page_token",
        reason="PAGE_TOKEN_INVALID"),
    # Before, status 99 was no filter at all: a platform got all its riders.
    "ListRiders-unknown-status": Bad(
        "ListRiders", "platform", on(pb.ListRidersRequest, status=99), INVALID,
        field="status", reason="ENUM_VALUE_UNKNOWN"),
    "CreateOrganisation-unknown-kind": Bad(
        "CreateOrganisation", "city_admin", on(pb.CreateOrganisationRequest, name="x", kind=99),
        INVALID, field="kind", reason="ENUM_VALUE_UNKNOWN"),
    "ListRiders-page-token-of-other-filters": Bad(
        "ListRiders", "platform",
        on(pb.ListRidersRequest, status=pb.RIDER_STATUS_ACTIVE,
           page_token=lambda w: w.riders_page_token), INVALID, field="page_token",
        reason="PAGE_TOKEN_FILTERS_CHANGED"),
    # -- feed
    "ReadEvents-negative-from-position": Bad(
        "ReadEvents", "service", on(feed_pb.ReadEventsRequest, from_position=-1),
        INVALID, field="from_position",
        reason="VALUE_OUT_OF_RANGE"),
    # AIP-158: above 1000 is coerced to 1000 (see the test below); only negative is refused.
    "ReadEvents-negative-limit": Bad(
        "ReadEvents", "service", on(feed_pb.ReadEventsRequest, limit=-1),
        INVALID, field="limit",
        reason="VALUE_OUT_OF_RANGE"),
}


@pytest.mark.parametrize("case", BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_a_bad_request_gets_a_precise_error_and_writes_nothing(
        identity: ServiceProcess, world: World, case: Bad) -> None:
    request = case.request(world)
    before = identity.last_position()
    case.refused(identity.client(case.who), request, "identity.qiji")
    assert identity.last_position() == before, "a refused request wrote events"


# ---------------------------------------------------------------------------- all at once


def test_a_registration_with_five_faults_gets_all_five_in_one_answer(
        identity: ServiceProcess, world: World) -> None:
    """Formats and references alike (issue 23): one answer lists every fault, each with the
    reason a program branches on, and the ErrorInfo reason says there are several."""
    before = identity.last_position()
    details = call_error(lambda: identity.client("platform").RegisterRider(register_request(
        world, name="", phone="123", national_id=NATIONAL_ID[:-1] + "0",
        home_street_id=world.community, station_id=world.other_station)))
    assert (details.code, details.reason) == (INVALID, "INVALID_ARGUMENT"), details
    assert sorted((f, r) for f, r, _ in details.violations) == [
        ("home_street_id", "ORGANISATION_KIND_NOT_ALLOWED"),
        ("name", "FIELD_REQUIRED"),
        ("national_id", "NATIONAL_ID_INVALID"),
        ("phone", "PHONE_INVALID"),
        ("station_id", "STATION_OF_ANOTHER_PLATFORM"),
    ], details
    street = next(d for f, _, d in details.violations if f == "home_street_id")
    assert "ORGANISATION_KIND_STREET" in street and "ORGANISATION_KIND_COMMUNITY" in street
    assert identity.last_position() == before


def test_a_wrong_parent_kind_and_an_empty_name_come_together_with_wire_enum_names(
        identity: ServiceProcess, world: World) -> None:
    details = call_error(lambda: identity.client("city_admin").CreateOrganisation(
        pb.CreateOrganisationRequest(request_id=new_request_id(),
                                     kind=pb.ORGANISATION_KIND_DISTRICT, name=" ",
                                     parent_id=world.street)))
    assert details.code == INVALID, details
    found = {f: (r, d) for f, r, d in details.violations}
    assert sorted(found) == ["name", "parent_id"], details
    assert found["name"][0] == "FIELD_REQUIRED"
    reason, description = found["parent_id"]
    assert reason == "PARENT_KIND_NOT_ALLOWED"
    assert description == ("the parent of an ORGANISATION_KIND_DISTRICT must be "
                           "ORGANISATION_KIND_CITY, not an ORGANISATION_KIND_STREET")
    assert "[" not in details.message and "'" not in details.message


def test_a_reference_to_nothing_is_not_found_alone_and_listed_beside_other_faults(
        identity: ServiceProcess, world: World) -> None:
    admin = identity.client("city_admin")
    alone = call_error(lambda: admin.RegisterRider(register_request(
        world, home_street_id=RANDOM_ID)))
    assert (alone.code, alone.reason) == (NOT_FOUND, "ORGANISATION_NOT_FOUND"), alone
    assert alone.metadata == {"kind": "organisation", "id": RANDOM_ID}
    beside = call_error(lambda: admin.RegisterRider(register_request(
        world, home_street_id=RANDOM_ID, phone="123")))
    assert beside.code == INVALID, beside
    assert sorted((f, r) for f, r, _ in beside.violations) == [
        ("home_street_id", "ORGANISATION_NOT_FOUND"), ("phone", "PHONE_INVALID")]
    # A parent that names nothing, with a fault of its own request: both, in one answer.
    parent = call_error(lambda: admin.CreateOrganisation(pb.CreateOrganisationRequest(
        request_id=new_request_id(), kind=pb.ORGANISATION_KIND_STREET, name="",
        parent_id=RANDOM_ID)))
    assert sorted((f, r) for f, r, _ in parent.violations) == [
        ("name", "FIELD_REQUIRED"), ("parent_id", "ORGANISATION_NOT_FOUND")], parent


def test_a_page_size_above_the_maximum_is_read_as_the_maximum(
        identity: ServiceProcess, world: World) -> None:
    """AIP-158: a caller asking for more than a page holds gets a page, not an error."""
    answer = identity.client("auditor").ListOrganisations(
        pb.ListOrganisationsRequest(page_size=10000))
    assert 0 < len(answer.organisations) <= 500
    riders = identity.client("platform").ListRiders(pb.ListRidersRequest(page_size=10000))
    assert riders.riders


def test_a_feed_limit_above_the_maximum_is_read_as_the_maximum(
        identity: ServiceProcess, world: World) -> None:
    """AIP-158 for the feed as for pages: a reader asking for more than 1000 events gets a
    batch of at most 1000 and reads on from next_position, not an error."""
    reader = identity.client("service")
    answer = reader.read_events(from_position=1, limit=5000)
    assert 0 < len(answer.events) <= 1000
    assert answer.next_position == answer.events[-1].position + 1
    assert [e.position for e in answer.events] == [
        e.position for e in reader.read_events(from_position=1, limit=1000).events]


# ---------------------------------------------------------------------------- happy path


def test_a_city_sets_up_its_tree_and_a_platform_registers_and_cares_for_its_rider(
        identity: ServiceProcess) -> None:
    admin = identity.client("city_admin")

    city = create_organisation(admin, pb.ORGANISATION_KIND_CITY, "常州市")
    district = create_organisation(admin, pb.ORGANISATION_KIND_DISTRICT, "钟楼区",
                                   city.organisation_id)
    street = create_organisation(admin, pb.ORGANISATION_KIND_STREET, "荷花池街道",
                                 district.organisation_id)
    community = create_organisation(admin, pb.ORGANISATION_KIND_COMMUNITY, "北大街社区",
                                    street.organisation_id)
    assert (community.name, community.kind, community.parent_id) == (
        "北大街社区", pb.ORGANISATION_KIND_COMMUNITY, street.organisation_id)
    assert [o.organisation_id for o in admin.ListOrganisations(pb.ListOrganisationsRequest(
        parent_id=district.organisation_id)).organisations] == [street.organisation_id]

    company = create_organisation(admin, pb.ORGANISATION_KIND_PLATFORM, "骑迹外卖")
    station = create_organisation(admin, pb.ORGANISATION_KIND_STATION, "荷花池站",
                                  company.organisation_id)
    noodles = create_organisation(admin, pb.ORGANISATION_KIND_MERCHANT, "北大街面馆",
                                  street.organisation_id)
    # Each caller acts for its own organisation of this city.
    platform = identity.client_for("platform", company.organisation_id)
    office = identity.client_for("street_office", street.organisation_id)
    merchant = identity.client_for("merchant", noodles.organisation_id)
    assert platform.GetOrganisation(pb.GetOrganisationRequest(
        organisation_id=city.organisation_id)).organisation == city
    space = admin.CreateServiceSpace(pb.CreateServiceSpaceRequest(
        request_id=new_request_id(), street_id=street.organisation_id, name="荷花池骑手驿站",
        address="钟楼区北大街1号",
        amenities=[pb.AMENITY_REST, pb.AMENITY_CHARGING, pb.AMENITY_DRINKING_WATER],
        opening_hours=ALL_WEEK)).service_space
    assert set(space.amenities) == {pb.AMENITY_REST, pb.AMENITY_CHARGING,
                                    pb.AMENITY_DRINKING_WATER}
    assert platform.GetServiceSpace(pb.GetServiceSpaceRequest(
        service_space_id=space.service_space_id)).service_space == space
    found = merchant.ListServiceSpaces(pb.ListServiceSpacesRequest(
        street_id=street.organisation_id, amenities=[pb.AMENITY_CHARGING])).service_spaces
    assert [s.service_space_id for s in found] == [space.service_space_id]
    assert not merchant.ListServiceSpaces(pb.ListServiceSpacesRequest(
        street_id=street.organisation_id, amenities=[pb.AMENITY_TOILET])).service_spaces
    updated = office.UpdateServiceSpace(pb.UpdateServiceSpaceRequest(
        request_id=new_request_id(), service_space_id=space.service_space_id,
        amenities=[pb.AMENITY_REST, pb.AMENITY_TOILET], opening_hours=ALL_WEEK[:5])
    ).service_space
    assert updated.version == space.version + 1
    assert [h.weekday for h in updated.opening_hours] == [1, 2, 3, 4, 5]
    assert [s.service_space_id for s in platform.ListServiceSpaces(pb.ListServiceSpacesRequest(
        street_id=street.organisation_id, amenities=[pb.AMENITY_TOILET])).service_spaces] == [
        space.service_space_id]

    registered = platform.RegisterRider(pb.RegisterRiderRequest(
        request_id=new_request_id(), platform_id=company.organisation_id,
        platform_rider_id="qj-0001", name="张三", phone="13812345678", national_id=NATIONAL_ID,
        home_street_id=street.organisation_id, station_id=station.organisation_id)).rider
    assert registered.status == pb.RIDER_STATUS_REGISTERED
    assert registered.phone == "138****5678"
    rider_id = registered.rider_id

    verified = platform.VerifyRider(pb.VerifyRiderRequest(request_id=new_request_id(),
                                                          rider_id=rider_id)).rider
    assert verified.status == pb.RIDER_STATUS_ACTIVE and verified.HasField("verify_time")

    with_milestone = platform.RecordCareerMilestone(pb.RecordCareerMilestoneRequest(
        request_id=new_request_id(), rider_id=rider_id,
        kind=pb.CAREER_MILESTONE_KIND_COMMUNITY_SOCIAL_WORKER,
        organisation_id=community.organisation_id, note="转岗社区社工")).rider
    [milestone] = with_milestone.career_milestones
    # A note is free text that may name people: withheld from the platform that wrote it.
    assert (milestone.kind, milestone.organisation_id, milestone.note) == (
        pb.CAREER_MILESTONE_KIND_COMMUNITY_SOCIAL_WORKER, community.organisation_id,
        "[withheld: 6 characters]")

    granted = platform.GrantConsent(pb.GrantConsentRequest(
        request_id=new_request_id(), rider_id=rider_id, scope=pb.CONSENT_SCOPE_PHONE,
        recipient_id=community.organisation_id))
    [consent] = granted.rider.consents
    assert consent.consent_id == granted.consent_id and not consent.HasField("withdraw_time")
    withdrawn = platform.WithdrawConsent(pb.WithdrawConsentRequest(
        request_id=new_request_id(), rider_id=rider_id, consent_id=granted.consent_id)).rider
    assert withdrawn.consents[0].HasField("withdraw_time")

    # The platform sees its rider's name and phone masked until the rider consents to share
    # them with it (the consent above was to the community, and is withdrawn).
    as_platform = platform.GetRider(pb.GetRiderRequest(rider_id=rider_id)).rider
    assert as_platform.phone == "138****5678"
    assert as_platform.national_id == NATIONAL_ID[:3] + "*" * 11 + NATIONAL_ID[-4:]
    assert as_platform.name == "张*"
    as_admin = admin.GetRider(pb.GetRiderRequest(rider_id=rider_id)).rider
    assert (as_admin.name, as_admin.phone, as_admin.national_id) == (
        "张三", "13812345678", NATIONAL_ID)
    assert as_admin.status == pb.RIDER_STATUS_ACTIVE
    assert len(as_admin.career_milestones) == 1 and len(as_admin.consents) == 1
    assert as_admin.career_milestones[0].note == "转岗社区社工"

    looked_up = platform.LookupRider(pb.LookupRiderRequest(
        platform_id=company.organisation_id, platform_rider_id="qj-0001")).rider
    assert looked_up == as_platform

    platform.GrantConsent(pb.GrantConsentRequest(
        request_id=new_request_id(), rider_id=rider_id, scope=pb.CONSENT_SCOPE_NAME,
        recipient_id=company.organisation_id))
    consented = platform.GetRider(pb.GetRiderRequest(rider_id=rider_id)).rider
    assert (consented.name, consented.phone) == ("张三", "138****5678")


def test_listing_a_stations_riders_by_status_pages_through_each_rider_once(
        identity: ServiceProcess, world: World) -> None:
    admin, platform = identity.client("city_admin"), identity.client("platform")
    station = create_organisation(admin, pb.ORGANISATION_KIND_STATION, "翻页站",
                                  world.platform).organisation_id
    riders = [register(platform, world, station_id=station).rider_id for _ in range(9)]
    for rider_id in riders[:2]:
        platform.VerifyRider(pb.VerifyRiderRequest(request_id=new_request_id(),
                                                   rider_id=rider_id))

    pages: list[list[str]] = []
    token = ""
    while True:
        reply = platform.ListRiders(pb.ListRidersRequest(
            station_id=station, status=pb.RIDER_STATUS_REGISTERED, page_size=3,
            page_token=token))
        pages.append([r.rider_id for r in reply.riders])
        assert all(r.status == pb.RIDER_STATUS_REGISTERED and r.station_id == station
                   for r in reply.riders)
        token = reply.next_page_token
        if not token:
            break
        assert len(pages) < 10, "paging does not end"

    assert [len(p) for p in pages] == [3, 3, 1]
    listed = [r for p in pages for r in p]
    assert len(listed) == len(set(listed)) and set(listed) == set(riders[2:])
    active = platform.ListRiders(pb.ListRidersRequest(station_id=station,
                                                      status=pb.RIDER_STATUS_ACTIVE))
    assert {r.rider_id for r in active.riders} == set(riders[:2])
    assert active.next_page_token == ""
    # Another platform listing the station sees none of them: a list shows the caller's own.
    rival = identity.client_for("platform", world.other_platform)
    assert not rival.ListRiders(pb.ListRidersRequest(station_id=station, page_size=500)).riders


def test_a_suspended_rider_is_reinstated_and_a_rider_who_leaves_is_listed_as_left(
        identity: ServiceProcess, world: World) -> None:
    platform, office = identity.client("platform"), identity.client("street_office")
    rider_id = register(platform, world).rider_id
    platform.VerifyRider(pb.VerifyRiderRequest(request_id=new_request_id(), rider_id=rider_id))

    suspended = office.SuspendRider(pb.SuspendRiderRequest(
        request_id=new_request_id(), rider_id=rider_id, reason="交通违章待处理")).rider
    assert (suspended.status, suspended.status_reason) == (pb.RIDER_STATUS_SUSPENDED,
                                                           "交通违章待处理")
    reinstated = office.ReinstateRider(pb.ReinstateRiderRequest(
        request_id=new_request_id(), rider_id=rider_id, reason="已处理")).rider
    assert reinstated.status == pb.RIDER_STATUS_ACTIVE

    left = platform.RecordRiderLeft(pb.RecordRiderLeftRequest(
        request_id=new_request_id(), rider_id=rider_id, reason="回老家")).rider
    assert (left.status, left.version) == (pb.RIDER_STATUS_LEFT, reinstated.version + 1)
    listed = platform.ListRiders(pb.ListRidersRequest(
        station_id=world.station, status=pb.RIDER_STATUS_LEFT, page_size=500)).riders
    assert rider_id in {r.rider_id for r in listed}


@pytest.mark.parametrize("role", sorted(ACCESS[f"/{IDENTITY}/GetRider"].roles))
def test_only_officials_see_a_riders_personal_data_in_full(
        identity: ServiceProcess, world: World, role: str) -> None:
    """The masking table over the wire: every role that may read a rider, on every read."""
    phone = phone_number()
    registered = register(identity.client("platform"), world, phone=phone,
                          national_id=NATIONAL_ID)
    caller = identity.client(role)
    listed = caller.ListRiders(pb.ListRidersRequest(station_id=world.station, page_size=500))
    seen = [caller.GetRider(pb.GetRiderRequest(rider_id=registered.rider_id)).rider,
            *[r for r in listed.riders if r.rider_id == registered.rider_id]]
    if role in ACCESS[f"/{IDENTITY}/LookupRider"].roles:
        seen.append(caller.LookupRider(pb.LookupRiderRequest(
            platform_id=world.platform, platform_rider_id=registered.platform_rider_id)).rider)
    assert len(seen) >= 2
    if role in ("city_admin", "street_office"):
        expected = ("王五", phone, NATIONAL_ID)
    else:
        # The platform too, while the rider has not consented to share them with it.
        expected = ("王*", phone[:3] + "****" + phone[-4:],
                    NATIONAL_ID[:3] + "*" * 11 + NATIONAL_ID[-4:])
    for rider in seen:
        assert (rider.name, rider.phone, rider.national_id) == expected


# ---------------------------------------------------------------------------- personal data


def test_personal_data_is_encrypted_at_rest_and_kept_out_of_the_log(
        identity: ServiceProcess, world: World) -> None:
    phone, name = "13912345678", "李四秘名"
    rider_id = register(identity.client("platform"), world, phone=phone, name=name,
                        national_id=OTHER_NATIONAL_ID).rider_id

    conninfo = psycopg.conninfo.make_conninfo(
        dbname=identity.db, **{k: v for k, v in PG.items() if v != ""})
    with psycopg.connect(conninfo) as conn:
        tables = [t for (t,) in conn.execute(
            "SELECT table_name FROM information_schema.columns"
            " WHERE table_schema = %s AND column_name = 'state'", (identity.schema,))]
        assert tables, f"no event table in schema {identity.schema}"
        states: list[str] = []
        for table in tables:
            query = sql.SQL("SELECT state FROM {}").format(sql.Identifier(identity.schema, table))
            states += [bytes(s).decode("utf-8", "replace") for (s,) in conn.execute(query)]

    assert any(rider_id in s for s in states), "the rider's events were not found"
    for state in states:
        for secret in (phone, OTHER_NATIONAL_ID, name):
            assert secret not in state
            assert secret.encode("unicode_escape").decode() not in state
    for event in identity.client("service").all_events():
        state = event.state.decode("utf-8", "replace")
        assert phone not in state and OTHER_NATIONAL_ID not in state
    log = identity.log_path.read_text(errors="replace")
    for secret in (phone, OTHER_NATIONAL_ID):
        assert secret not in log


def test_a_failing_registration_never_writes_the_riders_personal_data_to_the_log(
        identity: ServiceProcess, world: World) -> None:
    """Whatever goes wrong with a registration, the operators' log must not receive the
    rider's phone or name (here: a national id the validator trips over)."""
    phone, name = "13698765432", "赵六不记"
    details = call_error(lambda: identity.client("platform").RegisterRider(register_request(
        world, phone=phone, name=name, national_id="\u00b2" * 17 + "1")))
    assert details.code != grpc.StatusCode.OK
    time.sleep(0.2)  # the log line of the failure is written as the call ends
    log = identity.log_path.read_text(errors="replace")
    assert phone not in log
    assert name not in log and name.encode("unicode_escape").decode() not in log


# ---------------------------------------------------------------------------- idempotency


def test_a_retried_registration_answers_the_first_answer_even_after_a_restart(
        identity: ServiceProcess, world: World) -> None:
    request = register_request(world)
    first = identity.client("platform").RegisterRider(request)
    written = identity.last_position()

    again = identity.client("platform").RegisterRider(request)
    assert again == first
    assert identity.last_position() == written

    changed = pb.RegisterRiderRequest()
    changed.CopyFrom(request)
    changed.name = "别人"
    details = call_error(lambda: identity.client("platform").RegisterRider(changed))
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "request_id" in details.fields
    assert identity.last_position() == written

    identity.restart()

    after_restart = identity.client("platform").RegisterRider(request)
    assert after_restart == first
    assert identity.last_position() == written


def test_concurrent_registrations_of_one_rider_let_exactly_one_through(
        identity: ServiceProcess, world: World) -> None:
    platform_rider_id = unique("race")
    requests = [register_request(world, platform_rider_id=platform_rider_id, phone="13700000000")
                for _ in range(10)]
    barrier = threading.Barrier(len(requests))

    def attempt(request: pb.RegisterRiderRequest) -> tuple[grpc.StatusCode, str, str]:
        client = identity.client("platform")
        barrier.wait(timeout=10)
        try:
            return grpc.StatusCode.OK, client.RegisterRider(request).rider.rider_id, ""
        except grpc.RpcError as error:
            details = details_of(error)
            return details.code, details.metadata.get("rider_id", ""), details.reason

    with ThreadPoolExecutor(max_workers=len(requests)) as pool:
        outcomes = list(pool.map(attempt, requests))

    codes = sorted(code.name for code, _, _ in outcomes)
    assert codes == ["ALREADY_EXISTS"] * 9 + ["OK"], outcomes
    assert {reason for code, _, reason in outcomes if code != grpc.StatusCode.OK} == {
        "RIDER_ALREADY_REGISTERED"}
    [rider_id] = {rider_id for _, rider_id, _ in outcomes}
    registered = identity.events(RIDER_REGISTERED_TOPIC)
    assert [e.originator_id for e in registered].count(rider_id) == 1


def test_a_request_retried_while_the_first_is_still_running_gets_the_first_answer(
        identity: ServiceProcess, world: World) -> None:
    """A client that times out and retries at once races its own first call: every copy of the
    request must get the first answer, never ALREADY_EXISTS for the rider it just registered."""
    for _ in range(20):
        request = register_request(world)
        barrier = threading.Barrier(8)

        def attempt(_: int, request: pb.RegisterRiderRequest = request,
                    barrier: threading.Barrier = barrier) -> Any:
            client = identity.client("platform")
            barrier.wait(timeout=10)
            try:
                return client.RegisterRider(request)
            except grpc.RpcError as error:
                return details_of(error)

        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(pool.map(attempt, range(8)))
        failures = [a for a in answers if not isinstance(a, pb.RegisterRiderResponse)]
        assert not failures, failures
        assert all(a == answers[0] for a in answers)


# ---------------------------------------------------------------------------- feed


def test_the_feed_reads_events_in_order_with_who_acted_and_why(
        identity: ServiceProcess) -> None:
    admin = identity.client("city_admin")
    correlation_id = unique("e2e-correlation")
    request_id = new_request_id()
    started = datetime.now(UTC)
    created, call = admin.stub.CreateOrganisation.with_call(
        pb.CreateOrganisationRequest(request_id=request_id, kind=pb.ORGANISATION_KIND_CITY,
                                     name="溧阳市"),
        metadata=[*admin.metadata, ("x-correlation-id", correlation_id)], timeout=RPC_TIMEOUT)
    assert ("x-correlation-id", correlation_id) in call.initial_metadata()

    # Every write of this module carries a request id, so every event must show one.
    events = identity.client("service").all_events()
    positions = [e.position for e in events]
    assert positions == sorted(set(positions)) and positions[0] >= 1
    for event in events:
        assert event.principal and event.request_id and event.correlation_id, event
        assert event.topic and event.originator_id and event.HasField("time")
    mine = [e for e in events if e.originator_id == created.organisation.organisation_id]
    [event] = mine
    assert (event.principal, event.request_id, event.correlation_id) == (
        "e2e-city_admin", request_id, correlation_id)
    assert event.topic.endswith(":Organisation.Created")
    assert abs(event.time.ToDatetime(tzinfo=UTC) - started) < timedelta(minutes=1)


def test_a_stream_receives_an_event_stored_after_it_started(identity: ServiceProcess) -> None:
    feed = identity.client("service")
    stream = feed.stream_events(from_position=feed.last_position() + 1, timeout=30)
    received: list[feed_pb.StoredEvent] = []

    def read() -> None:
        with contextlib.suppress(grpc.RpcError):  # cancelled at the end
            for reply in stream:
                received.append(reply.event)

    try:
        stream.initial_metadata()  # the server has taken the call
        threading.Thread(target=read, daemon=True).start()
        created = create_organisation(identity.client("city_admin"),
                                      pb.ORGANISATION_KIND_CITY, "金坛市")
        deadline = time.monotonic() + 5
        while created.organisation_id not in {e.originator_id for e in received}:
            assert time.monotonic() < deadline, "the event did not arrive within 5 s"
            time.sleep(0.05)
        assert received[0].position > 0
    finally:
        stream.cancel()


def test_a_stream_from_a_negative_position_is_invalid(identity: ServiceProcess) -> None:
    stream = identity.client("service").stream_events(from_position=-5)
    details = call_error(lambda: next(stream))
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "from_position" in details.fields


# ---------------------------------------------------------------------------- lifecycle


def test_sigterm_stops_the_process_promptly_even_with_a_stream_open(
        identity: ServiceProcess) -> None:
    feed = identity.client("service")
    stream = feed.stream_events(from_position=feed.last_position() + 1, timeout=60)
    stream.initial_metadata()
    ended: list[str] = []

    def follow() -> None:
        try:
            for _ in stream:
                pass
            ended.append("OK")
        except grpc.RpcError as error:
            ended.append(error.code().name)

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    time.sleep(0.3)  # the stream is waiting for new events

    code, elapsed = identity.terminate()
    try:
        assert code == 0, f"exit {code}:\n{identity.log_tail()}"
        assert elapsed < 10
        follower.join(timeout=5)
        assert ended, "the stream never ended"
        assert "service.stopped" in identity.log_tail()
    finally:
        identity.start()  # leave the module's server running for whatever runs next


def test_sigterm_ends_an_open_health_watch_and_stops_well_within_the_grace(
        identity: ServiceProcess) -> None:
    """A load balancer, or a client balancing with gRPC's client-side health checks, keeps a
    Watch open on every server: the stop tells it NOT_SERVING and ends the stream, instead of
    waiting out its whole grace (5 s) for a stream that never ends by itself."""
    channel = grpc.insecure_channel(identity.address)
    watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""),
                                                      timeout=60)
    heard: list[str] = []

    def listen() -> None:
        try:
            for answer in watch:
                heard.append(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))
            heard.append("ended: OK")
        except grpc.RpcError as error:
            heard.append(f"ended: {error.code().name}")

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    deadline = time.monotonic() + 10
    while heard[-1:] != ["SERVING"]:
        assert time.monotonic() < deadline, heard
        time.sleep(0.05)
    code, elapsed = identity.terminate()
    try:
        listener.join(timeout=5)
        assert code == 0, f"exit {code}:\n{identity.log_tail()}"
        assert elapsed < GRACE_SECONDS / 2, elapsed
        assert heard[-2:] == ["NOT_SERVING", "ended: OK"], heard
        assert "service.stop.calls_still_running" not in identity.log_tail()
    finally:
        channel.close()
        identity.start()  # leave the module's server running for whatever runs next

