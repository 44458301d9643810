"""What a new badge class costs badges (issue 22): the re-evaluation job that awards every rider
who already meets the class's criteria, batch by batch, each batch one save.

In process, on the embedded default (SQLite in a scratch folder): identity registers and
verifies RIDERS riders, badges follows identity's log, and each rider's community confirms two
hours of volunteer service. Then the city creates a badge class asking for 2 hours, which every
rider meets, and the job runs to its end.

- job: riders evaluated per second (each rider record read, the criteria evaluated, the award
  and the record saved with the job's progress, 200 riders a save);
- raw baseline, same run: only reading every rider record from the store (what any walk over
  the riders pays before deciding anything)."""

from __future__ import annotations

import os
import tempfile
import time
from datetime import UTC, datetime, timedelta

from bench.common import Figure, print_figures
from services.badges.application import BadgesApplication
from services.badges.domain.model import RiderRecord
from services.identity.application import IdentityApplication
from shared.config import load_settings
from shared.context import Actor, RequestContext, acting_as
from shared.followers import Follower, LocalFeed
from tests.city import build_city, in_application

RIDERS = int(os.environ.get("BENCH_REEVALUATION_RIDERS", "2000"))
MASTER_KEY = os.urandom(32)


def acting(principal: str, role: str, organisation_id: str = "") -> acting_as:
    return acting_as(RequestContext(actor=Actor(principal=principal, roles=frozenset({role}),
                                                organisation_id=organisation_id),
                                    rpc="bench"))


def main() -> None:
    data = tempfile.mkdtemp(prefix="qiji-bench-reevaluation-")
    env = {"QIJI_PERSISTENCE": "sqlite", "QIJI_DATA_DIR": data}
    identity = IdentityApplication(load_settings("identity", env), MASTER_KEY)
    badges = BadgesApplication(load_settings("badges", env), MASTER_KEY)
    follower = Follower(badges, LocalFeed(identity), badges.follow_identity,
                        topics=BadgesApplication.IDENTITY_TOPICS)
    badges.identity_follower = follower
    made = build_city(in_application(identity), also=("community",))
    city, street, community = made.city, made.street, made.community
    platform, station = made.platform, made.station

    started = time.perf_counter()
    riders = []
    with acting("platform", "platform", platform):
        for n in range(RIDERS):
            rider = identity.register_rider(
                platform_id=platform, platform_rider_id=f"R{n}", name="骑手",
                phone=f"138{n:08d}", national_id="", home_street_id=street,
                station_id=station)["rider_id"]
            identity.verify_rider(rider_id=rider)
            riders.append(rider)
    follower.run_once()
    when = datetime.now(UTC) - timedelta(hours=3)
    for rider in riders:
        with acting("platform", "platform", platform):
            shift = badges.log_volunteer_service(rider_id=rider, community_id=community,
                                                 activity="助老送餐", started_at=when,
                                                 hours="2")["shift_id"]
        with acting("community", "community", community):
            badges.confirm_volunteer_service(shift_id=shift)
    print(f"set-up: {RIDERS} riders registered, verified and served 2 h in "
          f"{time.perf_counter() - started:.1f} s", flush=True)

    # Raw baseline: read every rider record, decide nothing, save nothing.
    started = time.perf_counter()
    for rider in riders:
        badges.repository.get(RiderRecord.create_id(rider))
    raw = RIDERS / (time.perf_counter() - started)

    with acting("city", "city_admin"):
        badges.create_badge_class(
            name="助老之星", description="两小时助老服务", image_url="https://qiji.example.org/b.png",
            issuer_id=city, criteria={
                "min_volunteer_hours": "2", "required_course_ids": [], "track_requirements": [],
                "min_verified_reports": 0, "within_days": 0, "narrative": "两小时志愿服务"},
            validity_days=0)
    started = time.perf_counter()
    with acting("badges-reevaluation-job", "service"):
        awarded = badges.run_reevaluations()
    job = RIDERS / (time.perf_counter() - started)
    assert awarded == RIDERS, f"the job awarded {awarded} of {RIDERS} riders"

    print_figures("re-evaluation of a new badge class (SQLite, in process)", [
        Figure("re-evaluation: riders awarded", job, raw, unit="riders/s",
               baseline_name="reading each rider record only"),
    ])
    badges.close()
    identity.close()


if __name__ == "__main__":
    main()
