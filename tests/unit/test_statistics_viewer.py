"""Who sees which figures: a viewer's filters on the facts, and which drill-downs stay inside
it (a street office into its communities, a platform into its stations, nobody sideways)."""

from __future__ import annotations

from services.statistics.application import Viewer
from services.statistics.store import Filter, OrganisationRow

STREET = OrganisationRow("s1", "STREET", "荷花池街道", "d1", "")
OTHER_STREET = OrganisationRow("s2", "STREET", "红梅街道", "d1", "")
COMMUNITY = OrganisationRow("c1", "COMMUNITY", "北大街社区", "s1", "")
DISTRICT = OrganisationRow("d1", "DISTRICT", "钟楼区", "city", "")
PLATFORM = OrganisationRow("p1", "PLATFORM", "骑迹外卖", "", "")
STATION = OrganisationRow("st1", "STATION", "荷花池站", "p1", "")


def test_a_street_office_sees_its_street_and_drills_into_its_communities_only():
    street = Viewer(street_ids=frozenset({"s1"}))
    assert street.filters() == [Filter("street_id", ("s1",))]
    assert street.reaches(STREET) and street.reaches(COMMUNITY)
    assert not street.reaches(OTHER_STREET)
    assert not street.reaches(DISTRICT)  # up the tree is more than its own
    assert not street.reaches(STATION)


def test_a_platform_sees_its_riders_and_drills_into_its_stations():
    platform = Viewer(platform_id="p1")
    assert platform.filters() == [Filter("platform_id", ("p1",))]
    assert platform.reaches(PLATFORM) and platform.reaches(STATION)
    assert not platform.reaches(STREET)


def test_the_city_sees_everything_unfiltered():
    city = Viewer(everything=True)
    assert city.filters() == []
    assert all(city.reaches(o) for o in (STREET, COMMUNITY, DISTRICT, PLATFORM, STATION))
