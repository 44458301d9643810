"""The copy of an aggregate a command is handed (shared/store/cache.py copy_aggregate): what
copy.deepcopy made, faster. A command changes its copy; the cached original, which queries
render concurrently, must never change with it."""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import Enum
from typing import Any

from eventsourcing.domain import Aggregate, event

from shared.store.cache import copy_aggregate


class Colour(Enum):
    RED = "red"


@dataclass
class Slot:
    """A value class of a domain: copied as deepcopy copies it."""

    taken: list[str] = field(default_factory=list)


class Shelf(Aggregate):
    @event("Opened")
    def __init__(self) -> None:
        self.when = datetime(2026, 12, 7, tzinfo=UTC)
        self.colour = Colour.RED
        self.price = Decimal("1.50")
        self.owner = uuid.uuid4()
        self.items: dict[str, list[dict[str, Any]]] = {"a": [{"n": 1, "at": self.when}]}
        self.tags = {"x", "y"}
        self.pair: tuple[Any, ...] = ("fixed", [1, 2])
        self.shared = [1]
        self.also_shared = self.shared  # the same list twice: the copy keeps them one
        self.slot = Slot(["r1"])
        self.wait = timedelta(minutes=5)
        self.counts = {"r1": 1, uuid.uuid4(): 2}  # all immutable: copied whole, in C

    @event("Stocked")
    def stock(self, name: str) -> None:
        self.items.setdefault(name, []).append({"n": len(self.items)})


def shelf() -> Shelf:
    made = Shelf()
    made.stock("b")
    made.collect_events()
    return made


def test_the_copy_equals_deepcopys_and_shares_what_it_shares() -> None:
    original = shelf()
    copied = copy_aggregate(original)
    expected = copy.deepcopy(original)
    assert type(copied) is Shelf
    assert vars(copied).keys() == vars(expected).keys()
    for name, value in vars(expected).items():
        assert getattr(copied, name) == value, name
    assert copied.also_shared is copied.shared and copied.shared is not original.shared
    # Immutable values may be the original's own; the pair's list may not.
    assert copied.pair[1] is not original.pair[1] and copied.pair[0] == "fixed"


def test_changing_the_copy_leaves_the_original_as_it_was() -> None:
    original = shelf()
    before = copy.deepcopy(original)
    copied = copy_aggregate(original)
    copied.stock("c")
    copied.items["a"][0]["n"] = 99
    copied.tags.add("z")
    copied.pair[1].append(3)
    copied.shared.append(2)
    copied.slot.taken.append("r2")
    copied.counts["r1"] = 5
    assert original.items == before.items
    assert original.counts == before.counts
    assert original.tags == before.tags
    assert original.pair == before.pair
    assert original.shared == [1] and original.also_shared is original.shared
    assert original.slot.taken == ["r1"]
    assert original.version == before.version
    assert copied.version == original.version + 1


def test_an_aggregate_class_that_copies_itself_its_own_way_is_copied_its_way() -> None:
    class Counted(Aggregate):
        copies = 0

        @event("Made")
        def __init__(self) -> None:
            self.n = [1]

        def __deepcopy__(self, memo: dict[int, Any]) -> Counted:
            Counted.copies += 1
            made = Counted.__new__(Counted)
            made.__dict__.update(copy.deepcopy(self.__dict__, memo))
            return made

    original = Counted()
    copied = copy_aggregate(original)
    assert Counted.copies == 1 and copied.n == [1] and copied.n is not original.n
