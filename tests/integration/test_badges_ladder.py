"""badges over a real store: a badge class created or revised awards the riders who already
meet it (a resumable job), a ladder grows 青蜂骑士 into 金蜂骑士, and a ceremony presents
awards with the officials present."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

import pytest

from services.badges.application import BadgesApplication
from services.badges.domain.model import Reevaluation
from services.badges.public_events import CATALOGUE as BADGES
from services.badges.service import ReevaluationJob
from services.identity.domain.values import OrganisationKind
from shared.context import RequestContext, acting_as
from shared.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from shared.followers import LocalFeed
from shared.tenancy import Reach, TenancyDirectory
from tests.conftest import MASTER_KEY, actor, as_actor, settings_for
from tests.integration.test_badges_app import (
    ADMIN,
    ISSUER_KEYS,
    OFFICE,
    URLS,
    badge,
    criteria,
    new_rider,
    serve,
)


def reevaluate(w, **given) -> int:
    return ReevaluationJob(w["badges"], **given).run_once()


def active(w, rider_id) -> dict[str, str]:
    """badge class -> status of each award the rider holds or grew out of."""
    return {a.badge_class_id: a.status
            for a in w["badges"].rider_awards(rider_id=rider_id, include_inactive=False)}


# ------------------------------------------------------------------ re-evaluation

def test_a_new_badge_class_awards_the_riders_who_already_meet_it(world):
    rider, short = new_rider(world), new_rider(world)
    serve(world, rider, "8")
    serve(world, short, "2")
    golden = badge(world, min_volunteer_hours="8")
    assert active(world, rider) == {}  # nothing yet: the job has not run
    assert reevaluate(world) == 1
    assert active(world, rider) == {golden: "ACTIVE"}
    assert active(world, short) == {}
    award = world["badges"].rider_awards(rider_id=rider, include_inactive=False)[0]
    assert (award.kind, award.awarded_by, award.criteria_version) == (
        "AUTOMATIC", "badges-reevaluation-job", 1)
    job = world["badges"].reevaluation(golden, 1)
    assert (job.status, job.evaluated, job.awarded) == ("FINISHED", 2, 1)
    assert reevaluate(world) == 0  # finished: nothing twice


def test_revised_criteria_award_riders_who_meet_the_new_version(world):
    golden = badge(world, min_volunteer_hours="20")
    rider = new_rider(world)
    serve(world, rider, "6")
    reevaluate(world)
    assert active(world, rider) == {}
    with as_actor(ADMIN):
        world["badges"].revise_badge_criteria(badge_class_id=golden,
                                              criteria=criteria(min_volunteer_hours="5"))
    assert world["badges"].reevaluation_wanted.is_set()  # the job is woken, not polled
    assert reevaluate(world) == 1
    assert world["badges"].rider_awards(rider_id=rider, include_inactive=False)[0] \
        .criteria_version == 2


def test_a_reevaluation_killed_mid_way_resumes_after_its_last_batch(world, store_env):
    riders = [new_rider(world) for _ in range(5)]
    for r in riders:
        serve(world, r, "3")
    golden = badge(world, min_volunteer_hours="3")
    job_id = str(Reevaluation.create_id(golden, 1))
    with as_actor(actor("job", "service")):  # two batches of two, then the process dies
        for _ in range(2):
            world["badges"].execute(lambda: world["badges"]._reevaluate_batch(job_id, 2))
    world["badges"].close()
    again = BadgesApplication(settings_for("badges", store_env), MASTER_KEY,
                              clock=world["clock"], issuer_keys=ISSUER_KEYS, urls=URLS)
    try:
        assert again.reevaluation(golden, 1).evaluated == 4
        assert ReevaluationJob(again).run_once() == 1  # the fifth, once
        held = [again.rider_awards(rider_id=r, include_inactive=True) for r in riders]
        assert [len(h) for h in held] == [1] * 5
        assert again.reevaluation(golden, 1).status == "FINISHED"
    finally:
        world["badges"] = again  # the fixture closes it


def test_a_job_overtaken_by_a_newer_revision_stops_and_the_newer_one_awards(world):
    rider = new_rider(world)
    serve(world, rider, "4")
    golden = badge(world, min_volunteer_hours="4")
    with as_actor(ADMIN):
        world["badges"].revise_badge_criteria(badge_class_id=golden,
                                              criteria=criteria(min_volunteer_hours="3"))
    assert reevaluate(world) == 1
    assert world["badges"].reevaluation(golden, 1).status == "SUPERSEDED"
    assert world["badges"].rider_awards(rider_id=rider, include_inactive=False)[0] \
        .criteria_version == 2


def test_two_replicas_running_the_job_at_once_award_each_rider_once(world, store_env):
    riders = [new_rider(world) for _ in range(6)]
    for r in riders:
        serve(world, r, "2")
    badge(world, min_volunteer_hours="2")
    other = BadgesApplication(settings_for("badges", store_env), MASTER_KEY,
                              clock=world["clock"], issuer_keys=ISSUER_KEYS, urls=URLS)
    made: list[int] = []
    start = threading.Barrier(2)

    def run(app):
        start.wait()
        made.append(ReevaluationJob(app, batch=1).run_once())  # six batches each, interleaved
    try:
        threads = [threading.Thread(target=run, args=(a,)) for a in (world["badges"], other)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        other.close()
    assert sum(made) == 6
    assert [len(world["badges"].rider_awards(rider_id=r, include_inactive=True))
            for r in riders] == [1] * 6


# ------------------------------------------------------------------ the ladder

def ladder(w):
    green = badge(w, "青蜂骑士", min_volunteer_hours="2")
    with as_actor(ADMIN):
        golden = w["badges"].create_badge_class(
            name="金蜂骑士", description="", image_url="", issuer_id=w["city"],
            criteria=criteria(min_volunteer_hours="10"), validity_days=0,
            grows_from_badge_class_id=green)["badge_class_id"]
    return green, golden


def test_a_green_bee_grows_into_a_golden_bee_and_the_history_stays(world):
    green, golden = ladder(world)
    rider = new_rider(world)
    first = serve(world, rider, "2")["award_ids"][0]
    second = serve(world, rider, "8")["award_ids"]
    assert len(second) == 1  # 金蜂 only: the grown 青蜂 is not a new award
    assert active(world, rider) == {green: "GROWN", golden: "ACTIVE"}
    app = world["badges"]
    lower, higher = app.award(first), app.award(second[0])
    assert (lower.grown_into, higher.grown_from) == (second[0], first)
    assert app.badge_class(golden).grows_from == green
    assert app.badge_holders(badge_class_id=green, page_size=10, page_token="")[0] == []
    with as_actor(ADMIN):
        why_green = app.explain(rider_id=rider, badge_class_id=green).text
        why_golden = app.explain(rider_id=rider, badge_class_id=golden).text
        _, jwt = app.export_credential(award_id=first)
        verdict = app.verify_credential(jwt=jwt)
    assert "Grown into 金蜂骑士" in why_green and "Grown from 青蜂骑士" in why_golden
    assert (verdict["verdict"], verdict["status"]) == ("VALID", "GROWN")  # not revoked
    serve(world, rider, "2")
    assert len(app.rider_awards(rider_id=rider, include_inactive=True)) == 2  # no new 青蜂
    with as_actor(OFFICE), pytest.raises(FailedPrecondition) as beyond:
        app.grant_badge(rider_id=rider, badge_class_id=green, reason="again",
                        evidence=[{"reference": "x", "narrative": "y"}])
    assert beyond.value.reason == "BADGE_GROWN_BEYOND"
    grown = [(t, d) for t, d in _public(app) if t == "qiji.badges.v1.BadgeGrown"]
    with as_actor(OFFICE):  # still in force, so it can still be withdrawn
        app.revoke_award(award_id=first, reason="证明材料有误")
        assert app.verify_credential(jwt=jwt)["verdict"] == "REVOKED"
    assert app.award(second[0]).status == "ACTIVE"  # the Golden Bee stands on its own
    assert grown == [("qiji.badges.v1.BadgeGrown", {
        "award_id": first, "rider_id": rider, "badge_class_id": green,
        "into_award_id": second[0], "into_badge_class_id": golden,
        "grown_time": grown[0][1]["grown_time"]})]


def test_a_rider_meeting_both_rungs_at_once_is_awarded_the_higher_only(world):
    _, golden = ladder(world)
    rider = new_rider(world)
    assert len(serve(world, rider, "12")["award_ids"]) == 1
    assert active(world, rider) == {golden: "ACTIVE"}


def test_a_ladder_that_loops_crosses_issuers_or_branches_is_refused(world):
    green, golden = ladder(world)
    app = world["badges"]
    with as_actor(ADMIN):
        street_badge = app.create_badge_class(
            name="荷睦之星", description="", image_url="", issuer_id=world["street"],
            criteria=criteria(min_volunteer_hours="1"), validity_days=0)["badge_class_id"]

        def refused(badge_class_id, grows_from):
            with pytest.raises(InvalidArgument) as e:
                app.revise_badge_progression(badge_class_id=badge_class_id,
                                             grows_from_badge_class_id=grows_from)
            return [(v.field, v.reason, v.description) for v in e.value.violations]

        assert refused(green, golden) == [(
            "grows_from_badge_class_id", "PROGRESSION_CYCLE",
            "the ladder would loop: 青蜂骑士 grows from 金蜂骑士 grows from 青蜂骑士")]
        assert refused(golden, golden)[0][1] == "PROGRESSION_CYCLE"
        assert refused(street_badge, green)[0][:2] == ("grows_from_badge_class_id",
                                                       "PROGRESSION_ACROSS_ISSUERS")
        with pytest.raises(InvalidArgument) as branch:
            app.create_badge_class(name="银蜂骑士", description="", image_url="",
                                   issuer_id=world["city"],
                                   criteria=criteria(min_volunteer_hours="5"),
                                   validity_days=0, grows_from_badge_class_id=green)
        assert branch.value.violations[0].reason == "PROGRESSION_BRANCHES"
        with pytest.raises(NotFound):
            app.revise_badge_progression(badge_class_id=golden,
                                         grows_from_badge_class_id=str(uuid.uuid4()))
        # Off the ladder and back: each a new progression version.
        app.revise_badge_progression(badge_class_id=golden, grows_from_badge_class_id="")
        app.revise_badge_progression(badge_class_id=golden, grows_from_badge_class_id=green)
    assert app.badge_class(golden).progression_version == 3


# ------------------------------------------------------------------ ceremonies

def test_a_ceremony_presents_awards_with_the_officials_present(world):
    _, golden = ladder(world)
    riders = [new_rider(world) for _ in range(2)]
    awards = [serve(world, r, "10")["award_ids"][0] for r in riders]
    app, now = world["badges"], world["clock"]()
    office = actor("hehuachi", "street_office", organisation_id=world["street"])
    with as_actor(office, rpc="RecordAwardCeremony", request_id="c-1", request=b"c-1"):
        first = app.record_award_ceremony(
            street_id=world["street"], held_at=now - timedelta(hours=2), service_space_id="",
            place="荷悦体育公园", officials=[{"name": "王主任", "role": "街道党工委书记"}],
            award_ids=awards)
    with as_actor(office, rpc="RecordAwardCeremony", request_id="c-1", request=b"c-1"):
        again = app.record_award_ceremony(
            street_id=world["street"], held_at=now - timedelta(hours=2), service_space_id="",
            place="荷悦体育公园", officials=[{"name": "王主任", "role": "街道党工委书记"}],
            award_ids=awards)
    assert again == first  # one ceremony, however often the office retries
    ceremony = app.ceremony(first["ceremony_id"])
    assert [app.award(a).ceremony_id for a in awards] == [first["ceremony_id"]] * 2
    with as_actor(office):
        listed, _ = app.award_ceremonies(street_id=world["street"], page_size=10,
                                         page_token="")
        why = app.explain(rider_id=riders[0], badge_class_id=golden).text
    assert [c.id for c in listed] == [ceremony.id]
    assert "Presented" in why and "街道党工委书记 王主任" in why
    presented = [d for t, d in _public(app) if t == "qiji.badges.v1.AwardPresented"]
    assert [d["award_id"] for d in presented] == awards
    assert presented[0]["street_id"] == world["street"]
    assert "王主任" not in str(presented) and "荷悦" not in str(presented)
    with as_actor(office), pytest.raises(FailedPrecondition) as twice:
        app.record_award_ceremony(
            street_id=world["street"], held_at=now, service_space_id="", place="again",
            officials=[{"name": "王主任", "role": "书记"}], award_ids=awards[:1])
    assert twice.value.reason == "AWARD_ALREADY_PRESENTED"


def test_a_ceremony_with_everything_wrong_is_told_everything_at_once(world):
    app, now = world["badges"], world["clock"]()
    with as_actor(ADMIN), pytest.raises(InvalidArgument) as bad:
        app.record_award_ceremony(
            street_id=world["street"], held_at=now + timedelta(days=1), service_space_id="",
            place="", officials=[{"name": "", "role": "书记"}],
            award_ids=["not-an-id", "not-an-id"])
    assert sorted((v.field, v.reason) for v in bad.value.violations) == [
        ("award_ids", "DUPLICATE_VALUE"), ("award_ids[0]", "INVALID_ID"),
        ("award_ids[1]", "INVALID_ID"), ("held_time", "TIME_IN_THE_FUTURE"),
        ("officials[0].name", "FIELD_REQUIRED"), ("place", "FIELD_REQUIRED")]
    with as_actor(ADMIN), pytest.raises(InvalidArgument) as old:
        app.record_award_ceremony(
            street_id=world["street"], held_at=now.replace(year=1970), service_space_id="",
            place="x", officials=[], award_ids=[])
    assert sorted((v.field, v.reason) for v in old.value.violations) == [
        ("award_ids", "FIELD_REQUIRED"), ("held_time", "TIME_TOO_LONG_AGO"),
        ("officials", "OFFICIALS_REQUIRED")]


def test_a_street_office_presents_only_its_own_riders_awards(world):
    golden = badge(world, min_volunteer_hours="2")
    rider = new_rider(world)
    award = serve(world, rider, "2")["award_ids"][0]
    with as_actor(ADMIN):
        district = world["identity"].create_organisation(
            kind=OrganisationKind.DISTRICT, name="天宁区", parent_id=world["city"],
            department_function=None)["organisation_id"]
        other = world["identity"].create_organisation(
            kind=OrganisationKind.STREET, name="南大街街道", parent_id=district,
            department_function=None)["organisation_id"]
    world["follower"].run_once()
    app = world["badges"]
    app.directory = TenancyDirectory(LocalFeed(world["identity"]))
    app.directory.catch_up()

    def as_office(street):  # as the guard admits a street office to its own street
        who = actor("desk", "street_office", organisation_id=street)
        return acting_as(RequestContext(actor=who, rpc="RecordAwardCeremony", reach=Reach(
            street, None, frozenset({"street_office"}), app.owners)))

    def present(street):
        return app.record_award_ceremony(
            street_id=street, held_at=world["clock"](), service_space_id="", place="x",
            officials=[{"name": "李", "role": "主任"}], award_ids=[award])
    with as_office(other), pytest.raises(PermissionDenied):
        present(other)
    assert app.award(award).ceremony_id == ""
    with as_office(world["street"]):
        present(world["street"])
    assert app.award(award).ceremony_id and golden


def _public(app) -> list[tuple[str, dict]]:
    from tests.integration.test_public_events_mapping import read
    return read(app, BADGES)




# ------------------------------------------------------------------ 城市治理合伙人

def partner_title(w, golden, **given) -> str:
    with as_actor(ADMIN):
        return w["badges"].create_recognition_title(
            name="城市治理合伙人", description="riders the city trusts to keep serving",
            criteria=criteria(**{"min_verified_reports": 0, **given}),
            required_badge_class_ids=[golden], term_days=365)["title_id"]


def test_a_street_office_confers_a_partnership_on_a_rider_who_meets_it_for_a_term(world):
    golden = badge(world, min_volunteer_hours="4")
    title = partner_title(world, golden)
    rider, newcomer = new_rider(world), new_rider(world)
    serve(world, rider, "4")
    app = world["badges"]
    with as_actor(OFFICE):
        with pytest.raises(FailedPrecondition) as unmet:
            app.confer_recognition(rider_id=newcomer, title_id=title, reason="积极参与")
        made = app.confer_recognition(rider_id=rider, title_id=title,
                                      reason="两年来上报隐患十余次")
        with pytest.raises(AlreadyExists) as again:
            app.confer_recognition(rider_id=rider, title_id=title, reason="again")
    assert unmet.value.reason == "RECOGNITION_REQUIREMENTS_NOT_MET"
    assert "missing the badge 金蜂骑士" in unmet.value.message
    assert again.value.reason == "RECOGNITION_ALREADY_HELD"
    partner = app.recognition(made["recognition_id"])
    assert (partner.ends_at - partner.conferred_at).days == 365
    assert [e["narrative"] for e in partner.evidence] == ["holds 金蜂骑士"]
    world["clock"].now += timedelta(days=366)  # the term ends by itself
    assert app.rider_recognitions(rider_id=rider, include_inactive=False) == []
    assert app.recognition(made["recognition_id"]).status_at(world["clock"]()) == "ENDED"
    with as_actor(OFFICE):  # and may be conferred again
        second = app.confer_recognition(rider_id=rider, title_id=title, reason="续聘")
        app.revoke_recognition(recognition_id=second["recognition_id"], reason="离开本街道")
        with pytest.raises(FailedPrecondition) as twice:
            app.revoke_recognition(recognition_id=second["recognition_id"], reason="x")
    assert twice.value.reason == "RECOGNITION_REVOKED"
    feed = [(t, d["rider_id"]) for t, d in _public(app) if "Recognition" in t]
    assert feed == [("qiji.badges.v1.RecognitionConferred", rider),
                    ("qiji.badges.v1.RecognitionConferred", rider),
                    ("qiji.badges.v1.RecognitionRevoked", rider)]
    assert "离开本街道" not in str(_public(app))


def test_a_title_requiring_nothing_or_naming_unknown_badges_is_refused_at_once(world):
    def refused(**given) -> list[tuple[str, str]]:
        with as_actor(ADMIN), pytest.raises(InvalidArgument) as bad:
            world["badges"].create_recognition_title(**{
                "name": "城市治理合伙人", "description": "", "criteria": criteria(),
                "required_badge_class_ids": [], "term_days": 365, **given})
        return sorted((v.field, v.reason) for v in bad.value.violations)
    assert refused(name="", term_days=7) == [
        ("criteria", "CRITERIA_EMPTY"), ("name", "FIELD_REQUIRED"),
        ("term_days", "VALUE_OUT_OF_RANGE")]
    assert refused(required_badge_class_ids=["x", str(uuid.uuid4())]) == [
        ("required_badge_class_ids[0]", "INVALID_ID"),
        ("required_badge_class_ids[1]", "BADGE_CLASS_NOT_FOUND")]


def test_a_revised_title_keeps_earlier_conferrals_under_their_version(world):
    golden = badge(world, min_volunteer_hours="2")
    title = partner_title(world, golden)
    rider = new_rider(world)
    serve(world, rider, "2")
    app = world["badges"]
    with as_actor(OFFICE):
        made = app.confer_recognition(rider_id=rider, title_id=title, reason="骨干")
    with as_actor(ADMIN):
        app.revise_recognition_title(title_id=title, criteria=criteria(min_verified_reports=3),
                                     required_badge_class_ids=[golden], term_days=730)
    assert app.recognition(made["recognition_id"]).requirements_version == 1
    revised = app.recognition_title(title)
    assert (revised.requirements_version, revised.term_days,
            revised.criteria().min_verified_reports) == (2, 730, 3)
