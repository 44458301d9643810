"""How `make test` deals the suite out to its workers (tests/conftest.py): files that share
something run one after another on one worker, never beside each other."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import BROKER, RUN_TOGETHER, TOLD_QIJI

ROOT = Path(__file__).resolve().parents[2]
# What a test file names when it shares it: a relay, or the whole stack with one, against the
# RabbitMQ node; the told Qiji.
SHARED = {BROKER: ("relay_harness", "operator_for("), TOLD_QIJI: ("told_qiji",)}


def files_naming(marks: tuple[str, ...]) -> set[str]:
    here = Path(__file__).resolve()
    return {str(path.relative_to(ROOT)) for path in (ROOT / "tests").rglob("test_*.py")
            if path != here and any(mark in path.read_text(encoding="utf-8") for mark in marks)}


def test_every_file_that_shares_something_runs_with_the_others_that_share_it():
    for shared, marks in SHARED.items():
        assert files_naming(marks) == {f for f, s in RUN_TOGETHER.items() if s == shared}, shared


def test_make_test_deals_out_whole_files_to_as_many_workers_as_postgresql_allows():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "-m pytest tests -n $(TEST_WORKERS) --dist loadfile" in makefile
    assert "TEST_WORKERS ?= auto" in makefile
