"""The sample platform adapter keeps every checkpoint once, in the file an auditor verifies
with (its handlers called as nameko would, without a broker)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.checkpoints import CheckpointSigner
from shared.tools.audit_cli import read_checkpoints


# nameko imports eventlet (without patching anything): its deprecation notice is not ours.
@pytest.mark.filterwarnings(r"ignore:\s*Eventlet is deprecated")
def test_the_sample_adapter_keeps_each_checkpoint_once(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch):
    from services.relay import sample_consumer
    from services.relay.sample_consumer import PlatformAdapter
    monkeypatch.setattr(sample_consumer, "PLATFORM", "7b0c3a52-4e0b-4d7e-9f1e-2f4b8c1d9a01")
    monkeypatch.setenv("PLATFORM_ADAPTER_DB", str(tmp_path / "adapter.sqlite3"))
    monkeypatch.setenv("PLATFORM_ADAPTER_CHECKPOINTS", str(tmp_path / "witness.jsonl"))
    note = CheckpointSigner(bytes(32), "qiji.local/badges").sign(7, bytes(32)).note
    event = {"id": "c1", "type": "qiji.badges.v1.LogCheckpointSigned", "time": "t",
             "subject": "qiji.local/badges", "data": {"checkpoint": note, "position": 7}}
    adapter = PlatformAdapter()
    adapter.badges_checkpoint(event)
    adapter.badges_checkpoint(event)  # redelivered after a relay crash: the same id
    assert read_checkpoints(tmp_path / "witness.jsonl") == [note]
