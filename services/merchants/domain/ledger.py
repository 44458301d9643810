"""A perk's quota ledger: the codes handed out and not yet redeemed or returned, the codes
redeemed, and what the rules ask of them (how many a rider claimed since the start of a period,
which codes have expired).

A ledger is a value: every change makes a new one, sharing all it did not change with the old.
A perk may have a quota of a million (MAX_QUOTA) and is claimed for weeks, and every claim and
every redemption changes its ledger on a copy of the perk (a command never changes the cached
aggregate, which readers render at the same moment). As dicts of dicts, that copy grew with
every code ever issued (the copy alone: 1.6 ms at 1,000 codes, 9.5 ms at 10,000), and a claim
on a perk claimed 10,000 times cost 13.5 times one on a new perk (bench_perk_history).
Here the maps are hash array mapped tries (immutables.Map, in C: the structure of CPython's
contextvars), so a copy of the perk shares the ledger as it is, and a change costs O(log n).
The rules' questions are indexed, not answered by walking every code: a rider's claims by the
time they were made, the outstanding codes by when they expire."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from datetime import datetime
from typing import Any, NamedTuple, TypeVar

from immutables import Map


class Code(NamedTuple):
    """One code in the ledger: whose it is, when it was claimed, when it expires."""

    rider_id: str
    claimed_at: datetime
    expires_at: datetime


# (a time, a claim id): a claim's place in an index ordered by that time, ties by claim id.
Entry = tuple[datetime, str]
T = TypeVar("T", Entry, int)


class Expiries(NamedTuple):
    """Outstanding codes by when they expire: each minute's codes in a Map (claim id → when it
    expires), and the minutes that hold any, in order. A code added or removed costs O(log n)
    in the codes, plus O(minutes) when its minute is the first or the last of its kind (the
    minutes span about a code's longest life, MAX_CODE_TTL_MINUTES, as expired codes lapse
    at the next claim or lapse job); which have expired is
    read from the minutes that have passed alone. (One ordered tuple of every code cost a copy
    of all outstanding codes on each claim, and a perk's replay the square of them.)"""

    minutes: Map[int, Map[str, datetime]] = Map()
    order: tuple[int, ...] = ()

    def __deepcopy__(self, memo: dict[int, Any]) -> Expiries:
        return self  # a value, as the ledger is

    def added(self, claim_id: str, expires_at: datetime) -> Expiries:
        minute = _minute(expires_at)
        codes = self.minutes.get(minute)
        if codes is None:
            return Expiries(self.minutes.set(minute, Map({claim_id: expires_at})),
                            _inserted(self.order, minute))
        return Expiries(self.minutes.set(minute, codes.set(claim_id, expires_at)), self.order)

    def removed(self, claim_id: str, expires_at: datetime) -> Expiries:
        """KeyError when the code is not here."""
        minute = _minute(expires_at)
        codes = self.minutes[minute].delete(claim_id)
        if codes:
            return Expiries(self.minutes.set(minute, codes), self.order)
        return Expiries(self.minutes.delete(minute), _removed(self.order, minute))

    def expired(self, at: datetime) -> list[str]:
        """The codes that expire at or before `at`, soonest first (ties by claim id)."""
        passed = self.order[:bisect_right(self.order, _minute(at))]
        found = sorted((expires_at, claim_id) for minute in passed
                       for claim_id, expires_at in self.minutes[minute].items()
                       if expires_at <= at)
        return [claim_id for _, claim_id in found]


class QuotaLedger(NamedTuple):
    # Named tuples, not frozen dataclasses: a perk's replay makes a ledger per event, and a
    # frozen dataclass's __init__ sets each field through object.__setattr__.
    outstanding: Map[str, Code] = Map()
    redeemed: Map[str, Code] = Map()
    # Each rider's claims that still count against the per-rider limit (outstanding or
    # redeemed; a returned code no longer does), ordered by when they were claimed.
    by_rider: Map[str, tuple[Entry, ...]] = Map()
    # The outstanding codes by when they expire. Codes are claimed in roughly the order they
    # expire, but replicas' clocks differ and a perk's end cuts expiries short, so the order
    # is kept, not assumed.
    expiries: Expiries = Expiries()

    def __deepcopy__(self, memo: dict[int, Any]) -> QuotaLedger:
        # A value: a copy of the perk shares it (its parts are immutable too).
        return self

    def as_state(self) -> dict[str, Any]:
        """The ledger as an auditor reads it (the audit API's state as of a moment): the codes
        outstanding and redeemed, each with its rider and times; not the indexes."""
        return {"outstanding": self.outstanding, "redeemed": self.redeemed}

    def in_use(self) -> int:
        """The codes that use quota: outstanding and redeemed."""
        return len(self.outstanding) + len(self.redeemed)

    def holds(self, claim_id: str) -> bool:
        return claim_id in self.outstanding or claim_id in self.redeemed

    def claims_since(self, rider_id: str, since: datetime) -> int:
        """How many of the rider's codes that use quota were claimed at or after `since`."""
        claims = self.by_rider.get(rider_id, ())
        return len(claims) - bisect_left(claims, since, key=_time)

    def expired(self, at: datetime) -> list[str]:
        """The outstanding codes that expire at or before `at`, soonest first."""
        return self.expiries.expired(at)

    # -- a snapshot's form (shared/snapshots.py): every code once, the indexes rebuilt

    def rows(self) -> list[list[Any]]:
        """Every code that uses quota: [claim id, rider id, claimed at, expires at (ISO 8601),
        1 if redeemed else 0]. The indexes are derived from these, as from the events."""
        return [*([claim_id, c.rider_id, c.claimed_at.isoformat(), c.expires_at.isoformat(), 0]
                  for claim_id, c in self.outstanding.items()),
                *([claim_id, c.rider_id, c.claimed_at.isoformat(), c.expires_at.isoformat(), 1]
                  for claim_id, c in self.redeemed.items())]

    @classmethod
    def from_rows(cls, rows: list[list[Any]]) -> QuotaLedger:
        """The ledger `rows` describes, built at once (5-7 µs a code, where reading its events
        costs 55-65 µs an event, 11-20 of them applying it to the ledger): equal to the
        ledger the events left (tests/unit/test_perk_snapshot.py)."""
        outstanding: dict[str, Code] = {}
        redeemed: dict[str, Code] = {}
        by_rider: dict[str, list[Entry]] = {}
        minutes: dict[int, dict[str, datetime]] = {}
        read = datetime.fromisoformat
        for claim_id, rider_id, claimed_at, expires_at, was_redeemed in rows:
            code = Code(rider_id, read(claimed_at), read(expires_at))
            by_rider.setdefault(rider_id, []).append((code.claimed_at, claim_id))
            if was_redeemed:
                redeemed[claim_id] = code
            else:
                outstanding[claim_id] = code
                minutes.setdefault(_minute(code.expires_at), {})[claim_id] = code.expires_at
        return cls(outstanding=Map(outstanding), redeemed=Map(redeemed),
                   by_rider=Map({rider: tuple(sorted(claims))
                                 for rider, claims in by_rider.items()}),
                   expiries=Expiries(Map({minute: Map(codes)
                                          for minute, codes in minutes.items()}),
                                     tuple(sorted(minutes))))

    # -- changes: each a new ledger

    def issued(self, claim_id: str, code: Code) -> QuotaLedger:
        if self.holds(claim_id):
            raise ValueError(f"code {claim_id} is already in the ledger")
        return QuotaLedger(
            outstanding=self.outstanding.set(claim_id, code), redeemed=self.redeemed,
            by_rider=self.by_rider.set(code.rider_id, _inserted(
                self.by_rider.get(code.rider_id, ()), (code.claimed_at, claim_id))),
            expiries=self.expiries.added(claim_id, code.expires_at))

    def redeemed_code(self, claim_id: str) -> QuotaLedger:
        """The outstanding code `claim_id` redeemed: it still uses its quota, and still counts
        against its rider's limit. KeyError when it is not outstanding."""
        code = self.outstanding[claim_id]
        return QuotaLedger(
            outstanding=self.outstanding.delete(claim_id),
            redeemed=self.redeemed.set(claim_id, code), by_rider=self.by_rider,
            expiries=self.expiries.removed(claim_id, code.expires_at))

    def returned(self, claim_id: str) -> QuotaLedger:
        """The code's quota given back (it lapsed, or its redemption was reversed): it no
        longer counts against its rider's limit either. The ledger as it is when the code is
        not in it."""
        code = self.outstanding.get(claim_id)
        if code is not None:
            outstanding, redeemed = self.outstanding.delete(claim_id), self.redeemed
            expiries = self.expiries.removed(claim_id, code.expires_at)
        else:
            code = self.redeemed.get(claim_id)
            if code is None:
                return self
            outstanding, redeemed = self.outstanding, self.redeemed.delete(claim_id)
            expiries = self.expiries
        claims = _removed(self.by_rider[code.rider_id], (code.claimed_at, claim_id))
        by_rider = (self.by_rider.set(code.rider_id, claims) if claims
                    else self.by_rider.delete(code.rider_id))
        return QuotaLedger(outstanding=outstanding, redeemed=redeemed, by_rider=by_rider,
                           expiries=expiries)


def _minute(at: datetime) -> int:
    return int(at.timestamp() // 60)


def _time(entry: Entry) -> datetime:
    return entry[0]


def _inserted(entries: tuple[T, ...], entry: T) -> tuple[T, ...]:
    # Concatenation, not unpacking (`(*entries, entry)`): one copy in C, not a list built
    # and then copied: half the time for 5,000 codes (7.5 against 14.7 µs).
    at = bisect_right(entries, entry)
    if at == len(entries):  # the usual case: the newest claim, the latest minute
        return entries + (entry,)  # noqa: RUF005
    return entries[:at] + (entry,) + entries[at:]  # noqa: RUF005


def _removed(entries: tuple[T, ...], entry: T) -> tuple[T, ...]:
    at = bisect_left(entries, entry)
    if at == len(entries) or entries[at] != entry:
        raise KeyError(entry)
    return entries[:at] + entries[at + 1:]
