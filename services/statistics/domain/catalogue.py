"""The measures of all five services and the mappers that feed them, gathered in one place:
what a query may name and what the projection reads from each log."""

from __future__ import annotations

from types import ModuleType

from services.statistics.domain import (
    badges_facts,
    governance_facts,
    identity_facts,
    merchants_facts,
    training_facts,
)
from services.statistics.domain.facts import Dimension, Mapper, Measure

SERVICES = ("identity", "training", "merchants", "badges", "governance")
_MODULES: dict[str, ModuleType] = {
    "identity": identity_facts, "training": training_facts, "merchants": merchants_facts,
    "badges": badges_facts, "governance": governance_facts}


def measures() -> dict[str, Measure]:
    found: dict[str, Measure] = {}
    for service, module in _MODULES.items():
        for m in module.MEASURES:
            if m.service != service or m.name in found:
                raise ValueError(f"measure {m.name} is declared twice or by the wrong service")
            found[m.name] = m
    return found


def mappers(service: str) -> dict[str, Mapper]:
    """topic -> mapper for one service's log."""
    return dict(_MODULES[service].MAPPERS)


def key_labels() -> dict[Dimension, dict[str, str]]:
    """What the city calls each key of the dimensions that are no organisation (a track, a
    report's kind or category): a module may export KEY_LABELS {Dimension: {key: label}}."""
    found: dict[Dimension, dict[str, str]] = {}
    for module in _MODULES.values():
        for dimension, labels in getattr(module, "KEY_LABELS", {}).items():
            found.setdefault(dimension, {}).update(labels)
    return found
