"""The event store as an operator handles it: create or upgrade its schemas; back it up
(pg_dump) with a manifest; restore it into a new database; verify a database against a manifest.

What each service keeps in its schema (`<SERVICE>_POSTGRES_SCHEMA`, default its name): the
eventsourcing tables `<service>_events` (request records are aggregates in it too) and
`<service>_tracking` (followers' positions), with the library's insert function and type;
`merchants_snapshots` (the newest snapshot of each long-lived perk: derived from the events,
never counted in a manifest, and made again if lost; shared/snapshots.py);
`personal_data_keys` (the wrapped per-rider keys); `audit_seals` (the seal chain). The relay
keeps `relay_positions` in its own schema. Each is created by the code that uses it, with
IF NOT EXISTS; `schemas` runs that same code, so it can never disagree with the services.

A backup is a directory: `qiji.dump` (pg_dump custom format, Qiji's schemas only),
`manifest.json` (per service: events, last notification id, seal head, follower positions;
the relay's positions; the dump's SHA-256), and `SHA256SUMS` (`sha256sum -c` checks it). The
manifest is computed in the very snapshot pg_dump dumps (`pg_export_snapshot`), so the two agree
even while the services keep writing."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from shared.config import EVENT_SOURCED_SERVICES, Settings, load_settings
from shared.tools.ops import FAILED, REFUSED, VERIFICATION_FAILED, OpsError
from shared.tools.ops.stack import RELAY, Say, Stack, check_postgres, say
from shared.tools.ops.status import events_table, one_row, seal_head, table_exists

# The figures' read model (services/statistics): its tables are made like the others', but it
# is derived (never backed up: on a restored database it replays the logs).
STATISTICS = "statistics"

FORMAT = "qiji-backup/1"
DUMP = "qiji.dump"
MANIFEST = "manifest.json"
SUMS = "SHA256SUMS"
VERIFY_PROGRESS_EVERY = 10_000


def tracking_table(service: str) -> str:
    return f"{service}_tracking"


def _settings(stack: Stack, service: str, dbname: str | None = None) -> Settings:
    return load_settings(service, stack.settings_env(dbname))


def schema_names(stack: Stack) -> dict[str, str]:
    return {name: _settings(stack, name).postgres_schema
            for name in (*EVENT_SOURCED_SERVICES, RELAY)}


# ---------------------------------------------------------------------- schemas


@contextmanager
def store_reader(settings: Settings, master_key: bytes) -> Iterator[Any]:
    """A bare Qiji application over one service's store: the same recorder, key store and
    MAC key as the service, none of its domain, views or followers. Enough to create the
    tables, read the log and check the seal chain."""
    from shared.application import QijiApplication

    reader_class = type(f"{settings.service.title()}StoreReader", (QijiApplication,),
                        {"name": settings.service})
    app = reader_class(settings, master_key)
    try:
        yield app
    finally:
        app.close()


def _objects(conn: psycopg.Connection, schema: str) -> set[str]:
    rows = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') "
        "UNION SELECT 'function ' || p.proname FROM pg_proc p JOIN pg_namespace n "
        "ON n.oid = p.pronamespace WHERE n.nspname = %s", (schema, schema)).fetchall()
    return {r[0] for r in rows}


def schemas(stack: Stack, out: Say = say) -> None:
    """Creates what is missing, in every service's schema, the relay's and the figures'; says
    what."""
    from services.relay.positions import PostgresPositions
    from services.statistics.store import open_store
    from shared.audit import SealStore

    check_postgres(stack, create_database=True, out=out)
    # A throwaway key when the stack has none yet: creating tables seals and MACs nothing.
    try:
        master_key = stack.master_key()
    except OpsError:
        master_key = bytes(32)
    with psycopg.connect(stack.conninfo(), autocommit=True) as conn:
        for name in (*EVENT_SOURCED_SERVICES, RELAY, STATISTICS):
            settings = _settings(stack, name)
            schema = settings.postgres_schema
            had_schema = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s",
                                      (schema,)).fetchone() is not None
            before = _objects(conn, schema)
            if name == RELAY:
                PostgresPositions(settings).close()
            elif name == STATISTICS:
                open_store(settings).close()
            else:
                with store_reader(settings, master_key) as app:
                    SealStore(app, create=True)
            made = sorted(_objects(conn, schema) - before)
            what = ([f"schema {schema}"] if not had_schema else []) + made
            out(f"{name:<11} " + (f"created {', '.join(what)}" if what
                                  else f"up to date (schema {schema}, {len(before)} objects)"))


# ---------------------------------------------------------------------- manifest


def manifest_of(conn: psycopg.Connection, stack: Stack, dbname: str) -> dict[str, Any]:
    """What the database holds, per service, as seen by `conn`'s transaction."""
    services: dict[str, Any] = {}
    for name in EVENT_SOURCED_SERVICES:
        schema = _settings(stack, name, dbname).postgres_schema
        entry: dict[str, Any] = {"schema": schema,
                                 "present": table_exists(conn, schema, events_table(name))}
        if entry["present"]:
            count, last = one_row(conn.execute(sql.SQL(
                "SELECT count(*), coalesce(max(notification_id), 0) FROM {}").format(
                sql.Identifier(schema, events_table(name)))))
            entry.update({"events": int(count), "last_notification_id": int(last)})
            head = seal_head(conn, schema)
            entry["sealed_through"], entry["head_seal"] = head if head else (None, None)
            if table_exists(conn, schema, tracking_table(name)):
                entry["followers"] = dict(conn.execute(sql.SQL(
                    "SELECT application_name, notification_id FROM {} WHERE application_name "
                    "<> '__migration__' ORDER BY 1").format(
                    sql.Identifier(schema, tracking_table(name)))).fetchall())
        services[name] = entry
    relay_schema = _settings(stack, RELAY, dbname).postgres_schema
    relay: dict[str, Any] = {"schema": relay_schema,
                             "present": table_exists(conn, relay_schema, "relay_positions")}
    if relay["present"]:
        relay["positions"] = dict(conn.execute(sql.SQL(
            "SELECT service, next_position FROM {} ORDER BY 1").format(
            sql.Identifier(relay_schema, "relay_positions"))).fetchall())
    return {"services": services, "relay": relay}


