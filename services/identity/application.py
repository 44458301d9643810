"""The identity service layer: one command or query per use case; get → decide → save."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from eventsourcing.application import ProcessingEvent

from services.governance import events as governance_events
from services.identity.domain.friendly import (
    AREA_KINDS,
    MAX_ATTESTATION,
    MAX_BRAND_NAME,
    CoBuildingSignature,
    FriendlyMark,
    FriendlyMarkCriteria,
    FriendlyMarkStatus,
    MerchantStanding,
    check_criteria,
    evaluate,
)
from services.identity.domain.model import (
    Organisation,
    Partner,
    Rider,
    ServiceSpace,
    SpaceUseDay,
    check_registration,
    check_use,
)
from services.identity.domain.values import (
    MAX_NAME_LENGTH,
    MAX_TEXT_LENGTH,
    MAX_USE_PERIOD_DAYS,
    PARENT_KINDS,
    PARTNER_ORGANISATION_KINDS,
    STATION_OF_ANOTHER_PLATFORM,
    Amenity,
    CareerMilestoneKind,
    ConsentScope,
    DepartmentFunction,
    OfferKind,
    OrganisationKind,
    PartnerCategory,
    RiderStatus,
)
from services.identity.partners import SOURCES as PARTNER_SOURCES
from services.identity.partners import Contributions, PartnerContributions
from services.identity.rider_record import SOURCES as RECORD_SOURCES
from services.identity.rider_record import RiderRecord, RiderRecords
from services.identity.views import IdentityViews
from services.merchants import events as merchants_events
from shared import context, masking
from shared.application import CommandResult, Outcome, QijiApplication
from shared.config import Settings
from shared.errors import (
    ENUM_VALUE_REQUIRED,
    FIELD_REQUIRED,
    VALUE_OUT_OF_RANGE,
    AlreadyExists,
    FailedPrecondition,
    NotFound,
    Unavailable,
    Violations,
    check_id,
    check_reason,
    check_text,
)
from shared.followers import FeedSource, Follower, LocalFeed, UpstreamEvent, follower_of
from shared.paging import listed
from shared.personal_data import ERASED, PersonalDataErased
from shared.references import organisation_kind_not_allowed
from shared.tenancy import TenancyDirectory
from shared.values import (
    GeoPoint,
    check_period,
    city_day,
    parse_day,
    sorted_hours,
    wgs84_location,
)
from shared.wire import must_be_specified


@dataclass(frozen=True)
class OrganisationView:
    organisation_id: str
    kind: OrganisationKind
    name: str
    parent_id: str
    department_function: DepartmentFunction | None
    created_at: datetime
    version: int


@dataclass(frozen=True)
class PartnerView:
    """A partner's profile as it stood at `version`, with what it gave (as of now; None when
    the process keeps no contributions, or when an earlier version is read)."""

    organisation_id: str
    organisation_name: str
    organisation_kind: OrganisationKind
    category: PartnerCategory
    offers: list[tuple[OfferKind, str]]
    registered_at: datetime
    revised_at: datetime
    version: int
    contributions: Contributions | None


@dataclass(frozen=True)
class ServiceSpaceView:
    service_space_id: str
    street_id: str
    name: str
    address: str
    amenities: list[Amenity]
    opening_hours: list[dict[str, Any]]
    created_at: datetime
    version: int
    # {"latitude", "longitude"} in WGS-84 degrees; None: never given.
    location: dict[str, float] | None = None


@dataclass(frozen=True)
class SpaceUseView:
    """A space's use over a period: the days with any use, in order, each with its counts by
    amenity, and the period's totals by amenity. Counts only: no one who used it."""

    service_space_id: str
    name: str
    street_id: str
    from_day: date
    to_day: date
    days: list[tuple[date, dict[Amenity, int]]]
    totals: dict[Amenity, int]


@dataclass(frozen=True)
class RiderView:
    rider_id: str
    platform_id: str
    platform_rider_id: str
    name: str
    phone: str
    national_id: str
    personal_data_erased: bool
    home_street_id: str
    station_id: str
    status: RiderStatus
    status_reason: str
    registered_at: datetime
    verified_at: datetime | None
    milestones: list[dict[str, Any]] = field(default_factory=list)
    consents: list[dict[str, Any]] = field(default_factory=list)
    version: int = 0


@dataclass(frozen=True)
class CriteriaView:
    """One version of the friendly-mark criteria of one kind of area (see
    domain/friendly.py)."""

    version: int
    min_service_spaces: int
    space_amenities: list[Amenity]
    min_friendly_merchants: int
    co_building_pledge: bool
    street_attestation: bool
    set_at: datetime
    area_kind: OrganisationKind = OrganisationKind.COMMUNITY


@dataclass(frozen=True)
class FriendlyMarkView:
    mark_id: str
    area_id: str
    area_kind: OrganisationKind
    area_name: str
    street_id: str
    brand_name: str
    street_attestation: str
    status: FriendlyMarkStatus
    applied_at: datetime
    criteria_version: int
    # Each criterion judged at the award: criterion, required, found, met, evidence (kind, id,
    # name, source, position) — empty until awarded.
    results: list[dict[str, Any]]
    awarded_at: datetime | None
    withdrawn_at: datetime | None
    withdrawal_reason: str
    version: int


