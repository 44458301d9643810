"""Following a mediation agreement up (回访): the rules of one follow-up, what a partly kept or
broken agreement leads to, and agreements stored before follow-ups existed."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from services.governance.domain.model import MediationCase, MediationPolicy, check_follow_up
from services.governance.domain.values import FollowUpResult, MediationStatus
from shared.errors import FailedPrecondition, Violations

NOW = datetime(2026, 6, 5, 10, tzinfo=UTC)
TODAY = date(2026, 6, 5)


def agreed_case() -> MediationCase:
    case = MediationCase(street_id="s", report_id="", subject="小区禁止骑手进入",
                         mediator_name="李", parties=[], opened_at=NOW - timedelta(days=3))
    case.hold_session(NOW - timedelta(days=1), "荷花池驿站", "")
    case.agree("物业开放通道", NOW, TODAY + timedelta(days=30))
    return case


def faults(**given) -> set[tuple[str, str]]:
    violations = Violations()
    check_follow_up(violations, **{"day": TODAY, "result": FollowUpResult.KEPT,
                                   "reopen": False, "today": TODAY,
                                   "agreed_on": TODAY - timedelta(days=3), **given})
    return {(v.field, v.reason) for v in violations.items}


def test_a_follow_up_is_dated_from_the_agreement_to_today_and_only_a_broken_one_reopens():
    assert faults() == set()
    assert faults(day=TODAY + timedelta(days=1)) == {("day", "DAY_IN_THE_FUTURE")}
    assert faults(day=TODAY - timedelta(days=4)) == {("day", "DAY_BEFORE_AGREEMENT")}
    assert faults(result=None) == {("result", "ENUM_VALUE_REQUIRED")}
    assert faults(result=FollowUpResult.PARTLY_KEPT, reopen=True) == {
        ("reopen", "REOPEN_NEEDS_BROKEN")}
    assert faults(result=FollowUpResult.BROKEN, reopen=True) == set()


def test_an_agreement_is_due_a_follow_up_and_a_kept_one_needs_no_more():
    case = agreed_case()
    assert case.follow_up_due == "2026-07-05" and case.agreed_on == TODAY
    case.record_follow_up(TODAY, FollowUpResult.PARTLY_KEPT, "通道白天开放", NOW, False,
                          TODAY + timedelta(days=30))
    assert case.follow_up_due == "2026-07-05"
    case.record_follow_up(TODAY, FollowUpResult.KEPT, "", NOW, False, None)
    assert (case.follow_up_due, [f["result"] for f in case.follow_ups]) == (
        "", ["PARTLY_KEPT", "KEPT"])
    assert case.status is MediationStatus.AGREED


def test_a_broken_agreement_reopens_the_case_which_is_mediated_and_agreed_again():
    case = agreed_case()
    case.record_follow_up(TODAY, FollowUpResult.BROKEN, "物业又锁了门", NOW, True, None)
    assert (case.status, case.reopen_count, case.closed_at, case.follow_up_due) == (
        MediationStatus.OPEN, 1, None, "")
    with pytest.raises(FailedPrecondition) as error:
        case.record_follow_up(TODAY, FollowUpResult.KEPT, "", NOW, False, None)
    assert error.value.reason == "CASE_NOT_AGREED"
    case.hold_session(NOW, "荷花池驿站", "再次调解")
    case.agree("物业全天开放", NOW, TODAY + timedelta(days=14))
    assert (case.status, case.follow_up_due, case.outcome) == (
        MediationStatus.AGREED, "2026-06-19", "物业全天开放")


def test_an_agreement_stored_before_follow_ups_existed_has_none_due():
    state = {"outcome": "和解", "at": NOW}
    MediationCase.Agreed.upcast_v1_v2(state)
    assert state["follow_up_due"] == ""


def test_the_citys_rule_puts_the_next_follow_up_so_many_days_after():
    policy = MediationPolicy(follow_up_days=14, at=NOW)
    assert policy.due_after(TODAY) == date(2026, 6, 19)
    policy.change(follow_up_days=7, at=NOW)
    assert (policy.due_after(TODAY), policy.version) == (date(2026, 6, 12), 2)
