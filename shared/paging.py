"""AIP-158 paging, the one idiom of every List RPC: opaque page tokens bound to the filters of
the request that made them (and, where a list answers by viewer, to the viewer), one codec for
all of them, and `page` over an ordered list of keys (shared/views.py's tables use it)."""

from __future__ import annotations

import base64
import bisect
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

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


# -- the one page-token codec. Every list's token is URL-safe base64 (unpadded) of a small JSON
# object whose "f" binds it to what made it: a hash of the request's filters (`encode_token`),
# or, for a list that also answers by viewer (statistics' figures), a fingerprint of the query
# and the viewer. Its other fields are the list's own ("a": the last key given; statistics:
# "o" rows given, "t" the moment its pages stand at). Anything else is PAGE_TOKEN_INVALID, a
# token of other filters PAGE_TOKEN_FILTERS_CHANGED: INVALID_ARGUMENT, never INTERNAL.

_MADE_FOR = "f"
_FILTERS_CHANGED = "was made for a request with other filters"


def write_token(fields: Mapping[str, object], made_for: str) -> str:
    """A page token holding `fields` (JSON values), bound to `made_for`."""
    raw = json.dumps({**fields, _MADE_FOR: made_for}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def read_token(token: str, made_for: str, read: Callable[[dict[str, Any]], T], *,
               changed: str = _FILTERS_CHANGED) -> T:
    """`read(fields)` of a token `write_token` made for `made_for`. `read` takes its fields
    apart (int(fields["a"])): whatever it raises on a token this API never gave out
    (ValueError, KeyError, TypeError…) is PAGE_TOKEN_INVALID, as is a token that is not
    base64 of a JSON object; a token made for another request is PAGE_TOKEN_FILTERS_CHANGED,
    `changed` saying what to send unchanged."""
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        value = read(data)
        made = str(data[_MADE_FOR])
    # RecursionError: a token of JSON nested deeper than the parser goes, from anyone; OSError:
    # a moment no clock can hold.
    except (ValueError, KeyError, TypeError, OverflowError, RecursionError, OSError):
        raise InvalidArgument([FieldViolation("page_token", "not a token this API gave out",
                                              PAGE_TOKEN_INVALID)]) from None
    if made != made_for:
        raise InvalidArgument([FieldViolation("page_token", changed,
                                              PAGE_TOKEN_FILTERS_CHANGED)])
    return value


def encode_token(after: int, filters: Sequence[object]) -> str:
    return write_token({"a": after}, _filter_hash(filters))


def decode_token(token: str, filters: Sequence[object]) -> int:
    if not token:
        return 0
    return read_token(token, _filter_hash(filters), lambda fields: int(fields["a"]))


def check_page(page_size: int, page_token: str, filters: Sequence[object]) -> tuple[int, int]:
    """(the page's size, the key it starts after) of an AIP-158 request: a bad page_size and a
    bad page_token are refused together, in one answer. For a list that checks its page
    request with the rest of the request, before it reads anything (merchants' FindNearby)."""
    violations = Violations()
    size = violations.collect(lambda: check_page_size(page_size))
    after = violations.collect(lambda: decode_token(page_token, filters))
    violations.raise_if_any()
    assert size is not None and after is not None
    return size, after


def page(keys: Sequence[int], rows: Callable[[int], T | None], *, page_size: int, page_token: str,
         filters: Sequence[object], looks_at: int | None = None) -> tuple[list[T], str]:
    """`keys` ascending; `rows(key)` gives the row for a key, or None when filtered out. A bad
    page_size and a bad page_token are refused together, in one answer. With `looks_at`, a
    page asks `rows` of at most that many keys and, with keys left, ends there with a token
    even if it holds fewer rows than asked, or none (AIP-158 allows it: the token alone says
    there may be more): a caller who sees few of many keys pays for them a page at a time."""
    size, after = check_page(page_size, page_token, filters)
    start = bisect.bisect_right(keys, after)
    found: list[T] = []
    last = after
    for looked, key in enumerate(keys[start:]):
        if looked == looks_at:
            return found, encode_token(last, filters)
        row = rows(key)
        if row is None:
            if looks_at is not None:
                last = key  # looked at: the next page starts after it
            continue
        if len(found) == size:
            return found, encode_token(last, filters)
        found.append(row)
        last = key
    return found, ""
