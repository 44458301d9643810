"""The `qiji` command: run Qiji on its embedded default, manage callers' tokens, and ask a
running Qiji — wherever it runs (shared/tools/addressing.py) — for an audit, a credential or the
city's story.

Every subcommand answers bad input with one line and a non-zero exit (the codes below), never
a traceback."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import NoReturn

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shared.auth import ROLES, add_caller
from shared.config import (
    DEFAULT_PORTS,
    ConfigError,
    Settings,
    TlsSettings,
    env_for,
    load_settings,
    port_from_base,
)
from shared.grpc.channels import open_channel
from shared.personal_data import load_master_key
from shared.tools import addressing
from shared.tools.addressing import AddressingError, Deployment, RunLock
from shared.tools.processes import (
    ADMIN_PRINCIPAL,
    CONSOLE,
    CONSOLE_NEEDS,
    SERVICES,
    WEB,
    admin_token,
    console_assets_missing,
    metrics_port,
    port_free,
    process_tokens,
)
from shared.values import CITY_TIME

# Exit codes of every subcommand.
OK = 0
NO = 1  # the answer is no: not found, not valid, a log altered, a step of the story failed
USAGE = 2  # bad arguments, a setting that cannot work, a refused token or precondition
UNREACHABLE = 3  # Qiji does not answer where the command looked for it
# `audit verify`: intact as far as it was checked, but not held to everything the auditor gave
# (a checkpoint not used) or signed with a key the auditor did not pin.
NOT_PROVEN = 4
EXIT_CODES = {
    OK: "done (a valid credential, every log intact)",
    NO: "the answer is no: not found, not valid, a log altered, the story stopped",
    USAGE: "bad arguments or settings, a refused token, another Qiji on the data folder",
    UNREACHABLE: "Qiji does not answer where the command looked (see --run-dir, --port-base, "
                 "--address)",
    NOT_PROVEN: "(audit verify) intact as far as checked, but a checkpoint given was not used, "
                "or a log signs with a key not pinned",
}


class CommandFailed(Exception):
    """Ends a subcommand with one line on stderr and `code`."""

    def __init__(self, message: str, code: int = USAGE):
        super().__init__(message)
        self.code = code


class Parser(argparse.ArgumentParser):
    """argparse, saying a usage error in one line (and where the help is) instead of the
    whole usage block; every subcommand's parser is one of these too."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """Every subcommand of `qiji`, with its arguments (tests walk it to reach each one)."""
    parser = Parser(
        prog="qiji", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="exit codes:\n" + "\n".join(f"  {c}  {t}" for c, t in EXIT_CODES.items()))
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="start every service on the embedded default (SQLite)",
                         description="Starts the services on the embedded default: SQLite "
                         "files in the data folder ($QIJI_DATA_DIR, default the project's "
                         "data). One Qiji per data folder: a second `qiji run` on it refuses.")
    run.add_argument("--services", type=_service_names, default=list(SERVICES),
                     help="comma-separated subset to start (default: all)")
    run.add_argument("--relay", action="store_true",
                     help="also start the AMQP relay (needs RabbitMQ at RELAY_AMQP_URI)")
    run.add_argument("--port-base", type=addressing.port_base, default=None, metavar="N",
                     help="serve gRPC on N+1..N+6 instead of 50051..50056, the public "
                     "credentials face on N+7 instead of 50057, the figures on N+8 instead "
                     "of 50058, the console on N+9 instead of 50059, and no metrics (unless "
                     "<SERVICE>_METRICS_PORT is set), to run beside another Qiji")

    token = sub.add_parser("token", help="add a caller, or rotate its token")
    token.add_argument("principal", type=_principal,
                       help="the calling system's name, e.g. platform-company")
    token.add_argument("--role", action="append", required=True, choices=sorted(ROLES),
                       help="a role of the caller (repeat for several)")
    token.add_argument("--organisation-id", default="",
                       help="the organisation the caller acts for: required for every role but "
                       "city_admin, auditor, operator, service and public_reader")
    token.add_argument("--subscribe", action="append", default=[], metavar="TYPE",
                       help="for a feed consumer: a public event type, or a prefix such as "
                       "'qiji.training.v1.*', it may receive (repeat; default: all)")
    token.add_argument("--tokens-file", type=Path, default=None,
                       help="default: $QIJI_TOKENS_FILE or the data folder's tokens.json")
    token.add_argument("--certificate-subject", default="", metavar="NAME",
                       help="where ports require client certificates (mTLS): a client "
                       "certificate with this common name or subject alternative name, "
                       "verified by the client CA, is this caller even without a token")

    tokens = sub.add_parser("tokens", help="look after the tokens file: list its callers, or "
                            "name the organisation an existing caller acts for")
    tokens.add_argument("--tokens-file", type=Path, default=None,
                        help="default: $QIJI_TOKENS_FILE or the data folder's tokens.json")
    tsub = tokens.add_subparsers(dest="action", required=True, metavar="ACTION")
    tsub.add_parser("list", help="every caller, its roles and organisation, and why an entry "
                    "is refused (exit 1 when one is)")
    assign = tsub.add_parser("assign", help="name the organisation a caller acts for, keeping "
                             "its token (how a tokens file from before organisations were "
                             "required is brought across)")
    assign.add_argument("principal")
    assign.add_argument("--organisation-id", required=True)

    credential = sub.add_parser(
        "credential", help="export or verify an Open Badges 3.0 credential (badges service)")
    actions = credential.add_subparsers(dest="action", required=True, metavar="ACTION")
    export = actions.add_parser("export", help="an award as a signed credential: JSON on "
                                "stdout, the JWT on stderr")
    export.add_argument("award_id", type=id_argument, help="the award's id")
    export.add_argument("--baked", type=Path, default=None, metavar="FILE",
                        help="also write the badge's picture with the credential baked in (PNG "
                        "or SVG, Open Badges 3.0 §5.3)")
    addressing.add_arguments(export)
    verify = actions.add_parser("verify", help="check a credential's signature, its claims and "
                                "whether its award still stands; exit 0 only when valid")
    verify.add_argument("file", help="a file holding the credential: its JWT, or a baked PNG or "
                        "SVG (- for standard input)")
    addressing.add_arguments(verify)

    demo = sub.add_parser("demo", help="play the city's report against a running Qiji "
                          "(or, with --embedded, one it starts and stops)")
    from shared.tools.demo import add_arguments as demo_arguments
    demo_arguments(demo)

    from shared.tools.audit_cli import add_parser as audit_parser
    audit_parser(sub)
    from shared.tools.stats_cli import add_parser as stats_parser
    stats_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:  # said by the subcommand's own parser, with its own --help
            _subcommand_parser(parser, args).error(
                f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as done:  # --help (0) or a usage error (2), already said by argparse
        return done.code if isinstance(done.code, int) else USAGE
    command = " ".join(filter(None, [args.command, getattr(args, "action", None),
                                     getattr(args, "question", None)]))
    try:
        return _dispatch(args)
    except (CommandFailed, AddressingError, ConfigError) as failed:
        print(f"qiji {command}: {failed}", file=sys.stderr, flush=True)
        return getattr(failed, "code", USAGE)
    except KeyboardInterrupt:
        return 130
    except OSError as error:  # a file that cannot be read or written, a port...
        what = f" {error.filename}" if error.filename else ""
        print(f"qiji {command}:{what} {error.strerror or error}", file=sys.stderr, flush=True)
        return USAGE
    except Exception as error:
        if os.environ.get("QIJI_DEBUG"):
            raise
        print(f"qiji {command}: unexpected error: {type(error).__name__}: {error} (set "
              "QIJI_DEBUG=1 to see where)", file=sys.stderr, flush=True)
        return NO


def _subcommand_parser(parser: argparse.ArgumentParser, args: argparse.Namespace
                       ) -> argparse.ArgumentParser:
    """The parser of the subcommand `args` were parsed for (`qiji audit perk`'s, say)."""
    while True:
        subcommands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        chosen = getattr(args, subcommands[0].dest, None) if subcommands else None
        if chosen is None:
            return parser
        parser = subcommands[0].choices[chosen]


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "audit":
        from shared.tools.audit_cli import answer
        deployment = addressing.resolve(args)
        # A witness keeping checkpoints presents a platform token to the feed, not the
        # auditor's.
        token = deployment.token if args.question == "checkpoints" else \
            deployment.require_token()
        return answer(args, token, deployment.dialer(), deployment.tls)
    if args.command == "stats":
        from shared.tools.stats_cli import answer as stats_answer
        return stats_answer(args)
    if args.command == "demo":
        from shared.tools import demo as demo_module
        if args.embedded:
            return demo_module.run_embedded(args)
        return demo_module.run(args, addressing.resolve(args))
    if args.command == "run":
        return _run(args.services, relay=args.relay, port_base=args.port_base)
    if args.command == "credential":
        return _credential(args, addressing.resolve(args))
    tokens_file = args.tokens_file or load_settings("qiji").tokens_file
    if args.command == "tokens":
        return _tokens(args, tokens_file)
    try:
        _check_subscriptions(args.subscribe)
        print(add_caller(tokens_file, args.principal, args.role, args.organisation_id,
                         args.subscribe, certificate_subject=args.certificate_subject))
    except ValueError as error:
        raise CommandFailed(str(error)) from None
    return OK


def _check_subscriptions(patterns: list[str]) -> None:
    """Each subscription names a public event type, or a prefix of some ("qiji.training.v1.*"):
    a typo would otherwise subscribe a consumer to nothing, silently."""
    from services.platform.catalogue import PUBLISHER
    for pattern in patterns:
        known = (any(t.startswith(pattern[:-1]) for t in PUBLISHER) if pattern.endswith("*")
                 else pattern in PUBLISHER)
        if not known:
            raise ValueError(f"--subscribe {pattern!r} names no public event type; see "
                             "services/platform/event-feed.md")


def _tokens(args: argparse.Namespace, tokens_file: Path) -> int:
    from shared.auth import assign_organisation, list_callers
    if args.action == "assign":
        try:
            assign_organisation(tokens_file, args.principal, args.organisation_id)
        except ValueError as error:
            raise CommandFailed(str(error)) from None
        print(f"{args.principal} now acts for {args.organisation_id}; its token is unchanged")
        return OK
    refused = 0
    for c in list_callers(tokens_file):
        line = (f"{c['principal']}\troles={','.join(c['roles'])}"
                f"\torganisation={c['organisation_id'] or '-'}")
        if c["refused"]:
            refused += 1
            line += f"\tREFUSED: {c['refused']}"
        print(line)
    if refused:
        print(f"{refused} entries are refused; fix each with `qiji tokens assign <principal> "
              "--organisation-id <id>`", file=sys.stderr)
    return NO if refused else OK


def rpc_failed(error: grpc.RpcError, service: str, address: str) -> CommandFailed:
    """One line for a call that failed, and the exit code that says what kind of failure."""
    code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = (error.details() if isinstance(error, grpc.Call) else "") or ""
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) \
            and "store" not in details:
        return CommandFailed(f"{service} at {address} does not answer ({code.name}): is Qiji "
                             "running there? (--run-dir, --port-base, --address say where)",
                             UNREACHABLE)
    if code == grpc.StatusCode.UNAVAILABLE:
        return CommandFailed(f"{code.name}: {details}", UNREACHABLE)
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return CommandFailed(f"{code.name}: {service} at {address} does not know the token "
                             "(give --token, $QIJI_TOKEN or --run-dir of that Qiji)")
    return CommandFailed(f"{code.name}: {details}", NO if code == grpc.StatusCode.NOT_FOUND
                         else USAGE)


