"""Trust boundaries, tried as a competing tenant would, on SQLite and PostgreSQL: every RPC of
every service that a role acting for one organisation may call, called by tenant B's token
on what tenant A holds, and by A's own token. Generated from the services' descriptors and
access tables: an RPC added tomorrow is in the matrix the day it is added, and one without an
entry, or without a scope for a role it admits, fails it.

B's call is refused (PERMISSION_DENIED, OUT_OF_SCOPE) and writes nothing; a read of what A
made public (a published perk, a scheduled session, an approved merchant) or a list answers,
but shows nothing of A's that B may not see — no rider of A's, no draft, no claim, no report,
no name or phone. A's own call is admitted."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool, text_format
from google.protobuf.descriptor import FieldDescriptor

from services.platform.application import PlatformFeed
from shared.grpc.upstream import LocalUpstream
from shared.tenancy import RIDER, TENANT_ROLES, AllOf, Rows
from tests.conftest import badges_key_env, pg_env
from tests.inprocess import API_NAMES, SPECS, InProcessQiji, Service, descriptor
from tests.tenancy_world import FREE_TEXT, World, build, report_text, ts

pytestmark = pytest.mark.postgres
KERNEL = ("qiji.feed.v1.FeedService", "qiji.feed.v1.PublicFeedService",
          "qiji.audit.v1.AuditService")
# Request fields naming what a tenant holds, by field name.
FIELD_KEYS = {
    "rider_id": "rider", "platform_id": "platform", "street_id": "street",
    "home_street_id": "street", "station_id": "station", "community_id": "community",
    "service_space_id": "space", "department_id": "department", "merchant_id": "merchant",
    "perk_id": "perk_draft", "claim_id": "claim", "course_id": "course_draft",
    "provider_id": "provider", "session_id": "session", "report_id": "report",
    "case_id": "case", "shift_id": "shift", "award_id": "award", "campaign_id": "campaign",
    "recipient_id": "platform", "organisation_id": "street", "recognition_id": "recognition",
    "growth_path_id": "growth_path", "growth_plan_id": "growth_plan", "activity_id": "activity",
    "sponsor_id": "merchant", "area_id": "community", "help_request_id": "help_request",
    "to_department_id": "department", "district_id": "district",
}
# A request naming one of several kinds of unit (GetServiceRates: a department, a street or a
# district): each role names the unit it acts for, over the period just past.
ONE_UNIT_OF = {"department": "department_id", "street_office": "street_id"}
REFUSED_FOR_ADMITTED = {grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED,
                        grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}


def methods() -> list[tuple[str, str]]:
    pool = descriptor_pool.Default()
    found = []
    for service in SPECS:
        for name in (API_NAMES[service], *KERNEL):
            found += [(service, f"/{name}/{m.name}")
                      for m in pool.FindServiceByName(name).methods]
    return found


def writes(path: str) -> bool:
    """Whether the method is a command (it takes a request id, AIP-155) rather than a read."""
    return "request_id" in descriptor(path).input_type.fields_by_name


def cases(*, commands: bool | None = None) -> list[Any]:
    """(service, method, role) for every role acting for one organisation that the method's
    entry admits (only the commands, or only the reads, if asked). A method without an entry
    is a case of its own, and fails."""
    found = []
    for service, path in methods():
        if commands is not None and writes(path) != commands:
            continue
        access = SPECS[service].access.get(path) or _kernel_access(service, path)
        roles = sorted(access.roles & TENANT_ROLES) if access else ["(no entry)"]
        found += [pytest.param(service, path, role, id=f"{service}.{path.rsplit('/', 1)[1]}"
                               f"-{role}") for role in roles]
    return found


def _kernel_access(service: str, path: str) -> Any:
    from shared.grpc.server import service_access
    return service_access(SPECS[service]).get(path)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest) -> str:
    return request.param


def a_world(store: str, request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp(f"tenancy-{store}")
    env = {"QIJI_DATA_DIR": str(tmp / "data"), "QIJI_POSTGRES_POOL_SIZE": "2",
           **badges_key_env()}
    if store == "postgres":
        env.update(pg_env(request.getfixturevalue("postgres_db"),
                          f"t_{uuid.uuid4().hex[:12]}"))
    qiji = InProcessQiji(env, Path(tmp / "tokens.json"))
    try:
        yield build(qiji)
    finally:
        qiji.close()


@pytest.fixture(scope="class")
def world(store: str, request: pytest.FixtureRequest,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A world of its own for each class of tests, so that none meets what another changed (a
    tenant's admitted calls withdraw its perks and let its rider go), whatever order the tests
    run in; one world at a time holds connections."""
    yield from a_world(store, request, tmp_path_factory)


def request_for(w: World, service: Service, path: str, tenant: str, role: str, *,
                own: bool = False) -> Any:
    """A request of `path` that names what `tenant` holds, wherever it names anything (what
    its organisation acting in `role` holds, where the tenant has one of its own). A draft
    perk or course is its merchant's or provider's: `own` (the tenant's own call) names the
    published one to any other of its roles, which a draft is rightly hidden from."""
    request = service.request_of(path)
    held = w.tenants[tenant]
    for f in request.DESCRIPTOR.fields:
        if f.name == "request_id":
            request.request_id = str(uuid.uuid4())
        elif f.name == "provider_id":
            request.provider_id = w.organisation(tenant, role)
        elif f.name == "organisation_id" and path.endswith("/RevisePartner"):
            # A partner revises its own profile, in the role its organisation's kind acts in.
            request.organisation_id = w.organisation(tenant, role)
        elif f.name == "course_id":
            request.course_id = held.ids.get(
                f"course_draft_by_{role}",
                held.ids["course"] if own and role != "education_provider"
                else held.course_draft)
        elif f.name == "session_id":
            # A platform runs sessions of its own courses (and records attendance there).
            request.session_id = held.ids.get(f"session_by_{role}", held.session)
        elif f.name == "rider_id" and path.endswith("/FindNearby") \
                and role not in ("platform", "street_office"):
            pass  # places are public; among tenants, only the rider's owners name a rider
        elif f.name == "radius_metres":
            request.radius_metres = 1000.0  # FindNearby's: what names a rider is the point
        elif f.name == "location" and path.endswith("/FindNearby"):
            request.location.latitude, request.location.longitude = 10.0, 10.0
        elif f.name == "organisation_id" and path.endswith("/SignCoBuildingPledge"):
            # Each kind signs by its own token (its own organisation).
            request.organisation_id = w.organisation(tenant, role)
        elif f.name == "pledge_version" and path.endswith("/SignCoBuildingPledge"):
            request.pledge_version = 1
        elif f.name == "pledge_kind":
            # Riders' signatures: the ones the other tenant must not list.
            request.pledge_kind = 1  # PLEDGE_KIND_PARTICIPATION
        elif f.name == "amenity" and path.endswith("/RecordSpaceUse"):
            request.amenity = 1  # AMENITY_REST, which every tenant's space offers
        elif f.name == "count" and path.endswith("/RecordSpaceUse"):
            request.count = 1
        elif path.endswith("/GetServiceRates") and f.name in (
                "department_id", "street_id", "district_id"):
            if ONE_UNIT_OF.get(role) == f.name:
                setattr(request, f.name, held.ids[FIELD_KEYS[f.name]])
        elif path.endswith("/GetServiceRates") and f.name in ("start_time", "end_time"):
            now = datetime.now(UTC)
            getattr(request, f.name).CopyFrom(ts(now - timedelta(days=1) if f.name ==
                                                 "start_time" else now + timedelta(days=1)))
        elif f.name == "perk_id" and own and role != "merchant":
            request.perk_id = held.ids["perk"]
        elif f.name in FIELD_KEYS and f.type == FieldDescriptor.TYPE_STRING \
                and not f.is_repeated:
            setattr(request, f.name, held.ids[FIELD_KEYS[f.name]])
        elif f.name == "badge_class_id":
            request.badge_class_id = w.badge_class
        elif f.name == "title_id":
            request.title_id = w.recognition_title
        elif f.name == "platform_rider_id":
            request.platform_rider_id = f"R-{tenant}"
        elif f.name == "code":
            request.code = held.code
        elif f.type == FieldDescriptor.TYPE_MESSAGE and not f.is_repeated \
                and "street_id" in f.message_type.fields_by_name:
            getattr(request, f.name).street_id = held.street
    return request


