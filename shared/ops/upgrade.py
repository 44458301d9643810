"""`upgrade`: move a running native stack onto the release now in this directory, keeping every
event.

The operator installs the new release's code where the stack runs it from (this checkout: `git
pull` / a new tarball, then `make venv protos`), and runs `deploy/upgrade`. It:
1. checks the stack is healthy (a broken stack is fixed first, not upgraded);
2. takes a backup (`deploy/backup`) into the run directory's backups/: the way back (rollback);
3. creates what the new release's store needs (`deploy/schemas`; idempotent);
4. restarts the processes on the new code in start order — identity, training, merchants,
   badges, governance, platform, then the relay — one at a time, each SERVING before the next
   is stopped (upstreams before their followers; the gateway and the relay read everyone), so
   the stack keeps serving throughout. A stack an older release started without a supervisor is
   stopped and started under supervisord instead (a few seconds without service);
5. checks the result: status all well, and the store still holds everything the backup holds
   (every service's log at least as long, its seal chain passing through the backed-up head
   seal, every MAC and seal verified under the master key, followers and relay no further back).

Rollback: deploy/README.md ("Upgrade and rollback")."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from shared.cli import SERVICES_PRINCIPAL
from shared.ops import OK, REFUSED, UNHEALTHY, OpsError, store, supervision
from shared.ops import status as status_ops
from shared.ops.stack import (
    PROCESSES,
    STOP_TIMEOUT,
    Say,
    Stack,
    _pid_file_pid,
    _stop,
    launch,
    restart,
    say,
)


def upgrade(stack: Stack, *, backup_dir: Path | None, timeout: float, out: Say = say) -> Path:
    """Returns the backup taken before the upgrade (the way back)."""
    supervised = supervision.supervisord_pid(stack) is not None
    unsupervised = {n: pid for n in PROCESSES if (pid := _pid_file_pid(stack, n))}
    if not supervised and not unsupervised:
        raise OpsError(REFUSED, f"nothing runs in {stack.run_dir}: a stopped stack is upgraded "
                       "by deploy/schemas and deploy/up with the new release")
    before = status_ops.collect(stack, max_lag=None)
    if before.code != OK:
        raise OpsError(UNHEALTHY, "the stack is not healthy; fix it before upgrading:\n  "
                       + "\n  ".join(before.problems))
    out("1/5 the stack is healthy: " + ", ".join(
        f"{name} at {entry.get('log_position')}" for name, entry in before.services.items()
        if entry.get("log_position") is not None))
    where = backup_dir or stack.run_dir / "backups"
    out(f"2/5 backup before the upgrade (the way back) into {where}")
    taken = store.backup(stack, where, out=lambda line: out(f"    {line}"))
    out("3/5 schemas for the new release")
    store.schemas(stack, out=lambda line: out(f"    {line}"))
    began = time.monotonic()
    if supervised:
        out("4/5 restarting on the new release, one process at a time: "
            + " → ".join(PROCESSES))
        supervision.write_config(stack, PROCESSES)
        added = supervision.reload(stack)
        restart(stack, [n for n in PROCESSES if n not in added], timeout=timeout,
                out=lambda line: out(f"  {line}"))
        for name in added:  # processes this release brings: started after the others
            supervision.start(stack, name)
    else:
        out("4/5 an older release runs without a supervisor: stopping it, starting the new "
            "release under supervisord")
        _stop({n: unsupervised[n] for n in reversed(PROCESSES) if n in unsupervised},
              STOP_TIMEOUT, out=lambda line: out(f"  {line}"))
        from shared.auth import add_caller
        env = stack.process_env(add_caller(stack.tokens_file, SERVICES_PRINCIPAL, ["service"]))
        launch(stack, env, timeout=timeout, out=lambda line: out(f"  {line}"))
    out(f"    every process on the new release ({time.monotonic() - began:.1f} s)")
    deadline = time.monotonic() + timeout
    while (after := status_ops.collect(stack, max_lag=None)).code != OK:
        if time.monotonic() > deadline:
            raise OpsError(UNHEALTHY, "after the upgrade the stack is not healthy:\n  "
                           + "\n  ".join(after.problems) + f"\nthe way back: {taken} "
                           "(deploy/README.md, Rollback)")
        time.sleep(0.5)
    out("5/5 checking that nothing was lost")
    store.verify(stack, taken, out=lambda line: out(f"    {line}"), grown=True)
    out(f"upgraded at {datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}; the backup taken before it: "
        f"{taken}")
    return taken
