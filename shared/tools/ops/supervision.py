"""Supervision of the native stack: supervisord (PyPI `supervisor`) starts every process, restarts
one that dies, and is asked by `deploy/status`, `restart`, `upgrade` and `down`.

Why supervisord and not systemd units: the stack must restart its processes wherever `deploy/up`
runs, and systemd is not PID 1 on every such machine (containers, CI, this project's own
machines); supervisord is a plain process the run directory owns. Where systemd is PID 1, run
the stack under deploy/systemd/qiji.service (deploy/README.md, "Supervision"): systemd follows
supervisord by its pid file and, should it die, clears the rest and runs `deploy/up` again; the
supervisor restarts Qiji's processes.

What supervisord does for us (supervisord.conf, written by `up`, in the run directory):
- `autorestart=true`: any exit the operator did not ask for (kill -9, a crash) is restarted at
  once; a process that dies again before `startsecs` is retried with supervisord's back-off
  (1 s, 2 s, 3 s ... for `startretries` tries), then left FATAL, which `status` reports (a
  process that cannot start, e.g. a bad setting, must not spin for ever).
- `stopsignal=TERM`, `stopwaitsecs`: a graceful stop (the services finish their calls), SIGKILL
  after that; `stopasgroup`/`killasgroup`: nothing of a process is left behind.
- the logs: one file per process in logs/, rotated by size.

Secrets are never written into the configuration: supervisord is started with the processes'
environment (service token, PostgreSQL password) and hands it down to them; the file holds only
paths and names. Restarts are counted from supervisord's own log (one `exited: NAME (...; not
expected)` line each), since it keeps no counter: `status` shows how many, and the last reason.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import xmlrpc.client
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared import config
from shared.files import write_private
from shared.tools.ops import FAILED, OpsError

if TYPE_CHECKING:
    from shared.tools.ops.stack import Stack

CONFIG = "supervisord.conf"
SOCKET = "supervisor.sock"
PIDFILE = "supervisord.pid"
LOG = "supervisord.log"
# A process must stay up this long to count as started; dying sooner is retried with back-off.
START_SECONDS = 5
START_RETRIES = 8
STOP_WAIT_SECONDS = 20

RUNNING, STARTING, BACKOFF, FATAL = "RUNNING", "STARTING", "BACKOFF", "FATAL"


def config_text(stack: Stack, processes: list[str], environment: Iterable[str],
                python: str = sys.executable) -> str:
    """supervisord.conf for `stack`, whose supervisord runs with (the names) `environment`:
    one program per process, no secret in it."""
    from shared.tools.ops.stack import REPO
    run = stack.run_dir
    lines = [
        "; Written by deploy/up; regenerated on every up and upgrade (do not edit).",
        "[unix_http_server]",
        f"file={run / SOCKET}",
        "chmod=0700",
        "",
        "[supervisord]",
        f"logfile={run / 'logs' / LOG}",
        "logfile_maxbytes=10MB",
        "logfile_backups=3",
        f"pidfile={run / PIDFILE}",
        f"directory={REPO}",
        "umask=077",
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "",
        "[supervisorctl]",
        f"serverurl=unix://{run / SOCKET}",
    ]
    for priority, name in enumerate(processes, start=1):
        lines += [
            "",
            f"[program:{name}]",
            f"command={python} -m services.{name}",
            f"directory={REPO}",
            # Services first (followers back off until their upstream answers), then the
            # relay, then the public credentials face; stopped in reverse.
            f"priority={priority * 10}",
            "autostart=false",
            "autorestart=true",
            f"startsecs={START_SECONDS}",
            f"startretries={START_RETRIES}",
            "stopsignal=TERM",
            f"stopwaitsecs={STOP_WAIT_SECONDS}",
            "stopasgroup=true",
            "killasgroup=true",
            "redirect_stderr=true",
            f"stdout_logfile={stack.log_file(name)}",
            "stdout_logfile_maxbytes=50MB",
            "stdout_logfile_backups=5",
        ]
        # supervisord hands every program its own environment: the secrets a process must
        # not hold (SECRET_SETTINGS: the gateway, the relay and the credentials face hold no
        # key, only badges its signing keys, only the relay the broker's URI, only the face
        # its public_reader token...) are blanked for it — names only, no secret here.
        withheld = config.withheld(name, environment)
        if withheld:
            lines.append("environment=" + ",".join(f'{key}=""' for key in withheld))
    return "\n".join(lines) + "\n"


def write_config(stack: Stack, processes: list[str], environment: Iterable[str]) -> Path:
    path = stack.run_dir / CONFIG
    (stack.run_dir / "logs").mkdir(parents=True, exist_ok=True)
    write_private(path, config_text(stack, processes, environment))
    return path


def supervisord_pid(stack: Stack) -> int | None:
    """supervisord's pid if it runs for this run directory."""
    try:
        pid = int((stack.run_dir / PIDFILE).read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ValueError, PermissionError):
        return None
    return pid if b"supervisord" in cmdline and str(stack.run_dir).encode() in cmdline else None


