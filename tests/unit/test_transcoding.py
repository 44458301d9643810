"""The fast decoder reads every stored state exactly as the library's own decoder does."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from eventsourcing.persistence import DatetimeAsISO, DecimalAsStr, JSONTranscoder, UUIDAsHex
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.store import qiji_transcoder


def library_transcoder() -> JSONTranscoder:
    transcoder = JSONTranscoder()
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
        transcoder.register(transcoding)
    return transcoder


LIBRARY = library_transcoder()
FAST = qiji_transcoder()

text = st.one_of(st.text(alphabet=st.sampled_from(list('ab"\\_/\n\t骑迹\x00')), max_size=8),
                st.sampled_from(["_type_", "_data_", 'say "_type_"']))
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), text, st.uuids(),
    st.decimals(allow_nan=False, allow_infinity=False, places=3),
    st.datetimes(timezones=st.just(UTC)),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.one_of(text, st.sampled_from(["_type_", "_data_"])), inner,
                    max_size=4)), max_leaves=12)


def same(state: dict) -> None:
    stored = LIBRARY.encode(state)
    try:
        expected = LIBRARY.decode(stored)
    except Exception as error:  # a state the library cannot read: neither can the fast path
        with pytest.raises(type(error)):
            FAST.decode(stored)
        return
    got = FAST.decode(stored)
    assert repr(got) == repr(expected)  # repr: NaN != NaN, and types must match too


@settings(max_examples=300)
@given(st.dictionaries(text, values, max_size=6))
def test_any_stored_state_decodes_as_the_library_decodes_it(state):
    same(state)


def test_an_event_state_with_a_timestamp_metadata_and_nested_values():
    same({"timestamp": datetime(2026, 11, 29, 8, 0, tzinfo=UTC), "note": "井盖缺失",
          "_meta": {"principal": "p", "roles": "platform"},
          "milestones": [{"effective_at": datetime(2026, 1, 1, tzinfo=timezone(timedelta(
              hours=8))), "kind": "joined"}],
          "amount": Decimal("12.50"), "ids": [uuid.uuid4(), uuid.uuid4()]})


def test_what_orjson_refuses_still_decodes_through_the_library():
    # NaN and integers beyond 64 bits: json writes them, orjson refuses them or reads a float.
    same({"x": float("nan"), "big": 2**80, "small": -(2**63) - 1})
    lone_surrogate = b'{"s":"\\ud800"}'
    assert FAST.decode(lone_surrogate) == LIBRARY.decode(lone_surrogate) == {"s": "\ud800"}


def test_a_transcoding_name_spelt_with_escapes_is_still_found():
    stored = b'{"t":{"\\u005ftype_":"datetime_iso","_data_":"2026-11-29T08:00:00+00:00"}}'
    assert FAST.decode(stored) == LIBRARY.decode(stored)
    assert isinstance(FAST.decode(stored)["t"], datetime)


def test_an_unknown_transcoding_fails_as_in_the_library():
    from eventsourcing.persistence import TranscodingNotRegisteredError
    stored = b'{"t":{"_type_":"nope","_data_":"x"}}'
    with pytest.raises(TranscodingNotRegisteredError):
        LIBRARY.decode(stored)
    with pytest.raises(TranscodingNotRegisteredError):
        FAST.decode(stored)


@settings(max_examples=300)
@given(st.dictionaries(text, values, max_size=4), values)
def test_a_state_with_a_timestamp_of_any_kind_decodes_as_the_library_decodes_it(state, stamp):
    # The usual event's one transcoded value, its timestamp, has a fast path of its own: it
    # must give the walk's answer whatever else is in the state, or whatever the timestamp is.
    state["timestamp"] = stamp
    same(state)


def test_a_timestamp_key_holding_another_transcoding_takes_the_walk():
    same({"timestamp": uuid.uuid4(), "note": "x"})
    same({"timestamp": Decimal("1.5")})
    same({"timestamp": {"_type_": "datetime_iso", "_data_": 5}})
    stored = b'{"timestamp":{"_type_":"datetime_iso","_data_":"2026-11-29T08:00:00+08:00"}}'
    assert FAST.decode(stored) == LIBRARY.decode(stored)
