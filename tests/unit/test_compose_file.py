"""docker-compose.yml cannot run here (no Docker engine): parse it, check what users rely on."""

from pathlib import Path

import yaml

from shared.cli import SERVICES

ROOT = Path(__file__).resolve().parents[2]


def test_every_service_in_qiji_run_is_in_the_compose_file_with_a_health_check():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "rabbitmq"} <= set(services)
    for name in SERVICES:
        service = services[name]
        assert service["command"] == ["python", "-m", f"services.{name}"]
        assert "healthcheck" in service
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert service["environment"]["QIJI_PERSISTENCE"] == "postgres"
    assert set(compose["volumes"]) >= {"pgdata"}


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_each_health_check_probes_its_own_port_with_the_tls_aware_probe():
    services = _compose()["services"]
    for name in SERVICES:
        port = services[name]["environment"][f"{name.upper()}_GRPC_PORT"]
        assert services[name]["healthcheck"]["test"] == [
            "CMD", "python", "-m", "shared.grpc.health_probe", f"127.0.0.1:{port}"]
        assert services[name]["ports"] == [f"{port}:{port}"]
    relay = services["relay"]
    metrics_port = relay["environment"]["RELAY_METRICS_PORT"]
    assert f"127.0.0.1:{metrics_port}/metrics" in " ".join(relay["healthcheck"]["test"])
    assert relay["depends_on"]["rabbitmq"]["condition"] == "service_healthy"


def test_every_upstream_address_names_a_service_on_its_port():
    services = _compose()["services"]
    grpc_ports = {name: services[name]["environment"][f"{name.upper()}_GRPC_PORT"]
                  for name in SERVICES}
    wired = 0
    for name, service in services.items():
        for key, value in service.get("environment", {}).items():
            if key.startswith(f"{name.upper()}_") and key.endswith("_ADDRESS"):
                upstream = key[len(name) + 1: -len("_ADDRESS")].lower()
                assert value == f"{upstream}:{grpc_ports[upstream]}", key
                wired += 1
    assert wired >= 10  # followers, the gateway and the relay all find their upstreams


def test_one_image_from_one_dockerfile_run_as_a_non_root_user():
    services = _compose()["services"]
    qiji = [services[name] for name in [*SERVICES, "relay"]]
    assert sum("build" in s for s in qiji) == 1
    assert {s["image"] for s in qiji} == {"qiji:latest"}
    users = [line.split()[1] for line in (ROOT / "Dockerfile").read_text().splitlines()
             if line.startswith("USER ")]
    assert users and users[-1] not in {"root", "0"}


def test_the_tokens_file_is_mounted_by_its_directory_so_rotations_reach_the_services():
    compose = _compose()
    tokens_file = Path(compose["x-qiji-env"]["QIJI_TOKENS_FILE"])
    for name in SERVICES:
        mounts = [v.split(":") for v in compose["services"][name].get("volumes", [])]
        assert any(Path(target) == tokens_file.parent for _source, target, *_ in mounts), name


def test_keys_reach_the_five_services_only():
    """The gateway and the relay face outside parties and hold no key (the services check
    every event's MAC for them); every service holds the master and audit signing keys."""
    services = _compose()["services"]
    for name in ("platform", "relay"):
        assert not [k for k in services[name]["environment"] if "KEY" in k], name
    for name in ("identity", "training", "merchants", "badges", "governance"):
        env = services[name]["environment"]
        assert {"QIJI_MASTER_KEY", "QIJI_AUDIT_SIGNING_KEY"} <= set(env), name
        assert ("BADGES_SIGNING_KEY" in env) == (name == "badges")