def start_supervisord(stack: Stack, env: Mapping[str, str], timeout: float = 15.0) -> None:
    """Starts supervisord (it daemonizes) with `env` for its children, and waits until it
    answers on its socket."""
    config = stack.run_dir / CONFIG
    binary = Path(sys.executable).with_name("supervisord")
    done = subprocess.run(  # noqa: S603 - the venv's own supervisord, our own config
        [str(binary), "-c", str(config)], env=dict(env), capture_output=True, text=True,
        timeout=timeout, check=False, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise OpsError(FAILED, f"supervisord did not start: {done.stderr.strip()}")
    deadline = time.monotonic() + timeout
    while True:
        try:
            rpc(stack).supervisor.getState()
            return
        except (OSError, xmlrpc.client.Fault):
            if time.monotonic() > deadline:
                raise OpsError(FAILED, f"supervisord does not answer on "
                               f"{stack.run_dir / SOCKET}; see {stack.run_dir / 'logs' / LOG}"
                               ) from None
            time.sleep(0.1)


def rpc(stack: Stack) -> Any:
    """supervisord's XML-RPC interface over its unix socket (supervisor.xmlrpc's transport)."""
    from supervisor.xmlrpc import SupervisorTransport
    transport = SupervisorTransport(None, None, serverurl=f"unix://{stack.run_dir / SOCKET}")
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)


@dataclass
class ProcessState:
    name: str
    state: str  # supervisord's: RUNNING, STARTING, BACKOFF, EXITED, FATAL, STOPPED...
    pid: int | None
    uptime_seconds: float | None
    restarts: int
    last_exit: str  # "terminated by SIGKILL" ..., "" if none since supervisord started


def processes(stack: Stack) -> dict[str, ProcessState]:
    """Every supervised process's state; {} when supervisord does not run."""
    if supervisord_pid(stack) is None:
        return {}
    try:
        infos = rpc(stack).supervisor.getAllProcessInfo()
    except (OSError, xmlrpc.client.Fault):
        return {}
    exits = unexpected_exits(stack)
    found = {}
    for info in infos:
        name = info["name"]
        running = info["statename"] == RUNNING and info["pid"]
        found[name] = ProcessState(
            name=name, state=info["statename"], pid=info["pid"] or None,
            uptime_seconds=float(info["now"] - info["start"]) if running else None,
            restarts=len(exits.get(name, [])),
            last_exit=(exits.get(name) or [""])[-1])
    return found


_EXITED = re.compile(r"exited: (?P<name>[\w-]+) \((?P<why>[^;)]*)[^)]*not expected\)")
_STARTED = "supervisord started with pid"


def unexpected_exits(stack: Stack) -> dict[str, list[str]]:
    """Per process, why it died unasked since supervisord last started (its own log)."""
    path = stack.run_dir / "logs" / LOG
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return {}
    since = max((i for i, line in enumerate(lines) if _STARTED in line), default=0)
    exits: dict[str, list[str]] = {}
    for line in lines[since:]:
        if (m := _EXITED.search(line)) is not None:
            exits.setdefault(m["name"], []).append(m["why"].strip())
    return exits


def start(stack: Stack, name: str) -> None:
    try:
        rpc(stack).supervisor.startProcess(name, False)
    except xmlrpc.client.Fault as fault:
        if "ALREADY_STARTED" not in fault.faultString:
            raise OpsError(FAILED, f"supervisord could not start {name}: {fault.faultString}"
                           ) from None


def stop(stack: Stack, name: str) -> None:
    try:
        rpc(stack).supervisor.stopProcess(name, True)
    except xmlrpc.client.Fault as fault:
        if "NOT_RUNNING" not in fault.faultString:
            raise OpsError(FAILED, f"supervisord could not stop {name}: {fault.faultString}"
                           ) from None


def shutdown(stack: Stack, timeout: float) -> None:
    """Stops every process (in reverse priority, each gracefully) and supervisord itself."""
    pid = supervisord_pid(stack)
    if pid is None:
        return
    try:
        rpc(stack).supervisor.stopAllProcesses(True)
        rpc(stack).supervisor.shutdown()
    except (OSError, xmlrpc.client.Fault):
        os.kill(pid, 15)
    deadline = time.monotonic() + timeout
    while supervisord_pid(stack) is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    if (left := supervisord_pid(stack)) is not None:
        os.kill(left, 9)


def reload(stack: Stack) -> tuple[list[str], list[str]]:
    """Reads supervisord.conf again (after an upgrade wrote it): removes gone programs, adds
    new ones (not started), and returns (added, changed). A changed program keeps running on
    its old configuration until `reconfigure` (the upgrade's restart does it in start order,
    one at a time, rather than stopping every changed program at once here)."""
    server = rpc(stack).supervisor
    [[added, changed, removed]] = server.reloadConfig()
    for name in removed:
        stop(stack, name)
        server.removeProcessGroup(name)
    for name in added:
        server.addProcessGroup(name)
    return list(added), list(changed)


def reconfigure(stack: Stack, name: str) -> None:
    """A stopped program takes its new configuration (supervisord only swaps a group whole)."""
    server = rpc(stack).supervisor
    server.removeProcessGroup(name)
    server.addProcessGroup(name)


def environment(stack: Stack) -> dict[str, str] | None:
    """The environment supervisord was started with, which every program it starts inherits;
    None when it does not run."""
    pid = supervisord_pid(stack)
    if pid is None:
        return None
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0")
                if "=" in item)
