"""The public face keeps the public's traffic from becoming badges' load: a made-up id asked
again and again costs badges one call, and beyond its budget of calls a second the face
answers 429 (try again in a second) without asking badges at all."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import httpx
import pytest

from services.credentials.app import build_app
from services.credentials.source import BadgesSource, Busy, NotFoundUpstream
from tests.fakes import FailedCall

UNKNOWN = "3f1c2a4e-0b6d-4c1e-9a57-2f0e8d7c6b5a"


class Badges:
    """badges' API as the face calls it: it knows no achievement; counts what it is asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def GetAchievement(self, request: Any, **_: Any) -> Any:
        self.asked.append(request.badge_class_id)
        raise FailedCall(grpc.StatusCode.NOT_FOUND, "no such badge class")

    def GetIssuerKeys(self, request: Any, **_: Any) -> Any:
        self.asked.append("keys")
        return type("Reply", (), {"jwks_json": '{"keys": []}'})()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def source(badges: Badges, clock: Clock, per_second: int = 50) -> BadgesSource:
    return BadgesSource("127.0.0.1:1", "qiji_reader", clock=clock, calls_per_second=per_second,
                        stub=badges)


def test_a_made_up_id_asked_again_and_again_costs_badges_one_call():
    badges, clock = Badges(), Clock()
    face = source(badges, clock)
    for _ in range(20):
        with pytest.raises(NotFoundUpstream):
            face.achievement(UNKNOWN)
    assert badges.asked == [UNKNOWN]
    clock.now += 11  # kept ten seconds, like every other answer: a new class shows then
    with pytest.raises(NotFoundUpstream):
        face.achievement(UNKNOWN)
    assert badges.asked == [UNKNOWN, UNKNOWN]


def test_beyond_its_budget_the_face_asks_badges_nothing_and_says_429():
    badges, clock = Badges(), Clock()
    face = source(badges, clock, per_second=3)
    for n in range(3):
        with pytest.raises(NotFoundUpstream):
            face.achievement(f"3f1c2a4e-0b6d-4c1e-9a57-2f0e8d7c6b5{n}")
    with pytest.raises(Busy):
        face.achievement("3f1c2a4e-0b6d-4c1e-9a57-2f0e8d7c6b59")
    assert len(badges.asked) == 3
    face.ping()  # readiness is outside the budget: a busy face is still ready
    clock.now += 1
    with pytest.raises(NotFoundUpstream):
        face.achievement("3f1c2a4e-0b6d-4c1e-9a57-2f0e8d7c6b59")

    async def public(*paths: str) -> list[httpx.Response]:
        app = build_app(source(Badges(), Clock(), per_second=1))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://face") as client:
            return [await client.get(path) for path in paths]
    first, busy, again, health = asyncio.run(public(
        f"/achievements/{UNKNOWN}", "/achievements/3f1c2a4e-0b6d-4c1e-9a57-2f0e8d7c6b59",
        f"/achievements/{UNKNOWN}", "/healthz"))
    assert first.status_code == 404
    assert busy.status_code == 429 and busy.headers["retry-after"] == "1"
    assert again.status_code == 404  # kept: badges is not asked again
    assert health.status_code == 200
