"""Open Badges 3.0 credentials: an award as a W3C verifiable credential, signed as a compact
JWS (VC-JWT) with the issuer's Ed25519 key, and checked again by `verify`.

The signature covers the credential exactly as exported; whether the award still stands
(revoked? expired?) is a separate, live question the verify call asks the store."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from shared.signing import load_key

OB3_CONTEXT = [
    "https://www.w3.org/ns/credentials/v2",
    "https://purl.imsglobal.org/spec/ob/v3p0/context-3.0.3.json",
]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class IssuerKey:
    """The issuer's signing key: configured (or, on the embedded default, made once and kept
    in the data folder), never generated per run, so yesterday's credentials still verify."""

    def __init__(self, seed: bytes):
        if len(seed) != 32:
            raise ValueError("the badges signing key must be 32 bytes (an Ed25519 seed)")
        self._private = Ed25519PrivateKey.from_private_bytes(seed)
        self.public = self._private.public_key()
        raw = self.public.public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.key_id = "qiji-badges-" + hashlib.sha256(raw).hexdigest()[:16]
        self.jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw), "kid": self.key_id,
                    "use": "sig", "alg": "EdDSA"}

    @classmethod
    def load(cls, value: str, key_file: Path, *, create: bool) -> IssuerKey:
        return cls(load_key(value, key_file, create=create, setting="BADGES_SIGNING_KEY",
                            what="badges signing key (an Ed25519 seed)"))

    def sign(self, credential: dict[str, Any]) -> str:
        header = {"alg": "EdDSA", "typ": "vc+jwt", "cty": "vc", "kid": self.key_id}
        signing_input = (b64url(json.dumps(header, separators=(",", ":")).encode()) + "."
                         + b64url(json.dumps(credential, separators=(",", ":"),
                                             ensure_ascii=False).encode()))
        return signing_input + "." + b64url(self._private.sign(signing_input.encode()))


def verify_signature(jwt: str, keys: dict[str, Ed25519PublicKey]) -> dict[str, Any] | None:
    """The credential inside `jwt` if its signature is good under one of `keys`, else None."""
    try:
        header_b64, payload_b64, signature_b64 = jwt.split(".")
        header = json.loads(b64url_decode(header_b64))
        # Anything can arrive here: a header that is not an object, or a kid that is not a
        # string, is simply not a credential of ours.
        if not isinstance(header, dict) or not isinstance(header.get("kid"), str):
            return None
        key = keys.get(header["kid"])
        if key is None or header.get("alg") != "EdDSA":
            return None
        key.verify(b64url_decode(signature_b64), f"{header_b64}.{payload_b64}".encode())
        payload = json.loads(b64url_decode(payload_b64))
        return payload if isinstance(payload, dict) else None
    except (ValueError, InvalidSignature, UnicodeDecodeError):
        return None


def open_badge(*, award: Any, badge_class: Any, criteria_narrative: str, issuer_name: str,
               rider_id: str) -> dict[str, Any]:
    """The award as an OpenBadgeCredential. The rider appears only as a salted hash of their
    id: a credential shown outside the city names no one."""
    salt = hashlib.sha256(f"qiji-subject-salt:{award.id}".encode()).hexdigest()[:16]
    identity_hash = "sha256$" + hashlib.sha256((rider_id + salt).encode()).hexdigest()
    credential: dict[str, Any] = {
        "@context": OB3_CONTEXT,
        "id": f"urn:uuid:{award.id}",
        "type": ["VerifiableCredential", "OpenBadgeCredential"],
        "issuer": {"id": f"urn:uuid:{badge_class.issuer_id}", "type": ["Profile"],
                   "name": issuer_name},
        "validFrom": _iso(award.awarded_at),
        "name": badge_class.name,
        "credentialSubject": {
            "type": ["AchievementSubject"],
            "identifier": [{"type": "IdentityObject", "identityType": "identifier",
                            "hashed": True, "identityHash": identity_hash, "salt": salt}],
            "achievement": {
                "id": f"urn:uuid:{badge_class.id}",
                "type": ["Achievement"],
                "name": badge_class.name,
                "description": badge_class.description,
                "criteria": {"narrative": criteria_narrative},
                **({"image": {"id": badge_class.image_url, "type": "Image"}}
                   if badge_class.image_url else {}),
            },
        },
        "evidence": [{"type": ["Evidence"], "id": f"urn:qiji:{e['source']}:{e['reference']}",
                      "narrative": e["narrative"]} for e in award.evidence],
    }
    if award.expires_at is not None:
        credential["validUntil"] = _iso(award.expires_at)
    return credential


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")
