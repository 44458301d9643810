"""deploy/systemd/qiji.service: what supervises supervisord. systemd is not PID 1 here, so the
unit is checked by systemd's own verifier and read for what the operator relies on: it starts
the stack with deploy/up, follows supervisord by its pid file, and when supervisord dies,
clears what is left and starts the stack again — for ever, never giving up."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path, PurePosixPath

import pytest

from shared.tools.ops import supervision

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "deploy" / "systemd" / "qiji.service"


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read_string(UNIT.read_text())
    return parser


def test_supervisord_is_restarted_with_the_stack_whenever_it_dies():
    service = unit()["Service"]
    checkout = PurePosixPath(service["WorkingDirectory"])
    assert service["ExecStart"].split()[0] == str(checkout / "deploy" / "up")
    assert service["ExecStop"].split()[0] == str(checkout / "deploy" / "down")
    run_dir = PurePosixPath(service["Environment"].removeprefix("QIJI_RUN_DIR="))
    assert PurePosixPath(service["PIDFile"]) == run_dir / supervision.PIDFILE
    assert (service["Type"], service["Restart"], service["KillMode"]) == (
        "forking", "always", "control-group")
    assert unit()["Unit"]["StartLimitIntervalSec"] == "0"
    assert "PASSWORD=" not in UNIT.read_text() and "amqp://" not in UNIT.read_text()


def test_systemd_accepts_the_unit(tmp_path: Path):
    verifier = shutil.which("systemd-analyze")
    if verifier is None:
        pytest.skip("no systemd-analyze (Debian's systemd package)")
    # As installed from this checkout: its paths, an environment file that exists.
    env_file = tmp_path / "qiji.env"
    env_file.write_text("QIJI_POSTGRES_PASSWORD=\n")
    text = (UNIT.read_text().replace("/opt/qiji", str(REPO))
            .replace("/etc/qiji/qiji.env", str(env_file))
            .replace("User=qiji", "User=root").replace("Group=qiji", "Group=root"))
    installed = tmp_path / "qiji.service"
    installed.write_text(text)
    done = subprocess.run([verifier, "verify", str(installed)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0 and "qiji.service" not in done.stderr, done.stderr