def filter_variants(request: Any) -> list[Any]:
    """The request with each of the ids it names alone, and with none."""
    named = [f.name for f in request.DESCRIPTOR.fields
             if f.type == FieldDescriptor.TYPE_STRING and not f.is_repeated
             and getattr(request, f.name) and f.name != "request_id"]
    variants = []
    for keep in [*([n] for n in named), []]:
        variant = type(request)()
        variant.CopyFrom(request)
        for name in named:
            if name not in keep:
                variant.ClearField(name)
        variants.append(variant)
    return variants


def shown(response: Any) -> str:
    return text_format.MessageToString(response, as_utf8=True) if response is not None else ""


# ---------------------------------------------------------------------------- as adversaries


def platform_feed(w: World, organisation: str) -> list[dict[str, Any]]:
    """Every event the platform gateway gives `organisation`, as its CloudEvents' data."""
    upstreams = {name: LocalUpstream(svc.app, SPECS[name].public_events)
                 for name, svc in w.qiji.services.items()}
    feed = PlatformFeed(upstreams)
    positions = feed.decode_cursor("")
    found = []
    while True:
        page = feed.read(positions, 200, [], organisation)
        found += [{"type": e.type, "text": e.text_data,
                   "subject": e.attributes["subject"].ce_string} for e, _ in page.events]
        positions = page.positions
        if page.caught_up:
            return found


