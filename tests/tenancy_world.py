"""A city shared by two tenants of every kind — platforms A and B, streets A and B (each with a
community, a department, a service space, a merchant), education providers A and B — each
holding one of everything Qiji keeps: a rider, courses (a draft and a published one) and a
session the rider is enrolled in, perks (a draft and a published one) and a claim, a care
package, volunteer service, an award, a report assigned to the street's department and a
mediation case. Built through the guarded API, each step by the caller who does it in the city,
so the world is also a test that every same-tenant step is admitted."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp
from qiji.badges.v1 import badges_service_pb2 as bpb
from qiji.governance.v1 import governance_service_pb2 as gpb
from qiji.identity.v1 import identity_service_pb2 as ipb
from qiji.merchants.v1 import merchants_service_pb2 as mpb
from qiji.training.v1 import training_service_pb2 as tpb

from tests.city import build_city, in_process
from tests.inprocess import InProcessQiji

TENANTS = ("a", "b")
# What each tenant's organisations are called (and the tenant's letter after it: 街道A).
TENANT_NAMES = {"street": "街道", "community": "社区", "department": "社会工作部",
                "platform": "平台", "station": "站点", "provider": "学院", "merchant": "面馆"}
# In every free text the world writes (a report's words, an award's reason and evidence, a
# mediation's subject): what the masking table withholds from platforms and auditors.
FREE_TEXT = "【内情】"
# The role a token acts in for each kind of tenant organisation, and which organisation.
ROLE_ORGANISATION = {"platform": "platform", "street_office": "street",
                     "department": "department", "merchant": "merchant",
                     "community": "community", "education_provider": "provider"}


def report_text(t: Tenant) -> str:
    """What tenant `t`'s rider wrote in the world's report: it names the rider, and holds the
    free text only officials and the rider's own platform read."""
    return f"{t.rider_name}看见路口井盖缺失{FREE_TEXT}"


def help_text(t: Tenant) -> str:
    """What tenant `t`'s rider asked help with: it names the rider, and holds the free text."""
    return f"{t.rider_name}家里困难{FREE_TEXT}"


def ts(when: datetime) -> Timestamp:
    t = Timestamp()
    t.FromDatetime(when)
    return t


def rid() -> str:
    return str(uuid.uuid4())


@dataclass
class Tenant:
    """One tenant of every kind, and what each of them holds."""

    name: str
    ids: dict[str, str] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    # Personal data of its rider, which must never reach the other tenant.
    rider_name: str = ""
    rider_phone: str = ""

    def __getattr__(self, item: str) -> str:
        try:
            return self.__dict__["ids"][item]
        except KeyError:
            raise AttributeError(item) from None

    @property
    def secrets(self) -> set[str]:
        """What the other tenant must never see: ids of what is not public, and personal data."""
        keys = ("rider", "perk_draft", "claim", "claim_redeemed", "course_draft",
                "course_draft_by_platform",
                "course_draft_by_street_office", "report", "case", "shift", "award",
                "growth_plan", "help_request")
        return {self.ids[k] for k in keys} | {self.rider_name, self.rider_phone}

    def verified_riders(self, qiji: InProcessQiji, count: int, tag: str, phones: int
                        ) -> list[str]:
        """`count` more riders of this tenant's platform, registered and verified, known to
        every service that follows identity: their ids. `tag` keeps their platform ids apart
        from other calls' and `phones` (a number the phones count up from) their phones."""
        platform = self.tokens["platform"]
        riders = []
        for n in range(count):
            rider = qiji.ok("identity", "RegisterRider", ipb.RegisterRiderRequest(
                request_id=rid(), platform_id=self.platform, platform_rider_id=f"{tag}{n}",
                name=f"骑手{n}", phone=f"{phones + n:011d}", home_street_id=self.street,
                station_id=self.station), platform).rider.rider_id
            qiji.ok("identity", "VerifyRider", ipb.VerifyRiderRequest(
                request_id=rid(), rider_id=rider), platform)
            riders.append(rider)
        qiji.sync()
        return riders


