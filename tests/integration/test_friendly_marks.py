"""The friendly-community mark (友好社区) over the real guards and a real store (SQLite and
PostgreSQL): the city sets versioned criteria, the street office applies for its community,
the city awards it against the current version with each criterion's evidence (identity's
spaces, merchants' approved merchants and governance's co-building signature, read from their
feeds), or refuses naming what is missing; the mark is withdrawn with a reason."""

from __future__ import annotations

import threading
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

REST, CHARGING, WATER = ipb.AMENITY_REST, ipb.AMENITY_CHARGING, ipb.AMENITY_DRINKING_WATER


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
    qiji.ids = {"street": street, "other_street": other_street, "district": district,
                "community": org("COMMUNITY", "北大街社区", street),
                "other_community": org("COMMUNITY", "西横街社区", other_street),
                "merchant": org("MERCHANT", "荷花池面馆", street)}
    qiji.tokens = {
        "admin": admin,
        "office": qiji.token("office", "street_office", organisation_id=street),
        "other_office": qiji.token("other-office", "street_office",
                                   organisation_id=other_street),
        "community": qiji.token("community", "community",
                                organisation_id=qiji.ids["community"]),
        "merchant": qiji.token("merchant", "merchant", organisation_id=qiji.ids["merchant"]),
    }
    qiji.ids["space"] = qiji.ok("identity", "CreateServiceSpace", ipb.CreateServiceSpaceRequest(
        request_id="space-1", street_id=street, name="外卖人才联合服务空间", address="北大街1号",
        amenities=[REST, CHARGING, WATER]), admin).service_space.service_space_id
    qiji.ok("identity", "CreateServiceSpace", ipb.CreateServiceSpaceRequest(
        request_id="space-2", street_id=street, name="小驿站", address="北大街9号",
        amenities=[REST]), admin)
    qiji.sync()
    yield qiji
    qiji.close()


def set_criteria(q, **fields) -> int:
    criteria = ipb.FriendlyMarkCriteria(**{
        "min_service_spaces": 1, "space_amenities": [REST, WATER], "min_friendly_merchants": 1,
        "co_building_pledge": True, "street_attestation": True, **fields})
    return q.ok("identity", "SetFriendlyMarkCriteria", ipb.SetFriendlyMarkCriteriaRequest(
        criteria=criteria), q.tokens["admin"]).criteria.version


def approve_merchant(q) -> None:
    office, merchant = q.tokens["office"], q.tokens["merchant"]
    q.ok("merchants", "ApplyMerchant", mpb.ApplyMerchantRequest(
        merchant_id=q.ids["merchant"], name="荷花池面馆", street_id=q.ids["street"],
        category="餐饮", location=mpb.Location(latitude=31.78, longitude=119.95,
                                                address="北大街2号")), merchant)
    q.ok("merchants", "ApproveMerchant", mpb.ApproveMerchantRequest(
        merchant_id=q.ids["merchant"]), office)


def sign_pledge(q) -> None:
    q.ok("governance", "PublishPledge", gpb.PublishPledgeRequest(
        request_id="pledge-1", text="共建骑手友好社区倡议", kind=gpb.PLEDGE_KIND_CO_BUILDING),
        q.tokens["admin"])
    q.ok("governance", "SignCoBuildingPledge", gpb.SignCoBuildingPledgeRequest(
        organisation_id=q.ids["community"], pledge_version=1), q.tokens["office"])


def apply(q, who="office", area="community", attestation="小区大门对骑手开放，设骑手停车点"):
    return q.call("identity", "ApplyFriendlyMark", ipb.ApplyFriendlyMarkRequest(
        area_id=q.ids[area], brand_name="荷睦", street_attestation=attestation),
        q.tokens[who])


def award(q, mark_id: str, version: int = 1, request_id: str = ""):
    return q.call("identity", "AwardFriendlyMark", ipb.AwardFriendlyMarkRequest(
        request_id=request_id, mark_id=mark_id, criteria_version=version), q.tokens["admin"])