def key_fingerprint(master_key: bytes) -> str:
    """Names the master key without revealing it: verify tells "wrong key" from "altered"."""
    return hmac.new(master_key, b"qiji-master-key-fingerprint", hashlib.sha256).hexdigest()[:16]


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def pg_tool(name: str) -> str:
    """pg_dump / pg_restore: $QIJI_PG_BIN, else on PATH, else the newest server's."""
    import os
    bin_dir = os.environ.get("QIJI_PG_BIN")
    if bin_dir and (Path(bin_dir) / name).exists():
        return str(Path(bin_dir) / name)
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
                        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)
    if candidates:
        return str(candidates[-1])
    raise OpsError(FAILED, f"{name} not found: install the PostgreSQL client tools or set "
                   "QIJI_PG_BIN")


def _run_tool(args: list[str], stack: Stack, out: Say) -> None:
    """Runs pg_dump / pg_restore with --verbose, showing its progress lines as they come."""
    import os
    env = {**os.environ, "PGPASSWORD": stack.password} if stack.password else None
    started = time.monotonic()
    # The arguments are built here from validated settings, never from a shell.
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,  # noqa: S603
                            text=True, env=env)
    assert proc.stderr is not None
    lines = []
    for line in proc.stderr:
        lines.append(line.rstrip())
        if any(word in line for word in ("dumping contents of table", "processing data for",
                                         "error", "warning")):
            out(f"  [{time.monotonic() - started:5.1f} s] {line.strip()}")
    if proc.wait() != 0:
        raise OpsError(FAILED, f"{Path(args[0]).name} exited with {proc.returncode}:\n"
                       + "\n".join(lines[-15:]))


# ---------------------------------------------------------------------- backup