class TestAsAdversaries:
    """Stories of the issue, each as the tenant who tried it."""

    def test_a_platforms_feed_carries_its_own_riders_and_nothing_of_anothers(
            self, world: World) -> None:
        a, b = world.tenants["a"], world.tenants["b"]
        for mine, theirs in ((a, b), (b, a)):
            seen = platform_feed(world, mine.platform)
            text = " ".join(e["text"] + e["subject"] for e in seen)
            assert mine.rider in text
            assert {e["type"] for e in seen} >= {"qiji.identity.v1.RiderRegistered",
                                                 "qiji.identity.v1.RiderVerified",
                                                 "qiji.badges.v1.BadgeAwarded",
                                                 "qiji.merchants.v1.PerkClaimed"}
            leaked = [s for s in (theirs.rider, theirs.rider_name, theirs.rider_phone,
                                  f"R-{theirs.name}", theirs.station, theirs.claim) if s in text]
            assert not leaked, f"{mine.name}'s feed shows {theirs.name}'s {leaked}"


    def test_a_feed_read_for_no_organisation_carries_no_rider_at_all(
            self, world: World) -> None:
        assert not [e for e in platform_feed(world, "") if '"rider_id"' in e["text"]]


    def test_lists_show_each_tenant_its_own_and_the_city_admin_everything(
            self, world: World) -> None:
        from qiji.governance.v1 import governance_service_pb2 as gpb
        from qiji.identity.v1 import identity_service_pb2 as ipb
        from qiji.merchants.v1 import merchants_service_pb2 as mpb
        q, a, b = world.qiji, world.tenants["a"], world.tenants["b"]

        def riders(token: str) -> set[str]:
            return {r.rider_id for r in q.ok("identity", "ListRiders", ipb.ListRidersRequest(),
                                             token).riders}
        assert riders(world.token("a", "platform")) == {a.rider}
        assert riders(world.token("b", "street_office")) == {b.rider}
        assert riders(world.admin) >= {a.rider, b.rider}

        def reports(token: str) -> set[str]:
            return {r.report_id for r in q.ok("governance", "ListReports",
                                              gpb.ListReportsRequest(), token).reports}
        assert reports(world.token("a", "department")) == {a.report}
        assert reports(world.token("b", "street_office")) == {b.report}

        def perks(token: str) -> set[str]:
            return {p.perk_id for p in q.ok("merchants", "ListPerkOffers",
                                            mpb.ListPerkOffersRequest(), token).perk_offers}
        # A merchant sees its own drafts, and what every merchant has published; never another's
        # drafts.
        assert perks(world.token("b", "merchant")) == {b.perk_draft, b.perk, b.perk_redeemed,
                                                       a.perk, a.perk_redeemed}


    def test_what_another_tenant_shares_in_public_shows_none_of_its_riders(
            self, world: World) -> None:
        from qiji.merchants.v1 import merchants_service_pb2 as mpb
        from qiji.training.v1 import training_service_pb2 as tpb
        q, a = world.qiji, world.tenants["a"]
        session = q.ok("training", "GetSession", tpb.GetSessionRequest(session_id=a.session),
                       world.token("b", "platform")).session
        assert session.places_taken == 1 and not session.enrolments
        own = q.ok("training", "GetSession", tpb.GetSessionRequest(session_id=a.session),
                   world.token("a", "platform")).session
        assert [e.rider_id for e in own.enrolments] == [a.rider]
        campaign = q.ok("merchants", "GetCareCampaign", mpb.GetCareCampaignRequest(
            campaign_id=a.campaign), world.token("b", "platform")).campaign
        assert a.rider not in shown(campaign)


    def test_another_merchants_code_is_no_code_at_all(
            self, world: World) -> None:
        """Redeeming B's code at A's counter answers as a made-up code does: it must not confirm
        that the code is valid (nor use it up)."""
        from qiji.merchants.v1 import merchants_service_pb2 as mpb
        q, a, b = world.qiji, world.tenants["a"], world.tenants["b"]
        before = q.positions()
        theirs = q.call("merchants", "RedeemCode", mpb.RedeemCodeRequest(
            request_id=str(uuid.uuid4()), merchant_id=a.merchant, code=b.code),
            world.token("a", "merchant"))
        made_up = q.call("merchants", "RedeemCode", mpb.RedeemCodeRequest(
            request_id=str(uuid.uuid4()), merchant_id=a.merchant, code="ZZZZ-ZZZZ-ZZZZ-ZZZZ"),
            world.token("a", "merchant"))
        assert (theirs.code, theirs.reason) == (made_up.code, made_up.reason) == (
            grpc.StatusCode.NOT_FOUND, "CODE_NOT_FOUND")
        assert theirs.message == made_up.message
        assert q.positions() == before


    def test_personal_data_is_shown_as_the_masking_table_says(
            self, world: World) -> None:
        from qiji.governance.v1 import governance_service_pb2 as gpb
        from qiji.identity.v1 import identity_service_pb2 as ipb
        q, a = world.qiji, world.tenants["a"]

        def rider(token: str) -> Any:
            return q.ok("identity", "GetRider", ipb.GetRiderRequest(rider_id=a.rider), token).rider
        admin, office, platform, auditor = (rider(world.admin), rider(world.token("a",
                                            "street_office")), rider(world.token("a", "platform")),
                                            rider(world.auditor))
        assert (admin.name, admin.phone) == (office.name, office.phone) == (a.rider_name,
                                                                             a.rider_phone)
        for masked in (platform, auditor):  # no consent given: the platform sees it masked too
            assert masked.name == a.rider_name[0] + "*" * (len(a.rider_name) - 1)
            assert masked.phone == a.rider_phone[:3] + "****" + a.rider_phone[-4:]

        def report(token: str) -> Any:
            return q.ok("governance", "GetReport", gpb.GetReportRequest(report_id=a.report),
                        token).report
        assert a.rider_name in report(world.token("a", "department")).text
        assert a.rider_name not in report(world.auditor).text
        assert report(world.auditor).text.startswith("[withheld:")

    def test_a_platform_reads_its_own_riders_report_and_anothers_as_if_there_were_none(
            self, world: World) -> None:
        """Both ways round: each platform reads its own rider's report, its history and its
        rider's list of reports; the other platform's answers exactly as a made-up report or
        rider does (AIP-211), byte for byte but for the id it sent."""
        from qiji.governance.v1 import governance_service_pb2 as gpb
        q = world.qiji
        for mine, theirs in (("a", "b"), ("b", "a")):
            own, other, token = world.tenants[mine], world.tenants[theirs], world.token(
                mine, "platform")
            report = q.ok("governance", "GetReport", gpb.GetReportRequest(
                report_id=own.report), token).report
            assert (report.rider_id, report.text, report.kind, report.category,
                    report.location.street_id) == (
                own.rider, report_text(own), gpb.REPORT_KIND_ANOMALY_WARNING,
                gpb.CATEGORY_ROAD_HAZARD, own.street)
            assert [a.department_id for a in report.assignments] == [own.department]
            history = q.ok("governance", "GetReportHistory", gpb.GetReportHistoryRequest(
                report_id=own.report), token).entries
            assert [e.event_type for e in history] == ["Report.Submitted", "Report.Routed"]
            listed = q.ok("governance", "ListReports", gpb.ListReportsRequest(
                rider_id=own.rider), token).reports
            assert [r.report_id for r in listed] == [own.report]

            made_up = str(uuid.uuid4())
            for rpc, request in (("GetReport", gpb.GetReportRequest),
                                 ("GetReportHistory", gpb.GetReportHistoryRequest)):
                theirs_answer = q.call("governance", rpc, request(report_id=other.report), token)
                nobodys = q.call("governance", rpc, request(report_id=made_up), token)
                assert (theirs_answer.code, theirs_answer.reason) == (
                    grpc.StatusCode.PERMISSION_DENIED, "OUT_OF_SCOPE"), (rpc, theirs_answer)
                assert as_sent(theirs_answer, other.report) == as_sent(nobodys, made_up), rpc
            theirs_listed = q.call("governance", "ListReports", gpb.ListReportsRequest(
                rider_id=other.rider), token)
            nobodys_listed = q.call("governance", "ListReports", gpb.ListReportsRequest(
                rider_id=made_up), token)
            assert theirs_listed.code == grpc.StatusCode.PERMISSION_DENIED
            assert as_sent(theirs_listed, other.rider) == as_sent(nobodys_listed, made_up)

    def test_a_platform_lists_reports_one_rider_of_its_own_at_a_time(
            self, world: World) -> None:
        """Without a rider the platform is told to name one; with another filter beside its
        rider, the filters all hold as for anyone."""
        from qiji.governance.v1 import governance_service_pb2 as gpb
        q, a = world.qiji, world.tenants["a"]
        token = world.token("a", "platform")
        unnamed = q.call("governance", "ListReports", gpb.ListReportsRequest(), token)
        assert (unnamed.code, unnamed.reason) == (grpc.StatusCode.INVALID_ARGUMENT,
                                                  "FIELD_REQUIRED")
        assert "rider_id" in unnamed.message
        elsewhere = q.ok("governance", "ListReports", gpb.ListReportsRequest(
            rider_id=a.rider, street_id=world.tenants["b"].street), token).reports
        assert not elsewhere

    def test_a_mediation_case_follows_only_a_report_of_the_offices_own_street(
            self, world: World) -> None:
        from qiji.governance.v1 import governance_service_pb2 as gpb
        q, a, b = world.qiji, world.tenants["a"], world.tenants["b"]
        before = q.positions()
        refused = q.call("governance", "OpenMediationCase", gpb.OpenMediationCaseRequest(
            request_id=str(uuid.uuid4()), street_id=b.street, report_id=a.report,
            subject="x", mediator_name="李调解员",
            parties=[gpb.MediationParty(role=gpb.PARTY_ROLE_RIDER, rider_id=b.rider)]),
            world.token("b", "street_office"))
        assert (refused.code, refused.reason) == (grpc.StatusCode.PERMISSION_DENIED,
                                                  "OUT_OF_SCOPE")
        assert q.positions() == before

    @pytest.mark.parametrize("role", ["platform", "auditor"])
    def test_free_text_is_withheld_from_platforms_and_auditors_on_every_read(
            self, world: World, role: str) -> None:
        """Every read every service offers, of everything A holds, as A's platform and as an
        auditor: no free text (a report's words, an award's reason and evidence, a mediation's
        subject) comes back in clear."""
        token = world.token("a", "platform") if role == "platform" else world.auditor
        # What A's rider wrote is the rider's own to follow in the platform's app: shown to A's
        # platform (nothing else of the report's free text is).
        own_words = report_text(world.tenants["a"]) if role == "platform" else ""
        for service, path in methods():
            svc = world.qiji.services[service]
            access = svc.access.get(path)
            if access is None or role not in access.roles or "/qiji.feed." in path \
                    or path.endswith("/ExportCredential"):
                # A credential is the rider's signed document: it carries the evidence as the
                # official wrote it for the rider to show (README, the masking table).
                continue
            request = request_for(world, svc, path, "a", "platform")
            if "request_id" in request.DESCRIPTOR.fields_by_name:
                continue
            answer = svc.call(path, request, token)
            seen = shown(answer.response).replace(own_words, "") if own_words else shown(
                answer.response)
            assert FREE_TEXT not in seen + answer.message, (path, role)


