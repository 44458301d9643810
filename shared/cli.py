"""The `qiji` command: run Qiji on its embedded default, and manage callers' tokens."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shared.auth import ROLES, add_caller
from shared.config import (
    CREDENTIALS_HTTP_PORT,
    DEFAULT_PORTS,
    EVENT_SOURCED_SERVICES,
    ConfigError,
    Settings,
    env_for,
    load_settings,
)
from shared.grpc.channels import open_channel
from shared.personal_data import load_master_key

# The services `qiji run` starts, in start order; each new service joins this list.
SERVICES = ["identity", "training", "merchants", "badges", "governance", "platform"]
# The public credentials face: HTTP, not gRPC, started once badges serves.
WEB = "credentials"
ADMIN_PRINCIPAL = "local-admin"
SERVICES_PRINCIPAL = "qiji-services"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qiji", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="start every service on the embedded default (SQLite)")
    run.add_argument("--services", default=",".join(SERVICES),
                     help="comma-separated subset to start (default: all)")
    run.add_argument("--relay", action="store_true",
                     help="also start the AMQP relay (needs RabbitMQ at RELAY_AMQP_URI)")
    run.add_argument("--port-base", type=int, default=None, metavar="N",
                     help="serve gRPC on N+1..N+6 instead of 50051..50056, the public "
                     "credentials face on N+7 instead of 50057, and no metrics (unless "
                     "<SERVICE>_METRICS_PORT is set), to run beside another Qiji")
    token = sub.add_parser("token", help="add a caller, or rotate its token")
    token.add_argument("principal", help="the calling system's name, e.g. platform-company")
    token.add_argument("--role", action="append", required=True, choices=sorted(ROLES),
                       help="a role of the caller (repeat for several)")
    token.add_argument("--organisation-id", default="",
                       help="the organisation the caller acts for: required for every role but "
                       "city_admin, auditor, operator and service")
    token.add_argument("--subscribe", action="append", default=[], metavar="TYPE",
                       help="for a feed consumer: a public event type, or a prefix such as "
                       "'qiji.training.v1.*', it may receive (repeat; default: all)")
    token.add_argument("--tokens-file", type=Path, default=None,
                       help="default: $QIJI_TOKENS_FILE or data/tokens.json")
    token.add_argument("--certificate-subject", default="", metavar="NAME",
                       help="where ports require client certificates (mTLS): a client "
                       "certificate with this common name or subject alternative name, "
                       "verified by the client CA, is this caller even without a token")
    tokens = sub.add_parser("tokens", help="look after the tokens file: list its callers, or "
                            "name the organisation an existing caller acts for")
    tokens.add_argument("--tokens-file", type=Path, default=None,
                        help="default: $QIJI_TOKENS_FILE or data/tokens.json")
    tsub = tokens.add_subparsers(dest="action", required=True)
    tsub.add_parser("list", help="every caller, its roles and organisation, and why an entry "
                    "is refused (exit 1 when one is)")
    assign = tsub.add_parser("assign", help="name the organisation a caller acts for, keeping "
                             "its token (how a tokens file from before organisations were "
                             "required is brought across)")
    assign.add_argument("principal")
    assign.add_argument("--organisation-id", required=True)
    credential = sub.add_parser(
        "credential", help="export or verify an Open Badges 3.0 credential (badges service)")
    credential.add_argument("action", choices=["export", "verify"])
    credential.add_argument("target", help="export: an award id; verify: a file holding the "
                            "credential's JWT (or - for standard input)")
    credential.add_argument("--baked", type=Path, default=None, metavar="FILE",
                            help="export: also write the badge's picture with the credential "
                            "baked in (PNG or SVG, Open Badges 3.0 §5.3)")
    credential.add_argument("--address", default=f"127.0.0.1:{DEFAULT_PORTS['badges']}")
    credential.add_argument("--token", default=os.environ.get("QIJI_TOKEN", ""),
                            help="bearer token (default: $QIJI_TOKEN, else data/admin.token)")
    demo = sub.add_parser("demo", help="play the city's report against a running Qiji "
                          "(or, with --embedded, one it starts and stops)")
    from shared.demo import add_arguments as demo_arguments
    demo_arguments(demo)
    audit = sub.add_parser("audit", help="answer an auditor: history, as-of, verify, perk, "
                           "award; keep checkpoints")
    audit.add_argument("--token", default=os.environ.get("QIJI_TOKEN", ""),
                       help="an auditor's token (default: $QIJI_TOKEN, else data/admin.token)")
    audit.add_argument("--host", default="127.0.0.1")
    asub = audit.add_subparsers(dest="question", required=True)
    h = asub.add_parser("history", help="every event of an aggregate, with who acted and why")
    h.add_argument("service", choices=EVENT_SOURCED_SERVICES)
    h.add_argument("aggregate_id")
    a = asub.add_parser("as-of", help="an aggregate as it stood at a moment (ISO 8601)")
    a.add_argument("service", choices=EVENT_SOURCED_SERVICES)
    a.add_argument("aggregate_id")
    a.add_argument("moment", help="e.g. 2026-03-01 or 2026-03-01T12:00:00+08:00")
    v = asub.add_parser("verify", help="prove a service's log was not altered (all by default)")
    v.add_argument("services", nargs="*",
                   help=f"some of {EVENT_SOURCED_SERVICES} (default: all)")
    v.add_argument("--checkpoints", action="append", metavar="FILE",
                   help="signed checkpoints a witness kept (JSON lines, as `qiji audit "
                   "checkpoints` or an AMQP consumer wrote them); repeat for several files")
    v.add_argument("--checkpoints-from-feed", action="store_true",
                   help="also every checkpoint on the platform feed now (needs --feed-token)")
    v.add_argument("--verifier-key", action="append", default=[], metavar="KEY",
                   help="a log's checkpoint verifier key as the city publishes it "
                   "(name+keyid+base64): checkpoints it did not sign are refused here")
    _feed_arguments(v)
    c = asub.add_parser("checkpoints", help="keep a witness copy: append every checkpoint "
                        "published since the last run to a file")
    c.add_argument("--out", required=True, help="the file to append to (its cursor is kept "
                   "beside it, in FILE.cursor)")
    _feed_arguments(c)
    p = asub.add_parser("perk", help="every redemption of a perk, with the quota after each")
    p.add_argument("perk_id")
    w = asub.add_parser("award", help="why a rider holds a badge")
    w.add_argument("rider_id")
    w.add_argument("badge_class_id")
    args = parser.parse_args(argv)
    try:
        # The `qiji` command's own channels are secured by the same QIJI_TLS_* settings as a
        # service's (TLS_CA_FILE, TLS_CLIENT_CERT_FILE, TLS_CLIENT_KEY_FILE).
        settings = load_settings("qiji")
        if args.command == "audit":
            from shared.audit_cli import answer
            return answer(args, _token(args.token), settings)
        if args.command == "demo":
            from shared import demo as demo_module
            if args.embedded:
                return demo_module.run_embedded(args)
            return demo_module.run(args, _token(args.token),
                                   args.tokens_file or settings.tokens_file)
        if args.command == "run":
            return _run([s for s in args.services.split(",") if s], relay=args.relay,
                        port_base=args.port_base)
        if args.command == "credential":
            return _credential(args.action, args.target, args.address, args.token, settings,
                               baked=args.baked)
    except ConfigError as error:
        print(f"configuration: {error}", file=sys.stderr)
        return 2
    tokens_file = args.tokens_file or settings.tokens_file
    if args.command == "tokens":
        return _tokens(args, tokens_file)
    try:
        _check_subscriptions(args.subscribe)
        print(add_caller(tokens_file, args.principal, args.role, args.organisation_id,
                         args.subscribe, certificate_subject=args.certificate_subject))
    except ValueError as error:
        print(f"qiji token: {error}", file=sys.stderr)
        return 2
    return 0


def _feed_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--feed-address", default=f"127.0.0.1:{DEFAULT_PORTS['platform']}",
                        help="the platform gateway (default: %(default)s)")
    parser.add_argument("--feed-token", default="",
                        help="a platform-role token for the feed (default: $QIJI_FEED_TOKEN)")


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
            print(f"qiji tokens assign: {error}", file=sys.stderr)
            return 2
        print(f"{args.principal} now acts for {args.organisation_id}; its token is unchanged")
        return 0
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
    return 1 if refused else 0


def _run(services: list[str], *, relay: bool = False, port_base: int | None = None) -> int:
    unknown = set(services) - set(SERVICES)
    if unknown:
        print(f"unknown services: {sorted(unknown)}; known: {SERVICES}", file=sys.stderr)
        return 2
    settings = load_settings("qiji")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    load_master_key(settings.master_key, settings.master_key_file, create=True)
    admin_token = _admin_token(settings.tokens_file, settings.data_dir / "admin.token")
    # The services' own token for reading each other's feeds; rotated at every start, since
    # only the processes started here need it.
    service_token = add_caller(settings.tokens_file, SERVICES_PRINCIPAL, ["service"])
    ports = grpc_ports(port_base)
    metrics = {name: int(os.environ.get(f"{name.upper()}_METRICS_PORT")
                         or (metrics_port(name) if port_base is None else 0))
               for name in services}
    web_port = web_http_port(port_base)
    # Where credentials say their issuer, keys and status lists are: the city's own address
    # when the operator gives one, else this machine's public face.
    issuer_url = os.environ.get("QIJI_ISSUER_URL") or f"http://127.0.0.1:{web_port}"
    env = {**os.environ, "QIJI_ISSUER_URL": issuer_url,
           "CREDENTIALS_HTTP_PORT": str(web_port), "QIJI_DATA_DIR": str(settings.data_dir),
           "QIJI_TOKENS_FILE": str(settings.tokens_file),
           "QIJI_SERVICE_TOKEN": service_token,
           **{f"{name.upper()}_GRPC_PORT": str(port) for name, port in ports.items()},
           **{f"{name.upper()}_METRICS_PORT": str(port) for name, port in metrics.items()},
           # Each follower (and the relay) finds the others where they were started here.
           **{f"{follower.upper()}_{name.upper()}_ADDRESS": f"127.0.0.1:{port}"
              for follower in [*SERVICES, "relay", WEB] for name, port in ports.items()
              if follower != name
              and not os.environ.get(f"{follower.upper()}_{name.upper()}_ADDRESS")},
           "QIJI_LOG_FORMAT": os.environ.get("QIJI_LOG_FORMAT", "console")}
    processes: dict[str, subprocess.Popen[bytes]] = {}
    for name in services:
        # The module names come from SERVICES above, never from input.
        processes[name] = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", f"services.{name}"], env=env_for(name, env))
    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        for name in services:
            if not _wait_serving(f"127.0.0.1:{ports[name]}", processes[name], settings):
                print(f"{name} did not start; see its log above", file=sys.stderr)
                return 1
        if relay:
            # Started once the services answer; it has no gRPC port of its own to wait for.
            processes["relay"] = subprocess.Popen(
                [sys.executable, "-m", "services.relay"], env=env_for("relay", env))
        web = ""
        if "badges" in services:
            processes[WEB] = subprocess.Popen(  # noqa: S603
                [sys.executable, "-m", f"services.{WEB}"], env=env_for(WEB, env))
            web = f"http://127.0.0.1:{web_port}"
            if not wait_http_ready(f"{web}/readyz", processes[WEB]):
                print(f"{WEB} did not start; see its log above", file=sys.stderr)
                return 1
        _print_banner(services, settings.data_dir, admin_token, ports, metrics, web,
                      issuer_url)
        while not stopping:
            for name, proc in processes.items():
                if proc.poll() is not None:
                    print(f"{name} exited with {proc.returncode}", file=sys.stderr)
                    return 1
            time.sleep(0.5)
        return 0
    finally:
        for proc in processes.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in processes.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


def _credential(action: str, target: str, address: str, token: str, settings: Settings,
                *, baked: Path | None = None) -> int:
    """Exports a credential as JSON and JWT (and, with `baked`, baked into the badge's
    picture), or verifies one — a JWT, or a baked PNG / SVG: the signature under the issuer's
    key, the claims, and the award's status now (revoked? expired?). Exit 0 only for a valid
    credential."""
    from qiji.badges.v1 import badges_service_pb2 as pb
    from qiji.badges.v1 import badges_service_pb2_grpc as pb_grpc

    from services.badges.credentials import NotBaked, unbake

    metadata = [("authorization", f"Bearer {_token(token)}")]
    with open_channel(address, settings) as channel:
        stub = pb_grpc.BadgesServiceStub(channel)
        try:
            if action == "export":
                reply = stub.ExportCredential(pb.ExportCredentialRequest(
                    award_id=target, baked=baked is not None), metadata=metadata, timeout=10)
                print(reply.credential_json)
                print(reply.credential_jwt, file=sys.stderr)
                if baked is not None:
                    baked.write_bytes(reply.baked_image)
                    print(f"baked into {baked} ({reply.baked_image_media_type})",
                          file=sys.stderr)
                return 0
            raw = sys.stdin.buffer.read() if target == "-" else Path(target).read_bytes()
            try:
                jwt = unbake(raw) if raw.startswith((b"\x89PNG", b"<")) else \
                    raw.decode("utf-8").strip()
            except (NotBaked, UnicodeDecodeError) as error:
                print(f"not a credential: {error}", file=sys.stderr)
                return 2
            result = stub.VerifyCredential(pb.VerifyCredentialRequest(credential_jwt=jwt),
                                           metadata=metadata, timeout=10)
        except grpc.RpcError as error:
            print(f"{error.code().name}: {error.details()}", file=sys.stderr)
            return 2
    verdict = pb.CredentialVerdict.Name(result.verdict).removeprefix("CREDENTIAL_VERDICT_")
    print(f"signature: {'valid' if result.signature_valid else 'INVALID'}")
    print(f"award:     {result.award_id or '-'}  status: "
          f"{pb.AwardStatus.Name(result.status).removeprefix('AWARD_STATUS_')}")
    print(f"verdict:   {verdict}")
    for problem in result.problems:
        print(f"problem:   {problem}")
    print("VALID" if result.valid else "NOT VALID")
    return 0 if result.valid else 1


def grpc_ports(port_base: int | None = None) -> dict[str, int]:
    """Where `qiji run` serves each service's gRPC: `<SERVICE>_GRPC_PORT` or the default port
    (50051 for identity, and so on), or, with a port base N, N+1 for identity, and so on."""
    if port_base is None:
        return {name: load_settings(name).grpc_port for name in DEFAULT_PORTS}
    return {name: port_base + 1 + i for i, name in enumerate(DEFAULT_PORTS)}


def web_http_port(port_base: int | None = None) -> int:
    """Where `qiji run` serves the public credentials face: CREDENTIALS_HTTP_PORT or 50057,
    or, with a port base N, N+7."""
    if port_base is not None:
        return port_base + 1 + len(DEFAULT_PORTS)
    return int(os.environ.get("CREDENTIALS_HTTP_PORT") or CREDENTIALS_HTTP_PORT)


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


def metrics_port(service: str) -> int:
    """Where `qiji run` serves each service's /metrics: 9101 for identity, and so on."""
    return 9100 + 1 + list(DEFAULT_PORTS).index(service)