def test_the_city_awards_the_mark_with_each_criterions_evidence(q):
    assert set_criteria(q) == 1
    approve_merchant(q)
    sign_pledge(q)
    applied = apply(q)
    assert applied.ok, applied
    mark = applied.response.mark
    assert (mark.status, mark.area_name, mark.brand_name) == (
        ipb.FRIENDLY_MARK_STATUS_APPLIED, "北大街社区", "荷睦")
    awarded = award(q, mark.mark_id)
    assert awarded.ok, awarded
    mark = awarded.response.mark
    assert (mark.status, mark.criteria_version) == (ipb.FRIENDLY_MARK_STATUS_AWARDED, 1)
    evidence = {ipb.FriendlyMarkCriterion.Name(r.criterion): (
        r.met, [(e.kind, e.name, e.source) for e in r.evidence]) for r in mark.results}
    # Only the space offering rest and water counts; the merchant by merchants' log, the
    # signature by governance's: each with the position that makes it explainable later.
    assert evidence == {
        "FRIENDLY_MARK_CRITERION_SERVICE_SPACES": (
            True, [("service_space", "外卖人才联合服务空间", "identity")]),
        "FRIENDLY_MARK_CRITERION_FRIENDLY_MERCHANTS": (
            True, [("merchant", "荷花池面馆", "merchants")]),
        "FRIENDLY_MARK_CRITERION_CO_BUILDING_PLEDGE": (
            True, [("pledge_signature", "co-building pledge version 1", "governance")]),
        "FRIENDLY_MARK_CRITERION_STREET_ATTESTATION": (True, [("attestation", "", "identity")]),
    }
    assert all(e.position > 0 for r in mark.results for e in r.evidence
               if e.kind != "attestation")
    # Public recognition: any role reads it and lists it by street.
    got = q.ok("identity", "GetFriendlyMark", ipb.GetFriendlyMarkRequest(
        mark_id=mark.mark_id), q.tokens["merchant"])
    assert got.mark.status == ipb.FRIENDLY_MARK_STATUS_AWARDED
    listed = q.ok("identity", "ListFriendlyMarks", ipb.ListFriendlyMarksRequest(
        street_id=q.ids["street"], status=ipb.FRIENDLY_MARK_STATUS_AWARDED),
        q.tokens["community"])
    assert [m.area_id for m in listed.marks] == [q.ids["community"]]
    # Later criteria do not change what the award was judged by.
    set_criteria(q, min_friendly_merchants=5)
    again = q.ok("identity", "GetFriendlyMark", ipb.GetFriendlyMarkRequest(
        mark_id=mark.mark_id), q.tokens["admin"]).mark
    assert again.criteria_version == 1 and again.results == mark.results


def test_criteria_not_met_are_named_and_nothing_is_stored(q):
    set_criteria(q, min_service_spaces=2)
    mark_id = apply(q).response.mark.mark_id
    position = q.apps["identity"].last_position()
    refused = award(q, mark_id)
    assert (refused.code, refused.reason) == (grpc.StatusCode.FAILED_PRECONDITION,
                                              "FRIENDLY_MARK_CRITERIA_NOT_MET")
    assert refused.metadata["unmet"] == "SERVICE_SPACES,FRIENDLY_MERCHANTS,CO_BUILDING_PLEDGE"
    assert q.apps["identity"].last_position() == position
    # A suspended merchant is no friendly merchant any more.
    set_criteria(q, min_service_spaces=0, space_amenities=[], co_building_pledge=False)
    approve_merchant(q)
    q.ok("merchants", "SuspendMerchant", mpb.SuspendMerchantRequest(
        merchant_id=q.ids["merchant"], reason="卫生检查未通过"), q.tokens["office"])
    refused = award(q, mark_id, version=2)
    assert refused.metadata.get("unmet") == "FRIENDLY_MERCHANTS"


