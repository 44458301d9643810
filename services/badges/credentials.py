"""Open Badges 3.0 credentials: an award as a W3C verifiable credential, signed as a compact
JWS (VC-JWT, OB 3.0 §8.2) with the issuer's RS256 or Ed25519 key, the public documents an
outside verifier dereferences (issuer profile, achievement, keys, Bitstring status list), and
the check of a credential someone shows us.

Pure: no gRPC, no store. The signature covers the credential exactly as exported; whether the
award still stands (revoked? expired?) is a separate, live question answered from the log —
by `VerifyCredential` and, for anyone, by the public status list."""

from __future__ import annotations

import base64
import gzip
import hashlib
import ipaddress
import json
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared.files import create_once
from shared.signing import load_key

OB3_CONTEXT = [
    "https://www.w3.org/ns/credentials/v2",
    "https://purl.imsglobal.org/spec/ob/v3p0/context-3.0.3.json",
]
VC2_CONTEXT = "https://www.w3.org/ns/credentials/v2"
# 1EdTech's published JSON schema for an OpenBadgeCredential (OB 3.0 §B.1; verification.md:
# a verifier checks the credential against it when the type is 1EdTechJsonSchemaValidator2019).
OB3_CREDENTIAL_SCHEMA = {
    "id": "https://purl.imsglobal.org/spec/ob/v3p0/schema/json/"
          "ob_v3p0_achievementcredential_schema.json",
    "type": "1EdTechJsonSchemaValidator2019",
}
# RS256 is what OB 3.0 §8.2.3 makes every implementation support; Ed25519 (RFC 9864's
# fully-specified name for EdDSA over Ed25519) is offered beside it.
RS256, ED25519 = "RS256", "Ed25519"
SIGNING_ALGORITHMS = (RS256, ED25519)
# What older Qiji exports carried: still accepted when verifying, never produced.
LEGACY_EDDSA = "EdDSA"
# W3C Bitstring Status List v1.0 §6.1: at least 131,072 entries (16 KiB), for herd privacy.
STATUS_LIST_SIZE = 131_072
REVOCATION = "revocation"
_SUBJECT_NS = uuid.UUID("3b1f9a52-6c4e-4a43-9d0e-51c2d7a8e6f1")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def b64url_decode(text: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _thumbprint(members: Mapping[str, str]) -> str:
    """RFC 7638: the SHA-256 of the key's required members in lexicographic order."""
    canonical = json.dumps(dict(sorted(members.items())), separators=(",", ":"))
    return b64url(hashlib.sha256(canonical.encode()).digest())


# ---------------------------------------------------------------------- keys


class Ed25519Key:
    alg = ED25519

    def __init__(self, seed: bytes):
        if len(seed) != 32:
            raise ValueError("the badges Ed25519 signing key must be 32 bytes (a seed)")
        self._private = Ed25519PrivateKey.from_private_bytes(seed)
        self.public = self._private.public_key()
        raw = self.public.public_bytes(serialization.Encoding.Raw,
                                       serialization.PublicFormat.Raw)
        self.members = {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)}
        self.key_id = _thumbprint(self.members)
        # The kid Qiji's exports carried before OB 3.0 §8 was followed: such credentials
        # still verify.
        self.legacy_key_id = "qiji-badges-" + hashlib.sha256(raw).hexdigest()[:16]

    def sign(self, data: bytes) -> bytes:
        return self._private.sign(data)

    def verify(self, signature: bytes, data: bytes) -> bool:
        try:
            self.public.verify(signature, data)
        except InvalidSignature:
            return False
        return True

    def accepts(self, alg: str) -> bool:
        return alg in (ED25519, LEGACY_EDDSA)


