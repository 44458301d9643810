"""deploy/k8s/ cannot be applied here (no cluster): check it against Kubernetes' own schemas
(kubernetes-validate ships them) and check what scale-out and monitoring rely on."""

import re
import runpy
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from shared.config import DEFAULT_PORTS, holds, secret_setting
from shared.grpc.server import LIVENESS
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
K8S = ROOT / "deploy" / "k8s"
DOCS = [doc for manifest in ("qiji.yaml", "monitoring.yaml")
        for doc in yaml.safe_load_all((K8S / manifest).read_text())]
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
        for env in deployment["spec"]["template"]["spec"]["containers"][0].get("env", []):
            if env["name"].endswith("_ADDRESS"):
                host, port = env["value"].split(":")
                target = services[host]
                assert int(port) in [p["port"] for p in target["spec"]["ports"]], env


def test_keys_reach_the_five_services_only():
    """qiji-keys (master key, audit signing key) only to the five services, qiji-badges-key
    only to badges: the gateway and the relay hold no key; the figures the master key alone
    (they check each event's MAC, and sign nothing)."""
    for name, deployment in by("Deployment").items():
        if name in ("qiji-prometheus", "qiji-grafana"):
            continue  # monitoring, not Qiji's processes
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        secrets = {e["secretRef"]["name"] for e in container.get("envFrom", [])
                   if "secretRef" in e}
        service = name.removeprefix("qiji-")
        keyed = service in ("identity", "training", "merchants", "badges", "governance")
        assert ("qiji-keys" in secrets) == keyed, name
        assert ("qiji-badges-key" in secrets) == (service == "badges"), name
        keys = [(e["name"], e["valueFrom"]["secretKeyRef"]["name"])
                for e in container.get("env", []) if "KEY" in e["name"]]
        assert keys == ([("QIJI_MASTER_KEY", "qiji-keys")] if service == "statistics" else []), \
            name


# What each Secret holds (the manifest's header says so to the operator who makes them).
SECRET_KEYS = {
    "qiji-secrets": {"QIJI_POSTGRES_PASSWORD", "QIJI_SERVICE_TOKEN"},
    "qiji-keys": {"QIJI_MASTER_KEY", "QIJI_AUDIT_SIGNING_KEY"},
    "qiji-badges-key": {"BADGES_SIGNING_KEY", "BADGES_RSA_SIGNING_KEY"},
    "qiji-broker": {"RELAY_AMQP_URI"},
    "qiji-public-reader": {"QIJI_PUBLIC_READER_TOKEN"},
}


def secrets_given(deployment: dict) -> set[str]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    given = {key for e in container.get("envFrom", []) if "secretRef" in e
             for key in SECRET_KEYS[e["secretRef"]["name"]]}
    given |= {e["name"] for e in container.get("env", [])
              if "secretKeyRef" in e.get("valueFrom", {})}
    return given | {e["name"] for e in container.get("env", []) if secret_setting(e["name"])}


def test_each_process_is_given_only_the_secrets_it_uses():
    """The internet-facing face holds only its public_reader token, the gateway only the
    service token, the relay the store's password, the service token and the broker's URI,
    the figures the store's password, the service token and the master key."""
    deployments = by("Deployment")
    assert secrets_given(deployments["qiji-credentials"]) == {"QIJI_PUBLIC_READER_TOKEN"}
    assert secrets_given(deployments["qiji-platform"]) == {"QIJI_SERVICE_TOKEN"}
    assert secrets_given(deployments["qiji-relay"]) == {
        "QIJI_POSTGRES_PASSWORD", "QIJI_SERVICE_TOKEN", "RELAY_AMQP_URI"}
    assert secrets_given(deployments["qiji-statistics"]) == {
        "QIJI_POSTGRES_PASSWORD", "QIJI_SERVICE_TOKEN", "QIJI_MASTER_KEY"}
    for name in [*SERVICES, "relay", "credentials"]:
        assert all(holds(name, key) for key in secrets_given(deployments[f"qiji-{name}"]))
    header = (K8S / "qiji.yaml").read_text().split("apiVersion", 1)[0]
    for secret, keys in SECRET_KEYS.items():
        assert secret in header and all(key in header for key in keys), secret


