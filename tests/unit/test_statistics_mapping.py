"""The rules every service's mappers share: where a rider puts a fact, and hours kept exactly."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from services.statistics.domain.facts import Where
from services.statistics.domain.mapping import (
    hundredths,
    kept_moment,
    kept_where,
    moment_kept,
    rider_where,
    where_kept,
)
from shared.tenancy import RiderEntry


class Directory:
    def __init__(self, riders):
        self.riders = riders

    def rider(self, ident):
        return self.riders.get(ident)

    def organisation(self, ident):
        return None

    def service_space_street(self, ident):
        return None


RIDERS = Directory({"r1": RiderEntry(platform_id="p1", home_street_id="home",
                                     station_id="s1")})


def test_a_fact_with_a_place_lies_there_else_in_the_riders_home_street():
    assert rider_where(RIDERS, "r1") == Where(street_id="home", platform_id="p1",
                                              station_id="s1")
    assert rider_where(RIDERS, "r1", street_id="where-it-happened").street_id \
        == "where-it-happened"
    at_community = rider_where(RIDERS, "r1", community_id="c1")
    assert (at_community.street_id, at_community.community_id) == ("", "c1")


def test_a_fact_the_platform_must_not_see_carries_neither_platform_nor_station():
    assert rider_where(RIDERS, "r1", platform_sees=False) == Where(street_id="home")


def test_a_rider_the_directory_does_not_know_leaves_only_the_place_given():
    assert rider_where(RIDERS, "nobody", street_id="x") == Where(street_id="x")
    assert rider_where(RIDERS, "nobody") == Where()


def test_hours_are_kept_in_exact_hundredths():
    assert [hundredths(h) for h in ("2.5", "0.25", "1.33", "24")] == [250, 25, 133, 2400]
    assert hundredths(Decimal("1.335")) == 134  # finer than badges stores: half up


def test_places_and_moments_survive_memory_as_json():
    where = Where(street_id="s", merchant_id="m", platform_id="p")
    assert where_kept(kept_where(where)) == where
    assert where_kept(None) == Where()
    at = datetime(2026, 3, 31, 15, 50, tzinfo=UTC)
    assert moment_kept(kept_moment(at), datetime.now(UTC)) == at
    assert moment_kept("", at) == at