class TestAdversariesWhoChangeTheWorld:
    """The adversary stories that write (a rider enrolled, a report submitted, a package
    allocated): a world of their own, so that the stories above, which count what each
    tenant sees, hold in any order (pytest -p randomly)."""

    def test_who_runs_a_session_records_attendance_and_sees_its_whole_roll(
            self, world: World) -> None:
        """A platform records attendance at sessions of its own station courses only: never
        certifies its riders on a course another provider gives. The provider and the host
        street office see every enrolment; a platform only its own riders'."""
        from qiji.identity.v1 import identity_service_pb2 as ipb
        from qiji.training.v1 import training_service_pb2 as tpb
        q, a, b = world.qiji, world.tenants["a"], world.tenants["b"]
        refused = q.call("training", "RecordCompletion", tpb.RecordCompletionRequest(
            request_id=str(uuid.uuid4()), session_id=a.session, rider_id=a.rider,
            result=tpb.COMPLETION_RESULT_PASSED, score=100), world.token("a", "platform"))
        assert (refused.code, refused.reason) == (grpc.StatusCode.PERMISSION_DENIED,
                                                  "OUT_OF_SCOPE")
        # A new rider of B's in A's provider's session (public: any platform may enrol).
        newcomer = q.ok("identity", "RegisterRider", ipb.RegisterRiderRequest(
            request_id=str(uuid.uuid4()), platform_id=b.platform, platform_rider_id="R-b-new",
            name="新骑手", phone="13900009999", home_street_id=b.street, station_id=b.station),
            world.token("b", "platform")).rider.rider_id
        q.ok("identity", "VerifyRider", ipb.VerifyRiderRequest(
            request_id=str(uuid.uuid4()), rider_id=newcomer), world.token("b", "platform"))
        q.ok("training", "EnrolRider", tpb.EnrolRiderRequest(
            request_id=str(uuid.uuid4()), session_id=a.session, rider_id=newcomer),
            world.token("b", "platform"))

        def roll(token: str) -> set[str]:
            return {e.rider_id for e in q.ok("training", "GetSession", tpb.GetSessionRequest(
                session_id=a.session), token).session.enrolments}
        assert roll(world.token("a", "education_provider")) == {a.rider, newcomer}
        assert roll(world.token("a", "street_office")) == {a.rider, newcomer}
        assert roll(world.token("a", "platform")) == {a.rider}
        assert roll(world.token("b", "platform")) == {newcomer}

    def test_a_community_runs_its_own_activities_and_each_platform_sees_its_own_riders(
            self, world: World) -> None:
        """Another community cannot revise, cancel or record attendance at A's activity;
        another platform cannot sign A's rider up, nor see their sign-ups. Riders of any
        platform may sign up for a published activity: its community sees the whole roll,
        each platform its own riders only."""
        from qiji.badges.v1 import badges_service_pb2 as bpb
        from qiji.identity.v1 import identity_service_pb2 as ipb
        q, a, b = world.qiji, world.tenants["a"], world.tenants["b"]
        start = datetime.now(UTC) + timedelta(days=3)
        activity = q.ok("badges", "PublishVolunteerActivity", bpb.PublishVolunteerActivityRequest(
            request_id=str(uuid.uuid4()), community_id=a.community, title="荷悦体育公园义务巡河",
            kind=bpb.VOLUNTEER_ACTIVITY_KIND_ENVIRONMENT, start_time=ts(start),
            end_time=ts(start + timedelta(hours=2)), address="荷悦体育公园", places=3,
            sign_up_deadline=ts(start - timedelta(hours=1))),
            world.token("a", "community")).activity.activity_id
        refused = [
            q.call("badges", "CancelVolunteerActivity", bpb.CancelVolunteerActivityRequest(
                request_id=str(uuid.uuid4()), activity_id=activity, reason="不是我们的"),
                world.token("b", "community")),
            q.call("badges", "RecordVolunteerAttendance", bpb.RecordVolunteerAttendanceRequest(
                request_id=str(uuid.uuid4()), activity_id=activity, rider_id=a.rider),
                world.token("b", "street_office")),
            q.call("badges", "SignUpForVolunteerActivity", bpb.SignUpForVolunteerActivityRequest(
                request_id=str(uuid.uuid4()), activity_id=activity, rider_id=a.rider),
                world.token("b", "platform"))]
        assert {(r.code, r.reason) for r in refused} == {(grpc.StatusCode.PERMISSION_DENIED,
                                                          "OUT_OF_SCOPE")}
        newcomer = q.ok("identity", "RegisterRider", ipb.RegisterRiderRequest(
            request_id=str(uuid.uuid4()), platform_id=b.platform, platform_rider_id="R-b-vol",
            name="志愿骑手", phone="13900008888", home_street_id=b.street, station_id=b.station),
            world.token("b", "platform")).rider.rider_id
        q.ok("identity", "VerifyRider", ipb.VerifyRiderRequest(
            request_id=str(uuid.uuid4()), rider_id=newcomer), world.token("b", "platform"))
        for rider, platform in ((a.rider, "a"), (newcomer, "b")):
            q.ok("badges", "SignUpForVolunteerActivity", bpb.SignUpForVolunteerActivityRequest(
                request_id=str(uuid.uuid4()), activity_id=activity, rider_id=rider),
                world.token(platform, "platform"))

        def roll(token: str, **query: str) -> set[str]:
            return {s.rider_id for s in q.ok("badges", "ListVolunteerSignUps",
                                             bpb.ListVolunteerSignUpsRequest(**query),
                                             token).sign_ups}
        assert roll(world.token("a", "community"), activity_id=activity) == {a.rider, newcomer}
        assert roll(world.token("a", "street_office"), activity_id=activity) == {
            a.rider, newcomer}
        assert roll(world.token("b", "community"), activity_id=activity) == set()
        assert roll(world.token("a", "platform"), activity_id=activity) == {a.rider}
        assert roll(world.token("b", "platform"), activity_id=activity) == {newcomer}
        assert roll(world.token("b", "platform"), rider_id=a.rider) == set()
        shown_to_b = q.ok("badges", "GetVolunteerActivity", bpb.GetVolunteerActivityRequest(
            activity_id=activity), world.token("b", "platform")).activity
        assert (shown_to_b.places_taken, shown_to_b.places_left) == (2, 1)
        assert a.rider not in shown(shown_to_b)

    def test_a_report_of_the_same_incident_does_not_name_another_tenants_report(
            self, world: World) -> None:
        from qiji.governance.v1 import governance_service_pb2 as gpb
        q, a, b = world.qiji, world.tenants["a"], world.tenants["b"]
        original = q.ok("governance", "GetReport", gpb.GetReportRequest(report_id=a.report),
                        world.admin).report
        theirs = q.ok("governance", "SubmitReport", gpb.SubmitReportRequest(
            request_id=str(uuid.uuid4()), rider_id=b.rider, kind=original.kind,
            category=original.category, text="井盖缺失", location=original.location),
            world.token("b", "platform")).report
        assert theirs.status == gpb.REPORT_STATUS_DUPLICATE
        assert a.report not in shown(theirs)
        # B's platform follows its rider's report: its history does not name A's either.
        history = q.ok("governance", "GetReportHistory", gpb.GetReportHistoryRequest(
            report_id=theirs.report_id), world.token("b", "platform")).entries
        assert "Report.LinkedAsDuplicate" in [e.event_type for e in history]
        assert a.report not in " ".join(shown(e) for e in history)
        office_history = q.ok("governance", "GetReportHistory", gpb.GetReportHistoryRequest(
            report_id=theirs.report_id), world.token("a", "street_office")).entries
        assert a.report in " ".join(shown(e) for e in office_history)
        # The street office where it happened sees the link both ways.
        seen = q.ok("governance", "GetReport", gpb.GetReportRequest(report_id=theirs.report_id),
                    world.token("a", "street_office")).report
        assert seen.duplicate_of_report_id == a.report

    def test_a_platform_follows_its_riders_report_to_the_outcome_not_the_officials_notes(
            self, world: World) -> None:
        """A's rider reports; the department works it, with a note, and resolves it; the
        street office verifies it, with a note. A's platform sees what the rider is owed — the
        words, where, who took it, each step and when, the resolution — and none of the
        officials' notes; the department and the street office still read every note, and an
        auditor none of the free text."""
        from qiji.governance.v1 import governance_service_pb2 as gpb
        q, a = world.qiji, world.tenants["a"]
        platform, department, office = (world.token("a", role) for role in (
            "platform", "department", "street_office"))
        words, work_note, resolution, verification_note = (
            f"{a.rider_name}看见桥下积水{FREE_TEXT}", "工作人员李某已出发", "已抽水疏通",
            "街道回访确认，张某在场")
        submitted = q.ok("governance", "SubmitReport", gpb.SubmitReportRequest(
            request_id=str(uuid.uuid4()), rider_id=a.rider,
            kind=gpb.REPORT_KIND_PUBLIC_SENTIMENT, category=gpb.CATEGORY_ENVIRONMENT,
            text=words, location=gpb.Location(street_id=a.street, latitude=30.5,
                                              longitude=119.5)), platform).report
        [taken_by] = [x.department_id for x in submitted.assignments]
        assert taken_by == a.department

        def work(rpc: str, request: Any, token: str, **fields: Any) -> None:
            q.ok("governance", rpc, request(request_id=str(uuid.uuid4()),
                                            report_id=submitted.report_id, **fields), token)
        at = {"department_id": taken_by}
        work("AcknowledgeAssignment", gpb.AcknowledgeAssignmentRequest, department, **at)
        work("StartAssignmentWork", gpb.StartAssignmentWorkRequest, department, note=work_note,
             **at)
        work("ResolveAssignment", gpb.ResolveAssignmentRequest, department,
             resolution=resolution, **at)
        work("VerifyReport", gpb.VerifyReportRequest, office, note=verification_note)

        def report(token: str) -> Any:
            return q.ok("governance", "GetReport", gpb.GetReportRequest(
                report_id=submitted.report_id), token).report

        followed = report(platform)
        [assignment] = followed.assignments
        assert (followed.text, followed.status, followed.kind, followed.category) == (
            words, gpb.REPORT_STATUS_VERIFIED, gpb.REPORT_KIND_PUBLIC_SENTIMENT,
            gpb.CATEGORY_ENVIRONMENT)
        assert (followed.location.street_id, followed.location.latitude) == (a.street, 30.5)
        assert (assignment.department_id, assignment.status, assignment.resolution) == (
            a.department, gpb.ASSIGNMENT_STATUS_RESOLVED, resolution)
        assert followed.close_time.seconds and followed.verify_time.seconds
        assert assignment.work_note == f"[withheld: {len(work_note)} characters]"
        assert followed.verification_note == f"[withheld: {len(verification_note)} characters]"

        history = q.ok("governance", "GetReportHistory", gpb.GetReportHistoryRequest(
            report_id=submitted.report_id), platform).entries
        steps = {e.event_type: e for e in history}
        assert list(steps) == ["Report.Submitted", "Report.Routed", "Report.Acknowledged",
                               "Report.WorkStarted", "Report.AssignmentResolved",
                               "Report.Closed", "Report.Verified"]
        assert steps["Report.Submitted"].details["text"] == words
        assert steps["Report.AssignmentResolved"].details["resolution"] == resolution
        assert steps["Report.Acknowledged"].details["department_id"] == a.department
        assert steps["Report.Closed"].details["outcome"] == "RESOLVED"
        assert all(e.time.seconds for e in history)
        for notes in (work_note, verification_note):
            assert notes not in shown(followed) + " ".join(shown(e) for e in history)

        # No regression: officials read every note, as before; an auditor no free text.
        for token in (department, office):
            seen = report(token)
            assert (seen.text, seen.assignments[0].work_note, seen.assignments[0].resolution,
                    seen.verification_note) == (words, work_note, resolution,
                                                verification_note)
        audited = report(world.auditor)
        assert FREE_TEXT not in shown(audited) and resolution not in shown(audited)

    def test_a_street_records_and_reads_the_use_of_its_own_spaces_only(
            self, world: World) -> None:
        """Visits: A's street office records that riders rested at A's space and reads it
        back, by space and for its street; B's street office is refused both for A's space
        and A's street, and its own street's list shows none of A's spaces."""
        from qiji.identity.v1 import identity_service_pb2 as ipb
        q, a, b = world.qiji, world.tenants["a"], world.tenants["b"]
        mine, theirs = world.token("a", "street_office"), world.token("b", "street_office")
        recorded = q.ok("identity", "RecordSpaceUse", ipb.RecordSpaceUseRequest(
            request_id=str(uuid.uuid4()), service_space_id=a.space,
            amenity=ipb.AMENITY_REST, count=4), mine)
        assert recorded.day.total >= 4
        before = q.positions()
        for rpc, request in (
                ("RecordSpaceUse", ipb.RecordSpaceUseRequest(
                    request_id=str(uuid.uuid4()), service_space_id=a.space,
                    amenity=ipb.AMENITY_REST, count=1)),
                ("GetSpaceUse", ipb.GetSpaceUseRequest(service_space_id=a.space)),
                ("ListSpaceUse", ipb.ListSpaceUseRequest(street_id=a.street))):
            refused = q.call("identity", rpc, request, theirs)
            assert (refused.code, refused.reason) == (grpc.StatusCode.PERMISSION_DENIED,
                                                      "OUT_OF_SCOPE"), (rpc, refused)
        assert q.positions() == before
        own = q.ok("identity", "ListSpaceUse", ipb.ListSpaceUseRequest(street_id=b.street),
                   theirs)
        assert [s.service_space_id for s in own.spaces] == [b.space]
        seen = q.ok("identity", "GetSpaceUse", ipb.GetSpaceUseRequest(service_space_id=a.space),
                    mine)
        assert [(t.amenity, t.count) for t in seen.totals] == [(ipb.AMENITY_REST,
                                                                recorded.day.total)]
        listed = q.ok("identity", "ListSpaceUse", ipb.ListSpaceUseRequest(street_id=a.street),
                      mine).spaces
        assert [(s.service_space_id, s.total) for s in listed] == [(a.space,
                                                                    recorded.day.total)]
        everywhere = q.ok("identity", "ListSpaceUse", ipb.ListSpaceUseRequest(),
                          world.admin).spaces
        assert {a.space, b.space} <= {s.service_space_id for s in everywhere}

    def test_a_campaign_counts_every_package_whoever_asks(self, world: World) -> None:
        from qiji.merchants.v1 import merchants_service_pb2 as mpb
        q, a, b = world.qiji, world.tenants["a"], world.tenants["b"]
        q.ok("merchants", "AllocateCarePackage", mpb.AllocateCarePackageRequest(
            request_id=str(uuid.uuid4()), campaign_id=a.campaign, rider_id=b.rider),
            world.token("a", "street_office"))

        def seen(token: str) -> Any:
            return q.ok("merchants", "GetCareCampaign", mpb.GetCareCampaignRequest(
                campaign_id=a.campaign), token).campaign
        office, platform = seen(world.token("a", "street_office")), seen(world.token("b",
                                                                                    "platform"))
        assert office.allocated == platform.allocated == 2
        assert {x.rider_id for x in office.allocations} == {a.rider, b.rider}
        assert {x.rider_id for x in platform.allocations} == {b.rider}


        def listed(token: str) -> set[str]:
            return {x.rider_id for x in q.ok(
                "merchants", "ListCarePackageAllocations", mpb.ListCarePackageAllocationsRequest(
                    campaign_id=a.campaign), token).allocations}
        assert listed(world.token("a", "street_office")) == {a.rider, b.rider}
        assert listed(world.token("b", "platform")) == {b.rider}
        assert listed(world.token("a", "platform")) == {a.rider}


