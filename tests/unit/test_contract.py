"""The contract callers in other languages build against (issue 23): the Google protos it
imports are the pinned package's, and a change that breaks callers of the last release fails."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import google.api
import pytest

from tests.conftest import missing_server

REPO = Path(__file__).resolve().parents[2]
VENDORED = REPO / "protos" / "google"
PACKAGE = Path(google.api.__path__[0]).parent
BUF = REPO / "node_modules" / ".bin" / "buf"
LAST_RELEASE = REPO / "tests" / "upgrade" / "releases" / "0.1.0" / "contract.binpb"


@pytest.mark.parametrize("name", sorted(str(p.relative_to(VENDORED))
                                        for p in VENDORED.rglob("*.proto")))
def test_vendored_google_protos_are_the_pinned_packages_own(name: str) -> None:
    # A caller compiling protos/ and Qiji's Python (the package's generated modules) must
    # agree on every message of the error trailer.
    assert (VENDORED / name).read_bytes() == (PACKAGE / name).read_bytes(), (
        f"protos/google/{name} differs from googleapis-common-protos'; copy it again "
        "(protos/google/README.md)")


def _buf() -> Path:
    if not BUF.exists():
        missing_server("buf is not installed (npm install; make lint does it)")
    return BUF


def _breaking(protos: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(_buf()), "breaking", str(protos), "--against", str(LAST_RELEASE)],
                          cwd=protos.parent, capture_output=True, text=True, timeout=120)


def test_the_contract_keeps_every_promise_of_the_last_release() -> None:
    result = _breaking(REPO / "protos")
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_renamed_field_breaks_the_last_releases_callers(tmp_path: Path) -> None:
    # The check above can fail: the same command over a copy with one field renamed does.
    shutil.copytree(REPO / "protos", tmp_path / "protos")
    shutil.copy(REPO / "buf.yaml", tmp_path / "buf.yaml")
    proto = tmp_path / "protos" / "qiji" / "identity" / "v1" / "identity_service.proto"
    text = proto.read_text()
    assert "string platform_rider_id = 2" in text
    proto.write_text(text.replace("string platform_rider_id = 2", "string rider_ref = 2", 1))
    result = _breaking(tmp_path / "protos")
    assert result.returncode != 0
    assert "platform_rider_id" in result.stdout
