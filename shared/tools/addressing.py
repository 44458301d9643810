"""Where a `qiji` command finds Qiji, and what it presents there: one way for every command that
calls a deployment (audit, credential, demo).

Each service's address, first that applies:
1. `--address SERVICE=HOST:PORT` (repeatable), for that service;
2. `--run-dir DIR` (or `$QIJI_RUN_DIR`): a stack `deploy/up` brought up; its `stack.json` says
   the ports — or `--port-base N`: a `qiji run --port-base N`, on N+1..N+6 (both on `--host`,
   default 127.0.0.1);
3. `--host HOST`: that host, on the ports below;
4. `QIJI_<SERVICE>_ADDRESS`: the address setting the services themselves use
   (`<SERVICE>_<OTHER>_ADDRESS`), with `qiji` as the service;
5. the `qiji run` running on the data folder (`$QIJI_DATA_DIR`, default the project's `data`):
   the ports it said it serves;
6. `<SERVICE>_GRPC_HOST` / `_GRPC_PORT`, else the default ports (50051...).

The token: `--token`, else `$QIJI_TOKEN`, else the admin token `deploy/up` or `qiji run` keeps
beside the stack (`<run dir>/admin.token`, else `<data folder>/admin.token`) — never a file
found from the current directory. The tokens file (`qiji demo` adds callers to it):
`--tokens-file`, else `<run dir>/tokens.json`, else `$QIJI_TOKENS_FILE`, else the data
folder's."""

from __future__ import annotations

import argparse
import fcntl
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from shared.config import (
    DEFAULT_PORTS,
    MAX_PORT,
    PORT_BASE_SPAN,
    ConfigError,
    TlsSettings,
    address,
    load_settings,
    out_of_range,
    port_from_base,
)
from shared.grpc.channels import open_channel

# What `qiji run` writes into its data folder while it runs, under an exclusive lock on it:
# one Qiji per data folder, and where it serves (read by the other `qiji` commands).
RUN_FILE = "qiji-run.json"
STACK_FILE = "stack.json"  # deploy/up's, in its run directory (shared/tools/ops/stack.py)
SERVICES = list(DEFAULT_PORTS)


class AddressingError(Exception):
    """The command cannot tell where Qiji is, or what to present there; the message says why."""


@dataclass(frozen=True)
class Deployment:
    """A running Qiji as a `qiji` command reaches it."""

    addresses: dict[str, str]
    token: str
    # Where the token came from, for the message when it is refused or missing.
    token_source: str
    tokens_file: Path
    tls: TlsSettings

    def require_token(self) -> str:
        if not self.token:
            raise AddressingError(
                f"no token: give --token or $QIJI_TOKEN, or --run-dir of a stack deploy/up "
                f"brought up ({self.token_source})")
        return self.token

    def dialer(self) -> Dialer:
        return Dialer(self.addresses, self.tls)


class Dialer:
    """Opens a channel to a service of a deployment, secured as the QIJI_TLS_* settings say
    (plaintext when none are set); says where it dialled, for messages."""

    def __init__(self, addresses: Mapping[str, str], tls: TlsSettings | None = None):
        self._addresses = dict(addresses)
        self._tls = tls

    def __call__(self, service: str) -> grpc.Channel:
        return open_channel(self._addresses[service], self._tls)

    def address(self, service: str) -> str:
        return self._addresses.get(service, service)


# ---------------------------------------------------------------------------- arguments


def port_base(raw: str) -> int:
    """argparse type of a port base N: Qiji serves gRPC on N+1..N+6, the public credentials
    face on N+7, the figures on N+8 and the console on N+9, all of them ports."""
    try:
        base = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a number") from None
    used = PORT_BASE_SPAN  # the gRPC services, the credentials face, the figures, the console
    highest = MAX_PORT - used
    if base <= 0 or out_of_range(range(base + 1, base + used + 1)):
        raise argparse.ArgumentTypeError(
            f"{base} puts ports outside 1..{MAX_PORT}: give 1 to {highest} "
            f"(Qiji serves on N+1..N+{used})")
    return base


