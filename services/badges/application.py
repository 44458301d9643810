"""The badges service layer: volunteer service, badge classes, awards (automatic and manual),
credentials, and the policies that follow identity, training and governance."""

from __future__ import annotations

import base64
import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any

import structlog
from eventsourcing.application import ProcessingEvent

from services.badges import credentials as ob3
from services.badges.credentials import IssuerKeys, Malformed, PublicUrls
from services.badges.domain.activities import (
    VolunteerActivity,
    VolunteerActivityKind,
    VolunteerActivityStatus,
    VolunteerSignUpStatus,
    attended_shift,
    check_plan,
)
from services.badges.domain.criteria import Criteria, Track, evaluate, parse_criteria
from services.badges.domain.images import IMAGE_MEDIA_TYPE_NOT_ALLOWED, image_problem
from services.badges.domain.ladder import Rung, above, below, ladder_problem
from services.badges.domain.model import (
    MAX_REASON,
    Award,
    AwardCeremony,
    BadgeClass,
    Reevaluation,
    RiderRecord,
    VolunteerShift,
)
from services.badges.domain.recognition import Recognition, RecognitionTitle
from services.badges.views import BadgesViews
from services.governance import events as governance_events
from services.identity import events as identity_events
from services.training import events as training_events
from shared import baking, context, masking
from shared.application import CommandResult, Outcome, QijiApplication
from shared.config import CREDENTIALS_HTTP_PORT, ConfigError, Settings
from shared.errors import (
    DUPLICATE_VALUE,
    FIELD_REQUIRED,
    TEXT_TOO_LONG,
    TIME_IN_THE_FUTURE,
    TIME_TOO_LONG_AGO,
    VALUE_OUT_OF_RANGE,
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Violations,
    check_id,
    check_reason,
    check_text,
    is_uuid,
    require_ids,
)
from shared.followers import FeedSource, Follower, UpstreamEvent, follower_of
from shared.paging import listed
from shared.references import Reference, note_reference
from shared.tenancy import Owners
from shared.values import parse_hours

log = structlog.get_logger(__name__)

MAX_TEXT = 200
AUTOMATIC, MANUAL = "AUTOMATIC", "MANUAL"
# Riders evaluated per saved batch of a re-evaluation: small enough that a batch commits in
# well under a second on PostgreSQL, large enough that ten thousand riders take a minute.
REEVALUATION_BATCH = 200
MAX_OFFICIALS = 30
# A ceremony is recorded after it was held, and within the programme's life (a typo of a
# year must not file a 1970 ceremony).
CEREMONY_MAX_AGE = timedelta(days=366)


@dataclass(frozen=True)
class SignUpView:
    """A rider's sign-up for an activity, as lists and answers show it."""

    activity_id: str
    rider_id: str
    community_id: str
    title: str
    starts_at: datetime
    status: str
    signed_up_at: datetime
    withdrawn_at: datetime | None
    hours: Decimal | None
    shift_id: str
    attended_at: datetime | None


@dataclass(frozen=True)
class Explanation:
    award: Award
    badge_class: BadgeClass
    criteria: Criteria
    text: str