class IdentityApplication(QijiApplication):
    name = "identity"

    # What the friendly marks follow of other services' feeds: merchants' standing (approved
    # friendly merchants of a street) and organisations' signatures of the co-building pledge.
    MERCHANTS_TOPICS = merchants_events.MERCHANT_STANDING_TOPICS
    GOVERNANCE_TOPICS = (governance_events.CO_BUILDING_PLEDGE_SIGNED,)

    def __init__(self, settings: Settings, master_key: bytes,
                 clock: Callable[[], datetime] | None = None, *,
                 feeds: FeedSource | None = None):
        super().__init__(settings, master_key)
        self.clock = clock or (lambda: datetime.now(UTC))
        self.views = IdentityViews(self)
        self.views.catch_up()
        # identity owns the riders and organisations: its directory reads its own log.
        self.directory = TenancyDirectory(LocalFeed(self))
        # Without feeds (a tool, or a test that wires them itself), none of what follows.
        # Riders' records, read from the other services' feeds.
        self.records: RiderRecords | None = None
        # What partners gave, read from training's and merchants' feeds again, by a view of its
        # own (a second reader of two feeds, against one view that answers two unrelated
        # questions).
        self.partners: PartnerContributions | None = None
        if feeds is not None:
            self.records = RiderRecords({name: feeds(name) for name in RECORD_SOURCES},
                                        check_mac=self.event_mac.check, master_key=master_key,
                                        clock=self.clock)
            self.partners = PartnerContributions(
                {name: feeds(name) for name in PARTNER_SOURCES}, check_mac=self.event_mac.check)
        # The friendly marks' evidence: merchants' standing and co-building signatures, stored
        # in identity's own log at tracked positions (an award's evidence must outlive any
        # view), by the followers of merchants' and governance's feeds.
        self.merchants_follower: Follower | None = follower_of(
            self, feeds, "merchants", self.follow_merchants, self.MERCHANTS_TOPICS)
        self.governance_follower: Follower | None = follower_of(
            self, feeds, "governance", self.follow_governance, self.GOVERNANCE_TOPICS)

    # ------------------------------------------------------------------ organisations

    def create_organisation(self, *, kind: OrganisationKind | None, name: str, parent_id: str,
                            department_function: DepartmentFunction | None,
                            violations: Violations | None = None) -> CommandResult:
        """`violations`, here and in every command and list that takes them: what the entry
        point already found wrong in the request (an enum number the contract does not define,
        a timestamp it could not read), reported with the rest in one answer."""
        given = violations.items if violations is not None else []

        def decide() -> Outcome:
            violations = Violations(list(given))
            parent = None
            # A kind that stands without a parent is told so whatever its parent_id names.
            if parent_id and (kind is None or any(PARENT_KINDS[kind])):
                parent = self._note_organisation(violations, "parent_id", parent_id)
            Organisation.check(violations, kind, name,
                               OrganisationKind(parent["kind"]) if parent else None,
                               bool(parent_id), department_function)
            violations.raise_if_any()
            assert kind is not None
            organisation = Organisation(
                kind=kind.value, name=name.strip(), parent_id=parent_id,
                department_function=department_function.value if department_function else "")
            return Outcome([organisation], {"organisation_id": str(organisation.id),
                                            "version": organisation.version})
        return self.execute(decide, id_key="organisation_id")

    def organisation(self, organisation_id: str, version: int | None = None) -> OrganisationView:
        o = self.view(organisation_id, Organisation, "organisation", version)  # only rendered
        return OrganisationView(
            organisation_id=str(o.id), kind=o.kind, name=o.name, parent_id=o.parent_id,
            department_function=(DepartmentFunction(o.department_function)
                                 if o.department_function else None),
            created_at=o.created_on, version=o.version)

    def list_organisations(self, *, kind: OrganisationKind | None, parent_id: str,
                           page_size: int, page_token: str, violations: Violations | None = None
                           ) -> tuple[list[OrganisationView], str]:
        self.views.catch_up()
        ids, token = listed(violations, lambda: self.views.organisations.page(
            kind=kind, parent_id=parent_id, page_size=page_size, page_token=page_token))
        return [self.organisation(i) for i in ids], token

    def _note_organisation(self, violations: Violations, field: str, organisation_id: str
                           ) -> dict[str, Any] | None:
        """Kind and parent of a referenced organisation, or None with what is wrong added to
        `violations`: empty, not an id, or naming nothing (alone, that is NOT_FOUND)."""
        if not check_id(violations, field, organisation_id):
            return None
        found = self.views.organisation(organisation_id)
        if found is None:
            violations.missing(field, "organisation", organisation_id)
        return found

    def _organisation_of_kind(self, violations: Violations, field: str, organisation_id: str,
                              kind: OrganisationKind) -> dict[str, Any] | None:
        """The referenced organisation if it is one of `kind`; else None, with what is wrong
        added to `violations`."""
        organisation = self._note_organisation(violations, field, organisation_id)
        if organisation is not None and organisation["kind"] != kind.value:
            organisation_kind_not_allowed(violations, field, organisation["kind"], kind.value)
            return None
        return organisation

    # ------------------------------------------------------------------ partners

    def register_partner(self, *, organisation_id: str, category: PartnerCategory | None,
                         offers: list[tuple[OfferKind | None, str]],
                         violations: Violations | None = None) -> CommandResult:
        """`offers`: (kind, description) pairs, in the order the partner lists them."""
        given = violations.items if violations is not None else []

        def decide() -> Outcome:
            violations = Violations(list(given))
            organisation = self._note_organisation(violations, "organisation_id",
                                                   organisation_id)
            if organisation is not None and OrganisationKind(organisation["kind"]) not in (
                    PARTNER_ORGANISATION_KINDS):
                organisation_kind_not_allowed(
                    violations, "organisation_id", organisation["kind"],
                    sorted(k.value for k in PARTNER_ORGANISATION_KINDS))
            stored = Partner.check(violations, category, offers)
            violations.raise_if_any()
            assert category is not None
            partner_id = Partner.create_id(organisation_id)
            if self.exists(partner_id):
                raise AlreadyExists("the organisation is already a registered partner; "
                                    "RevisePartner changes what it offers",
                                    reason="PARTNER_ALREADY_REGISTERED",
                                    organisation_id=organisation_id)
            partner = Partner(organisation_id=organisation_id, category=category.value,
                              offers=stored)
            return Outcome([partner], {"organisation_id": organisation_id,
                                       "version": partner.version})
        return self.execute(decide, id_key="organisation_id")

    def revise_partner(self, *, organisation_id: str, category: PartnerCategory | None,
                       offers: list[tuple[OfferKind | None, str]],
                       violations: Violations | None = None) -> CommandResult:
        """Replaces category and offers; the earlier versions stay readable."""
        violations = violations if violations is not None else Violations()
        check_id(violations, "organisation_id", organisation_id)
        stored = Partner.check(violations, category, offers)
        violations.raise_if_any()
        assert category is not None

        def decide() -> Outcome:
            partner_id = Partner.create_id(organisation_id)
            if not self.exists(partner_id):
                raise NotFound("partner", organisation_id)
            partner = self.get(partner_id, Partner, "partner")
            partner.revise(category, stored)
            return Outcome([partner], {"organisation_id": organisation_id,
                                       "version": partner.version})
        return self.execute(decide, id_key="organisation_id")

    def partner(self, organisation_id: str, version: int | None = None) -> PartnerView:
        """The profile (at `version`, 0 or None: the current one) and, for the current one,
        what the partner gave."""
        violations = Violations()
        check_id(violations, "organisation_id", organisation_id)
        violations.require(not version or version > 0, "version",
                           "0 (the current one) or a version from 1", VALUE_OUT_OF_RANGE)
        violations.raise_if_any()
        partner_id = Partner.create_id(organisation_id)
        if not self.exists(partner_id):
            raise NotFound("partner", organisation_id)
        p = self.view(partner_id, Partner, "partner", version or None)
        if version and p.version < version:
            raise NotFound("partner_version", f"{organisation_id}@{version}")
        organisation = self.organisation(organisation_id)
        contributions = (self.partners.contributions(organisation_id)
                         if self.partners is not None and not version else None)
        return PartnerView(
            organisation_id=organisation_id, organisation_name=organisation.name,
            organisation_kind=organisation.kind, category=p.category,
            offers=[(OfferKind(o["kind"]), o["description"]) for o in p.offers],
            registered_at=p.created_on, revised_at=p.modified_on, version=p.version,
            contributions=contributions)

    def list_partners(self, *, category: PartnerCategory | None, offer_kind: OfferKind | None,
                      page_size: int, page_token: str, violations: Violations | None = None
                      ) -> tuple[list[PartnerView], str]:
        """Partners in the order they were registered, each without its contributions (one
        GetPartner answers those)."""
        self.views.catch_up()
        ids, token = listed(violations, lambda: self.views.partners.page(
            category=category, offer_kind=offer_kind, page_size=page_size,
            page_token=page_token))
        found = []
        for i in ids:
            p = self.view(i, Partner, "partner")
            organisation = self.organisation(p.organisation_id)
            found.append(PartnerView(
                organisation_id=p.organisation_id, organisation_name=organisation.name,
                organisation_kind=organisation.kind, category=p.category,
                offers=[(OfferKind(o["kind"]), o["description"]) for o in p.offers],
                registered_at=p.created_on, revised_at=p.modified_on, version=p.version,
                contributions=None))
        return found, token

    # ------------------------------------------------------------------ service spaces

    def create_service_space(self, *, street_id: str, name: str, address: str,
                             amenities: list[Amenity | None],
                             opening_hours: list[dict[str, Any]],
                             location: GeoPoint | None = None,
                             violations: Violations | None = None) -> CommandResult:
        """`location`: where the space is (None: not given, and then not on the map)."""
        given = violations.items if violations is not None else []

        def decide() -> Outcome:
            violations = Violations(list(given))
            self._organisation_of_kind(violations, "street_id", street_id,
                                       OrganisationKind.STREET)
            check_text(violations, "name", name, MAX_NAME_LENGTH)
            check_text(violations, "address", address, MAX_TEXT_LENGTH)
            ServiceSpace.check(violations, amenities, opening_hours)
            stored = wgs84_location(violations, "location", location) if location else None
            violations.raise_if_any()
            space = ServiceSpace(street_id=street_id, name=name.strip(), address=address.strip(),
                                 amenities=[a.value for a in amenities if a],
                                 opening_hours=sorted_hours(opening_hours), location=stored)
            return Outcome([space], {"service_space_id": str(space.id), "version": space.version})
        return self.execute(decide, id_key="service_space_id")

    def update_service_space(self, *, service_space_id: str, amenities: list[Amenity | None],
                             opening_hours: list[dict[str, Any]],
                             location: GeoPoint | None = None,
                             violations: Violations | None = None) -> CommandResult:
        """`location`: where the space now is (None: where it was)."""
        violations = violations if violations is not None else Violations()
        check_id(violations, "service_space_id", service_space_id)
        ServiceSpace.check(violations, amenities, opening_hours)
        stored = wgs84_location(violations, "location", location) if location else None
        violations.raise_if_any()

        def decide() -> Outcome:
            space = self.get(service_space_id, ServiceSpace, "service_space")
            space.update_facilities(amenities=[a.value for a in amenities if a],
                                    opening_hours=sorted_hours(opening_hours), location=stored)
            return Outcome([space], {"service_space_id": str(space.id), "version": space.version})
        return self.execute(decide, id_key="service_space_id")

    def service_space(self, service_space_id: str, version: int | None = None
                      ) -> ServiceSpaceView:
        s = self.get(service_space_id, ServiceSpace, "service_space", version)
        return ServiceSpaceView(
            service_space_id=str(s.id), street_id=s.street_id, name=s.name, address=s.address,
            amenities=[Amenity(a) for a in s.amenities], opening_hours=list(s.opening_hours),
            created_at=s.created_on, version=s.version, location=s.location)

    def list_service_spaces(self, *, street_id: str, amenities: list[Amenity], page_size: int,
                            page_token: str, violations: Violations | None = None
                            ) -> tuple[list[ServiceSpaceView], str]:
        self.views.catch_up()
        ids, token = listed(violations, lambda: self.views.service_spaces.page(
            street_id=street_id, amenities=amenities, page_size=page_size,
            page_token=page_token))
        return [self.service_space(i) for i in ids], token

    # ------------------------------------------------------------------ visits

    def record_space_use(self, *, service_space_id: str, amenity: Amenity | None, count: int,
                         day: str, violations: Violations | None = None) -> CommandResult:
        """Riders used `amenity` at the space `count` times on `day` (YYYY-MM-DD, the city's;
        empty: today). Counts only: no rider is named, none is recorded. The answer is the
        space's counts for that day after this recording."""
        given = violations.items if violations is not None else []

        def decide() -> Outcome:
            violations = Violations(list(given))
            space = self.note(violations, service_space_id, ServiceSpace, "service_space",
                              "service_space_id")
            today = city_day(self.clock())
            when = parse_day(violations, "day", day) if day else today
            check_use(violations, amenity=amenity, count=count, day=when, today=today,
                      opened_on=space.opened_on if space is not None else None)
            violations.raise_if_any()
            assert space is not None and amenity is not None and when is not None
            space.require_offers(amenity)
            use_id = SpaceUseDay.create_id(service_space_id, when.isoformat())
            use = (self.get(use_id, SpaceUseDay, "space_use") if self.exists(use_id)
                   else SpaceUseDay(service_space_id=str(space.id), day=when.isoformat()))
            use.record_use(amenity, count)
            return Outcome([use], {"service_space_id": str(space.id), "day": use.day,
                                   "counts": dict(use.counts)})
        # A busy space's recordings queue in this process rather than collide; replicas still
        # resolve theirs optimistically (a lost race re-reads the day and adds again).
        return self.execute(decide, id_key="service_space_id",
                            serialise_on=("space_use", service_space_id))

    def space_use(self, *, service_space_id: str, from_day: str, to_day: str) -> SpaceUseView:
        """The space's use from `from_day` to `to_day` (see _period)."""
        violations = Violations()
        check_id(violations, "service_space_id", service_space_id)
        start, end = self._period(violations, from_day, to_day)
        violations.raise_if_any()
        space = self.view(service_space_id, ServiceSpace, "service_space")
        self.views.catch_up()
        return self._space_use(space, start, end)

    def list_space_use(self, *, street_id: str, from_day: str, to_day: str, page_size: int,
                       page_token: str
                       ) -> tuple[list[SpaceUseView], str, tuple[date, date]]:
        """Every space of the street (of every street when empty), in the order they opened,
        each with its totals over the period: which spaces serve riders, and which do not.
        Also the period answered (its defaults filled in), for a page that lists none."""
        violations = Violations()
        start, end = self._period(violations, from_day, to_day)
        self.views.catch_up()
        ids, token = listed(violations, lambda: self.views.service_spaces.select(
            {"street_id": street_id}, page_size=page_size, page_token=page_token,
            filters=[f"from_day={start}", f"to_day={end}"]))
        return [self._space_use(self.view(i, ServiceSpace, "service_space"),
                                start, end) for i in ids], token, (start, end)

    def _period(self, violations: Violations, from_day: str, to_day: str
                ) -> tuple[date, date]:
        """Whole days, both included. `to_day` empty: today (the city's); `from_day` empty:
        29 days before to_day (30 days in all). Faults are added to `violations`."""
        end = parse_day(violations, "to_day", to_day) if to_day else city_day(self.clock())
        start = (parse_day(violations, "from_day", from_day) if from_day
                 else end - timedelta(days=29) if end else None)
        check_period(violations, start, end, max_days=MAX_USE_PERIOD_DAYS)
        return start or date.min, end or date.min

    def _space_use(self, space: ServiceSpace, start: date, end: date) -> SpaceUseView:
        days = self.views.space_use.days(str(space.id), start.isoformat(), end.isoformat())
        totals: dict[Amenity, int] = {}
        for _, counts in days:
            for amenity, n in counts.items():
                totals[Amenity(amenity)] = totals.get(Amenity(amenity), 0) + n
        return SpaceUseView(
            service_space_id=str(space.id), name=space.name, street_id=space.street_id,
            from_day=start, to_day=end,
            days=[(date.fromisoformat(d), {Amenity(a): n for a, n in c.items()})
                  for d, c in days], totals=totals)

    # ------------------------------------------------------------------ friendly marks

    def set_friendly_mark_criteria(self, *, min_service_spaces: int,
                                   space_amenities: list[Amenity | None],
                                   min_friendly_merchants: int, co_building_pledge: bool,
                                   street_attestation: bool,
                                   area_kind: OrganisationKind | None = OrganisationKind.COMMUNITY,
                                   violations: Violations | None = None) -> CommandResult:
        """A new version of what earns the friendly mark of one kind of area (the city's;
        marks awarded already keep the version they were judged by). Each kind — a community
        (友好社区), a business area (友好商圈) — has criteria and versions of its own."""
        violations = violations if violations is not None else Violations()
        kind = self._area_kind(violations, "criteria.area_kind", area_kind)
        check_criteria(violations, min_service_spaces=min_service_spaces,
                       space_amenities=space_amenities,
                       min_friendly_merchants=min_friendly_merchants,
                       co_building_pledge=co_building_pledge,
                       street_attestation=street_attestation, amenity_type=Amenity)
        violations.raise_if_any()
        criteria = {"min_service_spaces": min_service_spaces,
                    "space_amenities": sorted(a.value for a in space_amenities if a),
                    "min_friendly_merchants": min_friendly_merchants,
                    "co_building_pledge": co_building_pledge,
                    "street_attestation": street_attestation}

        def decide() -> Outcome:
            current = self._criteria(kind)
            if current is None:
                current = FriendlyMarkCriteria(criteria=criteria, at=self.clock(),
                                               area_kind=kind.value)
            else:
                current.revise(criteria=criteria, at=self.clock())
            return Outcome([current], {"version": current.current_version,
                                       "area_kind": kind.value})
        return self.execute(decide, serialise_on=FriendlyMarkCriteria.id_for(kind.value))

    def friendly_mark_criteria(self, version: int = 0,
                               area_kind: OrganisationKind | None = OrganisationKind.COMMUNITY,
                               violations: Violations | None = None) -> CriteriaView:
        violations = violations if violations is not None else Violations()
        kind = self._area_kind(violations, "area_kind", area_kind)
        if version < 0:
            violations.add("version", "must not be negative", VALUE_OUT_OF_RANGE)
        violations.raise_if_any()
        current = self._criteria(kind)
        if current is None:
            raise NotFound("friendly_mark_criteria",
                           f"the city has set none for {kind.value.lower()} yet")
        wanted = version or current.current_version
        entry = current.version_of(wanted)
        c = entry["criteria"]
        return CriteriaView(wanted, c["min_service_spaces"],
                            [Amenity(a) for a in c["space_amenities"]],
                            c["min_friendly_merchants"], c["co_building_pledge"],
                            c["street_attestation"], entry["set_at"], kind)

    @staticmethod
    def _area_kind(violations: Violations, field: str, area_kind: OrganisationKind | None
                   ) -> OrganisationKind:
        """The kind of area criteria are for: a community unless the caller names another
        (calls from before business areas mean the community's); only kinds that earn a
        mark."""
        if area_kind is None:  # an enum number the contract does not define (already told)
            return OrganisationKind.COMMUNITY
        if area_kind.value not in AREA_KINDS:
            organisation_kind_not_allowed(violations, field, area_kind.value, AREA_KINDS)
        return area_kind

    def apply_friendly_mark(self, *, area_id: str, brand_name: str, street_attestation: str
                            ) -> CommandResult:
        """The street office asks for the friendly mark of one of its communities (友好社区)
        or business areas (友好商圈), under its brand (荷睦), vouching in
        `street_attestation` for riders' access (free text: what it checked). Again after a
        withdrawal; not while one is pending or held."""
        violations = Violations()
        area = self._note_organisation(violations, "area_id", area_id)
        if area is not None and area["kind"] not in AREA_KINDS:
            organisation_kind_not_allowed(violations, "area_id", area["kind"], AREA_KINDS)
        check_text(violations, "brand_name", brand_name, MAX_BRAND_NAME, required=False)
        check_text(violations, "street_attestation", street_attestation, MAX_ATTESTATION,
                   required=False)
        violations.raise_if_any()
        assert area is not None

        def decide() -> Outcome:
            mark_id = FriendlyMark.create_id(area_id)
            if self.exists(mark_id):
                mark = self.get(mark_id, FriendlyMark, "friendly_mark")
                mark.apply_again(brand_name.strip(), street_attestation.strip(), self.clock())
            else:
                mark = FriendlyMark(area_id=area_id, area_kind=area["kind"],
                                    street_id=area["parent_id"], brand_name=brand_name.strip(),
                                    attestation=street_attestation.strip(), at=self.clock())
            return Outcome([mark], {"mark_id": str(mark.id), "version": mark.version})
        return self.execute(decide, id_key="mark_id")

    def award_friendly_mark(self, *, mark_id: str, criteria_version: int) -> CommandResult:
        """The city judges the application against the criteria version it names (the current
        one) and awards the mark with each criterion's evidence, or refuses naming the criteria
        not met (FAILED_PRECONDITION FRIENDLY_MARK_CRITERIA_NOT_MET, nothing stored)."""
        violations = Violations()
        check_id(violations, "mark_id", mark_id)
        violations.require(criteria_version >= 1, "criteria_version",
                           "name the criteria version judged by (1 or more)",
                           VALUE_OUT_OF_RANGE)
        violations.raise_if_any()
        # The version is of the criteria of the mark's kind of area.
        area_kind = OrganisationKind(self.view(mark_id, FriendlyMark, "friendly_mark").area_kind)
        current = self._criteria(area_kind)
        if current is None or criteria_version > current.current_version:
            violations.missing("criteria_version", "friendly_mark_criteria",
                               str(criteria_version))
        violations.raise_if_any()
        # What merchants and governance stored before this call counts (read-your-writes
        # across services); either out of reach is the caller's UNAVAILABLE, to retry.
        for follower in (self.merchants_follower, self.governance_follower):
            if follower is not None:
                follower.catch_up()

        def decide() -> Outcome:
            mark = self.get(mark_id, FriendlyMark, "friendly_mark")
            criteria = self._criteria(area_kind)
            assert criteria is not None
            if criteria_version != criteria.current_version:
                raise FailedPrecondition(
                    f"criteria version {criteria_version} was replaced by version "
                    f"{criteria.current_version}", reason="CRITERIA_VERSION_SUPERSEDED")
            judged = criteria.version_of(criteria_version)["criteria"]
            self.views.catch_up()
            # A community's merchants are its street's; a business area's are those that named
            # it. Spaces are the street's for both: a space is placed in a street, not an area.
            results = evaluate(
                judged, spaces=self._spaces_of(mark.street_id),
                merchants=self.views.approved_merchants(
                    mark.street_id,
                    mark.area_id if mark.area_kind == OrganisationKind.BUSINESS_AREA.value
                    else ""),
                signatures=self.views.co_building_signatures(mark.area_id),
                attestation=mark.attestation)
            mark.award(criteria_version, judged, results, self.clock())
            return Outcome([mark], {"mark_id": str(mark.id), "version": mark.version})
        return self.execute(decide, id_key="mark_id")

    def withdraw_friendly_mark(self, *, mark_id: str, reason: str) -> CommandResult:
        violations = Violations()
        check_id(violations, "mark_id", mark_id)
        check_reason(violations, reason)
        violations.raise_if_any()

        def decide() -> Outcome:
            mark = self.get(mark_id, FriendlyMark, "friendly_mark")
            mark.withdraw(reason.strip(), self.clock())
            return Outcome([mark], {"mark_id": str(mark.id), "version": mark.version})
        return self.execute(decide, id_key="mark_id")

    def friendly_mark(self, mark_id: str, version: int | None = None) -> FriendlyMarkView:
        m = self.view(mark_id, FriendlyMark, "friendly_mark", version)
        return FriendlyMarkView(
            mark_id=str(m.id), area_id=m.area_id, area_kind=OrganisationKind(m.area_kind),
            area_name=self._organisation_name(m.area_id), street_id=m.street_id,
            brand_name=m.brand_name,
            street_attestation=masking.show_to_caller(masking.FREE_TEXT, m.attestation),
            status=m.status, applied_at=m.applied_at, criteria_version=m.criteria_version,
            results=[dict(r) for r in m.results], awarded_at=m.awarded_at,
            withdrawn_at=m.withdrawn_at,
            withdrawal_reason=masking.show_to_caller(masking.FREE_TEXT, m.withdrawal_reason),
            version=m.version)

    def list_friendly_marks(self, *, street_id: str, status: FriendlyMarkStatus | None,
                            page_size: int, page_token: str,
                            violations: Violations | None = None
                            ) -> tuple[list[FriendlyMarkView], str]:
        self.views.catch_up()
        ids, token = listed(violations, lambda: self.views.friendly_marks.select(
            {"street_id": street_id, "status": status.value if status else ""},
            page_size=page_size, page_token=page_token))
        return [self.friendly_mark(i) for i in ids], token

    def _criteria(self, area_kind: OrganisationKind) -> FriendlyMarkCriteria | None:
        try:
            return self.get(FriendlyMarkCriteria.id_for(area_kind.value), FriendlyMarkCriteria,
                            "friendly_mark_criteria")
        except NotFound:
            return None

    def _spaces_of(self, street_id: str) -> list[dict[str, Any]]:
        """The street's service spaces, with what they offer now: a community's spaces are its
        street's (a space belongs to a street; Qiji draws no community boundaries)."""
        found = []
        for position, ident, attrs in self.views.service_spaces.snapshot():
            if attrs["street_id"] == street_id:
                space = self.view(ident, ServiceSpace, "service_space")
                found.append({"id": ident, "name": space.name,
                              "amenities": list(attrs["amenities"]), "position": position})
        return found

    # ------------------------------------------------------------------ merchants' and
    # governance's feeds (friendly marks)

    def follow_merchants(self, upstream: UpstreamEvent, processing: ProcessingEvent) -> None:
        """A merchant's standing: applied (its street, business area and name), approved,
        rejected, suspended, reinstated — with the position of the event that made it so —
        and the business area it moved to."""
        merchant_id = str(upstream.originator_id)
        standing_id = MerchantStanding.create_id(merchant_id)
        if upstream.topic == merchants_events.MERCHANT_APPLIED:
            if not self.exists(standing_id):
                # Applied from v3 on names the merchant's business area (merchants' contract
                # upcasts older events to none).
                processing.collect_events(MerchantStanding(
                    merchant_id=merchant_id, street_id=upstream.state["street_id"],
                    name=upstream.state["name"],
                    business_area_id=upstream.state.get("business_area_id", "")))
            return
        if not self.exists(standing_id):
            return  # merchants stores Applied first: nothing to note of a merchant never seen
        standing = self.get(standing_id, MerchantStanding, "merchant_standing")
        if upstream.topic == merchants_events.MERCHANT_BUSINESS_AREA_NAMED:
            standing.note_business_area(business_area_id=upstream.state["business_area_id"])
            processing.collect_events(standing)
            return
        standing.note_status(status=_MERCHANT_STATUS[upstream.topic],
                             position=upstream.position)
        processing.collect_events(standing)

    def follow_governance(self, upstream: UpstreamEvent, processing: ProcessingEvent) -> None:
        """An organisation's signature of the co-building pledge."""
        state = upstream.state
        signature_id = CoBuildingSignature.create_id(state["organisation_id"], state["version"])
        if not self.exists(signature_id):
            processing.collect_events(CoBuildingSignature(
                organisation_id=state["organisation_id"], version=state["version"],
                signed_at=state["at"], position=upstream.position))

    # ------------------------------------------------------------------ riders

    def register_rider(self, *, platform_id: str, platform_rider_id: str, name: str, phone: str,
                       national_id: str, home_street_id: str, station_id: str) -> CommandResult:
        attempts = 0

        def decide() -> Outcome:
            nonlocal attempts
            attempts += 1
            # Every fault at once: formats, then what the ids name (and of which kind).
            violations = Violations()
            check_registration(violations, platform_rider_id=platform_rider_id, name=name,
                               phone=phone, national_id=national_id)
            platform = self._organisation_of_kind(violations, "platform_id", platform_id,
                                                  OrganisationKind.PLATFORM)
            self._organisation_of_kind(violations, "home_street_id", home_street_id,
                                       OrganisationKind.STREET)
            station = self._organisation_of_kind(violations, "station_id", station_id,
                                                 OrganisationKind.STATION)
            if platform is not None and station is not None and (
                    station["parent_id"] != platform_id):
                violations.add("station_id", "names a station of another platform than "
                               "platform_id", STATION_OF_ANOTHER_PLATFORM)
            violations.raise_if_any()
            rider_id = Rider.create_id(platform_id, platform_rider_id)
            already = AlreadyExists(
                f"platform rider {platform_rider_id!r} is already registered",
                reason="RIDER_ALREADY_REGISTERED", rider_id=str(rider_id))
            # Not asked before the first attempt: nearly every rider is new, and a rider
            # registered before makes the save of this one's first version conflict, storing
            # nothing; the next attempt asks. A round trip fewer for every new rider.
            if attempts > 1 and self.exists(rider_id):
                raise already
            subject = str(rider_id)
            if attempts == 1:
                # Its data key then goes in the save's own statement (one round trip, not
                # two); a subject with a key after all fails that save, and the next attempt
                # asks (shared/personal_data.py `new_subject`).
                self.vault.new_subject(subject)
            try:
                rider = Rider(
                    platform_id=platform_id, platform_rider_id=platform_rider_id,
                    sealed_name=self.vault.seal(subject, name.strip()),
                    sealed_phone=self.vault.seal(subject, phone),
                    sealed_national_id=(self.vault.seal(subject, national_id.upper())
                                        if national_id else ""),
                    home_street_id=home_street_id, station_id=station_id)
            except PersonalDataErased:
                raise already from None  # only a registered rider's data is ever erased
            return Outcome([rider], {"rider_id": str(rider.id), "version": rider.version})
        return self.execute(decide, id_key="rider_id")

    def _change_rider(self, rider_id: str, change: Callable[[Rider], Any], **extra: Any
                      ) -> CommandResult:
        def decide() -> Outcome:
            rider = self.get(rider_id, Rider, "rider")
            change(rider)
            return Outcome([rider], {"rider_id": str(rider.id), "version": rider.version,
                                     **extra})
        return self.execute(decide, id_key="rider_id")

    def verify_rider(self, *, rider_id: str) -> CommandResult:
        return self._change_rider(rider_id, lambda r: r.verify(at=self.clock()))

    def suspend_rider(self, *, rider_id: str, reason: str
                      ) -> CommandResult:
        _require_reason(rider_id, reason)
        return self._change_rider(rider_id, lambda r: r.suspend(reason.strip()))

    def reinstate_rider(self, *, rider_id: str, reason: str
                        ) -> CommandResult:
        _require_reason(rider_id, reason)
        return self._change_rider(rider_id, lambda r: r.reinstate(reason.strip()))

    def record_rider_left(self, *, rider_id: str, reason: str
                          ) -> CommandResult:
        _require_reason(rider_id, reason)
        return self._change_rider(rider_id, lambda r: r.leave(reason.strip()))

    def record_career_milestone(self, *, rider_id: str, kind: CareerMilestoneKind | None,
                                organisation_id: str, effective_at: datetime | None, note: str,
                                violations: Violations | None = None) -> CommandResult:
        violations = violations if violations is not None else Violations()
        check_id(violations, "rider_id", rider_id)
        violations.require_given(kind, "kind",
                                 must_be_specified(CareerMilestoneKind),
                                 ENUM_VALUE_REQUIRED)
        self._note_organisation(violations, "organisation_id", organisation_id)
        check_text(violations, "note", note, MAX_TEXT_LENGTH, required=False)
        violations.raise_if_any()
        assert kind is not None
        when = effective_at or self.clock()
        return self._change_rider(
            rider_id, lambda r: r.record_milestone(kind, organisation_id, when, note.strip()))

    def grant_consent(self, *, rider_id: str, scope: ConsentScope | None, recipient_id: str,
                      violations: Violations | None = None) -> CommandResult:
        violations = violations if violations is not None else Violations()
        check_id(violations, "rider_id", rider_id)
        violations.require_given(scope, "scope",
                                 must_be_specified(ConsentScope),
                                 ENUM_VALUE_REQUIRED)
        self._note_organisation(violations, "recipient_id", recipient_id)
        violations.raise_if_any()
        assert scope is not None
        consent_id = str(uuid.uuid4())
        return self._change_rider(
            rider_id, lambda r: r.grant_consent(consent_id, scope, recipient_id, self.clock()),
            consent_id=consent_id)

    def withdraw_consent(self, *, rider_id: str, consent_id: str
                         ) -> CommandResult:
        violations = Violations()
        check_id(violations, "rider_id", rider_id)
        violations.require(bool(consent_id), "consent_id", "must not be empty", FIELD_REQUIRED)
        violations.raise_if_any()
        return self._change_rider(
            rider_id, lambda r: r.withdraw_consent(consent_id, self.clock()))

    def erase_rider_personal_data(self, *, rider_id: str, reason: str
                                  ) -> CommandResult:
        """Crypto-shredding: the key goes first (irreversibly), then the event that records who
        erased and why; a retry after a crash between the two stores the event."""
        _require_reason(rider_id, reason)
        rider = self.get(rider_id, Rider, "rider")
        if not rider.personal_data_erased:
            self.vault.erase(str(rider.id))
        return self._change_rider(rider_id, lambda r: r.record_erasure(reason.strip()))

    def rider(self, rider_id: str, version: int | None = None) -> RiderView:
        # Only read, to render it: the cached rider itself, not a copy.
        return self._rider_view(self.view(rider_id, Rider, "rider", version))

    def rider_record(self, rider_id: str) -> tuple[RiderView, RiderRecord, dict[str, str]]:
        """The rider, their record across the services (services/identity/rider_record.py),
        and the names of the departments their reports went to."""
        rider = self.rider(rider_id)
        if self.records is None:
            raise Unavailable("this identity process keeps no riders' records (it follows no "
                              "other service); retry shortly", reason="RECORDS_NOT_KEPT")
        record = self.records.record(rider.rider_id)
        departments = {a.department_id for r in record.reports for a in r.assignments}
        return rider, record, {d: self._organisation_name(d) for d in sorted(departments)}

    def _organisation_name(self, organisation_id: str) -> str:
        try:
            return self.organisation(organisation_id).name
        except NotFound:  # a department governance knows and identity not yet: no name
            return ""

    def lookup_rider(self, *, platform_id: str, platform_rider_id: str) -> RiderView:
        violations = Violations()
        violations.require(bool(platform_id), "platform_id", "must not be empty", FIELD_REQUIRED)
        violations.require(bool(platform_rider_id), "platform_rider_id", "must not be empty",
                           FIELD_REQUIRED)
        violations.raise_if_any()
        rider_id = Rider.create_id(platform_id, platform_rider_id)
        return self.rider(str(rider_id))

    def list_riders(self, *, home_street_id: str, station_id: str, status: RiderStatus | None,
                    page_size: int, page_token: str, violations: Violations | None = None
                    ) -> tuple[list[RiderView], str]:
        self.views.catch_up()
        ids, token = listed(violations, lambda: self.views.riders.page(
            home_street_id=home_street_id, station_id=station_id, status=status,
            page_size=page_size, page_token=page_token))
        return [self.rider(i) for i in ids], token

    def _rider_view(self, r: Rider) -> RiderView:
        subject = str(r.id)
        if r.personal_data_erased:
            # Erased, perhaps by another replica, whose erasure of the key this process's
            # key cache did not see: the event says so, and nothing is opened.
            self.vault.forget(subject)

            def opened(sealed: str) -> str:
                return ERASED
        else:
            def opened(sealed: str) -> str:
                return self.vault.open(subject, sealed)
        # How much the caller sees is the masking table's (shared/masking.py); a platform
        # sees a field in clear where the rider consented to share it with that platform.
        organisation = context.current().organisation_id
        name = masking.show_to_caller(masking.NAME, opened(r.sealed_name),
                                      consented=r.consents_to(ConsentScope.NAME, organisation))
        phone = masking.show_to_caller(masking.PHONE, opened(r.sealed_phone),
                                       consented=r.consents_to(ConsentScope.PHONE,
                                                               organisation))
        national_id = masking.show_to_caller(masking.NATIONAL_ID, opened(r.sealed_national_id))
        erased = r.personal_data_erased or name == ERASED
        return RiderView(
            rider_id=subject, platform_id=r.platform_id, platform_rider_id=r.platform_rider_id,
            name=name, phone=phone, national_id=national_id, personal_data_erased=erased,
            home_street_id=r.home_street_id, station_id=r.station_id, status=r.status,
            status_reason=masking.show_to_caller(masking.FREE_TEXT, r.status_reason),
            registered_at=r.registered_at, verified_at=r.verified_at,
            milestones=[{**m, "note": masking.show_to_caller(masking.FREE_TEXT, m["note"])}
                        for m in r.milestones],
            consents=[dict(c) for c in r.consents], version=r.version)


# A merchant's standing after each of its events on merchants' feed (reinstated: approved again).
_MERCHANT_STATUS = {merchants_events.MERCHANT_APPROVED: "APPROVED",
                    merchants_events.MERCHANT_REJECTED: "REJECTED",
                    merchants_events.MERCHANT_SUSPENDED: "SUSPENDED",
                    merchants_events.MERCHANT_REINSTATED: "APPROVED"}


def _require_reason(rider_id: str, reason: str) -> None:
    """The rider id's format and the reason, in one answer (whether the rider exists is
    asked after)."""
    violations = Violations()
    check_id(violations, "rider_id", rider_id)
    check_reason(violations, reason)
    violations.raise_if_any()
