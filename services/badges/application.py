"""The badges service layer: volunteer service, badge classes, awards (automatic and manual),
credentials, and the policies that follow identity, training and governance."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from eventsourcing.application import ProcessingEvent

from services.badges.credentials import IssuerKey, open_badge, verify_signature
from services.badges.domain.criteria import Criteria, Track, evaluate, parse_criteria
from services.badges.domain.model import Award, BadgeClass, RiderRecord, VolunteerShift
from services.badges.views import BadgesViews
from services.governance import events as governance_events
from services.identity import events as identity_events
from services.training import events as training_events
from shared import context
from shared.application import Outcome, QijiApplication
from shared.config import Settings
from shared.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Violations,
    is_uuid,
    require_ids,
)
from shared.followers import Follower, UpstreamEvent
from shared.references import Reference, require_reference
from shared.tenancy import Owners
from shared.values import parse_hours

MAX_TEXT = 200
AUTOMATIC, MANUAL = "AUTOMATIC", "MANUAL"


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
                 issuer_key: IssuerKey | None = None):
        super().__init__(settings, master_key)
        self.clock = clock or (lambda: datetime.now(UTC))
        self.issuer_key = issuer_key or IssuerKey.load(
            settings.signing_key, settings.signing_key_file,
            create=settings.persistence == "sqlite")
        self.views = BadgesViews(self)
        self.views.catch_up()
        self.identity_follower: Follower | None = None

    # ------------------------------------------------------------------ volunteer service

    def log_volunteer_service(self, *, rider_id: str, community_id: str, activity: str,
                              started_at: datetime | None, hours: str) -> dict[str, Any]:
        require_ids(rider_id=rider_id, community_id=community_id)
        v = Violations()
        v.require(bool(activity.strip()) and len(activity) <= MAX_TEXT, "activity",
                  f"1 to {MAX_TEXT} characters")
        v.require(started_at is not None, "start_time", "must be set")
        if started_at is not None:
            v.require(started_at <= self.clock(), "start_time", "must not be in the future")
        parsed = parse_hours(v, "hours", hours, maximum=Decimal(24))
        v.raise_if_any()
        assert started_at is not None and parsed is not None
        require_reference(self, community_id, "community_id", "community", self.catch_up_upstream)
        self._rider_record(rider_id)

        def decide() -> Outcome:
            record = self._rider_record(rider_id, catch_up=False)
            if record.left:
                raise FailedPrecondition("the rider has left the programme", reason="RIDER_LEFT")
            shift = VolunteerShift(rider_id=rider_id, community_id=community_id,
                                   activity=activity.strip(), started_at=started_at,
                                   hours=parsed)
            return Outcome([shift], {"shift_id": str(shift.id), "version": shift.version})
        return self.execute(decide)

    def confirm_volunteer_service(self, *, shift_id: str
                                  ) -> dict[str, Any]:
        require_ids(shift_id=shift_id)

        def decide() -> Outcome:
            shift = self.get(shift_id, VolunteerShift, "shift")
            record = self._rider_record(shift.rider_id, catch_up=False)
            shift.confirm()
            record.count_service(shift_id=shift_id, hours=shift.hours, at=shift.started_at)
            awards = self._evaluate(record)
            return Outcome([shift, record, *awards], {
                "shift_id": shift_id, "version": shift.version,
                "award_ids": [str(a.id) for a in awards]})
        return self.execute(decide, serialise_on=shift_id)

    def reject_volunteer_service(self, *, shift_id: str, reason: str
                                 ) -> dict[str, Any]:
        require_ids(shift_id=shift_id)
        _require_text("reason", reason)

        def decide() -> Outcome:
            shift = self.get(shift_id, VolunteerShift, "shift")
            shift.reject(reason.strip())
            return Outcome([shift], {"shift_id": shift_id, "version": shift.version})
        return self.execute(decide, serialise_on=shift_id)

    def shift(self, shift_id: str, version: int | None = None) -> VolunteerShift:
        return self.get(shift_id, VolunteerShift, "shift", version)

    def volunteer_service(self, *, rider_id: str, status: str, page_size: int, page_token: str
                          ) -> tuple[list[VolunteerShift], str, Decimal]:
        require_ids(rider_id=rider_id)
        record = self._rider_record(rider_id)
        self.views.catch_up()
        ids, token = self.views.shifts.select({"rider_id": rider_id, "status": status},
                                              page_size=page_size, page_token=page_token)
        confirmed = sum((s["hours"] for s in record.shifts.values()), Decimal(0))
        return [self.shift(i) for i in ids], token, confirmed

    # ------------------------------------------------------------------ tenancy

    def owner_resolvers(self) -> dict[str, Callable[[str], Owners | None]]:
        return {**super().owner_resolvers(), "shift_community": self._shift_community_owners,
                "award": self._award_owners}

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
                           issuer_id: str, criteria: dict[str, Any], validity_days: int
                           ) -> dict[str, Any]:
        v = Violations()
        v.require(bool(name.strip()) and len(name) <= MAX_TEXT, "name",
                  f"1 to {MAX_TEXT} characters")
        v.require(len(description) <= 2000, "description", "at most 2000 characters")
        v.require(len(image_url) <= 500 and (not image_url or image_url.startswith(
            ("https://", "http://", "urn:"))), "image_url", "an http(s) or urn reference")
        v.require(0 <= validity_days <= 36500, "validity_days", "must be 0 to 36500")
        parsed = self._criteria(v, criteria)
        v.raise_if_any()
        assert parsed is not None
        require_reference(self, issuer_id, "issuer_id", "organisation", self.catch_up_upstream)

        def decide() -> Outcome:
            badge = BadgeClass(name=name.strip(), description=description.strip(),
                               image_url=image_url, issuer_id=issuer_id,
                               criteria=parsed.to_state(), validity_days=validity_days)
            return Outcome([badge], {"badge_class_id": str(badge.id), "version": badge.version})
        return self.execute(decide)

    def revise_badge_criteria(self, *, badge_class_id: str, criteria: dict[str, Any]
                              ) -> dict[str, Any]:
        require_ids(badge_class_id=badge_class_id)
        v = Violations()
        parsed = self._criteria(v, criteria)
        v.raise_if_any()
        assert parsed is not None

        def decide() -> Outcome:
            badge = self.get(badge_class_id, BadgeClass, "badge_class")
            badge.revise(criteria=parsed.to_state())
            return Outcome([badge], {"badge_class_id": badge_class_id, "version": badge.version})
        return self.execute(decide)

    def badge_class(self, badge_class_id: str, version: int | None = None) -> BadgeClass:
        return self.get(badge_class_id, BadgeClass, "badge_class", version)

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
                    evidence: list[dict[str, Any]]) -> dict[str, Any]:
        """A manual award by an official: a written reason and at least one piece of evidence."""
        require_ids(rider_id=rider_id, badge_class_id=badge_class_id)
        v = Violations()
        v.require(bool(reason.strip()) and len(reason) <= 1000, "reason",
                  "1 to 1000 characters: why the rider deserves it")
        v.require(bool(evidence), "evidence", "at least one piece of evidence")
        for i, e in enumerate(evidence):
            v.require(bool(e["reference"].strip() or e["narrative"].strip()),
                      f"evidence[{i}]", "a reference or a narrative")
        v.raise_if_any()
        self._rider_record(rider_id)

        def decide() -> Outcome:
            badge = self.badge_class(badge_class_id)
            record = self._rider_record(rider_id, catch_up=False)
            if record.left:
                raise FailedPrecondition("the rider has left the programme", reason="RIDER_LEFT")
            record.require_not_holding(badge_class_id)
            now = self.clock()
            award = self._award(record, badge, MANUAL, [
                {"source": "official", "reference": e["reference"], "position": 0,
                 "narrative": e["narrative"], "at": e.get("at") or now} for e in evidence],
                reason.strip(), now)
            return Outcome([record, award], {"award_id": str(award.id), "version": 1})
        return self.execute(decide)

    def revoke_award(self, *, award_id: str, reason: str
                     ) -> dict[str, Any]:
        require_ids(award_id=award_id)
        _require_text("reason", reason)

        def decide() -> Outcome:
            award = self.get(award_id, Award, "award")
            record = self._rider_record(award.rider_id, catch_up=False)
            award.revoke(reason.strip(), context.current().actor.principal, self.clock())
            record.release(award.badge_class_id, award_id, revoked=True)
            return Outcome([award, record], {"award_id": award_id, "version": award.version})
        return self.execute(decide)

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
            if self.execute(decide):
                expired += 1
        return expired

    def award(self, award_id: str, version: int | None = None) -> Award:
        return self.get(award_id, Award, "award", version)

    def rider_awards(self, *, rider_id: str, include_inactive: bool) -> list[Award]:
        require_ids(rider_id=rider_id)
        self._rider_record(rider_id)
        self.views.catch_up()
        awards = [self.award(i) for i in self.views.awards_of(rider_id)]
        now = self.clock()
        return [a for a in awards if include_inactive or a.status_at(now) == "ACTIVE"]

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
        the evidence events, who acted."""
        require_ids(rider_id=rider_id, badge_class_id=badge_class_id)
        record = self._rider_record(rider_id)
        badge = self.badge_class(badge_class_id)
        award_id = record.held.get(badge_class_id)
        if award_id is None:
            raise NotFound("award", f"{badge_class_id} of rider {rider_id}")
        award = self.award(award_id)
        criteria = badge.criteria(award.criteria_version)
        kind = "an automatic" if award.kind == AUTOMATIC else "a manual"
        lines = [f"Rider {rider_id} holds {badge.name} (award {award_id}), {kind}"
                 f" award made {award.awarded_at.isoformat()} by {award.awarded_by}.",
                 f"Criteria version {award.criteria_version}: {criteria.describe()}."]
        if award.reason:
            lines.append(f"Reason: {award.reason}")
        lines += [f"- {e['source']} {e['reference']}"
                  + (f" (log position {e['position']})" if e["position"] else "")
                  + f": {e['narrative']}" for e in award.evidence]
        if award.expires_at:
            lines.append(f"Valid until {award.expires_at.isoformat()}.")
        return Explanation(award, badge, criteria, "\n".join(lines))

    # ------------------------------------------------------------------ credentials

    def export_credential(self, *, award_id: str) -> tuple[dict[str, Any], str]:
        require_ids(award_id=award_id)
        award = self.award(award_id)
        badge = self.badge_class(award.badge_class_id)
        issuer = self.get(Reference.create_id(badge.issuer_id), Reference, "organisation")
        criteria = badge.criteria(award.criteria_version)
        credential = open_badge(award=award, badge_class=badge,
                                criteria_narrative=criteria.narrative or criteria.describe(),
                                issuer_name=issuer.name, rider_id=award.rider_id)
        return credential, self.issuer_key.sign(credential)

    def verify_credential(self, *, jwt: str) -> dict[str, Any]:
        v = Violations()
        v.require(jwt.count(".") == 2 and len(jwt) < 100_000, "credential_jwt",
                  "a compact JWS: header.payload.signature")
        v.raise_if_any()
        credential = verify_signature(jwt, {self.issuer_key.key_id: self.issuer_key.public})
        if credential is None:
            return {"signature_valid": False, "status": "", "valid": False,
                    "problems": ["the signature does not verify under the issuer's key"],
                    "award_id": ""}
        award_id = str(credential.get("id", "")).removeprefix("urn:uuid:")
        problems: list[str] = []
        status = ""
        try:
            status = self.award(award_id).status_at(self.clock())
        except (NotFound, InvalidArgument):  # signed by our key, but for no award we know
            problems.append("no such award in this Qiji")
        if status and status != "ACTIVE":
            problems.append(f"the award is {status.lower()}")
        return {"signature_valid": True, "status": status, "valid": not problems,
                "problems": problems, "award_id": award_id}

    def issuer_keys(self) -> str:
        return json.dumps({"keys": [self.issuer_key.jwk]})

    # ------------------------------------------------------------------ followers

    IDENTITY_TOPICS = (*identity_events.RIDER_STATUS_TOPICS, identity_events.ORGANISATION_CREATED)
    TRAINING_TOPICS = (training_events.LEARNER_NOTED, training_events.COURSE_COMPLETED)
    GOVERNANCE_TOPICS = (governance_events.REPORT_VERIFIED,)

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
        awards = []
        for badge_class_id in self.views.class_ids():
            if badge_class_id in record.held or badge_class_id in record.revoked_classes:
                continue
            badge = self.badge_class(badge_class_id)
            evidence = evaluate(badge.criteria(), record, now)
            if evidence is not None:
                awards.append(self._award(record, badge, AUTOMATIC, evidence, "", now))
        return awards

    def _award(self, record: RiderRecord, badge: BadgeClass, kind: str,
               evidence: list[dict[str, Any]], reason: str, now: datetime) -> Award:
        expires_at = now + timedelta(days=badge.validity_days) if badge.validity_days else None
        award = Award(rider_id=record.rider_id, badge_class_id=str(badge.id),
                      criteria_version=badge.criteria_version, kind=kind, evidence=evidence,
                      reason=reason, awarded_by=context.current().actor.principal,
                      awarded_at=now, expires_at=expires_at)
        record.hold(badge_class_id=str(badge.id), award_id=str(award.id))
        return award

    def _rider_record(self, rider_id: str, *, catch_up: bool = True) -> RiderRecord:
        return self.followed(RiderRecord.create_id(rider_id), RiderRecord, "rider", rider_id,
                             self.catch_up_upstream if catch_up else None)

    def _rider_record_for_policy(self, rider_id: str) -> RiderRecord:
        return self.current_or_new(RiderRecord.create_id(rider_id), RiderRecord,
                                   lambda: RiderRecord(rider_id=rider_id))


def _require_text(field: str, text: str) -> None:
    v = Violations()
    v.require(bool(text.strip()) and len(text) <= 1000, field, "1 to 1000 characters")
    v.raise_if_any()


__all__ = ["BadgesApplication", "Explanation", "Track"]