def _service_names(raw: str) -> list[str]:
    names = [s.strip() for s in raw.split(",") if s.strip()]
    unknown = [s for s in names if s not in SERVICES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"{', '.join(unknown) or 'none given'}: choose from {', '.join(SERVICES)}")
    return names


def _principal(raw: str) -> str:
    """argparse type of a caller's name: what every event it causes records as its principal,
    so something to read — not empty, no spaces or control characters, at most 128 long."""
    if not raw or len(raw) > 128 or any(c.isspace() or not c.isprintable() for c in raw):
        raise argparse.ArgumentTypeError(
            f"{raw[:40]!r} is not a caller's name (1 to 128 characters, no spaces), e.g. "
            "platform-company")
    return raw


def id_argument(raw: str) -> str:
    """argparse type of an id: every aggregate in Qiji is named by a UUID."""
    import uuid
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{raw!r} is not an id (a UUID such as 0d6c2f3e-6a51-4a8e-9a0e-5b3c0f2d7e11)"
        ) from None


def moment(raw: str) -> datetime:
    """argparse type of a moment: ISO 8601, a bare date or time being the city's (a bare date
    is its midnight in the city)."""
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{raw!r} is not a date or time in ISO 8601 (e.g. 2026-03-01 or "
            "2026-03-01T12:00:00+08:00)") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=CITY_TIME)


