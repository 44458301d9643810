"""Several processes of one service on one port (`<SERVICE>_GRPC_SHARE_PORT=yes`): both serve
callers (the kernel spreads connections over them), and each background work is led by one of
them only (shared/leadership.py). A process without the setting still refuses a taken port, as
every process did before the setting: nobody shares a port by mistake."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from qiji.identity.v1 import identity_service_pb2 as ipb
from qiji.identity.v1 import identity_service_pb2_grpc as irpc

from tests.e2e.conftest import REPO, ServiceProcess, eventually, free_port, start_service

pytestmark = pytest.mark.e2e

CONNECTIONS = 16  # a round of calls all to one of two processes: a chance of 2 in 2**16


def metric_lines(port: int, name: str) -> dict[str, float]:
    """`name`'s samples on the process's /metrics, by their labels."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {labels: float(value) for labels, value in
            re.findall(rf"^{name}\{{(.*?)\}} (\S+)$", text, re.MULTILINE)}


def up(port: int) -> bool:
    try:
        metric_lines(port, "qiji_rpc_total")
    except OSError:
        return False
    return True


def test_two_processes_share_a_port_when_told_and_one_leads_each_work(
        postgres_db: str, tmp_path: Path) -> None:
    metrics = [free_port(), free_port()]
    first = start_service("identity", postgres_db, tmp_path, extra_env={
        "IDENTITY_GRPC_SHARE_PORT": "yes", "IDENTITY_METRICS_PORT": str(metrics[0])})
    second = ServiceProcess(
        service="identity", env={**first.env, "IDENTITY_METRICS_PORT": str(metrics[1])},
        port=first.port, log_path=tmp_path / "second.log", tokens=first.tokens,
        db=first.db, schema=first.schema)
    try:
        second.start()  # SERVING said by either process: the second is up once its
        # /metrics answers (it serves metrics just before it starts serving calls)
        eventually(lambda: up(metrics[1]), "the second process serves", timeout=30)
        # Both answer: calls over new connections (each its own subchannel, so its own socket)
        # are spread by the kernel over the two processes.
        admin = [("authorization", f"Bearer {first.tokens['city_admin']}")]

        def both_served() -> list[float] | None:
            for _ in range(CONNECTIONS):
                with grpc.insecure_channel(
                        first.address, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
                    with pytest.raises(grpc.RpcError) as error:
                        irpc.IdentityServiceStub(ch).GetRider(ipb.GetRiderRequest(
                            rider_id="7d0e2a43-0000-4000-8000-000000000000"),
                            metadata=admin, timeout=10)
                    assert error.value.code() == grpc.StatusCode.NOT_FOUND
            served = [sum(v for labels, v in metric_lines(port, "qiji_rpc_total").items()
                          if 'method="GetRider"' in labels) for port in metrics]
            return served if all(served) else None
        served = eventually(both_served, "calls served by both processes")

        # Each background work (identity follows the other services' feeds) is led by exactly
        # one of the two; the other stands by.
        def one_leader_each() -> dict[str, list[float]] | None:
            leading: dict[str, list[float]] = {}
            for port in metrics:
                for labels, value in metric_lines(port, "qiji_leader").items():
                    leading.setdefault(labels, []).append(value)
            settled = leading and all(len(v) == 2 and sum(v) == 1 for v in leading.values())
            return leading if settled else None
        leading = eventually(one_leader_each, "one leader per work, the other standing by")
        print(f"\n[share port] GetRider served {served}; leaders {leading}")

        # Without the setting, a process refuses the taken port (SO_REUSEPORT off), as before.
        env = {k: v for k, v in first.env.items() if k != "IDENTITY_GRPC_SHARE_PORT"}
        started = time.monotonic()
        refused = subprocess.run([sys.executable, "-m", "services.identity"], cwd=REPO,
                                 env={**env, "IDENTITY_METRICS_PORT": "0"},
                                 capture_output=True, timeout=60)
        assert refused.returncode != 0, "a process without the setting bound a taken port"
        said = refused.stderr.decode(errors="replace")
        assert "bind" in said.lower(), said[-3000:]
        print(f"[share port] without the setting: exit {refused.returncode} in "
              f"{time.monotonic() - started:.1f} s")
    finally:
        if second.running:
            second.stop()
        first.stop()
