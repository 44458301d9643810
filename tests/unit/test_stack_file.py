"""deploy's stack.json and the broker's password: the file keeps the stack's settings and no
password (the broker's, like PostgreSQL's, comes from the environment at every command), so a
password rotated in $RELAY_AMQP_URI takes effect, and none ever goes on a command line."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from shared.tools.ops import REFUSED, USAGE, OpsError
from shared.tools.ops.stack import Stack

OLD = "amqp://qiji:S3cretOld@mq.example:5672/qiji"
NEW = "amqp://qiji:N3wPass@mq.example:5672/qiji"


def test_stack_json_holds_no_password_and_a_rotated_one_takes_effect(tmp_path: Path):
    first = Stack.resolve(tmp_path, {}, env={"RELAY_AMQP_URI": OLD})
    first.save()
    saved = (tmp_path / "stack.json").read_text()
    assert "S3cretOld" not in saved and "S3cretOld" not in repr(first)
    assert json.loads(saved)["amqp_uri"] == "amqp://qiji@mq.example:5672/qiji"
    assert stat.S_IMODE((tmp_path / "stack.json").stat().st_mode) == 0o600
    assert first.broker_uri == OLD  # what the relay is given, and status dials

    rotated = Stack.resolve(tmp_path, {}, env={"RELAY_AMQP_URI": NEW})
    assert rotated.broker_uri == NEW
    assert rotated.process_env({})["RELAY_AMQP_URI"] == NEW


def test_a_broker_moved_in_the_environment_is_where_the_stack_goes(tmp_path: Path):
    Stack.resolve(tmp_path, {}, env={"RELAY_AMQP_URI": OLD}).save()
    moved = "amqp://relay2:P4ss@mq2.example:5672/qiji"
    assert Stack.resolve(tmp_path, {}, env={"RELAY_AMQP_URI": moved}).broker_uri == moved
    # Nothing in the environment: the broker stack.json names, with the default password.
    assert Stack.resolve(tmp_path, {}, env={}).amqp_uri == "amqp://qiji@mq.example:5672/qiji"


def test_a_password_on_the_command_line_is_refused(tmp_path: Path):
    with pytest.raises(OpsError) as refused:
        Stack.resolve(tmp_path, {"amqp_uri": OLD}, env={})
    assert refused.value.code == USAGE and "RELAY_AMQP_URI" in str(refused.value)
    assert "S3cretOld" not in str(refused.value)
    given = Stack.resolve(tmp_path, {"amqp_uri": "amqp://qiji@mq.example:5672/qiji"},
                          env={"RELAY_AMQP_URI": NEW})
    assert given.broker_uri == NEW


def test_an_earlier_releases_stack_json_with_a_password_asks_for_the_environment(
        tmp_path: Path):
    (tmp_path / "stack.json").write_text(json.dumps({"amqp_uri": OLD, "port_offset": 7}))
    stack = Stack.resolve(tmp_path, {}, env={})
    assert stack.port_offset == 7 and "S3cretOld" not in repr(stack)
    with pytest.raises(OpsError) as refused:
        stack.broker_uri  # noqa: B018 - reading it is what is refused
    assert refused.value.code == REFUSED and "export RELAY_AMQP_URI" in str(refused.value)
    assert Stack.resolve(tmp_path, {}, env={"RELAY_AMQP_URI": OLD}).broker_uri == OLD
    stack.save()
    assert "S3cretOld" not in (tmp_path / "stack.json").read_text()
