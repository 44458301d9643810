"""What merchants's events count as in the city's figures: its measures and a mapper per topic."""

from __future__ import annotations

from services.statistics.domain.facts import Mapper, Measure

MEASURES: tuple[Measure, ...] = ()
# topic -> mapper
MAPPERS: dict[str, Mapper] = {}
