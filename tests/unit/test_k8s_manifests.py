"""deploy/k8s/qiji.yaml cannot be applied here (no cluster): check it against Kubernetes' own
schemas (kubernetes-validate ships them) and check what scale-out relies on."""

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from shared.cli import SERVICES
from shared.config import DEFAULT_PORTS
from shared.grpc.server import LIVENESS

ROOT = Path(__file__).resolve().parents[2]
DOCS = list(yaml.safe_load_all((ROOT / "deploy" / "k8s" / "qiji.yaml").read_text()))
KUBERNETES = "1.30.0"


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_every_resource_is_valid_for_kubernetes(doc):
    kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def by(kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in DOCS if d["kind"] == kind}


def test_every_service_runs_replicated_behind_a_service_with_grpc_readiness():
    deployments, services = by("Deployment"), by("Service")
    for name in SERVICES:
        deployment = deployments[f"qiji-{name}"]
        assert deployment["spec"]["replicas"] >= 2
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["command"] == ["python", "-m", f"services.{name}"]
        assert container["readinessProbe"]["grpc"]["port"] == DEFAULT_PORTS[name]
        assert container["securityContext"]["runAsNonRoot"] is True
        ports = {p["name"]: p["port"] for p in services[f"qiji-{name}"]["spec"]["ports"]}
        assert ports["grpc"] == DEFAULT_PORTS[name]


def test_liveness_survives_a_database_outage_and_readiness_does_not():
    """Readiness asks the whole server's health (NOT_SERVING while the store is away: out of
    the load balancer); liveness asks the name that stays SERVING while the process serves,
    so an outage of the database does not restart every replica."""
    deployments = by("Deployment")
    for name in SERVICES:
        container = deployments[f"qiji-{name}"]["spec"]["template"]["spec"]["containers"][0]
        assert container["readinessProbe"]["grpc"].get("service", "") == ""
        assert container["livenessProbe"]["grpc"] == {"port": DEFAULT_PORTS[name],
                                                      "service": LIVENESS}


def test_every_upstream_address_names_a_service_that_exists():
    services = by("Service")
    for deployment in by("Deployment").values():
        for env in deployment["spec"]["template"]["spec"]["containers"][0]["env"]:
            if env["name"].endswith("_ADDRESS"):
                host, port = env["value"].split(":")
                target = services[host]
                assert int(port) in [p["port"] for p in target["spec"]["ports"]], env


def test_the_public_credentials_face_is_replicated_probed_over_http_and_alone_exposed():
    deployment = by("Deployment")["qiji-credentials"]
    assert deployment["spec"]["replicas"] >= 2
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python", "-m", "services.credentials"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # A reader: no store password, no master key, no signing key in its environment.
    assert "envFrom" in container and all(
        "secretRef" not in source for source in container["envFrom"])
    config = by("ConfigMap")["qiji-config"]["data"]
    ingress = by("Ingress")["qiji-credentials"]
    assert ingress["spec"]["rules"][0]["host"] == config["QIJI_ISSUER_URL"].removeprefix(
        "https://")
    assert ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] == \
        "qiji-credentials"
    assert len(by("Ingress")) == 1