@dataclass
class World:
    qiji: InProcessQiji
    admin: str
    auditor: str
    service: str
    city: str
    district: str
    badge_class: str
    tenants: dict[str, Tenant]
    # A title (城市治理合伙人) each tenant's rider holds, conferred by its street office.
    recognition_title: str = ""

    def token(self, tenant: str, role: str) -> str:
        return self.tenants[tenant].tokens[role]

    def organisation(self, tenant: str, role: str) -> str:
        return self.tenants[tenant].ids[ROLE_ORGANISATION[role]]


def build(qiji: InProcessQiji) -> World:
    admin = qiji.token("tenancy-admin", "city_admin")
    auditor = qiji.token("tenancy-auditor", "auditor")
    service = qiji.token("tenancy-service", "service")
    ok = qiji.ok
    made = build_city(in_process(qiji, admin), ("district",))
    city, district = made.city, made.district
    badge_class = ok("badges", "CreateBadgeClass", bpb.CreateBadgeClassRequest(
        request_id=rid(), name="金蜂骑士", description="金蜂骑士", issuer_id=city,
        image_url="https://qiji.example.org/badges/golden.png",
        criteria=bpb.Criteria(min_volunteer_hours="100", narrative="百小时志愿服务"),
        validity_days=0), admin).badge_class.badge_class_id
    # A growth path is the city's: every tenant's rider follows the same one.
    growth_path = ok("training", "DefineGrowthPath", tpb.DefineGrowthPathRequest(
        request_id=rid(), name="骑手到社工", steps=[tpb.GrowthStep(
            key="social-worker", title="社区社工",
            role=tpb.GROWTH_ROLE_COMMUNITY_SOCIAL_WORKER,
            track_hours=[tpb.TrackHoursRequirement(track=tpb.TRACK_GRASSROOTS_GOVERNANCE,
                                                   hours="8")])]),
        admin).growth_path.growth_path_id
    title = ok("badges", "CreateRecognitionTitle", bpb.CreateRecognitionTitleRequest(
        request_id=rid(), name="城市治理合伙人", required_badge_class_ids=[badge_class],
        term_days=365), admin).title.title_id
    tenants = {}
    for n, name in enumerate(TENANTS):
        t = Tenant(name)
        label = name.upper()
        # Each tenant's street (with its community, social-work department and merchant),
        # platform (with its station) and education provider, in the one district.
        t.ids.update(build_city(
            made.make, also=("community", "department", "provider", "merchant"),
            label=label, within=made.as_dict(), names=TENANT_NAMES).as_dict())
        del t.ids["city"]
        for role, kind in ROLE_ORGANISATION.items():
            t.tokens[role] = qiji.token(f"tenant-{name}-{role}", role,
                                        organisation_id=t.ids[kind])
        t.ids["growth_path"] = growth_path
        # The district both tenants' streets are in: nobody's own (no role acts for a
        # district; the city-wide readers read its figures), named where a request asks for one.
        t.ids["district"] = district
        _hold(qiji, t, badge_class, n, title)
        tenants[name] = t
    qiji.sync()
    return World(qiji, admin, auditor, service, city, district, badge_class, tenants, title)


