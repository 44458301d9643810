"""A roll: an aggregate's entry per rider (a session's enrolments, an activity's sign-ups) kept
as a value, an immutables.Map of one Map per rider, and the places its entries hold counted as
they change.

A roll grows with the aggregate's history (riders who withdrew stay on it), and every command
that changes one works on a copy of the aggregate (shared/store/cache.py copy_aggregate): a
Map is shared by the copy, not copied, and each change costs O(log n). The places held are
counted as entries change, so that the rule "is there a place left" does not walk the roll."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from immutables import Map

Roll = Map[str, Map[str, Any]]


def changed(roll: Roll, rider_id: str, changes: Mapping[str, Any], *, fresh: bool,
            holds_a_place: Callable[[Map[str, Any]], bool]) -> tuple[Roll, int]:
    """The roll with the rider's entry changed by `changes` (an entry of `changes` alone when
    `fresh`, or when the rider has none), and how the places held changed by it (-1, 0, +1)."""
    old = roll.get(rider_id)
    new = Map(changes) if old is None or fresh else old.update(changes)
    held = int(holds_a_place(new)) - int(old is not None and holds_a_place(old))
    return roll.set(rider_id, new), held
