"""Open Badges 3.0 credentials as an outside verifier checks them: 1EdTech's schemas, PyJWT
and joserfc for both algorithms, OB 3.0 §8.2's header and claims, valid URIs, the Bitstring
status list after a revocation, expiry, badge images — over a real store."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import pytest

from services.badges import credentials as ob3
from shared.errors import InvalidArgument
from tests import ob3 as verifier
from tests.conftest import as_actor, badges_keys
from tests.integration.test_badges_app import ADMIN, OFFICE, URLS, badge, new_rider, serve

PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00"
       b"\x00\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\xcf\xc0\xf0\x1f\x00\x05\x00\x01\xff"
       b"\x89\x99=\x1d\x00\x00\x00\x00IEND\xaeB`\x82")


def _b64(part: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def awarded(world, **given):
    given.setdefault("min_volunteer_hours", "2")
    class_id = badge(world, **given)
    rider = new_rider(world)
    return class_id, rider, serve(world, rider, "2")["award_ids"][0]


@pytest.mark.parametrize("alg", ["RS256", "Ed25519"])
def test_an_exported_credential_conforms_and_two_independent_libraries_verify_it(world, alg):
    world["badges"].issuer_keys = badges_keys(alg)  # the city's choice of BADGES_SIGNING_ALG
    _, rider, award_id = awarded(world, validity_days=365)
    credential, token = world["badges"].export_credential(award_id=award_id)
    jwks = world["badges"].issuer_keys_json()

    header = _b64(token.split(".")[0])
    assert set(header) == {"alg", "kid", "typ"} and header["typ"] == "JWT"
    assert header["alg"] == alg and header["kid"].startswith(f"{URLS.base}/keys/")
    for check in (verifier.pyjwt_verify, verifier.joserfc_verify):
        claims = check(token, jwks)
        assert claims["iss"] == credential["issuer"]["id"] == f"{URLS.base}/issuers/" \
            f"{world['city']}"
        assert claims["jti"] == credential["id"] and claims["sub"] == \
            credential["credentialSubject"]["id"]
        assert claims["nbf"] == int(ob3.parse_time(credential["validFrom"]).timestamp())
        assert claims["exp"] == int(ob3.parse_time(credential["validUntil"]).timestamp())
        assert {k: v for k, v in claims.items() if k not in
                ("iss", "jti", "sub", "nbf", "exp")} == credential
    assert credential["credentialStatus"]["type"] == "BitstringStatusListEntry"
    assert credential["credentialSchema"] == [ob3.OB3_CREDENTIAL_SCHEMA]
    assert credential["credentialSubject"]["achievement"]["name"] == "金蜂骑士"
    assert rider not in token + json.dumps(credential, ensure_ascii=False)
    verifier.assert_valid_uris(credential)


def test_exported_credentials_and_issuer_profiles_conform_to_1edtechs_schemas(world):
    _, _, award_id = awarded(world, validity_days=365)
    green = badge(world, name="青蜂骑士", min_volunteer_hours="100")
    rider = new_rider(world)
    with as_actor(OFFICE):
        manual = world["badges"].grant_badge(
            rider_id=rider, badge_class_id=green, reason="见义勇为",
            evidence=[{"reference": "official:常钟社〔2025〕1号", "narrative": "授予通知"}])[
            "award_id"]
    for credential in (world["badges"].export_credential(award_id=a)[0]
                       for a in (award_id, manual)):
        verifier.conforms(credential, "achievementcredential.json")
    verifier.conforms(world["badges"].issuer_profile(issuer_id=world["city"])[0],
                      "profile.json")


def test_a_manual_awards_official_document_number_is_a_valid_uri(world):
    golden = badge(world, min_volunteer_hours="100")
    rider = new_rider(world)
    with as_actor(OFFICE):
        # The gRPC entry point stores the caller's source before the reference.
        award_id = world["badges"].grant_badge(
            rider_id=rider, badge_class_id=golden, reason="四位志愿者在开幕式上获授",
            evidence=[{"reference": "official:常钟社〔2025〕1号", "narrative": "授予通知"}])[
            "award_id"]
    credential, _ = world["badges"].export_credential(award_id=award_id)
    evidence = credential["evidence"][0]
    assert evidence["id"] == ("urn:qiji:evidence:official:%E5%B8%B8%E9%92%9F%E7%A4%BE%E3%80%94"
                              "2025%E3%80%951%E5%8F%B7")
    assert evidence["name"] == "常钟社〔2025〕1号"
    verifier.assert_valid_uris(credential)


def test_a_revocation_sets_the_awards_bit_in_its_issuers_status_list_and_nothing_else(world):
    _, _, kept = awarded(world)
    _, _, revoked = awarded(world, name="青蜂骑士")
    entries = {a: world["badges"].export_credential(award_id=a)[0]["credentialStatus"]
               for a in (kept, revoked)}
    url = entries[kept]["statusListCredential"]
    assert url == entries[revoked]["statusListCredential"] == \
        f"{URLS.base}/status/{world['city']}/revocation/0"
    assert entries[kept]["statusListIndex"] != entries[revoked]["statusListIndex"]

    def bits():
        listed, token = world["badges"].status_list(issuer_id=world["city"], list_number=0)
        claims = verifier.joserfc_verify_status(token, world["badges"].issuer_keys_json())
        assert claims["credentialSubject"] == listed["credentialSubject"]
        encoded = listed["credentialSubject"]["encodedList"]
        return {a: ob3.bit_is_set(ob3.decode_status_list(encoded),
                                  int(entries[a]["statusListIndex"])) for a in entries}

    assert bits() == {kept: False, revoked: False}
    with as_actor(OFFICE):
        world["badges"].revoke_award(award_id=revoked, reason="misconduct")
    assert bits() == {kept: False, revoked: True}
    verdict = world["badges"].verify_credential(
        jwt=world["badges"].export_credential(award_id=revoked)[1])
    assert verdict["verdict"] == "REVOKED" and not verdict["valid"]


@pytest.mark.parametrize("list_number", [-1, 1_000_000])
def test_a_status_list_number_out_of_range_is_refused_naming_the_whole_range(world, list_number):
    with pytest.raises(InvalidArgument) as error:
        world["badges"].status_list(issuer_id=world["city"], list_number=list_number)
    [fault] = error.value.violations
    assert (fault.field, fault.reason) == ("list_number", "VALUE_OUT_OF_RANGE")
    assert fault.description == "must be 0 to 999999"


def test_a_credential_past_its_expiry_is_expired_and_one_changed_after_signing_is_tampered(
        world):
    _, _, award_id = awarded(world, validity_days=30)
    _, token = world["badges"].export_credential(award_id=award_id)
    assert world["badges"].verify_credential(jwt=token)["verdict"] == "VALID"

    head, body, signature = token.split(".")
    forged = _b64(body)
    forged["credentialSubject"]["achievement"]["name"] = "Forged Knight"
    forged_body = base64.urlsafe_b64encode(json.dumps(forged).encode()).decode().rstrip("=")
    assert world["badges"].verify_credential(jwt=f"{head}.{forged_body}.{signature}")[
        "verdict"] == "TAMPERED"

    # Signed with our key, but its iss claim says someone else issued it.
    keys = world["badges"].issuer_keys
    lying = {**_b64(body), "iss": "https://elsewhere.example/issuers/1"}
    signing_input = head + "." + base64.urlsafe_b64encode(
        json.dumps(lying).encode()).decode().rstrip("=")
    forged_sig = ob3.b64url(keys.active.sign(signing_input.encode()))
    checked = world["badges"].verify_credential(jwt=f"{signing_input}.{forged_sig}")
    assert checked["verdict"] == "TAMPERED" and "iss" in checked["problems"][0]

    world["clock"].now += timedelta(days=31)
    assert world["badges"].verify_credential(jwt=token)["verdict"] == "EXPIRED"


def test_a_credential_signed_by_another_key_is_not_ours(world):
    _, _, award_id = awarded(world)
    credential, _ = world["badges"].export_credential(award_id=award_id)
    stranger = ob3.IssuerKeys(rsa_key=ob3.RsaKey.from_pem(ob3.new_rsa_pem(2048).encode()),
                              ed25519_key=ob3.Ed25519Key(bytes(32)))
    token = ob3.sign(stranger, URLS, credential, world["city"])
    assert world["badges"].verify_credential(jwt=token)["verdict"] == "UNKNOWN_KEY"
    with pytest.raises(InvalidArgument):
        world["badges"].verify_credential(jwt="not.a-credential")


def test_a_badge_picture_uploaded_with_its_class_is_what_the_credential_points_at(world):
    with as_actor(ADMIN):
        class_id = world["badges"].create_badge_class(
            name="金蜂骑士", description="", image_url="", issuer_id=world["city"],
            criteria={"min_volunteer_hours": "2", "required_course_ids": [],
                      "track_requirements": [], "min_verified_reports": 0, "within_days": 0,
                      "narrative": "2 小时志愿服务"},
            validity_days=0, image=PNG, image_media_type="image/png")["badge_class_id"]
        with pytest.raises(InvalidArgument) as refused:
            world["badges"].upload_badge_image(
                badge_class_id=class_id, media_type="image/svg+xml",
                image=b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"></svg>')
    assert refused.value.violations[0].field == "image"
    stored = world["badges"].badge_image(badge_class_id=class_id)
    assert stored["data"] == PNG and stored["media_type"] == "image/png"
    achievement = world["badges"].achievement(badge_class_id=class_id)
    assert achievement["image"] == {"id": URLS.image(class_id), "type": "Image",
                                    "caption": "金蜂骑士"}
    assert achievement["description"] == "金蜂骑士"  # OB 3.0 requires one; the name stands in
    profile, did = world["badges"].issuer_profile(issuer_id=world["city"])
    assert profile["id"] == URLS.issuer(world["city"]) and profile["name"] == "常州市"
    assert {m["publicKeyJwk"]["kty"] for m in did["verificationMethod"]} == {"RSA", "OKP"}
    verifier.assert_valid_uris([achievement, profile, did])


@pytest.mark.parametrize(("image", "media_type"), [
    (PNG[:-12], "image/png"),  # cut short: no IEND
    (PNG[:8] + PNG[33:], "image/png"),  # no IHDR
    (b'<svg xmlns="http://www.w3.org/2000/svg"><a><animate attributeName="href" '
     b'values="&#106;avascript:alert(1)"/><text>x</text></a></svg>', "image/svg+xml"),
    (b'<svg><set attributeName="xlink:href" to="https://elsewhere.example"/></svg>',
     "image/svg+xml"),
    (b'<svg><a href="&#106;avascript:alert(1)">x</a></svg>', "image/svg+xml"),
], ids=["png-cut-short", "png-without-ihdr", "animate-href", "set-xlink-href",
        "escaped-javascript"])
def test_a_picture_that_is_not_whole_or_could_act_is_refused_at_upload(world, image,
                                                                        media_type):
    class_id = badge(world, min_volunteer_hours="2")
    with as_actor(ADMIN), pytest.raises(InvalidArgument) as refused:
        world["badges"].upload_badge_image(badge_class_id=class_id, media_type=media_type,
                                           image=image)
    assert refused.value.violations[0].field == "image"
    assert not world["badges"].badge_class(class_id).image


def test_a_stored_picture_that_cannot_be_baked_fails_the_baked_export_precisely(world):
    """A truncated PNG an earlier release let in: the baked export is FAILED_PRECONDITION
    (upload the picture again), never INTERNAL; the credential itself still exports."""
    from services.badges.application import _image_state
    from shared.errors import FailedPrecondition
    class_id, _rider, award_id = awarded(world)
    app = world["badges"]
    stored = app.badge_class(class_id)
    stored.upload_image(**_image_state(PNG[:-12], "image/png"))
    app.save(stored)
    with as_actor(ADMIN):
        _credential, jwt = app.export_credential(award_id=award_id)
        with pytest.raises(FailedPrecondition) as refused:
            app.baked_credential(award_id=award_id, jwt=jwt)
    assert refused.value.reason == "BADGE_IMAGE_UNREADABLE"


def test_a_credential_exported_before_ob3s_claims_still_verifies_until_revoked(world):
    """Qiji's earlier exports: alg EdDSA, typ vc+jwt, a bare kid, no JWT claims."""
    _, _, award_id = awarded(world)
    credential, _ = world["badges"].export_credential(award_id=award_id)
    key = world["badges"].issuer_keys.keys[1]
    header = {"alg": "EdDSA", "typ": "vc+jwt", "cty": "vc", "kid": key.legacy_key_id}
    signing_input = ob3.b64url(json.dumps(header).encode()) + "." + ob3.b64url(
        json.dumps(credential).encode())
    old = f"{signing_input}.{ob3.b64url(key.sign(signing_input.encode()))}"
    assert world["badges"].verify_credential(jwt=old)["verdict"] == "VALID"
    with as_actor(OFFICE):
        world["badges"].revoke_award(award_id=award_id, reason="misconduct")
    assert world["badges"].verify_credential(jwt=old)["verdict"] == "REVOKED"
