"""Operator commands for the native full stack (deploy/up, down, status, schemas, backup,
restore, verify, rotate-token): `python -m shared.tools.ops <command> --help`.

Every command exits with one of the codes below, so scripts and CI can tell a broken
dependency from a broken service from a broken backup without reading the output."""

from __future__ import annotations

OK = 0
FAILED = 1  # the command itself failed (a tool it runs, pg_dump say, exited non-zero)
USAGE = 2  # bad flags or arguments (argparse's own code)
DEPENDENCY_UNREACHABLE = 3  # PostgreSQL or RabbitMQ cannot be reached
UNHEALTHY = 4  # a process did not become healthy (up), or is not healthy now (status)
LAGGING = 5  # status: a follower or the relay trails its upstream by more than --max-lag
VERIFICATION_FAILED = 6  # verify/restore: the store does not match its manifest, or was altered
REFUSED = 7  # a precondition does not hold: already running, target not empty, unknown caller

EXIT_CODES = {
    OK: "ok",
    FAILED: "the command failed (see its message)",
    USAGE: "usage error (bad flag or argument)",
    DEPENDENCY_UNREACHABLE: "PostgreSQL or RabbitMQ is unreachable",
    UNHEALTHY: "a service or the relay is not (or did not become) healthy",
    LAGGING: "a follower or the relay lags by more than --max-lag",
    VERIFICATION_FAILED: "verification failed: the store does not match the backup, or was altered",
    REFUSED: "refused: a precondition does not hold (e.g. already running, target not empty)",
}


class OpsError(Exception):
    """Ends a command with `code` and a message for the operator."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
