"""Transport security settings, certificate files, and certificates as principals."""

from __future__ import annotations

import json
import shutil
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from shared.auth import TokenRegistry, add_caller
from shared.config import ConfigError, TlsSettings, load_settings
from shared.errors import Unauthenticated
from shared.grpc import tls
from shared.grpc.channels import open_channel
from shared.tools import cli
from tests.certificates import Authority, new_authority

ORG_1 = "2f0d9c8e-5b1a-4c3d-8e7f-6a5b4c3d2e1f"


@pytest.fixture
def ca(tmp_path: Path) -> Authority:
    return new_authority("unit-ca", tmp_path / "pki")


def files(ca: Authority) -> dict[str, str]:
    server = ca.issue("identity", ips=("127.0.0.1",), server=True)
    return {"QIJI_TLS_CERT_FILE": str(server.cert_file),
            "QIJI_TLS_KEY_FILE": str(server.key_file)}


# ---------------------------------------------------------------------------- settings


def test_nothing_configured_is_plaintext_both_ways() -> None:
    settings = load_settings("identity", {})
    assert settings.tls == TlsSettings()
    assert not settings.tls.serves_tls and not settings.tls.dials_tls


def test_a_service_prefixed_setting_wins_over_the_qiji_one() -> None:
    tls = load_settings("training", {
        "QIJI_TLS_CERT_FILE": "/etc/qiji/any.crt", "QIJI_TLS_KEY_FILE": "/etc/qiji/any.key",
        "TRAINING_TLS_CERT_FILE": "/etc/qiji/training.crt",
        "TRAINING_TLS_KEY_FILE": "/etc/qiji/training.key",
        "QIJI_TLS_CLIENT_CA_FILE": "/etc/qiji/clients.crt",
        "QIJI_TLS_CA_FILE": "/etc/qiji/ca.crt"}).tls
    assert (tls.cert_file, tls.key_file) == (Path("/etc/qiji/training.crt"),
                                             Path("/etc/qiji/training.key"))
    assert tls.requires_client_certificates and tls.dials_tls


