"""EnrolRider over gRPC into PostgreSQL, beside raw psycopg single-row transactions.

Each enrolment stores two events (the session's and the learner's) in one transaction, after
reading both aggregates; riders enrol into many sessions so that, as in a city, clients spread
over sessions, and also all into one session (the hot-spot case) to show the queueing cost.
Beside it, in the same rounds in turn: the CRUD twin (bench/twin.py: the capacity check and the
enrolment in one SQL statement) on as many sessions of the same capacity, called by the same
clients, and a raw one-row INSERT."""

from __future__ import annotations

import itertools
import os
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from statistics import median

import psycopg
from psycopg_pool import ConnectionPool
from qiji.identity.v1 import identity_service_pb2 as ipb
from qiji.identity.v1 import identity_service_pb2_grpc as irpc
from qiji.training.v1 import training_service_pb2 as tpb
from qiji.training.v1 import training_service_pb2_grpc as trpc

from bench.common import (
    PG,
    dial,
    print_twin_table,
    running_services,
    scratch_database,
    throughput,
)
from bench.twin import alternate, dial_twin, new_ids, running_twin, seed_sessions
from tests.city import build_city, over_stub

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
PER_ROUND = int(os.environ.get("BENCH_OPS", "200"))
CONCURRENCY = [int(c) for c in os.environ.get("BENCH_CLIENTS", "1,8,32").split(",")]


def main() -> None:
    total_riders = PER_ROUND * ROUNDS * len(CONCURRENCY) * 2 + 10
    with scratch_database() as db, running_services(
            ["identity", "training"], db,
            {"bench-admin": ["city_admin"], "bench-platform": ["platform"]}
    ) as (addresses, tokens), running_twin(db, tokens.tokens_file) as twin_address:
        ichan = dial(addresses["identity"])
        tchan = dial(addresses["training"])
        identity, training = irpc.IdentityServiceStub(ichan), trpc.TrainingServiceStub(tchan)
        twin_chan = dial_twin(twin_address)
        twin = trpc.TrainingServiceStub(twin_chan)
        admin = [("authorization", f"Bearer {tokens['bench-admin']}")]
        tree = _tree(identity, admin)
        platform = [("authorization",
                     f"Bearer {tokens.act_for('bench-platform', tree['platform'])}")]
        print(f"registering and verifying {total_riders} riders ...", flush=True)
        riders = iter(_riders(identity, platform, tree, total_riders))
        course = training.DraftCourse(tpb.DraftCourseRequest(
            request_id=str(uuid.uuid4()), track=tpb.TRACK_SKILLS, title="安全骑行", hours="1",
            formats=[tpb.COURSE_FORMAT_CLASSROOM], provider_id=tree["provider"],
            instructor=tpb.Instructor(name="站长", kind=tpb.INSTRUCTOR_KIND_STATION_MASTER)),
            metadata=admin).course.course_id
        training.PublishCourse(tpb.PublishCourseRequest(request_id=str(uuid.uuid4()),
                                                        course_id=course), metadata=admin)
        start = datetime.now(UTC) + timedelta(days=30)
        slot = itertools.count()

        def new_session(capacity: int) -> str:
            begins = start + timedelta(hours=3 * next(slot))
            request = tpb.ScheduleSessionRequest(request_id=str(uuid.uuid4()), course_id=course,
                                                 service_space_id=tree["space"],
                                                 capacity=capacity)
            request.start_time.FromDatetime(begins)
            request.end_time.FromDatetime(begins + timedelta(hours=1))
            return training.ScheduleSession(request, metadata=admin).session.session_id

        lock = threading.Lock()

        def new_twin_sessions(count: int, capacity: int) -> list[str]:
            sessions = new_ids(count)
            seed_sessions(db, [(s, capacity) for s in sessions])
            return sessions

        def enrol_into(sessions: list[str], target: trpc.TrainingServiceStub = training
                       ) -> Callable[[int], None]:
            def enrol(i: int) -> None:
                if target is training:
                    with lock:
                        rider = next(riders)
                else:  # the twin keeps no riders: any id enrols once
                    rider = str(uuid.uuid4())
                target.EnrolRider(tpb.EnrolRiderRequest(
                    request_id=str(uuid.uuid4()), session_id=sessions[i % len(sessions)],
                    rider_id=rider), metadata=platform, timeout=60)
            return enrol

        with psycopg.connect(dbname=db, autocommit=True, **PG) as conn:
            conn.execute("CREATE TABLE raw_rows (id BIGSERIAL PRIMARY KEY, payload BYTEA)")
        pool = ConnectionPool(conninfo=psycopg.conninfo.make_conninfo(dbname=db, **PG),
                              min_size=max(CONCURRENCY), max_size=max(CONCURRENCY),
                              kwargs={"autocommit": True}, open=True)
        payload = os.urandom(900)

        def raw_insert(_: int) -> None:
            with pool.connection() as conn:
                conn.execute("INSERT INTO raw_rows (payload) VALUES (%s)", (payload,))

        def enrolling(sessions: Callable[[], list[str]], clients: int,
                      target: trpc.TrainingServiceStub = training) -> float:
            # Each round into sessions of its own, made before the clock starts.
            return throughput(enrol_into(sessions(), target), PER_ROUND, clients)

        enrol_into(new_twin_sessions(1, 500), twin)(0)  # warm the twin's connections
        rows: list[tuple[str, float, float, float]] = []
        for clients in CONCURRENCY:
            got = alternate(ROUNDS, {
                "spread": partial(enrolling, lambda: [new_session(500) for _ in range(50)],
                                  clients),
                "spread twin": partial(enrolling, lambda: new_twin_sessions(50, 500), clients,
                                       twin),
                "hot": partial(enrolling, lambda: [new_session(500)], clients),
                "hot twin": partial(enrolling, lambda: new_twin_sessions(1, 500), clients, twin),
                "raw": partial(throughput, raw_insert, PER_ROUND, clients)})
            m = {k: median(v) for k, v in got.items()}
            rows.append((f"EnrolRider, 50 sessions, {clients} client(s)", m["spread"],
                         m["spread twin"], m["raw"]))
            rows.append((f"EnrolRider, one session, {clients} client(s)", m["hot"],
                         m["hot twin"], m["raw"]))
        pool.close()
        ichan.close()
        tchan.close()
        twin_chan.close()
    print_twin_table(f"training enrolment (PostgreSQL; median of {ROUNDS} rounds of {PER_ROUND}"
                     f"; twin = bench/twin.py, raw = psycopg one-row INSERT per transaction)",
                     rows)