# ---------------------------------------------------------------------------- no rider oracle


def pins_rider(target: Any) -> bool:
    """Whether a scope admits the caller only if it owns the request's rider (RIDER, or an
    AllOf holding it): then the guard has already refused another's or a made-up rider."""
    return target == RIDER or (isinstance(target, AllOf) and RIDER in target.refs)


def names_riders(path: str) -> bool:
    """The request names riders: a `rider_id`, or messages of a repeated field holding one
    (a mediation case's parties)."""
    fields = descriptor(path).input_type.fields
    return any(f.name == "rider_id" or (
        f.type == FieldDescriptor.TYPE_MESSAGE and "rider_id" in f.message_type.fields_by_name)
        for f in fields)


def unpinned_rider_commands() -> set[tuple[str, str]]:
    """(rpc, role) of every command naming a rider that a tenant role is admitted to on
    something else than that rider (its street, session, campaign or desk)."""
    return {(path.rsplit("/", 1)[1], role) for service, path in methods()
            if writes(path) and names_riders(path) and (
                access := SPECS[service].access.get(path)) is not None
            for role, target in access.scopes.items() if not pins_rider(target)}


def mediation(w: World, *riders: str, subject: str = "骑手与小区物业纠纷") -> Any:
    from qiji.governance.v1 import governance_service_pb2 as gpb
    return gpb.OpenMediationCaseRequest(
        request_id=str(uuid.uuid4()), street_id=w.tenants["a"].street, subject=subject,
        mediator_name="李调解员",
        parties=[*(gpb.MediationParty(role=gpb.PARTY_ROLE_RIDER, rider_id=r) for r in riders),
                 gpb.MediationParty(role=gpb.PARTY_ROLE_PROPERTY_MANAGER, name="张经理")])


