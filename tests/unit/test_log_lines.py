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
