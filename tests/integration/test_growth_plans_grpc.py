"""Growth plans over the wire, through the real guards, on SQLite and PostgreSQL: who may read
and change a rider's plan (the other tenant's tokens refused), what each role sees of its free
text, every fault of a request in one INVALID_ARGUMENT, and retries by request_id."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import grpc
import pytest
from qiji.training.v1 import training_service_pb2 as tpb

from tests.integration.test_tenancy import a_world
from tests.tenancy_world import World

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def world(request: pytest.FixtureRequest,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield from a_world(request.param, request, tmp_path_factory)


def get_plan(w: World, plan: str, token: str):
    return w.qiji.call("training", "GetGrowthPlan",
                       tpb.GetGrowthPlanRequest(growth_plan_id=plan), token)


def test_the_other_tenants_platform_and_street_office_are_refused_a_riders_plan(world):
    a, b = world.tenants["a"], world.tenants["b"]
    for role in ("platform", "street_office"):
        refused = get_plan(world, a.growth_plan, world.token("b", role))
        assert (refused.code, refused.reason) == (grpc.StatusCode.PERMISSION_DENIED,
                                                  "OUT_OF_SCOPE")
        before = world.qiji.positions()
        closed = world.qiji.call("training", "CloseGrowthPlan", tpb.CloseGrowthPlanRequest(
            request_id=str(uuid.uuid4()), growth_plan_id=a.growth_plan),
            world.token("b", role))
        assert closed.code is grpc.StatusCode.PERMISSION_DENIED
        assert world.qiji.positions() == before
        listed = world.qiji.call("training", "ListGrowthPlans",
                                 tpb.ListGrowthPlansRequest(rider_id=a.rider),
                                 world.token("b", role))
        assert listed.code is grpc.StatusCode.PERMISSION_DENIED
    # A community owns no riders: it asks its street office.
    assert get_plan(world, a.growth_plan, world.token("a", "community")).code is \
        grpc.StatusCode.PERMISSION_DENIED
    mine = world.qiji.ok("training", "ListGrowthPlans",
                         tpb.ListGrowthPlansRequest(rider_id=b.rider), world.token("b",
                                                                                   "platform"))
    assert [p.growth_plan_id for p in mine.growth_plans] == [b.growth_plan]


def test_the_riders_goals_are_their_platforms_and_officials_to_read_not_auditors(world):
    a = world.tenants["a"]
    seen = {who: get_plan(world, a.growth_plan, token).response.growth_plan.goals
            for who, token in (("platform", world.token("a", "platform")),
                               ("street_office", world.token("a", "street_office")),
                               ("auditor", world.auditor))}
    assert seen["platform"] == seen["street_office"] == "成为社工a"
    assert seen["auditor"] == "[withheld: 5 characters]"


def test_every_fault_of_an_opening_comes_in_one_answer_and_nothing_is_written(world):
    a = world.tenants["a"]
    before = world.qiji.positions()
    answer = world.qiji.call("training", "OpenGrowthPlan", tpb.OpenGrowthPlanRequest(
        request_id=str(uuid.uuid4()), rider_id=a.rider, growth_path_id=a.growth_path,
        path_version=9, goals="g" * 501, tracks=[99, tpb.TRACK_UNSPECIFIED]),
        world.token("a", "platform"))
    assert answer.code is grpc.StatusCode.INVALID_ARGUMENT
    assert sorted(answer.fields) == ["goals", "path_version", "tracks[0]", "tracks[1]"]
    answer = world.qiji.call("training", "DefineGrowthPath", tpb.DefineGrowthPathRequest(
        request_id=str(uuid.uuid4()), name="", steps=[tpb.GrowthStep(
            key="a", title="t", role=42,
            track_hours=[tpb.TrackHoursRequirement(track=77, hours="-1")])]), world.admin)
    assert answer.code is grpc.StatusCode.INVALID_ARGUMENT
    assert sorted(answer.fields) == ["name", "steps[0].role", "steps[0].track_hours[0].hours",
                                     "steps[0].track_hours[0].track"]
    assert world.qiji.positions() == before


def test_a_retry_with_the_same_request_id_answers_the_first_plan_and_writes_nothing(world):
    a = world.tenants["a"]
    define = tpb.DefineGrowthPathRequest(request_id=str(uuid.uuid4()), name="骑手到站长",
                                         steps=[tpb.GrowthStep(
                                             key="station-master", title="站长",
                                             role=tpb.GROWTH_ROLE_STATION_MASTER,
                                             pre_job_certified=True)])
    path = world.qiji.ok("training", "DefineGrowthPath", define, world.admin).growth_path
    assert (path.path_version, path.steps[0].role) == (1, tpb.GROWTH_ROLE_STATION_MASTER)
    assert world.qiji.ok("training", "DefineGrowthPath", define,
                         world.admin).growth_path == path
    request = tpb.OpenGrowthPlanRequest(request_id=str(uuid.uuid4()), rider_id=a.rider,
                                        growth_path_id=path.growth_path_id,
                                        tracks=[tpb.TRACK_SKILLS])
    token = world.token("a", "street_office")
    first = world.qiji.ok("training", "OpenGrowthPlan", request, token).growth_plan
    before = world.qiji.positions()
    again = world.qiji.ok("training", "OpenGrowthPlan", request, token).growth_plan
    assert again.growth_plan_id == first.growth_plan_id
    assert world.qiji.positions() == before
    assert first.opened_by_id == a.street
    (step,) = first.steps
    assert (step.met, step.reached, step.pre_job_certification_missing) == (False, False, True)
    # Without the request id, the second opening is the rider's open plan on that path.
    request.request_id = str(uuid.uuid4())
    refused = world.qiji.call("training", "OpenGrowthPlan", request, token)
    assert (refused.code, refused.reason) == (grpc.StatusCode.ALREADY_EXISTS,
                                              "GROWTH_PLAN_ALREADY_OPEN")
    paths = world.qiji.ok("training", "ListGrowthPaths", tpb.ListGrowthPathsRequest(),
                          world.token("b", "merchant")).growth_paths
    assert path.growth_path_id in {p.growth_path_id for p in paths}