# Monitoring: deploy/k8s/monitoring.yaml, generated by deploy/k8s/monitoring.py.

def test_the_monitoring_manifest_is_what_its_generator_makes_of_deploy_monitoring():
    render = runpy.run_path(str(K8S / "monitoring.py"))["render"]
    assert (K8S / "monitoring.yaml").read_text() == render(), (
        "deploy/k8s/monitoring.yaml is out of date with deploy/monitoring/: run `make k8s`")


def container(deployment: str) -> dict:
    return by("Deployment")[deployment]["spec"]["template"]["spec"]["containers"][0]


def mounted_file(deployment: str, path: str) -> str:
    """The text a container reads at `path`, followed through its volume mounts into the
    ConfigMap that holds it."""
    pod = by("Deployment")[deployment]["spec"]["template"]["spec"]
    wanted = PurePosixPath(path)
    [mount] = [m for m in pod["containers"][0]["volumeMounts"]
               if PurePosixPath(m["mountPath"]) in wanted.parents]
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    relative = str(wanted.relative_to(mount["mountPath"]))
    items = {i["path"]: i["key"] for i in volume["configMap"].get("items", [])}
    key = items[relative] if items else relative
    return by("ConfigMap")[volume["configMap"]["name"]]["data"][key]


PROMETHEUS = "qiji-prometheus"
GRAFANA = "qiji-grafana"


def prometheus_config() -> tuple[PurePosixPath, dict]:
    path = PurePosixPath(flag(container(PROMETHEUS)["args"], "config.file"))
    return path, yaml.safe_load(mounted_file(PROMETHEUS, str(path)))


def test_prometheus_reads_the_configuration_and_the_rules_that_promtool_checks():
    path, config = prometheus_config()
    assert mounted_file(PROMETHEUS, str(path)) == (MONITORING / "prometheus-k8s.yml").read_text()
    # Relative rule files are read beside the configuration file.
    assert [mounted_file(PROMETHEUS, str(path.parent / f)) for f in config["rule_files"]] == [
        ALERT_RULES.read_text()]


