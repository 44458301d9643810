"""Where a `qiji` command finds Qiji, and which token it presents (shared/tools/addressing.py)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shared.tools import addressing
from shared.tools.addressing import AddressingError, RunLock, resolve

REPO = Path(__file__).resolve().parents[2]


def parsed(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    addressing.add_arguments(parser, tokens_file=True)
    return parser.parse_args(argv)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "admin.token").write_text("qiji_from-the-data-folder\n")
    return folder


def env(data: Path, **more: str) -> dict[str, str]:
    return {"QIJI_DATA_DIR": str(data), **more}


def test_nothing_given_is_the_default_ports_and_the_data_folders_token(
        data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # never looked for here
    found = resolve(parsed(), env(data))
    assert found.addresses["identity"] == "127.0.0.1:50051"
    assert found.addresses["platform"] == "127.0.0.1:50056"
    assert found.token == "qiji_from-the-data-folder"
    assert found.tokens_file == data / "tokens.json"


def test_the_services_own_settings_say_where_they_are(data: Path) -> None:
    found = resolve(parsed(), env(data, IDENTITY_GRPC_PORT="6001", TRAINING_GRPC_HOST="0.0.0.0",
                                  QIJI_BADGES_ADDRESS="badges.city:443"))
    assert found.addresses["identity"] == "127.0.0.1:6001"
    assert found.addresses["training"] == "127.0.0.1:50052"  # listening everywhere: here too
    assert found.addresses["badges"] == "badges.city:443"


def test_a_port_base_a_host_and_one_address_elsewhere(data: Path) -> None:
    found = resolve(parsed("--port-base", "52050", "--host", "10.0.0.5", "--address",
                           "governance=10.0.0.6:7000"),
                    env(data, QIJI_IDENTITY_ADDRESS="ignored:1"))
    assert found.addresses == {"identity": "10.0.0.5:52051", "training": "10.0.0.5:52052",
                               "merchants": "10.0.0.5:52053", "badges": "10.0.0.5:52054",
                               "governance": "10.0.0.6:7000", "platform": "10.0.0.5:52056",
                               "statistics": "10.0.0.5:52058"}


def test_a_run_directory_gives_the_ports_the_token_and_the_tokens_file(
        data: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "qiji-run"
    run_dir.mkdir()
    (run_dir / "stack.json").write_text(json.dumps({"pg_db": "qiji", "port_offset": 100}))
    (run_dir / "admin.token").write_text("qiji_from-the-run-dir\n")
    for found in (resolve(parsed("--run-dir", str(run_dir)), env(data)),
                  resolve(parsed(), env(data, QIJI_RUN_DIR=str(run_dir)))):
        assert found.addresses["identity"] == "127.0.0.1:50151"
        assert found.token == "qiji_from-the-run-dir"
        assert found.tokens_file == run_dir / "tokens.json"
    given = resolve(parsed("--run-dir", str(run_dir), "--token", "qiji_mine"), env(data))
    assert given.token == "qiji_mine"


def test_no_token_anywhere_is_said_with_where_it_looked(tmp_path: Path) -> None:
    found = resolve(parsed(), {"QIJI_DATA_DIR": str(tmp_path)})
    with pytest.raises(AddressingError, match=f"there is no {tmp_path}/admin.token"):
        found.require_token()


def test_a_running_qiji_run_is_found_through_its_data_folder_and_only_while_it_runs(
        data: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", f"""
import sys, time
sys.path.insert(0, {str(REPO)!r})
from pathlib import Path
from shared.tools.addressing import RunLock
lock = RunLock(Path({str(data)!r}))
lock.acquire()
lock.announce({{"identity": "127.0.0.1:56321", "training": "127.0.0.1:56322"}})
print("held", flush=True)
time.sleep(60)
"""], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        found = resolve(parsed(), env(data))
        assert (found.addresses["identity"], found.addresses["merchants"]) == (
            "127.0.0.1:56321", "127.0.0.1:50053")
        with pytest.raises(AddressingError, match="another Qiji runs on the data folder"):
            RunLock(data).acquire()
    finally:
        holder.kill()
        holder.wait()
    deadline = time.monotonic() + 5
    while resolve(parsed(), env(data)).addresses["identity"] != "127.0.0.1:50051":
        assert time.monotonic() < deadline, "a stale run file was believed"
        time.sleep(0.05)
    lock = RunLock(data)
    lock.acquire()  # free again
    lock.release()
    assert os.path.exists(data / "qiji-run.json")