def _run(services: list[str], *, relay: bool = False, port_base: int | None = None) -> int:
    settings = load_settings("qiji")
    ports = grpc_ports(port_base)
    metrics = {name: (load_settings(name).metrics_port
                      or (metrics_port(name) if port_base is None else 0))
               for name in services}
    web_port = web_http_port(port_base) if "badges" in services else 0
    console_port = console_http_port(port_base) if all(
        name in services for name in CONSOLE_NEEDS) else 0
    # One Qiji per data folder, decided before anything in it is touched: a second one would
    # rotate the services' token under the first one's followers, for good.
    lock = RunLock(settings.data_dir)
    try:
        lock.acquire()
    except AddressingError as taken:
        raise CommandFailed(str(taken)) from None
    try:
        busy = sorted(port for name in services
                      for port in (ports[name], metrics[name]) if port and not port_free(port))
        busy += [port for port in (web_port, console_port) if port and not port_free(port)]
        if busy:
            raise CommandFailed(f"ports in use: {busy} (another Qiji? give it --port-base N)")
        load_master_key(settings.master_key, settings.master_key_file, create=True)
        admin = admin_token(settings.tokens_file, settings.data_dir / "admin.token")
        tokens = process_tokens(settings.tokens_file)
        lock.announce({name: f"127.0.0.1:{ports[name]}" for name in services})
        return _serve(services, settings, ports, metrics, web_port, admin, tokens,
                      lock.fd, relay=relay, console_port=console_port)
    finally:
        lock.release()


