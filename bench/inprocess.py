"""Every service in one process behind the guard (tests/inprocess.py), on a scratch PostgreSQL
database: for the benches that measure a command's own cost, without gRPC or other processes
(bench_perk_history, bench_campaign_size, profile_commands)."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import structlog

from bench.common import scratch_database
from tests.conftest import badges_key_env, pg_env
from tests.inprocess import InProcessQiji

# Settings a bench run may set for the processes it measures.
PASSED_ON = ("QIJI_AGGREGATE_CACHE_SIZE",)


@contextmanager
def qiji_on_postgres() -> Iterator[InProcessQiji]:
    """Warnings only in the log: a bench prints its own figures. QIJI_AGGREGATE_CACHE_SIZE is
    taken from the environment, as a deployment takes it."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    with scratch_database() as db, tempfile.TemporaryDirectory() as tmp:
        env = {"QIJI_DATA_DIR": str(Path(tmp) / "data"), **badges_key_env(),
               **pg_env(db, f"p_{uuid.uuid4().hex[:8]}"),
               **{name: os.environ[name] for name in PASSED_ON if name in os.environ}}
        q = InProcessQiji(env, Path(tmp) / "tokens.json")
        try:
            yield q
        finally:
            q.close()
