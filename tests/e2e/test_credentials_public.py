"""The public credentials face as an outside verifier (an employer, another city) meets it: a
real badges process and a real `python -m services.credentials` over plain HTTP with no token.
The verifier dereferences what the credential names — the issuer at its id, the key at its
kid, the achievement and its picture, the Bitstring status list — and checks the signature
with PyJWT and joserfc, never with Qiji's code. The verification page is driven in Debian's
chromium (headless), with screenshots under build/screenshots/."""

from __future__ import annotations

import base64
import json
import os
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from qiji.badges.v1 import badges_service_pb2 as pb
from qiji.identity.v1 import identity_service_pb2 as ipb

from services.badges.credentials import bit_is_set, decode_status_list
from tests import ob3 as verifier
from tests.conftest import missing_server
from tests.e2e.client import create_city, create_organisation, new_request_id, unique
from tests.e2e.conftest import REPO, ServiceProcess, WebProcess, free_port
from tests.e2e.conftest import new_rider as register_rider

pytestmark = pytest.mark.e2e

SCREENSHOTS = REPO / "build" / "screenshots"
CHROMIUM = Path(os.environ.get("QIJI_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"]
# 金蜂骑士's picture, uploaded with its class (an SVG: drawn and lettered by the browser).
GOLDEN_SVG = """<svg xmlns="http://www.w3.org/2000/svg" width="120" height="120"
 viewBox="0 0 120 120">
<circle cx="60" cy="60" r="56" fill="#f2b705" stroke="#8c1c13" stroke-width="6"/>
<ellipse cx="60" cy="52" rx="20" ry="14" fill="#3b2a00"/>
<rect x="42" y="46" width="36" height="5" fill="#f2b705"/>
<rect x="42" y="55" width="36" height="5" fill="#f2b705"/>
<text x="60" y="95" font-size="18" text-anchor="middle" fill="#8c1c13"
 font-family="WenQuanYi Micro Hei">金蜂骑士</text></svg>""".encode()


def http(url: str, *, data: bytes | None = None, headers: dict[str, str] | None = None
         ) -> tuple[int, dict[str, str], bytes]:
    """GET (or POST `data`) as anyone on the internet would: no token."""
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:  # our own test server
            return reply.status, dict(reply.headers), reply.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def get_json(url: str) -> Any:
    status, _, body = http(url)
    assert status == 200, (url, status, body[:300])
    return json.loads(body)


@dataclass
class Scene:
    city: Any
    golden: str
    award_id: str
    jwt: str
    credential: dict[str, Any]


@pytest.fixture(scope="module")
def scene(identity: ServiceProcess, badges: ServiceProcess, credentials: WebProcess) -> Scene:
    admin = identity.client("city_admin")
    tree = create_city(admin)
    community = create_organisation(admin, ipb.ORGANISATION_KIND_COMMUNITY, "北大街社区",
                                    tree["street"]).organisation_id

    class City:
        city, street, platform, station = (tree["city"], tree["street"], tree["platform"],
                                           tree["station"])
    golden = badges.client("city_admin").CreateBadgeClass(pb.CreateBadgeClassRequest(
        request_id=new_request_id(), name="金蜂骑士", description="志愿服务满 20 小时的骑手",
        issuer_id=tree["city"], validity_days=365, image=GOLDEN_SVG,
        image_media_type="image/svg+xml",
        criteria=pb.Criteria(min_volunteer_hours="20",
                             narrative="20 小时经社区确认的志愿服务"))).badge_class
    assert golden.image_url == f"{credentials.url}/achievements/{golden.badge_class_id}/image"
    assert community
    rider = register_rider(identity, City, name="陈静")
    award = badges.client("street_office").GrantBadge(pb.GrantBadgeRequest(
        request_id=new_request_id(), rider_id=rider, badge_class_id=golden.badge_class_id,
        reason="开幕式上授予的四位志愿者之一",
        evidence=[pb.Evidence(source="official", reference="常钟社〔2025〕1号",
                              narrative="授予通知")])).award
    exported = badges.client("auditor").ExportCredential(
        pb.ExportCredentialRequest(award_id=award.award_id))
    return Scene(City, golden.badge_class_id, award.award_id, exported.credential_jwt,
                 json.loads(exported.credential_json))


def another_award(badges: ServiceProcess, identity: ServiceProcess, scene: Scene
                  ) -> tuple[str, str]:
    rider = register_rider(identity, scene.city, name=unique("骑手"))
    award = badges.client("street_office").GrantBadge(pb.GrantBadgeRequest(
        request_id=new_request_id(), rider_id=rider, badge_class_id=scene.golden,
        reason="见义勇为", evidence=[pb.Evidence(reference="常州日报", narrative="报道")])).award
    return award.award_id, badges.client("auditor").ExportCredential(
        pb.ExportCredentialRequest(award_id=award.award_id)).credential_jwt


def test_an_outsider_dereferences_everything_the_credential_names(
        credentials: WebProcess, scene: Scene) -> None:
    credential = scene.credential
    header = json.loads(base64.urlsafe_b64decode(scene.jwt.split(".")[0] + "=="))
    # The kid is a URL: it alone gives the key; the JWK set holds both algorithms' keys.
    key = get_json(header["kid"])
    jwks = get_json(f"{credentials.url}/.well-known/jwks.json")
    assert key in jwks["keys"] and {k["alg"] for k in jwks["keys"]} == {"RS256", "Ed25519"}
    for check in (verifier.pyjwt_verify, verifier.joserfc_verify):
        assert check(scene.jwt, jwks)["iss"] == credential["issuer"]["id"]

    profile = get_json(credential["issuer"]["id"])
    assert (profile["id"], profile["name"]) == (credential["issuer"]["id"], "常州市")
    did = get_json(f"{credential['issuer']['id']}/did.json")
    assert did["id"].startswith("did:web:127.0.0.1%3A")
    achievement = get_json(credential["credentialSubject"]["achievement"]["id"])
    assert achievement["name"] == "金蜂骑士" and achievement["criteria"]["narrative"] == \
        "20 小时经社区确认的志愿服务"
    listed = get_json(f"{credentials.url}/achievements?issuer_id={scene.city.city}")
    assert [a["id"] for a in listed["achievements"]] == [achievement["id"]]

    status, headers, picture = http(achievement["image"]["id"])
    assert (status, headers["content-type"], picture) == (200, "image/svg+xml", GOLDEN_SVG)
    assert "sandbox" in headers["content-security-policy"]
    assert http(achievement["image"]["id"], headers={"If-None-Match": headers["etag"]})[0] \
        == 304

    status, headers, token = http(credential["credentialStatus"]["statusListCredential"])
    assert (status, headers["content-type"]) == (200, "application/vc+jwt")
    assert verifier.joserfc_verify_status(token.decode(), jwks)["credentialSubject"][
        "type"] == "BitstringStatusList"
    verifier.assert_valid_uris([credential, profile, did, achievement, jwks])
    verifier.conforms(profile, "profile.json")
    verifier.conforms(credential, "achievementcredential.json")


def test_a_revocation_shows_in_the_public_status_list_within_seconds(
        identity: ServiceProcess, badges: ServiceProcess, credentials: WebProcess,
        scene: Scene) -> None:
    award_id, jwt = another_award(badges, identity, scene)
    entry = json.loads(base64.urlsafe_b64decode(jwt.split(".")[1] + "=="))["credentialStatus"]

    def revoked_publicly() -> bool:
        listed = get_json(entry["statusListCredential"] + "?format=json")
        bits = decode_status_list(listed["credentialSubject"]["encodedList"])
        return bit_is_set(bits, int(entry["statusListIndex"]))

    assert not revoked_publicly()
    badges.client("street_office").RevokeAward(pb.RevokeAwardRequest(
        request_id=new_request_id(), award_id=award_id, reason="志愿时长登记有误"))
    revoked_at = time.monotonic()
    while not revoked_publicly():
        assert time.monotonic() - revoked_at < 5, "the revocation did not show within 5 s"
        time.sleep(0.1)
    status, _, body = http(f"{credentials.url}/api/verify", data=jwt.encode(),
                           headers={"Content-Type": "text/plain"})
    assert status == 200 and json.loads(body)["verdict"] == "revoked"


def test_a_baked_badge_carries_its_credential_and_verifies_as_posted(
        badges: ServiceProcess, credentials: WebProcess, scene: Scene) -> None:
    """OB 3.0 §5.3: the credential baked into the badge's own picture, which a rider can post
    anywhere; the public face takes the picture itself."""
    exported = badges.client("auditor").ExportCredential(
        pb.ExportCredentialRequest(award_id=scene.award_id, baked=True))
    assert exported.baked_image_media_type == "image/svg+xml"
    assert f'<openbadges:credential verify="{scene.jwt}"/>'.encode() in exported.baked_image
    status, _, body = http(f"{credentials.url}/api/verify", data=exported.baked_image,
                           headers={"Content-Type": "image/svg+xml"})
    assert status == 200, body
    assert json.loads(body)["verdict"] == "valid"
    status, _, body = http(f"{credentials.url}/api/verify", data=GOLDEN_SVG,
                           headers={"Content-Type": "image/svg+xml"})
    assert (status, json.loads(body)["field"]) == (400, "image")


def _png_with_credential_chunk(text: bytes) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(
            4, "big")
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"iTXt", b"openbadgecredential\x00\x00\x00\x00\x00"
                                          + text) + chunk(b"IEND", b""))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