def _serve(services: list[str], settings: Settings, ports: dict[str, int],
           metrics: dict[str, int], web_port: int, admin_token: str, tokens: dict[str, str],
           lock_fd: int, *, relay: bool, console_port: int = 0) -> int:
    # Where credentials say their issuer, keys and status lists are: the city's own address
    # when the operator gives one, else this machine's public face.
    issuer_url = (load_settings("badges").own_setting("ISSUER_URL")
                  or f"http://127.0.0.1:{web_port}")
    env = {**os.environ, "QIJI_ISSUER_URL": issuer_url,
           "CREDENTIALS_HTTP_PORT": str(web_port), "CONSOLE_HTTP_PORT": str(console_port),
           "QIJI_DATA_DIR": str(settings.data_dir),
           "QIJI_TOKENS_FILE": str(settings.tokens_file), **tokens,
           **{f"{name.upper()}_GRPC_PORT": str(port) for name, port in ports.items()},
           **{f"{name.upper()}_METRICS_PORT": str(port) for name, port in metrics.items()},
           # Each follower (and the relay) finds the others where they were started here.
           **{f"{follower.upper()}_{name.upper()}_ADDRESS": f"127.0.0.1:{port}"
              for follower in [*SERVICES, "relay", WEB, CONSOLE]
              for name, port in ports.items()
              if follower != name
              and not os.environ.get(f"{follower.upper()}_{name.upper()}_ADDRESS")},
           "QIJI_LOG_FORMAT": os.environ.get("QIJI_LOG_FORMAT", "console")}
    processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(module: str) -> subprocess.Popen[bytes]:
        # The module names come from SERVICES, never from input. Each process holds the data
        # folder's lock too (pass_fds): killed alone, `qiji run` leaves it taken while its
        # services live.
        # Secrets only for the processes that use them (env_for: least privilege).
        return subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", f"services.{module}"], env=env_for(module, env),
            pass_fds=(lock_fd,))

    for name in services:
        processes[name] = start(name)
    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        for name in services:
            if not _wait_serving(f"127.0.0.1:{ports[name]}", processes[name], settings.tls):
                print(f"{name} did not start; see its log above", file=sys.stderr)
                return NO
        if relay:
            # Started once the services answer; it has no gRPC port of its own to wait for.
            processes["relay"] = start("relay")
        web = ""
        if web_port:
            processes[WEB] = start(WEB)
            web = f"http://127.0.0.1:{web_port}"
            if not wait_http_ready(f"{web}/readyz", processes[WEB]):
                print(f"{WEB} did not start; see its log above", file=sys.stderr)
                return NO
        console = ""
        if console_port:
            missing = console_assets_missing()
            if missing:
                print(f"{CONSOLE} not started: {missing}", file=sys.stderr)
            else:
                processes[CONSOLE] = start(CONSOLE)
                console = f"http://127.0.0.1:{console_port}"
                if not wait_http_ready(f"{console}/readyz", processes[CONSOLE]):
                    print(f"{CONSOLE} did not start; see its log above", file=sys.stderr)
                    return NO
        _print_banner(services, settings.data_dir, admin_token, ports, metrics, web,
                      issuer_url, console)
        while not stopping:
            for name, proc in processes.items():
                if proc.poll() is not None:
                    print(f"{name} exited with {proc.returncode}", file=sys.stderr)
                    return NO
            time.sleep(0.5)
        return OK
    finally:
        for proc in processes.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in processes.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


