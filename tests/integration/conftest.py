"""Fixtures of the integration tier shared between modules."""

# badges over a real store (its city, its followers, a clock the test moves): the badges tests
# and the Open Badges credential tests tell their stories in it.
from tests.integration.test_badges_app import world  # noqa: F401
