"""Audit and replay over a large log (default one million events) on PostgreSQL: sealing,
verifying and replaying into a read model, each beside a raw sequential SELECT of the same
rows in the same run, with the peak memory of each (each phase runs in its own process, so
its peak RSS is its own)."""

from __future__ import annotations

import base64
import json
import os
import resource
import subprocess
import sys
import time
import uuid
from typing import Any

import psycopg

from bench.common import PG, Figure, record, scratch_database

# BENCH_AUDIT_EVENTS first: BENCH_EVENTS also sizes bench_feed, where a million is far too many.
EVENTS = int(os.environ.get("BENCH_AUDIT_EVENTS") or os.environ.get("BENCH_EVENTS", "1000000"))
PER_AGGREGATE = 50
PER_SAVE = 200  # aggregates per transaction while loading
# BENCH_AUDIT_PHASES: a subset while working on one (e.g. "raw,replay"); "raw" always runs.
PHASES = ["raw", *(p for p in os.environ.get(
    "BENCH_AUDIT_PHASES", "seal,raw_text,verify,replay,replay_some").split(",")
    if p and p != "raw")]
# Events stored through the application; the rest of the log is copies of them (see load).
SEED = 20_000
MASTER_KEY = base64.b64encode(bytes(range(32))).decode()


def env_for(db: str) -> dict[str, str]:
    return {"QIJI_PERSISTENCE": "postgres", "QIJI_POSTGRES_DBNAME": db,
            "QIJI_POSTGRES_HOST": PG["host"], "QIJI_DATA_DIR": "/tmp/qiji-bench-audit"}


def app_for(db: str):
    from services.identity.application import IdentityApplication
    from shared.config import load_settings
    return IdentityApplication(load_settings("identity", env_for(db)),
                               base64.b64decode(MASTER_KEY))