@pytest.mark.parametrize(("env", "says"), [
    ({"QIJI_TLS_CERT_FILE": "s.crt"}, "TLS_CERT_FILE and TLS_KEY_FILE go together"),
    ({"QIJI_TLS_KEY_FILE": "s.key"}, "TLS_CERT_FILE and TLS_KEY_FILE go together"),
    ({"QIJI_TLS_CLIENT_CA_FILE": "c.crt"}, "TLS_CLIENT_CA_FILE needs TLS_CERT_FILE"),
    ({"QIJI_TLS_CA_FILE": "ca.crt", "QIJI_TLS_CLIENT_CERT_FILE": "c.crt"},
     "TLS_CLIENT_CERT_FILE and TLS_CLIENT_KEY_FILE go together"),
    ({"QIJI_TLS_CLIENT_CERT_FILE": "c.crt", "QIJI_TLS_CLIENT_KEY_FILE": "c.key"},
     "TLS_CLIENT_CERT_FILE needs TLS_CA_FILE"),
])
def test_settings_that_cannot_work_are_refused(env: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        load_settings("identity", env)


def test_unreadable_or_wrong_files_are_named_in_the_error(ca: Authority, tmp_path: Path) -> None:
    env = files(ca)
    other = ca.issue("someone-else")
    not_pem = tmp_path / "notes.txt"
    not_pem.write_text("hello")
    for change, says in [
            ({"QIJI_TLS_KEY_FILE": str(tmp_path / "missing.key")},
             "TLS_KEY_FILE .* cannot be read"),
            ({"QIJI_TLS_CERT_FILE": str(not_pem)}, "TLS_CERT_FILE .* not a PEM file"),
            ({"QIJI_TLS_KEY_FILE": str(other.key_file)}, "is not the key of the certificate"),
            ({"QIJI_TLS_CLIENT_CA_FILE": str(other.key_file)},
             "TLS_CLIENT_CA_FILE .* no readable certificate")]:
        settings = load_settings("identity", {**env, **change})
        with pytest.raises(ConfigError, match=says):
            tls.server_credentials(settings.tls)
    with pytest.raises(ConfigError, match=r"TLS_CA_FILE .* cannot be read"):
        open_channel("127.0.0.1:1", TlsSettings(ca_file=tmp_path / "nowhere.crt"))


# ---------------------------------------------------------------- certificates as principals


def test_a_registered_certificate_name_is_its_principal_and_tokens_stay_hashed(
        tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    token = add_caller(path, "platform-system", ["platform"], ORG_1,
                       certificate_subject="platform.qiji.test")
    registry = TokenRegistry(path)
    actor = registry.authenticate_certificate({"platform-system", "platform.qiji.test"})
    assert (actor.principal, actor.roles, actor.organisation_id) == (
        "platform-system", frozenset({"platform"}), ORG_1)
    assert registry.authenticate(token) == actor
    assert token not in path.read_text()
    with pytest.raises(Unauthenticated, match="registered for no caller"):
        registry.authenticate_certificate({"stranger.qiji.test"})


def test_a_certificate_subject_belongs_to_one_principal_only(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    add_caller(path, "platform-system", ["platform"], ORG_1,
               certificate_subject="shared.qiji.test")
    with pytest.raises(ValueError, match="already registered for platform-system"):
        add_caller(path, "auditor-system", ["auditor"], certificate_subject="shared.qiji.test")
    # A hand-edited file that gives one name to two principals: it stands for neither.
    data = json.loads(path.read_text())
    data["callers"].append({**data["callers"][0], "principal": "copy", "token_sha256": "x"})
    path.write_text(json.dumps(data))
    with pytest.raises(Unauthenticated):
        TokenRegistry(path).authenticate_certificate({"shared.qiji.test"})


def test_a_certificate_naming_two_registered_callers_stands_for_neither(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    add_caller(path, "a", ["platform"], ORG_1, certificate_subject="a.qiji.test")
    add_caller(path, "b", ["auditor"], certificate_subject="b.qiji.test")
    with pytest.raises(Unauthenticated, match="several registered callers"):
        TokenRegistry(path).authenticate_certificate({"a.qiji.test", "b.qiji.test"})


def test_qiji_token_registers_a_certificate_subject(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "tokens.json"
    assert cli.main(["token", "gateway-host", "--role", "service", "--tokens-file", str(path),
                     "--certificate-subject", "gateway.qiji.test"]) == 0
    token = capsys.readouterr().out.strip()
    entry = json.loads(path.read_text())["callers"][0]
    assert entry["certificate_subject"] == "gateway.qiji.test" and token not in path.read_text()
    assert cli.main(["token", "other", "--role", "auditor", "--tokens-file", str(path),
                     "--certificate-subject", "gateway.qiji.test"]) == 2
    assert "already registered" in capsys.readouterr().err


# ---------------------------------------------------------------- a renewed certificate


def _check(address: str, roots: Authority) -> int:
    with open_channel(address, TlsSettings(ca_file=roots.cert_file)) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                         timeout=5).status


def test_a_renewed_certificate_is_served_without_a_restart(ca: Authority, tmp_path: Path
                                                           ) -> None:
    settings = load_settings("identity", {**files(ca), "IDENTITY_GRPC_PORT": "0"})
    server = grpc.server(futures.ThreadPoolExecutor(2))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    address = f"127.0.0.1:{tls.add_port(server, settings)}"
    server.start()
    try:
        assert _check(address, ca) == health_pb2.HealthCheckResponse.SERVING
        # Renewed by another authority, so that a client can tell which one it was shown.
        renewing_ca = new_authority("renewing-ca", tmp_path / "renewed")
        renewed = renewing_ca.issue("identity", ips=("127.0.0.1",), server=True)
        shutil.copy(renewed.key_file, settings.tls.key_file)
        shutil.copy(renewed.cert_file, settings.tls.cert_file)
        assert _check(address, renewing_ca) == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError):
            _check(address, ca)
        # A file caught half-written keeps the last good certificate.
        settings.tls.cert_file.write_text("-----BEGIN CERTIFICATE-----\nhalf")
        assert _check(address, renewing_ca) == health_pb2.HealthCheckResponse.SERVING
    finally:
        server.stop(None)
