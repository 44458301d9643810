"""What the public face says of a status list number it cannot serve: the whole range it
takes (0 to 999999, as badges' GetStatusList), before badges is asked anything."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from services.credentials.app import build_app
from tests.unit.test_credentials_face_load import Badges, Clock, source

ISSUER = "3f1c2a4e-0b6d-4c1e-9a57-2f0e8d7c6b5a"


@pytest.mark.parametrize("number", ["1000000", "-1", "%C2%B2"])
def test_a_list_number_out_of_range_is_refused_naming_the_range(number: str) -> None:
    badges = Badges()

    async def get() -> httpx.Response:
        app = build_app(source(badges, Clock()))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://face") as client:
            return await client.get(f"/status/{ISSUER}/revocation/{number}")

    answer = asyncio.run(get())
    assert answer.status_code == 400
    problem = json.loads(answer.content)
    assert problem["field"] == "list_number"
    assert "from 0 to 999999" in problem["error"], problem
    assert badges.asked == []
