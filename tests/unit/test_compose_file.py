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