def report(w: World, rider: str, text: str = "路口井盖缺失") -> Any:
    from qiji.governance.v1 import governance_service_pb2 as gpb
    return gpb.SubmitReportRequest(
        request_id=str(uuid.uuid4()), rider_id=rider, kind=gpb.REPORT_KIND_ANOMALY_WARNING,
        category=gpb.CATEGORY_ENVIRONMENT, text=text,
        location=gpb.Location(street_id=w.tenants["a"].street, latitude=31.7, longitude=119.9),
        observe_time=ts(datetime.now(UTC) - timedelta(minutes=5)))


def service(w: World, rider: str, activity: str = "社区助老") -> Any:
    from qiji.badges.v1 import badges_service_pb2 as bpb
    return bpb.LogVolunteerServiceRequest(
        request_id=str(uuid.uuid4()), rider_id=rider, community_id=w.tenants["a"].community,
        activity=activity, start_time=ts(datetime.now(UTC) - timedelta(hours=3)), hours="2")


def attendance(w: World, rider: str, hours: str = "") -> Any:
    """At A's community's activity, which has not started (ACTIVITY_NOT_STARTED, whoever)."""
    from qiji.badges.v1 import badges_service_pb2 as bpb
    return bpb.RecordVolunteerAttendanceRequest(
        request_id=str(uuid.uuid4()), activity_id=w.tenants["a"].activity, rider_id=rider,
        hours=hours)


def package(campaign: str, rider: str) -> Any:
    from qiji.merchants.v1 import merchants_service_pb2 as mpb
    return mpb.AllocateCarePackageRequest(request_id=str(uuid.uuid4()), campaign_id=campaign,
                                          rider_id=rider)


def hand_over(campaign: str, rider: str, by: str = "王社工") -> Any:
    from qiji.merchants.v1 import merchants_service_pb2 as mpb
    return mpb.RecordHandOverRequest(request_id=str(uuid.uuid4()), campaign_id=campaign,
                                     rider_id=rider, handed_over_by=by)


def at_session(rpc: str, session: str, rider: str, **more: Any) -> Any:
    from qiji.training.v1 import training_service_pb2 as tpb
    return getattr(tpb, f"{rpc}Request")(request_id=str(uuid.uuid4()), session_id=session,
                                          rider_id=rider, **more)


def exhausted_campaign(w: World) -> str:
    """A campaign of A's street office with its one package given to A's rider."""
    from qiji.merchants.v1 import merchants_service_pb2 as mpb
    q, a = w.qiji, w.tenants["a"]
    office = w.token("a", "street_office")
    campaign = q.ok("merchants", "CreateCareCampaign", mpb.CreateCareCampaignRequest(
        request_id=str(uuid.uuid4()), street_id=a.street, name="最后一份", description="",
        stock=1), office).campaign.campaign_id
    q.ok("merchants", "AllocateCarePackage", package(campaign, a.rider), office)
    return campaign


def full_session(w: World) -> str:
    """A session in A's street with its one place taken by A's rider."""
    from qiji.training.v1 import training_service_pb2 as tpb
    q, a = w.qiji, w.tenants["a"]
    starts = datetime.now(UTC) + timedelta(days=3)
    session = q.ok("training", "ScheduleSession", tpb.ScheduleSessionRequest(
        request_id=str(uuid.uuid4()), course_id=a.course, service_space_id=a.space,
        start_time=ts(starts), end_time=ts(starts + timedelta(hours=1)), capacity=1),
        w.token("a", "education_provider")).session.session_id
    q.ok("training", "EnrolRider", at_session("EnrolRider", session, a.rider),
         w.token("a", "platform"))
    return session


# (rpc, role) → requests that must fail whoever the rider is, each a function of the world and
# the rider: a format fault (`True`: the answer must not mention the rider at all), or what
# the thing the caller is admitted on refuses (a full session, an exhausted campaign, a rider
# not enrolled: the answer may repeat the rider id it was sent, nothing more).
FAULTY: dict[tuple[str, str], list[tuple[bool, Any]]] = {
    ("SubmitReport", "street_office"): [
        (True, lambda w, r: report(w, r, text="")),
        (True, lambda w, r: report(w, r, text="x" * 2001))],
    ("OpenMediationCase", "street_office"): [
        (True, lambda w, r: mediation(w, r, subject="")),
        # Twenty-one guesses at once: refused for their number before any is looked up.
        (True, lambda w, r: mediation(w, *[r] * 21)),
        (True, lambda w, r: mediation(w, r, str(uuid.uuid4()), subject=""))],
    ("LogVolunteerService", "community"): [(True, lambda w, r: service(w, r, activity=""))],
    ("LogVolunteerService", "street_office"): [(True, lambda w, r: service(w, r, activity=""))],
    **{("RecordVolunteerAttendance", role): [
        (True, lambda w, r: attendance(w, r, hours="两小时")),
        (False, lambda w, r: attendance(w, r))] for role in ("community", "street_office")},
    ("AllocateCarePackage", "street_office"): [
        (False, lambda w, r: package(w.tenants["a"].ids["exhausted_campaign"], r))],
    ("EnrolRider", "street_office"): [
        (False, lambda w, r: at_session("EnrolRider", w.tenants["a"].ids["full_session"], r))],
    ("RecordHandOver", "street_office"): [
        (True, lambda w, r: hand_over(w.tenants["a"].campaign, r, by="")),
        (False, lambda w, r: hand_over(w.tenants["a"].campaign, r))],
    **{(rpc, role): [(False, lambda w, r, rpc=rpc: at_session(rpc, w.tenants["a"].session, r))]
       for rpc in ("WithdrawEnrolment", "CheckInRider", "RecordNoShow")
       for role in ("street_office", "education_provider")
       if (rpc, role) != ("WithdrawEnrolment", "education_provider")},
    **{("RecordCompletion", role): [
        (True, lambda w, r: at_session("RecordCompletion", w.tenants["a"].session, r,
                                        result=2, score=101)),
        (False, lambda w, r: at_session("RecordCompletion", w.tenants["a"].session, r,
                                         result=2, score=80))]
       for role in ("street_office", "education_provider")},
}
# (rpc, role) → a request that is valid but for its rider, for the commands that look one up.
VALID: dict[tuple[str, str], Any] = {
    ("SubmitReport", "street_office"): report,
    ("OpenMediationCase", "street_office"): mediation,
    ("LogVolunteerService", "community"): service,
    ("LogVolunteerService", "street_office"): service,
    ("AllocateCarePackage", "street_office"): lambda w, r: package(w.tenants["a"].campaign, r),
    ("EnrolRider", "street_office"): lambda w, r: at_session("EnrolRider",
                                                             w.tenants["a"].session, r),
}
SERVICE_OF = {"SubmitReport": "governance", "OpenMediationCase": "governance",
              "LogVolunteerService": "badges", "RecordVolunteerAttendance": "badges",
              "AllocateCarePackage": "merchants",
              "RecordHandOver": "merchants",
              "EnrolRider": "training", "WithdrawEnrolment": "training",
              "CheckInRider": "training", "RecordNoShow": "training",
              "RecordCompletion": "training"}
