"""Group commit's hand-over logic, without a database: who writes, what is batched, who hears
which error. (Against PostgreSQL: tests/integration/test_group_commit.py.)"""

from __future__ import annotations

import threading
import time

import pytest

from shared.store.recorder import GroupCommit, _PendingSave


class Conflict(Exception):
    pass


def pending(name: str) -> _PendingSave:
    return _PendingSave([name], None)  # type: ignore[list-item]


class SlowWriter:
    """Records each batch; the first write blocks until released, so that others queue."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.first_started = threading.Event()
        self.release_first = threading.Event()
        self.fail_names: set[str] = set()
        self.fail_batches_with: set[str] = set()

    def __call__(self, batch: list[_PendingSave]) -> None:
        names = [p.events[0] for p in batch]
        self.batches.append(names)
        if len(self.batches) == 1:
            self.first_started.set()
            assert self.release_first.wait(5)
        if self.fail_batches_with & set(names):
            raise ConnectionError("lost the connection during the commit")
        for index, p in enumerate(batch):
            if p.events[0] in self.fail_names:
                p.error = Conflict(p.events[0])
            else:
                p.ids = [index]


def run_all(group: GroupCommit, names: list[str], results: dict[str, object]
            ) -> list[threading.Thread]:
    def submit(name: str) -> None:
        try:
            results[name] = group.submit(pending(name))
        except Exception as error:
            results[name] = error

    threads = [threading.Thread(target=submit, args=(n,)) for n in names]
    for t in threads:
        t.start()
    return threads


def queue_behind_first(writer: SlowWriter, group: GroupCommit, others: list[str],
                       results: dict[str, object]) -> list[threading.Thread]:
    threads = run_all(group, ["first"], results)
    assert writer.first_started.wait(5)
    threads += run_all(group, others, results)
    deadline = time.monotonic() + 5
    while len(group._queue) < len(others) and time.monotonic() < deadline:
        time.sleep(0.001)
    writer.release_first.set()
    for t in threads:
        t.join(5)
    return threads


def test_a_lone_save_is_written_at_once_and_alone():
    writer = SlowWriter()
    writer.release_first.set()
    assert GroupCommit(writer).submit(pending("a")) == [0]
    assert writer.batches == [["a"]]


def test_saves_arriving_during_a_commit_share_the_next_one():
    writer = SlowWriter()
    group = GroupCommit(writer)
    results: dict[str, object] = {}
    others = [f"s{n}" for n in range(10)]
    queue_behind_first(writer, group, others, results)
    assert writer.batches[0] == ["first"]
    assert sorted(writer.batches[1]) == sorted(others)  # ten saves, one commit
    assert len(writer.batches) == 2
    assert all(isinstance(results[n], list) for n in ["first", *others])


def test_batches_are_capped_and_every_save_is_written_once():
    writer = SlowWriter()
    group = GroupCommit(writer, max_batch=4)
    results: dict[str, object] = {}
    others = [f"s{n}" for n in range(10)]
    queue_behind_first(writer, group, others, results)
    written = [name for batch in writer.batches for name in batch]
    assert sorted(written) == sorted(["first", *others])
    assert max(len(b) for b in writer.batches) <= 4


def test_a_conflicting_save_fails_alone():
    writer = SlowWriter()
    writer.fail_names = {"s3"}
    group = GroupCommit(writer)
    results: dict[str, object] = {}
    others = [f"s{n}" for n in range(6)]
    queue_behind_first(writer, group, others, results)
    assert isinstance(results["s3"], Conflict)
    assert all(isinstance(results[n], list) for n in others if n != "s3")


def test_a_failed_commit_fails_every_save_in_it_and_the_next_batch_still_runs():
    writer = SlowWriter()
    writer.fail_batches_with = {"s0"}
    group = GroupCommit(writer, max_batch=3)
    results: dict[str, object] = {}
    others = [f"s{n}" for n in range(6)]
    queue_behind_first(writer, group, others, results)
    failed_batch = next(b for b in writer.batches if "s0" in b)
    for name in failed_batch:
        assert isinstance(results[name], ConnectionError), name
    for name in set(others) - set(failed_batch):
        assert isinstance(results[name], list), name
    assert not group._busy and not group._queue  # nobody left waiting, next save writes at once
    assert group.submit(pending("later")) == [0]


def test_an_error_in_the_writer_never_leaves_waiters_hanging():
    def explode(batch):
        raise RuntimeError("bug")

    group = GroupCommit(explode)
    with pytest.raises(RuntimeError):
        group.submit(pending("a"))
    with pytest.raises(RuntimeError):
        group.submit(pending("b"))
