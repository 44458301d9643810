"""The need-to-know table (shared/masking.py) on the free text of a rider's report: what the
rider wrote and the resolution they are owed reach their platform; officials' notes do not."""

from __future__ import annotations

from shared import auth, masking
from shared.masking import FREE_TEXT, REPORT_TEXT, Shown

NOTE = "工作人员李某已出发"


def test_a_platform_reads_a_riders_report_but_not_the_officials_notes() -> None:
    platform = {auth.PLATFORM}
    assert masking.shown(REPORT_TEXT, platform) is Shown.CLEAR
    assert masking.show(REPORT_TEXT, "井盖缺失", platform) == "井盖缺失"
    assert masking.show(FREE_TEXT, NOTE, platform) == f"[withheld: {len(NOTE)} characters]"


def test_report_text_is_free_text_to_every_other_role() -> None:
    for role in sorted(auth.ROLES - {auth.PLATFORM}):
        assert masking.shown(REPORT_TEXT, {role}) is masking.shown(FREE_TEXT, {role}), role


def test_redact_reads_a_key_as_its_owner_says() -> None:
    """A report's history: its text and resolution are the rider's to read, a closed report's
    outcome is a status (not text at all), a note stays free text."""
    event = {"text": "井盖缺失", "resolution": "已修复", "outcome": "RESOLVED", "note": NOTE,
             "nested": [{"resolution": "已修复"}]}
    fields = {"text": REPORT_TEXT, "resolution": REPORT_TEXT, "outcome": None}
    assert masking.redact(event, {auth.PLATFORM}, fields) == {
        "text": "井盖缺失", "resolution": "已修复", "outcome": "RESOLVED",
        "note": f"[withheld: {len(NOTE)} characters]", "nested": [{"resolution": "已修复"}]}
    auditor = masking.redact(event, {auth.AUDITOR}, fields)
    assert auditor["text"] == "[withheld: 4 characters]" and auditor["outcome"] == "RESOLVED"
    # Without the owner's word, the names alone decide, as before.
    assert masking.redact(event, {auth.PLATFORM})["text"] == "[withheld: 4 characters]"


def test_what_is_said_in_a_help_request_is_its_departments_and_the_city_admins_only() -> None:
    """帮扶: the rider's words reach the departments given the request (their scope) and the
    city admin; not the street office, not the platform — a labour dispute may be with the
    platform itself — and not auditors. The outcome also reaches the rider's own platform."""
    readers = {role for role in auth.ROLES if masking.shown(masking.HELP_TEXT, {role})
               is Shown.CLEAR}
    assert readers == {auth.CITY_ADMIN, auth.DEPARTMENT}
    assert {role for role in auth.ROLES if masking.shown(masking.HELP_OUTCOME, {role})
            is Shown.CLEAR} == {auth.CITY_ADMIN, auth.DEPARTMENT, auth.PLATFORM}
    words = "老板拖欠工资"
    for role in (auth.STREET_OFFICE, auth.AUDITOR, auth.PLATFORM, auth.OPERATOR):
        assert masking.show(masking.HELP_TEXT, words, {role}) == "[withheld: 6 characters]"


def test_what_a_set_of_roles_sees_is_kept_per_field_and_roles_and_matches_the_table() -> None:
    # shared/masking.py keeps each answer for a frozenset of roles: every field and set of
    # roles (alone and in pairs, asked twice, in an order that would expose a key missing
    # either) answers what a walk of the table answers.
    from itertools import combinations

    from shared import masking
    fields = sorted({f for row in masking.TABLE.values() for f in row})
    role_sets = [frozenset(c) for n in (1, 2) for c in combinations(sorted(masking.TABLE), n)]
    for _ in range(2):
        for roles in role_sets:
            for field in fields:
                assert masking.shown(field, roles) == masking.shown(field, sorted(roles)) == max(
                    masking.TABLE[r][field] for r in roles), (field, roles)
    assert masking.shown(masking.PHONE, frozenset({"unknown"})) == masking.Shown.WITHHELD
