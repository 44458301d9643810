"""Release 0.1.0's log on the embedded default (SQLite), read by this release: every event of
every type is there and decodes into its aggregate (upcast where its shape changed), every
MAC and the seal chain verify under the key beside it, every service replays it into its read
models, and, served by `qiji run`, every question gets the answer 0.1.0 gave the city admin,
while 0.1.0's platform sees its riders as issue 14 says (masked unless they consented to it,
as the old log records) and another platform none of them."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from shared.audit import verify
from shared.auth import add_caller
from shared.config import EVENT_SOURCED_SERVICES, load_settings
from shared.personal_data import load_master_key
from tests.upgrade.release_log import OLDEST, ask_again, event_types, riders_as_platform

# The story's platform company (骑迹外卖): every rider of the log is its.
STORY_PLATFORM = "3403700e-514a-42f5-83aa-ad3481d3d1ca"

SPECS = {
    "identity": "services.identity.service",
    "training": "services.training.service",
    "merchants": "services.merchants.service",
    "badges": "services.badges.service",
    "governance": "services.governance.service",
}


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A copy: the services write (tracking, seals, followers' catch-up) to what they open."""
    copy = tmp_path / "data"
    shutil.copytree(OLDEST / "embedded" / "data", copy)
    return copy


def embedded_env(data: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("QIJI_", "RELAY_", "BADGES_", "GOVERNANCE_", "IDENTITY_"))}
    env.update({"QIJI_DATA_DIR": str(data), "QIJI_PERSISTENCE": "sqlite"})
    return env


def test_every_event_decodes_verifies_and_replays(data: Path) -> None:
    expected = event_types()
    assert {s for s, _ in expected} == set(EVENT_SOURCED_SERVICES)
    for service in EVENT_SOURCED_SERVICES:
        settings = load_settings(service, embedded_env(data))
        key = load_master_key(settings.master_key, settings.master_key_file, create=False)
        spec = __import__(SPECS[service], fromlist=["SPEC"]).SPEC
        # The whole service, its read models rebuilt from the old log at start.
        app = spec.make_app(settings, key)
        try:
            *_, verdict = verify(app)
            assert verdict.intact, (service, verdict)
            counts: dict[str, int] = {}
            originators = set()
            for notification in app.read_log(1, 10_000, ()):
                counts[notification.topic] = counts.get(notification.topic, 0) + 1
                originators.add(notification.originator_id)
            assert counts == {t: n for (s, t), n in expected.items() if s == service}, service
            assert verdict.checked == sum(counts.values())
            # Every aggregate of the log, rebuilt from its events by this release's classes.
            for originator_id in originators:
                app.repository.get(originator_id)
        finally:
            app.close()


def test_qiji_run_on_the_old_data_answers_as_the_old_release_did(data: Path) -> None:
    from shared.tools.addressing import port_base_addresses
    from shared.tools.demo import Stack, free_port_base
    base = free_port_base()
    # 0.1.0's platform caller brought across (its token rotated: the file keeps only hashes),
    # and a competing platform's caller.
    tokens = data / "tokens.json"
    another_platform = str(uuid.uuid4())
    callers = {STORY_PLATFORM: add_caller(tokens, "qiji-demo-platform-3403700e", ["platform"],
                                          STORY_PLATFORM),
               another_platform: add_caller(tokens, "another-platform", ["platform"],
                                            another_platform)}
    log = open(data.parent / "qiji.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "shared.tools.cli", "run", "--port-base",
                             str(base)], env=embedded_env(data), stdout=log, stderr=log)
    try:
        where = port_base_addresses(base)
        Stack(where).wait_serving(60)
        token = (data / "admin.token").read_text().strip()
        problems = ask_again(where, token, OLDEST / "embedded" / "answers.json")
        assert not problems, "\n".join(problems[:20])
        for platform, platform_token in callers.items():
            problems = riders_as_platform(where, platform, platform_token,
                                          OLDEST / "embedded" / "answers.json")
            assert not problems, "\n".join(problems[:20])
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        log.close()