# JSON nested deeper than Python's parser goes (it raises RecursionError, not ValueError).
DEEP = b"[" * 5000
DEEP_JWT = f"{_b64url(DEEP)}.{_b64url(DEEP)}.AA"

BAD = {
    # path or (path, body, content type): (status, field)
    "/issuers/not-a-uuid": (400, "issuer_id"),
    "/status/3f1c2a4e-0b6d-4c1e-9a57-2f0e8d7c6b5a/revocation/%C2%B2": (400, "list_number"),
    f"/achievements?page_token={_b64url(DEEP)}": (400, "page_token"),
    "/issuers/3f1c2a4e-0b6d-4c1e-9a57-2f0e8d7c6b5a": (404, ""),
    "/achievements/3f1c2a4e-0b6d-4c1e-9a57-2f0e8d7c6b5a/image": (404, ""),
    "/achievements?issuer_id=%27%3B--": (400, "issuer_id"),
    "/status/3f1c2a4e-0b6d-4c1e-9a57-2f0e8d7c6b5a/revocation/-1": (400, "list_number"),
    "/status/3f1c2a4e-0b6d-4c1e-9a57-2f0e8d7c6b5a/revocation/1000000": (400, "list_number"),
    "/keys/someone-elses": (404, ""),
    "/nothing-here": (404, ""),
    "POST /api/verify garbage": (400, "credential"),
    "POST /api/verify json without credential": (400, "credential"),
    "POST /api/verify three parts, not a JWS of JSON": (400, "credential"),
    "POST /api/verify 500 KB": (413, ""),
    "POST /api/verify a PNG whose credential is not UTF-8": (400, "image"),
    "POST /api/verify a JWT nested deeper than JSON goes": (400, "credential"),
    "POST /api/verify JSON nested deeper than JSON goes": (400, "body"),
}
BODIES = {
    "POST /api/verify a PNG whose credential is not UTF-8": (
        _png_with_credential_chunk(b"\xff\xfe"), "image/png"),
    "POST /api/verify a JWT nested deeper than JSON goes": (DEEP_JWT.encode(), "text/plain"),
    "POST /api/verify JSON nested deeper than JSON goes": (
        b'{"credential": ' + DEEP, "application/json"),
    "POST /api/verify garbage": (b"garbage", "text/plain"),
    "POST /api/verify json without credential": (b'{"jwt": "x"}', "application/json"),
    "POST /api/verify three parts, not a JWS of JSON": (b"abc.def.ghi", "text/plain"),
    "POST /api/verify 500 KB": (b"a" * 500_000, "text/plain"),
}


