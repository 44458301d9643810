"""References to what another service owns, noted from its feed under the owner's id.

A service that must check "does this street / service space / organisation exist" keeps a
Reference per upstream thing, stored by its follower with tracking, so the check is local,
replayable, and never a call to the owner on the request path."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from eventsourcing.domain import Aggregate, event

from shared.errors import Violations, check_id

_NS = uuid.UUID("5f0c3c55-4a34-4bf1-a8f5-6f8f3c2a7d01")


class Reference(Aggregate):
    @staticmethod
    def create_id(upstream_id: str, **_: Any) -> uuid.UUID:
        # Derived, not the upstream id itself: the service may keep an aggregate of its own
        # under the upstream id (merchants keeps its Merchant under the organisation's id).
        return uuid.uuid5(_NS, f"reference\n{upstream_id}")

    @event("Noted")
    def __init__(self, upstream_id: str, kind: str, name: str, parent_id: str = ""):
        self.upstream_id = upstream_id
        self.kind = kind
        self.name = name
        # Where the owner placed it (e.g. the street a merchant belongs to), if anywhere.
        self.parent_id = parent_id


def require_reference(app: Any, upstream_id: str, field: str, kind: str,
                      catch_up: Callable[[], None] | None) -> Reference:
    """The noted reference of that kind; NotFound when the owner never told us of it (after
    catching up once, so a thing created a moment ago is found), INVALID_ARGUMENT for an id
    that is malformed or names a thing of another kind."""
    violations = Violations()
    reference = note_reference(app, violations, upstream_id, field, kind, catch_up)
    violations.raise_if_any()
    assert reference is not None
    return reference


def note_reference(app: Any, violations: Violations, upstream_id: str, field: str, kind: str,
                   catch_up: Callable[[], None] | None) -> Reference | None:
    """As require_reference, but what is wrong is added to `violations` (with the request's
    other faults, for one answer) and None returned instead of raising."""
    if not check_id(violations, field, upstream_id):
        return None
    ident = Reference.create_id(upstream_id)
    if not app.exists(ident) and catch_up is not None:
        catch_up()
    if not app.exists(ident):
        violations.missing(field, kind, upstream_id)
        return None
    reference = app.get(ident, Reference, kind)
    if reference.kind != kind:
        article = _article(kind)
        violations.add(field, f"is not {article} {kind} but {_article(reference.kind)} "
                              f"{reference.kind}",
                       f"NOT_{article.upper()}_{kind.upper().replace(' ', '_')}")
        return None
    return reference


def _article(noun: str) -> str:
    return "an" if noun[:1].lower() in "aeiou" else "a"
