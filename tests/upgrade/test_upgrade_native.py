"""The upgrade as an operator does it, natively, from release 0.1.0's data and code:

1. `deploy/restore` the backup 0.1.0 took (tests/upgrade/releases/0.1.0/postgres) into a new
   database, under the keys and tokens beside it: this release's restore checks it against its
   manifest, every MAC and the seal chain;
2. release 0.1.0 itself (its code, `git worktree` of commit bc4f4f7) runs on it: `deploy/up`;
3. `deploy/upgrade` from this release, on the same run directory: backup, schemas, the stack
   moved under supervision onto the new code, status all well, nothing lost (the store holds
   everything of the backup, its seal chain through the backed-up head, all verified);
4. every question of the release log answered as 0.1.0 answered it (to the city admin); 0.1.0's
   platform caller, brought across, sees its riders as issue 14 says, a competitor none.

The old release runs with this checkout's virtualenv (pinned dependencies) and its own
generated protos."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.auth import add_caller
from shared.config import DEFAULT_PORTS
from tests.conftest import missing_server
from tests.e2e.test_deploy_scripts import Operator, operator_for
from tests.upgrade.release_log import OLDEST, ask_again, riders_as_platform

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
OLD_RELEASE = "bc4f4f7"
# The PostgreSQL story's platform company: every rider of its log is this one's.
STORY_PLATFORM = "2e36f56c-b258-4e35-ac29-ad17468f3fbd"


@pytest.fixture(scope="module")
def old_release(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Release 0.1.0's code, checked out beside this one, with its own generated protos."""
    found = subprocess.run(["git", "-C", str(REPO), "cat-file", "-e", f"{OLD_RELEASE}^{{commit}}"],
                           capture_output=True, check=False)
    if found.returncode != 0:
        missing_server(f"release 0.1.0 (commit {OLD_RELEASE}) is not in this clone's history")
    tree = tmp_path_factory.mktemp("release-0.1.0") / "qiji"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree),
                    OLD_RELEASE], check=True, capture_output=True)
    try:
        (tree / ".venv").symlink_to(REPO / ".venv")
        gen = tree / "build" / "gen"
        gen.mkdir(parents=True)
        protos = sorted(str(p.relative_to(tree / "protos"))
                        for p in (tree / "protos").rglob("*.proto"))
        subprocess.run([str(REPO / ".venv" / "bin" / "python"), "-m", "grpc_tools.protoc",
                        "-Iprotos", f"--python_out={gen}", f"--grpc_python_out={gen}",
                        *protos], cwd=tree, check=True, capture_output=True)
        yield tree
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)],
                       capture_output=True, check=False)


@pytest.fixture(scope="module")
def operator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    with operator_for(tmp_path_factory, "upgrade") as op:
        yield op


def test_the_stack_of_release_0_1_0_upgrades_and_keeps_every_event(
        operator: Operator, old_release: Path) -> None:
    run = operator.run_dir
    run.mkdir(parents=True)
    os.chmod(run, 0o700)
    for name in ("master.key", "badges-signing.key", "tokens.json", "admin.token"):
        shutil.copy2(OLDEST / "postgres" / "secrets" / name, run / name)
    restored = operator.run("restore", str(OLDEST / "postgres" / "backup"), "--target-db",
                            operator.db, timeout=300)
    assert restored.returncode == 0, restored.stdout + restored.stderr

    # Release 0.1.0 runs the stack (its own deploy/up, its own code).
    old_env = {**operator.env, "PYTHONPATH": f"{old_release}:{old_release / 'build' / 'gen'}"}
    old_up = subprocess.run(
        [str(old_release / "deploy" / "up"), "--run-dir", str(run), "--pg-db", operator.db,
         "--amqp-uri", operator.amqp_uri, "--port-offset", str(operator.offset)],
        env=old_env, cwd=old_release, capture_output=True, text=True, timeout=180,
        check=False)
    assert old_up.returncode == 0, old_up.stdout + old_up.stderr
    running = list((run / "pids").glob("*.pid"))
    assert len(running) == 7  # 0.1.0 keeps pid files, no supervisor

    upgraded = operator.run("upgrade", timeout=600)
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    assert "verified" in upgraded.stdout and "holds everything in" in upgraded.stdout

    code, report = operator.status()
    assert code == 0, report["problems"]
    assert report["supervisor"]["pid"], "the upgraded stack is supervised"
    # With the processes 0.1.0 did not have: the public credentials face, under the RSA key the
    # upgrade made (0.1.0 had an Ed25519 key only), the figures and the console.
    assert set(report["supervisor"]["processes"]) == {*DEFAULT_PORTS, "relay", "credentials",
                                                      "console"}
    assert (run / "badges-signing-rsa.pem").stat().st_mode & 0o077 == 0
    for name, entry in report["services"].items():
        assert entry["health"] == "SERVING", (name, entry)
    # Each process now runs this release's code (none of 0.1.0's is left).
    for state in report["supervisor"]["processes"].values():
        cwd = os.readlink(f"/proc/{state['pid']}/cwd")
        assert cwd == str(REPO), state

    addresses = {n: f"127.0.0.1:{p + operator.offset}" for n, p in DEFAULT_PORTS.items()}
    token = (run / "admin.token").read_text().strip()
    problems = ask_again(addresses, token, OLDEST / "postgres" / "answers.json")
    assert not problems, "\n".join(problems[:20])
    # Its token rotated as an operator would (deploy/rotate-token keeps roles and organisation):
    # the file holds only hashes. The services read the changed file without a restart.
    rotated = operator.run("rotate-token", "qiji-demo-platform-2e36f56c", connection=False)
    assert rotated.returncode == 0, rotated.stderr
    another = str(uuid.uuid4())
    competitor = add_caller(run / "tokens.json", "another-platform", ["platform"], another)
    for platform, platform_token in ((STORY_PLATFORM, rotated.stdout.strip()),
                                     (another, competitor)):
        problems = riders_as_platform(addresses, platform, platform_token,
                                      OLDEST / "postgres" / "answers.json")
        assert not problems, "\n".join(problems[:20])
