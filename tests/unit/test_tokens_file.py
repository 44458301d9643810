"""The tokens file as operators meet it: rotations, hand edits gone wrong, callers added at once."""

from __future__ import annotations

import json
import os
import threading

import pytest

from shared.auth import TokenRegistry, add_caller, assign_organisation, list_callers
from shared.errors import Unauthenticated

PLATFORM_ORG = "7b0c3a52-4e0b-4d7e-9f1e-2f4b8c1d9a01"


def touch_later(path) -> None:
    # The registry reloads on a changed (mtime, size); make sure the edit is seen as a change.
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


def test_a_rotated_token_stops_working_at_once(tmp_path):
    path = tmp_path / "tokens.json"
    registry = TokenRegistry(path)
    old = add_caller(path, "platform-co", ["platform"], PLATFORM_ORG)
    assert registry.authenticate(old).principal == "platform-co"
    new = add_caller(path, "platform-co", ["platform"], PLATFORM_ORG)
    assert registry.authenticate(new).roles == frozenset({"platform"})
    with pytest.raises(Unauthenticated):
        registry.authenticate(old)


def test_a_broken_hand_edit_keeps_the_last_good_callers_instead_of_failing_every_call(tmp_path):
    path = tmp_path / "tokens.json"
    registry = TokenRegistry(path)
    token = add_caller(path, "platform-co", ["platform"], PLATFORM_ORG)
    assert registry.authenticate(token).principal == "platform-co"
    data = json.loads(path.read_text())
    data["callers"][0]["roles"] = ["platfrom"]  # a typo: an unknown role
    path.write_text(json.dumps(data))
    touch_later(path)
    assert registry.authenticate(token).principal == "platform-co"
    path.write_text('{"callers": [')  # half a file
    touch_later(path)
    assert registry.authenticate(token).principal == "platform-co"


def test_a_broken_file_at_start_admits_nobody(tmp_path):
    path = tmp_path / "tokens.json"
    path.write_text('{"callers": [{"principal": "x"')
    with pytest.raises(Unauthenticated):
        TokenRegistry(path).authenticate("anything")


def test_callers_added_at_the_same_moment_are_all_kept(tmp_path):
    path = tmp_path / "tokens.json"
    tokens: dict[str, str] = {}
    start = threading.Barrier(16)

    def add(n: int) -> None:
        start.wait()
        tokens[f"caller-{n}"] = add_caller(path, f"caller-{n}", ["auditor"])

    threads = [threading.Thread(target=add, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    registry = TokenRegistry(path)
    for principal, token in tokens.items():
        assert registry.authenticate(token).principal == principal
    assert len(json.loads(path.read_text())["callers"]) == 16


def test_a_token_of_a_role_that_acts_for_one_organisation_must_name_it(tmp_path):
    path = tmp_path / "tokens.json"
    for roles in (["platform"], ["merchant"], ["department"], ["street_office"],
                  ["community"], ["education_provider"], ["auditor", "platform"]):
        with pytest.raises(ValueError, match="must name the organisation"):
            add_caller(path, "x", roles)
    with pytest.raises(ValueError, match="not a valid id"):
        add_caller(path, "x", ["platform"], "platform-co")
    assert not path.exists() or list_callers(path) == []
    # City-wide roles act for the whole city and need none.
    assert add_caller(path, "admin", ["city_admin", "auditor", "operator"])


def test_an_old_entry_without_its_organisation_is_refused_alone_and_says_how_to_fix_it(tmp_path):
    path = tmp_path / "tokens.json"
    registry = TokenRegistry(path)
    admin = add_caller(path, "admin", ["city_admin"])
    platform = add_caller(path, "platform-co", ["platform"], PLATFORM_ORG)
    data = json.loads(path.read_text())
    # A tokens file written before tokens had to name their organisation.
    next(c for c in data["callers"] if c["principal"] == "platform-co")["organisation_id"] = ""
    path.write_text(json.dumps(data))
    touch_later(path)
    # The command it names is the one that fixes it (`qiji token assign` would add a caller
    # called "assign" instead).
    with pytest.raises(Unauthenticated, match="`qiji tokens assign`"):
        registry.authenticate(platform)
    assert registry.authenticate(admin).principal == "admin"
    assert [c["principal"] for c in list_callers(path) if c["refused"]] == ["platform-co"]
    # The documented way across: the same token, now acting for its organisation.
    assign_organisation(path, "platform-co", PLATFORM_ORG)
    touch_later(path)
    assert registry.authenticate(platform).organisation_id == PLATFORM_ORG
    assert not any(c["refused"] for c in list_callers(path))


def test_rotating_a_token_keeps_what_the_caller_is(tmp_path):
    """deploy/rotate-token: a new token, the same roles, organisation, subscriptions and
    certificate (an mTLS caller must not lose its certificate to a rotation)."""
    from shared.tools.ops.cli import rotate_token
    path = tmp_path / "tokens.json"
    old = add_caller(path, "platform-co", ["platform"], PLATFORM_ORG, ["qiji.training.v1.*"],
                     certificate_subject="platform.qiji.test")
    new = rotate_token(path, "platform-co", tmp_path / "admin.token")
    registry = TokenRegistry(path)
    with pytest.raises(Unauthenticated):
        registry.authenticate(old)
    actor = registry.authenticate(new)
    assert (actor.roles, actor.organisation_id, actor.subscriptions) == (
        frozenset({"platform"}), PLATFORM_ORG, frozenset({"qiji.training.v1.*"}))
    assert registry.authenticate_certificate(["platform.qiji.test"]).principal == "platform-co"
