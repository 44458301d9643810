"""docker-compose.yml cannot run here (no Docker engine): parse it, check what users rely on."""

import re
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import yaml

from shared.config import holds, secret_setting
from shared.tools.cli import SERVICES
from tests.unit.monitoring_files import (
    ALERT_RULES,
    DASHBOARD,
    JOB,
    MONITORING,
    PROCESSES,
    flag,
    promtool,
    yaml_file,
)

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
    every event's MAC for them); every service holds the master and audit signing keys; the
    figures the master key alone (they check each event's MAC, and sign nothing)."""
    services = _compose()["services"]
    for name in ("platform", "relay"):
        assert not [k for k in services[name]["environment"] if "KEY" in k], name
    assert [k for k in services["statistics"]["environment"] if "KEY" in k] == [
        "QIJI_MASTER_KEY"]
    for name in ("identity", "training", "merchants", "badges", "governance"):
        env = services[name]["environment"]
        assert {"QIJI_MASTER_KEY", "QIJI_AUDIT_SIGNING_KEY"} <= set(env), name
        assert ("BADGES_SIGNING_KEY" in env) == (name == "badges")


def test_each_process_is_given_only_the_secrets_it_uses():
    """The internet-facing face holds only its public_reader token; the gateway only the
    service token; the relay the store's password, the service token and the broker's URI;
    and no process a secret SECRET_SETTINGS does not give it."""
    services = _compose()["services"]

    def secrets(name: str) -> set[str]:
        return {k for k in services[name]["environment"] if secret_setting(k)}
    assert secrets("credentials") == {"QIJI_PUBLIC_READER_TOKEN"}
    assert secrets("platform") == {"QIJI_SERVICE_TOKEN"}
    assert secrets("relay") == {"QIJI_POSTGRES_PASSWORD", "QIJI_SERVICE_TOKEN", "RELAY_AMQP_URI"}
    assert secrets("statistics") == {"QIJI_POSTGRES_PASSWORD", "QIJI_SERVICE_TOKEN",
                                     "QIJI_MASTER_KEY"}
    for name in [*SERVICES, "relay", "credentials"]:
        assert all(holds(name, k) for k in secrets(name)), name
    assert "QIJI_POSTGRES_PASSWORD" in secrets("identity")


def host_path(service: dict, container_path: str) -> Path:
    """The file or folder of this repository that a container sees at `container_path`,
    through the deepest of its bind mounts that holds the path."""
    wanted = PurePosixPath(container_path)
    mounts = [(source, PurePosixPath(target)) for source, target, *_ in
              (v.split(":") for v in service.get("volumes", [])) if source.startswith(".")]
    holding = [(s, t) for s, t in mounts if t == wanted or t in wanted.parents]
    assert holding, f"nothing is mounted at {container_path}"
    source, target = max(holding, key=lambda m: len(m[1].parts))
    return (ROOT / source / wanted.relative_to(target)).resolve()


def prometheus_config() -> tuple[dict, PurePosixPath, Path]:
    """Prometheus's service, the configuration file it is told to read and that file here."""
    prometheus = _compose()["services"]["prometheus"]
    config = PurePosixPath(flag(prometheus["command"], "config.file"))
    return prometheus, config, host_path(prometheus, str(config))


def test_prometheus_scrapes_every_qiji_process_on_its_metrics_port():
    services = _compose()["services"]
    served = {(f"{name}:{services[name]['environment'][f'{name.upper()}_METRICS_PORT']}", name)
              for name in PROCESSES}
    _, _, config_file = prometheus_config()
    jobs = yaml_file(config_file)["scrape_configs"]
    # The rules and the dashboard select this job, and name a process by its `process` label.
    assert [job["job_name"] for job in jobs] == [JOB]
    scraped = {(target, static["labels"]["process"])
               for static in jobs[0]["static_configs"] for target in static["targets"]}
    assert scraped == served


def test_prometheus_evaluates_the_alert_rules_that_promtool_checks():
    prometheus, config, config_file = prometheus_config()
    assert config_file == MONITORING / "prometheus-compose.yml"
    rule_files = yaml_file(config_file)["rule_files"]
    # Relative names are read beside the configuration file, inside the container.
    assert [host_path(prometheus, str(config.parent / name)) for name in rule_files] == [
        ALERT_RULES]
    promtool("check", "config", config_file.name)  # it parses, and so do the rules it names
    assert "127.0.0.1:9090:9090" in prometheus["ports"]  # no one else reaches the unguarded UI


def test_grafana_is_provisioned_with_prometheus_as_its_data_source_and_the_dashboard():
    services = _compose()["services"]
    grafana = services["grafana"]
    env = grafana["environment"]
    sources = host_path(grafana, "/etc/grafana/provisioning/datasources/qiji.yml")
    assert sources == MONITORING / "grafana-datasources.yml"
    [source] = yaml_file(sources)["datasources"]
    assert source["type"] == "prometheus" and source["isDefault"] is True
    assert source["url"] == "${QIJI_PROMETHEUS_URL}"
    # The compose service, on the port Prometheus listens on when not told otherwise.
    url = urlsplit(env["QIJI_PROMETHEUS_URL"])
    assert (url.hostname, url.port) == ("prometheus", 9090)
    assert not any(a.startswith("--web.listen-address") for a in services["prometheus"]["command"])
    providers = host_path(grafana, "/etc/grafana/provisioning/dashboards/qiji.yml")
    assert providers == MONITORING / "grafana-dashboards.yml"
    [provider] = yaml_file(providers)["providers"]
    folder = host_path(grafana, provider["options"]["path"])
    # Grafana loads every JSON file there as a dashboard: only the one the tests check.
    assert sorted(folder.rglob("*.json")) == [DASHBOARD]
    assert host_path(grafana, env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]) == DASHBOARD
    assert env["GF_SECURITY_ADMIN_PASSWORD"].startswith("${QIJI_GRAFANA_ADMIN_PASSWORD:?")
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert "127.0.0.1:3000:3000" in grafana["ports"]


def test_the_monitoring_images_are_pinned_to_a_release():
    services = _compose()["services"]
    for name in ("prometheus", "grafana"):
        assert re.fullmatch(r"[a-z/]+:v?\d+\.\d+\.\d+", services[name]["image"]), name


def test_the_public_credentials_face_reads_badges_and_reports_ready_on_its_own_port():
    compose = _compose()
    face = compose["services"]["credentials"]
    env = face["environment"]
    assert face["command"] == ["python", "-m", "services.credentials"]
    assert env["CREDENTIALS_BADGES_ADDRESS"] == "badges:50054"
    assert face["ports"] == [f"{env['CREDENTIALS_HTTP_PORT']}:{env['CREDENTIALS_HTTP_PORT']}"]
    assert f"127.0.0.1:{env['CREDENTIALS_HTTP_PORT']}/readyz" in " ".join(
        face["healthcheck"]["test"])
    assert face["depends_on"]["badges"]["condition"] == "service_healthy"
    # Every credential names the city's address; badges signs with configured keys only.
    assert compose["x-qiji-env"]["QIJI_ISSUER_URL"].startswith("${QIJI_ISSUER_URL:?")
    badges = compose["services"]["badges"]["environment"]
    assert badges["BADGES_RSA_SIGNING_KEY"].startswith("${BADGES_RSA_SIGNING_KEY:?")
    assert badges["BADGES_SIGNING_KEY"].startswith("${BADGES_SIGNING_KEY:?")