PLACEHOLDER = "00000000-0000-4000-8000-000000000000"


def as_sent(answer: Any, rider: str) -> tuple[Any, ...]:
    """The answer, with the rider id the request sent replaced by one placeholder: what must
    be the same, byte for byte, whichever rider was named."""
    return (answer.code, answer.message.replace(rider, PLACEHOLDER),
            answer.raw.replace(rider.encode(), PLACEHOLDER.encode()), shown(answer.response))


def test_every_command_a_tenant_may_name_anyones_rider_in_is_tried_as_an_adversary() -> None:
    """Generated from the access tables: a command added tomorrow that lets a tenant name a
    rider it does not own must join FAULTY (and VALID, if it looks the rider up)."""
    assert unpinned_rider_commands() == set(FAULTY), (
        "commands whose rider the guard does not check: make them look riders up last "
        "(QijiApplication.require_riders) and try them here")
    assert set(VALID) <= set(FAULTY)


class TestNoRiderOracle:
    """A tenant admitted on something else than the rider a command names (a street office on
    its street, session or campaign; a community on its desk) learns nothing of whether the
    rider exists from a request that fails anyway, and writes nothing: only a request valid
    in every other way looks the rider up (review of issue 23, B1)."""

    @pytest.mark.parametrize(("rpc", "role"), sorted(FAULTY))
    def test_a_request_that_fails_anyway_answers_the_same_for_any_rider(
            self, world: World, rpc: str, role: str) -> None:
        q, a, b = world.qiji, world.tenants["a"], world.tenants["b"]
        if "exhausted_campaign" not in a.ids:
            a.ids["exhausted_campaign"] = exhausted_campaign(world)
            a.ids["full_session"] = full_session(world)
            q.sync()
        token = world.token("a", role)
        for malformed, faulty in FAULTY[(rpc, role)]:
            unknown = str(uuid.uuid4())
            before = q.positions()
            theirs = q.call(SERVICE_OF[rpc], rpc, faulty(world, b.rider), token)
            nobody = q.call(SERVICE_OF[rpc], rpc, faulty(world, unknown), token)
            assert q.positions() == before, f"{rpc} as A's {role} wrote something"
            assert not theirs.ok and theirs.code is not grpc.StatusCode.PERMISSION_DENIED, \
                (rpc, theirs)
            assert "RIDER" not in theirs.reason, (rpc, theirs)
            assert as_sent(theirs, b.rider) == as_sent(nobody, unknown), (rpc, theirs, nobody)
            if malformed:
                assert b.rider not in theirs.message and b.rider.encode() not in theirs.raw

    @pytest.mark.parametrize(("rpc", "role"), sorted(VALID))
    def test_only_an_otherwise_valid_request_learns_that_its_rider_is_unknown(
            self, world: World, rpc: str, role: str) -> None:
        q = world.qiji
        unknown = str(uuid.uuid4())
        before = q.positions()
        answer = q.call(SERVICE_OF[rpc], rpc, VALID[(rpc, role)](world, unknown),
                        world.token("a", role))
        assert q.positions() == before
        assert (answer.code, answer.reason, answer.metadata) == (
            grpc.StatusCode.NOT_FOUND, "RIDER_NOT_FOUND", {"kind": "rider", "id": unknown})

    def test_a_mediation_naming_several_riders_never_tells_which_of_them_exist(
            self, world: World) -> None:
        """Naming the first unknown one would tell that those before it exist: one known and
        one made-up rider answer exactly as two made-up ones."""
        q, b = world.qiji, world.tenants["b"]
        token = world.token("a", "street_office")
        unknown, other = str(uuid.uuid4()), str(uuid.uuid4())
        before = q.positions()
        some = q.call("governance", "OpenMediationCase", mediation(world, b.rider, unknown),
                      token)
        none = q.call("governance", "OpenMediationCase", mediation(world, other, unknown),
                      token)
        assert q.positions() == before
        assert (some.code, some.reason) == (grpc.StatusCode.NOT_FOUND, "RIDER_NOT_FOUND")
        assert (some.code, some.message, some.raw) == (none.code, none.message, none.raw)
        assert b.rider not in some.message and b.rider.encode() not in some.raw

    def test_a_request_naming_many_unknown_things_reads_identitys_feed_once(
            self, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
        """Twenty made-up riders, or three made-up departments, cost one catch-up with
        identity, not one each (review of issue 23, B2)."""
        from qiji.governance.v1 import governance_service_pb2 as gpb
        q = world.qiji
        follower = q.apps["governance"].identity_follower  # type: ignore[attr-defined]
        reads: list[int] = []
        run_once = follower.run_once
        monkeypatch.setattr(follower, "run_once", lambda: reads.append(1) or run_once())
        riders = [str(uuid.uuid4()) for _ in range(19)]
        answer = q.call("governance", "OpenMediationCase", mediation(world, *riders),
                        world.token("a", "street_office"))
        assert (answer.code, answer.reason) == (grpc.StatusCode.NOT_FOUND, "RIDER_NOT_FOUND")
        assert len(reads) == 1
        departments = [str(uuid.uuid4()) for _ in range(3)]
        answer = q.call("governance", "SetRoutingRules", gpb.SetRoutingRulesRequest(
            request_id=str(uuid.uuid4()), rules=[gpb.RoutingRule(name=f"r{i}", department_ids=[d])
                                                 for i, d in enumerate(departments)]),
            world.admin)
        assert (answer.code, answer.reason) == (grpc.StatusCode.NOT_FOUND,
                                                "DEPARTMENT_NOT_FOUND")
        assert len(reads) == 2

    def test_a_list_admitted_on_its_rows_answers_the_same_for_anyones_rider(
            self, world: World) -> None:
        """A read a tenant is admitted to on the rows it may see (a community's volunteer
        shifts), naming a rider: another tenant's rider and a made-up one are answered alike
        — never NOT_FOUND for the one and a page for the other."""
        q, b = world.qiji, world.tenants["b"]
        tried = 0
        for service_name, path in methods():
            access = SPECS[service_name].access.get(path)
            if access is None or writes(path) or "rider_id" not in descriptor(
                    path).input_type.fields_by_name:
                continue
            svc = q.services[service_name]
            for role, target in access.scopes.items():
                if not isinstance(target, Rows):
                    continue
                request = request_for(world, svc, path, "a", role)
                unknown = str(uuid.uuid4())
                request.rider_id = b.rider
                theirs = svc.call(path, request, world.token("a", role))
                request.rider_id = unknown
                nobody = svc.call(path, request, world.token("a", role))
                assert theirs.ok, (path, role, theirs)
                assert as_sent(theirs, b.rider) == as_sent(nobody, unknown), (path, role)
                tried += 1
        assert tried >= 3  # ListVolunteerService (community), ListReports (two roles)


# ---------------------------------------------------------------------------- the matrix


class TestEveryRpcAsAnotherTenant:
    """B calls every RPC on what A holds."""

    @pytest.mark.parametrize(("service", "path", "role"), cases())
    def test_another_tenant_is_refused_or_shown_nothing_of_ours_and_nothing_is_written(self,
            world: World, service: str, path: str, role: str) -> None:
        assert role != "(no entry)", f"{path} has no access entry: it is refused to everyone"
        qiji = world.qiji
        svc = qiji.services[service]
        request = request_for(world, svc, path, "a", role)
        before = qiji.positions()
        answer = svc.call(path, request, world.token("b", role))
        assert qiji.positions() == before, f"{path} as B's {role} wrote something"
        secrets = world.tenants["a"].secrets
        access = svc.access[path]
        if access.public:
            # Reference data: no tenant's at all. Whatever it answers shows nothing of A's.
            assert not [s for s in secrets if s and s in shown(answer.response) + answer.message]
            return
        if isinstance(access.scopes[role], Rows):
            # A list: whatever filter B sets — everything of A's it names, one of them, or
            # none — it shows no row of A's.
            for variant in filter_variants(request):
                listed = svc.call(path, variant, world.token("b", role))
                leaked = [s for s in secrets if s and s in shown(listed.response)]
                assert not leaked, f"{path} {variant} listed A's {leaked} to B's {role}"
            assert qiji.positions() == before
        if answer.ok:
            assert "request_id" not in request.DESCRIPTOR.fields_by_name, \
                f"{path}: B's {role} changed what A holds"
            assert access.public or isinstance(access.scopes[role], Rows) or any(
                getattr(r, "read", False) for r in getattr(access.scopes[role], "refs",
                                                           [access.scopes[role]])), path
            leaked = [s for s in secrets if s and s in shown(answer.response)]
            assert not leaked, f"{path} showed B's {role} what is A's: {leaked}"
        else:
            assert (answer.code, answer.reason) == (grpc.StatusCode.PERMISSION_DENIED,
                                                    "OUT_OF_SCOPE"), (path, answer)
            assert not [s for s in secrets if s and s in answer.message]


def admitted(world: World, service: str, path: str, role: str) -> None:
    assert role != "(no entry)", f"{path} has no access entry: it is refused to everyone"
    svc = world.qiji.services[service]
    answer = svc.call(path, request_for(world, svc, path, "a", role, own=True),
                      world.token("a", role))
    assert answer.code not in REFUSED_FOR_ADMITTED, (path, role, answer)


class TestEveryRpcAsItsOwnTenant:
    """A reads everything it holds. Reads change nothing, so they may run in any order."""

    @pytest.mark.parametrize(("service", "path", "role"), cases(commands=False))
    def test_a_tenant_is_admitted_to_what_it_holds(self, world: World, service: str, path: str,
                                                   role: str) -> None:
        admitted(world, service, path, role)


class TestEveryCommandAsItsOwnTenant:
    """A changes what it holds, in a world of its own: the reads above must never meet what a
    command here did (a perk withdrawn, a course retired) — in a shuffled order they did."""

    @pytest.mark.parametrize(("service", "path", "role"), cases(commands=True))
    def test_a_tenant_is_admitted_to_change_what_it_holds(self, world: World, service: str,
                                                          path: str, role: str) -> None:
        admitted(world, service, path, role)


# ---------------------------------------------------------------------------- the figures


def figures_of(w: World) -> Any:
    """The city's figures over the world's five services, behind their guard."""
    from tests.inprocess import Figures
    settings = w.qiji.apps["identity"].settings
    schema = f"s_{uuid.uuid4().hex[:12]}"
    env = {"QIJI_DATA_DIR": str(settings.data_dir), "STATISTICS_POSTGRES_SCHEMA": schema}
    if settings.persistence == "postgres":
        env.update(pg_env(settings.postgres_dbname, schema))
    return Figures.over(w.qiji, env)


def figure_values(answer: Any) -> dict[tuple[str, str], str]:
    """(period, key) -> value of a QueryFigures answer."""
    assert answer.ok, answer
    return {(f.period_label, f.key): f.value for f in answer.response.figures}


# The organisation kinds a drill-down takes, by the dimension that names them.
WITHIN_OF_ROLE = {"street_office": "STREET", "community": "COMMUNITY", "platform": "PLATFORM",
                  "merchant": "MERCHANT"}


class TestTheFiguresAsAnotherTenant:
    """Every measure by every dimension it has, asked by B's street office, community,
    platform and merchant: B sees exactly its own part of the city — what the city admin sees
    within B's organisation — and so nothing of A's; a drill-down into A's organisation is
    refused, as is every RPC to a caller with no figures. The world's departments are its
    social-work departments, which read the whole city."""

    def test_each_tenant_sees_exactly_its_own_part_and_never_anothers(self, world: World
                                                                      ) -> None:
        from qiji.statistics.v1 import statistics_service_pb2 as spb
        figures = figures_of(world)
        stats = figures.statistics
        try:
            now = datetime.now(UTC)
            period = {"granularity": spb.GRANULARITY_WHOLE_RANGE,
                      "start_time": ts(now - timedelta(days=3)),
                      "end_time": ts(now + timedelta(days=3))}
            checked = shown_some = 0
            for measure in stats.measures():
                for dimension in sorted(measure.dimensions):
                    for role, kind in WITHIN_OF_ROLE.items():
                        asked = spb.QueryFiguresRequest(
                            measure=measure.name, page_size=5000,
                            dimension=spb.Dimension.Value(f"DIMENSION_{dimension}"), **period)
                        seen = figure_values(figures.call("QueryFigures", asked,
                                                 world.token("b", role)))
                        if kind in measure.dimensions:
                            asked.within_organisation_id = world.organisation("b", role)
                            within = figures.call("QueryFigures", asked, world.admin)
                            assert seen == figure_values(within), (measure.name, dimension,
                                                                   role)
                        else:
                            # Facts of this measure never name a tenant of this kind.
                            assert set(seen.values()) <= {"0"}, (measure.name, dimension, role)
                        assert world.organisation("a", role) not in {k for _, k in seen}
                        checked += 1
                        shown_some += any(v != "0" for v in seen.values())
            assert checked > 100 and shown_some > 20, (checked, shown_some)
            for role, kind in WITHIN_OF_ROLE.items():
                refused = figures.call("QueryFigures", spb.QueryFiguresRequest(
                    measure="riders_registered", dimension=spb.DIMENSION_CITY,
                    within_organisation_id=world.organisation("a", role), **period),
                    world.token("b", role))
                assert (refused.code, refused.reason) in {
                    (grpc.StatusCode.PERMISSION_DENIED, "OUT_OF_SCOPE"),
                    # riders are not counted by merchant or community: no drill-down there
                    (grpc.StatusCode.INVALID_ARGUMENT, "DIMENSION_NOT_APPLICABLE")}, (
                        role, refused)
                if kind in {"STREET", "PLATFORM"}:
                    assert refused.reason == "OUT_OF_SCOPE", role
            for rpc, request in (("ListMeasures", spb.ListMeasuresRequest()),
                                 ("GetFreshness", spb.GetFreshnessRequest()),
                                 ("QueryFigures", spb.QueryFiguresRequest(
                                     measure="riders_registered",
                                     dimension=spb.DIMENSION_CITY, **period)),
                                 ("ExportFigures", spb.ExportFiguresRequest(
                                     measures=["riders_registered"],
                                     dimension=spb.DIMENSION_CITY,
                                     format=spb.EXPORT_FORMAT_CSV, **period))):
                provider = figures.call(rpc, request, world.token("b", "education_provider"))
                assert (provider.code, provider.reason) == (
                    grpc.StatusCode.PERMISSION_DENIED, "ROLE_NOT_ALLOWED"), rpc
                for role in (*WITHIN_OF_ROLE, "department"):
                    assert figures.call(rpc, request, world.token("b", role)).ok, (rpc, role)
        finally:
            figures.close()
