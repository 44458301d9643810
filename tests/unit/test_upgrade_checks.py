"""deploy/upgrade's checks that need no running stack.

The tokens file (shared/tools/ops/upgrade.py, check_tokens): a file written before issue 14 may hold
a token of a role that acts for an organisation without naming one, which this release
refuses. The upgrade stops before changing anything and prints, per refused caller, the command
that brings it across; that command, run as printed, does.

supervisord's environment (shared/tools/ops/stack.py, stale_settings): what it was started with is
what every program it restarts gets, so a setting this release adds (the credentials face's
port) means starting supervisord again; a new service token or a secret does not count."""

from __future__ import annotations

import json
import shlex

import pytest

from shared.auth import TokenRegistry, add_caller
from shared.tools import cli
from shared.tools.ops import REFUSED, OpsError, supervision
from shared.tools.ops.stack import Stack, stale_settings
from shared.tools.ops.upgrade import check_tokens

PLATFORM_ORG = "2e36f56c-b258-4e35-ac29-ad17468f3fbd"


def test_a_caller_the_new_rules_refuse_stops_the_upgrade_with_the_command_that_fixes_it(
        tmp_path, capsys):
    stack = Stack(run_dir=tmp_path)
    add_caller(stack.tokens_file, "local-admin", ["city_admin", "operator", "auditor"])
    platform = add_caller(stack.tokens_file, "platform-co", ["platform"], PLATFORM_ORG)
    assert check_tokens(stack) == 2
    # The platform's entry as a release before organisations were required wrote it.
    data = json.loads(stack.tokens_file.read_text())
    next(c for c in data["callers"] if c["principal"] == "platform-co")["organisation_id"] = ""
    stack.tokens_file.write_text(json.dumps(data))

    with pytest.raises(OpsError) as refused:
        check_tokens(stack)
    assert refused.value.code == REFUSED
    message = str(refused.value)
    assert "nothing was changed" in message and "local-admin" not in message
    [command] = [line.strip() for line in message.splitlines() if " assign " in line]
    assert "platform-co" in command

    # Run as printed, with the organisation the operator knows filled in: the same token now
    # acts for that platform, and the upgrade's check passes.
    args = shlex.split(command.replace("<id of the organisation it acts for>", PLATFORM_ORG))
    assert args[0] == ".venv/bin/qiji"
    assert cli.main(args[1:]) == 0, capsys.readouterr().err
    assert check_tokens(stack) == 2
    assert TokenRegistry(stack.tokens_file).authenticate(platform).organisation_id == \
        PLATFORM_ORG


def test_a_setting_the_running_supervisord_lacks_or_differs_in_is_named(tmp_path, monkeypatch):
    stack = Stack(run_dir=tmp_path, port_offset=700)
    started_with = {**stack.process_env({"QIJI_SERVICE_TOKEN": "qiji_token-of-the-last-up",
                                         "QIJI_PUBLIC_READER_TOKEN": "qiji_token-for-the-face"}),
                    "QIJI_POSTGRES_PASSWORD": "the password then", "SSH_TTY": "/dev/pts/3"}
    monkeypatch.setattr(supervision, "environment", lambda _stack: dict(started_with))
    assert stale_settings(stack) == []  # secrets are not compared, only whether they are there

    # A release whose public face held the service token: its supervisord has no token for
    # the face, which this release's face needs.
    del started_with["QIJI_PUBLIC_READER_TOKEN"]
    assert stale_settings(stack) == ["QIJI_PUBLIC_READER_TOKEN"]
    started_with["QIJI_PUBLIC_READER_TOKEN"] = "qiji_token-for-the-face"

    # An earlier build's supervisord: no face port, and the issuer URL has changed since.
    del started_with["CREDENTIALS_HTTP_PORT"]
    stack.issuer_url = "https://badges.changzhou.example"
    assert stale_settings(stack) == ["CREDENTIALS_HTTP_PORT", "QIJI_ISSUER_URL"]

    monkeypatch.setattr(supervision, "environment", lambda _stack: None)
    assert stale_settings(stack) == []  # nothing supervised: nothing to compare