def service_address(raw: str) -> tuple[str, str]:
    """argparse type of `--address SERVICE=HOST:PORT`."""
    name, sep, where = raw.partition("=")
    if not sep or name not in DEFAULT_PORTS:
        raise argparse.ArgumentTypeError(
            f"{raw!r}: expected SERVICE=HOST:PORT with SERVICE one of {', '.join(SERVICES)}")
    try:
        return name, address(where)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{raw!r}: the address {error}") from None


def add_arguments(parser: argparse.ArgumentParser, *, tokens_file: bool = False,
                  whose: str = "a") -> None:
    """The options every command that calls Qiji takes. Their defaults are left unset
    (SUPPRESS), so that they may be given before or after a subcommand's name."""
    g = parser.add_argument_group("where Qiji is (shared/tools/addressing.py; default: your "
                                  "QIJI_<SERVICE>_ADDRESS settings, else the `qiji run` on "
                                  "the data folder, else the default ports)")
    g.add_argument("--run-dir", type=Path, default=argparse.SUPPRESS, metavar="DIR",
                   help="a stack deploy/up brought up: its ports, admin token and tokens file "
                   "(default: $QIJI_RUN_DIR)")
    g.add_argument("--port-base", type=port_base, default=argparse.SUPPRESS, metavar="N",
                   help="a `qiji run --port-base N`: the services on N+1..N+6, the "
                   "figures on N+8")
    g.add_argument("--host", default=argparse.SUPPRESS,
                   help="the host the services listen on (default 127.0.0.1)")
    g.add_argument("--address", type=service_address, action="append",
                   default=argparse.SUPPRESS, metavar="SERVICE=HOST:PORT",
                   help="one service elsewhere, e.g. governance=10.0.0.5:50055 (repeat)")
    g.add_argument("--token", default=argparse.SUPPRESS,
                   help=f"{whose} token (default: $QIJI_TOKEN, else the admin token kept in "
                   "the run directory or data folder)")
    if tokens_file:
        g.add_argument("--tokens-file", type=Path, default=argparse.SUPPRESS, metavar="FILE",
                       help="the tokens file the services read (default: the run "
                       "directory's, else $QIJI_TOKENS_FILE, else the data folder's)")


# ---------------------------------------------------------------------------- resolving