def phase(name: str, db: str) -> dict:
    """Runs in a child process: one measured phase."""
    started = time.perf_counter()
    extra: dict[str, float] = {}
    if name == "load":
        count = load(db)
    elif name == "seal":
        from shared.audit import Sealer
        sealer = Sealer(app_for(db))  # untimed: the application starts (its views rebuild)
        started = time.perf_counter()
        count = sealer.run_once()
    elif name == "verify":
        from shared.audit import verify
        app = app_for(db)  # untimed, as for the replay
        started = time.perf_counter()
        verdict = list(verify(app, progress_every=10**9))[-1]
        assert verdict.intact, verdict
        count = verdict.checked
    elif name == "replay":
        from collections import Counter

        from shared.views import LogFollower
        app = app_for(db)  # untimed: its own views rebuild as it starts
        started = time.perf_counter()  # the clock starts here
        # A read model that needs every event decoded: how many of each kind, and when the
        # last one happened. Its size does not grow with the log.
        kinds: Counter[str] = Counter()
        last = {}

        def apply(position: int, event: object) -> None:
            kinds[type(event).__name__] += 1
            last["at"] = event.timestamp  # type: ignore[attr-defined]
            if position == 100_000:  # memory flat: the peak then against the peak at the end
                last["rss_100k"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        LogFollower(app, "bench", apply).catch_up()
        count = sum(kinds.values())
        extra["peak_rss_mib_at_100k"] = last.get("rss_100k", 0)
    elif name == "replay_some":
        # A view that reads one kind of event and ignores the rest (as every service's views
        # ignore its request records): the aggregates started, 1 event in PER_AGGREGATE. It
        # names what it reads (`reads`): the other events are MAC- and place-checked, not
        # decoded. Every position is still passed through (count: all of them).
        from bench import audit_model as m
        from shared.views import LogFollower
        app = app_for(db)
        started = time.perf_counter()
        names: list[str] = []
        follower = LogFollower(app, "bench",
                               lambda position, event: names.append(type(event).__name__),
                               reads=(m.Counter.Started,))
        follower.catch_up()
        count = follower.position  # every position read and checked (the log starts at 1)
        assert len(names) == count // PER_AGGREGATE, (len(names), count)
    elif name in ("raw", "raw_text"):
        # The rows the replay reads, read the way it reads them (one server-side cursor, the
        # binary format, pages of replay.PAGE), and not decoded; raw_text: the same in the
        # text format, psycopg's default (the baseline before the replay read binary).
        from shared import replay
        binary = name == "raw"
        with psycopg.connect(dbname=db, **PG) as conn, conn.cursor(
                name="scan", binary=binary) as cur:
            started = time.perf_counter()  # the replay's clock starts connected, too
            cur.execute("SELECT notification_id, originator_id, originator_version, topic, "
                        "state FROM identity.identity_events WHERE notification_id >= %s"
                        " ORDER BY notification_id", (1,))
            count = 0
            while rows := cur.fetchmany(replay.PAGE if binary else 1000):
                count += len(rows)
    else:
        raise ValueError(name)
    seconds = time.perf_counter() - started
    return {"phase": name, "events": count, "seconds": seconds,
            "per_second": count / seconds if seconds else 0,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **extra}


def load(db: str) -> int:
    """EVENTS events: the first SEED through the application (real stored rows: its transcoder,
    its metadata, its MACs), the rest copies of them under new aggregate ids, each MACed anew
    for its id and version and written with COPY — a million in seconds rather than minutes.
    The log is what the application would have stored for those aggregates, MACs valid."""
    from bench import audit_model as m
    from shared.integrity import V2_TAIL
    app = app_for(db)
    done = 0
    while done < min(SEED, EVENTS):
        batch = []
        for _ in range(PER_SAVE):
            counter = m.Counter(name="c")
            for _ in range(PER_AGGREGATE - 1):
                counter.tick(note="x" * 40)
            batch.append(counter)
        app.save(*batch)
        done += PER_SAVE * PER_AGGREGATE
    seed = [(n.originator_id, n.originator_version, n.topic, n.state[:-V2_TAIL] + b"}")
            for n in app.read_log(1, done)]
    seal = app.event_mac.seal_state
    recorder: Any = app.recorder
    copy = (f"COPY {recorder.datastore.schema}.{recorder.events_table_name} "
            "(originator_id, originator_version, topic, state) FROM STDIN")
    with psycopg.connect(dbname=db, **PG) as conn, conn.cursor() as cur:
        while done < EVENTS:
            ids: dict[uuid.UUID, uuid.UUID] = {}
            with cur.copy(copy) as out:
                for originator_id, version, topic, content in seed[: EVENTS - done]:
                    new_id = ids.get(originator_id) or ids.setdefault(originator_id,
                                                                      uuid.uuid4())
                    out.write_row((new_id, version, topic,
                                   seal(new_id, version, topic, content)))
            done += min(len(seed), EVENTS - done)
            if done % 100_000 < len(seed):
                print(f"  loaded {done:,} events", file=sys.stderr, flush=True)
        conn.commit()
    app.close()
    return done


def run(name: str, db: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "bench.bench_audit", "--phase", name, db],
                         check=True, capture_output=True, text=True)
    sys.stderr.write(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> list[Figure]:
    with scratch_database() as db:
        print(f"loading {EVENTS:,} events into PostgreSQL ...", flush=True)
        load = run("load", db)
        results = {name: run(name, db) for name in PHASES}
    raw = results["raw"]
    print(f"\naudit and replay over {load['events']:,} events (PostgreSQL; load took "
          f"{load['seconds']:.0f} s, {load['per_second']:,.0f} events/s)")
    print(f"{'phase':<34}{'events/s':>12}{'raw scan':>12}{'ratio':>8}{'peak MiB':>10}")
    for name, label in LABELS.items():
        if name not in results:
            continue
        r = results[name]
        print(f"{label:<34}{r['per_second']:>12,.0f}{raw['per_second']:>12,.0f}"
              f"{r['per_second'] / raw['per_second']:>8.2f}{r['peak_rss_mib']:>10.0f}")
    if "replay" in results and results["replay"].get("peak_rss_mib_at_100k"):
        print(f"replay's peak RSS at position 100,000: "
              f"{results['replay']['peak_rss_mib_at_100k']:.0f} MiB; at the end: "
              f"{results['replay']['peak_rss_mib']:.0f} MiB")
    events = f"{load['events']:,} events"
    figures = []
    if "seal" in results:
        figures.append(Figure(f"seal, {events}", results["seal"]["per_second"],
                              raw["per_second"], "events/s", baseline_name="raw binary scan"))
    if "verify" in results:
        figures += [
            Figure(f"verify, {events}", results["verify"]["per_second"], raw["per_second"],
                   "events/s", baseline_name="raw binary scan", goal=0.25),
            Figure(f"verify peak RSS, {events}", results["verify"]["peak_rss_mib"],
                   raw["peak_rss_mib"], "MiB", baseline_name="raw scan's")]
    if "replay" in results:
        figures += [
            Figure(f"replay into a read model, {events}", results["replay"]["per_second"],
                   raw["per_second"], "events/s", baseline_name="raw binary scan", goal=0.5),
            Figure(f"replay peak RSS, {events}", results["replay"]["peak_rss_mib"],
                   raw["peak_rss_mib"], "MiB", baseline_name="raw scan's")]
    if "replay_some" in results:
        figures.append(Figure(f"replay into a view of 1 event kind in {PER_AGGREGATE}, {events}"
                              " (the rest MAC-checked, not decoded)",
                              results["replay_some"]["per_second"], raw["per_second"],
                              "events/s", baseline_name="raw binary scan"))
    record(figures)
    return figures


LABELS = {"seal": "seal (MAC + version checks, chain written)",
          "verify": "verify (MACs + seal chain, 1 snapshot)",
          "replay": "replay into a read model",
          "replay_some": "replay, view of 1 kind in 50",
          "raw": "raw scan (binary, as replay)",
          "raw_text": "raw scan (text format)"}


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--phase":
        print(json.dumps(phase(sys.argv[2], sys.argv[3])))
    else:
        main()