def test_a_street_office_applies_only_for_its_own_communities(q):
    set_criteria(q)
    before = q.positions()
    for who, area in (("other_office", "community"), ("community", "community"),
                      ("merchant", "community")):
        refused = apply(q, who=who, area=area)
        assert refused.code is grpc.StatusCode.PERMISSION_DENIED, (who, refused)
    for rpc, request in (("AwardFriendlyMark", ipb.AwardFriendlyMarkRequest(
            mark_id=str(uuid.uuid4()), criteria_version=1)),
            ("WithdrawFriendlyMark", ipb.WithdrawFriendlyMarkRequest(
                mark_id=str(uuid.uuid4()), reason="x")),
            ("SetFriendlyMarkCriteria", ipb.SetFriendlyMarkCriteriaRequest())):
        refused = q.call("identity", rpc, request, q.tokens["office"])
        assert refused.code is grpc.StatusCode.PERMISSION_DENIED, rpc
    assert q.positions() == before


def test_every_fault_is_told_at_once(q):
    before = q.positions()
    refused = q.call("identity", "SetFriendlyMarkCriteria", ipb.SetFriendlyMarkCriteriaRequest(
        criteria=ipb.FriendlyMarkCriteria(min_service_spaces=101, space_amenities=[REST, REST, 0],
                                          min_friendly_merchants=-1)), q.tokens["admin"])
    assert refused.code is grpc.StatusCode.INVALID_ARGUMENT
    assert sorted(refused.fields) == ["criteria.min_friendly_merchants",
                                      "criteria.min_service_spaces",
                                      "criteria.space_amenities[1]",
                                      "criteria.space_amenities[2]"]
    empty = q.call("identity", "SetFriendlyMarkCriteria", ipb.SetFriendlyMarkCriteriaRequest(),
                   q.tokens["admin"])
    assert (empty.code, empty.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["criteria"])
    refused = q.call("identity", "ApplyFriendlyMark", ipb.ApplyFriendlyMarkRequest(
        area_id=q.ids["street"], brand_name="荷" * 21, street_attestation="x" * 501),
        q.tokens["admin"])
    assert sorted(refused.fields) == ["area_id", "brand_name", "street_attestation"]
    refused = q.call("identity", "AwardFriendlyMark", ipb.AwardFriendlyMarkRequest(
        mark_id="nope", criteria_version=0), q.tokens["admin"])
    assert sorted(refused.fields) == ["criteria_version", "mark_id"]
    refused = q.call("identity", "WithdrawFriendlyMark", ipb.WithdrawFriendlyMarkRequest(
        mark_id="nope", reason=" "), q.tokens["admin"])
    assert sorted(refused.fields) == ["mark_id", "reason"]
    assert q.positions() == before


def test_a_mark_is_withdrawn_with_a_reason_and_applied_for_again(q):
    set_criteria(q, min_friendly_merchants=0, co_building_pledge=False)
    mark_id = apply(q).response.mark.mark_id
    twice = apply(q)
    assert (twice.code, twice.reason) == (grpc.StatusCode.FAILED_PRECONDITION,
                                          "FRIENDLY_MARK_APPLIED")
    first = award(q, mark_id, request_id="award-1")
    assert first.ok
    assert award(q, mark_id, request_id="award-1").response == first.response
    assert award(q, mark_id).reason == "FRIENDLY_MARK_AWARDED"
    withdrawn = q.ok("identity", "WithdrawFriendlyMark", ipb.WithdrawFriendlyMarkRequest(
        mark_id=mark_id, reason="驿站停止开放"), q.tokens["admin"]).mark
    assert (withdrawn.status, withdrawn.withdrawal_reason) == (
        ipb.FRIENDLY_MARK_STATUS_WITHDRAWN, "驿站停止开放")
    again = apply(q)
    assert again.ok and again.response.mark.mark_id == mark_id
    assert again.response.mark.status == ipb.FRIENDLY_MARK_STATUS_APPLIED
    # An older criteria version is not judged by.
    set_criteria(q, min_friendly_merchants=0, co_building_pledge=False)
    stale = award(q, mark_id, version=1)
    assert (stale.code, stale.reason) == (grpc.StatusCode.FAILED_PRECONDITION,
                                          "CRITERIA_VERSION_SUPERSEDED")


def test_two_applications_at_once_store_one(q):
    set_criteria(q)
    answers: list = []

    def go() -> None:
        answers.append(apply(q))
    threads = [threading.Thread(target=go) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(a.code.name for a in answers) == ["FAILED_PRECONDITION"] * 5 + ["OK"]