def resolve(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Deployment:
    """The deployment `args` (see add_arguments) and the environment point at."""
    env = os.environ if env is None else env
    given: dict[str, Any] = vars(args)
    run_dir_text = given.get("run_dir") or env.get("QIJI_RUN_DIR") or ""
    run_dir = Path(run_dir_text).resolve() if run_dir_text else None
    base = given.get("port_base")
    host = given.get("host")
    if run_dir is not None and base is not None:
        raise AddressingError("give --run-dir or --port-base, not both")
    try:
        own = load_settings("qiji", env)
    except ConfigError as error:
        raise AddressingError(f"configuration: {error}") from None

    if run_dir is not None:
        offset = _stack_port_offset(run_dir)
        addresses = {s: f"{host or '127.0.0.1'}:{port + offset}"
                     for s, port in DEFAULT_PORTS.items()}
    elif base is not None:
        addresses = port_base_addresses(base, host or "127.0.0.1")
    else:
        running = {} if host else running_addresses(own.data_dir)
        addresses = {}
        for service in DEFAULT_PORTS:
            configured = _configured_address(env, service)
            if host:
                addresses[service] = f"{host}:{configured.rpartition(':')[2]}"
            elif env.get(f"QIJI_{service.upper()}_ADDRESS"):
                addresses[service] = own.upstreams[service]
            else:
                addresses[service] = running.get(service) or configured
    for service, where in given.get("address") or []:
        addresses[service] = where

    token, token_source = _token(given.get("token") or env.get("QIJI_TOKEN", ""),
                                 run_dir, own.data_dir)
    tokens_file = (given.get("tokens_file")
                   or (run_dir / "tokens.json" if run_dir is not None else own.tokens_file))
    return Deployment(addresses=addresses, token=token, token_source=token_source,
                      tokens_file=Path(tokens_file), tls=own.tls)


def port_base_addresses(base: int, host: str = "127.0.0.1") -> dict[str, str]:
    """Where a `qiji run --port-base N` serves each service: N+1 for identity, and so on."""
    return {s: f"{host}:{port_from_base(base, s)}" for s in DEFAULT_PORTS}


def _configured_address(env: Mapping[str, str], service: str) -> str:
    """Where the service's own settings say it listens (<SERVICE>_GRPC_HOST / _GRPC_PORT)."""
    try:
        settings = load_settings(service, env)
    except ConfigError as error:
        raise AddressingError(f"configuration: {error}") from None
    host = settings.grpc_host
    if host in ("0.0.0.0", "::", "[::]", ""):  # noqa: S104 - listening everywhere: reachable here
        host = "127.0.0.1"
    return f"{host}:{settings.grpc_port}"


def _stack_port_offset(run_dir: Path) -> int:
    stack_file = run_dir / STACK_FILE
    try:
        saved = json.loads(stack_file.read_text())
        offset = int(saved.get("port_offset", 0))
    except FileNotFoundError:
        raise AddressingError(f"{run_dir} is not the run directory of a stack deploy/up "
                              f"brought up (no {STACK_FILE})") from None
    except (OSError, ValueError, TypeError, AttributeError) as error:
        raise AddressingError(f"{stack_file} cannot be read: {error}") from None
    if out_of_range(port + offset for port in DEFAULT_PORTS.values()):
        raise AddressingError(f"{stack_file}: port_offset {offset} puts ports outside "
                              f"1..{MAX_PORT}")
    return offset


def _token(given: str, run_dir: Path | None, data_dir: Path) -> tuple[str, str]:
    if given:
        return given.strip(), "--token or $QIJI_TOKEN"
    token_file = (run_dir or data_dir) / "admin.token"
    try:
        return token_file.read_text().strip(), str(token_file)
    except FileNotFoundError:
        return "", f"there is no {token_file}"
    except OSError as error:
        return "", f"{token_file} cannot be read: {error.strerror}"


# ---------------------------------------------------------------------------- qiji run


class RunLock:
    """One `qiji run` per data folder: an exclusive lock on `<data folder>/qiji-run.json`,
    taken before anything in the folder is touched and held while any process of that Qiji
    lives (the services inherit the descriptor, so a `qiji run` killed with its services
    still running keeps the folder taken). The file says where that Qiji serves."""

    def __init__(self, data_dir: Path):
        self.path = data_dir / RUN_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Takes the lock, or raises AddressingError saying who holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = _read_run_file(self.path)
            raise AddressingError(
                f"another Qiji runs on the data folder {self.path.parent}"
                + (f" (qiji run pid {holder.get('pid')}, identity at "
                   f"{holder.get('addresses', {}).get('identity')})" if holder else "")
                + ": stop it first, or give this one a data folder of its own "
                "(QIJI_DATA_DIR)") from None
        self._fd = fd

    @property
    def fd(self) -> int:
        assert self._fd is not None, "not acquired"
        return self._fd

    def announce(self, addresses: dict[str, str]) -> None:
        """Writes where this Qiji serves into the locked file (in place: the lock is on it)."""
        data = json.dumps({"pid": os.getpid(), "addresses": addresses}, indent=2).encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data + b"\n", 0)

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None


def _read_run_file(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def running_addresses(data_dir: Path) -> dict[str, str]:
    """The addresses the `qiji run` on `data_dir` serves, if one runs there now."""
    path = data_dir / RUN_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return {}
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pass  # taken: a Qiji runs there; its file says where
        else:
            return {}  # nobody holds it: what the file says is stale
    finally:
        os.close(fd)
    found = _read_run_file(path).get("addresses", {})
    return {s: a for s, a in found.items() if s in DEFAULT_PORTS and isinstance(a, str)}