def test_promtool_accepts_the_kubernetes_scrape_configuration(tmp_path):
    """Debian's promtool is built without Kubernetes discovery: it checks the rest of the file
    (relabelling, rule files) with the discovery swapped for a static target; the discovery
    itself is checked here and simulated in the next test."""
    config = yaml_file(MONITORING / "prometheus-k8s.yml")
    for job in config["scrape_configs"]:
        assert job.pop("kubernetes_sd_configs") == [
            {"role": "pod", "namespaces": {"own_namespace": True}}]
        job["static_configs"] = [{"targets": ["pod:9101"]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    (tmp_path / ALERT_RULES.name).write_text(ALERT_RULES.read_text())
    promtool("check", "config", "prometheus.yml", cwd=tmp_path)


def relabel(labels: dict[str, str], configs: list[dict]) -> dict[str, str] | None:
    """Prometheus' relabelling, as far as the configuration uses it (regexes are anchored)."""
    labels = dict(labels)
    for c in configs:
        action = c.get("action", "replace")
        assert action in {"keep", "drop", "replace"}, action
        value = c.get("separator", ";").join(labels.get(n, "") for n in c["source_labels"])
        match = re.fullmatch(c.get("regex", "(.*)"), value)
        if (action == "keep" and not match) or (action == "drop" and match):
            return None
        if action == "replace" and match:
            labels[c["target_label"]] = match.expand(
                re.sub(r"\$(\d+)", r"\\\1", c.get("replacement", "$1")))
    return labels


def discovered_pod_targets(deployment: dict) -> list[dict[str, str]]:
    """What Prometheus' `role: pod` discovery offers for a running replica: one target per
    container port (one without a port for a container that declares none)."""
    template = deployment["spec"]["template"]
    pod_labels = {f"__meta_kubernetes_pod_label_{re.sub(r'[^a-zA-Z0-9_]', '_', k)}": v
                  for k, v in template["metadata"]["labels"].items()}
    base = {**pod_labels, "__meta_kubernetes_namespace": "city",
            "__meta_kubernetes_pod_name": f"{deployment['metadata']['name']}-7d4b9-x2x5q",
            "__meta_kubernetes_pod_phase": "Running"}
    targets = []
    for c in template["spec"]["containers"]:
        for port in c.get("ports") or [{}]:
            targets.append({**base, "__meta_kubernetes_pod_container_name": c["name"],
                            "__meta_kubernetes_pod_container_port_name": port.get("name", ""),
                            "__address__": f"10.1.2.3:{port.get('containerPort', 80)}"})
    return targets


def test_prometheus_scrapes_every_replica_of_every_qiji_process_on_its_metrics_port():
    _, config = prometheus_config()
    [job] = config["scrape_configs"]
    assert job["job_name"] == JOB  # what the rules and the dashboard select
    scraped = set()
    for deployment in by("Deployment").values():
        for target in discovered_pod_targets(deployment):
            kept = relabel(target, job["relabel_configs"])
            if kept is not None:
                assert kept["instance"] == target["__meta_kubernetes_pod_name"]
                scraped.add((kept["process"], int(kept["__address__"].rsplit(":", 1)[1])))
    served = set()
    for name in PROCESSES:
        env = {e["name"]: e.get("value") for e in container(f"qiji-{name}")["env"]}
        served.add((name, int(env[f"{name.upper()}_METRICS_PORT"])))
    assert scraped == served


def test_prometheus_may_list_the_pods_of_its_namespace_and_nothing_more():
    pod = by("Deployment")[PROMETHEUS]["spec"]["template"]["spec"]
    [binding] = [b for b in by("RoleBinding").values()
                 if {"kind": "ServiceAccount", "name": pod["serviceAccountName"]}
                 in b["subjects"]]
    assert binding["roleRef"]["kind"] == "Role"  # this namespace only, not a ClusterRole
    assert by("Role")[binding["roleRef"]["name"]]["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
    assert not by("ClusterRole") and not by("ClusterRoleBinding")


def test_grafana_is_provisioned_with_prometheus_and_the_checked_dashboard():
    grafana = container(GRAFANA)
    env = {e["name"]: e for e in grafana["env"]}
    [source] = yaml.safe_load(mounted_file(
        GRAFANA, "/etc/grafana/provisioning/datasources/qiji.yml"))["datasources"]
    assert source["type"] == "prometheus" and source["isDefault"] is True
    assert source["url"] == "${QIJI_PROMETHEUS_URL}"
    url = urlsplit(env["QIJI_PROMETHEUS_URL"]["value"])
    ports = by("Service")[url.hostname]["spec"]["ports"]
    assert [p["targetPort"] for p in ports if p["port"] == url.port] == ["web"]
    [provider] = yaml.safe_load(mounted_file(
        GRAFANA, "/etc/grafana/provisioning/dashboards/qiji.yml"))["providers"]
    dashboards = [v for v in by("Deployment")[GRAFANA]["spec"]["template"]["spec"]["volumes"]
                  if any(m["name"] == v["name"] and m["mountPath"] == provider["options"]["path"]
                         for m in grafana["volumeMounts"])]
    # Grafana loads every JSON file in that folder: only the dashboard the tests check.
    assert [i["key"] for v in dashboards for i in v["configMap"]["items"]] == [DASHBOARD.name]
    home = env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]["value"]
    assert mounted_file(GRAFANA, home) == DASHBOARD.read_text()
    assert env["GF_SECURITY_ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == GRAFANA
    assert env["GF_AUTH_ANONYMOUS_ENABLED"]["value"] == "false"


def test_the_monitoring_pods_run_pinned_images_as_non_root():
    for name in (PROMETHEUS, GRAFANA):
        pod = by("Deployment")[name]["spec"]["template"]["spec"]
        assert re.fullmatch(r"[a-z/]+:v?\d+\.\d+\.\d+", pod["containers"][0]["image"]), name
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True


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