def _token(token: str) -> str:
    """The given token, else the embedded default's admin token."""
    if token:
        return token
    token_file = load_settings("qiji").data_dir / "admin.token"
    return token_file.read_text().strip() if token_file.exists() else ""


def _admin_token(tokens_file: Path, token_file: Path) -> str:
    """The embedded default's admin token: made on first run, kept (0600) beside the data so
    later runs can print it again. The tokens file itself holds only its hash."""
    if token_file.exists() and tokens_file.exists():
        return token_file.read_text().strip()
    token = add_caller(tokens_file, ADMIN_PRINCIPAL, ["city_admin", "operator", "auditor"])
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def _wait_serving(address: str, proc: subprocess.Popen[bytes], settings: Settings,
                  timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    with open_channel(address, settings) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return True
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    return False


def _print_banner(services: list[str], data_dir: Path, token: str, ports: dict[str, int],
                  metrics: dict[str, int], web: str = "", issuer_url: str = "") -> None:
    lines = ["", "Qiji is running on its embedded default (SQLite files in "
             f"{data_dir}).", ""]
    for name in services:
        lines.append(f"  {name:<11} 127.0.0.1:{ports[name]}   (gRPC, health, reflection)" + (
            f"   metrics http://127.0.0.1:{metrics[name]}/metrics" if metrics[name] else ""))
    if web:
        lines.append(f"  {WEB:<11} {web}/verify   (public, no token: issuer {issuer_url}, "
                     "keys, status lists)")
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
        "More callers (a platform, street office, department, merchant, community or education",
        "provider acts for one organisation): .venv/bin/qiji token NAME --role platform "
        "--organisation-id ID",
        "Stop: Ctrl-C",
        "",
    ]
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    sys.exit(main())
