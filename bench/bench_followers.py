"""How fast a follower applies its upstream's log, beside how fast the upstream accepts the
commands that write it, in the same run (issue 20: a follower must apply at least 5× the rate
its upstream accepts commands, or its lag grows without end under load).

Upstream: identity on PostgreSQL, in this process; its rate is RegisterRider through the
application (no gRPC: faster than its server accepts, so a harder bar) from BENCH_CLIENTS
threads (default 8), BENCH_FOLLOWER_RIDERS riders (default 3,000). Each command writes the
rider's event and its request record: half of the log's positions are of a topic no follower
reads.

Follower: training's follower of identity, its real policy, reading identity's log in this
process (LocalFeed: the read the FeedService serves, without the network), timed from its
first read until it has caught up; a new training store each round. Two streams:
- reacting: every rider registered is a learner to create (a write per upstream event);
- passing over: the same log read again by a training that knows every learner already (as
  after a restart that read a tail again, or a topic a policy mostly ignores): no writes.
Each beside the same follower applying one event per transaction with a tracking record each
(the way before issue 20: `Follower.process` for every event), alternating, median of
BENCH_ROUNDS rounds. The figure is positions of identity's log per second."""

from __future__ import annotations

import os
import statistics
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from bench.bench_integrity import MASTER_KEY, env_for
from bench.common import Figure, print_figures, scratch_database
from tests.city import build_city, in_application

if TYPE_CHECKING:  # imported where used at run time, as the functions below do
    from services.identity.application import IdentityApplication
    from services.training.application import TrainingApplication
    from shared.followers import Follower

RIDERS = int(os.environ.get("BENCH_FOLLOWER_RIDERS", "3000"))
# BENCH_CLIENTS is a list for the other benches (`make bench --quick` sets "1,8"): the
# upstream's rate is taken at its largest.
CLIENTS = max(int(c) for c in os.environ.get("BENCH_CLIENTS", "8").split(","))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
# Issue 20: a follower applies at least five times what its upstream accepts.
GOAL = 5.0


def register(identity: IdentityApplication) -> float:
    """Registers RIDERS riders from CLIENTS threads; RegisterRider per second."""
    from shared.context import Actor, RequestContext, acting_as

    city = build_city(in_application(identity))
    platform = Actor("bench-platform", frozenset({"platform"}))

    def one(n: int) -> None:
        with acting_as(RequestContext(actor=platform, request_id=f"r-{n}")):
            identity.register_rider(
                platform_id=city.platform, platform_rider_id=f"R{n}", name=f"骑手{n}",
                phone=f"138{n:08d}", national_id="", home_street_id=city.street,
                station_id=city.station)

    started = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(one, range(RIDERS)))
    return RIDERS / (time.perf_counter() - started)


def follower_class(batched: bool) -> type[Follower]:
    from shared.followers import Follower, UpstreamEvent

    if batched:
        return Follower

    class OneByOne(Follower):
        """Before issue 20: one transaction and one tracking record per upstream event."""

        def _apply(self, events: list[UpstreamEvent], tracked: int) -> int | None:
            for event in events:
                self.process(event)
            return len(events)

    return OneByOne


def follow(identity: IdentityApplication, training: TrainingApplication, batched: bool, name: str,
           topics: tuple[str, ...]) -> tuple[float, int]:
    """(identity's positions per second through the follower, how many events it applied)."""
    from shared.followers import LocalFeed

    # Wired as training wires its own (the learners' existence asked once per batch).
    follower = follower_class(batched)(training, LocalFeed(identity, name),
                                       training.follow_identity, topics=topics,
                                       looks_up=training.identity_learners)
    started = time.perf_counter()
    done = follower.run_once()
    seconds = time.perf_counter() - started
    return identity.last_position() / seconds, done


def new_training(db: str) -> TrainingApplication:
    from services.training.application import TrainingApplication
    from shared.config import load_settings
    return TrainingApplication(load_settings("training", env_for(
        db, f"training_{uuid.uuid4().hex[:8]}")), MASTER_KEY)


def main() -> list[Figure]:
    import structlog

    from services.identity import events as identity_events
    from services.identity.application import IdentityApplication
    from services.training.application import TrainingApplication
    from shared.config import load_settings
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    with scratch_database() as db:
        identity = IdentityApplication(load_settings("identity", env_for(db, "identity")),
                                       MASTER_KEY)
        print(f"registering {RIDERS:,} riders into identity from {CLIENTS} threads ...",
              flush=True)
        upstream = register(identity)
        positions = identity.last_position()
        print(f"  {upstream:,.0f} RegisterRider/s; {positions:,} positions", flush=True)
        rates: dict[str, list[float]] = {k: [] for k in
                                         ("react", "react_before", "pass", "pass_before")}
        applied = 0
        for round_ in range(ROUNDS):
            for batched in (True, False):
                key = "" if batched else "_before"
                training = new_training(db)
                try:
                    rate, applied = follow(identity, training, batched, "identity",
                                           TrainingApplication.IDENTITY_TOPICS)
                    rates["react" + key].append(rate)
                    # Read again under another name, the registrations alone (the city's
                    # organisations would be references made twice): every learner is
                    # known, nothing to do.
                    rate, _ = follow(identity, training, batched, f"identity-again-{round_}",
                                     (identity_events.RIDER_REGISTERED,))
                    rates["pass" + key].append(rate)
                finally:
                    training.close()
        identity.close()
    median = {k: statistics.median(v) for k, v in rates.items()}
    figures = [
        Figure("identity RegisterRider (in-process, the upstream's rate)", upstream,
               upstream, "ops/s", baseline_name="itself"),
        Figure(f"follower reacting (training <- identity, {applied:,} learners created)",
               median["react"], upstream, "positions/s",
               baseline_name="identity RegisterRider/s", goal=GOAL),
        Figure("  same, one transaction per event (before)", median["react_before"], upstream,
               "positions/s", baseline_name="identity RegisterRider/s", goal=GOAL),
        Figure("follower passing over (every learner known)", median["pass"], upstream,
               "positions/s", baseline_name="identity RegisterRider/s", goal=GOAL),
        Figure("  same, one transaction per event (before)", median["pass_before"], upstream,
               "positions/s", baseline_name="identity RegisterRider/s", goal=GOAL),
    ]
    # Like for like: one RegisterRider writes more than one position (its event and its
    # request record), so positions/s over commands/s flatters the follower. In the commands'
    # worth of log it applies per second, the lag is what it is.
    per_command = positions / RIDERS
    figures += [
        Figure("follower reacting, in commands' worth of log", median["react"] / per_command,
               upstream, "commands/s", baseline_name="identity RegisterRider/s", goal=GOAL),
        Figure("follower passing over, in commands' worth of log",
               median["pass"] / per_command, upstream, "commands/s",
               baseline_name="identity RegisterRider/s", goal=GOAL),
    ]
    print_figures(f"followers beside their upstream ({positions:,} identity positions, "
                  f"{RIDERS:,} riders, median of {ROUNDS} alternating rounds)", figures)
    print(f"batched ÷ one by one: reacting {median['react'] / median['react_before']:.1f}×, "
          f"passing over {median['pass'] / median['pass_before']:.1f}×")
    return figures


if __name__ == "__main__":
    main()
