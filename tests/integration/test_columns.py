"""A save's columns, sent as binary arrays built by Qiji (shared/store/columns.py), reach
PostgreSQL as exactly the values psycopg's own list dumper would have sent: whatever the
values, PostgreSQL reads them back equal, typed as the column's type."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.store.columns import COLUMNS, column
from tests.conftest import _admin_conninfo

pytestmark = pytest.mark.postgres

TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))
VALUES = {
    "uuid": st.uuids(),
    "bigint": st.integers(-(2**63), 2**63 - 1),
    "text": TEXT,
    "bytea": st.binary(max_size=3000),
}


@pytest.fixture(scope="module")
def conn(postgres_db: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(_admin_conninfo(postgres_db), autocommit=True) as connection:
        yield connection


def read_back(conn: psycopg.Connection[Any], element: str, values: list[Any]) -> tuple[Any, ...]:
    row = conn.execute(f"SELECT %s::{element}[], pg_typeof(%s)::text",
                       (column(element, values), column(element, values))).fetchone()
    assert row is not None
    return tuple(row)


@pytest.mark.parametrize("element", sorted(COLUMNS))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_a_column_reads_back_equal_to_its_values(conn: psycopg.Connection[Any], element: str,
                                                 data: st.DataObject) -> None:
    values = data.draw(st.lists(st.one_of(st.none(), VALUES[element]), max_size=12))
    got, sent_as = read_back(conn, element, values)
    assert got == values
    assert sent_as == f"{element}[]"


def test_an_empty_column_is_an_empty_array(conn: psycopg.Connection[Any]) -> None:
    for element in COLUMNS:
        assert read_back(conn, element, []) == ([], f"{element}[]")


def test_a_text_id_is_taken_for_a_uuid_column(conn: psycopg.Connection[Any]) -> None:
    ident = uuid.uuid4()
    assert read_back(conn, "uuid", [str(ident)])[0] == [ident]


def test_a_column_of_another_type_is_left_to_psycopg(conn: psycopg.Connection[Any]) -> None:
    values = column("integer", [1, None, 3])
    assert type(values) is list
    assert conn.execute("SELECT %s::integer[]", (values,)).fetchone() == ([1, None, 3],)


def test_a_plain_list_is_dumped_as_before(conn: psycopg.Connection[Any]) -> None:
    # Registering the columns' dumpers changes nothing for anyone else's lists.
    assert conn.execute("SELECT pg_typeof(%s)::text", ([1, 2],)).fetchone() in (
        ("smallint[]",), ("integer[]",), ("bigint[]",), ("numeric[]",))
