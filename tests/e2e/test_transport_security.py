"""Transport security over real processes: identity, training and the platform gateway serve
TLS only and require client certificates from the test's own CA; they talk to each other over
mTLS; a client certificate registered for a principal stands for it without a token; and
everything else (plaintext, a wrong CA either way, no certificate, an unregistered one) is
refused."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from qiji.audit.v1 import audit_service_pb2 as apb
from qiji.audit.v1 import audit_service_pb2_grpc as apb_grpc
from qiji.identity.v1 import identity_service_pb2 as ipb
from qiji.platform.v1 import platform_feed_service_pb2 as ppb
from qiji.platform.v1 import platform_feed_service_pb2_grpc as ppb_grpc
from qiji.training.v1 import training_service_pb2 as tpb

from shared.auth import add_caller
from shared.config import TlsSettings
from shared.grpc import health_probe
from shared.grpc.channels import open_channel
from shared.tools import cli
from tests.certificates import Authority, Issued, new_authority
from tests.e2e.client import (
    RPC_TIMEOUT,
    Client,
    bearer,
    call_error,
    create_city,
    new_request_id,
    phone_number,
    unique,
)
from tests.e2e.conftest import (
    REPO,
    ServiceProcess,
    eventually,
    free_port,
    serving,
    start_beside,
    start_service,
)

pytestmark = pytest.mark.e2e

SMALL_POOL = {"QIJI_POSTGRES_POOL_SIZE": "2"}
# The principal a certificate stands for, and the name in its certificate that says so.
CERT_PRINCIPAL = "tls-e2e-platform-system"
CERT_SUBJECT = "platform-system.qiji.test"
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


@dataclass(frozen=True)
class Pki:
    ca: Authority
    wrong_ca: Authority
    server: Issued  # every process's: SAN 127.0.0.1 and localhost
    services: Issued  # what Qiji's own processes present to each other (registered nowhere)
    harness: Issued  # the test's own channels, which carry role tokens
    registered: Issued  # CERT_SUBJECT: registered for CERT_PRINCIPAL
    stranger: Issued  # signed by the right CA, registered for nobody
    impostor: Issued  # CERT_SUBJECT again, but signed by the wrong CA

    def env(self) -> dict[str, str]:
        """A process serving TLS with mTLS required, and dialling its upstreams the same way."""
        return {"QIJI_TLS_CERT_FILE": str(self.server.cert_file),
                "QIJI_TLS_KEY_FILE": str(self.server.key_file),
                "QIJI_TLS_CLIENT_CA_FILE": str(self.ca.cert_file),
                "QIJI_TLS_CA_FILE": str(self.ca.cert_file),
                "QIJI_TLS_CLIENT_CERT_FILE": str(self.services.cert_file),
                "QIJI_TLS_CLIENT_KEY_FILE": str(self.services.key_file)}

    def dialling(self, client: Issued | None, roots: Authority | None = None) -> TlsSettings:
        return TlsSettings(ca_file=(roots or self.ca).cert_file,
                           client_cert_file=client.cert_file if client else None,
                           client_key_file=client.key_file if client else None)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca, wrong = new_authority("qiji-test-ca", folder), new_authority("wrong-ca", folder)
    return Pki(ca=ca, wrong_ca=wrong,
               server=ca.issue("qiji-server", dns=("localhost",), ips=("127.0.0.1",),
                               server=True),
               services=ca.issue("qiji-services"), harness=ca.issue("e2e-harness"),
               registered=ca.issue("platform-system", dns=(CERT_SUBJECT,)),
               stranger=ca.issue("stranger", dns=("stranger.qiji.test",)),
               impostor=wrong.issue("platform-system", dns=(CERT_SUBJECT,)))


@pytest.fixture(scope="module")
def identity(postgres_db: str, pki: Pki, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[ServiceProcess]:
    server = start_service("identity", postgres_db, tmp_path_factory.mktemp("tls-identity"),
                           extra_env={**SMALL_POOL, **pki.env()},
                           client_tls=pki.dialling(pki.harness))
    yield from serving(server)


@pytest.fixture(scope="module")
def training(identity: ServiceProcess, pki: Pki, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[ServiceProcess]:
    yield from serving(start_beside("training", identity, tmp_path_factory.mktemp("tls-training"),
                                    **SMALL_POOL, **pki.env()))


@pytest.fixture(scope="module")
def city(identity: ServiceProcess) -> SimpleNamespace:
    """The city, and its platform company's system registered by its certificate (a platform
    caller acts for its own company)."""
    city = SimpleNamespace(**create_city(identity.client("city_admin")))
    add_caller(identity.tokens_file, CERT_PRINCIPAL, ["platform"], city.platform,
               certificate_subject=CERT_SUBJECT)
    return city


def dial(server: ServiceProcess, tls: TlsSettings | None, token: str | None = None) -> Client:
    return Client(open_channel(server.address, tls), token, server.service)


def health(channel: grpc.Channel) -> int:
    with channel:
        return health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5).status


def refused(channel: grpc.Channel) -> grpc.StatusCode:
    """The code of a connection the server (or the client) refused at the handshake."""
    try:
        health(channel)
    except grpc.RpcError as error:
        return error.code()
    raise AssertionError("the handshake succeeded but should have been refused")


def register_request(city: SimpleNamespace) -> ipb.RegisterRiderRequest:
    return ipb.RegisterRiderRequest(
        request_id=new_request_id(), platform_id=city.platform,
        platform_rider_id=unique("rider"), name="王五", phone=phone_number(),
        home_street_id=city.street, station_id=city.station)


# ---------------------------------------------------------------------------- who connects


def test_a_plaintext_client_is_refused(identity: ServiceProcess) -> None:
    assert refused(grpc.insecure_channel(identity.address)) is UNAVAILABLE


def test_a_client_that_trusts_another_ca_refuses_the_server(identity: ServiceProcess,
                                                            pki: Pki) -> None:
    tls = pki.dialling(pki.harness, roots=pki.wrong_ca)
    assert refused(open_channel(identity.address, tls)) is UNAVAILABLE


def test_a_client_certificate_from_another_ca_is_refused(identity: ServiceProcess,
                                                        pki: Pki) -> None:
    assert refused(open_channel(identity.address, pki.dialling(pki.impostor))) is UNAVAILABLE


def test_a_client_without_a_certificate_is_refused(identity: ServiceProcess, pki: Pki) -> None:
    assert refused(open_channel(identity.address, pki.dialling(None))) is UNAVAILABLE


def test_health_answers_any_client_with_a_certificate_of_the_ca(identity: ServiceProcess,
                                                                pki: Pki) -> None:
    channel = open_channel(identity.address, pki.dialling(pki.stranger))
    assert health(channel) == health_pb2.HealthCheckResponse.SERVING


# ---------------------------------------------------------------------------- who is calling


def test_a_registered_certificate_without_a_token_is_its_principal(
        identity: ServiceProcess, pki: Pki, city: SimpleNamespace) -> None:
    system = dial(identity, pki.dialling(pki.registered))
    rider = system.RegisterRider(register_request(city)).rider.rider_id
    entries = apb_grpc.AuditServiceStub(identity.channel).GetHistory(
        apb.GetHistoryRequest(aggregate_id=rider), metadata=bearer(identity.tokens["auditor"]),
        timeout=RPC_TIMEOUT).entries
    assert [(e.event_type, e.principal) for e in entries] == [
        ("Rider.Registered", CERT_PRINCIPAL)]


def test_a_registered_certificate_gets_only_its_principals_roles_and_organisation(
        identity: ServiceProcess, pki: Pki, city: SimpleNamespace) -> None:
    system = dial(identity, pki.dialling(pki.registered))
    denied = call_error(lambda: system.CreateOrganisation(ipb.CreateOrganisationRequest(
        request_id=new_request_id(), kind=ipb.ORGANISATION_KIND_CITY, name="常州市")))
    assert (denied.code, denied.reason) == (grpc.StatusCode.PERMISSION_DENIED,
                                            "ROLE_NOT_ALLOWED")
    assert denied.metadata.get("principal") == CERT_PRINCIPAL
    elsewhere = register_request(city)
    elsewhere.platform_id = str(uuid.uuid4())
    denied = call_error(lambda: system.RegisterRider(elsewhere))
    assert (denied.code, denied.reason) == (grpc.StatusCode.PERMISSION_DENIED, "OUT_OF_SCOPE")
    assert denied.metadata.get("principal") == CERT_PRINCIPAL


def test_an_unregistered_certificate_without_a_token_is_unauthenticated(
        identity: ServiceProcess, pki: Pki) -> None:
    stranger = dial(identity, pki.dialling(pki.stranger))
    details = call_error(lambda: stranger.ListOrganisations(ipb.ListOrganisationsRequest()))
    assert details.code is grpc.StatusCode.UNAUTHENTICATED
    assert "stranger.qiji.test" in details.message


def test_a_token_over_tls_still_works_and_wins_over_the_certificate(
        identity: ServiceProcess, pki: Pki, city: SimpleNamespace) -> None:
    # The registered certificate's principal is a platform; the token is the auditor's.
    auditor = dial(identity, pki.dialling(pki.registered), identity.tokens["auditor"])
    assert auditor.ListOrganisations(ipb.ListOrganisationsRequest()).organisations
    denied = call_error(lambda: auditor.RegisterRider(ipb.RegisterRiderRequest()))
    assert (denied.code, denied.metadata.get("principal")) == (
        grpc.StatusCode.PERMISSION_DENIED, "e2e-auditor")


def test_a_certificate_stops_standing_for_its_principal_once_unregistered(
        identity: ServiceProcess, pki: Pki, city: SimpleNamespace) -> None:
    principal, subject = f"tls-e2e-{uuid.uuid4().hex[:6]}", "stranger.qiji.test"
    add_caller(identity.tokens_file, principal, ["auditor"], certificate_subject=subject)
    stranger = dial(identity, pki.dialling(pki.stranger))
    # The auditor it stands for reads the city this module made (not whatever the tests before
    # it happened to make: run alone, or first, there were none).
    listed = stranger.ListOrganisations(ipb.ListOrganisationsRequest()).organisations
    assert city.city in {o.organisation_id for o in listed}
    add_caller(identity.tokens_file, principal, ["auditor"])  # the whole entry, no subject
    details = call_error(lambda: stranger.ListOrganisations(ipb.ListOrganisationsRequest()))
    assert details.code is grpc.StatusCode.UNAUTHENTICATED


# ---------------------------------------------------------------------------- Qiji's own clients


def test_a_follower_reacts_across_mtls(identity: ServiceProcess, training: ServiceProcess,
                                       city: SimpleNamespace) -> None:
    rider = identity.client("platform").RegisterRider(register_request(city)).rider.rider_id
    auditor = training.client("auditor")

    def known() -> bool:
        try:
            return auditor.GetTranscript(tpb.GetTranscriptRequest(rider_id=rider)) is not None
        except grpc.RpcError as error:
            assert error.code() is grpc.StatusCode.NOT_FOUND, error
            return False
    eventually(known, "training learns of the rider identity registered, over mTLS")


def test_the_platform_gateway_reads_the_services_across_mtls(
        identity: ServiceProcess, training: ServiceProcess, pki: Pki,
        city: SimpleNamespace, tmp_path: Path) -> None:
    nowhere = {f"PLATFORM_{s.upper()}_ADDRESS": f"127.0.0.1:{free_port()}"
               for s in ("merchants", "badges", "governance")}
    gateway = start_service(
        "platform", identity.db, tmp_path, tokens_file=identity.tokens_file,
        tokens=identity.tokens, client_tls=identity.client_tls,
        extra_env={**SMALL_POOL, **pki.env(), **nowhere,
                   "PLATFORM_IDENTITY_ADDRESS": identity.address,
                   "PLATFORM_TRAINING_ADDRESS": training.address,
                   "QIJI_SERVICE_TOKEN": identity.tokens["service"]})
    try:
        rider = identity.client("platform").RegisterRider(register_request(city)).rider.rider_id
        consumer = add_caller(identity.tokens_file, f"tls-feed-{uuid.uuid4().hex[:6]}",
                              ["platform"], organisation_id=city.platform)
        feed = ppb_grpc.PlatformFeedServiceStub(gateway.channel)

        def registered() -> bool:
            cursor = ""
            while True:
                page = feed.ReadEvents(ppb.ReadEventsRequest(
                    cursor=cursor, types=["qiji.identity.v1.RiderRegistered"]),
                    metadata=bearer(consumer), timeout=RPC_TIMEOUT)
                if any(e.event.attributes["subject"].ce_string == rider for e in page.events):
                    return True
                if page.caught_up:
                    return False
                cursor = page.next_cursor
        eventually(registered, "the gateway serves identity's event, read over mTLS")
    finally:
        gateway.stop()


def test_the_qiji_command_and_health_probe_work_against_a_tls_port(
        identity: ServiceProcess, pki: Pki, city: SimpleNamespace,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    rider = identity.client("platform").RegisterRider(register_request(city)).rider.rider_id
    monkeypatch.setenv("QIJI_TLS_CA_FILE", str(pki.ca.cert_file))
    monkeypatch.setenv("QIJI_TLS_CLIENT_CERT_FILE", str(pki.harness.cert_file))
    monkeypatch.setenv("QIJI_TLS_CLIENT_KEY_FILE", str(pki.harness.key_file))
    assert cli.main(["audit", "--token", identity.tokens["auditor"], "history", "identity",
                     rider, "--address", f"identity=127.0.0.1:{identity.port}"]) == 0
    assert f"e2e-platform-{city.platform[:8]}" in capsys.readouterr().out
    assert health_probe.main([identity.address]) == 0
    assert "SERVING" in capsys.readouterr().out
    monkeypatch.delenv("QIJI_TLS_CA_FILE")
    monkeypatch.delenv("QIJI_TLS_CLIENT_CERT_FILE")
    monkeypatch.delenv("QIJI_TLS_CLIENT_KEY_FILE")
    assert health_probe.main([identity.address, "--timeout", "1"]) == 1  # plaintext: refused


# ---------------------------------------------------------------------------- misconfiguration


@pytest.mark.parametrize(("broken", "says"), [
    ({"QIJI_TLS_KEY_FILE": ""}, "TLS_CERT_FILE and TLS_KEY_FILE go together"),
    ({"QIJI_TLS_KEY_FILE": "/nonexistent/server.key"}, "cannot be read"),
])
def test_a_misconfigured_port_stops_the_process_with_one_clear_line(
        pki: Pki, tmp_path: Path, broken: dict[str, str], says: str) -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{REPO}:{REPO / 'build' / 'gen'}",
           "QIJI_DATA_DIR": str(tmp_path), "QIJI_GRPC_PORT": str(free_port()),
           "QIJI_LOG_FORMAT": "json", **pki.env(), **broken}
    done = subprocess.run([sys.executable, "-m", "services.identity"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert [(line["event"], says in line["error"]) for line in lines
            if line["level"] == "error"] == [("service.misconfigured", True)]
