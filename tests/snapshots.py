"""Helpers of the snapshot tests (shared/snapshots.py): a snapshot read back as the store would
read it, and a Qiji whose aggregates take snapshots every few versions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared import snapshots
from shared.store.transcoding import qiji_transcoder
from tests.conftest import badges_key_env
from tests.inprocess import InProcessQiji

STEP = 8  # MIN_STEP in small_steps: a snapshot every 8 versions while an aggregate is young


def through_the_store(aggregate: Any) -> Any:
    """The aggregate's snapshot, encoded and decoded as the store's mapper does, read back."""
    kind: Any = type(aggregate).Snapshot
    snapshot = kind.take(aggregate)
    transcoder = qiji_transcoder()
    state = transcoder.decode(transcoder.encode(snapshot.state))
    stored = kind(originator_id=snapshot.originator_id,
                  originator_version=snapshot.originator_version,
                  timestamp=snapshot.timestamp, topic=snapshot.topic, state=state)
    assert stored.usable()
    return stored.mutate(None)


@pytest.fixture
def small_steps(store_env: dict[str, str], tmp_path: Path,
                monkeypatch: pytest.MonkeyPatch) -> Iterator[InProcessQiji]:
    """Every service in one process on the test's store, taking snapshots every STEP versions
    (a real step is 1,024)."""
    monkeypatch.setattr(snapshots, "MIN_STEP", STEP)
    q = InProcessQiji({**store_env, **badges_key_env()}, tmp_path / "tokens.json")
    yield q
    q.close()


def events_read(app: Any, ident: Any) -> list[Any]:
    """From now on, the `gt` of every read of `ident`'s events from `app`'s store (None: from
    the first event): where a first read began."""
    reads: list[Any] = []
    select = app.recorder.select_events

    def counted(*a: Any, **k: Any) -> Any:
        if (a[0] if a else k.get("originator_id")) == ident:
            reads.append(k.get("gt"))
        return select(*a, **k)
    app.recorder.select_events = counted
    return reads
