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


def test_keys_reach_the_five_services_only():
    """qiji-keys (master key, audit signing key) only to the five services, qiji-badges-key
    only to badges: the gateway and the relay hold no key."""
    for name, deployment in by("Deployment").items():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        secrets = {e["secretRef"]["name"] for e in container.get("envFrom", [])
                   if "secretRef" in e}
        service = name.removeprefix("qiji-")
        keyed = service in ("identity", "training", "merchants", "badges", "governance")
        assert ("qiji-keys" in secrets) == keyed, name
        assert ("qiji-badges-key" in secrets) == (service == "badges"), name
        assert not [e for e in container.get("env", []) if "KEY" in e["name"]], name
