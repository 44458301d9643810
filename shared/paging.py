"""AIP-158 paging over an ordered list of keys: opaque page tokens bound to the filters of the
request that made them."""

from __future__ import annotations

import base64
import bisect
import hashlib
import json
from collections.abc import Callable, Sequence
from typing import TypeVar

from shared.errors import FieldViolation, InvalidArgument, Violations

T = TypeVar("T")
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
# Reasons of the page_token's field violations.
PAGE_TOKEN_INVALID = "PAGE_TOKEN_INVALID"  # noqa: S105 - not one this API gave out
PAGE_TOKEN_FILTERS_CHANGED = "PAGE_TOKEN_FILTERS_CHANGED"  # noqa: S105 - other filters


def check_page_size(page_size: int, *, default: int = DEFAULT_PAGE_SIZE,
                    maximum: int = MAX_PAGE_SIZE) -> int:
    """AIP-158: 0 means the default; above the maximum is coerced to it (a caller asking for
    more than a page holds gets a full page and a next_page_token, not an error). A list
    whose pages are larger (the platform feed's) gives its own default and maximum."""
    if page_size < 0:
        raise InvalidArgument([FieldViolation("page_size", "must not be negative",
                                              "PAGE_SIZE_NEGATIVE")])
    return min(page_size, maximum) or default


def listed(violations: Violations | None, run: Callable[[], tuple[list[T], str]]
           ) -> tuple[list[T], str]:
    """A list's page (`run`), for a request in which the entry point may have found faults
    already (`violations`: a filter's enum number the contract does not define, a time it
    could not read). With any, nothing is listed: the page's own faults (page_size, page_token)
    are added to them and all raised in one answer."""
    if not violations:
        return run()
    violations.collect(run)
    violations.raise_if_any()
    raise AssertionError("unreachable: violations were given")


def _filter_hash(filters: Sequence[object]) -> str:
    return hashlib.sha256(json.dumps([str(f) for f in filters]).encode()).hexdigest()[:16]


def encode_token(after: int, filters: Sequence[object]) -> str:
    raw = json.dumps({"a": after, "f": _filter_hash(filters)}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str, filters: Sequence[object]) -> int:
    if not token:
        return 0
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded))
        after, fhash = int(data["a"]), data["f"]
    # RecursionError: a token of JSON nested deeper than the parser goes, from anyone.
    except (ValueError, KeyError, TypeError, OverflowError, RecursionError):
        raise InvalidArgument([FieldViolation("page_token", "not a token this API gave out",
                                              PAGE_TOKEN_INVALID)]) from None
    if fhash != _filter_hash(filters):
        raise InvalidArgument([FieldViolation(
            "page_token", "was made for a request with other filters",
            PAGE_TOKEN_FILTERS_CHANGED)])
    return after


def page(keys: Sequence[int], rows: Callable[[int], T | None], *, page_size: int, page_token: str,
         filters: Sequence[object]) -> tuple[list[T], str]:
    """`keys` ascending; `rows(key)` gives the row for a key, or None when filtered out. A bad
    page_size and a bad page_token are refused together, in one answer."""
    violations = Violations()
    size = violations.collect(lambda: check_page_size(page_size))
    after = violations.collect(lambda: decode_token(page_token, filters))
    violations.raise_if_any()
    assert size is not None and after is not None
    start = bisect.bisect_right(keys, after)
    found: list[T] = []
    last = after
    for key in keys[start:]:
        row = rows(key)
        if row is None:
            continue
        if len(found) == size:
            return found, encode_token(last, filters)
        found.append(row)
        last = key
    return found, ""
