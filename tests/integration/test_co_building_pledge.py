"""The co-building pledge (共建倡议) over the real guards and a real store (SQLite and
PostgreSQL): the city publishes it, organisations sign it by their own token or their street
office's, everyone may list who signed; riders' signatures of the participation pledge are
listed to officials only."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from qiji.governance.v1 import governance_service_pb2 as gpb
from qiji.identity.v1 import identity_service_pb2 as ipb

from tests.city import build_city, in_process
from tests.conftest import badges_key_env
from tests.inprocess import InProcessQiji

CO = gpb.PLEDGE_KIND_CO_BUILDING
PARTICIPATION = gpb.PLEDGE_KIND_PARTICIPATION


@pytest.fixture
def q(store_env, tmp_path) -> Iterator[InProcessQiji]:
    qiji = InProcessQiji({**store_env, **badges_key_env()}, Path(tmp_path / "tokens.json"))
    admin = qiji.token("admin", "city_admin")
    # The platform signs by this name (a signature names its organisation).
    city = build_city(in_process(qiji, admin), also=("community", "merchant"),
                      names={"platform": "Platform Co", "station": "Station"})
    city.add("other_street", "STREET", "南大街街道", "district")
    city.add("other_community", "COMMUNITY", "西横街社区", "other_street")
    qiji.ids = city.as_dict()
    qiji.tokens = {
        "admin": admin,
        "auditor": qiji.token("auditor", "auditor"),
        "office": qiji.token("office", "street_office", organisation_id=qiji.ids["street"]),
        "other_office": qiji.token("other-office", "street_office",
                                   organisation_id=qiji.ids["other_street"]),
        "community": qiji.token("community", "community",
                                organisation_id=qiji.ids["community"]),
        "merchant": qiji.token("merchant", "merchant", organisation_id=qiji.ids["merchant"]),
        "platform": qiji.token("platform", "platform", organisation_id=qiji.ids["platform"]),
    }
    qiji.sync()  # governance knows the organisations: a refusal then stores nothing at all
    yield qiji
    qiji.close()


def publish(q, text: str, kind=CO) -> int:
    return q.ok("governance", "PublishPledge", gpb.PublishPledgeRequest(
        request_id=str(uuid.uuid4()), text=text, kind=kind), q.tokens["admin"]).pledge.version


def sign(q, who: str, organisation: str, version: int = 1, request_id: str = ""):
    return q.call("governance", "SignCoBuildingPledge", gpb.SignCoBuildingPledgeRequest(
        request_id=request_id, organisation_id=q.ids[organisation], pledge_version=version),
        q.tokens[who])


def listed(q, who: str, kind=CO, version: int = 0) -> list:
    return list(q.ok("governance", "ListPledgeSignatures", gpb.ListPledgeSignaturesRequest(
        pledge_kind=kind, pledge_version=version), q.tokens[who]).signatures)


def test_organisations_sign_by_their_own_token_or_their_street_office_and_anyone_lists_them(q):
    assert publish(q, "共建骑手友好社区倡议") == 1
    # The two pledges are separate series: the participation pledge has no text yet.
    assert q.call("governance", "GetPledge", gpb.GetPledgeRequest(),
                  q.tokens["merchant"]).code is grpc.StatusCode.NOT_FOUND
    got = q.ok("governance", "GetPledge", gpb.GetPledgeRequest(kind=CO), q.tokens["merchant"])
    assert (got.pledge.kind, got.pledge.text) == (CO, "共建骑手友好社区倡议")
    signed = sign(q, "office", "community")
    assert signed.ok, signed
    assert signed.response.signature.organisation_name == "北大街社区"
    assert signed.response.signature.organisation_kind == "ORGANISATION_KIND_COMMUNITY"
    assert sign(q, "merchant", "merchant").ok
    assert sign(q, "platform", "platform").ok
    for reader in ("merchant", "community", "other_office", "auditor"):
        assert [(s.organisation_name, s.pledge_version) for s in listed(q, reader)] == [
            ("北大街社区", 1), ("荷花池面馆", 1), ("Platform Co", 1)]
    # Signatures are on the public feed: organisations are not personal data.
    events = q.apps["governance"].read_log(1, 10_000)
    assert sum(n.topic.endswith("Organisation.CoBuildingPledgeSigned") for n in events) == 3


def test_another_street_office_or_another_organisation_is_permission_denied(q):
    publish(q, "共建倡议")
    before = q.positions()
    for who, organisation in (("other_office", "community"), ("merchant", "community"),
                              ("community", "merchant"), ("platform", "merchant"),
                              ("other_office", "merchant")):
        refused = sign(q, who, organisation)
        assert (refused.code, refused.reason) == (grpc.StatusCode.PERMISSION_DENIED,
                                                  "OUT_OF_SCOPE"), (who, organisation)
    assert q.positions() == before


def test_signing_twice_is_already_exists_and_a_retry_with_its_request_id_answers_the_first(q):
    publish(q, "共建倡议")
    first = sign(q, "community", "community", request_id="sign-1")
    again = sign(q, "community", "community", request_id="sign-1")
    assert again.ok and again.response == first.response
    position = q.apps["governance"].last_position()
    twice = sign(q, "office", "community")
    assert (twice.code, twice.reason) == (grpc.StatusCode.ALREADY_EXISTS,
                                          "CO_BUILDING_PLEDGE_ALREADY_SIGNED")
    assert q.apps["governance"].last_position() == position


def test_a_new_version_is_signed_afresh_and_the_old_one_is_superseded(q):
    publish(q, "共建倡议")
    assert sign(q, "community", "community").ok
    assert publish(q, "共建倡议（修订）") == 2
    old = sign(q, "merchant", "merchant", version=1)
    assert (old.code, old.reason) == (grpc.StatusCode.FAILED_PRECONDITION,
                                      "PLEDGE_VERSION_SUPERSEDED")
    assert sign(q, "community", "community", version=2).ok
    assert [s.pledge_version for s in listed(q, "merchant")] == [1, 2]
    assert [s.organisation_name for s in listed(q, "merchant", version=2)] == ["北大街社区"]


def test_every_fault_of_a_signature_is_told_at_once(q):
    publish(q, "共建倡议")
    before = q.positions()
    refused = q.call("governance", "SignCoBuildingPledge", gpb.SignCoBuildingPledgeRequest(
        organisation_id="not-an-id", pledge_version=0), q.tokens["admin"])
    assert refused.code is grpc.StatusCode.INVALID_ARGUMENT
    assert sorted(refused.fields) == ["organisation_id", "pledge_version"]
    city = sign(q, "admin", "city", version=7)
    assert city.code is grpc.StatusCode.INVALID_ARGUMENT
    assert sorted(city.fields) == ["organisation_id", "pledge_version"]
    assert q.positions() == before
    bad_list = q.call("governance", "ListPledgeSignatures", gpb.ListPledgeSignaturesRequest(
        pledge_version=-1, page_size=-1), q.tokens["merchant"])
    assert bad_list.code is grpc.StatusCode.INVALID_ARGUMENT
    assert sorted(bad_list.fields) == ["page_size", "pledge_kind", "pledge_version"]


def test_without_a_published_pledge_a_signature_is_not_found(q):
    refused = sign(q, "community", "community")
    assert refused.code is grpc.StatusCode.NOT_FOUND


def test_riders_signatures_are_listed_to_officials_only_and_by_id(q):
    rider = q.ok("identity", "RegisterRider", ipb.RegisterRiderRequest(
        request_id="reg-1", platform_id=q.ids["platform"], platform_rider_id="R1",
        name="王小明", phone="13812345678", home_street_id=q.ids["street"],
        station_id=q.ids["station"]), q.tokens["platform"]).rider.rider_id
    q.ok("identity", "VerifyRider", ipb.VerifyRiderRequest(rider_id=rider), q.tokens["platform"])
    publish(q, "我承诺做城市的移动探头", kind=PARTICIPATION)
    q.ok("governance", "SignPledge", gpb.SignPledgeRequest(rider_id=rider, pledge_version=1),
         q.tokens["platform"])
    for official in ("admin", "auditor", "office"):
        rows = listed(q, official, kind=PARTICIPATION)
        assert [(r.rider_id, r.organisation_id) for r in rows] == [(rider, "")], official
    # Riders are personal data: neither another street, nor a merchant, a community or even
    # the rider's own platform lists them (the platform has the rider's own record).
    for other in ("other_office", "merchant", "community", "platform"):
        assert listed(q, other, kind=PARTICIPATION) == [], other


def test_concurrent_signatures_of_one_organisation_store_one(q):
    publish(q, "共建倡议")
    answers: list = []

    def go() -> None:
        answers.append(sign(q, "community", "community"))
    threads = [threading.Thread(target=go) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(a.code.name for a in answers) == ["ALREADY_EXISTS"] * 5 + ["OK"]
    assert len(listed(q, "merchant")) == 1
