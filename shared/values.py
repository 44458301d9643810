"""Shared value parsing and checks: numbers that arrive as text in requests (hours) are read
strictly; places are WGS84 degrees."""

from __future__ import annotations

import re
from decimal import Decimal

from shared.errors import LOCATION_INVALID, VALUE_OUT_OF_RANGE, Violations

# ASCII digits, at most two decimals: Decimal() alone would take "1_5" as 15, full-width
# digits, surrounding spaces, and 30 decimals that round away to a quarter.
_DECIMAL = re.compile(r"[0-9]{1,6}(\.[0-9]{1,2})?")


def parse_hours(violations: Violations, field: str, text: str, *, maximum: Decimal,
                quarters: bool = True, allow_zero: bool = False) -> Decimal | None:
    """Hours such as "1.5": exact, so transcripts and volunteer totals add up."""
    if not _DECIMAL.fullmatch(text):
        violations.add(field, "must be a number of hours such as 1.5", "HOURS_INVALID")
        return None
    hours = Decimal(text)
    if (hours == 0 and not allow_zero) or hours > maximum:
        violations.add(field, f"must be {'0' if allow_zero else 'more than 0'} to {maximum}",
                       VALUE_OUT_OF_RANGE)
        return None
    if quarters and (hours * 4) % 1 != 0:
        violations.add(field, "must be a multiple of a quarter hour", "HOURS_NOT_QUARTER_HOURS")
        return None
    return hours


def check_coordinates(violations: Violations, field: str, latitude: float,
                      longitude: float) -> None:
    """`field`.latitude and `field`.longitude in WGS84 degrees; NaN fails both comparisons and
    so is refused too."""
    if not -90.0 <= latitude <= 90.0:
        violations.add(f"{field}.latitude", "must be WGS84 degrees from -90 to 90",
                       LOCATION_INVALID)
    if not -180.0 <= longitude <= 180.0:
        violations.add(f"{field}.longitude", "must be WGS84 degrees from -180 to 180",
                       LOCATION_INVALID)