class RsaKey:
    alg = RS256

    def __init__(self, private: rsa.RSAPrivateKey):
        if private.key_size < 2048:
            raise ValueError("the badges RSA signing key must have at least 2048 bits")
        self._private = private
        self.public = private.public_key()
        numbers = self.public.public_numbers()

        def uint(n: int) -> str:
            return b64url(n.to_bytes((n.bit_length() + 7) // 8, "big"))
        self.members = {"kty": "RSA", "n": uint(numbers.n), "e": uint(numbers.e)}
        self.key_id = _thumbprint(self.members)
        self.legacy_key_id = ""

    @classmethod
    def from_pem(cls, pem: bytes) -> RsaKey:
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("the badges RSA signing key must be an RSA private key (PEM)")
        return cls(key)

    def sign(self, data: bytes) -> bytes:
        return self._private.sign(data, padding.PKCS1v15(), hashes.SHA256())

    def verify(self, signature: bytes, data: bytes) -> bool:
        try:
            self.public.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            return False
        return True

    def accepts(self, alg: str) -> bool:
        return alg == RS256


SigningKey = Ed25519Key | RsaKey


def load_ed25519(value: str, key_file: Path, *, create: bool) -> Ed25519Key:
    """BADGES_SIGNING_KEY (base64 of a 32-byte seed), else its file (made once when
    `create`): read as every Qiji key is (shared/signing.py)."""
    return Ed25519Key(load_key(value, key_file, create=create, setting="BADGES_SIGNING_KEY",
                               what="badges Ed25519 signing key"))


def load_rsa(value: str, key_file: Path, *, create: bool) -> RsaKey:
    if value:
        # The PEM itself, or base64 of it (environment variables keep one line better).
        pem = value.encode() if "-----BEGIN" in value else base64.b64decode(value)
        return RsaKey.from_pem(pem)
    if not key_file.exists():
        if not create:
            raise FileNotFoundError(
                f"no badges RSA signing key: set BADGES_RSA_SIGNING_KEY (a PEM RSA private "
                f"key of 2048 bits or more) or create {key_file}")
        create_once(key_file, new_rsa_pem())
    return RsaKey.from_pem(key_file.read_bytes())


def new_rsa_pem(bits: int = 3072) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


class IssuerKeys:
    """The issuer's key set: an RSA key and an Ed25519 key, both published; the city chooses
    which one signs (`BADGES_SIGNING_ALG`). Keys are configured (or, on the embedded default,
    made once and kept in the data folder), never generated per run: yesterday's credentials
    must still verify."""

    def __init__(self, *, rsa_key: RsaKey, ed25519_key: Ed25519Key, alg: str = RS256):
        if alg not in SIGNING_ALGORITHMS:
            raise ValueError(f"BADGES_SIGNING_ALG must be one of {SIGNING_ALGORITHMS}, "
                             f"got {alg!r}")
        self.keys: list[SigningKey] = [rsa_key, ed25519_key]
        self.active: SigningKey = rsa_key if alg == RS256 else ed25519_key

    def find(self, kid: str) -> SigningKey | None:
        """The key a header's `kid` names: its URL (…/keys/<thumbprint>), a did:web key
        (…#<thumbprint>), the bare thumbprint, or an older export's kid."""
        tail = re.split(r"[/#]", kid)[-1]
        for key in self.keys:
            if tail == key.key_id or (key.legacy_key_id and kid == key.legacy_key_id):
                return key
        return None

    def jwks(self, urls: PublicUrls) -> dict[str, Any]:
        return {"keys": [self.jwk(key, urls) for key in self.keys]}

    @staticmethod
    def jwk(key: SigningKey, urls: PublicUrls) -> dict[str, Any]:
        return {**key.members, "kid": urls.key(key.key_id), "use": "sig", "alg": key.alg}


# ---------------------------------------------------------------------- public addresses


class PublicUrls:
    """Where the city's public credentials face answers (QIJI_ISSUER_URL), and every address
    under it that credentials name. Changing it later leaves credentials already handed out
    pointing at the old addresses: choose it once."""

    def __init__(self, base: str, *, did_web: bool = False):
        self.base = check_issuer_url(base)
        self.did_web = did_web

    def issuer(self, organisation_id: str) -> str:
        if self.did_web:
            return self.did(organisation_id)
        return f"{self.base}/issuers/{organisation_id}"

    def issuer_page(self, organisation_id: str) -> str:
        return f"{self.base}/issuers/{organisation_id}"

    def did(self, organisation_id: str) -> str:
        """did:web (W3C CCG did:web §3.2): host (port percent-encoded), then path segments;
        it resolves to <base>/issuers/<id>/did.json."""
        parts = urlsplit(self.base)
        host = parts.netloc.replace(":", "%3A")
        segments = [s for s in parts.path.split("/") if s]
        return ":".join(["did:web", host, *segments, "issuers", organisation_id])

    def key(self, key_id: str) -> str:
        return f"{self.base}/keys/{key_id}"

    def key_for(self, organisation_id: str, key_id: str) -> str:
        if self.did_web:
            return f"{self.did(organisation_id)}#{key_id}"
        return self.key(key_id)

    def achievement(self, badge_class_id: str) -> str:
        return f"{self.base}/achievements/{badge_class_id}"

    def image(self, badge_class_id: str) -> str:
        return f"{self.base}/achievements/{badge_class_id}/image"

    def status_list(self, organisation_id: str, list_number: int) -> str:
        return f"{self.base}/status/{organisation_id}/{REVOCATION}/{list_number}"


_LOOPBACK_NAMES = {"localhost"}


def check_issuer_url(url: str) -> str:
    """An https:// URL with a host (plain http only on this machine's loopback, for the
    embedded default), no query or fragment; returned without a trailing slash."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.query \
            or parts.fragment or parts.username or parts.password:
        raise ValueError(f"QIJI_ISSUER_URL must be an https:// URL such as "
                         f"https://badges.example.gov.cn, got {url!r}")
    if parts.scheme == "http" and not _loopback(parts.hostname):
        raise ValueError(f"QIJI_ISSUER_URL must use https:// (plain http only on 127.0.0.1 / "
                         f"localhost, for the embedded default), got {url!r}")
    if not re.fullmatch(r"[A-Za-z0-9._~/-]*", parts.path):
        raise ValueError(f"QIJI_ISSUER_URL's path may hold only letters, digits and . _ ~ - /, "
                         f"got {parts.path!r}")
    return url.rstrip("/")


def _loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ---------------------------------------------------------------------- documents


@dataclass(frozen=True)
class StatusEntry:
    """Where an award's revocation bit lies: list `list_number` of its issuer, bit `index`."""
    list_number: int
    index: int


def evidence_id(source: str, reference: str) -> str:
    """A URN for a piece of evidence: `urn:qiji:evidence:<source>:<reference>`, the reference
    percent-encoded (RFC 3986 §2.1, RFC 8141 §2), so an official document number such as
    常钟社〔2025〕1号 is a valid URI. Older manual awards stored "official:<reference>": the
    source is not repeated."""
    reference = reference.removeprefix(f"{source}:")
    return f"urn:qiji:evidence:{quote(source, safe='')}:{quote(reference, safe='')}"


def subject_id(award_id: str, rider_id: str) -> str:
    """The credential subject's id (OB 3.0 §8.2.4 `sub`): an opaque, per-award URN. It names
    no one outside the city; the salted identity hash lets the rider prove it is theirs."""
    return "urn:uuid:" + str(uuid.uuid5(_SUBJECT_NS, award_id + "\n" + rider_id))


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _numeric(at: datetime) -> int:
    return int(at.astimezone(UTC).replace(microsecond=0).timestamp())


def issuer_profile(*, urls: PublicUrls, organisation_id: str, name: str) -> dict[str, Any]:
    """The issuer's Profile (OB 3.0 §B.1.10), served at its id."""
    profile: dict[str, Any] = {
        "@context": OB3_CONTEXT,
        "id": urls.issuer(organisation_id),
        "type": ["Profile"],
        "name": name,
        "url": urls.issuer_page(organisation_id),
    }
    return profile


def did_document(urls: PublicUrls, organisation_id: str, keys: IssuerKeys) -> dict[str, Any]:
    """The issuer's did:web document (served at <base>/issuers/<id>/did.json), for verifiers
    that resolve the issuer as a DID: the same keys as the JWK set."""
    did = urls.did(organisation_id)
    methods = [{"id": f"{did}#{key.key_id}", "type": "JsonWebKey",
                "controller": did, "publicKeyJwk": {**key.members, "alg": key.alg}}
               for key in keys.keys]
    return {"@context": ["https://www.w3.org/ns/did/v1", "https://w3id.org/security/jwk/v1"],
            "id": did, "verificationMethod": methods,
            "assertionMethod": [m["id"] for m in methods],
            "service": [{"id": f"{did}#profile", "type": "LinkedDomains",
                         "serviceEndpoint": urls.issuer_page(organisation_id)}]}


def achievement(*, urls: PublicUrls, badge_class: Any, criteria_narrative: str,
                issuer: dict[str, Any]) -> dict[str, Any]:
    """A badge class as an OB 3.0 Achievement, served at its id."""
    doc: dict[str, Any] = {
        "id": urls.achievement(str(badge_class.id)),
        "type": ["Achievement"],
        "achievementType": "Badge",
        "name": badge_class.name,
        "description": badge_class.description or badge_class.name,
        "criteria": {"narrative": criteria_narrative},
        "creator": {k: issuer[k] for k in ("id", "type", "name")},
    }
    image = image_url(urls, badge_class)
    if image:
        doc["image"] = {"id": image, "type": "Image", "caption": badge_class.name}
    return doc


def image_url(urls: PublicUrls, badge_class: Any) -> str:
    if getattr(badge_class, "image", None):
        return urls.image(str(badge_class.id))
    return badge_class.image_url or ""


def open_badge(*, urls: PublicUrls, award: Any, badge_class: Any, criteria_narrative: str,
               issuer_name: str, status: StatusEntry) -> dict[str, Any]:
    """The award as an OpenBadgeCredential (OB 3.0 §B.1.3). The rider appears only as a
    salted hash of their id: a credential shown outside the city names no one."""
    award_id = str(award.id)
    salt = hashlib.sha256(f"qiji-subject-salt:{award_id}".encode()).hexdigest()[:16]
    identity_hash = "sha256$" + hashlib.sha256((award.rider_id + salt).encode()).hexdigest()
    issuer = issuer_profile(urls=urls, organisation_id=badge_class.issuer_id, name=issuer_name)
    del issuer["@context"]
    status_list = urls.status_list(badge_class.issuer_id, status.list_number)
    credential: dict[str, Any] = {
        "@context": OB3_CONTEXT,
        "id": f"urn:uuid:{award_id}",
        "type": ["VerifiableCredential", "OpenBadgeCredential"],
        "issuer": issuer,
        "validFrom": _iso(award.awarded_at),
        "name": badge_class.name,
        "credentialSubject": {
            "id": subject_id(award_id, award.rider_id),
            "type": ["AchievementSubject"],
            "identifier": [{"type": "IdentityObject", "identityType": "identifier",
                            "hashed": True, "identityHash": identity_hash, "salt": salt}],
            "achievement": achievement(urls=urls, badge_class=badge_class,
                                       criteria_narrative=criteria_narrative, issuer=issuer),
        },
        "evidence": [{"id": evidence_id(e["source"], e["reference"]), "type": ["Evidence"],
                      "name": e["reference"].removeprefix(f"{e['source']}:"),
                      "narrative": e["narrative"]} for e in award.evidence],
        "credentialStatus": {
            "id": f"{status_list}#{status.index}",
            "type": "BitstringStatusListEntry",
            "statusPurpose": REVOCATION,
            "statusListIndex": str(status.index),
            "statusListCredential": status_list,
        },
        "credentialSchema": [OB3_CREDENTIAL_SCHEMA],
    }
    image = image_url(urls, badge_class)
    if image:
        credential["image"] = {"id": image, "type": "Image", "caption": badge_class.name}
    if award.expires_at is not None:
        credential["validUntil"] = _iso(award.expires_at)
    return credential


def jwt_claims(credential: Mapping[str, Any]) -> dict[str, Any]:
    """OB 3.0 §8.2.4: the JWT payload is the credential itself, with `iss`, `jti`, `sub`,
    `nbf` and (when it expires) `exp` mapped from it."""
    claims = dict(credential)
    claims["iss"] = credential["issuer"]["id"] if isinstance(credential["issuer"], dict) \
        else credential["issuer"]
    claims["jti"] = credential["id"]
    subject = credential.get("credentialSubject", {})
    if isinstance(subject, dict) and "id" in subject:
        claims["sub"] = subject["id"]
    claims["nbf"] = _numeric(parse_time(credential["validFrom"]))
    if "validUntil" in credential:
        claims["exp"] = _numeric(parse_time(credential["validUntil"]))
    return claims


def sign(keys: IssuerKeys, urls: PublicUrls, credential: Mapping[str, Any],
         organisation_id: str) -> str:
    """A compact JWS with exactly the JOSE header OB 3.0 §8.2.3 allows: alg, kid, typ "JWT"."""
    key = keys.active
    header = {"alg": key.alg, "kid": urls.key_for(organisation_id, key.key_id), "typ": "JWT"}
    signing_input = b64url(_json(header)) + "." + b64url(_json(jwt_claims(credential)))
    return signing_input + "." + b64url(key.sign(signing_input.encode()))


def status_list_credential(*, urls: PublicUrls, organisation_id: str, list_number: int,
                           revoked: Iterable[int], valid_from: datetime) -> dict[str, Any]:
    """A BitstringStatusListCredential (W3C VC Bitstring Status List v1.0 §2.2): bit i set
    means the award at index i is revoked."""
    bits = bytearray(STATUS_LIST_SIZE // 8)
    for index in revoked:
        bits[index // 8] |= 0x80 >> (index % 8)  # §3.2: index 0 is the left-most bit
    url = urls.status_list(organisation_id, list_number)
    return {
        "@context": [VC2_CONTEXT],
        "id": url,
        "type": ["VerifiableCredential", "BitstringStatusListCredential"],
        "issuer": urls.issuer(organisation_id),
        "validFrom": _iso(valid_from),
        "credentialSubject": {
            "id": f"{url}#list",
            "type": "BitstringStatusList",
            "statusPurpose": REVOCATION,
            # Multibase base64url ("u") of the GZIP-compressed bitstring; mtime 0, so the same
            # list always encodes (and signs) the same. Level 6: level 9 takes 17 times as long
            # for a list with scattered revocations (bench/bench_credentials.py), for 15% less.
            "encodedList": "u" + b64url(gzip.compress(bytes(bits), compresslevel=6,
                                                      mtime=0)),
        },
    }


def decode_status_list(encoded: str) -> bytes:
    if not encoded.startswith("u"):
        raise ValueError("encodedList must be multibase base64url (prefix 'u')")
    return gzip.decompress(b64url_decode(encoded[1:]))


def bit_is_set(bits: bytes, index: int) -> bool:
    return bool(bits[index // 8] & (0x80 >> (index % 8)))


def parse_time(text: str) -> datetime:
    at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if at.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone")
    return at


# ---------------------------------------------------------------------- verification


@dataclass
class Checked:
    """What checking a credential found. `verdict` is VALID, TAMPERED (the signature or the
    claims do not hold), UNKNOWN_KEY (not signed by a key of this issuer), REVOKED, EXPIRED,
    or NOT_YET_VALID; `problems` say why, one line each."""
    verdict: str
    problems: list[str]
    credential: dict[str, Any] | None = None
    header: dict[str, Any] | None = None


class Malformed(ValueError):
    """Not a compact JWS of a JSON credential at all: bad input, not a verdict."""


def parse_jws(jwt: str) -> tuple[dict[str, Any], dict[str, Any], str, str, str]:
    parts = jwt.split(".")
    if len(parts) != 3 or not all(parts[:2]):
        raise Malformed("a compact JWS: three base64url parts, header.payload.signature")
    try:
        header = json.loads(b64url_decode(parts[0]))
        payload = json.loads(b64url_decode(parts[1]))
        b64url_decode(parts[2])
    except (ValueError, UnicodeDecodeError, RecursionError):
        # RecursionError: JSON nested deeper than the parser goes ("[[[[..."), from anyone.
        raise Malformed("the header and payload must be base64url-encoded JSON") from None
    if not isinstance(header, dict) or not isinstance(payload, dict):
        raise Malformed("the header and payload must be JSON objects")
    return header, payload, parts[0], parts[1], parts[2]


def check_signed(jwt: str, keys: IssuerKeys, now: datetime) -> Checked:
    """OB 3.0 §8.2.6-7: the signature under the key the header names, then the JWT claims
    against the credential they were mapped from, then its validity period. Revocation is the
    caller's to add (it needs the log)."""
    header, payload, h64, p64, s64 = parse_jws(jwt)
    kid, alg = header.get("kid"), header.get("alg")
    if not isinstance(kid, str) or not isinstance(alg, str):
        return Checked("UNKNOWN_KEY", ["the header names no key (kid) or no algorithm (alg)"],
                       header=header)
    key = keys.find(kid)
    if key is None:
        return Checked("UNKNOWN_KEY", [f"not signed by a key of this issuer (kid {kid!r})"],
                       header=header)
    if not key.accepts(alg):
        return Checked("TAMPERED", [f"alg {alg!r} is not the algorithm of key {kid!r}"],
                       header=header)
    if not key.verify(b64url_decode(s64), f"{h64}.{p64}".encode()):
        return Checked("TAMPERED", ["the signature does not verify: the credential was "
                                    "changed after it was signed, or signed by someone else"],
                       header=header)
    legacy = "vc" in payload or header.get("typ") == "vc+jwt"
    credential = payload.get("vc", payload) if isinstance(payload.get("vc"), dict) else payload
    problems = [] if legacy else _claim_problems(payload)
    if problems:
        return Checked("TAMPERED", problems, credential, header)
    try:
        valid_from = parse_time(str(credential["validFrom"]))
        valid_until = parse_time(str(credential["validUntil"])) \
            if "validUntil" in credential else None
    except (KeyError, ValueError):
        return Checked("TAMPERED", ["validFrom / validUntil are not date-times"],
                       credential, header)
    if valid_until is not None and now >= valid_until:
        return Checked("EXPIRED", [f"it expired at {_iso(valid_until)}"], credential, header)
    if now < valid_from:
        return Checked("NOT_YET_VALID", [f"it is valid only from {_iso(valid_from)}"],
                       credential, header)
    return Checked("VALID", [], credential, header)


def _claim_problems(payload: Mapping[str, Any]) -> list[str]:
    problems = []
    issuer = payload.get("issuer")
    issuer_id = issuer.get("id") if isinstance(issuer, dict) else issuer
    subject = payload.get("credentialSubject")
    subject_id_ = subject.get("id") if isinstance(subject, dict) else None
    expected = {"iss": issuer_id, "jti": payload.get("id"), "sub": subject_id_}
    for claim, value in expected.items():
        if payload.get(claim) is None or payload.get(claim) != value:
            problems.append(f"the {claim} claim does not match the credential")
    try:
        if payload.get("nbf") != _numeric(parse_time(str(payload.get("validFrom")))):
            problems.append("the nbf claim does not match validFrom")
        if "validUntil" in payload or "exp" in payload:
            if payload.get("exp") != _numeric(parse_time(str(payload.get("validUntil")))):
                problems.append("the exp claim does not match validUntil")
    except ValueError:
        problems.append("validFrom / validUntil are not date-times")
    return problems
