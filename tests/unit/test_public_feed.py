"""The public event contract and the platform feed's cursor, without stores or servers."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import pytest
from eventsourcing.utils import resolve_topic

from services.identity.domain.values import ConsentScope
from services.identity.public_events import personal_data
from services.platform import cursor
from services.platform.application import Page, PlatformFeed
from services.platform.catalogue import CATALOGUES, PUBLISHER, SERVICES, types_by_service
from shared.errors import InvalidArgument
from shared.grpc.public_feed import to_cloudevent
from shared.public_feed import Fact, PublicEvent, event_id, plain

ORG_1 = "2f0d9c8e-5b1a-4c3d-8e7f-6a5b4c3d2e1f"

DOC = (Path(__file__).resolve().parents[2] / "services" / "platform" / "event-feed.md").read_text()


# ---------------------------------------------------------------------------- the contract

@pytest.mark.parametrize("catalogue", CATALOGUES, ids=lambda c: c.service)
def test_every_public_type_is_made_from_a_stored_event_class(catalogue):
    for t in catalogue.types.values():
        assert re.fullmatch(rf"qiji\.{catalogue.service}\.v1\.[A-Z][A-Za-z]+", t.name)
        cls = resolve_topic(t.topic)
        assert f"{cls.__module__}:{cls.__qualname__}" == t.topic


@pytest.mark.parametrize("name", sorted(PUBLISHER))
def test_the_documentation_lists_every_type_with_every_field(name):
    t = next(c.types[name] for c in CATALOGUES if name in c.types)
    row = next((line for line in DOC.splitlines() if line.startswith(f"| `{name}` |")), None)
    assert row is not None, f"{name} is missing from services/platform/event-feed.md"
    for field in t.fields:
        assert f"`{field}`" in row, f"{name}.{field} is not documented"


def test_no_public_type_carries_codes_reasons_or_the_national_id():
    fields = {f for c in CATALOGUES for t in c.types.values() for f in t.fields}
    assert not fields & {"code", "code_digest", "reason", "national_id", "text", "note",
                         "evidence", "latitude", "longitude"}


def test_the_governance_submission_is_not_public():
    assert not any(t.topic.endswith("Report.Submitted")
                   for c in CATALOGUES for t in c.types.values())


def test_event_ids_are_stable_and_distinct():
    aggregate = uuid.uuid4()
    assert event_id("identity", aggregate, 3, "T") == event_id("identity", aggregate, 3, "T")
    assert len({event_id("identity", aggregate, 3, "T"), event_id("identity", aggregate, 4, "T"),
                event_id("training", aggregate, 3, "T")}) == 3


def test_data_is_plain_json():
    when = datetime(2026, 6, 5, 9, 30, tzinfo=timezone(timedelta(hours=8)))
    assert plain({"t": when, "h": Decimal("1.5"), "s": ConsentScope.PHONE, "l": (1, 2),
                  "n": None}) == {"t": "2026-06-05T01:30:00Z", "h": "1.5", "s": "PHONE",
                                  "l": [1, 2], "n": None}


def test_a_cloudevent_carries_the_required_and_optional_attributes():
    when = datetime(2026, 6, 5, 1, 30, tzinfo=UTC)
    message = to_cloudevent(PublicEvent(id="x", source="/qiji/badges",
                                        type="qiji.badges.v1.BadgeAwarded", time=when,
                                        subject="r1", data={"rider_id": "r1"}, position=7))
    assert (message.id, message.source, message.spec_version, message.type) == (
        "x", "/qiji/badges", "1.0", "qiji.badges.v1.BadgeAwarded")
    assert message.attributes["time"].ce_timestamp.ToDatetime(tzinfo=UTC) == when
    assert message.attributes["subject"].ce_string == "r1"
    assert message.attributes["datacontenttype"].ce_string == "application/json"
    assert message.text_data == '{"rider_id":"r1"}'


# ---------------------------------------------------------------------------- redaction

class Vault:
    def open(self, subject: str, sealed: str) -> str:
        return sealed.removeprefix("sealed:")


def rider(consents: list[tuple[str, str, bool]], erased: bool = False) -> SimpleNamespace:
    rows = [{"scope": s, "recipient_id": r, "withdrawn_at": None if live else "then"}
            for s, r, live in consents]
    return SimpleNamespace(
        id="r1", sealed_name="sealed:王五", sealed_phone="sealed:13812345678",
        personal_data_erased=erased, consents=rows,
        consents_to=lambda scope, org: any(
            c["scope"] == scope.value and c["recipient_id"] == org and c["withdrawn_at"] is None
            for c in rows))


APP = SimpleNamespace(vault=Vault())


def test_personal_fields_follow_the_consent_in_force_for_that_organisation():
    r = rider([("PHONE", "platform", True), ("NAME", "other", True)])
    assert personal_data(APP, r, "platform") == {"phone": "13812345678"}
    assert personal_data(APP, r, "other") == {"name": "王五"}
    assert personal_data(APP, r, "") == {}


def test_a_withdrawn_consent_or_an_erasure_shows_nothing():
    assert personal_data(APP, rider([("PHONE", "platform", False)]), "platform") == {}
    assert personal_data(APP, rider([("PHONE", "platform", True)], erased=True),
                         "platform") == {}


def test_consent_events_go_to_the_consented_organisation_only():
    from services.identity.public_events import CATALOGUE
    granted = CATALOGUE.types["qiji.identity.v1.RiderConsentGranted"]
    event = SimpleNamespace(consent_id="c1", scope="NATIONAL_ID", recipient_id="platform",
                            at=datetime.now(UTC), timestamp=datetime.now(UTC))
    fact = Fact(1, uuid.uuid4(), 2, granted.topic, event, consumer_organisation_id="other")
    assert granted.build(APP, fact) is None


# ---------------------------------------------------------------------------- the cursor

def test_a_cursor_round_trips_and_the_empty_cursor_is_the_beginning():
    assert cursor.decode("", SERVICES) == dict.fromkeys(SERVICES, 1)
    positions = {**dict.fromkeys(SERVICES, 1), "identity": 42, "badges": 7}
    assert cursor.decode(cursor.encode(positions), SERVICES) == positions
    assert cursor.encode(dict.fromkeys(SERVICES, 1)) == cursor.encode({})


@pytest.mark.parametrize("garbage", [
    "%%%", "bm90IGpzb24", cursor.encode({})[:-3], "eyJ2IjoyLCJwIjp7fX0",  # version 2
    "eyJ2IjoxLCJwIjp7Im5vcGUiOjJ9fQ",  # an unknown service
    "eyJ2IjoxLCJwIjp7ImlkZW50aXR5IjotNX19",  # a negative position
    "eyJ2IjoxLCJwIjp7ImlkZW50aXR5IjoiNSJ9fQ",  # a string position
    "eyJ2IjoxLCJwIjpbXX0", "x" * 5000])
def test_a_cursor_not_given_out_is_an_invalid_argument(garbage):
    with pytest.raises(InvalidArgument) as error:
        cursor.decode(garbage, SERVICES)
    assert [(v.field, v.reason) for v in error.value.violations] == [("cursor", "CURSOR_INVALID")]


def test_types_are_routed_to_their_services_and_unknown_ones_refused():
    assert types_by_service([]) == {s: [] for s in SERVICES}
    assert types_by_service(["qiji.badges.v1.BadgeAwarded", "qiji.identity.v1.RiderLeft"]
                            ) == {"badges": ["qiji.badges.v1.BadgeAwarded"],
                                  "identity": ["qiji.identity.v1.RiderLeft"]}
    with pytest.raises(InvalidArgument):
        types_by_service(["qiji.badges.v2.BadgeAwarded"])


# ---------------------------------------------------------------------------- merging

class FakeUpstream:
    """A service's public feed holding events at given (position, seconds) pairs."""

    def __init__(self, service: str, events: list[tuple[int, int]], last: int):
        self.service, self.events, self.last = service, events, last

    def read_public_events(self, request):
        from qiji.feed.v1 import public_feed_service_pb2 as pb
        found = [(p, s) for p, s in self.events if p >= request.from_position][:request.limit]
        reply = pb.ReadPublicEventsResponse(last_position=self.last)
        for p, s in found:
            e = to_cloudevent(PublicEvent(
                id=f"{self.service}:{p}", source="/", type="t", subject="r",
                time=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=s), data={},
                position=p))
            reply.events.append(pb.PublicEvent(position=p, event=e))
        short = len(found) < request.limit
        reply.next_position = self.last + 1 if short else found[-1][0] + 1
        return reply


