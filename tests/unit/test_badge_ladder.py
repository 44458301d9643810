"""The rules a badge ladder keeps (青蜂骑士 → 金蜂骑士), without a store."""

from services.badges.domain.ladder import (
    PROGRESSION_ACROSS_ISSUERS,
    PROGRESSION_BRANCHES,
    PROGRESSION_CYCLE,
    Rung,
    above,
    below,
    ladder_problem,
)

LADDER = {"green": Rung("青蜂骑士", "city", ""), "golden": Rung("金蜂骑士", "city", "green"),
          "star": Rung("荷睦之星", "street", ""), "silver": Rung("银蜂骑士", "city", "")}


def test_a_class_may_grow_from_another_of_its_issuer():
    assert ladder_problem(LADDER, "golden", "green") is None
    assert ladder_problem(LADDER, "green", "") is None


def test_a_class_growing_from_itself_or_closing_a_loop_is_a_cycle():
    assert ladder_problem(LADDER, "green", "green")[0] == PROGRESSION_CYCLE
    assert ladder_problem(LADDER, "green", "golden") == (
        PROGRESSION_CYCLE,
        "the ladder would loop: 青蜂骑士 grows from 金蜂骑士 grows from 青蜂骑士")


def test_a_ladder_is_one_issuers_and_one_line():
    reason, text = ladder_problem(LADDER, "star", "green")
    assert reason == PROGRESSION_ACROSS_ISSUERS and "one issuer's" in text
    assert ladder_problem(LADDER, "silver", "green") == (
        PROGRESSION_BRANCHES, "青蜂骑士 already grows into 金蜂骑士 (badge class golden): a "
        "class grows into one class only")


def test_what_lies_below_and_above_a_rung():
    three = {**LADDER, "crown": Rung("蜂王", "city", "golden")}
    assert below(three, "crown") == ["golden", "green"]
    assert above(three, "green") == {"golden", "crown"}
    assert below(three, "green") == [] and above(three, "crown") == set()
