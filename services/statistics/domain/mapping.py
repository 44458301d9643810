"""What the mappers of every service share: where a rider puts a fact, which moment puts it in
a period, and how a place and a moment are kept in memory for a later event of the same log.

The one rule for `Where` (the issue's design): street and community are where the thing
happened when it has a place (a merchant's street, the community that confirmed a shift, the
report's street), else the rider's home street; platform and station are the rider's, when the
fact is about one. A later event of the same thing (a reversal, a revocation, a closing) is
counted where the first was: the place is remembered with it, never looked up again, so a
stock's −1 always lands where its +1 did."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, replace
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from services.statistics.domain import facts
from services.statistics.domain.facts import Directory, Event, Fact, Where


def rider_where(directory: Directory, rider_id: str, *, street_id: str = "",
                community_id: str = "", merchant_id: str = "",
                platform_sees: bool = True) -> Where:
    """facts.rider_where (the one rule: the place given, else the rider's home street; the
    rider's platform and station), with the merchant of a perk, claim or redemption, and
    without platform and station when `platform_sees` is False: a help request asked at the
    street office's counter — the platform never hears of it, so no figure of it may carry
    its id (nor its station's, from which the store would find it)."""
    where = facts.rider_where(directory, rider_id, street_id=street_id,
                              community_id=community_id)
    if not platform_sees:
        where = replace(where, platform_id="", station_id="")
    return replace(where, merchant_id=merchant_id) if merchant_id else where


def moment(event: Event, key: str) -> datetime:
    """The domain's own moment `key` of the event when it carries one, else its timestamp."""
    value = event.state.get(key)
    return value if isinstance(value, datetime) else event.recorded_at


def fact(measure: str, event: Event, effective_at: datetime, where: Where, value: int = 1,
         **dimensions: str) -> Fact:
    """One fact of `event`, recorded when the event was stored."""
    return Fact(measure=measure, value=value, effective_at=effective_at,
                recorded_at=event.recorded_at, where=where, **dimensions)


# -- memory holds JSON: places as dicts, moments as ISO 8601 text


def kept_where(where: Where) -> dict[str, str]:
    return asdict(where)


def where_kept(value: Mapping[str, Any] | None) -> Where:
    return Where(**value) if value else Where()


def kept_moment(at: datetime) -> str:
    return at.isoformat()


def moment_kept(text: str | None, otherwise: datetime) -> datetime:
    return datetime.fromisoformat(text) if text else otherwise


def hundredths(hours: Decimal | str | int) -> int:
    """Hours as whole hundredths of an hour: what badges records exactly (a logged shift is
    in quarter hours, an activity's length is cut to the hundredth), so the figures add up to
    badges' own totals. Minutes would not: 1.33 h is 79.8 minutes. Anything finer (badges stores
    none) is rounded half up."""
    return int((Decimal(hours) * 100).to_integral_value(rounding=ROUND_HALF_UP))
