"""What the three rates cost (issue 17): GetServiceRates of one street over a period of N
reports, in process on the embedded default (SQLite in a scratch folder), for each N of
BENCH_RATES_REPORTS.

Set-up, for each N: identity and governance, a city, a district, a street and its police;
N reports made in the street (each routed to the police). Then `reported` is taken — the
moment the month is "reported" — and afterwards every report is acknowledged and every other
one worked and resolved: each report has changed since `reported`.

Figures, p50 and p99 of BENCH_RATES_CALLS calls each, in milliseconds:
- rates now: the street's rates as the log stands — the candidate reports found in the view,
  each taken from the aggregate cache once checked against the store;
- rates as of `reported`: the same question as the log stood then — every report changed
  since, so each is rebuilt from its own events recorded by then;
- raw baseline, same run: reading the same reports' stored events only (one select per report,
  no mapping, nothing decided) — what any per-report read of the log pays."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from bench.common import Figure, print_figures
from services.governance.application import GovernanceApplication
from services.governance.domain.values import Category, Location, ReportKind
from services.identity.application import IdentityApplication
from shared.config import load_settings
from shared.context import Actor, RequestContext, acting_as
from shared.followers import Follower, LocalFeed
from tests.city import build_city, in_application

SIZES = [int(n) for n in os.environ.get("BENCH_RATES_REPORTS", "2000,10000").split(",")]
CALLS = int(os.environ.get("BENCH_RATES_CALLS", "20"))
MASTER_KEY = os.urandom(32)
# Reports 300 m apart are never one incident (the window is 200 m).
STEP_DEGREES = 300 / 111_195


def acting(principal: str, role: str, organisation_id: str = "") -> acting_as:
    return acting_as(RequestContext(actor=Actor(principal=principal, roles=frozenset({role}),
                                                organisation_id=organisation_id),
                                    rpc="bench"))


def percentile(samples: list[float], share: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def timed(call: Callable[[], object], calls: int) -> list[float]:
    """Milliseconds of each of `calls` calls, after one to warm up."""
    call()
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def measure(reports: int) -> list[Figure]:
    data = tempfile.mkdtemp(prefix="qiji-bench-rates-")
    env = {"QIJI_PERSISTENCE": "sqlite", "QIJI_DATA_DIR": data}
    identity = IdentityApplication(load_settings("identity", env), MASTER_KEY)
    governance = GovernanceApplication(load_settings("governance", env), MASTER_KEY)
    governance.identity_follower = Follower(
        governance, LocalFeed(identity), governance.follow_identity,
        topics=GovernanceApplication.IDENTITY_TOPICS)
    made = build_city(in_application(identity))
    street, platform, station = made.street, made.platform, made.station
    police = made.add("police", "DEPARTMENT", "钟楼公安分局", "district", "PUBLIC_SECURITY")
    with acting("platform", "platform", platform):
        rider = identity.register_rider(
            platform_id=platform, platform_rider_id="R1", name="骑手", phone="13800000000",
            national_id="", home_street_id=street, station_id=station)["rider_id"]
        identity.verify_rider(rider_id=rider)
    governance.identity_follower.run_once()

    started = time.perf_counter()
    start = datetime.now(UTC)
    ids = []
    with acting("platform", "platform", platform):
        for n in range(reports):
            ids.append(governance.submit_report(
                rider_id=rider, kind=ReportKind.EMERGENCY, category=Category.PUBLIC_SECURITY,
                location=Location(street, 20 + n * STEP_DEGREES, 120), text="路口有人斗殴",
                attachment_refs=[], observed_at=None)["report_id"])
    reported = datetime.now(UTC)
    with acting("police", "department", police):
        for n, report_id in enumerate(ids):
            governance.acknowledge_assignment(report_id=report_id, department_id=police)
            if n % 2 == 0:
                governance.start_assignment_work(report_id=report_id, department_id=police,
                                                 note="")
                governance.resolve_assignment(report_id=report_id, department_id=police,
                                              resolution="已处置")
    print(f"set-up: {reports} reports made, acknowledged, half resolved in "
          f"{time.perf_counter() - started:.1f} s", flush=True)
    end = datetime.now(UTC) + timedelta(hours=1)

    def rates(as_of: datetime | None) -> Callable[[], object]:
        def call() -> object:
            with acting("city", "city_admin"):
                found = governance.service_rates(department_id="", street_id=street,
                                                 district_id="", start=start, end=end,
                                                 as_of=as_of)
            expected = (reports, reports) if as_of is None else (reports, 0)
            assert (found.rates.assignments, found.rates.response.denominator) == expected, \
                found.rates
            return found
        return call

    governance.views.catch_up()
    candidates = [uuid.UUID(r) for r in governance.views.routed_reports(
        street_ids=[street], start=start, end=end)]
    assert len(candidates) == reports

    def raw() -> object:
        return [governance.recorder.select_events(ident) for ident in candidates]

    baseline = timed(raw, CALLS)
    now = timed(rates(None), CALLS)
    then = timed(rates(reported), CALLS)
    governance.close()
    identity.close()
    figures = []
    for name, samples in (("now", now), (f"as of before {reports} changes", then)):
        for label, share in (("p50", 0.5), ("p99", 0.99)):
            figures.append(Figure(
                f"rates of a street, {reports} reports, {name}, {label}",
                percentile(samples, share), percentile(baseline, share), unit="ms",
                baseline_name="reading the same reports' events only"))
    print(f"  ({reports} reports: now mean {statistics.fmean(now):.1f} ms, as of mean "
          f"{statistics.fmean(then):.1f} ms, raw mean {statistics.fmean(baseline):.1f} ms)")
    return figures


def main() -> None:
    figures = []
    for reports in SIZES:
        figures += measure(reports)
    print_figures(f"the three rates (SQLite, in process; {CALLS} calls each)", figures)


if __name__ == "__main__":
    main()
