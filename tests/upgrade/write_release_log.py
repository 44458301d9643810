"""Writes the release log kept in tests/upgrade/releases/: every event type of every service,
written by one release through its own processes, with what that release answered about it.

Run once, at the release it records (0.1.0 = commit bc4f4f7), never by the tests: the tests
read what it wrote, with every later release. It is kept beside the data as the record of how
the data was made; later releases change the RPCs it calls, so it is not expected to run on
them.

    .venv/bin/python -m tests.upgrade.write_release_log embedded OUT_DIR
    .venv/bin/python -m tests.upgrade.write_release_log postgres OUT_DIR --pg-db DB ...

The story: `qiji demo`'s (shared/tools/demo.py) city, riders, training, badges, perks, pledge,
emergency report, care packages and career milestone; then what the demo does not do (consents
given and withdrawn, a rider suspended with an open code and an enrolment, reinstated, another
who left and whose personal data was erased, a no-show, a withdrawn enrolment, a retired
course, a changed pre-job list, a rejected / suspended / reinstated merchant, paused and
withdrawn perks, a reversed redemption, a rejected volunteer shift, revised criteria, a manual
award and a revoked one, duplicate reports, a rejected assignment, mediation agreed and failed,
a revised pledge, changed routing rules). Then, with the processes stopped, the release's own
clock-driven jobs run once in-process with the clock 400 days ahead (awards expire, open codes
lapse, missed deadlines escalate street → district → city), so nothing in the log can change
with the passing of time any more; the stack comes up again (followers react to all of it), and
every entity is read back through gRPC with the admin token: `answers.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from qiji.badges.v1 import badges_service_pb2 as bpb
from qiji.governance.v1 import governance_service_pb2 as gpb
from qiji.identity.v1 import identity_service_pb2 as ipb
from qiji.merchants.v1 import merchants_service_pb2 as mpb
from qiji.training.v1 import training_service_pb2 as tpb

from shared.config import EVENT_SOURCED_SERVICES, load_settings
from shared.tools import demo

REPO = Path(__file__).resolve().parents[2]
SETTLE_DAYS = 400
MODULES = {"identity": ipb, "training": tpb, "merchants": mpb, "badges": bpb, "governance": gpb}


class Recorder:
    """The ids the story made, and the Get/List questions to ask about them afterwards."""

    def __init__(self) -> None:
        self.questions: list[tuple[str, str, Any]] = []

    def ask(self, service: str, rpc: str, request: Any) -> None:
        self.questions.append((service, rpc, request))


def play(story: demo.Story, rec: Recorder) -> None:
    admin = story.admin
    c = story.city()
    story.service_space(c)
    riders = story.riders(c)
    story.pre_job_training(c, riders)
    badges = story.badge_classes(c)
    perks = story.merchant_offers(c, badges)
    story.volunteers(c, riders, badges)
    claim_id = story.perk_claimed_and_redeemed(c, riders[0], perks)
    story.pledge(riders)
    story.emergency(c, riders[1])
    story.care_packages(c, riders)
    story.social_worker(c, riders[2])
    story.audit(perks["golden"], claim_id, riders[0], badges["golden"])
    platform, office, merchant = (story.callers[k] for k in ("platform", "office", "merchant"))
    now = datetime.now(UTC)
    say = story.say

    # ---------------------------------------------------------------- identity
    admin("identity", "UpdateServiceSpace", ipb.UpdateServiceSpaceRequest(
        request_id=demo.new_id(), service_space_id=c["space"],
        amenities=[ipb.AMENITY_REST, ipb.AMENITY_CHARGING, ipb.AMENITY_DRINKING_WATER],
        opening_hours=[ipb.OpeningHours(weekday=d, opens="06:30", closes="23:00")
                       for d in range(1, 8)]))

    def rider(name: str) -> str:
        made = platform("identity", "RegisterRider", ipb.RegisterRiderRequest(
            request_id=demo.new_id(), platform_id=c["platform"],
            platform_rider_id=f"QJ{uuid.uuid4().hex[:8].upper()}", name=name,
            phone="139" + uuid.uuid4().int.__str__()[:8], home_street_id=c["street"],
            station_id=c["station"])).rider
        platform("identity", "VerifyRider", ipb.VerifyRiderRequest(
            request_id=demo.new_id(), rider_id=made.rider_id))
        return made.rider_id
    suspended, leaver, no_show = rider("孙志强"), rider("钱海峰"), rider("汤晓东")
    consent = platform("identity", "GrantConsent", ipb.GrantConsentRequest(
        request_id=demo.new_id(), rider_id=suspended, scope=ipb.CONSENT_SCOPE_PHONE,
        recipient_id=c["platform"]))
    platform("identity", "WithdrawConsent", ipb.WithdrawConsentRequest(
        request_id=demo.new_id(), rider_id=suspended, consent_id=consent.consent_id))
    platform("identity", "GrantConsent", ipb.GrantConsentRequest(
        request_id=demo.new_id(), rider_id=riders[0].rider_id, scope=ipb.CONSENT_SCOPE_NAME,
        recipient_id=c["platform"]))
    say("consents given and withdrawn; the service space's hours change")

    # ---------------------------------------------------------------- training
    def session(course_id: str, starts: datetime, minutes: int = 30) -> str:
        return platform("training", "ScheduleSession", tpb.ScheduleSessionRequest(
            request_id=demo.new_id(), course_id=course_id, service_space_id=c["space"],
            start_time=demo.stamp(starts), end_time=demo.stamp(starts + timedelta(
                minutes=minutes)), capacity=10)).session.session_id

    def enrol(session_id: str, rider_id: str) -> None:
        request = tpb.EnrolRiderRequest(request_id=demo.new_id(), session_id=session_id,
                                        rider_id=rider_id)
        story.until_known(lambda: platform("training", "EnrolRider", request), "enrol")
    civic = c["civic_course"]
    soon = session(civic, datetime.now(UTC) + timedelta(seconds=25), minutes=10)
    enrol(soon, no_show)
    later = session(civic, now + timedelta(days=2))
    enrol(later, riders[3].rider_id)
    platform("training", "WithdrawEnrolment", tpb.WithdrawEnrolmentRequest(
        request_id=demo.new_id(), session_id=later, rider_id=riders[3].rider_id))
    cancelled = session(civic, now + timedelta(days=3))
    enrol(cancelled, suspended)
    retired = story.course(tpb.TRACK_SKILLS, "旧版交规课", "1", [tpb.COURSE_FORMAT_CLASSROOM],
                           c["station"], tpb.Instructor(
                               name="刘站长", kind=tpb.INSTRUCTOR_KIND_STATION_MASTER))
    admin("training", "RetireCourse", tpb.RetireCourseRequest(request_id=demo.new_id(),
                                                             course_id=retired))
    for s in (soon, later, cancelled):
        rec.ask("training", "GetSession", tpb.GetSessionRequest(session_id=s))
    rec.ask("training", "GetCourse", tpb.GetCourseRequest(course_id=retired))
    rec.ask("training", "GetCourse", tpb.GetCourseRequest(course_id=civic))

    # ---------------------------------------------------------------- merchants
    water = perks["water"]
    open_claim = story.until_known(lambda: platform("merchants", "ClaimPerk", mpb.ClaimPerkRequest(
        request_id=demo.new_id(), perk_id=water, rider_id=suspended)), "claim").claim
    reversed_claim = platform("merchants", "ClaimPerk", mpb.ClaimPerkRequest(
        request_id=demo.new_id(), perk_id=water, rider_id=riders[1].rider_id)).claim
    merchant("merchants", "RedeemCode", mpb.RedeemCodeRequest(
        request_id=demo.new_id(), merchant_id=c["merchant"], code=reversed_claim.code))
    merchant("merchants", "ReverseRedemption", mpb.ReverseRedemptionRequest(
        request_id=demo.new_id(), claim_id=reversed_claim.claim_id, reason="误核销，顾客未到店"))
    merchant("merchants", "UpdateMerchantAmenities", mpb.UpdateMerchantAmenitiesRequest(
        request_id=demo.new_id(), merchant_id=c["merchant"],
        amenities=[mpb.MERCHANT_AMENITY_DRINKING_WATER, mpb.MERCHANT_AMENITY_REST]))
    office("merchants", "SuspendMerchant", mpb.SuspendMerchantRequest(
        request_id=demo.new_id(), merchant_id=c["merchant"], reason="食品安全检查"))
    office("merchants", "ReinstateMerchant", mpb.ReinstateMerchantRequest(
        request_id=demo.new_id(), merchant_id=c["merchant"], reason="检查合格"))
    other_id = story.org(ipb.ORGANISATION_KIND_MERCHANT, "北大街奶茶铺", c["street"])
    other = story.caller("merchant-2", f"qiji-demo-merchant-{other_id[:8]}", "merchant",
                         other_id, "北大街奶茶铺")
    story.until_known(lambda: other("merchants", "ApplyMerchant", mpb.ApplyMerchantRequest(
        request_id=demo.new_id(), merchant_id=other_id, name="北大街奶茶铺",
        street_id=c["street"], category="drinks",
        location=mpb.Location(latitude=demo.LAT, longitude=demo.LON, address="北大街20号"),
        amenities=[mpb.MERCHANT_AMENITY_DRINKING_WATER])), "apply")
    office("merchants", "RejectMerchant", mpb.RejectMerchantRequest(
        request_id=demo.new_id(), merchant_id=other_id, reason="不在服务范围内"))
    paused = merchant("merchants", "CreatePerkOffer", mpb.CreatePerkOfferRequest(
        request_id=demo.new_id(), merchant_id=c["merchant"], title="雨天热汤",
        valid_from_time=demo.stamp(now - timedelta(hours=1)),
        valid_until_time=demo.stamp(now + timedelta(days=30)), code_ttl_minutes=60,
        kind=mpb.PERK_KIND_FREE_ITEM, free_item="一碗热汤",
        eligibility=mpb.ELIGIBILITY_ANY_VERIFIED_RIDER, total_quota=20, per_rider_limit=1,
        limit_period=mpb.LIMIT_PERIOD_MONTH)).perk_offer.perk_id
    merchant("merchants", "PublishPerkOffer", mpb.PublishPerkOfferRequest(
        request_id=demo.new_id(), perk_id=paused))
    merchant("merchants", "PausePerkOffer", mpb.PausePerkOfferRequest(
        request_id=demo.new_id(), perk_id=paused))
    merchant("merchants", "WithdrawPerkOffer", mpb.WithdrawPerkOfferRequest(
        request_id=demo.new_id(), perk_id=paused))
    say("a redemption reversed (quota back), a merchant rejected, another suspended and "
        "reinstated, a perk paused and withdrawn")

    # ---------------------------------------------------------------- identity → followers
    platform("identity", "SuspendRider", ipb.SuspendRiderRequest(
        request_id=demo.new_id(), rider_id=suspended, reason="投诉待核查"))
    story.wait_for(lambda: admin("merchants", "GetClaim", mpb.GetClaimRequest(
        claim_id=open_claim.claim_id)).claim.status == mpb.CLAIM_STATUS_FROZEN,
        "merchants freezing the suspended rider's open code")
    story.wait_for(lambda: not any(
        e.rider_id == suspended and e.status == tpb.ENROLMENT_STATUS_ENROLLED
        for e in admin("training", "GetSession", tpb.GetSessionRequest(
            session_id=cancelled)).session.enrolments),
        "training cancelling the suspended rider's enrolment")
    platform("identity", "ReinstateRider", ipb.ReinstateRiderRequest(
        request_id=demo.new_id(), rider_id=suspended, reason="核查无误"))
    story.wait_for(lambda: admin("merchants", "GetClaim", mpb.GetClaimRequest(
        claim_id=open_claim.claim_id)).claim.status == mpb.CLAIM_STATUS_ISSUED,
        "merchants unfreezing the reinstated rider's code")
    platform("identity", "RecordRiderLeft", ipb.RecordRiderLeftRequest(
        request_id=demo.new_id(), rider_id=leaver, reason="回乡"))
    admin("identity", "EraseRiderPersonalData", ipb.EraseRiderPersonalDataRequest(
        request_id=demo.new_id(), rider_id=leaver, reason="本人申请删除个人信息"))
    say("a rider suspended (open code frozen, enrolment cancelled) and reinstated; another "
        "left and had their personal data erased")

    # ---------------------------------------------------------------- badges
    shift = story.until_known(lambda: platform("badges", "LogVolunteerService",
                                               bpb.LogVolunteerServiceRequest(
        request_id=demo.new_id(), rider_id=riders[3].rider_id, community_id=c["community"],
        activity="未到场的义务巡河", start_time=demo.stamp(now - timedelta(days=1)),
        hours="3")), "log shift").shift
    office("badges", "RejectVolunteerService", bpb.RejectVolunteerServiceRequest(
        request_id=demo.new_id(), shift_id=shift.shift_id, reason="社区无签到记录"))
    admin("badges", "ReviseBadgeCriteria", bpb.ReviseBadgeCriteriaRequest(
        request_id=demo.new_id(), badge_class_id=badges["green"], criteria=bpb.Criteria(
            min_volunteer_hours="4", within_days=365,
            narrative="4 hours of confirmed volunteer service within a year")))
    manual = office("badges", "GrantBadge", bpb.GrantBadgeRequest(
        request_id=demo.new_id(), rider_id=riders[2].rider_id, badge_class_id=badges["golden"],
        reason="抗洪抢险中表现突出，街道特别授予", evidence=[bpb.Evidence(
            source="荷花池街道", reference="街道表彰决定 2026-17号", narrative="抗洪抢险",
            time=demo.stamp(now - timedelta(days=5)))])).award
    green = next(a for a in admin("badges", "ListRiderAwards", bpb.ListRiderAwardsRequest(
        rider_id=riders[3].rider_id)).awards if a.badge_class_id == badges["green"])
    office("badges", "RevokeAward", bpb.RevokeAwardRequest(
        request_id=demo.new_id(), award_id=green.award_id, reason="志愿时长记录有误"))
    say("a volunteer shift rejected, criteria revised, a badge granted by hand and one revoked")

    # ---------------------------------------------------------------- governance
    admin("governance", "PublishPledge", gpb.PublishPledgeRequest(
        request_id=demo.new_id(), text=demo.PLEDGE + "（2026年修订）"))
    rules = admin("governance", "GetRoutingRules", gpb.GetRoutingRulesRequest()).routing_rules
    admin("governance", "SetRoutingRules", gpb.SetRoutingRulesRequest(
        request_id=demo.new_id(), rules=[*rules.rules, gpb.RoutingRule(
            name="交通安全隐患", kind=gpb.REPORT_KIND_ANOMALY_WARNING,
            category=gpb.CATEGORY_ROAD_HAZARD, department_functions=[
                gpb.DEPARTMENT_FUNCTION_PUBLIC_SECURITY])]))
    lat, lon = demo.LAT + 0.01, demo.LON - 0.01

    def report(rider_id: str, dlat: float, text: str) -> Any:
        request = gpb.SubmitReportRequest(
            request_id=demo.new_id(), rider_id=rider_id, kind=gpb.REPORT_KIND_ANOMALY_WARNING,
            category=gpb.CATEGORY_ROAD_HAZARD, text=text,
            location=gpb.Location(street_id=c["street"], latitude=lat + dlat, longitude=lon),
            observe_time=demo.stamp(datetime.now(UTC) - timedelta(minutes=5)))
        return story.until_known(lambda: platform("governance", "SubmitReport", request),
                                 "report").report
    first = report(riders[0].rider_id, 0.0, "北大街路口红绿灯故障，车流混乱")
    second = report(riders[2].rider_id, 0.0003, "北大街红绿灯不亮了")
    assert second.status == gpb.REPORT_STATUS_DUPLICATE, second
    rejecting = first.assignments[0].department_id
    department = story.caller(f"department-{rejecting}", f"qiji-demo-department-"
                              f"{rejecting[:8]}", "department", rejecting, "a department")
    department("governance", "RejectAssignment", gpb.RejectAssignmentRequest(
        request_id=demo.new_id(), report_id=first.report_id, department_id=rejecting,
        reason=gpb.REJECTION_REASON_NOT_ACTIONABLE, note="不属本部门职责"))
    cases = []
    for outcome in ("agreed", "failed"):
        case = office("governance", "OpenMediationCase", gpb.OpenMediationCaseRequest(
            request_id=demo.new_id(), street_id=c["street"], report_id=first.report_id,
            subject="骑手与小区物业关于进出小区的纠纷", mediator_name="张社工", parties=[
                gpb.MediationParty(role=gpb.PARTY_ROLE_RIDER, name="骑手",
                                   rider_id=riders[0].rider_id),
                gpb.MediationParty(role=gpb.PARTY_ROLE_PROPERTY_MANAGER, name="物业王经理")])
        ).mediation_case
        office("governance", "RecordMediationSession", gpb.RecordMediationSessionRequest(
            request_id=demo.new_id(), case_id=case.case_id, session=gpb.MediationSession(
                hold_time=demo.stamp(datetime.now(UTC) - timedelta(minutes=1)),
                place="北大街社区调解室", notes="双方陈述")))
        if outcome == "agreed":
            office("governance", "RecordMediationAgreement",
                   gpb.RecordMediationAgreementRequest(
                       request_id=demo.new_id(), case_id=case.case_id,
                       outcome="物业为骑手开通专用通道"))
        else:
            office("governance", "RecordMediationFailure", gpb.RecordMediationFailureRequest(
                request_id=demo.new_id(), case_id=case.case_id, reason="物业拒绝再谈"))
        cases.append(case.case_id)
    say("the pledge revised, routing rules changed, a duplicate report linked, an assignment "
        "rejected, one mediation agreed and one failed")

    # ---------------------------------------------------------------- the no-show, last
    session_start = time.monotonic()
    while True:
        try:
            admin("training", "RecordNoShow", tpb.RecordNoShowRequest(
                request_id=demo.new_id(), session_id=soon, rider_id=no_show))
            break
        except demo.CallFailed as failed:
            if failed.reason != "SESSION_NOT_STARTED" or time.monotonic() - session_start > 60:
                raise
            time.sleep(1)
    admin("training", "SetPreJobCourses", tpb.SetPreJobCoursesRequest(
        request_id=demo.new_id(), course_ids=[civic]))
    say("a no-show recorded; the pre-job list changed")

    # ---------------------------------------------------------------- what to read back
    all_riders = [r.rider_id for r in riders] + [suspended, leaver, no_show]
    for r in all_riders:
        rec.ask("identity", "GetRider", ipb.GetRiderRequest(rider_id=r))
        rec.ask("training", "GetTranscript", tpb.GetTranscriptRequest(rider_id=r))
        rec.ask("badges", "ListRiderAwards", bpb.ListRiderAwardsRequest(
            rider_id=r, include_inactive=True))
        rec.ask("badges", "ListVolunteerService", bpb.ListVolunteerServiceRequest(rider_id=r))
        for badge in badges.values():
            rec.ask("badges", "ExplainAward", bpb.ExplainAwardRequest(
                rider_id=r, badge_class_id=badge))
    for key in ("city", "district", "street", "community", "platform", "merchant"):
        rec.ask("identity", "GetOrganisation", ipb.GetOrganisationRequest(
            organisation_id=c[key]))
    rec.ask("identity", "GetServiceSpace", ipb.GetServiceSpaceRequest(
        service_space_id=c["space"]))
    rec.ask("training", "GetPreJobCourses", tpb.GetPreJobCoursesRequest())
    for m in (c["merchant"], other_id):
        rec.ask("merchants", "GetMerchant", mpb.GetMerchantRequest(merchant_id=m))
    for p in (*perks.values(), paused):
        rec.ask("merchants", "GetPerkOffer", mpb.GetPerkOfferRequest(perk_id=p))
        rec.ask("merchants", "ListRedemptions", mpb.ListRedemptionsRequest(
            merchant_id=c["merchant"], perk_id=p))
    for claim in (claim_id, open_claim.claim_id, reversed_claim.claim_id):
        rec.ask("merchants", "GetClaim", mpb.GetClaimRequest(claim_id=claim))
    for badge in badges.values():
        rec.ask("badges", "GetBadgeClass", bpb.GetBadgeClassRequest(badge_class_id=badge))
    rec.ask("badges", "GetAward", bpb.GetAwardRequest(award_id=manual.award_id))
    rec.ask("badges", "GetAward", bpb.GetAwardRequest(award_id=green.award_id))
    for r in (first, second):
        rec.ask("governance", "GetReport", gpb.GetReportRequest(report_id=r.report_id))
    for case_id in cases:
        rec.ask("governance", "GetMediationCase", gpb.GetMediationCaseRequest(case_id=case_id))
    rec.ask("governance", "GetPledge", gpb.GetPledgeRequest())
    rec.ask("governance", "GetRoutingRules", gpb.GetRoutingRulesRequest())
    # The reports the demo and this story made, and the campaign: found by listing.
    for page in [admin("governance", "ListReports", gpb.ListReportsRequest(page_size=500))]:
        for r in page.reports:
            rec.ask("governance", "GetReport", gpb.GetReportRequest(report_id=r.report_id))
    for page in [admin("merchants", "ListCareCampaigns", mpb.ListCareCampaignsRequest(
            page_size=500))]:
        for campaign in page.campaigns:
            rec.ask("merchants", "GetCareCampaign", mpb.GetCareCampaignRequest(
                campaign_id=campaign.campaign_id))


def settle(env: dict[str, str]) -> dict[str, int]:
    """The clock-driven jobs of this release, run once in-process with the clock SETTLE_DAYS
    ahead: every award expires, every open code lapses, every missed deadline escalates (as
    often as the tree allows). The processes must be stopped."""
    from services.badges.application import BadgesApplication
    from services.badges.service import ExpiryJob
    from services.governance.application import GovernanceApplication
    from services.governance.deadlines import DeadlineScheduler
    from services.merchants.application import MerchantsApplication
    from services.merchants.service import LapseJob
    from shared.personal_data import load_master_key
    ahead = datetime.now(UTC) + timedelta(days=SETTLE_DAYS)
    done: dict[str, int] = {}
    for name, make, job in (("badges", BadgesApplication, ExpiryJob),
                            ("merchants", MerchantsApplication, LapseJob),
                            ("governance", GovernanceApplication, DeadlineScheduler)):
        settings = load_settings(name, env)
        key = load_master_key(settings.master_key, settings.master_key_file, create=False)
        app = make(settings, key, clock=lambda: ahead)
        try:
            total = 0
            while n := job(app).run_once():
                total += n
            done[name] = total
        finally:
            app.close()
    return done


def answers(addresses: dict[str, str], token: str, rec: Recorder) -> list[dict[str, Any]]:
    stack = demo.Stack(addresses)
    caller = demo.Caller(stack, "the city admin", token)
    seen: set[str] = set()
    out = []
    try:
        for service, rpc, request in rec.questions:
            key = f"{service}.{rpc}:{request.SerializeToString(deterministic=True).hex()}"
            if key in seen:
                continue
            seen.add(key)
            entry = {"service": service, "rpc": rpc, "request": json_format.MessageToDict(
                request, preserving_proto_field_name=True)}
            try:
                entry["response"] = json_format.MessageToDict(
                    caller(service, rpc, request), preserving_proto_field_name=True)
            except demo.CallFailed as failed:  # e.g. why a rider holds a badge they do not
                entry["error"] = {"code": failed.code.name, "reason": failed.reason}
            out.append(entry)
    finally:
        stack.close()
    return out


def verify(addresses: dict[str, str], token: str) -> dict[str, Any]:
    from qiji.audit.v1 import audit_service_pb2 as apb
    from qiji.audit.v1 import audit_service_pb2_grpc as arpc
    heads = {}
    for service in EVENT_SOURCED_SERVICES:
        with demo.open_channel(addresses[service]) as channel:
            *_, reply = arpc.AuditServiceStub(channel).VerifyLog(
                apb.VerifyLogRequest(), metadata=[("authorization", f"Bearer {token}")],
                timeout=60)
            assert reply.intact, (service, reply)
            heads[service] = json_format.MessageToDict(reply, preserving_proto_field_name=True)
    return heads


def wait_quiet(addresses: dict[str, str], token: str, seconds: float = 8.0) -> dict[str, int]:
    """Every service's log position, once none moved for `seconds` (followers done)."""
    from qiji.feed.v1 import feed_service_pb2 as fpb
    from qiji.feed.v1 import feed_service_pb2_grpc as frpc

    def positions() -> dict[str, int]:
        found = {}
        for service in EVENT_SOURCED_SERVICES:
            with demo.open_channel(addresses[service]) as channel:
                found[service] = frpc.FeedServiceStub(channel).ReadEvents(
                    fpb.ReadEventsRequest(from_position=0, limit=1),
                    metadata=[("authorization", f"Bearer {token}")], timeout=10).last_position
        return found
    last, since = positions(), time.monotonic()
    while time.monotonic() - since < seconds:
        time.sleep(1)
        now = positions()
        if now != last:
            last, since = now, time.monotonic()
    return last


