"""References to what another service owns, noted from its feed under the owner's id.

A service that must check "does this street / service space / organisation exist" keeps a
Reference per upstream thing, stored by its follower with tracking, so the check is local,
replayable, and never a call to the owner on the request path.

A reference of the wrong kind is told one way in every service: ORGANISATION_KIND_NOT_ALLOWED
when the field takes an organisation and names one of another kind (both named as the wire
names organisation kinds), REFERENCE_KIND_NOT_ALLOWED when it names another kind of thing
altogether (both named by their resource types, qiji.city/ServiceSpace)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar

from eventsourcing.domain import Aggregate, event

from shared.errors import (
    ORGANISATION_KIND_NOT_ALLOWED,
    REFERENCE_KIND_NOT_ALLOWED,
    Violations,
    check_id,
)
from shared.wire import resource_type

_NS = uuid.UUID("5f0c3c55-4a34-4bf1-a8f5-6f8f3c2a7d01")
# The kinds of Reference that are organisations, and which of identity's organisation kinds
# each is: a "street" reference is an organisation of kind STREET. "organisation" is whichever
# kind the service does not note apart (badges notes communities apart from the rest; training
# notes every organisation alike): its own kind is asked of the tenancy directory.
ORGANISATION_REFERENCES = {"street": "STREET", "merchant": "MERCHANT",
                           "community": "COMMUNITY", "business_area": "BUSINESS_AREA",
                           "organisation": ""}


class Reference(Aggregate):
    if TYPE_CHECKING:  # the event classes @event makes (for readers' isinstance)
        Noted: ClassVar[type[Any]]

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


def organisation_kind_wire_name(kind: str) -> str:
    """identity's "STREET" → "ORGANISATION_KIND_STREET", as a caller sends it."""
    return f"ORGANISATION_KIND_{kind}"


def organisation_kind_not_allowed(violations: Violations, field: str, found: str,
                                  allowed: str | Iterable[str] = (), *,
                                  not_allowed: str = "") -> None:
    """`field` names an organisation of kind `found` (identity's spelling, "DISTRICT"; empty
    when not known here) where it takes one of `allowed`: ORGANISATION_KIND_NOT_ALLOWED,
    "must be an ORGANISATION_KIND_STREET, not an ORGANISATION_KIND_DISTRICT". `not_allowed`
    says instead what an organisation of that kind may not do, for a field whose rule is
    not a list of kinds ("may not issue badges": "an ORGANISATION_KIND_COMMUNITY may not
    issue badges")."""
    this = organisation_kind_wire_name(found) if found else "organisation of that kind"
    if not_allowed:
        violations.add(field, f"an {this} {not_allowed}", ORGANISATION_KIND_NOT_ALLOWED)
        return
    kinds = sorted([allowed] if isinstance(allowed, str) else allowed)
    wanted = " or ".join(organisation_kind_wire_name(k) for k in kinds)
    violations.add(field, f"must be an {wanted}, not an {this}"
                   if found else f"must be an {wanted}", ORGANISATION_KIND_NOT_ALLOWED)


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
                   catch_up: Callable[[], None] | None, *, not_allowed: str = ""
                   ) -> Reference | None:
    """As require_reference, but what is wrong is added to `violations` (with the request's
    other faults, for one answer) and None returned instead of raising. `not_allowed`: for a
    field taking an "organisation", what an organisation noted apart may not do ("may not
    issue badges", for a community named as a badge's issuer)."""
    if not check_id(violations, field, upstream_id):
        return None
    ident = Reference.create_id(upstream_id)
    if not app.exists(ident) and catch_up is not None:
        catch_up()
    if not app.exists(ident):
        # An organisation of a kind this service does not note at all (merchants notes
        # streets and merchants only) is still an organisation of the wrong kind, not nothing.
        found = _organisation_kind(app, upstream_id) if kind in ORGANISATION_REFERENCES else ""
        if found and found != ORGANISATION_REFERENCES[kind]:
            organisation_kind_not_allowed(violations, field, found, ORGANISATION_REFERENCES[kind],
                                          not_allowed=not_allowed)
        else:
            violations.missing(field, kind, upstream_id)
        return None
    reference = app.get(ident, Reference, kind)
    if reference.kind == kind:
        return reference
    if kind in ORGANISATION_REFERENCES and reference.kind in ORGANISATION_REFERENCES:
        found = ORGANISATION_REFERENCES[reference.kind] or _organisation_kind(app, upstream_id)
        organisation_kind_not_allowed(violations, field, found,
                                      ORGANISATION_REFERENCES[kind] or (),
                                      not_allowed=not_allowed or (
                                          "" if ORGANISATION_REFERENCES[kind]
                                          else "may not be named here"))
    else:
        violations.add(field, f"must name a {resource_type(kind)}, not a "
                       f"{resource_type(reference.kind)}", REFERENCE_KIND_NOT_ALLOWED)
    return None


def _organisation_kind(app: Any, upstream_id: str) -> str:
    """identity's kind of the organisation `upstream_id`, from the tenancy directory (every
    organisation, public, immutable); empty when it is none (or the app has no directory)."""
    directory = getattr(app, "directory", None)
    entry = directory.organisation(upstream_id) if directory is not None else None
    return entry.kind if entry is not None else ""
