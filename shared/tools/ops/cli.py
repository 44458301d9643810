"""`python -m shared.tools.ops <command>` (deploy/<command> runs it with the project's .venv): the
operator's commands for the native full stack. See deploy/README.md for a walkthrough."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path

from shared.tools.ops import EXIT_CODES, FAILED, OK, REFUSED, OpsError

COMMANDS = ("up", "down", "restart", "status", "schemas", "backup", "restore", "verify",
            "rotate-token", "upgrade")


def _exit_codes_text() -> str:
    return "exit codes:\n" + "\n".join(f"  {code}  {text}" for code, text in EXIT_CODES.items())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deploy", description=__doc__, epilog=_exit_codes_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str, description: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=textwrap.fill(description, 88),
                           epilog=_exit_codes_text(), prog=f"deploy/{name}",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--run-dir", type=Path, default=None,
                       help="the stack's run directory: pids, logs, tokens, keys, stack.json "
                       "(default: $QIJI_RUN_DIR or ./qiji-run)")
        return p

    def connection(p: argparse.ArgumentParser, *, amqp: bool = False) -> None:
        g = p.add_argument_group(
            "PostgreSQL (default: what `up` last used, else $QIJI_POSTGRES_*; the password "
            "only from $QIJI_POSTGRES_PASSWORD)")
        g.add_argument("--pg-host", default=None)
        g.add_argument("--pg-port", type=int, default=None)
        g.add_argument("--pg-db", default=None, help="the database (default qiji)")
        g.add_argument("--pg-user", default=None)
        if amqp:
            p.add_argument("--amqp-uri", default=None,
                           help="RabbitMQ for the relay, without its password (default: "
                           "$RELAY_AMQP_URI, else what `up` last used, else "
                           "amqp://guest@127.0.0.1:5672/); the password only from "
                           "$RELAY_AMQP_URI, never on the command line")
            p.add_argument("--port-offset", type=int, default=None,
                           help="added to every default port (gRPC 50051-50056 and 50058, "
                           "metrics 9101-9110, the HTTP faces 50057 and 50059), to run a "
                           "second stack beside the first")

    up = command("up", "start every service and the relay, wait until healthy",
                 "Starts identity, training, merchants, badges, governance, platform, "
                 "statistics, the relay, the public credentials face and the console as "
                 "background processes against PostgreSQL and RabbitMQ, and waits for every "
                 "service's grpc.health.v1 SERVING, the relay's health and the faces' "
                 "readiness. Checks "
                 "both servers first. Makes the master key, the badges signing keys (RSA and "
                 "Ed25519) and an admin token on the first up, and keeps them after.")
    connection(up, amqp=True)
    up.add_argument("--issuer-url", default=None, metavar="URL",
                    help="the city's https:// address of the public credentials face, named "
                    "in every credential (default: $QIJI_ISSUER_URL, else this machine's "
                    "http://127.0.0.1 face); choose it once")
    up.add_argument("--timeout", type=float, default=90.0,
                    help="seconds to wait for everything to be healthy (default 90)")

    down = command("down", "stop every process (SIGTERM, then SIGKILL after --timeout)",
                   "Stops what `up` started in this run directory. Stopping a stopped stack "
                   "is fine.")
    down.add_argument("--timeout", type=float, default=20.0,
                      help="seconds to wait after SIGTERM before SIGKILL (default 20)")

    restart = command("restart", "restart processes one at a time, each SERVING before the next",
                      "Restarts the named processes (default: all, in start order) through "
                      "supervisord, one at a time, waiting for each to be SERVING (the relay: "
                      "healthy; the public credentials face: ready) before the next: the stack "
                      "keeps serving. A process that dies "
                      "is restarted by supervisord without this command. A restarted process gets "
                      "the environment supervisord started with: for a changed setting, down "
                      "and up.")
    restart.add_argument("processes", nargs="*", metavar="PROCESS",
                         help="identity, training, merchants, badges, governance, platform, "
                         "statistics, relay, credentials, console (default: all)")
    restart.add_argument("--timeout", type=float, default=90.0,
                         help="seconds to wait for each process to be ready (default 90)")

    status = command("status", "health, log positions, follower and relay lag",
                     "Every service's health and log position, its seal head, each follower's "
                     "and the relay's position against its upstream's (lag), and whether "
                     "PostgreSQL and RabbitMQ answer.")
    connection(status, amqp=True)
    status.add_argument("--json", action="store_true", help="one JSON document, for machines")
    status.add_argument("--max-lag", type=int, default=None,
                        help="exit 5 when any lag is above this many log positions")

    schemas = command("schemas", "create or upgrade every service's schema and tables",
                      "Creates what is missing (schemas, event and tracking tables, key store, "
                      "audit seals, relay positions), idempotently, and says what it created.")
    connection(schemas)

    backup = command("backup", "pg_dump Qiji's schemas with a manifest and checksums",
                     "Writes a directory with qiji.dump (pg_dump custom format), manifest.json "
                     "(events, positions and seal heads per service, taken in the dump's own "
                     "snapshot) and SHA256SUMS.")
    connection(backup)
    backup.add_argument("--out", type=Path, default=Path("backups"),
                        help="where to write the backup directory (default ./backups)")

    restore = command("restore", "pg_restore a backup into a new database, then verify it",
                      "Checks the dump's checksum, restores into TARGET_DB (created if missing; "
                      "refused if it already holds Qiji's schemas), then verifies it as "
                      "`verify` does.")
    connection(restore)
    restore.add_argument("backup", type=Path, help="a backup directory written by backup")
    restore.add_argument("--target-db", required=True, help="the database to restore into")

    verify = command("verify", "check a database against a backup's manifest",
                     "The same events, positions and seal heads as the manifest, and every "
                     "event's MAC and the seal chain intact under the master key "
                     "($QIJI_MASTER_KEY, else the run directory's master.key).")
    connection(verify)
    verify.add_argument("backup", type=Path, help="a backup directory written by backup")

    upgrade = command("upgrade", "move the running stack onto the release in this directory",
                      "With the new release's code in place: checks the stack is healthy and "
                      "that this release accepts every caller of the tokens file (else exit 7 "
                      "with the `qiji tokens assign` command for each refused one, nothing "
                      "changed), backs it up (the way back), creates what the new schemas "
                      "need, restarts every process on the new code one at a time in start "
                      "order (identity, training, merchants, badges, governance, platform, "
                      "statistics, relay, credentials, console), each ready before the next, "
                      "and checks that the store still holds every event of the backup, verified. "
                      "deploy/README.md: upgrade and rollback.")
    connection(upgrade)
    upgrade.add_argument("--issuer-url", default=None, metavar="URL",
                         help="from a release without the public credentials face: the "
                         "city's https:// address of it, named in every credential from now "
                         "on (as deploy/up --issuer-url; kept in stack.json)")
    upgrade.add_argument("--backup-dir", type=Path, default=None,
                         help="where the backup taken before the upgrade goes (default: the "
                         "run directory's backups/)")
    upgrade.add_argument("--timeout", type=float, default=120.0,
                         help="seconds to wait for each process, and for the stack, to be "
                         "healthy (default 120)")

    rotate = command("rotate-token", "give a caller a new token; the old one stops at once",
                     "Rotates an existing caller's token in the stack's tokens file, keeping "
                     "its roles, organisation and subscriptions, and prints the new token once. "
                     "(A new caller: .venv/bin/qiji token NAME --role ROLE --tokens-file "
                     "<run dir>/tokens.json.)")
    rotate.add_argument("principal", help="the caller's name, e.g. platform-company")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # Said by the command's own parser (its usage, not the umbrella's); exits 2.
        subparsers = next(a for a in parser._actions
                          if isinstance(a, argparse._SubParsersAction))
        subparsers.choices[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    from shared.tools.ops.stack import Stack
    overrides = {key: getattr(args, key, None) for key in
                 ("pg_host", "pg_port", "pg_db", "pg_user", "amqp_uri", "port_offset",
                  "issuer_url")}
    try:
        stack = Stack.resolve(args.run_dir, overrides)
        return _dispatch(args, stack)
    except OpsError as error:
        print(f"deploy/{args.command}: {error}", file=sys.stderr, flush=True)
        return error.code
    except KeyboardInterrupt:
        return FAILED


def _dispatch(args: argparse.Namespace, stack: object) -> int:
    from shared.tools.ops import stack as stack_ops
    from shared.tools.ops import status as status_ops
    from shared.tools.ops import store
    assert isinstance(stack, stack_ops.Stack)
    if args.command == "up":
        stack_ops.up(stack, timeout=args.timeout)
    elif args.command == "down":
        stack_ops.down(stack, timeout=args.timeout)
    elif args.command == "restart":
        stack_ops.restart(stack, args.processes, timeout=args.timeout)
    elif args.command == "status":
        return status_ops.status(stack, max_lag=args.max_lag, as_json=args.json)
    elif args.command == "schemas":
        store.schemas(stack)
    elif args.command == "backup":
        store.backup(stack, args.out)
    elif args.command == "restore":
        store.restore(stack, args.backup, args.target_db)
    elif args.command == "verify":
        store.verify(stack, args.backup)
    elif args.command == "upgrade":
        from shared.tools.ops.upgrade import upgrade
        upgrade(stack, backup_dir=args.backup_dir, timeout=args.timeout)
    elif args.command == "rotate-token":
        print(rotate_token(stack.tokens_file, args.principal, stack.admin_token_file))
    return OK


def rotate_token(tokens_file: Path, principal: str, admin_token_file: Path) -> str:
    """The caller's new token, with its roles, organisation, subscriptions and certificate
    subject kept (rotating a token must not unregister a caller's certificate)."""
    from shared.auth import add_caller
    from shared.files import write_private
    from shared.tools.processes import ADMIN_PRINCIPAL
    try:
        callers = json.loads(tokens_file.read_text() or "{}").get("callers", [])
    except FileNotFoundError:
        raise OpsError(REFUSED, f"no tokens file {tokens_file}: run deploy/up first") from None
    caller = next((c for c in callers if c["principal"] == principal), None)
    if caller is None:
        known = ", ".join(sorted(c["principal"] for c in callers))
        raise OpsError(REFUSED, f"no caller {principal!r} in {tokens_file} (known: {known}); "
                       f"add one with .venv/bin/qiji token {principal} --role ROLE "
                       f"--tokens-file {tokens_file}")
    try:
        token = add_caller(tokens_file, principal, list(caller["roles"]),
                           caller.get("organisation_id", ""), caller.get("subscriptions"),
                           certificate_subject=caller.get("certificate_subject", ""))
    except ValueError as error:
        # An entry from before tokens had to name their organisation: name it first.
        raise OpsError(REFUSED, f"{principal}: {error}; first run .venv/bin/qiji tokens "
                       f"--tokens-file {tokens_file} assign {principal} --organisation-id <id>"
                       ) from None
    if principal == ADMIN_PRINCIPAL:
        write_private(admin_token_file, token + "\n")  # status and the operator read it there
    return token


if __name__ == "__main__":
    sys.exit(main())