def _hold(qiji: InProcessQiji, t: Tenant, badge_class: str, n: int, title: str) -> None:
    """Everything tenant `t` holds, made by its own callers."""
    ok = qiji.ok
    tok = t.tokens
    now = datetime.now(UTC)
    t.ids["space"] = ok("identity", "CreateServiceSpace", ipb.CreateServiceSpaceRequest(
        request_id=rid(), street_id=t.street, name=f"驿站{t.name}", address="北大街1号",
        amenities=[ipb.AMENITY_REST],
        opening_hours=[ipb.OpeningHours(weekday=d, opens="08:00", closes="20:00")
                       for d in range(1, 8)]), tok["street_office"]
                        ).service_space.service_space_id
    t.rider_name = f"骑手{'甲乙'[n]}某"
    t.rider_phone = f"1390000{n:04d}"
    t.ids["rider"] = ok("identity", "RegisterRider", ipb.RegisterRiderRequest(
        request_id=rid(), platform_id=t.platform, platform_rider_id=f"R-{t.name}",
        name=t.rider_name, phone=t.rider_phone, home_street_id=t.street,
        station_id=t.station), tok["platform"]).rider.rider_id
    ok("identity", "VerifyRider", ipb.VerifyRiderRequest(request_id=rid(), rider_id=t.rider),
       tok["platform"])

    # training: a draft course, a published one, a session of it the rider is enrolled in
    def course(title: str) -> str:
        return ok("training", "DraftCourse", tpb.DraftCourseRequest(
            request_id=rid(), track=tpb.TRACK_SKILLS, title=title, description="",
            hours="2", formats=[tpb.COURSE_FORMAT_CLASSROOM], provider_id=t.provider,
            instructor=tpb.Instructor(name="张老师", kind=tpb.INSTRUCTOR_KIND_TEACHER)),
            tok["education_provider"]).course.course_id
    t.ids["course_draft"] = course(f"草稿课程{t.name}")
    # A platform (the station master's morning meeting) and a street office provide courses
    # of their own too.
    for role, kind in (("platform", "platform"), ("street_office", "street")):
        t.ids[f"course_draft_by_{role}"] = ok("training", "DraftCourse", tpb.DraftCourseRequest(
            request_id=rid(), track=tpb.TRACK_CIVIC_EDUCATION, title=f"晨会{t.name}{role}",
            description="", hours="0.5", formats=[tpb.COURSE_FORMAT_MORNING_MEETING],
            provider_id=t.ids[kind],
            instructor=tpb.Instructor(name="王站长", kind=tpb.INSTRUCTOR_KIND_STATION_MASTER)),
            tok[role]).course.course_id
    t.ids["course"] = course(f"安全骑行{t.name}")
    ok("training", "PublishCourse", tpb.PublishCourseRequest(
        request_id=rid(), course_id=t.course), tok["education_provider"])
    starts = now + timedelta(days=1)
    t.ids["session"] = ok("training", "ScheduleSession", tpb.ScheduleSessionRequest(
        request_id=rid(), course_id=t.course, service_space_id=t.space,
        start_time=ts(starts), end_time=ts(starts + timedelta(hours=2)), capacity=5),
        tok["education_provider"]).session.session_id
    ok("training", "EnrolRider", tpb.EnrolRiderRequest(
        request_id=rid(), session_id=t.session, rider_id=t.rider), tok["platform"])
    # The platform's own station course (站长+校长), published, and a session of it the
    # platform runs: it records its riders' attendance there, never at the provider's.
    own_course = ok("training", "DraftCourse", tpb.DraftCourseRequest(
        request_id=rid(), track=tpb.TRACK_SKILLS, title=f"岗前安全{t.name}", description="",
        hours="1", formats=[tpb.COURSE_FORMAT_MORNING_MEETING], provider_id=t.station,
        instructor=tpb.Instructor(name="王站长", kind=tpb.INSTRUCTOR_KIND_STATION_MASTER)),
        tok["platform"]).course.course_id
    ok("training", "PublishCourse", tpb.PublishCourseRequest(
        request_id=rid(), course_id=own_course), tok["platform"])
    later = starts + timedelta(hours=3)
    t.ids["session_by_platform"] = ok("training", "ScheduleSession", tpb.ScheduleSessionRequest(
        request_id=rid(), course_id=own_course, service_space_id=t.space,
        start_time=ts(later), end_time=ts(later + timedelta(hours=1)), capacity=5),
        tok["platform"]).session.session_id
    ok("training", "EnrolRider", tpb.EnrolRiderRequest(
        request_id=rid(), session_id=t.session_by_platform, rider_id=t.rider), tok["platform"])
    # The rider's growth plan, opened by their platform.
    t.ids["growth_plan"] = ok("training", "OpenGrowthPlan", tpb.OpenGrowthPlanRequest(
        request_id=rid(), rider_id=t.rider, growth_path_id=t.growth_path,
        goals=f"成为社工{t.name}", tracks=[tpb.TRACK_GRASSROOTS_GOVERNANCE]),
        tok["platform"]).growth_plan.growth_plan_id

    # merchants: the merchant joins, a draft perk and a published one, a claim, a package
    ok("merchants", "ApplyMerchant", mpb.ApplyMerchantRequest(
        request_id=rid(), merchant_id=t.merchant, name=f"面馆{t.name}", street_id=t.street,
        category="restaurant", location=mpb.Location(latitude=31.78, longitude=119.95,
                                                     address="北大街8号"),
        amenities=[mpb.MERCHANT_AMENITY_DRINKING_WATER]), tok["merchant"])
    ok("merchants", "ApproveMerchant", mpb.ApproveMerchantRequest(
        request_id=rid(), merchant_id=t.merchant), tok["street_office"])

    def perk(title: str) -> str:
        return ok("merchants", "CreatePerkOffer", mpb.CreatePerkOfferRequest(
            request_id=rid(), merchant_id=t.merchant, title=title,
            kind=mpb.PERK_KIND_FREE_ITEM, free_item="一瓶水",
            eligibility=mpb.ELIGIBILITY_ANY_VERIFIED_RIDER, total_quota=5, per_rider_limit=1,
            limit_period=mpb.LIMIT_PERIOD_DAY, valid_from_time=ts(now - timedelta(hours=1)),
            valid_until_time=ts(now + timedelta(days=30)), code_ttl_minutes=120),
            tok["merchant"]).perk_offer.perk_id
    t.ids["perk_draft"] = perk(f"草稿优惠{t.name}")
    t.ids["perk"] = perk(f"免费饮水{t.name}")
    ok("merchants", "PublishPerkOffer", mpb.PublishPerkOfferRequest(
        request_id=rid(), perk_id=t.perk), tok["merchant"])
    claim = ok("merchants", "ClaimPerk", mpb.ClaimPerkRequest(
        request_id=rid(), perk_id=t.perk, rider_id=t.rider), tok["platform"]).claim
    t.ids["claim"] = claim.claim_id
    t.ids["code"] = claim.code
    # A second perk, claimed and redeemed at the counter: the merchant's books have a row.
    t.ids["perk_redeemed"] = perk(f"充电半价{t.name}")
    ok("merchants", "PublishPerkOffer", mpb.PublishPerkOfferRequest(
        request_id=rid(), perk_id=t.perk_redeemed), tok["merchant"])
    redeemed = ok("merchants", "ClaimPerk", mpb.ClaimPerkRequest(
        request_id=rid(), perk_id=t.perk_redeemed, rider_id=t.rider), tok["platform"]).claim
    ok("merchants", "RedeemCode", mpb.RedeemCodeRequest(
        request_id=rid(), merchant_id=t.merchant, code=redeemed.code), tok["merchant"])
    t.ids["claim_redeemed"] = redeemed.claim_id
    t.ids["campaign"] = ok("merchants", "CreateCareCampaign", mpb.CreateCareCampaignRequest(
        request_id=rid(), street_id=t.street, name=f"关爱礼包{t.name}", description="",
        stock=10), tok["street_office"]).campaign.campaign_id
    ok("merchants", "AllocateCarePackage", mpb.AllocateCarePackageRequest(
        request_id=rid(), campaign_id=t.campaign, rider_id=t.rider), tok["street_office"])

    # badges: volunteer service at the community, a manual award
    t.ids["shift"] = ok("badges", "LogVolunteerService", bpb.LogVolunteerServiceRequest(
        request_id=rid(), rider_id=t.rider, community_id=t.community, activity="社区助老",
        start_time=ts(now - timedelta(hours=3)), hours="2"), tok["platform"]).shift.shift_id
    # badges: a volunteer activity of the community at the street's space; the rider signed up
    t.ids["activity"] = ok("badges", "PublishVolunteerActivity",
                           bpb.PublishVolunteerActivityRequest(
        request_id=rid(), community_id=t.community, title=f"助老送餐{t.name}",
        kind=bpb.VOLUNTEER_ACTIVITY_KIND_ELDERLY_CARE, start_time=ts(now + timedelta(days=2)),
        end_time=ts(now + timedelta(days=2, hours=2)), service_space_id=t.space, places=5,
        sign_up_deadline=ts(now + timedelta(days=1))), tok["community"]).activity.activity_id
    ok("badges", "SignUpForVolunteerActivity", bpb.SignUpForVolunteerActivityRequest(
        request_id=rid(), activity_id=t.activity, rider_id=t.rider), tok["platform"])
    t.ids["award"] = ok("badges", "GrantBadge", bpb.GrantBadgeRequest(
        request_id=rid(), rider_id=t.rider, badge_class_id=badge_class,
        reason=f"见义勇为{FREE_TEXT}",
        evidence=[bpb.Evidence(source="news", reference="常州日报",
                               narrative=f"报道{FREE_TEXT}")]),
        tok["street_office"]).award.award_id
    t.ids["recognition"] = ok("badges", "ConferRecognition", bpb.ConferRecognitionRequest(
        request_id=rid(), rider_id=t.rider, title_id=title, reason=f"骨干{FREE_TEXT}"),
        tok["street_office"]).recognition.recognition_id

    # governance: a report routed to the street's department, a mediation case
    t.ids["report"] = ok("governance", "SubmitReport", gpb.SubmitReportRequest(
        request_id=rid(), rider_id=t.rider, kind=gpb.REPORT_KIND_ANOMALY_WARNING,
        category=gpb.CATEGORY_ROAD_HAZARD, text=report_text(t),
        location=gpb.Location(street_id=t.street, latitude=31.78 + n, longitude=119.95),
        observe_time=ts(now - timedelta(minutes=5))), tok["platform"]).report.report_id
    t.ids["case"] = ok("governance", "OpenMediationCase", gpb.OpenMediationCaseRequest(
        request_id=rid(), street_id=t.street, subject=f"小区禁止骑手进入{FREE_TEXT}",
        mediator_name="李调解员",
        parties=[gpb.MediationParty(role=gpb.PARTY_ROLE_RIDER, rider_id=t.rider),
                 gpb.MediationParty(role=gpb.PARTY_ROLE_PROPERTY_MANAGER, name="张经理")]),
        tok["street_office"]).mediation_case.case_id
    # A help request (帮扶) of the rider, given to the street's social-work department; what
    # the rider wrote is theirs and their department's only.
    t.ids["help_request"] = ok("governance", "RequestHelp", gpb.RequestHelpRequest(
        request_id=rid(), rider_id=t.rider, kind=gpb.HELP_KIND_HARDSHIP,
        text=help_text(t)), tok["platform"]).help_request.help_request_id
    # The rider signs the participation pledge (listed to officials only, never to the other
    # tenant); the community signs the co-building pledge (public).
    if n == 0:
        for pledge in (gpb.PLEDGE_KIND_PARTICIPATION, gpb.PLEDGE_KIND_CO_BUILDING):
            ok("governance", "PublishPledge", gpb.PublishPledgeRequest(
                request_id=rid(), text="我承诺", kind=pledge), qiji.token("pledge-admin",
                                                                     "city_admin"))
    ok("governance", "SignPledge", gpb.SignPledgeRequest(
        request_id=rid(), rider_id=t.rider, pledge_version=1), tok["platform"])
    ok("governance", "SignCoBuildingPledge", gpb.SignCoBuildingPledgeRequest(
        request_id=rid(), organisation_id=t.community, pledge_version=1), tok["community"])