def _credential(args: argparse.Namespace, deployment: Deployment) -> int:
    """Exports a credential as JSON and JWT (and, with --baked, baked into the badge's
    picture), or verifies one — a JWT, or a baked PNG / SVG: the signature under the issuer's
    key, the claims, and the award's status now (revoked? expired?). Exit 0 only for a valid
    credential."""
    from qiji.badges.v1 import badges_service_pb2 as pb
    from qiji.badges.v1 import badges_service_pb2_grpc as pb_grpc

    from shared.baking import NotBaked, unbake

    if args.action == "verify":
        try:
            raw = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
        except OSError as error:
            raise CommandFailed(f"cannot read {args.file}: {error.strerror}") from None
        try:
            jwt = unbake(raw) if raw.startswith((b"\x89PNG", b"<")) else \
                raw.decode("utf-8").strip()
        except (NotBaked, UnicodeDecodeError) as error:
            why = "not a text file" if isinstance(error, UnicodeDecodeError) else str(error)
            raise CommandFailed(f"{args.file} is not a credential: {why}") from None
        if not jwt:
            raise CommandFailed(f"{args.file} holds no credential")
    metadata = [("authorization", f"Bearer {deployment.require_token()}")]
    address = deployment.addresses["badges"]
    with open_channel(address, deployment.tls) as channel:
        stub = pb_grpc.BadgesServiceStub(channel)
        try:
            if args.action == "export":
                reply = stub.ExportCredential(pb.ExportCredentialRequest(
                    award_id=args.award_id, baked=args.baked is not None), metadata=metadata,
                    timeout=10)
                print(reply.credential_json)
                print(reply.credential_jwt, file=sys.stderr)
                if args.baked is not None:
                    args.baked.write_bytes(reply.baked_image)
                    print(f"baked into {args.baked} ({reply.baked_image_media_type})",
                          file=sys.stderr)
                return OK
            result = stub.VerifyCredential(pb.VerifyCredentialRequest(credential_jwt=jwt),
                                           metadata=metadata, timeout=10)
        except grpc.RpcError as error:
            raise rpc_failed(error, "badges", address) from None
    verdict = pb.CredentialVerdict.Name(result.verdict).removeprefix("CREDENTIAL_VERDICT_")
    print(f"signature: {'valid' if result.signature_valid else 'INVALID'}")
    print(f"award:     {result.award_id or '-'}  status: "
          f"{pb.AwardStatus.Name(result.status).removeprefix('AWARD_STATUS_')}")
    print(f"verdict:   {verdict}")
    for problem in result.problems:
        print(f"problem:   {problem}")
    print("VALID" if result.valid else "NOT VALID")
    return OK if result.valid else NO


