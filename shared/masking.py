"""Need-to-know personal data: one table, role × field, that every service and the audit
answers apply when they show a rider's (or a party's) personal data.

What a role may reach at all is decided first, by its tenancy scope (shared/tenancy.py): a
platform sees only the riders it registered, a department only the reports assigned to it.
This table then decides how much of the personal data inside those answers it sees:

- name: clear to the city admin and street offices; to a platform, clear with the rider's
  consent (NAME) to the caller's organisation, else masked; masked to everyone else.
- phone: as the name, with the PHONE consent.
- national id: clear to the city admin and street offices; masked to everyone else.
- free text that may name people (a report's text, resolutions and notes, mediation subjects,
  notes and outcomes, reasons, who handed a package over): clear to the city admin, street
  offices, departments, communities, education providers and merchants (each on what its
  scope reaches: its own cases, records, perks); withheld from platforms, auditors,
  operators and Qiji's own processes.
- what a rider reported and the answer the rider is owed (a report's own text, each
  department's resolution): as free text, and also clear to a platform, whose scope reaches
  only its own riders' reports (the rider follows their report through the platform's app).
  Officials' internal notes on it (work and rejection notes, the verification note) stay free
  text, withheld from the platform.
- what is said in a rider's help request (帮扶: the rider's words, the caseworker's name,
  contact and referral notes): clear to the city admin and departments (a department's scope
  reaches only the help requests given to it); withheld from everyone else, the street office
  and the rider's own platform included — a labour dispute may be with the platform itself.
  The outcome the rider is owed: as that, and also clear to the rider's own platform (the
  only platform its scope reaches), which carries it to the rider.

"masked" keeps enough to tell entries apart: 张*, 138****0000, 320***********1234.
"withheld" replaces the text by `[withheld: N characters]`. A token holding several roles sees
what its most trusted role sees. An erased rider's data shows as `[erased]` to everyone."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import IntEnum
from typing import Any

from shared import auth, context
from shared.personal_data import ERASED

NAME = "name"
PHONE = "phone"
NATIONAL_ID = "national_id"
FREE_TEXT = "free_text"
REPORT_TEXT = "report_text"
HELP_TEXT = "help_text"
HELP_OUTCOME = "help_outcome"
FIELDS = (NAME, PHONE, NATIONAL_ID, FREE_TEXT, REPORT_TEXT, HELP_TEXT, HELP_OUTCOME)


class Shown(IntEnum):
    """How much of a field a role sees; a larger value shows more."""

    WITHHELD = 0
    MASKED = 1
    WITH_CONSENT = 2  # clear when the rider consented to the caller's organisation, else masked
    CLEAR = 3


# What is said in a help request: its departments and the city admin only.
_HELP_HIDDEN = {HELP_TEXT: Shown.WITHHELD, HELP_OUTCOME: Shown.WITHHELD}
_HELP_CLEAR = {HELP_TEXT: Shown.CLEAR, HELP_OUTCOME: Shown.CLEAR}
_OFFICIAL = {NAME: Shown.CLEAR, PHONE: Shown.CLEAR, NATIONAL_ID: Shown.CLEAR,
             FREE_TEXT: Shown.CLEAR, REPORT_TEXT: Shown.CLEAR, **_HELP_HIDDEN}
_CASEWORK = {NAME: Shown.MASKED, PHONE: Shown.MASKED, NATIONAL_ID: Shown.MASKED,
             FREE_TEXT: Shown.CLEAR, REPORT_TEXT: Shown.CLEAR, **_HELP_HIDDEN}
_READ_ONLY = {NAME: Shown.MASKED, PHONE: Shown.MASKED, NATIONAL_ID: Shown.MASKED,
              FREE_TEXT: Shown.WITHHELD, REPORT_TEXT: Shown.WITHHELD, **_HELP_HIDDEN}

TABLE: dict[str, dict[str, Shown]] = {
    auth.CITY_ADMIN: {**_OFFICIAL, **_HELP_CLEAR},
    auth.STREET_OFFICE: _OFFICIAL,
    auth.PLATFORM: {NAME: Shown.WITH_CONSENT, PHONE: Shown.WITH_CONSENT,
                    NATIONAL_ID: Shown.MASKED, FREE_TEXT: Shown.WITHHELD,
                    REPORT_TEXT: Shown.CLEAR, HELP_TEXT: Shown.WITHHELD,
                    HELP_OUTCOME: Shown.CLEAR},
    auth.DEPARTMENT: {**_CASEWORK, **_HELP_CLEAR},
    auth.COMMUNITY: _CASEWORK,
    auth.EDUCATION_PROVIDER: _CASEWORK,
    auth.MERCHANT: _CASEWORK,
    auth.AUDITOR: _READ_ONLY,
    auth.OPERATOR: _READ_ONLY,
    auth.SERVICE: _READ_ONLY,
}


def shown(field: str, roles: Iterable[str]) -> Shown:
    """How much of `field` a caller holding `roles` sees (nothing known: withheld)."""
    if not isinstance(roles, frozenset):
        return _shown(field, roles)
    # A caller's roles are a frozenset (shared/context.py Actor): the answer for each field
    # and set of roles is kept, since the table never changes. A get renders three or four
    # fields, each a walk of the table otherwise. Few sets of roles exist (the tokens file's).
    key = (field, roles)
    level = _SHOWN.get(key)
    if level is None:
        if len(_SHOWN) > 4096:
            _SHOWN.clear()
        level = _SHOWN[key] = _shown(field, roles)
    return level


def _shown(field: str, roles: Iterable[str]) -> Shown:
    return max((TABLE[r][field] for r in roles if r in TABLE), default=Shown.WITHHELD)


_SHOWN: dict[tuple[str, frozenset[str]], Shown] = {}


def mask_name(name: str) -> str:
    """张* : enough to tell people apart in a list, not enough to identify one."""
    return name[:1] + "*" * (len(name) - 1) if name else ""


def mask_phone(phone: str) -> str:
    """138****0000: enough for a rider to recognise their number, not enough to call it."""
    if len(phone) < 7:
        return "*" * len(phone)
    return phone[:3] + "*" * (len(phone) - 7) + phone[-4:]


def mask_national_id(value: str) -> str:
    """320***********1234: the province-level prefix and the last four characters."""
    if len(value) < 7:
        return "*" * len(value)
    return value[:3] + "*" * (len(value) - 7) + value[-4:]


def withhold(text: str) -> str:
    return f"[withheld: {len(text)} characters]" if text else ""


_MASKS = {NAME: mask_name, PHONE: mask_phone, NATIONAL_ID: mask_national_id,
          FREE_TEXT: withhold, REPORT_TEXT: withhold, HELP_TEXT: withhold,
          HELP_OUTCOME: withhold}


def show(field: str, value: str, roles: Iterable[str], *, consented: bool = False) -> str:
    """`value` as a caller holding `roles` may see it. `consented`: the rider consented to
    share this field with the caller's organisation (only the platform's row asks)."""
    if not value or value == ERASED:
        return value
    level = shown(field, roles)
    if level is Shown.CLEAR or (level is Shown.WITH_CONSENT and consented):
        return value
    # Free text cannot be masked a character at a time without leaking what it says.
    return _MASKS[field](value)


def show_to_caller(field: str, value: str, *, consented: bool = False) -> str:
    """`value` as the caller of the request being served may see it."""
    return show(field, value, context.current().actor.roles, consented=consented)


# Field names under which events and aggregates keep free text that may name people, and
# people's names that are not sealed (who handed a package over, who mediated): what the audit
# answers (history, state as of a moment) show through this table.
FREE_TEXT_FIELDS = frozenset({
    "text", "note", "notes", "resolution", "reason", "verification_note", "subject", "outcome",
    "failure_reason", "status_reason", "work_note", "rejection_note", "revoke_reason", "goals",
    "reverse_reason", "place", "narrative", "attestation", "transfer_reason",
    "assignment_reason", "comment"})
NAME_FIELDS = frozenset({"handed_over_by", "mediator_name", "official_name"})


def redact(value: Any, roles: Iterable[str],
           fields: Mapping[str, str | None] | None = None) -> Any:
    """`value` (an event's or an aggregate's state, nested dicts and lists) with every free-text
    and name field shown as the table says for `roles`. `fields`: what a key holds where its
    owner knows better than the names above (a report's `text` is REPORT_TEXT; a closed
    report's `outcome` is a status, None: shown as it is)."""
    roles = frozenset(roles)
    # Any mapping, not only a dict: an aggregate keeps a roll that grows as an immutables.Map
    # (a campaign's allocations), and a name in it is masked as in a dict.
    if isinstance(value, Mapping):
        return {k: _redact_field(k, v, roles, fields or {}) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v, roles, fields) for v in value]
    return value


def _redact_field(key: Any, value: Any, roles: frozenset[str],
                  fields: Mapping[str, str | None]) -> Any:
    if isinstance(value, str):
        kind = fields[key] if key in fields else (
            FREE_TEXT if key in FREE_TEXT_FIELDS else NAME if key in NAME_FIELDS else None)
        return value if kind is None else show(kind, value, roles)
    return redact(value, roles, fields)
