"""Ladders, award ceremonies and recognition (城市治理合伙人) over the wire, through the real
guards, with two tenants (tests/tenancy_world.py): a street office presents its own riders'
awards and confers titles on its own riders only, another's is refused and nothing is written;
the answers carry the new fields."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from qiji.badges.v1 import badges_service_pb2 as bpb

from tests.conftest import badges_key_env, pg_env
from tests.inprocess import InProcessQiji
from tests.tenancy_world import World, build, ts

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def w(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
      ) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp(f"ceremony-{request.param}")
    env = {"QIJI_DATA_DIR": str(tmp / "data"), "QIJI_POSTGRES_POOL_SIZE": "2",
           **badges_key_env()}
    if request.param == "postgres":
        env.update(pg_env(request.getfixturevalue("postgres_db"),
                          f"t_{uuid.uuid4().hex[:12]}"))
    qiji = InProcessQiji(env, Path(tmp / "tokens.json"))
    try:
        yield build(qiji)
    finally:
        qiji.close()


def ceremony(w: World, street: str, award: str, **more) -> bpb.RecordAwardCeremonyRequest:
    return bpb.RecordAwardCeremonyRequest(
        request_id=str(uuid.uuid4()), street_id=street,
        held_time=ts(datetime.now(UTC) - timedelta(hours=1)),
        officials=[bpb.Official(name="王建国", role="街道党工委书记")], award_ids=[award],
        **{"place": "荷悦体育公园", **more})


def test_a_street_office_presents_its_own_riders_awards_and_no_one_elses(w):
    a, b = w.tenants["a"], w.tenants["b"]
    before = w.qiji.positions()
    refused = w.qiji.call("badges", "RecordAwardCeremony", ceremony(w, b.street, a.award),
                          w.token("b", "street_office"))
    assert (refused.code, refused.reason) == (grpc.StatusCode.PERMISSION_DENIED,
                                              "OUT_OF_SCOPE")
    assert w.qiji.positions() == before  # nothing written
    made = w.qiji.ok("badges", "RecordAwardCeremony",
                     ceremony(w, a.street, a.award, place="", service_space_id=a.space),
                     w.token("a", "street_office")).ceremony
    assert (list(made.award_ids), made.service_space_id, made.officials[0].name) == (
        [a.award], a.space, "王建国")
    award = w.qiji.ok("badges", "GetAward", bpb.GetAwardRequest(award_id=a.award),
                      w.token("a", "platform")).award
    assert award.ceremony_id == made.ceremony_id and award.HasField("present_time")

    def listed(token: str) -> list[str]:
        return [c.ceremony_id for c in w.qiji.ok(
            "badges", "ListAwardCeremonies", bpb.ListAwardCeremoniesRequest(), token).ceremonies]
    assert listed(w.token("a", "street_office")) == [made.ceremony_id]
    assert listed(w.token("b", "street_office")) == []
    shown = w.qiji.ok("badges", "ListAwardCeremonies", bpb.ListAwardCeremoniesRequest(),
                      w.auditor).ceremonies[0]
    assert shown.officials[0].name == "王**"  # a person's name, masked to the auditor
    again = w.qiji.call("badges", "RecordAwardCeremony", ceremony(w, a.street, a.award),
                        w.token("a", "street_office"))
    assert (again.code, again.reason) == (grpc.StatusCode.FAILED_PRECONDITION,
                                          "AWARD_ALREADY_PRESENTED")


def test_a_ceremony_at_another_streets_space_is_refused_precisely(w):
    a, b = w.tenants["a"], w.tenants["b"]
    answer = w.qiji.call("badges", "RecordAwardCeremony",
                         ceremony(w, a.street, a.award, service_space_id=b.space),
                         w.admin)
    assert answer.code == grpc.StatusCode.INVALID_ARGUMENT
    assert answer.reason == "SERVICE_SPACE_NOT_IN_STREET"


def test_a_ladder_over_the_wire_and_the_loop_it_refuses(w):
    green = w.qiji.ok("badges", "CreateBadgeClass", bpb.CreateBadgeClassRequest(
        request_id=str(uuid.uuid4()), name="青蜂骑士", issuer_id=w.city,
        criteria=bpb.Criteria(min_volunteer_hours="50")), w.admin).badge_class
    golden = w.qiji.ok("badges", "ReviseBadgeProgression", bpb.ReviseBadgeProgressionRequest(
        badge_class_id=w.badge_class, grows_from_badge_class_id=green.badge_class_id),
        w.admin).badge_class
    assert (golden.grows_from_badge_class_id, golden.progression_version) == (
        green.badge_class_id, 1)
    loop = w.qiji.call("badges", "ReviseBadgeProgression", bpb.ReviseBadgeProgressionRequest(
        badge_class_id=green.badge_class_id, grows_from_badge_class_id=w.badge_class), w.admin)
    assert (loop.code, loop.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "PROGRESSION_CYCLE")


def test_a_partnership_is_conferred_on_its_own_riders_and_shown_to_their_platform(w):
    a = w.tenants["a"]
    refused = w.qiji.call("badges", "ConferRecognition", bpb.ConferRecognitionRequest(
        rider_id=a.rider, title_id=w.recognition_title, reason="x"),
        w.token("b", "street_office"))
    assert (refused.code, refused.reason) == (grpc.StatusCode.PERMISSION_DENIED,
                                              "OUT_OF_SCOPE")
    shown = w.qiji.ok("badges", "ListRiderRecognitions", bpb.ListRiderRecognitionsRequest(
        rider_id=a.rider), w.token("a", "platform")).recognitions
    assert [(r.recognition_id, r.status) for r in shown] == [
        (a.recognition, bpb.RECOGNITION_STATUS_ACTIVE)]
    assert shown[0].reason.startswith("[withheld")  # the official's words stay inside
    held = w.qiji.call("badges", "ConferRecognition", bpb.ConferRecognitionRequest(
        rider_id=a.rider, title_id=w.recognition_title, reason="again"),
        w.token("a", "street_office"))
    assert (held.code, held.reason) == (grpc.StatusCode.ALREADY_EXISTS,
                                        "RECOGNITION_ALREADY_HELD")
    other = w.qiji.call("badges", "RevokeRecognition", bpb.RevokeRecognitionRequest(
        recognition_id=a.recognition, reason="x"), w.token("b", "street_office"))
    assert other.code == grpc.StatusCode.PERMISSION_DENIED
    titles = w.qiji.ok("badges", "ListRecognitionTitles", bpb.ListRecognitionTitlesRequest(),
                       w.token("b", "merchant")).titles
    assert [t.name for t in titles] == ["城市治理合伙人"]