@pytest.mark.parametrize("case", BAD, ids=[case[:70] for case in BAD])
def test_bad_input_gets_a_precise_http_error_and_never_a_traceback(
        credentials: WebProcess, scene: Scene, case: str) -> None:
    expected_status, expected_field = BAD[case]
    if case in BODIES:
        body, content_type = BODIES[case]
        status, _, answer = http(f"{credentials.url}/api/verify", data=body,
                                 headers={"Content-Type": content_type})
    else:
        status, _, answer = http(credentials.url + case)
    assert status == expected_status, answer
    problem = json.loads(answer)
    assert problem["error"] and "Traceback" not in problem["error"]
    assert problem.get("field", "") == expected_field


def test_bad_input_never_reaches_badges_as_an_internal_error(
        badges: ServiceProcess, credentials: WebProcess, scene: Scene) -> None:
    """What the face passes on, and the same input straight to badges' API: INVALID_ARGUMENT
    naming the field, and nothing in badges' log says it failed inside."""
    reader = badges.client("auditor")
    for call in (lambda: reader.VerifyCredential(pb.VerifyCredentialRequest(
                     credential_jwt=DEEP_JWT)),
                 lambda: reader.ListAchievements(pb.ListAchievementsRequest(
                     page_token=_b64url(DEEP)))):
        with pytest.raises(grpc.RpcError) as refused:
            call()
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    for case in BAD:
        if case in BODIES:
            http(f"{credentials.url}/api/verify", data=BODIES[case][0],
                 headers={"Content-Type": BODIES[case][1]})
        else:
            http(credentials.url + case)
    assert "rpc.internal_error" not in badges.log_path.read_text(errors="replace")
    face_log = credentials.log_path.read_text(errors="replace")
    assert "http.failed" not in face_log and '"status": 500' not in face_log


