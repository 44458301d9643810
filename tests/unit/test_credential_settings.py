"""The issuer's keys and address come from configuration: in production (PostgreSQL) nothing is
made up at start, and an address outsiders cannot trust stops badges before it signs."""

from __future__ import annotations

import pytest

from services.badges.application import load_issuer_keys, public_urls
from services.badges.credentials import PublicUrls
from shared.config import ConfigError, load_settings
from tests.conftest import badges_key_env


def production(tmp_path, **env):
    return load_settings("badges", {"QIJI_PERSISTENCE": "postgres",
                                    "QIJI_DATA_DIR": str(tmp_path), **env})


def test_production_never_makes_a_key_of_its_own(tmp_path):
    with pytest.raises(ConfigError, match="RSA"):
        load_issuer_keys(production(tmp_path))
    assert list(tmp_path.iterdir()) == []
    keys = load_issuer_keys(production(tmp_path, **badges_key_env()))
    assert keys.active.alg == "RS256" and {k.alg for k in keys.keys} == {"RS256", "Ed25519"}
    chosen = load_issuer_keys(production(tmp_path, **badges_key_env(alg="Ed25519")))
    assert chosen.active.alg == "Ed25519"
    with pytest.raises(ConfigError, match="BADGES_SIGNING_ALG"):
        load_issuer_keys(production(tmp_path, **badges_key_env(alg="HS256")))


def test_the_embedded_default_makes_its_keys_once_and_keeps_them(tmp_path):
    settings = load_settings("badges", {"QIJI_DATA_DIR": str(tmp_path)})
    first, again = load_issuer_keys(settings), load_issuer_keys(settings)
    assert [k.key_id for k in first.keys] == [k.key_id for k in again.keys]
    assert (tmp_path / "badges-signing-rsa.pem").stat().st_mode & 0o077 == 0


@pytest.mark.parametrize("url", ["", "http://badges.changzhou.gov.cn", "ftp://x.example",
                                 "https://x.example/?q=1", "https://user:pw@x.example",
                                 "https://x.example/证书"])
def test_an_issuer_address_outsiders_cannot_trust_stops_badges(tmp_path, url):
    with pytest.raises(ConfigError, match="QIJI_ISSUER_URL"):
        public_urls(production(tmp_path, QIJI_ISSUER_URL=url))


def test_issuer_ids_are_https_urls_or_did_web(tmp_path):
    urls = public_urls(production(tmp_path, QIJI_ISSUER_URL="https://city.example/badges/"))
    assert urls.issuer("o1") == "https://city.example/badges/issuers/o1"
    did = public_urls(production(tmp_path, QIJI_ISSUER_URL="https://city.example/badges",
                                 QIJI_ISSUER_ID_FORM="did:web"))
    assert did.issuer("o1") == "did:web:city.example:badges:issuers:o1"
    assert PublicUrls("http://127.0.0.1:8080").did("o1") == "did:web:127.0.0.1%3A8080:issuers:o1"
