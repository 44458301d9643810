"""Badge ladders: which badge class a class grows from (青蜂骑士 → 金蜂骑士), and the rules a
ladder keeps. Pure: the application hands in what it knows of every class.

A ladder is the city's data, versioned on the class like its criteria. It is one issuer's
(the organisation that signs both credentials vouches for the step between them) and a single
line (each class grows into at most one other), so "what is next for this rider" always has one
answer; a ladder that loops back on itself would let a rider grow for ever and is refused."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

PROGRESSION_CYCLE = "PROGRESSION_CYCLE"
PROGRESSION_ACROSS_ISSUERS = "PROGRESSION_ACROSS_ISSUERS"
PROGRESSION_BRANCHES = "PROGRESSION_BRANCHES"


@dataclass(frozen=True)
class Rung:
    """What a ladder rule needs of one badge class."""

    name: str
    issuer_id: str
    grows_from: str  # the class it grows from now, "" when none


def ladder_problem(classes: Mapping[str, Rung], badge_class_id: str, grows_from: str
                   ) -> tuple[str, str] | None:
    """(reason, description) of why `badge_class_id` may not grow from `grows_from`, or None.
    `classes` holds every class (the one being created too, under its new id); `grows_from`
    must be one of them (the caller reports an unknown one as not found)."""
    if not grows_from:
        return None
    me, lower = classes[badge_class_id], classes[grows_from]
    if grows_from == badge_class_id:
        return PROGRESSION_CYCLE, f"{me.name} cannot grow from itself"
    if lower.issuer_id != me.issuer_id:
        return (PROGRESSION_ACROSS_ISSUERS,
                f"{lower.name} is issued by organisation {lower.issuer_id} and {me.name} by "
                f"{me.issuer_id}: a ladder is one issuer's")
    path, step, seen = [me.name, lower.name], grows_from, {grows_from}
    while (step := classes[step].grows_from) and step in classes and step not in seen:
        seen.add(step)
        path.append(classes[step].name)
        if step == badge_class_id:
            return (PROGRESSION_CYCLE,
                    "the ladder would loop: " + " grows from ".join(path))
    for other_id, other in classes.items():
        if other_id != badge_class_id and other.grows_from == grows_from:
            return (PROGRESSION_BRANCHES,
                    f"{lower.name} already grows into {other.name} (badge class {other_id}): "
                    "a class grows into one class only")
    return None


def below(classes: Mapping[str, Rung], badge_class_id: str) -> list[str]:
    """The classes under `badge_class_id` on its ladder, nearest first."""
    found: list[str] = []
    step = classes[badge_class_id].grows_from if badge_class_id in classes else ""
    while step and step in classes and step not in found and step != badge_class_id:
        found.append(step)
        step = classes[step].grows_from
    return found


def above(classes: Mapping[str, Rung], badge_class_id: str) -> set[str]:
    """Every class whose ladder has `badge_class_id` below it."""
    return {c for c in classes if badge_class_id in below(classes, c)}