# ---------------------------------------------------------------------------- embedded


def embedded(out: Path, port_base: int) -> None:
    data = out / "data"
    data.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("QIJI_", "RELAY_", "BADGES_", "GOVERNANCE_", "IDENTITY_"))}
    env["QIJI_DATA_DIR"] = str(data)
    addresses = demo.addresses("127.0.0.1", port_base, [])
    rec = Recorder()

    def run() -> subprocess.Popen[bytes]:
        log = open(out / "qiji.log", "ab")
        return subprocess.Popen([sys.executable, "-m", "shared.tools.cli", "run", "--port-base",
                                 str(port_base)], env=env, stdout=log, stderr=log, cwd=REPO)

    def stop(proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)

    proc = run()
    try:
        while not (data / "admin.token").exists():
            time.sleep(0.2)
        token = (data / "admin.token").read_text().strip()
        stack = demo.Stack(addresses)
        story = demo.Story(stack, demo.Caller(stack, "the city admin", token),
                           data / "tokens.json", timeout=30)
        stack.wait_serving(90)
        play(story, rec)
        wait_quiet(addresses, token)
    finally:
        stop(proc)
    print("settled:", settle(env), flush=True)
    proc = run()
    try:
        demo.Stack(addresses).wait_serving(90)
        positions = wait_quiet(addresses, token)
        write_answers(out, answers(addresses, token, rec), verify(addresses, token), positions)
    finally:
        stop(proc)
    for leftover in {*data.glob("*-wal"), *data.glob("*-shm"), *data.glob("*.lock"),
                     *data.glob(".*.lock")}:
        leftover.unlink()
    (out / "qiji.log").unlink()


