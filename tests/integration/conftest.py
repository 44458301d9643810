"""Fixtures of the integration tier shared between modules."""

# badges over a real store (its city, its followers, a clock the test moves): the badges tests
# and the Open Badges credential tests tell their stories in it.
from tests.integration.test_badges_app import world  # noqa: F401

# Every service in one process, taking snapshots every few versions: the perk's and the care
# campaign's snapshot tests.
from tests.snapshots import small_steps  # noqa: F401
