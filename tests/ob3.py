"""What an outside verifier does with a Qiji credential, written with libraries that are not
Qiji's: PyJWT and joserfc (signatures and JWT claims, RS256 and Ed25519), jsonschema against
1EdTech's published OB 3.0 schemas, an RFC 3986 validator for every URI.

1EdTech's schemas are data we may not commit (they come from a fetched repository): the
tests read them from QIJI_OB3_SCHEMAS, or from `openbadges/` in the team's shared folder beside
the repository, and check their SHA-256 so that only the genuine files count. Where they are
not found, the schema checks are skipped, saying so."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import jwt as pyjwt
import pytest
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet
from jwt.algorithms import OKPAlgorithm
from rfc3986_validator import validate_rfc3986

REPO = Path(__file__).resolve().parents[1]
# 1EdTech/openbadges-specification, branch gh-pages, commit c73e9663 (2024-07-30):
# docs/schema/achievementcredential.json and docs/schema/profile.json, unchanged.
SCHEMAS = {
    "achievementcredential.json":
        "5753fb3ecf7d024ed273dd364bd683f483eb47257e718e6618832cf89eb2083a",
    "profile.json": "9b05049f720b8ad9bd7aed358ca59c643c34bf1cec0b29fd7baa8bf98efed164",
}


def _schema_dirs() -> Iterator[Path]:
    if os.environ.get("QIJI_OB3_SCHEMAS"):
        yield Path(os.environ["QIJI_OB3_SCHEMAS"])
    yield REPO.parent / "shared" / "openbadges"


def schema(name: str) -> dict[str, Any]:
    """1EdTech's schema `name`, checked against its published SHA-256."""
    for folder in _schema_dirs():
        path = folder / name
        if path.is_file():
            data = path.read_bytes()
            assert hashlib.sha256(data).hexdigest() == SCHEMAS[name], (
                f"{path} is not 1EdTech's published {name}")
            return json.loads(data)
    pytest.skip(f"1EdTech's OB 3.0 schema {name} is not here (set QIJI_OB3_SCHEMAS, or put it "
                "in the shared folder's openbadges/): schema validation not run")


def conforms(document: dict[str, Any], name: str) -> None:
    """Raises jsonschema.ValidationError, naming the path, unless `document` conforms."""
    s = schema(name)
    jsonschema.validators.validator_for(s)(s).validate(document)


def pyjwt_verify(token: str, jwks: dict[str, Any]) -> dict[str, Any]:
    """PyJWT: the key the header's kid names in the JWK set, the algorithm the key is for,
    and the claims OB 3.0 §8.2.4 requires (iss, jti, sub, nbf; exp when given)."""
    header = pyjwt.get_unverified_header(token)
    jwk = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    jws = pyjwt.PyJWS()
    # PyJWT knows Ed25519 keys (OKPAlgorithm) under the older name EdDSA only; RFC 9864
    # names the same algorithm Ed25519. The signature check is still PyJWT's own.
    jws.register_algorithm("Ed25519", OKPAlgorithm())
    decoder = pyjwt.PyJWT()
    decoder._jws = jws
    key = pyjwt.PyJWK(jwk, algorithm="EdDSA" if jwk["alg"] == "Ed25519" else jwk["alg"]).key
    return decoder.decode(token, key=key, algorithms=[jwk["alg"]],
                          options={"require": ["iss", "jti", "sub", "nbf"]})


def joserfc_verify(token: str, jwks: dict[str, Any]) -> dict[str, Any]:
    """joserfc: the whole JWK set (it picks the key by kid), then its claims registry."""
    decoded = jose_jwt.decode(token, KeySet.import_key_set(jwks), algorithms=["RS256",
                                                                            "Ed25519"])
    claims = decoded.claims
    jose_jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": claims["issuer"]["id"]},
        jti={"essential": True, "value": claims["id"]},
        sub={"essential": True, "value": claims["credentialSubject"]["id"]},
        nbf={"essential": True}).validate(claims)
    return dict(claims)


def joserfc_verify_status(token: str, jwks: dict[str, Any]) -> dict[str, Any]:
    """A status list credential: joserfc checks its signature and claims as for a badge."""
    decoded = jose_jwt.decode(token, KeySet.import_key_set(jwks), algorithms=["RS256",
                                                                            "Ed25519"])
    claims = decoded.claims
    jose_jwt.JWTClaimsRegistry(iss={"essential": True, "value": claims["issuer"]},
                               jti={"essential": True, "value": claims["id"]},
                               nbf={"essential": True}).validate(claims)
    return dict(claims)


def uris(document: Any) -> Iterator[str]:
    """Every `id` and URL-valued member of a credential."""
    if isinstance(document, dict):
        for key, value in document.items():
            if key in ("id", "url", "statusListCredential", "serviceEndpoint", "controller") \
                    and isinstance(value, str):
                yield value
            elif key == "@context":
                yield from (v for v in value if isinstance(v, str))
            else:
                yield from uris(value)
    elif isinstance(document, list):
        for item in document:
            yield from uris(item)


def assert_valid_uris(document: Any) -> None:
    bad = [u for u in uris(document) if not validate_rfc3986(u, rule="URI")]
    assert not bad, f"not RFC 3986 URIs: {bad}"
