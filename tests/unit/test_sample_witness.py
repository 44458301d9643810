"""The sample platform adapter (services/relay/sample_consumer.py): its handlers called as
nameko would, without a broker — each worker made by nameko's own `worker_factory`, its record
the one the container's AdapterRecord hands every worker."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any
from unittest.mock import MagicMock

import pytest

from shared.checkpoints import CheckpointSigner
from shared.tools.audit_cli import read_checkpoints

# nameko imports eventlet (without patching anything): its deprecation notice is not ours.
pytestmark = pytest.mark.filterwarnings(r"ignore:\s*Eventlet is deprecated")

PLATFORM = "7b0c3a52-4e0b-4d7e-9f1e-2f4b8c1d9a01"


@pytest.fixture
def adapter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The container's record dependency, set up as a container starts it; stopped after."""
    from services.relay import sample_consumer
    monkeypatch.setattr(sample_consumer, "PLATFORM", PLATFORM)
    monkeypatch.setenv("PLATFORM_ADAPTER_DB", str(tmp_path / "adapter.sqlite3"))
    monkeypatch.setenv("PLATFORM_ADAPTER_CHECKPOINTS", str(tmp_path / "witness.jsonl"))
    provider = sample_consumer.PlatformAdapter.record.bind(MagicMock(), "record")
    provider.setup()
    yield provider
    provider.stop()


def worker(provider: Any) -> Any:
    """A worker as nameko makes one per message: a new service instance, its dependency
    injected from the container's provider."""
    from nameko.testing.services import worker_factory

    from services.relay.sample_consumer import PlatformAdapter
    return worker_factory(PlatformAdapter, record=provider.get_dependency(MagicMock()))


def test_the_sample_adapter_keeps_each_checkpoint_once(adapter: Any, tmp_path: Path):
    note = CheckpointSigner(bytes(32), "qiji.local/badges").sign(7, bytes(32)).note
    event = {"id": "c1", "type": "qiji.badges.v1.LogCheckpointSigned", "time": "t",
             "subject": "qiji.local/badges", "data": {"checkpoint": note, "position": 7}}
    worker(adapter).badges_checkpoint(event)
    worker(adapter).badges_checkpoint(event)  # redelivered after a relay crash: the same id
    assert read_checkpoints(tmp_path / "witness.jsonl") == [note]


def test_every_worker_shares_the_containers_one_record(adapter: Any, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch):
    """A worker per message, one SQLite connection for them all: the file is opened once, when
    the container starts, not once per message."""
    opened: list[str] = []
    real_connect = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect",
                        lambda *a, **k: opened.append(str(a[0])) or real_connect(*a, **k))
    workers = [worker(adapter) for _ in range(3)]
    assert len({id(w) for w in workers}) == 3
    assert len({id(w.record) for w in workers}) == 1
    for i, w in enumerate(workers):
        w.rider_verified({"id": f"e{i}", "type": "qiji.identity.v1.RiderVerified", "time": "t",
                          "subject": f"r{i % 2}",
                          "data": {"rider_id": f"r{i % 2}", "verified_time": f"t{i}"}})
    workers[0].rider_verified({"id": "e0", "type": "qiji.identity.v1.RiderVerified",
                               "time": "t", "subject": "r0",
                               "data": {"rider_id": "r0", "verified_time": "again"}})
    assert opened == []
    with real_connect(tmp_path / "adapter.sqlite3") as db:
        assert db.execute("SELECT count(*) FROM seen").fetchone()[0] == 3
        assert db.execute("SELECT rider_id, verified_time FROM riders ORDER BY rider_id"
                          ).fetchall() == [("r0", "t2"), ("r1", "t1")]


def test_a_badge_award_is_kept_once_per_class(adapter: Any, tmp_path: Path):
    def awarded(event_id: str, badge_class_id: str) -> dict[str, Any]:
        return {"id": event_id, "type": "qiji.badges.v1.BadgeAwarded", "time": "t",
                "subject": "r1", "data": {"rider_id": "r1", "badge_class_id": badge_class_id}}
    for event in (awarded("a1", "b2"), awarded("a2", "b1"), awarded("a2", "b1"),
                  awarded("a3", "b2")):
        worker(adapter).badge_awarded(event)
    with sqlite3.connect(tmp_path / "adapter.sqlite3") as db:
        (badges,) = db.execute("SELECT badges FROM riders WHERE rider_id = 'r1'").fetchone()
    assert json.loads(badges) == ["b1", "b2"]


def test_the_adapter_will_not_start_without_its_platform(monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path):
    """At the container's start, not at its first message: it would bind nothing of its own."""
    from services.relay import sample_consumer
    monkeypatch.setattr(sample_consumer, "PLATFORM", "")
    monkeypatch.setenv("PLATFORM_ADAPTER_DB", str(tmp_path / "adapter.sqlite3"))
    provider = sample_consumer.PlatformAdapter.record.bind(MagicMock(), "record")
    with pytest.raises(RuntimeError, match="PLATFORM_ADAPTER_PLATFORM_ID"):
        provider.setup()
    assert not (tmp_path / "adapter.sqlite3").exists()