def _tree(stub: irpc.IdentityServiceStub, md: list[tuple[str, str]]) -> dict[str, str]:
    city = build_city(over_stub(stub, md), also=("provider",))
    street, platform, station, provider = city.street, city.platform, city.station, city.provider
    space = stub.CreateServiceSpace(ipb.CreateServiceSpaceRequest(
        request_id=str(uuid.uuid4()), street_id=street, name="驿站", address="北大街"),
        metadata=md).service_space.service_space_id
    return {"street": street, "platform": platform, "station": station, "provider": provider,
            "space": space}


def _riders(stub: irpc.IdentityServiceStub, md: list[tuple[str, str]], tree: dict[str, str],
            count: int) -> list[str]:
    from concurrent.futures import ThreadPoolExecutor

    def one(_: int) -> str:
        rider = stub.RegisterRider(ipb.RegisterRiderRequest(
            request_id=str(uuid.uuid4()), platform_id=tree["platform"],
            platform_rider_id=uuid.uuid4().hex, name="骑手", phone="13812345678",
            home_street_id=tree["street"], station_id=tree["station"]), metadata=md).rider
        stub.VerifyRider(ipb.VerifyRiderRequest(request_id=str(uuid.uuid4()),
                                                rider_id=rider.rider_id), metadata=md)
        return rider.rider_id
    with ThreadPoolExecutor(8) as pool:
        riders = list(pool.map(one, range(count)))
    time.sleep(1.0)  # let training's follower note the verifications before the clock starts
    return riders


if __name__ == "__main__":
    main()
