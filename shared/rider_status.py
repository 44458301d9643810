"""What a service that follows identity knows of a rider's standing, and the one rule on it."""

from __future__ import annotations

from shared.errors import FailedPrecondition


class FollowedRiderStatus:
    """A mixin for aggregates that note identity's rider-status events (verified, suspended,
    left) through `services.identity.events.rider_flags_after`: the rule for "active" lives
    here once, not in each service."""

    verified: bool
    suspended: bool
    left: bool

    @property
    def is_active(self) -> bool:
        return self.verified and not self.suspended and not self.left

    def require_active(self) -> None:
        if not self.is_active:
            state = ("has left" if self.left else "is suspended" if self.suspended
                     else "is not verified yet")
            raise FailedPrecondition(f"the rider {state}", reason="RIDER_NOT_ACTIVE")
