"""The catalogue as the city's officials read it: every measure of the five services explains
itself in Chinese (口径说明), its own words, not another measure's nor English."""

from __future__ import annotations

import re

from services.statistics.domain import catalogue

CJK = re.compile(r"[\u4e00-\u9fff]")
LATIN = re.compile(r"[A-Za-z]")


def test_every_measure_has_its_own_chinese_explanation():
    measures = catalogue.measures()
    assert {m.service for m in measures.values()} == set(catalogue.SERVICES)
    for m in measures.values():
        assert m.explanation.strip(), m.name
        assert CJK.search(m.explanation), m.name
        # Read by officials: no English word, no measure's code name (reports_closed...).
        assert not LATIN.search(m.explanation), (m.name, m.explanation)
        assert m.explanation != m.description
    explanations = [m.explanation for m in measures.values()]
    assert len(set(explanations)) == len(explanations)


def test_a_stock_says_it_counts_at_the_periods_end():
    for m in catalogue.measures().values():
        if m.kind == "STOCK":
            assert "期末" in m.explanation and "存量" in m.explanation, m.name