def write_answers(out: Path, found: list[dict[str, Any]], heads: dict[str, Any],
                  positions: dict[str, int]) -> None:
    (out / "answers.json").write_text(json.dumps(
        {"release": "0.1.0 (bc4f4f7)", "log_positions": positions, "verified": heads,
         "answers": found}, indent=1, ensure_ascii=False, sort_keys=True) + "\n")
    print(f"{len(found)} answers; positions {positions}", flush=True)


# ---------------------------------------------------------------------------- postgres


def postgres(out: Path, db: str, offset: int, amqp_uri: str) -> None:
    run_dir = out / "run"
    common = ["--run-dir", str(run_dir), "--pg-db", db]

    # The broker's password only ever in the environment (never a flag: the process list).
    env = {**os.environ, "RELAY_AMQP_URI": amqp_uri}

    def deploy(*args: str) -> None:
        flags = common if args[0] != "down" else common[:2]
        subprocess.run([str(REPO / "deploy" / args[0]), *flags, *args[1:]], check=True, env=env)
    deploy("up", "--port-offset", str(offset))
    from shared.config import DEFAULT_PORTS
    addresses = {n: f"127.0.0.1:{p + offset}" for n, p in DEFAULT_PORTS.items()}
    token = (run_dir / "admin.token").read_text().strip()
    rec = Recorder()
    try:
        stack = demo.Stack(addresses)
        story = demo.Story(stack, demo.Caller(stack, "the city admin", token),
                           run_dir / "tokens.json", timeout=30)
        play(story, rec)
        wait_quiet(addresses, token)
    finally:
        deploy("down")
    from shared.tools.ops.stack import Stack
    stack = Stack.resolve(run_dir, {})
    print("settled:", settle(stack.process_env({})), flush=True)
    deploy("up")
    try:
        positions = wait_quiet(addresses, token)
        write_answers(out, answers(addresses, token, rec), verify(addresses, token), positions)
        deploy("backup", "--out", str(out / "backup"))
    finally:
        deploy("down")
    keep = out / "secrets"
    keep.mkdir()
    for name in ("master.key", "badges-signing.key", "tokens.json", "admin.token"):
        shutil.copy2(run_dir / name, keep / name)
    shutil.rmtree(run_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=["embedded", "postgres"])
    parser.add_argument("out", type=Path)
    parser.add_argument("--port-base", type=int, default=55169)
    parser.add_argument("--pg-db", default="qiji_release_log")
    parser.add_argument("--port-offset", type=int, default=5169)
    parser.add_argument("--amqp-uri", default="amqp://guest:guest@127.0.0.1:5672/")
    args = parser.parse_args()
    if args.kind == "embedded":
        embedded(args.out, args.port_base)
    else:
        postgres(args.out, args.pg_db, args.port_offset, args.amqp_uri)


if __name__ == "__main__":
    main()