def ids(page: Page) -> list[str]:
    return [e.id for e, _ in page.events]


def test_pages_keep_each_service_in_log_order_and_resume_exactly():
    feed = PlatformFeed({"identity": FakeUpstream("identity", [(2, 5), (5, 1), (9, 9)], 12),
                         "training": FakeUpstream("training", [(3, 3), (4, 4)], 6)})
    positions = feed.decode_cursor("")
    seen = []
    while True:
        page = feed.read(positions, 2, [], "")
        seen += ids(page)
        positions = page.positions
        if page.caught_up:
            break
    # identity's own order holds even though its event at position 5 is "older".
    assert [i for i in seen if i.startswith("identity")] == [
        "identity:2", "identity:5", "identity:9"]
    assert sorted(seen) == sorted({*seen}) and len(seen) == 5
    assert positions["identity"] == 13 and positions["training"] == 7
    # Each event's cursor resumes right after it.
    first = feed.read(feed.decode_cursor(""), 1, [], "")
    rest = feed.read(feed.decode_cursor(first.events[0][1]), 10, [], "")
    assert ids(first) + ids(rest) == seen


def test_a_consumer_receives_only_the_types_it_is_subscribed_to():
    from services.platform.catalogue import PUBLISHER, subscribed
    from shared.errors import PermissionDenied

    everything = subscribed([], frozenset())
    assert everything == []  # no list: the consumer may ask for anything (all by default)
    training = subscribed([], frozenset({"qiji.training.v1.*"}))
    assert training and all(t.startswith("qiji.training.v1.") for t in training)
    assert set(training) == {t for t in PUBLISHER if t.startswith("qiji.training.v1.")}
    one = sorted(PUBLISHER)[0]
    assert subscribed([one], frozenset({one})) == [one]
    other = next(t for t in PUBLISHER if t != one)
    with pytest.raises(PermissionDenied) as error:
        subscribed([other], frozenset({one}))
    assert error.value.reason == "NOT_SUBSCRIBED"


def test_subscriptions_travel_from_the_tokens_file_to_the_caller(tmp_path):
    from shared.auth import TokenRegistry, add_caller

    token = add_caller(tmp_path / "tokens.json", "platform-co", ["platform"], ORG_1,
                       ["qiji.training.v1.*"])
    actor = TokenRegistry(tmp_path / "tokens.json").authenticate(token)
    assert actor.subscriptions == frozenset({"qiji.training.v1.*"})
