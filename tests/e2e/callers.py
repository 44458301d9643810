"""The tools a caller in another language uses, for the tests that call Qiji as one would:
Node.js (with the packages package.json pins) and buf (`buf curl`). Missing, a test skips, or
fails where every test must run (QIJI_REQUIRE_SERVICES=1, as in CI)."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.conftest import missing_server

REPO = Path(__file__).resolve().parents[2]
NODE_MODULES = REPO / "node_modules"


def node() -> str:
    found = shutil.which("node")
    if found is None:
        missing_server("no `node` on PATH (Node.js 18 or newer runs tests/node/client.mjs)")
    for package in ("@grpc/grpc-js", "@grpc/proto-loader", "protobufjs"):
        if not (NODE_MODULES / package / "package.json").is_file():
            missing_server(f"{package} is not installed in node_modules: run `npm install` "
                           "(make test does)")
    return found


def buf() -> str:
    found = NODE_MODULES / ".bin" / "buf"
    if not found.is_file():
        missing_server("node_modules/.bin/buf is not installed: run `npm install` (make test does)")
    return str(found)