def grpc_ports(port_base: int | None = None) -> dict[str, int]:
    """Where `qiji run` serves each service's gRPC: `<SERVICE>_GRPC_PORT` or the default port
    (50051 for identity, and so on), or, with a port base N, N+1 for identity, and so on."""
    if port_base is None:
        return {name: load_settings(name).grpc_port for name in DEFAULT_PORTS}
    return {name: port_from_base(port_base, name) for name in DEFAULT_PORTS}


def web_http_port(port_base: int | None = None) -> int:
    """Where `qiji run` serves the public credentials face: CREDENTIALS_HTTP_PORT or 50057,
    or, with a port base N, N+7 (the figures are on N+8)."""
    if port_base is not None:
        return port_from_base(port_base, WEB)
    port: int = load_settings(WEB).own_setting("HTTP_PORT")
    return port


def console_http_port(port_base: int | None = None) -> int:
    """Where `qiji run` serves the console: CONSOLE_HTTP_PORT or 50059, or, with a port base
    N, N+9."""
    if port_base is not None:
        return port_from_base(port_base, CONSOLE)
    port: int = load_settings(CONSOLE).own_setting("HTTP_PORT")
    return port


def wait_http_ready(url: str, proc: subprocess.Popen[bytes] | None,
                    timeout: float = 30.0) -> bool:
    """Polls an HTTP readiness URL (ours, on this machine) until it answers 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (proc is None or proc.poll() is None):
        try:
            with urllib.request.urlopen(url, timeout=1) as reply:  # noqa: S310
                if reply.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def _wait_serving(address: str, proc: subprocess.Popen[bytes], tls: TlsSettings,
                  timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    with open_channel(address, tls) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)  # type: ignore[attr-defined]  # stub lacks Check
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return True
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    return False


def _print_banner(services: list[str], data_dir: Path, token: str, ports: dict[str, int],
                  metrics: dict[str, int], web: str = "", issuer_url: str = "",
                  console: str = "") -> None:
    lines = ["", "Qiji is running on its embedded default (SQLite files in "
             f"{data_dir}).", ""]
    for name in services:
        lines.append(f"  {name:<11} 127.0.0.1:{ports[name]}   (gRPC, health, reflection)" + (
            f"   metrics http://127.0.0.1:{metrics[name]}/metrics" if metrics[name] else ""))
    if web:
        lines.append(f"  {WEB:<11} {web}/verify   (public, no token: issuer {issuer_url}, "
                     "keys, status lists)")
    if console:
        lines.append(f"  {CONSOLE:<11} {console}/   (the city's figures in a browser: sign in "
                     "with a token, e.g. the admin token below)")
    lines += [
        "",
        f"Admin token ({ADMIN_PRINCIPAL}: city_admin, operator, auditor):",
        f"  {token}",
        "",
        "Call it, e.g. from Python:",
        "  import grpc",
        "  from qiji.identity.v1 import identity_service_pb2 as pb, identity_service_pb2_grpc as g",
        f"  stub = g.IdentityServiceStub(grpc.insecure_channel('127.0.0.1:{ports['identity']}'))",
        f"  md = [('authorization', 'Bearer {token}')]",
        "  stub.ListRiders(pb.ListRidersRequest(), metadata=md)",
        "",
        "or with grpcurl (reflection is on):",
        f"  grpcurl -plaintext -H 'authorization: Bearer {token}' \\",
        f"    127.0.0.1:{ports['identity']} qiji.identity.v1.IdentityService/ListOrganisations",
        "",
        "The city's figures (statistics): .venv/bin/qiji stats measures, then e.g.",
        "  .venv/bin/qiji stats show --measure riders_registered --dimension street "
        "--from 2026-03-01 --to 2026-03-31",
        "  .venv/bin/qiji stats export ... -o figures.xlsx   (README: The city's figures)",
        "",
        "More callers (a platform, street office, department, merchant, community or education",
        "provider acts for one organisation): .venv/bin/qiji token NAME --role platform "
        "--organisation-id ID",
        "Stop: Ctrl-C",
        "",
    ]
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    # `python -m shared.tools.cli`: run the module's own copy, not this __main__ one, so that the
    # subcommands' modules (which import shared.tools.cli) raise the CommandFailed main catches.
    from shared.tools.cli import main as module_main
    sys.exit(module_main())
