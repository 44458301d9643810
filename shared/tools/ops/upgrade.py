"""`upgrade`: move a running native stack onto the release now in this directory, keeping every
event.

The operator installs the new release's code where the stack runs it from (this checkout: `git
pull` / a new tarball, then `make venv protos`), and runs `deploy/upgrade`. It:
1. checks the stack is healthy (a broken stack is fixed first, not upgraded), and that this
   release accepts every caller of the tokens file (`qiji tokens list`): since issue 14 a
   token of a role acting for an organisation must name it; an entry that does not is refused
   with the `qiji tokens assign` command that fixes it, before anything is changed;
2. takes a backup (`deploy/backup`) into the run directory's backups/: the way back (rollback);
3. creates what the new release's store needs (`deploy/schemas`; idempotent);
4. makes the signing keys the release newly needs (as `up` does), then restarts the processes
   on the new code in start order — identity, training, merchants, badges, governance,
   platform, statistics, the relay, the public credentials face, then the console (each of
   the last two started there if the old release had none) — one at a time, each ready
   before the next is stopped (upstreams before their followers; the gateway, the figures
   and the relay read everyone), so the stack keeps serving throughout.
   A stack an older release started without a supervisor, or whose supervisord lacks settings
   this release gives its processes (supervisord hands its own environment down), is stopped
   and started under a new supervisord instead (a few seconds without service);
5. checks the result: status all well, and the store still holds everything the backup holds
   (every service's log at least as long, its seal chain passing through the backed-up head
   seal, every MAC and seal verified under the master key, followers and relay no further back).

Rollback: deploy/README.md ("Upgrade and rollback")."""

from __future__ import annotations

import shlex
import time
from datetime import UTC, datetime
from pathlib import Path

from shared.auth import list_callers
from shared.tools.ops import OK, REFUSED, UNHEALTHY, OpsError, store, supervision
from shared.tools.ops import status as status_ops
from shared.tools.ops.stack import (
    CONSOLE,
    PROCESSES,
    STOP_TIMEOUT,
    WEB,
    Say,
    Stack,
    _pid_file_pid,
    _stop,
    launch,
    make_signing_keys,
    restart,
    say,
    stale_settings,
)
from shared.tools.ops.store import STATISTICS
from shared.tools.processes import process_tokens


def upgrade(stack: Stack, *, backup_dir: Path | None, timeout: float, out: Say = say) -> Path:
    """Returns the backup taken before the upgrade (the way back)."""
    supervised = supervision.supervisord_pid(stack) is not None
    unsupervised = {n: pid for n in PROCESSES if (pid := _pid_file_pid(stack, n))}
    if not supervised and not unsupervised:
        raise OpsError(REFUSED, f"nothing runs in {stack.run_dir}: a stopped stack is upgraded "
                       "by deploy/schemas and deploy/up with the new release")
    callers = check_tokens(stack)
    # A release before the public credentials face ran none: its absence is what the upgrade
    # fixes, not a reason to refuse it.
    had_face = (WEB in supervision.processes(stack) if supervised
                else stack.pid_file(WEB).exists())
    # Nor is the absence of the console, or of the figures, in a release before them: the
    # upgrade starts them.
    had_console = (CONSOLE in supervision.processes(stack) if supervised
                   else stack.pid_file(CONSOLE).exists())
    not_yet = [] if (STATISTICS in supervision.processes(stack) if supervised
                     else stack.pid_file(STATISTICS).exists()) else [STATISTICS]
    before = status_ops.collect(stack, max_lag=None, face_expected=had_face,
                                console_expected=had_console, not_yet=not_yet)
    if before.code != OK:
        raise OpsError(UNHEALTHY, "the stack is not healthy; fix it before upgrading:\n  "
                       + "\n  ".join(before.problems))
    out("1/5 the stack is healthy: " + ", ".join(
        f"{name} at {entry.get('log_position')}" for name, entry in before.services.items()
        if entry.get("log_position") is not None))
    out(f"    this release accepts all {callers} callers of {stack.tokens_file}")
    stack.save()  # with --issuer-url, if given: what `up` and later commands read
    where = backup_dir or stack.run_dir / "backups"
    out(f"2/5 backup before the upgrade (the way back) into {where}")
    taken = store.backup(stack, where, out=lambda line: out(f"    {line}"))
    out("3/5 schemas for the new release")
    store.schemas(stack, out=lambda line: out(f"    {line}"))
    began = time.monotonic()
    make_signing_keys(stack, out=lambda line: out(f"4/5 {line}"))
    stale = stale_settings(stack) if supervised else []
    if supervised and not stale:
        out("4/5 restarting on the new release, one process at a time: "
            + " → ".join(PROCESSES))
        # The environment the running supervisord hands down, which the new configuration
        # blanks each program's withheld secrets of.
        supervision.write_config(stack, PROCESSES, supervision.environment(stack) or {})
        # New programs (this release's) are started in their place in the order.
        _added, changed = supervision.reload(stack)
        restart(stack, PROCESSES, timeout=timeout, out=lambda line: out(f"  {line}"),
                reconfigured=changed)
    else:
        if supervised:
            out(f"4/5 supervisord was started without settings this release gives its "
                f"processes ({', '.join(stale)}): stopping the stack, starting it again under "
                "a new supervisord")
            supervision.shutdown(stack, STOP_TIMEOUT)
        else:
            out("4/5 an older release runs without a supervisor: stopping it, starting the "
                "new release under supervisord")
            _stop({n: unsupervised[n] for n in reversed(PROCESSES) if n in unsupervised},
                  STOP_TIMEOUT, out=lambda line: out(f"  {line}"))
        env = stack.process_env(process_tokens(stack.tokens_file))
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


def check_tokens(stack: Stack) -> int:
    """`qiji tokens list` as the upgrade's precondition: every caller of the tokens file
    stands under this release's rules, else REFUSED with the command that fixes each entry
    (nothing is changed: the old release keeps serving, its callers keep working). Returns
    how many callers there are."""
    callers = list_callers(stack.tokens_file)
    refused = [c for c in callers if c["refused"]]
    if refused:
        qiji = f".venv/bin/qiji tokens --tokens-file {shlex.quote(str(stack.tokens_file))}"
        raise OpsError(REFUSED, f"this release would refuse {len(refused)} of the callers in "
                       f"{stack.tokens_file} (nothing was changed; the running release keeps "
                       "serving them). Name the organisation each acts for, keeping its "
                       "token, then upgrade again:\n" + "\n".join(
                           f"  {c['principal']} ({', '.join(c['roles'])}): {c['refused']}\n"
                           f"    {qiji} assign {c['principal']} --organisation-id <id of the "
                           f"organisation it acts for>" for c in refused)
                       + f"\n{qiji} list shows every caller; an entry no one uses any more "
                       "can be deleted from the file instead.")
    return len(callers)