def test_a_crafted_picture_is_answered_at_once_and_the_face_stays_responsive(
        credentials: WebProcess) -> None:
    """Nothing but opening tags (391 KB): a scan that starts again at every tag took 29 s of
    CPU on one such body, and held up every other request meanwhile. Four at once are each
    refused (400) in moments, and /healthz answers throughout."""
    crafted = b"<openbadges:credential>" * 17_000
    answers: dict[int, tuple[int, float]] = {}

    def post(i: int) -> None:
        started = time.monotonic()
        status, _, _ = http(f"{credentials.url}/api/verify", data=crafted,
                            headers={"Content-Type": "image/svg+xml"})
        answers[i] = (status, time.monotonic() - started)

    posting = [threading.Thread(target=post, args=(i,), daemon=True) for i in range(4)]
    for thread in posting:
        thread.start()
    health = []
    while True:
        started = time.monotonic()
        status, _, _ = http(f"{credentials.url}/healthz")
        health.append((status, time.monotonic() - started))
        if not any(thread.is_alive() for thread in posting):
            break
    for thread in posting:
        thread.join(30)
    assert sorted(answers) == [0, 1, 2, 3], "a crafted request got no answer within 10 s"
    assert all(status == 400 and seconds < 5 for status, seconds in answers.values()), answers
    assert all(status == 200 and seconds < 2 for status, seconds in health), health


def test_the_face_reports_its_health_and_stops_cleanly_on_sigterm(
        badges: ServiceProcess, tmp_path: Path) -> None:
    web = WebProcess(badges, tmp_path, port=free_port())
    web.start()
    assert get_json(f"{web.url}/healthz") == {"status": "ok"}
    assert get_json(f"{web.url}/readyz") == {"status": "ok"}
    assert web.stop() == 0, web.log_tail()
    lines = [json.loads(line) for line in web.log_tail().splitlines() if line.startswith("{")]
    events = [e["event"] for e in lines]
    assert "service.started" in events and events[-1] == "service.stopped"
    assert any(e["event"] == "http.request" and e["route"] == "/readyz" for e in lines)


# ---------------------------------------------------------------------------- in a browser


@pytest.fixture(scope="module")
def page(credentials: WebProcess) -> Iterator[Any]:
    if not CHROMIUM.exists():
        missing_server(f"no chromium at {CHROMIUM} (apt-get install chromium "
                       "fonts-wqy-microhei)")
    from playwright.sync_api import sync_playwright
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            yield browser.new_page(viewport={"width": 900, "height": 900}, locale="zh-CN")
        finally:
            browser.close()


def verify_in_browser(page: Any, url: str, jwt: str, shot: str) -> str:
    page.goto(f"{url}/verify")
    page.fill("textarea[name=credential]", jwt)
    page.click("button[type=submit]")
    page.wait_for_selector("[data-verdict]")
    page.screenshot(path=str(SCREENSHOTS / shot), full_page=True)
    return page.get_attribute("[data-verdict]", "data-verdict")


def test_the_verification_page_says_valid_revoked_and_tampered(
        page: Any, identity: ServiceProcess, badges: ServiceProcess, credentials: WebProcess,
        scene: Scene) -> None:
    page.goto(f"{credentials.url}/verify")
    page.screenshot(path=str(SCREENSHOTS / "verify-form.png"), full_page=True)

    assert verify_in_browser(page, credentials.url, scene.jwt, "verify-valid.png") == "VALID"
    assert page.inner_text(".verdict") == "有效 · Valid"
    assert "金蜂骑士" in page.inner_text("dl") and "常州市" in page.inner_text("dl")
    assert page.evaluate("document.querySelector('.badge img').naturalWidth") > 0

    head, body, signature = scene.jwt.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    claims["credentialSubject"]["achievement"]["name"] = "伪造骑士"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    assert verify_in_browser(page, credentials.url, f"{head}.{forged}.{signature}",
                             "verify-tampered.png") == "TAMPERED"
    assert "伪造骑士" not in page.content()  # nothing of a forged credential is shown

    award_id, jwt = another_award(badges, identity, scene)
    badges.client("street_office").RevokeAward(pb.RevokeAwardRequest(
        request_id=new_request_id(), award_id=award_id, reason="志愿时长登记有误"))
    assert verify_in_browser(page, credentials.url, jwt, "verify-revoked.png") == "REVOKED"
    assert page.inner_text(".verdict") == "已撤销 · Revoked"

    page.goto(f"{credentials.url}/verify")
    page.fill("textarea[name=credential]", "这不是证书")
    page.click("button[type=submit]")
    page.wait_for_selector("[role=alert]")
    page.screenshot(path=str(SCREENSHOTS / "verify-not-a-credential.png"), full_page=True)
    assert "VC-JWT" in page.inner_text("[role=alert]")
