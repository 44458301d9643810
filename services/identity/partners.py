"""What each partner gave (多方资源): a read model of the services' published events, by the
organisation that gave it — the courses a provider published (training), the perks a merchant
offered (merchants). The partner register (the Partner aggregate) says what a partner offers;
this says what it gave, so that GetPartner answers both side by side.

Where it lives, and why: beside the riders' records in identity (feed_views.FeedView), for the
same reasons — identity holds the register, the view reads nothing but feeds, and it is rebuilt
from position 1 when the process starts. Only what a partner made public is kept: a draft
course or perk is its own business until published (the tenancy matrix holds drafts secret).

Donations: a sponsor's gifts to a street's care-package campaign (merchants'
RecordCareDonation), whoever the sponsor is — a merchant, an enterprise, an association. The
campaign's name and street come from its launch; the person who recorded the gift is not kept."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from services.identity.feed_views import FeedView, SourceState
from services.merchants import events as merchants
from services.training import events as training
from shared.followers import Feed, UpstreamEvent

SOURCES: dict[str, tuple[str, ...]] = {
    "training": (training.COURSE_DRAFTED, training.COURSE_PUBLISHED, training.COURSE_RETIRED),
    "merchants": (merchants.PERK_CREATED, merchants.PERK_PUBLISHED, merchants.PERK_PAUSED,
                  merchants.PERK_WITHDRAWN, merchants.CAMPAIGN_LAUNCHED,
                  merchants.CARE_DONATION_RECORDED),
}


@dataclass(frozen=True)
class CourseGiven:
    course_id: str
    title: str
    track: str  # training's Track name
    hours: Decimal
    status: str  # PUBLISHED or RETIRED (training's CourseStatus name)
    published_at: datetime


@dataclass(frozen=True)
class PerkGiven:
    perk_id: str
    title: str
    status: str  # PUBLISHED, PAUSED or WITHDRAWN (merchants' PerkStatus name)
    published_at: datetime


@dataclass(frozen=True)
class DonationGiven:
    donation_id: str
    campaign_id: str
    campaign_name: str
    street_id: str
    packages: int
    items: tuple[tuple[str, int], ...]  # (item, quantity), in the order recorded
    donated_at: datetime


@dataclass(frozen=True)
class Contributions:
    organisation_id: str
    courses: tuple[CourseGiven, ...]
    perks: tuple[PerkGiven, ...]
    sources: tuple[SourceState, ...]
    donations: tuple[DonationGiven, ...] = ()


@dataclass(slots=True)
class _Given:
    """One organisation's contributions, by id, in the order each was first published."""

    courses: dict[str, dict[str, Any]] = field(default_factory=dict)
    perks: dict[str, dict[str, Any]] = field(default_factory=dict)
    donations: list[DonationGiven] = field(default_factory=list)


class PartnerContributions(FeedView):
    upstream = "partner-contributions"
    reader = "identity.partner-contributions"
    log_name = "partner_contributions"
    shows_nothing = "the partner register does not show it"

    def __init__(self, feeds: Mapping[str, Feed], *, check_mac: Callable[..., bool]):
        super().__init__(feeds, SOURCES, check_mac=check_mac)
        # Every course and perk as drafted (who gave it, what it is), published or not yet.
        self._courses: dict[str, dict[str, Any]] = {}
        self._perks: dict[str, dict[str, Any]] = {}
        # Every care-package campaign launched: its name and street, for the gifts to it.
        self._campaigns: dict[str, tuple[str, str]] = {}
        self._given: dict[str, _Given] = {}

    def contributions(self, organisation_id: str) -> Contributions:
        """What the organisation gave, as of now (every upstream caught up first)."""
        sources = self.sources_now()
        with self._lock:
            given = self._given.get(organisation_id) or _Given()
            return Contributions(
                organisation_id=organisation_id,
                courses=tuple(CourseGiven(i, c["title"], c["track"], Decimal(c["hours"]),
                                          c["status"], c["published_at"])
                              for i, c in given.courses.items()),
                perks=tuple(PerkGiven(i, p["title"], p["status"], p["published_at"])
                            for i, p in given.perks.items()),
                sources=tuple(sources), donations=tuple(given.donations))

    # -------------------------------------------------------------- applying

    def _apply(self, event: UpstreamEvent) -> None:
        handler = _HANDLERS.get(event.topic)
        if handler is not None:
            handler(self, str(event.originator_id), event)

    def _course_drafted(self, ident: str, event: UpstreamEvent) -> None:
        s = event.state
        self._courses[ident] = {"provider_id": s["provider_id"], "title": s["title"],
                                "track": s["track"], "hours": str(s["hours"])}

    def _perk_created(self, ident: str, event: UpstreamEvent) -> None:
        s = event.state
        self._perks[ident] = {"merchant_id": s["merchant_id"], "title": s["title"]}

    def _campaign_launched(self, ident: str, event: UpstreamEvent) -> None:
        self._campaigns[ident] = (event.state["name"], event.state["street_id"])

    def _donation_recorded(self, ident: str, event: UpstreamEvent) -> None:
        s = event.state
        name, street_id = self._campaigns.get(ident, ("", ""))
        self._given.setdefault(s["sponsor_id"], _Given()).donations.append(DonationGiven(
            donation_id=s["donation_id"], campaign_id=ident, campaign_name=name,
            street_id=street_id, packages=int(s["packages"]),
            items=tuple((str(i["item"]), int(i["quantity"])) for i in s["items"]),
            donated_at=s["at"]))


def _course_status(status: str) -> Callable[[PartnerContributions, str, UpstreamEvent], None]:
    def apply(view: PartnerContributions, ident: str, event: UpstreamEvent) -> None:
        course = view._courses.get(ident)
        if course is None or not course["provider_id"]:
            return
        given = view._given.setdefault(course["provider_id"], _Given()).courses
        if ident in given:
            given[ident]["status"] = status
        elif status == "PUBLISHED":  # a draft retired unpublished was never given
            given[ident] = {**course, "status": status, "published_at": event.timestamp}
    return apply


def _perk_status(status: str) -> Callable[[PartnerContributions, str, UpstreamEvent], None]:
    def apply(view: PartnerContributions, ident: str, event: UpstreamEvent) -> None:
        perk = view._perks.get(ident)
        if perk is None:
            return
        given = view._given.setdefault(perk["merchant_id"], _Given()).perks
        if ident in given:  # paused and published again: the first publication stands
            given[ident]["status"] = status
        elif status == "PUBLISHED":  # a draft withdrawn unpublished was never offered
            given[ident] = {**perk, "status": status, "published_at": event.timestamp}
    return apply


_HANDLERS: dict[str, Callable[[PartnerContributions, str, UpstreamEvent], None]] = {
    training.COURSE_DRAFTED: PartnerContributions._course_drafted,
    training.COURSE_PUBLISHED: _course_status("PUBLISHED"),
    training.COURSE_RETIRED: _course_status("RETIRED"),
    merchants.PERK_CREATED: PartnerContributions._perk_created,
    merchants.PERK_PUBLISHED: _perk_status("PUBLISHED"),
    merchants.PERK_PAUSED: _perk_status("PAUSED"),
    merchants.PERK_WITHDRAWN: _perk_status("WITHDRAWN"),
    merchants.CAMPAIGN_LAUNCHED: PartnerContributions._campaign_launched,
    merchants.CARE_DONATION_RECORDED: PartnerContributions._donation_recorded,
}
