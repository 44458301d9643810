"""Processes sharing one output (`qiji run`'s services on a terminal or a pipe) never run two
log lines together, also with Python's output unbuffered."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WRITER = """
import logging, sys, structlog
from shared.logging import configure
configure(sys.argv[1])
log = structlog.get_logger("test")
for i in range(400):
    log.info("rpc.finished", i=i, note="骑迹 " * 20)
    if i % 50 == 0:
        logging.getLogger("grpc").warning("a library's line %s", i)
"""


def test_lines_of_processes_writing_to_one_pipe_never_run_together() -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}
    read, write = os.pipe()
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, f"service-{n}"], cwd=REPO,
                                env=env, stdout=write, stderr=write) for n in range(4)]
    os.close(write)
    with os.fdopen(read, "rb") as shared_output:
        lines = shared_output.read().decode().splitlines()
    for writer in writers:
        assert writer.wait(30) == 0
    assert len(lines) == 4 * (400 + 8)
    for line in lines:
        json.loads(line)  # a line holding two, or half of one, does not parse


REQUEST_WRITER = """
import structlog
from shared.context import Actor, RequestContext, acting_as
from shared.logging import configure
configure("identity")
log = structlog.get_logger("test")
log.info("outside")
ctx = RequestContext(actor=Actor("platform-co", frozenset({"platform"})), rpc="GetRider",
                     request_id="req-1", correlation_id="corr-1")
with acting_as(ctx):
    log.info("inside")
    log.info("inside.own", request_id="its-own")
"""


def test_a_line_logged_while_a_request_is_served_carries_its_ids() -> None:
    # The guard binds nothing per call; shared/logging.py reads the request's context when a
    # line is logged. A line logged outside a request has none of them.
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", REQUEST_WRITER], cwd=REPO, env=env,
                          capture_output=True, timeout=30, check=True)
    outside, inside, own = (json.loads(line) for line in done.stderr.decode().splitlines())
    assert not {"rpc", "principal", "request_id", "correlation_id"} & outside.keys()
    assert (inside["rpc"], inside["principal"], inside["request_id"],
            inside["correlation_id"], inside["service"]) == (
        "GetRider", "platform-co", "req-1", "corr-1", "identity")
    assert own["request_id"] == "its-own"  # what a line says itself wins
    assert own["correlation_id"] == "corr-1"
