"""The friendly business area (友好商圈) over the real guards and a real store (SQLite and
PostgreSQL): a business area is an organisation of a street, its street office acts for it;
merchants name it when they apply (or when their place is updated); the city's criteria for
business areas are versioned apart from the communities'; the mark counts the approved
merchants of the area only, and the area's own signature of the co-building pledge."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from qiji.governance.v1 import governance_service_pb2 as gpb
from qiji.identity.v1 import identity_service_pb2 as ipb
from qiji.merchants.v1 import merchants_service_pb2 as mpb

from tests.conftest import badges_key_env
from tests.inprocess import InProcessQiji

BUSINESS_AREA = ipb.ORGANISATION_KIND_BUSINESS_AREA
COMMUNITY = ipb.ORGANISATION_KIND_COMMUNITY


@pytest.fixture
def q(store_env, tmp_path) -> Iterator[InProcessQiji]:
    qiji = InProcessQiji({**store_env, **badges_key_env()}, Path(tmp_path / "tokens.json"))
    admin = qiji.token("admin", "city_admin")

    def org(kind: str, name: str, parent: str = "") -> str:
        return qiji.ok("identity", "CreateOrganisation", ipb.CreateOrganisationRequest(
            request_id=str(uuid.uuid4()), kind=ipb.OrganisationKind.Value(
                f"ORGANISATION_KIND_{kind}"), name=name, parent_id=parent),
            admin).organisation.organisation_id
    city = org("CITY", "常州市")
    district = org("DISTRICT", "钟楼区", city)
    street = org("STREET", "荷花池街道", district)
    other_street = org("STREET", "南大街街道", district)
    qiji.ids = {"street": street, "other_street": other_street,
                "area": org("BUSINESS_AREA", "荷花池美食街", street),
                "second_area": org("BUSINESS_AREA", "北大街商业街", street),
                "other_area": org("BUSINESS_AREA", "南大街步行街", other_street),
                "community": org("COMMUNITY", "北大街社区", street),
                "in_area": org("MERCHANT", "荷花池面馆", street),
                "also_in_area": org("MERCHANT", "荷花池茶铺", street),
                "outside": org("MERCHANT", "北大街便利店", street)}
    qiji.tokens = {
        "admin": admin,
        "office": qiji.token("office", "street_office", organisation_id=street),
        "other_office": qiji.token("other-office", "street_office",
                                   organisation_id=other_street),
    }
    qiji.sync()
    yield qiji
    qiji.close()


def set_criteria(q, area_kind=BUSINESS_AREA, **fields) -> ipb.FriendlyMarkCriteria:
    criteria = ipb.FriendlyMarkCriteria(**{
        "min_friendly_merchants": 2, "co_building_pledge": True, "area_kind": area_kind,
        **fields})
    return q.ok("identity", "SetFriendlyMarkCriteria", ipb.SetFriendlyMarkCriteriaRequest(
        criteria=criteria), q.tokens["admin"]).criteria


def apply_merchant(q, merchant: str, area: str = "", street: str = "street",
                   who: str = "office"):
    return q.call("merchants", "ApplyMerchant", mpb.ApplyMerchantRequest(
        merchant_id=q.ids[merchant], name=merchant, street_id=q.ids[street], category="餐饮",
        location=mpb.Location(latitude=31.78, longitude=119.95, address="北大街2号"),
        business_area_id=q.ids[area] if area else ""), q.tokens[who])


def approve(q, merchant: str) -> None:
    q.ok("merchants", "ApproveMerchant", mpb.ApproveMerchantRequest(
        merchant_id=q.ids[merchant]), q.tokens["office"])


def sign_pledge(q, organisation: str, who: str = "office"):
    q.ok("governance", "PublishPledge", gpb.PublishPledgeRequest(
        request_id="pledge-1", text="共建骑手友好商圈倡议", kind=gpb.PLEDGE_KIND_CO_BUILDING),
        q.tokens["admin"])
    return q.call("governance", "SignCoBuildingPledge", gpb.SignCoBuildingPledgeRequest(
        organisation_id=q.ids[organisation], pledge_version=1), q.tokens[who])


def apply_mark(q, area: str = "area", who: str = "office"):
    return q.call("identity", "ApplyFriendlyMark", ipb.ApplyFriendlyMarkRequest(
        area_id=q.ids[area], brand_name="荷睦", street_attestation="美食街设骑手等餐区"),
        q.tokens[who])


def award(q, mark_id: str, version: int = 1):
    return q.call("identity", "AwardFriendlyMark", ipb.AwardFriendlyMarkRequest(
        mark_id=mark_id, criteria_version=version), q.tokens["admin"])


def test_a_business_area_is_a_streets_organisation(q):
    refused = q.call("identity", "CreateOrganisation", ipb.CreateOrganisationRequest(
        request_id="area-under-community", kind=BUSINESS_AREA, name="错位商圈",
        parent_id=q.ids["community"]), q.tokens["admin"])
    assert (refused.code, refused.reason) == (grpc.StatusCode.INVALID_ARGUMENT,
                                              "PARENT_KIND_NOT_ALLOWED")
    refused = q.call("identity", "CreateOrganisation", ipb.CreateOrganisationRequest(
        request_id="area-alone", kind=BUSINESS_AREA, name="无街商圈"), q.tokens["admin"])
    assert (refused.code, refused.reason) == (grpc.StatusCode.INVALID_ARGUMENT,
                                              "PARENT_REQUIRED")


def test_a_business_area_earns_the_mark_by_its_own_merchants_only(q):
    criteria = set_criteria(q)
    assert (criteria.version, criteria.area_kind) == (1, BUSINESS_AREA)
    # The communities' criteria are versioned on their own: none set yet.
    none = q.call("identity", "GetFriendlyMarkCriteria", ipb.GetFriendlyMarkCriteriaRequest(),
                  q.tokens["office"])
    assert none.code is grpc.StatusCode.NOT_FOUND
    assert apply_merchant(q, "in_area", "area").ok
    assert apply_merchant(q, "outside").ok  # the same street, in no business area
    for merchant in ("in_area", "outside"):
        approve(q, merchant)
    got = q.ok("merchants", "GetMerchant", mpb.GetMerchantRequest(
        merchant_id=q.ids["in_area"]), q.tokens["admin"]).merchant
    assert got.business_area_id == q.ids["area"]
    # The area signs through its street office (it has no token of its own).
    signed = sign_pledge(q, "area")
    assert signed.ok, signed
    applied = apply_mark(q)
    assert applied.ok, applied
    mark = applied.response.mark
    assert (mark.area_kind, mark.area_name) == (BUSINESS_AREA, "荷花池美食街")
    # Two merchants approved in the street, one in the area: not met.
    refused = award(q, mark.mark_id)
    assert (refused.code, refused.reason) == (grpc.StatusCode.FAILED_PRECONDITION,
                                              "FRIENDLY_MARK_CRITERIA_NOT_MET")
    assert refused.metadata["unmet"] == "FRIENDLY_MERCHANTS"
    # A second merchant applies outside it, then moves into the area with its place.
    assert apply_merchant(q, "also_in_area").ok
    approve(q, "also_in_area")
    moved = q.call("merchants", "UpdateMerchantPlace", mpb.UpdateMerchantPlaceRequest(
        merchant_id=q.ids["also_in_area"], location=mpb.Location(
            latitude=31.78, longitude=119.95, address="美食街8号"),
        business_area_id=q.ids["area"]), q.tokens["office"])
    assert moved.ok and moved.response.merchant.business_area_id == q.ids["area"]
    awarded = award(q, mark.mark_id)
    assert awarded.ok, awarded
    evidence = {ipb.FriendlyMarkCriterion.Name(r.criterion): sorted(e.name for e in r.evidence)
                for r in awarded.response.mark.results}
    assert evidence == {
        "FRIENDLY_MARK_CRITERION_FRIENDLY_MERCHANTS": ["also_in_area", "in_area"],
        "FRIENDLY_MARK_CRITERION_CO_BUILDING_PLEDGE": ["co-building pledge version 1"]}


def test_the_area_signature_counts_not_its_streets(q):
    set_criteria(q, min_friendly_merchants=0)
    signed = sign_pledge(q, "street")
    assert signed.ok, signed
    mark_id = apply_mark(q).response.mark.mark_id
    refused = award(q, mark_id)
    assert refused.metadata.get("unmet") == "CO_BUILDING_PLEDGE"


def test_a_merchant_names_only_a_business_area_of_its_own_street(q):
    before = q.positions()
    refused = apply_merchant(q, "in_area", "other_area")
    assert (refused.code, refused.fields, refused.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT, ["business_area_id"],
        "BUSINESS_AREA_OF_ANOTHER_STREET")
    refused = apply_merchant(q, "in_area", "community")
    assert (refused.code, refused.reason) == (grpc.StatusCode.INVALID_ARGUMENT,
                                              "ORGANISATION_KIND_NOT_ALLOWED")
    q.ids["nowhere"] = str(uuid.uuid4())
    refused = apply_merchant(q, "in_area", "nowhere")
    assert refused.code is grpc.StatusCode.NOT_FOUND
    assert q.positions() == before
    assert apply_merchant(q, "in_area").ok
    before = q.positions()
    refused = q.call("merchants", "UpdateMerchantPlace", mpb.UpdateMerchantPlaceRequest(
        merchant_id=q.ids["in_area"], location=mpb.Location(latitude=31.7, longitude=119.9),
        business_area_id=q.ids["other_area"]), q.tokens["office"])
    assert (refused.code, refused.reason) == (grpc.StatusCode.INVALID_ARGUMENT,
                                              "BUSINESS_AREA_OF_ANOTHER_STREET")
    assert q.positions() == before


def test_another_streets_office_is_refused(q):
    set_criteria(q)
    before = q.positions()
    refused = apply_mark(q, who="other_office")
    assert refused.code is grpc.StatusCode.PERMISSION_DENIED
    refused = sign_pledge(q, "area", who="other_office")
    assert refused.code is grpc.StatusCode.PERMISSION_DENIED
    assert q.positions()["identity"] == before["identity"]
    # Its own office applies; a community's criteria do not judge a business area's mark.
    set_criteria(q, COMMUNITY, min_friendly_merchants=0, co_building_pledge=False,
                 street_attestation=True)
    mark_id = apply_mark(q).response.mark.mark_id
    refused = award(q, mark_id, version=1)
    assert refused.reason == "FRIENDLY_MARK_CRITERIA_NOT_MET"


def test_criteria_are_kept_per_kind_of_area(q):
    set_criteria(q)
    request = ipb.SetFriendlyMarkCriteriaRequest(request_id="criteria-2", criteria=(
        ipb.FriendlyMarkCriteria(min_friendly_merchants=3, area_kind=BUSINESS_AREA)))
    first = q.ok("identity", "SetFriendlyMarkCriteria", request, q.tokens["admin"])
    # A retry answers the first answer (the kind read back from what was stored).
    assert q.ok("identity", "SetFriendlyMarkCriteria", request, q.tokens["admin"]) == first
    community = set_criteria(q, 0, min_friendly_merchants=1, co_building_pledge=False)
    assert (community.version, community.area_kind) == (1, COMMUNITY)
    got = q.ok("identity", "GetFriendlyMarkCriteria", ipb.GetFriendlyMarkCriteriaRequest(
        area_kind=BUSINESS_AREA), q.tokens["office"]).criteria
    assert (got.version, got.min_friendly_merchants) == (2, 3)
    refused = q.call("identity", "SetFriendlyMarkCriteria", ipb.SetFriendlyMarkCriteriaRequest(
        criteria=ipb.FriendlyMarkCriteria(min_friendly_merchants=-1,
                                          area_kind=ipb.ORGANISATION_KIND_STREET)),
        q.tokens["admin"])
    assert sorted(refused.fields) == ["criteria.area_kind", "criteria.min_friendly_merchants"]
    refused = q.call("identity", "GetFriendlyMarkCriteria", ipb.GetFriendlyMarkCriteriaRequest(
        area_kind=ipb.ORGANISATION_KIND_MERCHANT), q.tokens["office"])
    assert (refused.code, refused.reason) == (grpc.StatusCode.INVALID_ARGUMENT,
                                              "ORGANISATION_KIND_NOT_ALLOWED")
