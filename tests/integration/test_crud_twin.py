"""The CRUD twin (bench/twin.py), the baseline issue #20 measures commands against, does what a
CRUD service must do right, or the comparison flatters it: it authenticates, answers a retried
request id with the first answer (even once the quota or the places are gone), never gives a
perk past its quota or a session past its capacity, refuses a second claim of the day and a
code that is not the merchant's or is spent, and marks a report near an open one a duplicate."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from qiji.governance.v1 import governance_service_pb2 as gpb
from qiji.governance.v1 import governance_service_pb2_grpc as grpc_gov
from qiji.identity.v1 import identity_service_pb2 as ipb
from qiji.identity.v1 import identity_service_pb2_grpc as irpc
from qiji.merchants.v1 import merchants_service_pb2 as mpb
from qiji.merchants.v1 import merchants_service_pb2_grpc as mrpc
from qiji.training.v1 import training_service_pb2 as tpb
from qiji.training.v1 import training_service_pb2_grpc as trpc

from bench.twin import dial_twin, running_twin, seed_perks, seed_sessions
from shared.auth import add_caller
from tests.conftest import _admin_conninfo

pytestmark = pytest.mark.postgres

FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


def code_of(call: Callable[[], Any]) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


@pytest.fixture(scope="module")
def twin(postgres_db: str, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[tuple[grpc.Channel, list[tuple[str, str]], str]]:
    tokens = tmp_path_factory.mktemp("twin") / "tokens.json"
    token = add_caller(Path(tokens), "twin-test", ["city_admin"])
    database = _admin_conninfo(postgres_db)
    with running_twin(database, tokens) as address, dial_twin(address) as channel:
        yield channel, [("authorization", f"Bearer {token}")], database
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("DROP SCHEMA twin CASCADE")


def test_register_authenticates_and_answers_a_retry_with_the_first_answer(twin) -> None:
    channel, md, _ = twin
    identity = irpc.IdentityServiceStub(channel)

    def register(request_id: str) -> ipb.RegisterRiderResponse:
        return identity.RegisterRider(ipb.RegisterRiderRequest(
            request_id=request_id, platform_id="p", platform_rider_id="a", name="骑手",
            phone="13812345678", home_street_id="s", station_id="st"), metadata=md)
    assert code_of(lambda: identity.RegisterRider(ipb.RegisterRiderRequest(request_id="r0"))
                   ) == grpc.StatusCode.UNAUTHENTICATED
    assert register("r1").rider.rider_id == register("r1").rider.rider_id
    assert code_of(lambda: register("r2")) == grpc.StatusCode.ALREADY_EXISTS


def test_claims_keep_the_quota_and_redemptions_are_single_use(twin) -> None:
    channel, md, database = twin
    merchants = mrpc.MerchantsServiceStub(channel)
    seed_perks(database, [("perk", "merchant", 2)])

    def claim(request_id: str, rider: str) -> mpb.ClaimPerkResponse:
        return merchants.ClaimPerk(mpb.ClaimPerkRequest(
            request_id=request_id, perk_id="perk", rider_id=rider), metadata=md)
    first = claim("c1", "x1")
    assert code_of(lambda: claim("c2", "x1")) == FAILED_PRECONDITION  # one a day
    assert claim("c3", "x2").remaining_quota == 0
    assert code_of(lambda: claim("c4", "x3")) == FAILED_PRECONDITION  # the quota is gone
    assert claim("c1", "x1").claim.code == first.claim.code  # a retry, even so

    def redeem(request_id: str, merchant: str = "merchant") -> mpb.RedeemCodeResponse:
        return merchants.RedeemCode(mpb.RedeemCodeRequest(
            request_id=request_id, merchant_id=merchant, code=first.claim.code), metadata=md)
    assert code_of(lambda: redeem("d0", "another merchant")) == FAILED_PRECONDITION
    assert redeem("d1").claim.status == mpb.CLAIM_STATUS_REDEEMED
    assert redeem("d1").claim.claim_id == first.claim.claim_id
    assert code_of(lambda: redeem("d2")) == FAILED_PRECONDITION  # spent
    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT issued, redeemed FROM twin.perks WHERE perk_id = 'perk'"
                            ).fetchone() == (2, 1)


def test_enrolment_keeps_the_capacity(twin) -> None:
    channel, md, database = twin
    training = trpc.TrainingServiceStub(channel)
    seed_sessions(database, [("session", 1)])

    def enrol(request_id: str, rider: str) -> tpb.EnrolRiderResponse:
        return training.EnrolRider(tpb.EnrolRiderRequest(
            request_id=request_id, session_id="session", rider_id=rider), metadata=md)
    assert enrol("e1", "x1").session.places_taken == 1
    assert enrol("e1", "x1").session.places_taken == 1  # a retry, once full
    assert code_of(lambda: enrol("e2", "x1")) == FAILED_PRECONDITION  # enrolled already
    assert code_of(lambda: enrol("e3", "x2")) == FAILED_PRECONDITION  # full


def test_a_report_near_an_open_one_is_a_duplicate(twin) -> None:
    channel, md, _ = twin
    governance = grpc_gov.GovernanceServiceStub(channel)

    def submit(request_id: str, latitude: float) -> gpb.Report:
        return governance.SubmitReport(gpb.SubmitReportRequest(
            request_id=request_id, rider_id="x", kind=gpb.REPORT_KIND_ANOMALY_WARNING,
            category=gpb.CATEGORY_ROAD_HAZARD, text="井盖缺失",
            location=gpb.Location(street_id="s", latitude=latitude, longitude=120)),
            metadata=md).report
    first = submit("g1", 20)
    assert submit("g1", 20).report_id == first.report_id
    assert submit("g2", 20.0001).status == gpb.REPORT_STATUS_DUPLICATE  # 11 m away
    assert submit("g3", 21).status == gpb.REPORT_STATUS_OPEN  # 111 km away
