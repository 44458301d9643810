"""The partner register (多方资源) as the city, a partner and the public use it: the city admin
registers an education provider and a merchant as partners with what they offer, each revises
its own profile, and anyone reads what each offers beside what it gave — the courses it
published and the perks it offered, never a draft — on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from qiji.identity.v1 import identity_service_pb2 as ipb
from qiji.merchants.v1 import merchants_service_pb2 as mpb
from qiji.training.v1 import training_service_pb2 as tpb

from tests.integration.test_tenancy import a_world
from tests.tenancy_world import World, rid

pytestmark = pytest.mark.postgres

UNIVERSITY = ipb.PARTNER_CATEGORY_UNIVERSITY
ENTERPRISE = ipb.PARTNER_CATEGORY_ENTERPRISE


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def world(store: str, request: pytest.FixtureRequest,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """Tenant a's education provider and merchant registered as partners; b's not."""
    for w in a_world(store, request, tmp_path_factory):
        a = w.tenants["a"]
        register(w, a.provider, UNIVERSITY, [(ipb.OFFER_KIND_COURSES, "思政课与安全骑行课"),
                                             (ipb.OFFER_KIND_PLACES, "每学期二十个学历提升名额")])
        register(w, a.merchant, ENTERPRISE, [(ipb.OFFER_KIND_PERKS, "骑手免费饮水")])
        yield w


def offers(pairs: list[tuple[int, str]]) -> list[Any]:
    return [ipb.PartnerOffer(kind=k, description=d) for k, d in pairs]


def register(w: World, organisation_id: str, category: int, pairs: list[tuple[int, str]],
             request_id: str = "") -> Any:
    return w.qiji.call("identity", "RegisterPartner", ipb.RegisterPartnerRequest(
        request_id=request_id or rid(), organisation_id=organisation_id, category=category,
        offers=offers(pairs)), w.admin)


def partner(w: World, organisation_id: str, token: str, version: int = 0) -> Any:
    return w.qiji.ok("identity", "GetPartner", ipb.GetPartnerRequest(
        organisation_id=organisation_id, version=version), token).partner


class TestWhatAPartnerGave:
    def test_a_provider_shows_what_it_offers_and_the_courses_it_published_not_its_drafts(
            self, world: World) -> None:
        a = world.tenants["a"]
        # Read by another tenant's platform: the register is public.
        p = partner(world, a.provider, world.token("b", "platform"))
        assert (p.organisation_name, p.organisation_kind, p.category) == (
            "学院A", ipb.ORGANISATION_KIND_EDUCATION_PROVIDER, UNIVERSITY)
        assert [(o.kind, o.description) for o in p.offers] == [
            (ipb.OFFER_KIND_COURSES, "思政课与安全骑行课"),
            (ipb.OFFER_KIND_PLACES, "每学期二十个学历提升名额")]
        courses = {c.course_id: c for c in p.courses}
        assert a.course in courses and a.course_draft not in courses
        course = courses[a.course]
        assert (course.title, course.track, course.status, course.hours) == (
            "安全骑行a", tpb.TRACK_SKILLS, tpb.COURSE_STATUS_PUBLISHED, "2")
        assert course.HasField("publish_time")
        assert not p.perks
        assert {(s.service, s.current) for s in p.sources} == {("training", True),
                                                               ("merchants", True)}

    def test_a_merchant_shows_the_perks_it_published_and_follows_their_life(
            self, world: World) -> None:
        a = world.tenants["a"]
        p = partner(world, a.merchant, world.auditor)
        perks = {x.perk_id: x for x in p.perks}
        assert {a.perk, a.perk_redeemed} <= set(perks) and a.perk_draft not in perks
        assert perks[a.perk].status == mpb.PERK_STATUS_PUBLISHED
        world.qiji.ok("merchants", "PausePerkOffer", mpb.PausePerkOfferRequest(
            request_id=rid(), perk_id=a.perk), world.token("a", "merchant"))
        paused = {x.perk_id: x for x in partner(world, a.merchant, world.admin).perks}
        assert paused[a.perk].status == mpb.PERK_STATUS_PAUSED
        assert paused[a.perk].publish_time == perks[a.perk].publish_time
        world.qiji.ok("merchants", "PublishPerkOffer", mpb.PublishPerkOfferRequest(
            request_id=rid(), perk_id=a.perk), world.token("a", "merchant"))

    def test_a_sponsors_gift_to_a_care_package_campaign_shows_as_what_it_gave(
            self, world: World) -> None:
        a = world.tenants["a"]
        before = partner(world, a.merchant, world.admin)
        given = world.qiji.ok("merchants", "RecordCareDonation", mpb.RecordCareDonationRequest(
            request_id=rid(), campaign_id=a.campaign, sponsor_id=a.merchant, packages=3,
            items=[mpb.CareItem(item="矿泉水", quantity=24)]),
            world.token("a", "street_office")).campaign
        # Read at once by another tenant's platform: the register is public, and the gift is
        # the sponsor's, not the riders' (no one who received a package is in it).
        after = partner(world, a.merchant, world.token("b", "platform"))
        assert len(after.donations) == len(before.donations) + 1
        gift = after.donations[-1]
        assert (gift.campaign_id, gift.campaign_name, gift.street_id, gift.packages) == (
            a.campaign, given.name, a.street, 3)
        assert [(i.item, i.quantity) for i in gift.items] == [("矿泉水", 24)]
        assert gift.HasField("donate_time")
        # The provider gave no packages: nothing of the merchant's gift is shown for it.
        assert not partner(world, a.provider, world.admin).donations

    def test_a_course_published_later_appears_and_retiring_it_keeps_it(
            self, world: World) -> None:
        a, q = world.tenants["a"], world.qiji
        token = world.token("a", "education_provider")
        course = q.ok("training", "DraftCourse", tpb.DraftCourseRequest(
            request_id=rid(), track=tpb.TRACK_CIVIC_EDUCATION, title="红色思政第一课",
            description="江苏理工学院老师讲授", hours="1.5",
            formats=[tpb.COURSE_FORMAT_CLASSROOM], provider_id=a.provider,
            instructor=tpb.Instructor(name="李老师", kind=tpb.INSTRUCTOR_KIND_TEACHER)),
            token).course.course_id
        assert course not in {c.course_id for c in partner(world, a.provider, token).courses}
        q.ok("training", "PublishCourse", tpb.PublishCourseRequest(
            request_id=rid(), course_id=course), token)
        q.ok("training", "RetireCourse", tpb.RetireCourseRequest(
            request_id=rid(), course_id=course), token)
        given = {c.course_id: c for c in partner(world, a.provider, token).courses}
        assert (given[course].status, given[course].hours) == (tpb.COURSE_STATUS_RETIRED, "1.5")


class TestTheRegister:
    def test_registering_again_is_already_exists_and_a_retry_returns_the_first_answer(
            self, world: World) -> None:
        b, q = world.tenants["b"], world.qiji
        request_id = rid()
        first = register(world, b.provider, ipb.PARTNER_CATEGORY_INDUSTRY_ASSOCIATION,
                         [(ipb.OFFER_KIND_DONATIONS, "关爱礼包两百份")], request_id)
        assert first.ok
        before = q.positions()
        retry = register(world, b.provider, ipb.PARTNER_CATEGORY_INDUSTRY_ASSOCIATION,
                         [(ipb.OFFER_KIND_DONATIONS, "关爱礼包两百份")], request_id)
        assert retry.response == first.response
        again = register(world, b.provider, UNIVERSITY, [(ipb.OFFER_KIND_COURSES, "课程")])
        assert (again.code, again.reason) == (grpc.StatusCode.ALREADY_EXISTS,
                                              "PARTNER_ALREADY_REGISTERED")
        assert q.positions() == before

    def test_bad_input_is_every_fault_in_one_answer_and_writes_nothing(
            self, world: World) -> None:
        b, q = world.tenants["b"], world.qiji
        before = q.positions()
        answer = register(world, b.street, ipb.PARTNER_CATEGORY_UNSPECIFIED,
                          [(ipb.OFFER_KIND_UNSPECIFIED, " "), (99, "x")])
        assert answer.code == grpc.StatusCode.INVALID_ARGUMENT
        assert set(answer.fields) == {"organisation_id", "category", "offers[0].kind",
                                      "offers[0].description", "offers[1].kind"}
        empty = register(world, b.merchant, ENTERPRISE, [])
        assert (empty.code, empty.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["offers"])
        too_many = register(world, b.merchant, ENTERPRISE,
                            [(ipb.OFFER_KIND_PERKS, f"优惠{i}") for i in range(21)])
        assert too_many.fields == ["offers"]
        nobody = register(world, rid(), ENTERPRISE, [(ipb.OFFER_KIND_PERKS, "优惠")])
        assert nobody.code == grpc.StatusCode.NOT_FOUND
        assert q.positions() == before

    def test_a_partner_revises_its_own_profile_and_every_version_stays_readable(
            self, world: World) -> None:
        a, q = world.tenants["a"], world.qiji

        def revise(token: str, organisation_id: str, description: str) -> Any:
            return q.call("identity", "RevisePartner", ipb.RevisePartnerRequest(
                request_id=rid(), organisation_id=organisation_id, category=ENTERPRISE,
                offers=offers([(ipb.OFFER_KIND_PERKS, description)])), token)

        before = q.positions()
        theirs = revise(world.token("b", "merchant"), a.merchant, "改掉别人的")
        assert (theirs.code, theirs.reason) == (grpc.StatusCode.PERMISSION_DENIED,
                                                "OUT_OF_SCOPE")
        assert q.positions() == before
        own = revise(world.token("a", "merchant"), a.merchant, "骑手免费饮水与充电")
        assert own.ok
        version = own.response.partner.version
        assert version >= 2
        assert partner(world, a.merchant, world.admin).offers[0].description == "骑手免费饮水与充电"
        first = partner(world, a.merchant, world.admin, version=1)
        assert (first.version, first.offers[0].description) == (1, "骑手免费饮水")
        assert not first.perks and not first.sources  # contributions are today's only
        later = q.call("identity", "GetPartner", ipb.GetPartnerRequest(
            organisation_id=a.merchant, version=version + 1), world.admin)
        assert later.code == grpc.StatusCode.NOT_FOUND
        unregistered = revise(world.admin, world.tenants["b"].merchant, "优惠")
        assert (unregistered.code, unregistered.reason) == (grpc.StatusCode.NOT_FOUND,
                                                            "PARTNER_NOT_FOUND")

    def test_partners_list_by_category_and_offer_kind_a_page_at_a_time(
            self, world: World) -> None:
        a, q = world.tenants["a"], world.qiji

        def listed(**filters: Any) -> list[str]:
            found, token = [], ""
            while True:
                page = q.ok("identity", "ListPartners", ipb.ListPartnersRequest(
                    page_size=1, page_token=token, **filters), world.token("b", "platform"))
                found += [p.organisation_id for p in page.partners]
                assert all(not p.courses and not p.sources for p in page.partners)
                token = page.next_page_token
                if not token:
                    return found

        assert listed(category=UNIVERSITY)[:1] == [a.provider]
        assert a.merchant not in listed(category=UNIVERSITY)
        assert listed(offer_kind=ipb.OFFER_KIND_PLACES) == [a.provider]
        assert {a.provider, a.merchant} <= set(listed())
        bad = q.call("identity", "ListPartners", ipb.ListPartnersRequest(offer_kind=42),
                     world.admin)
        assert (bad.code, bad.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["offer_kind"])


def test_concurrent_registrations_of_one_partner_let_exactly_one_through(
        world: World) -> None:
    """Eight clerks register the same platform at once (each with its own request id): the
    profile's id is derived from the organisation's, so the store lets one through and every
    other answer is ALREADY_EXISTS (threads against PostgreSQL, and
    SQLite)."""
    b = world.tenants["b"]
    barrier = threading.Barrier(8, timeout=10)
    answers: list[Any] = []

    def register_once() -> None:
        barrier.wait()
        answers.append(register(world, b.platform, ENTERPRISE,
                                [(ipb.OFFER_KIND_PLACES, "站点实习岗位")]))

    threads = [threading.Thread(target=register_once) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(a.code.name for a in answers) == ["ALREADY_EXISTS"] * 7 + ["OK"]
    assert {a.reason for a in answers if not a.ok} == {"PARTNER_ALREADY_REGISTERED"}
    stored = partner(world, b.platform, world.admin)
    assert (stored.version, stored.category) == (1, ENTERPRISE)
