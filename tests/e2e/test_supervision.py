"""The native stack keeps its processes up by itself: every kind of process `deploy/up` starts
(each service, the platform gateway, the relay, the public credentials face) is killed with
SIGKILL in turn, under a load of concurrent commands, and supervisord brings it back, SERVING
(the relay: healthy; the face: ready, /readyz), without the operator; `deploy/status` counts
the restart and says why. Nothing acknowledged is lost: every answered command is in the store
once, a retry with its request id answers the first answer, training's follower and the relay
catch up with identity's log.

Figures (restart times, what the callers saw) go to build/reliability/supervised_kill_9.json."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

import grpc
import psycopg
import pytest

from shared.auth import add_caller
from shared.tools.ops import supervision
from shared.tools.ops.stack import PROCESSES, RELAY, Stack
from shared.tools.ops.stack import ready as answers_ready
from tests.conftest import _admin_conninfo
from tests.e2e.client import Client, create_city
from tests.e2e.test_deploy_scripts import Operator, operator_for
from tests.e2e.test_reliability import (
    PLATFORM_PRINCIPAL,
    Load,
    assert_nothing_lost_or_doubled,
    check_store,
    replay,
    stored_log,
    write_figures,
)

pytestmark = pytest.mark.e2e

BACK_WITHIN = 60.0  # seconds a killed process may take to be ready again (a generous bound)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    with operator_for(tmp_path_factory, "supervised") as op:
        yield op


def ops_stack(op: Operator) -> Stack:
    """The operator's stack as its scripts see it, to ask supervisord and the process itself
    directly while waiting: a `deploy/status` run (a new interpreter probing every process)
    takes seconds under load, and waiting by it measured that rather than the restart."""
    return Stack.resolve(op.run_dir, {"pg_db": op.db, "port_offset": op.offset},
                         env=op.broker_env())


def ready(op: Operator, name: str, report: dict[str, Any]) -> bool:
    if name == RELAY:
        return bool(report["relay"]["healthy"])
    return report["services"][name]["health"] == "SERVING"


def test_every_kind_of_process_killed_under_load_comes_back_serving_and_nothing_is_lost(
        stack: Operator) -> None:
    up = stack.run("up", "--timeout", "90")
    assert up.returncode == 0, up.stdout + up.stderr
    token = (stack.run_dir / "admin.token").read_text().strip()
    with grpc.insecure_channel(stack.address("identity")) as channel:
        city = create_city(Client(channel, token, "identity"))
    # The principal the load's request records are keyed by (check_store finds them so).
    platform = add_caller(stack.run_dir / "tokens.json", PLATFORM_PRINCIPAL, ["platform"],
                          city["platform"])
    # Every kind of process deploy/up supervises (new ones join PROCESSES, and this test).
    kinds = list(PROCESSES)
    assert "credentials" in kinds
    load = Load(stack.address("identity"), platform, city, callers=4, pause=0.01).start()
    restarts: list[dict[str, Any]] = []
    ops = ops_stack(stack)
    try:
        for name in kinds:
            load.wait_answered(load.answered() + 40, timeout=60)
            # Past supervisord's start phase (startsecs): a process up for good, killed.
            waited = time.monotonic()
            while (before := supervision.processes(ops)[name]).state != "RUNNING":
                assert time.monotonic() - waited < 30, before
                time.sleep(0.2)
            os.kill(before.pid, 9)
            killed = time.monotonic()
            # Back: a new pid under supervisord, and ready (SERVING, healthy, /readyz).
            while not ((pid := supervision.processes(ops)[name].pid) and pid != before.pid
                       and answers_ready(ops, name)):
                assert time.monotonic() - killed < BACK_WITHIN, (name, pid)
                time.sleep(0.1)
            restarts.append({"process": name, "pid": pid,
                             "back_ready_seconds": round(time.monotonic() - killed, 2)})
        load.wait_answered(load.answered() + 40, timeout=60)
        load.finish(timeout=60)

        conninfo = _admin_conninfo(stack.db)
        log = stored_log(conninfo, "identity")
        stored, problems = check_store(load, log)
        differing = replay(stack.address("identity"), platform, load.commands)
        stored_after_replay = len(stored_log(conninfo, "identity").rows) - len(log.rows)
        # Followers and the relay caught up with everything identity stored (no lag at all).
        deadline = time.monotonic() + 60
        while (status := stack.status("--max-lag", "0"))[0] != 0:
            assert time.monotonic() < deadline, status[1]["problems"]
            time.sleep(0.5)
        report = status[1]
        # ... and `deploy/status` says of each: ready, on the pid that came back, its one
        # restart counted, and why. Asked once at the end, not after each kill: a status run
        # (a new interpreter probing every process) took 3-4 s a time, a third of this test,
        # and what it says of a process killed earlier stays true (a second restart would
        # count 2 and fail here).
        for restart in restarts:
            name = restart["process"]
            state = report["supervisor"]["processes"][name]
            restart.update(restarts_shown=state["restarts"], reason_shown=state["last_exit"])
            assert state["pid"] == restart["pid"] and ready(stack, name, report), (
                name, state, report)
            assert state["restarts"] == 1, (name, state)
            assert state["last_exit"] == "terminated by SIGKILL", (name, state)
        with psycopg.connect(conninfo) as conn:
            (relayed,) = conn.execute("SELECT next_position - 1 FROM relay.relay_positions "
                                      "WHERE service = 'identity'").fetchone()
        figures = {
            "callers": load.callers, "commands_sent": len(load.commands),
            "acknowledged": load.answered(), "restarts": restarts,
            "failure_codes": dict(load.failure_codes()), **stored,
            "replayed_with_a_different_answer": len(differing),
            "stored_by_replay": stored_after_replay,
            "identity_log_position": report["services"]["identity"]["log_position"],
            "relay_published_through": relayed}
        write_figures("supervised_kill_9", figures)
        assert_nothing_lost_or_doubled(load, problems, differing, stored_after_replay)
        assert relayed == report["services"]["identity"]["log_position"]
        assert {p["restarts"] for p in report["supervisor"]["processes"].values()} == {1}
        print(json.dumps(restarts))
    finally:
        if load._threads[0].is_alive():
            load.finish(timeout=60)
        stack.run("down", connection=False)