def backup(stack: Stack, out_dir: Path, out: Say = say) -> Path:
    check_postgres(stack, create_database=False, out=out)
    pg_dump = pg_tool("pg_dump")
    target = out_dir / f"qiji-{stack.pg_db}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}"
    # The dump holds wrapped keys and sealed personal data: for the operator's eyes only.
    target.mkdir(parents=True, exist_ok=False, mode=0o700)
    out(f"[1/3] taking a snapshot of {stack.pg_db} and its manifest")
    with psycopg.connect(stack.conninfo()) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        snapshot = one_row(conn.execute("SELECT pg_export_snapshot()"))[0]
        contents = manifest_of(conn, stack, stack.pg_db)
        schemas = [e["schema"] for e in (*contents["services"].values(), contents["relay"])
                   if e["present"]]
        if not schemas:
            raise OpsError(REFUSED, f"database {stack.pg_db} holds no Qiji schema: nothing to "
                           "back up")
        out(f"[2/3] pg_dump of schemas {', '.join(schemas)}")
        _run_tool([pg_dump, "--format=custom", "--verbose", f"--snapshot={snapshot}",
                   f"--file={target / DUMP}", *(f"--schema={s}" for s in schemas),
                   "--dbname", stack.conninfo()], stack, out)
        conn.rollback()
    out("[3/3] manifest and checksums")
    try:
        fingerprint = key_fingerprint(stack.master_key())
    except OpsError:
        fingerprint = None
    manifest = {
        "format": FORMAT, "created_at": datetime.now(UTC).isoformat(),
        "database": stack.pg_db, "host": f"{stack.pg_host}:{stack.pg_port}",
        "master_key_fingerprint": fingerprint,
        "dump": {"file": DUMP, "sha256": sha256_of(target / DUMP),
                 "bytes": (target / DUMP).stat().st_size},
        **contents,
    }
    (target / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    (target / SUMS).write_text("".join(f"{sha256_of(target / f)}  {f}\n"
                                       for f in (DUMP, MANIFEST)))
    for name, entry in contents["services"].items():
        if entry["present"]:
            out(f"  {name:<11} {entry['events']:>8} events, last {entry['last_notification_id']}"
                f", sealed through {entry['sealed_through']}")
    out(f"backup written to {target} ({manifest['dump']['bytes']} bytes)")
    return target


def read_manifest(backup_dir: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((backup_dir / MANIFEST).read_text())
    except FileNotFoundError:
        # `backup --out DIR` writes each backup into a directory of its own inside DIR.
        inside = sorted(p.parent.name for p in backup_dir.glob(f"*/{MANIFEST}"))
        hint = (f"; the backups inside it: {', '.join(inside)}" if inside else "")
        raise OpsError(REFUSED, f"no {MANIFEST} in {backup_dir}: not a Qiji backup{hint}"
                       ) from None
    if manifest.get("format") != FORMAT:
        raise OpsError(REFUSED, f"{backup_dir}: unknown backup format {manifest.get('format')!r}")
    return manifest


# ---------------------------------------------------------------------- restore


def restore(stack: Stack, backup_dir: Path, target_db: str, out: Say = say) -> None:
    manifest = read_manifest(backup_dir)
    dump = backup_dir / manifest["dump"]["file"]
    out(f"[1/3] checking {dump}")
    if not dump.exists() or sha256_of(dump) != manifest["dump"]["sha256"]:
        raise OpsError(VERIFICATION_FAILED, f"{dump} is missing or does not match the "
                       "checksum in its manifest: the backup is damaged")
    pg_restore = pg_tool("pg_restore")
    target = dataclasses.replace(stack, pg_db=target_db)
    check_postgres(target, create_database=True, out=out)
    wanted = [e["schema"] for e in (*manifest["services"].values(), manifest["relay"])
              if e["present"]]
    with psycopg.connect(target.conninfo(), autocommit=True) as conn:
        taken = [s for s in wanted if conn.execute(
            "SELECT 1 FROM pg_namespace WHERE nspname = %s", (s,)).fetchone()]
    if taken:
        raise OpsError(REFUSED, f"database {target_db} already has schemas {taken}: restore "
                       "into a new (or empty) database")
    out(f"[2/3] pg_restore into {target_db}")
    _run_tool([pg_restore, "--verbose", "--no-owner", "--exit-on-error",
               "--dbname", target.conninfo(), str(dump)], stack, out)
    out("[3/3] verifying the restored store")
    verify(target, backup_dir, out=out)


# ---------------------------------------------------------------------- verify


def verify(stack: Stack, backup_dir: Path, out: Say = say, *, grown: bool = False) -> None:
    """The database (stack.pg_db) against a backup's manifest: the same events, positions and
    seal heads, and every event's MAC and the seal chain intact under the master key.
    `grown`: the database may have moved on since (an upgrade's check against the backup taken
    before it): at least as many events and positions as far, and the seal chain still passes
    through the manifest's head seal, so nothing of the backed-up log was lost or altered."""
    from shared.audit import verify as verify_log

    manifest = read_manifest(backup_dir)
    master_key = stack.master_key()
    problems: list[str] = []
    if manifest.get("master_key_fingerprint") not in (None, key_fingerprint(master_key)):
        raise OpsError(VERIFICATION_FAILED, "this master key is not the one the backup was "
                       "taken under: set QIJI_MASTER_KEY (or --run-dir) to the right one")
    check_postgres(stack, create_database=False, out=out)
    with psycopg.connect(stack.conninfo()) as conn:
        found = manifest_of(conn, stack, stack.pg_db)
    for name, expected in manifest["services"].items():
        actual = found["services"].get(name, {})
        if grown:
            problems += _not_grown(conn_info=stack.conninfo(), name=name, expected=expected,
                                   actual=actual)
            continue
        for key in ("present", "events", "last_notification_id", "sealed_through",
                    "head_seal", "followers"):
            if expected.get(key) != actual.get(key):
                problems.append(f"{name}: {key} is {actual.get(key)!r}, the manifest says "
                                f"{expected.get(key)!r}")
    if grown:
        for service, position in (manifest["relay"].get("positions") or {}).items():
            now = (found["relay"].get("positions") or {}).get(service, 0)
            if now < position:
                problems.append(f"relay: {service} at {now}, was at {position}")
    elif manifest["relay"].get("positions") != found["relay"].get("positions"):
        problems.append(f"relay: positions are {found['relay'].get('positions')}, the manifest "
                        f"says {manifest['relay'].get('positions')}")
    for name, expected in manifest["services"].items():
        if not expected["present"]:
            continue
        started = time.monotonic()
        with store_reader(_settings(stack, name, stack.pg_db), master_key) as app:
            verdict = None
            for verdict in verify_log(app, progress_every=VERIFY_PROGRESS_EVERY):
                progress = verdict.intact and 0 < verdict.checked < expected["events"]
                if progress and verdict.checked % VERIFY_PROGRESS_EVERY == 0:
                    out(f"  {name:<11} {verdict.checked} of {expected['events']} checked ...")
            assert verdict is not None
        if not verdict.intact:
            problems.append(f"{name}: position {verdict.first_broken}: {verdict.problem}")
        elif verdict.checked != expected["events"] and not (
                grown and verdict.checked >= expected["events"]):
            problems.append(f"{name}: {verdict.checked} events verified, the manifest says "
                            f"{expected['events']}")
        else:
            out(f"  {name:<11} {verdict.checked} events intact, sealed through "
                f"{verdict.sealed_through}, head seal {verdict.head_seal[:16]} "
                f"({time.monotonic() - started:.1f} s)")
    if problems:
        raise OpsError(VERIFICATION_FAILED, "verification FAILED:\n  " + "\n  ".join(problems))
    out(f"verified: {stack.pg_db} {'holds everything in' if grown else 'matches'} "
        f"{backup_dir / MANIFEST}")


def _not_grown(*, conn_info: str, name: str, expected: dict[str, Any],
               actual: dict[str, Any]) -> list[str]:
    """What a database that should have grown from `expected` lost."""
    if not expected.get("present"):
        return []
    problems = []
    for key in ("events", "last_notification_id", "sealed_through"):
        if (actual.get(key) or 0) < (expected.get(key) or 0):
            problems.append(f"{name}: {key} is {actual.get(key)!r}, was {expected.get(key)!r}")
    for upstream, position in (expected.get("followers") or {}).items():
        now = (actual.get("followers") or {}).get(upstream) or 0
        if now < position:
            problems.append(f"{name}: its follower of {upstream} is at {now}, was {position}")
    if expected.get("sealed_through"):
        with psycopg.connect(conn_info) as conn:
            row = conn.execute(sql.SQL("SELECT seal FROM {} WHERE notification_id = %s").format(
                sql.Identifier(expected["schema"], "audit_seals")),
                (expected["sealed_through"],)).fetchone()
        if row is None or bytes(row[0]).hex() != expected["head_seal"]:
            problems.append(f"{name}: the seal at {expected['sealed_through']} is not the "
                            f"backed-up head seal {expected['head_seal'][:16]}")
    return problems