class BadgesApplication(QijiApplication):
    name = "badges"

    def __init__(self, settings: Settings, master_key: bytes,
                 clock: Callable[[], datetime] | None = None,
                 issuer_keys: IssuerKeys | None = None, urls: PublicUrls | None = None, *,
                 feeds: FeedSource | None = None):
        # Settings first: a key or an address that cannot work stops the process before it
        # opens its store.
        self.issuer_keys = issuer_keys or load_issuer_keys(settings)
        self.urls = urls or public_urls(settings)
        super().__init__(settings, master_key)
        self.clock = clock or (lambda: datetime.now(UTC))
        self.views = BadgesViews(self)
        self.views.catch_up()
        # The follower of identity's feed, which a request naming a rider or an organisation
        # not known here yet catches up through (the directory reads the same feed).
        self.identity_follower: Follower | None = follower_of(
            self, feeds, "identity", self.follow_identity, self.IDENTITY_TOPICS)
        # Set when a badge class is created or its criteria revised: the re-evaluation job
        # (service.ReevaluationJob) starts at once instead of at its next tick.
        self.reevaluation_wanted = threading.Event()

    # ------------------------------------------------------------------ volunteer service

    def log_volunteer_service(self, *, rider_id: str, community_id: str, activity: str,
                              started_at: datetime | None, hours: str,
                              violations: Violations | None = None) -> CommandResult:
        """`violations`, here and in every command and list that takes them: what the entry
        point already found wrong in the request (an enum number the contract does not define,
        a timestamp it could not read), reported with the rest in one answer."""
        # Everything wrong, references included, in one answer.
        v = violations if violations is not None else Violations()
        check_text(v, "activity", activity, MAX_TEXT)
        v.require_given(started_at, "start_time", "must be set",
                        FIELD_REQUIRED)
        if started_at is not None:
            v.require(started_at <= self.clock(), "start_time", "must not be in the future",
                      TIME_IN_THE_FUTURE)
        parsed = parse_hours(v, "hours", hours, maximum=Decimal(24))
        note_reference(self, v, community_id, "community_id", "community",
                       self.catch_up_upstream)
        # The rider last, once nothing else is wrong: a community is admitted on its own desk
        # alone, and must not learn from the answer whether the rider it names exists.
        self._require_rider(v, rider_id)
        assert started_at is not None and parsed is not None

        def decide() -> Outcome:
            record = self._rider_record(rider_id, catch_up=False)
            if record.left:
                raise FailedPrecondition("the rider has left the programme", reason="RIDER_LEFT")
            shift = VolunteerShift(rider_id=rider_id, community_id=community_id,
                                   activity=activity.strip(), started_at=started_at,
                                   hours=parsed)
            return Outcome([shift], {"shift_id": str(shift.id), "version": shift.version})
        return self.execute(decide, id_key="shift_id")

    def confirm_volunteer_service(self, *, shift_id: str
                                  ) -> CommandResult:
        require_ids(shift_id=shift_id)

        def decide() -> Outcome:
            shift = self.get(shift_id, VolunteerShift, "shift")
            # A rider verified (or reinstated) a moment ago upstream is awarded by this very
            # confirmation, not only once the follower brings the news: caught up when the
            # copy here says not active (a departed rider's copy is final).
            record = self.followed(RiderRecord.create_id(shift.rider_id), RiderRecord, "rider",
                                   shift.rider_id, self.catch_up_upstream,
                                   refresh_unless=lambda r: r.is_active or r.left)
            awards = self._confirm_shift(shift, record)
            return Outcome([shift, record, *awards], {
                "shift_id": shift_id, "version": shift.version,
                "award_ids": [str(a.id) for a in awards if a.status == "ACTIVE"]})
        return self.execute(decide, id_key="shift_id", serialise_on=shift_id)

    def _confirm_shift(self, shift: VolunteerShift, record: RiderRecord) -> list[Award]:
        """What confirming volunteer service does, wherever the shift came from (logged after
        the fact, or attendance at a published activity): the shift is confirmed, the rider's
        record counts its hours, and every badge the record now meets is awarded."""
        shift.confirm()
        record.count_service(shift_id=str(shift.id), hours=shift.hours, at=shift.started_at)
        return self._evaluate(record)

    def reject_volunteer_service(self, *, shift_id: str, reason: str
                                 ) -> CommandResult:
        v = Violations()
        check_id(v, "shift_id", shift_id)
        check_reason(v, reason, limit=MAX_REASON)
        v.raise_if_any()

        def decide() -> Outcome:
            shift = self.get(shift_id, VolunteerShift, "shift")
            shift.reject(reason.strip())
            return Outcome([shift], {"shift_id": shift_id, "version": shift.version})
        return self.execute(decide, id_key="shift_id", serialise_on=shift_id)

    # The five accessors below answer the cached aggregate itself (`view`), not a deep copy:
    # their callers only read it, to render it or to decide on it. A command changes only what
    # it took with `get`.
    def shift(self, shift_id: str, version: int | None = None) -> VolunteerShift:
        return self.view(shift_id, VolunteerShift, "shift", version)

    def volunteer_service(self, *, rider_id: str, status: str, page_size: int, page_token: str,
                          violations: Violations | None = None
                          ) -> tuple[list[VolunteerShift], str, Decimal]:
        v = violations if violations is not None else Violations()
        check_id(v, "rider_id", rider_id)
        self.views.catch_up()
        ids, token = listed(v, lambda: self.views.shifts.select(
            {"rider_id": rider_id, "status": status}, page_size=page_size,
            page_token=page_token))
        if self.sees_rider(rider_id):
            record = self._rider_record(rider_id)  # a rider unknown here is NOT_FOUND
            confirmed = sum((s["hours"] for s in record.shifts.values()), Decimal(0))
        else:
            # A community is admitted on the shifts done at its desk, not on the rider: it is
            # answered the same whether or not the rider exists (never RIDER_NOT_FOUND, which
            # would tell it), and counts only the hours it confirmed itself.
            reach = context.current().reach
            known = self.found(str(RiderRecord.create_id(rider_id)), RiderRecord)
            confirmed = sum((s["hours"] for shift_id, s in (known.shifts if known else {}).items()
                             if reach is None or reach.admits_row({"id": shift_id})), Decimal(0))
        return [self.shift(i) for i in ids], token, confirmed

    # ------------------------------------------------------------------ volunteer activities

    def publish_volunteer_activity(self, *, community_id: str, title: str, description: str,
                                   kind: VolunteerActivityKind | None, starts_at: datetime | None,
                                   ends_at: datetime | None, service_space_id: str,
                                   address: str, places: int,
                                   sign_up_deadline: datetime | None,
                                   violations: Violations | None = None) -> CommandResult:
        """A community's volunteer activity (爱心公益活动), open for sign-up at once."""
        v = violations if violations is not None else Violations()
        plan = check_plan(v, title=title, description=description, kind=kind,
                          starts_at=starts_at, ends_at=ends_at,
                          service_space_id=service_space_id, address=address, places=places,
                          sign_up_deadline=sign_up_deadline, now=self.clock())
        community = note_reference(self, v, community_id, "community_id", "community",
                                   self.catch_up_upstream)
        self._check_space(v, service_space_id, community_id if community else "")
        v.raise_if_any()
        assert plan is not None
        street_id = self._street_of(community_id)

        def decide() -> Outcome:
            activity = VolunteerActivity.publish(
                community_id=community_id, street_id=street_id, plan=plan,
                published_by=context.current().actor.principal)
            return Outcome([activity], {"activity_id": str(activity.id),
                                        "version": activity.version})
        return self.execute(decide, id_key="activity_id")

    def revise_volunteer_activity(self, *, activity_id: str, title: str, description: str,
                                  kind: VolunteerActivityKind | None, starts_at: datetime | None,
                                  ends_at: datetime | None, service_space_id: str,
                                  address: str, places: int,
                                  sign_up_deadline: datetime | None,
                                  violations: Violations | None = None) -> CommandResult:
        """The whole activity as it is to be; its sign-ups stand (places never below them)."""
        v = violations if violations is not None else Violations()
        current = self._noted_activity(v, activity_id)
        plan = check_plan(v, title=title, description=description, kind=kind,
                          starts_at=starts_at, ends_at=ends_at,
                          service_space_id=service_space_id, address=address, places=places,
                          sign_up_deadline=sign_up_deadline, now=self.clock(),
                          unchanged_deadline=current.sign_up_deadline if current else None)
        self._check_space(v, service_space_id, current.community_id if current else "")
        v.raise_if_any()
        assert plan is not None

        def decide() -> Outcome:
            activity = self.get(activity_id, VolunteerActivity, "activity")
            activity.revise(plan, self.clock())
            return Outcome([activity], {"activity_id": activity_id, "version": activity.version})
        return self.execute(decide, id_key="activity_id", serialise_on=activity_id)

    def cancel_volunteer_activity(self, *, activity_id: str, reason: str) -> CommandResult:
        v = Violations()
        check_id(v, "activity_id", activity_id)
        check_reason(v, reason, limit=MAX_REASON)
        v.raise_if_any()

        def decide() -> Outcome:
            activity = self.get(activity_id, VolunteerActivity, "activity")
            told = activity.cancel(reason.strip(), self.clock())
            return Outcome([activity], {"activity_id": activity_id, "version": activity.version,
                                        "cancelled_rider_ids": told})
        return self.execute(decide, id_key="activity_id", serialise_on=activity_id)

    def volunteer_activity(self, activity_id: str, version: int | None = None
                           ) -> VolunteerActivity:
        return self.view(activity_id, VolunteerActivity, "activity", version)

    def list_volunteer_activities(self, *, community_id: str, street_id: str,
                                  open_for_sign_up: bool, kind: VolunteerActivityKind | None,
                                  page_size: int, page_token: str,
                                  violations: Violations | None = None
                                  ) -> tuple[list[VolunteerActivity], str]:
        v = violations if violations is not None else Violations()
        for name, value in (("community_id", community_id), ("street_id", street_id)):
            if value:
                check_id(v, name, value)
        self.views.catch_up()
        now = self.clock()

        def still_open(attrs: dict[str, Any], _id: str) -> bool:
            return attrs["status"] == VolunteerActivityStatus.OPEN and now < attrs["deadline"] \
                and attrs["taken"] < attrs["places"]
        ids, token = listed(v, lambda: self.views.activities.select(
            {"community_id": community_id, "street_id": street_id,
             "kind": kind.value if kind else ""},
            extra=still_open if open_for_sign_up else None,
            filters=["open_for_sign_up"] if open_for_sign_up else [], page_size=page_size,
            page_token=page_token))
        return [self.volunteer_activity(i) for i in ids], token

    def sign_up_for_volunteer_activity(self, *, activity_id: str, rider_id: str
                                       ) -> CommandResult:
        """A rider takes a place, through their platform's app. No waiting list: a full
        activity is refused ACTIVITY_FULL (services/badges/domain/activities.py says why)."""
        require_ids(activity_id=activity_id, rider_id=rider_id)

        def decide() -> Outcome:
            activity = self.get(activity_id, VolunteerActivity, "activity")
            now = self.clock()
            # What the activity refuses (cancelled, closed, full) before the rider is looked
            # up, as training's enrolment does; here, not before execute, so that a retry
            # finds its first answer.
            activity.check_sign_up(rider_id, now)
            self.require_riders(Violations(), [("rider_id", rider_id)], RiderRecord.create_id,
                                self.catch_up_upstream,
                                refresh_unless=lambda record: record.is_active)
            self._rider_record(rider_id, catch_up=False).require_active()
            activity.sign_up(rider_id, now)
            return Outcome([activity], {"activity_id": activity_id, "rider_id": rider_id,
                                        "version": activity.version})
        # Many riders race for the last places of one activity: queue on it in this process
        # (replicas still decide by the activity's versions).
        return self.execute(decide, id_key="activity_id", serialise_on=activity_id)

    def withdraw_volunteer_sign_up(self, *, activity_id: str, rider_id: str
                                   ) -> CommandResult:
        require_ids(activity_id=activity_id, rider_id=rider_id)

        def decide() -> Outcome:
            activity = self.get(activity_id, VolunteerActivity, "activity")
            activity.withdraw(rider_id, self.clock())
            return Outcome([activity], {"activity_id": activity_id, "rider_id": rider_id,
                                        "version": activity.version})
        return self.execute(decide, id_key="activity_id", serialise_on=activity_id)

    def record_volunteer_attendance(self, *, activity_id: str, rider_id: str, hours: str
                                    ) -> CommandResult:
        """The community records that the rider came and served `hours` (the whole activity
        when empty): their service is confirmed there and then, as ConfirmVolunteerService
        confirms logged service, and badges follow in the same save. Once per rider per
        activity."""
        v = Violations()
        current = self._noted_activity(v, activity_id)
        check_id(v, "rider_id", rider_id)
        served = parse_hours(v, "hours", hours, maximum=Decimal(24)) if hours else None
        if current is not None and served is not None:
            current.check_hours(v, "hours", served)
        v.raise_if_any()

        def decide() -> Outcome:
            activity = self.get(activity_id, VolunteerActivity, "activity")
            worked = served if served is not None else activity.length_hours
            now = self.clock()
            # The activity first: only a rider who signed up (who is known) gets past it.
            activity.check_attendance(rider_id, worked, now)
            record = self._rider_record(rider_id, catch_up=False)
            if record.left:
                raise FailedPrecondition("the rider has left the programme", reason="RIDER_LEFT")
            shift = attended_shift(activity, rider_id, worked)
            activity.record_attendance(rider_id, worked, str(shift.id), now)
            awards = self._confirm_shift(shift, record)
            return Outcome([activity, shift, record, *awards], {
                "activity_id": activity_id, "rider_id": rider_id, "version": activity.version,
                "shift_id": str(shift.id), "shift_version": shift.version,
                "award_ids": [str(a.id) for a in awards]})
        return self.execute(decide, id_key="activity_id", serialise_on=activity_id)

    def volunteer_sign_ups(self, *, activity_id: str, rider_id: str,
                           status: VolunteerSignUpStatus | None, page_size: int, page_token: str,
                           violations: Violations | None = None) -> tuple[list[SignUpView], str]:
        v = violations if violations is not None else Violations()
        if not activity_id and not rider_id:
            v.add("activity_id", "an activity_id or a rider_id is required", FIELD_REQUIRED)
        for name, value in (("activity_id", activity_id), ("rider_id", rider_id)):
            if value:
                check_id(v, name, value)
        self.views.catch_up()
        rows, token = listed(v, lambda: self.views.sign_ups.select(
            {"activity_id": activity_id, "rider_id": rider_id,
             "status": status.value if status else ""}, rows=True, page_size=page_size,
            page_token=page_token))
        return [self.sign_up_view(r["activity_id"], r["rider_id"]) for r in rows], token

    def sign_up_view(self, activity_id: str, rider_id: str, version: int | None = None
                     ) -> SignUpView:
        activity = self.volunteer_activity(activity_id, version)
        entry = activity.sign_ups[rider_id]
        return SignUpView(
            activity_id=activity_id, rider_id=rider_id, community_id=activity.community_id,
            title=activity.title, starts_at=activity.starts_at, status=entry["status"],
            signed_up_at=entry["signed_up_at"], withdrawn_at=entry["withdrawn_at"],
            hours=entry["hours"], shift_id=entry["shift_id"], attended_at=entry["attended_at"])

    def _noted_activity(self, v: Violations, activity_id: str) -> VolunteerActivity | None:
        """The activity a request names, to check its other fields against; a malformed id or
        one naming nothing is added to `v`."""
        if not check_id(v, "activity_id", activity_id):
            return None
        found = self.found(activity_id, VolunteerActivity)
        if found is None:
            v.missing("activity_id", "activity", activity_id)
        return found

    def _check_space(self, v: Violations, service_space_id: str, community_id: str) -> None:
        """A place named by a service space: one identity opened, in the community's street
        (a community does not send its volunteers to another street's space)."""
        if not service_space_id or not check_id(v, "service_space_id", service_space_id):
            return
        street = self.directory.service_space_street(service_space_id) \
            if self.directory is not None else None
        if street is None:
            v.missing("service_space_id", "service_space", service_space_id)
        elif community_id and street != self._street_of(community_id):
            v.add("service_space_id", "must be a service space in the community's street",
                  "SERVICE_SPACE_IN_ANOTHER_STREET")

    def _street_of(self, community_id: str) -> str:
        entry = self.directory.organisation(community_id) if self.directory is not None \
            else None
        return entry.parent_id if entry is not None else ""

    # ------------------------------------------------------------------ tenancy

    def owner_resolvers(self) -> dict[str, Callable[[str], Owners | None]]:
        return {**super().owner_resolvers(), "shift_community": self._shift_community_owners,
                "award": self._award_owners, "recognition": self._recognition_owners,
                "activity": self._activity_owners}

    def _recognition_owners(self, recognition_id: str) -> Owners | None:
        """A recognition is its rider's, as an award is."""
        found = self.found(recognition_id, Recognition)
        if found is None or self.directory is None:
            return None
        return self.directory.rider_owners(found.rider_id)

    def _activity_owners(self, activity_id: str) -> Owners | None:
        """An activity is its community's, and that community's street office's."""
        activity = self.found(activity_id, VolunteerActivity)
        if activity is None:
            return None
        return self.organisation_owners(activity.community_id)

    def _shift_community_owners(self, shift_id: str) -> Owners | None:
        """Volunteer service is confirmed where it was done: by that community, or its
        street office."""
        shift = self.found(shift_id, VolunteerShift)
        if shift is None:
            return None
        return self.organisation_owners(shift.community_id)

    def _award_owners(self, award_id: str) -> Owners | None:
        """An award is its rider's: their platform's and their street office's."""
        award = self.found(award_id, Award)
        if award is None or self.directory is None:
            return None
        return self.directory.rider_owners(award.rider_id)

    # ------------------------------------------------------------------ badge classes

    def create_badge_class(self, *, name: str, description: str, image_url: str,
                           issuer_id: str, criteria: dict[str, Any], validity_days: int,
                           image: bytes = b"", image_media_type: str = "",
                           grows_from_badge_class_id: str = "",
                           violations: Violations | None = None) -> CommandResult:
        """A badge class; its picture, when given, is stored with it in the same save, and so
        is the re-evaluation that awards it to the riders who already meet its criteria."""
        v = violations if violations is not None else Violations()
        check_text(v, "name", name, MAX_TEXT)
        check_text(v, "description", description, 2000, required=False)
        if len(image_url) > 500:
            v.add("image_url", "at most 500 characters", TEXT_TOO_LONG)
        elif image_url and not image_url.startswith(("https://", "http://", "urn:")):
            v.add("image_url", "must be an http(s) or urn reference", "IMAGE_URL_INVALID")
        v.require(0 <= validity_days <= 36500, "validity_days", "must be 0 to 36500",
                  VALUE_OUT_OF_RANGE)
        if image or image_media_type:
            _check_image(v, image, image_media_type)
        parsed = self._criteria(v, criteria)
        # Any organisation of the city but a community (badges notes communities apart: where
        # volunteer service is done, not who awards).
        note_reference(self, v, issuer_id, "issuer_id", "organisation", self.catch_up_upstream,
                       not_allowed="may not issue badges")
        if grows_from_badge_class_id:
            self._note_badge_class(v, grows_from_badge_class_id, "grows_from_badge_class_id")
        v.raise_if_any()
        assert parsed is not None
        if grows_from_badge_class_id:
            with self._ladder_lock:
                # A new class cannot close a loop (nothing grows from it yet), but it can
                # cross issuers or branch a ladder.
                self._check_ladder(v, "", name.strip(), issuer_id, grows_from_badge_class_id)
                v.raise_if_any()
                return self._create_badge_class(
                    name, description, image_url, issuer_id, parsed, validity_days, image,
                    image_media_type, grows_from_badge_class_id)
        return self._create_badge_class(name, description, image_url, issuer_id, parsed,
                                        validity_days, image, image_media_type, "")

    def _create_badge_class(self, name: str, description: str, image_url: str,
                            issuer_id: str, parsed: Criteria, validity_days: int, image: bytes,
                            image_media_type: str, grows_from_badge_class_id: str
                            ) -> CommandResult:
        def decide() -> Outcome:
            badge = BadgeClass(name=name.strip(), description=description.strip(),
                               image_url=image_url, issuer_id=issuer_id,
                               criteria=parsed.to_state(), validity_days=validity_days)
            if image:
                badge.upload_image(**_image_state(image, image_media_type))
            if grows_from_badge_class_id:
                badge.revise_progression(grows_from=grows_from_badge_class_id)
            job = Reevaluation(badge_class_id=str(badge.id), criteria_version=1)
            return Outcome([badge, job], {"badge_class_id": str(badge.id),
                                          "version": badge.version})
        return self._reevaluating(self.execute(decide, id_key="badge_class_id"))

    def upload_badge_image(self, *, badge_class_id: str, image: bytes, media_type: str
                           ) -> CommandResult:
        """A new picture for a badge class (a credential already handed out shows the new one
        at the same address; the old one stays in the log)."""
        v = Violations()
        _check_image(v, image, media_type)
        self._note_badge_class(v, badge_class_id)
        v.raise_if_any()

        def decide() -> Outcome:
            badge = self.get(badge_class_id, BadgeClass, "badge_class")
            badge.upload_image(**_image_state(image, media_type))
            return Outcome([badge], {"badge_class_id": badge_class_id, "version": badge.version})
        return self.execute(decide, id_key="badge_class_id", serialise_on=badge_class_id)

    def revise_badge_criteria(self, *, badge_class_id: str, criteria: dict[str, Any],
                              violations: Violations | None = None) -> CommandResult:
        v = violations if violations is not None else Violations()
        parsed = self._criteria(v, criteria)
        self._note_badge_class(v, badge_class_id)
        v.raise_if_any()
        assert parsed is not None

        def decide() -> Outcome:
            badge = self.get(badge_class_id, BadgeClass, "badge_class")
            badge.revise(criteria=parsed.to_state())
            job = Reevaluation(badge_class_id=badge_class_id,
                               criteria_version=badge.criteria_version)
            return Outcome([badge, job], {"badge_class_id": badge_class_id,
                                          "version": badge.version})
        return self._reevaluating(self.execute(decide, id_key="badge_class_id"))

    def _reevaluating(self, result: CommandResult) -> CommandResult:
        self.reevaluation_wanted.set()
        return result

    def revise_badge_progression(self, *, badge_class_id: str, grows_from_badge_class_id: str
                                 ) -> CommandResult:
        """The class this one grows from on its ladder ("" : none), as a new progression
        version. Awards already grown stay as they grew; riders holding the lower class are
        grown when they are next awarded the higher."""
        v = Violations()
        self._note_badge_class(v, badge_class_id)
        if grows_from_badge_class_id:
            self._note_badge_class(v, grows_from_badge_class_id, "grows_from_badge_class_id")
        v.raise_if_any()

        def decide() -> Outcome:
            badge = self.get(badge_class_id, BadgeClass, "badge_class")
            badge.revise_progression(grows_from=grows_from_badge_class_id)
            return Outcome([badge], {"badge_class_id": badge_class_id, "version": badge.version})
        # Checked and saved under one lock: two revisions at once could each pass the check
        # and together make a loop or a branch (across replicas the city admin is one desk).
        with self._ladder_lock:
            if grows_from_badge_class_id:
                badge = self.badge_class(badge_class_id)
                self._check_ladder(v, badge_class_id, badge.name, badge.issuer_id,
                                   grows_from_badge_class_id)
                v.raise_if_any()
            return self.execute(decide, id_key="badge_class_id")

    _ladder_lock = threading.Lock()

    def _rungs(self) -> dict[str, Rung]:
        return {i: Rung(c.name, c.issuer_id, c.grows_from)
                for i, c in ((i, self.badge_class(i)) for i in self.views.class_ids())}

    def _check_ladder(self, v: Violations, badge_class_id: str, name: str, issuer_id: str,
                      grows_from: str) -> None:
        rungs = self._rungs()
        me = badge_class_id or "(new)"
        rungs[me] = Rung(name, issuer_id, grows_from)
        problem = ladder_problem(rungs, me, grows_from)
        if problem is not None:
            reason, description = problem
            v.add("grows_from_badge_class_id", description, reason)

    def badge_class(self, badge_class_id: str, version: int | None = None) -> BadgeClass:
        return self.view(badge_class_id, BadgeClass, "badge_class", version)

    def list_badge_classes(self, *, page_size: int, page_token: str
                           ) -> tuple[list[BadgeClass], str]:
        self.views.catch_up()
        ids, token = self.views.classes.select({}, page_size=page_size, page_token=page_token)
        return [self.badge_class(i) for i in ids], token

    @staticmethod
    def _criteria(v: Violations, c: dict[str, Any]) -> Criteria | None:
        return parse_criteria(
            v, min_volunteer_hours=c["min_volunteer_hours"],
            required_course_ids=c["required_course_ids"],
            track_requirements=c["track_requirements"],
            min_verified_reports=c["min_verified_reports"], within_days=c["within_days"],
            narrative=c["narrative"], is_uuid=is_uuid)

    # ------------------------------------------------------------------ awards

    def grant_badge(self, *, rider_id: str, badge_class_id: str, reason: str,
                    evidence: list[dict[str, Any]], violations: Violations | None = None
                    ) -> CommandResult:
        """A manual award by an official: a written reason and at least one piece of evidence
        (an unreadable `evidence[i].time` is the entry point's, in `violations`)."""
        v = violations if violations is not None else Violations()
        check_reason(v, reason, limit=MAX_REASON)  # why the rider deserves it
        v.require(bool(evidence), "evidence", "at least one piece of evidence",
                  "EVIDENCE_REQUIRED")
        for i, e in enumerate(evidence):
            v.require(bool(e["reference"].strip() or e["narrative"].strip()),
                      f"evidence[{i}]", "a reference or a narrative", "EVIDENCE_EMPTY")
        self._note_badge_class(v, badge_class_id)
        self._require_rider(v, rider_id)  # last, as everywhere (require_riders)

        def decide() -> Outcome:
            badge = self.badge_class(badge_class_id)
            record = self._rider_record(rider_id, catch_up=False)
            if record.left:
                raise FailedPrecondition("the rider has left the programme", reason="RIDER_LEFT")
            record.require_not_holding(badge_class_id)
            rungs = self._rungs()
            beyond = self._beyond(record, rungs, badge_class_id)
            if beyond:
                raise FailedPrecondition(
                    f"the rider has grown beyond {badge.name} on its ladder (badge class "
                    f"{beyond}); award the higher badge instead", reason="BADGE_GROWN_BEYOND")
            now = self.clock()
            award, *grown = self._award(record, badge, MANUAL, [
                {"source": "official", "reference": e["reference"], "position": 0,
                 "narrative": e["narrative"], "at": e.get("at") or now} for e in evidence],
                reason.strip(), now, rungs)
            return Outcome([record, award, *grown], {"award_id": str(award.id), "version": 1})
        return self.execute(decide, id_key="award_id")

    def revoke_award(self, *, award_id: str, reason: str
                     ) -> CommandResult:
        v = Violations()
        check_id(v, "award_id", award_id)
        check_reason(v, reason, limit=MAX_REASON)
        v.raise_if_any()

        def decide() -> Outcome:
            award = self.get(award_id, Award, "award")
            record = self._rider_record(award.rider_id, catch_up=False)
            award.revoke(reason.strip(), context.current().actor.principal, self.clock())
            record.release(award.badge_class_id, award_id, revoked=True)
            return Outcome([award, record], {"award_id": award_id, "version": award.version})
        return self.execute(decide, id_key="award_id")

    def expire_due(self) -> int:
        """Stores Expired for every award past its expiry (the expiry job calls this)."""
        expired = 0
        for award_id in self.views.due_awards(self.clock()):
            def decide(award_id: str = award_id) -> Outcome:
                award = self.get(award_id, Award, "award")
                if award.status != "ACTIVE":
                    return Outcome([], {})
                record = self._rider_record(award.rider_id, catch_up=False)
                award.expire(self.clock())
                record.release(award.badge_class_id, award_id, revoked=False)
                return Outcome([award, record], {"award_id": award_id})
            if self.execute(decide, id_key="award_id"):
                expired += 1
        return expired

    def award(self, award_id: str, version: int | None = None) -> Award:
        return self.view(award_id, Award, "award", version)

    def rider_awards(self, *, rider_id: str, include_inactive: bool) -> list[Award]:
        require_ids(rider_id=rider_id)
        self._rider_record(rider_id)
        self.views.catch_up()
        awards = [self.award(i) for i in self.views.awards_of(rider_id)]
        now = self.clock()
        # A grown award (青蜂 after 金蜂) stays in force and listed: the rider's ladder.
        return [a for a in awards
                if include_inactive or a.status_at(now) in ("ACTIVE", "GROWN")]

    def badge_holders(self, *, badge_class_id: str, page_size: int, page_token: str
                      ) -> tuple[list[Award], str]:
        require_ids(badge_class_id=badge_class_id)
        self.badge_class(badge_class_id)
        self.views.catch_up()
        now = self.clock()
        ids, token = self.views.awards.select(
            {"badge_class_id": badge_class_id, "status": "ACTIVE"},
            extra=lambda attrs, _id: attrs["expires_at"] is None or attrs["expires_at"] > now,
            filters=["unexpired"], page_size=page_size, page_token=page_token)
        return [self.award(i) for i in ids], token

    def explain(self, *, rider_id: str, badge_class_id: str) -> Explanation:
        """Why does rider R hold badge B: the award, the criteria version it was made under,
        the evidence events, who acted. A rider who held B once and no longer does (revoked,
        expired) is answered with that award and how it ended: the trail outlives the badge."""
        require_ids(rider_id=rider_id, badge_class_id=badge_class_id)
        record = self._rider_record(rider_id)
        badge = self.badge_class(badge_class_id)
        award_id = record.held.get(badge_class_id) or \
            record.grown.get(badge_class_id, {}).get("award_id")
        if award_id is None:
            raise self._not_held(rider_id, badge_class_id, badge.name)
        award = self.award(award_id)
        criteria = badge.criteria(award.criteria_version)
        kind = "an automatic" if award.kind == AUTOMATIC else "a manual"
        lines = [f"Rider {rider_id} holds {badge.name} (award {award_id}), {kind}"
                 f" award made {award.awarded_at.isoformat()} by {award.awarded_by}.",
                 f"Criteria version {award.criteria_version}: {criteria.describe()}."]
        # An official's reason and narratives may name people: the masking table decides.
        if award.reason:
            lines.append(f"Reason: {masking.show_to_caller(masking.FREE_TEXT, award.reason)}")
        lines += [f"- {e['source']} {e['reference']}"
                  + (f" (log position {e['position']})" if e["position"] else "")
                  + f": {narrative_shown(e)}" for e in award.evidence]
        if award.expires_at:
            lines.append(f"Valid until {award.expires_at.isoformat()}.")
        lines += self._ladder_lines(award)
        return Explanation(award, badge, criteria, "\n".join(lines))

    def _ladder_lines(self, award: Award) -> list[str]:
        """Where the award stands on its ladder and whether it was presented at a ceremony."""
        lines = []
        if award.grown_from:
            lower = self.award(award.grown_from)
            lines.append(f"Grown from {self.badge_class(lower.badge_class_id).name} (award "
                         f"{lower.id}, made {lower.awarded_at.isoformat()}).")
        if award.grown_into:
            higher = self.award(award.grown_into)
            assert award.grown_at is not None
            lines.append(f"Grown into {self.badge_class(higher.badge_class_id).name} (award "
                         f"{higher.id}) on {award.grown_at.isoformat()}: still true, no longer "
                         "the rider's current step.")
        if award.ceremony_id:
            ceremony = self.ceremony(award.ceremony_id)
            where = ceremony.place or f"service space {ceremony.service_space_id}"
            present = ", ".join(f"{o['role']} "
                                f"{masking.show_to_caller(masking.NAME, o['official_name'])}"
                                for o in ceremony.officials)
            lines.append(f"Presented {ceremony.held_at.isoformat()} at {where} (ceremony "
                         f"{ceremony.id}), officials present: {present}.")
        return lines

    def _not_held(self, rider_id: str, badge_class_id: str, name: str) -> NotFound:
        """NOT_FOUND (as every release answered), saying plainly why: never held, or held
        once and how that award ended, so the auditor knows where to look next."""
        self.views.catch_up()
        earlier = sorted((a for a in (self.award(i) for i in self.views.awards_of(rider_id))
                          if a.badge_class_id == badge_class_id), key=lambda a: a.awarded_at)
        if not earlier:
            return NotFound("award", badge_class_id, f"rider {rider_id} has never held "
                            f"{name} (badge class {badge_class_id})")
        last = earlier[-1]
        if last.revoked_at is not None:
            ended = (f"revoked {last.revoked_at.isoformat()} by {last.revoked_by}: "
                     f"{masking.show_to_caller(masking.FREE_TEXT, last.revoke_reason)}")
        else:
            ended = f"expired {last.expires_at.isoformat() if last.expires_at else ''}"
        return NotFound("award", badge_class_id, f"rider {rider_id} no longer holds {name}: "
                        f"award {last.id} (made {last.awarded_at.isoformat()} by "
                        f"{last.awarded_by}) was {ended}; its trail: qiji audit history "
                        f"badges {last.id}")

    # ------------------------------------------------------------------ recognition

    def create_recognition_title(self, *, name: str, description: str, criteria: dict[str, Any],
                                 required_badge_class_ids: list[str], term_days: int,
                                 violations: Violations | None = None) -> CommandResult:
        """A title the city confers on riders (城市治理合伙人), with what makes a rider
        eligible and how long a conferral lasts."""
        v = violations if violations is not None else Violations()
        check_text(v, "name", name, MAX_TEXT)
        check_text(v, "description", description, 2000, required=False)
        requirements = self._requirements(v, criteria, required_badge_class_ids, term_days)
        v.raise_if_any()
        assert requirements is not None

        def decide() -> Outcome:
            title = RecognitionTitle(name=name.strip(), description=description.strip(),
                                     requirements=requirements, term_days=term_days)
            return Outcome([title], {"title_id": str(title.id), "version": title.version})
        return self.execute(decide, id_key="title_id")

    def revise_recognition_title(self, *, title_id: str, criteria: dict[str, Any],
                                 required_badge_class_ids: list[str], term_days: int,
                                 violations: Violations | None = None) -> CommandResult:
        v = violations if violations is not None else Violations()
        requirements = self._requirements(v, criteria, required_badge_class_ids, term_days)
        self._note_title(v, title_id)
        v.raise_if_any()
        assert requirements is not None

        def decide() -> Outcome:
            title = self.get(title_id, RecognitionTitle, "recognition_title")
            title.revise(requirements=requirements, term_days=term_days)
            return Outcome([title], {"title_id": title_id, "version": title.version})
        return self.execute(decide, id_key="title_id")

    def _requirements(self, v: Violations, criteria: dict[str, Any], required: list[str],
                      term_days: int) -> dict[str, Any] | None:
        """A title's requirements: badge criteria, badges held, or both; never neither (a
        title open to every rider is no recognition)."""
        v.require(30 <= term_days <= 3650, "term_days", "must be 30 to 3650 days",
                  VALUE_OUT_OF_RANGE)
        for i, badge_class_id in enumerate(required):
            self._note_badge_class(v, badge_class_id, f"required_badge_class_ids[{i}]")
        v.require(len(set(required)) == len(required), "required_badge_class_ids",
                  "lists a badge class twice", DUPLICATE_VALUE)
        measured = (criteria["min_volunteer_hours"], criteria["required_course_ids"],
                    criteria["track_requirements"], criteria["min_verified_reports"])
        if any(measured) or not required:
            parsed = self._criteria(v, criteria)
        else:  # only badges required: the criteria may carry a narrative alone
            check_text(v, "criteria.narrative", criteria["narrative"], 1000, required=False)
            parsed = Criteria(narrative=criteria["narrative"].strip())
        if parsed is None or v.items:
            return None
        return {"criteria": parsed.to_state(), "required_badge_class_ids": list(required)}

    def confer_recognition(self, *, rider_id: str, title_id: str, reason: str,
                           violations: Violations | None = None) -> CommandResult:
        """Confers a title on a rider who meets its requirements now, for its term."""
        v = violations if violations is not None else Violations()
        check_reason(v, reason, limit=MAX_REASON)
        self._note_title(v, title_id)
        self._require_rider(v, rider_id)  # last, as everywhere

        def decide() -> Outcome:
            title = self.get(title_id, RecognitionTitle, "recognition_title")
            record = self._rider_record(rider_id, catch_up=False)
            record.require_active()
            now = self.clock()
            current = record.titles.get(title_id)
            if current and self.recognition(current).status_at(now) == "ACTIVE":
                raise AlreadyExists(f"the rider already holds {title.name}",
                                    reason="RECOGNITION_ALREADY_HELD", recognition_id=current)
            evidence, missing = self._title_evidence(title, record, now)
            if missing:
                raise FailedPrecondition(
                    f"the rider does not meet {title.name}'s requirements (version "
                    f"{title.requirements_version}): missing " + "; ".join(missing),
                    reason="RECOGNITION_REQUIREMENTS_NOT_MET")
            recognition = Recognition(
                rider_id=rider_id, title_id=title_id,
                requirements_version=title.requirements_version, evidence=evidence,
                reason=reason.strip(), conferred_by=context.current().actor.principal,
                conferred_at=now, ends_at=now + timedelta(days=title.term_days))
            record.confer_title(title_id=title_id, recognition_id=str(recognition.id))
            return Outcome([record, recognition], {"recognition_id": str(recognition.id),
                                                   "version": recognition.version})
        return self.execute(decide, id_key="recognition_id")

    def _title_evidence(self, title: RecognitionTitle, record: RiderRecord, now: datetime
                        ) -> tuple[list[dict[str, Any]], list[str]]:
        """What meets the title's requirements, and what is missing."""
        criteria, missing = title.criteria(), []
        met = evaluate(criteria, record, now)
        evidence = met or []
        if met is None:
            missing.append(criteria.describe())
        for badge_class_id in title.requirements()["required_badge_class_ids"]:
            name = self.badge_class(badge_class_id).name
            # A badge grown into the next on its ladder still counts: it is still true.
            award_id = record.held.get(badge_class_id) or \
                record.grown.get(badge_class_id, {}).get("award_id")
            if award_id is None:
                missing.append(f"the badge {name}")
            else:
                evidence.append({"source": "badges", "reference": award_id, "position": 0,
                                 "narrative": f"holds {name}", "at": now})
        return evidence, missing

    def revoke_recognition(self, *, recognition_id: str, reason: str) -> CommandResult:
        v = Violations()
        check_id(v, "recognition_id", recognition_id)
        check_reason(v, reason, limit=MAX_REASON)
        v.raise_if_any()

        def decide() -> Outcome:
            recognition = self.get(recognition_id, Recognition, "recognition")
            recognition.revoke(reason.strip(), context.current().actor.principal, self.clock())
            return Outcome([recognition], {"recognition_id": recognition_id,
                                           "version": recognition.version})
        return self.execute(decide, id_key="recognition_id")

    def recognition(self, recognition_id: str, version: int | None = None) -> Recognition:
        return self.view(recognition_id, Recognition, "recognition", version)

    def recognition_title(self, title_id: str, version: int | None = None
                          ) -> RecognitionTitle:
        return self.view(title_id, RecognitionTitle, "recognition_title", version)

    def recognition_titles(self, *, page_size: int, page_token: str
                           ) -> tuple[list[RecognitionTitle], str]:
        self.views.catch_up()
        ids, token = self.views.titles.select({}, page_size=page_size, page_token=page_token)
        return [self.recognition_title(i) for i in ids], token

    def rider_recognitions(self, *, rider_id: str, include_inactive: bool
                           ) -> list[Recognition]:
        require_ids(rider_id=rider_id)
        self._rider_record(rider_id)
        self.views.catch_up()
        with self.views.recognitions.lock:
            ids = [r.aggregate_id for r in self.views.recognitions.rows.values()
                   if r.attrs["rider_id"] == rider_id]
        now = self.clock()
        found = sorted((self.recognition(i) for i in ids), key=lambda r: r.conferred_at)
        return [r for r in found if include_inactive or r.status_at(now) == "ACTIVE"]

    def _note_title(self, violations: Violations, title_id: str) -> None:
        if check_id(violations, "title_id", title_id) \
                and self.found(title_id, RecognitionTitle) is None:
            violations.missing("title_id", "recognition_title", title_id)

    # ------------------------------------------------------------------ credentials

    def export_credential(self, *, award_id: str) -> tuple[dict[str, Any], str]:
        require_ids(award_id=award_id)
        award = self.award(award_id)
        badge = self.badge_class(award.badge_class_id)
        criteria = badge.criteria(award.criteria_version)
        self.views.catch_up()
        credential = ob3.open_badge(
            urls=self.urls, award=award, badge_class=badge,
            criteria_narrative=criteria.narrative or criteria.describe(),
            issuer_name=self._issuer_name(badge.issuer_id),
            status=self.views.status_lists.place(award_id))
        return credential, ob3.sign(self.issuer_keys, self.urls, credential, badge.issuer_id)

    def baked_credential(self, *, award_id: str, jwt: str) -> tuple[bytes, str]:
        """The award's signed credential baked into its badge's uploaded picture (OB 3.0
        §5.3): what a rider can post anywhere a picture goes."""
        badge = self.badge_class(self.award(award_id).badge_class_id)
        if not badge.image:
            raise FailedPrecondition("the badge class has no uploaded picture to bake the "
                                     "credential into", reason="BADGE_HAS_NO_IMAGE")
        picture = base64.b64decode(badge.image["data"])
        media_type = badge.image["media_type"]
        bake = baking.bake_png if media_type == "image/png" else baking.bake_svg
        try:
            return bake(picture, jwt), media_type
        except baking.NotBaked as error:
            # A picture stored before uploads were read whole (a truncated PNG, say): the
            # credential itself still exports; upload a new picture to bake it.
            raise FailedPrecondition(f"the badge class's picture cannot be baked into: {error}; "
                                     "upload it again", reason="BADGE_IMAGE_UNREADABLE") from None

    def verify_credential(self, *, jwt: str) -> dict[str, Any]:
        """OB 3.0 §8.2.6-7 and the award's standing now: VALID, TAMPERED, UNKNOWN_KEY,
        REVOKED, EXPIRED, NOT_YET_VALID or UNKNOWN_AWARD, with the problems found."""
        v = Violations()
        v.require(len(jwt) <= baking.MAX_CREDENTIAL_CHARS, "credential_jwt",
                  f"at most {baking.MAX_CREDENTIAL_CHARS} characters", TEXT_TOO_LONG)
        v.raise_if_any()
        try:
            checked = ob3.check_signed(jwt.strip(), self.issuer_keys, self.clock())
        except Malformed as error:
            raise InvalidArgument([FieldViolation("credential_jwt", str(error),
                                                  "CREDENTIAL_MALFORMED")]) from None
        result = {"verdict": checked.verdict, "problems": list(checked.problems),
                  "signature_valid": checked.credential is not None, "status": "",
                  "award_id": "", "credential": checked.credential}
        if checked.credential is None:
            return {**result, "valid": False}
        award_id = str(checked.credential.get("id", "")).removeprefix("urn:uuid:")
        try:
            award = self.award(award_id)
        except (NotFound, InvalidArgument):  # signed by our key, but for no award we know
            return {**result, "verdict": "UNKNOWN_AWARD", "valid": False,
                    "problems": ["no such award in this Qiji"]}
        status = award.status_at(self.clock())
        result.update(award_id=award_id, status=status)
        if status == "REVOKED":
            result.update(verdict="REVOKED", problems=[
                f"the award was revoked on {award.revoked_at.date().isoformat()}"
                if award.revoked_at else "the award was revoked"])
        elif status == "EXPIRED" and checked.verdict == "VALID":
            result.update(verdict="EXPIRED", problems=["the award has expired"])
        return {**result, "valid": result["verdict"] == "VALID"}

    def issuer_keys_json(self) -> dict[str, Any]:
        return self.issuer_keys.jwks(self.urls)

    def issuer_profile(self, *, issuer_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """The issuer's OB 3.0 Profile and its did:web DID document. Only an organisation that
        issues a badge class has one: the public face lists no other organisation."""
        require_ids(issuer_id=issuer_id)
        self._require_issuer(issuer_id)
        name = self._issuer_name(issuer_id)
        profile = ob3.issuer_profile(urls=self.urls, organisation_id=issuer_id, name=name)
        return profile, ob3.did_document(self.urls, issuer_id, self.issuer_keys)

    def achievement(self, *, badge_class_id: str) -> dict[str, Any]:
        require_ids(badge_class_id=badge_class_id)
        badge = self.badge_class(badge_class_id)
        criteria = badge.criteria()
        issuer = ob3.issuer_profile(urls=self.urls, organisation_id=badge.issuer_id,
                                    name=self._issuer_name(badge.issuer_id))
        return {"@context": ob3.OB3_CONTEXT, **ob3.achievement(
            urls=self.urls, badge_class=badge,
            criteria_narrative=criteria.narrative or criteria.describe(), issuer=issuer)}

    def achievements(self, *, issuer_id: str, page_size: int, page_token: str
                     ) -> tuple[list[dict[str, Any]], str]:
        if issuer_id:
            require_ids(issuer_id=issuer_id)
        self.views.catch_up()
        ids, token = self.views.classes.select({"issuer_id": issuer_id}, page_size=page_size,
                                               page_token=page_token)
        return [self.achievement(badge_class_id=i) for i in ids], token

    def badge_image(self, *, badge_class_id: str) -> dict[str, Any]:
        require_ids(badge_class_id=badge_class_id)
        badge = self.badge_class(badge_class_id)
        if not badge.image:
            raise NotFound("badge_image", badge_class_id)
        return {"data": base64.b64decode(badge.image["data"]),
                "media_type": badge.image["media_type"], "sha256": badge.image["sha256"]}

    def status_list(self, *, issuer_id: str, list_number: int) -> tuple[dict[str, Any], str]:
        """The issuer's Bitstring status list credential (revocation), signed like the
        credentials that point at it."""
        v = Violations()
        check_id(v, "issuer_id", issuer_id)
        v.require(0 <= list_number < 1_000_000, "list_number", "must be 0 to 999999",
                  VALUE_OUT_OF_RANGE)
        v.raise_if_any()
        self._require_issuer(issuer_id)
        found = self.views.status_lists.list_of(issuer_id, list_number)
        if found is None:
            raise NotFound("status_list", f"{issuer_id}/{list_number}")
        revoked, changed = found
        credential = ob3.status_list_credential(
            urls=self.urls, organisation_id=issuer_id, list_number=list_number,
            revoked=revoked, valid_from=changed)
        return credential, ob3.sign(self.issuer_keys, self.urls, credential, issuer_id)

    def _require_issuer(self, issuer_id: str) -> None:
        self.views.catch_up()
        if issuer_id not in self.views.status_lists.issuers():
            raise NotFound("issuer", issuer_id)

    def _issuer_name(self, issuer_id: str) -> str:
        return self.get(Reference.create_id(issuer_id), Reference, "organisation").name

    # ------------------------------------------------------------------ followers

    IDENTITY_TOPICS = (*identity_events.RIDER_STATUS_TOPICS, identity_events.ORGANISATION_CREATED)
    TRAINING_TOPICS = (training_events.LEARNER_NOTED, training_events.COURSE_COMPLETED)
    # A verified report counts; one the rider's unsatisfied rating reopened counts no more,
    # until the street office upholds it (a second REPORT_VERIFIED).
    GOVERNANCE_TOPICS = (governance_events.REPORT_VERIFIED, governance_events.REPORT_REOPENED)

    def follow_identity(self, upstream: UpstreamEvent, processing: ProcessingEvent) -> None:
        if upstream.topic == identity_events.ORGANISATION_CREATED:
            kind = "community" if upstream.state["kind"] == "COMMUNITY" else "organisation"
            processing.collect_events(Reference(upstream_id=str(upstream.originator_id),
                                                kind=kind, name=upstream.state["name"]))
            return
        record = self._rider_record_for_policy(str(upstream.originator_id))
        flags = identity_events.rider_flags_after(upstream.topic, record.verified,
                                                  record.suspended, record.left)
        if flags != (record.verified, record.suspended, record.left):
            record.note_status(verified=flags[0], suspended=flags[1], left=flags[2])
        # Reinstatement may make a rider eligible for what they earned while suspended.
        processing.collect_events(record, *self._evaluate(record))

    def follow_training(self, upstream: UpstreamEvent, processing: ProcessingEvent) -> None:
        if upstream.topic == training_events.LEARNER_NOTED:
            processing.collect_events(Reference(upstream_id=str(upstream.originator_id),
                                                kind="learner", name=upstream.state["rider_id"]))
            return
        learner = Reference.create_id(str(upstream.originator_id))
        if not self.exists(learner):
            return  # a learner training never announced: nothing to count it for
        rider_id = self.get(learner, Reference, "learner").name
        record = self._rider_record_for_policy(rider_id)
        s = upstream.state
        record.note_completion(course_id=s["course_id"], track=s["track"], result=s["result"],
                               at=s["at"], position=upstream.position)
        processing.collect_events(record, *self._evaluate(record))

    def follow_governance(self, upstream: UpstreamEvent, processing: ProcessingEvent) -> None:
        s = upstream.state
        record = self._rider_record_for_policy(s["rider_id"])
        if upstream.topic == governance_events.REPORT_REOPENED:
            report_id = str(upstream.originator_id)
            if s["was_verified"] and report_id in record.verified_reports:
                # Awards already made stand (they were true when made); the report no longer
                # counts toward the next.
                record.withdraw_verified_report(report_id=report_id, at=s["at"])
                processing.collect_events(record)
            return
        record.note_verified_report(report_id=str(upstream.originator_id), at=s["at"],
                                    position=upstream.position)
        processing.collect_events(record, *self._evaluate(record))

    def catch_up_upstream(self) -> None:
        if self.identity_follower is not None:
            self.identity_follower.catch_up()

    # ------------------------------------------------------------------ evaluation

    def _evaluate(self, record: RiderRecord) -> list[Award]:
        """Awards every badge whose current criteria the record now meets, the moment it
        meets them; the record holds each in the same save."""
        if not record.is_active:
            return []
        now = self.clock()
        rungs = self._rungs()
        met: dict[str, tuple[BadgeClass, list[dict[str, Any]]]] = {}
        for badge_class_id in rungs:
            if not self._may_award(record, rungs, badge_class_id):
                continue
            badge = self.badge_class(badge_class_id)
            evidence = evaluate(badge.criteria(), record, now)
            if evidence is not None:
                met[badge_class_id] = (badge, evidence)
        # Meeting 青蜂 and 金蜂 at once earns 金蜂 alone: the lower is passed, not grown.
        awards: list[Award] = []
        for badge_class_id, (badge, evidence) in met.items():
            if not above(rungs, badge_class_id) & set(met):
                awards += self._award(record, badge, AUTOMATIC, evidence, "", now, rungs)
        return awards

    def _may_award(self, record: RiderRecord, rungs: dict[str, Rung], badge_class_id: str
                   ) -> bool:
        return not (badge_class_id in record.held or badge_class_id in record.revoked_classes
                    or self._beyond(record, rungs, badge_class_id))

    @staticmethod
    def _beyond(record: RiderRecord, rungs: dict[str, Rung], badge_class_id: str) -> str:
        """The class the rider holds (or grew into) above this one on its ladder, or "": a
        rider who grew from 青蜂 to 金蜂 is never made a 青蜂 again."""
        if badge_class_id in record.grown:
            return record.grown[badge_class_id]["into"]
        return next((c for c in sorted(above(rungs, badge_class_id))
                     if c in record.held or c in record.grown), "")

    def _award(self, record: RiderRecord, badge: BadgeClass, kind: str,
               evidence: list[dict[str, Any]], reason: str, now: datetime,
               rungs: dict[str, Rung]) -> list[Award]:
        """The new award, then each lower award on its ladder the rider held, grown into it
        (all saved together with the record)."""
        expires_at = now + timedelta(days=badge.validity_days) if badge.validity_days else None
        award = Award(rider_id=record.rider_id, badge_class_id=str(badge.id),
                      criteria_version=badge.criteria_version, kind=kind, evidence=evidence,
                      reason=reason, awarded_by=context.current().actor.principal,
                      awarded_at=now, expires_at=expires_at)
        record.hold(badge_class_id=str(badge.id), award_id=str(award.id))
        grown = []
        for lower_class_id in below(rungs, str(badge.id)):
            lower_id = record.held.get(lower_class_id)
            if lower_id is None:
                continue
            lower = self.get(lower_id, Award, "award")
            lower.grow_into(award_id=str(award.id), at=now)
            record.grow(lower_class_id, into_badge_class_id=str(badge.id))
            if not award.grown_from:  # the nearest rung it grew from
                award.note_grown_from(award_id=lower_id)
            grown.append(lower)
        return [award, *grown]

    # ------------------------------------------------------------------ re-evaluation

    def run_reevaluations(self, batch: int = REEVALUATION_BATCH) -> int:
        """Runs every unfinished re-evaluation to its end, batch by batch; the awards made.
        Safe to run on several replicas at once and to kill at any moment: each batch is one
        save, guarded by the job's version."""
        self.reevaluation_wanted.clear()
        made = 0
        for job_id in self.views.running_reevaluations():
            while True:
                result = self.execute(partial(self._reevaluate_batch, job_id, batch))
                made += result.get("awarded", 0)
                if result.get("done", True):
                    break
        return made

    def _reevaluate_batch(self, job_id: str, batch: int) -> Outcome:
        job = self.get(job_id, Reevaluation, "reevaluation")
        if job.status != "RUNNING":
            return Outcome([], {"done": True})
        badge = self.badge_class(job.badge_class_id)
        if badge.criteria_version != job.criteria_version:
            job.finish(superseded=True)
            log.info("reevaluation.superseded", badge_class_id=job.badge_class_id,
                     criteria_version=job.criteria_version, evaluated=job.evaluated,
                     awarded=job.awarded)
            return Outcome([job], {"done": True})
        riders = self.views.riders_after(job.through_position, batch)
        if not riders:
            job.finish(superseded=False)
            log.info("reevaluation.finished", badge_class_id=job.badge_class_id,
                     criteria_version=job.criteria_version, evaluated=job.evaluated,
                     awarded=job.awarded)
            return Outcome([job], {"done": True})
        now, rungs, changed = self.clock(), self._rungs(), []
        badge_class_id = job.badge_class_id
        for _, rider_id in riders:
            record = self.get(RiderRecord.create_id(rider_id), RiderRecord, "rider")
            if not record.is_active or not self._may_award(record, rungs, badge_class_id):
                continue
            evidence = evaluate(badge.criteria(), record, now)
            if evidence is not None:
                changed += [record, *self._award(record, badge, AUTOMATIC, evidence, "", now,
                                                 rungs)]
        awarded = sum(1 for a in changed if isinstance(a, Award) and a.status == "ACTIVE")
        job.progress(through_position=riders[-1][0], evaluated=len(riders), awarded=awarded)
        log.info("reevaluation.progressed", badge_class_id=badge_class_id,
                 criteria_version=job.criteria_version, through_position=job.through_position,
                 evaluated=job.evaluated, awarded=job.awarded)
        return Outcome([job, *changed], {"done": False, "awarded": awarded})

    def reevaluation(self, badge_class_id: str, criteria_version: int) -> Reevaluation:
        return self.get(Reevaluation.create_id(badge_class_id, criteria_version),
                        Reevaluation, "reevaluation")

    # ------------------------------------------------------------------ ceremonies

    def record_award_ceremony(self, *, street_id: str, held_at: datetime | None,
                              service_space_id: str, place: str,
                              officials: list[dict[str, str]], award_ids: list[str],
                              violations: Violations | None = None) -> CommandResult:
        """An award ceremony (颁奖仪式) held in a street: when, where (one of the street's
        service spaces, or a place in words), the officials present, and the awards handed
        over, each marked with the ceremony in the same save."""
        v = violations if violations is not None else Violations()
        now = self.clock()
        v.require_given(held_at, "held_time", "must be set", FIELD_REQUIRED)
        if held_at is not None:
            v.require(held_at <= now, "held_time", "must not be in the future (record a "
                      "ceremony once it was held)", TIME_IN_THE_FUTURE)
            v.require(held_at >= now - CEREMONY_MAX_AGE, "held_time",
                      "must be within the last 366 days", TIME_TOO_LONG_AGO)
        check_text(v, "place", place, MAX_TEXT, required=False)
        if not service_space_id and not place.strip():
            v.add("place", "name a service_space_id or the place in words", FIELD_REQUIRED)
        v.require(1 <= len(officials) <= MAX_OFFICIALS, "officials",
                  f"1 to {MAX_OFFICIALS} officials present", "OFFICIALS_REQUIRED"
                  if not officials else VALUE_OUT_OF_RANGE)
        for i, o in enumerate(officials[:MAX_OFFICIALS]):
            check_text(v, f"officials[{i}].name", o["name"], 100)
            check_text(v, f"officials[{i}].role", o["role"], 100)
        v.require(1 <= len(award_ids) <= 500, "award_ids", "1 to 500 awards presented",
                  FIELD_REQUIRED if not award_ids else VALUE_OUT_OF_RANGE)
        v.require(len(set(award_ids)) == len(award_ids), "award_ids", "lists an award twice",
                  DUPLICATE_VALUE)
        note_reference(self, v, street_id, "street_id", "organisation", self.catch_up_upstream)
        for i, award_id in enumerate(award_ids[:500]):
            if check_id(v, f"award_ids[{i}]", award_id) and self.found(award_id, Award) is None:
                v.missing(f"award_ids[{i}]", "award", award_id)
        if service_space_id and check_id(v, "service_space_id", service_space_id):
            street = self.directory.service_space_street(service_space_id) \
                if self.directory is not None else None
            if street is None:
                v.missing("service_space_id", "service_space", service_space_id)
            elif street != street_id:
                v.add("service_space_id", f"is a service space of street {street}, not of "
                      f"{street_id}", "SERVICE_SPACE_NOT_IN_STREET")
        v.raise_if_any()
        assert held_at is not None
        # A street office presents its own riders' awards only (the city admin, any): the
        # same answer whether the award exists or not.
        for award_id in award_ids:
            if not self.caller_owns("award", award_id):
                raise PermissionDenied(f"award {award_id} is not of a rider of the caller's "
                                       "street", reason="OUT_OF_SCOPE")

        def decide() -> Outcome:
            ceremony = AwardCeremony(
                street_id=street_id, held_at=held_at, service_space_id=service_space_id,
                place=place.strip(),
                officials=[{"official_name": o["name"].strip(), "role": o["role"].strip()}
                           for o in officials],
                award_ids=list(award_ids), recorded_by=context.current().actor.principal)
            awards = [self.get(a, Award, "award") for a in award_ids]
            for award in awards:
                award.present(ceremony_id=str(ceremony.id), at=held_at)
            return Outcome([ceremony, *awards], {"ceremony_id": str(ceremony.id),
                                                 "version": ceremony.version})
        return self.execute(decide, id_key="ceremony_id")

    def ceremony(self, ceremony_id: str) -> AwardCeremony:
        return self.get(ceremony_id, AwardCeremony, "award_ceremony")

    def award_ceremonies(self, *, street_id: str, page_size: int, page_token: str
                         ) -> tuple[list[AwardCeremony], str]:
        if street_id:
            require_ids(street_id=street_id)
        self.views.catch_up()
        ids, token = self.views.ceremonies.select({"street_id": street_id},
                                                  page_size=page_size, page_token=page_token)
        return [self.ceremony(i) for i in ids], token

    def _rider_record(self, rider_id: str, *, catch_up: bool = True) -> RiderRecord:
        return self.followed(RiderRecord.create_id(rider_id), RiderRecord, "rider", rider_id,
                             self.catch_up_upstream if catch_up else None)

    def _require_rider(self, violations: Violations, rider_id: str) -> None:
        """The request's rider, looked up once nothing else is wrong with it
        (QijiApplication.require_riders)."""
        self.require_riders(violations, [("rider_id", rider_id)], RiderRecord.create_id,
                            self.catch_up_upstream)

    def _note_badge_class(self, violations: Violations, badge_class_id: str,
                          field: str = "badge_class_id") -> None:
        """A badge class id that is malformed or names none (BADGE_CLASS_NOT_FOUND) is added
        to `violations`."""
        if check_id(violations, field, badge_class_id) \
                and self.found(badge_class_id, BadgeClass) is None:
            violations.missing(field, "badge_class", badge_class_id)

    def _rider_record_for_policy(self, rider_id: str) -> RiderRecord:
        return self.current_or_new(RiderRecord.create_id(rider_id), RiderRecord,
                                   lambda: RiderRecord(rider_id=rider_id))


def _image_state(image: bytes, media_type: str) -> dict[str, str]:
    return {"media_type": media_type, "data": base64.b64encode(image).decode(),
            "sha256": hashlib.sha256(image).hexdigest()}


def load_issuer_keys(settings: Settings) -> IssuerKeys:
    """The issuer's key set from the settings: BADGES_RSA_SIGNING_KEY / _FILE and
    BADGES_SIGNING_KEY / _FILE (Ed25519), BADGES_SIGNING_ALG choosing the one that signs.
    Only the embedded default makes missing keys (once, kept in the data folder)."""
    create = settings.persistence == "sqlite"
    try:
        # Read and checked at start with every other setting (shared/config.py OWN_SETTINGS).
        return IssuerKeys(
            rsa_key=ob3.load_rsa(settings.own_setting("RSA_SIGNING_KEY"),
                                 settings.own_setting("RSA_SIGNING_KEY_FILE"), create=create),
            ed25519_key=ob3.load_ed25519(settings.own_setting("SIGNING_KEY"),
                                         settings.own_setting("SIGNING_KEY_FILE"), create=create),
            alg=settings.own_setting("SIGNING_ALG"))
    except (ValueError, OSError) as error:
        raise ConfigError(f"badges signing keys: {error}") from None


def public_urls(settings: Settings) -> PublicUrls:
    """QIJI_ISSUER_URL (required on PostgreSQL: the city's own https:// address) and
    QIJI_ISSUER_ID_FORM (`https`, the default, or `did:web`)."""
    url = settings.own_setting("ISSUER_URL")
    if not url:
        if settings.persistence != "sqlite":
            raise ConfigError("QIJI_ISSUER_URL must be set: the https:// address of the city's "
                              "public credentials face (issuer ids, keys, status lists)")
        url = f"http://127.0.0.1:{CREDENTIALS_HTTP_PORT}"
    form = settings.own_setting("ISSUER_ID_FORM")  # https or did:web, checked at start
    try:
        return PublicUrls(url, did_web=form == "did:web")
    except ValueError as error:
        raise ConfigError(str(error)) from None


def narrative_shown(evidence: dict[str, Any]) -> str:
    """An official's narrative may name people (the masking table decides); what Qiji wrote of
    the events that met the criteria does not."""
    if evidence["source"] != "official":
        return evidence["narrative"]
    return masking.show_to_caller(masking.FREE_TEXT, evidence["narrative"])


def _check_image(v: Violations, image: bytes, media_type: str) -> None:
    problem = image_problem(image, media_type)
    if problem is not None:
        reason, description = problem
        v.add("image_media_type" if reason == IMAGE_MEDIA_TYPE_NOT_ALLOWED else "image",
              description, reason)


__all__ = ["BadgesApplication", "Explanation", "Track"]
