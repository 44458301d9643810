"""Settings: every one read and checked the same way at start, secrets never shown, and the
README's table naming every setting the code reads."""

from __future__ import annotations

import ast
import base64
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from shared.config import (
    DEFAULT_PORTS,
    OWN_SETTINGS,
    SECRET_SETTINGS,
    ConfigError,
    load_settings,
    secret_setting,
)
from shared.personal_data import load_master_key

REPO = Path(__file__).resolve().parents[2]
PROCESSES = [*DEFAULT_PORTS, "relay", "credentials", "qiji"]
SECRETS = {
    "QIJI_POSTGRES_PASSWORD": "pg-secret-Zk3",
    "QIJI_MASTER_KEY": base64.b64encode(b"m" * 32).decode(),
    "QIJI_SERVICE_TOKEN": "qiji_service-secret-Q8",
    "BADGES_SIGNING_KEY": base64.b64encode(b"s" * 32).decode(),
    "RELAY_AMQP_URI": "amqp://relay:broker-secret-W2@rabbit:5672/",
    "QIJI_AUDIT_SIGNING_KEY": base64.b64encode(b"a" * 32).decode(),
    "BADGES_RSA_SIGNING_KEY": "-----BEGIN PRIVATE KEY-----rsa-secret-R5",
    "CREDENTIALS_PUBLIC_READER_TOKEN": "qiji_reader-secret-P7",
}


def test_every_secret_setting_is_tried_here() -> None:
    assert {secret_setting(name) for name in SECRETS} == set(SECRET_SETTINGS)


@pytest.mark.parametrize("service", PROCESSES)
def test_no_secret_shows_in_the_settings_repr(service: str) -> None:
    settings = load_settings(service, SECRETS)
    shown = repr(settings) + str(settings)
    for name, secret in SECRETS.items():
        assert secret not in shown, f"{name} shows in repr(Settings)"
    assert "broker-secret" not in shown


@pytest.mark.parametrize(("variable", "value", "says"), [
    ("IDENTITY_GRPC_PORT", "70000", "IDENTITY_GRPC_PORT: must be an integer from 0 to 65535"),
    ("QIJI_GRPC_WORKERS", "lots", "QIJI_GRPC_WORKERS: must be an integer"),
    ("QIJI_GRPC_WORKERS", "0", "QIJI_GRPC_WORKERS: must be an integer from 1 up"),
    ("QIJI_POSTGRES_POOL_SIZE", "-1", "QIJI_POSTGRES_POOL_SIZE: must be an integer from 1"),
    ("QIJI_AGGREGATE_CACHE_SIZE", "0", "QIJI_AGGREGATE_CACHE_SIZE: must be an integer from 1"),
    ("QIJI_METRICS_PORT", "9x", "QIJI_METRICS_PORT: must be an integer"),
    ("QIJI_PERSISTENCE", "mysql", "QIJI_PERSISTENCE: must be one of sqlite, postgres"),
    ("QIJI_LOG_FORMAT", "jsno", "QIJI_LOG_FORMAT: must be one of json, console"),
    ("IDENTITY_GRPC_SHARE_PORT", "true", "IDENTITY_GRPC_SHARE_PORT: must be one of yes, no"),
    ("IDENTITY_TRAINING_ADDRESS", "training", "IDENTITY_TRAINING_ADDRESS: must be HOST:PORT"),
    ("IDENTITY_TRAINING_ADDRESS", "training:0", "must be HOST:PORT with a port from 1"),
])
def test_a_setting_that_cannot_work_is_a_configuration_error_naming_it(
        variable: str, value: str, says: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(says)):
        load_settings("identity", {variable: value})


@pytest.mark.parametrize(("service", "variable", "value", "says"), [
    ("relay", "RELAY_BATCH", "two hundred", "RELAY_BATCH: must be an integer"),
    ("relay", "RELAY_POLL_SECONDS", "0", "RELAY_POLL_SECONDS: must be a positive number"),
    ("relay", "RELAY_POLL_SECONDS", "nan", "RELAY_POLL_SECONDS: must be a positive number"),
    ("relay", "RELAY_SERVICES", "identity,billing", "RELAY_SERVICES: must name some of"),
    ("relay", "RELAY_AMQP_URI", "http://rabbit", "RELAY_AMQP_URI: must be an amqp://"),
    ("governance", "GOVERNANCE_DEADLINE_POLL_SECONDS", "-1",
     "GOVERNANCE_DEADLINE_POLL_SECONDS: must be a positive number of seconds"),
])
def test_a_services_own_settings_are_checked_at_start_too(
        service: str, variable: str, value: str, says: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(says)):
        load_settings(service, {variable: value})


def test_own_settings_come_typed() -> None:
    relay = load_settings("relay", {"RELAY_BATCH": "50", "RELAY_POLL_SECONDS": "0.5",
                                    "RELAY_SERVICES": "identity, badges"})
    assert (relay.own_setting("BATCH"), relay.own_setting("POLL_SECONDS"),
            relay.own_setting("SERVICES")) == (50, 0.5, ["identity", "badges"])


@pytest.mark.parametrize(("variable", "value"), [
    ("QIJI_MASTER_KEY", "c2VjcmV0LWJ1dC1zaG9ydA=="),  # base64, not 32 bytes
    ("QIJI_MASTER_KEY", "not base64 at all: my-secret-pass"),
    ("BADGES_SIGNING_KEY", "c2VjcmV0LWJ1dC1zaG9ydA=="),
    ("RELAY_AMQP_URI", "rabbit://user:my-secret-pass@host/"),
])
def test_a_malformed_secret_is_refused_without_repeating_it(variable: str, value: str) -> None:
    service = variable.split("_")[0].lower() if not variable.startswith("QIJI") else "identity"
    with pytest.raises(ConfigError) as refused:
        load_settings(service, {variable: value})
    assert variable in str(refused.value)
    assert value not in str(refused.value) and "my-secret-pass" not in str(refused.value)


def test_a_missing_or_malformed_master_key_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no master key"):
        load_master_key("", tmp_path / "master.key", create=False)
    (tmp_path / "master.key").write_text("too-short")
    with pytest.raises(ConfigError, match="the master key must decode to 32 bytes"):
        load_master_key("", tmp_path / "master.key", create=False)


def test_the_default_data_folder_does_not_depend_on_the_current_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_settings("identity", {}).data_dir == REPO / "data"


# ---------------------------------------------------------------------------- README


class Recording(Mapping[str, str]):
    """An empty environment that notes every variable looked up in it."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def __getitem__(self, key: str) -> str:
        self.asked.append(key)
        raise KeyError(key)

    def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
        self.asked.append(key)
        return default

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def names_the_loader_reads() -> dict[str, set[str]]:
    """NAME -> the processes that read `<SERVICE>_<NAME>` / `QIJI_<NAME>`."""
    read: dict[str, set[str]] = {}
    for process in PROCESSES:
        env = Recording()
        load_settings(process, env)
        for key in env.asked:
            if key.startswith("QIJI_"):
                read.setdefault(key.removeprefix("QIJI_"), set()).add(process)
    return read


def names_read_directly() -> set[str]:
    """Variable names the code spells out (os.environ.get("QIJI_TOKEN") and the like). A
    constant named as its own value is an error reason, not a setting
    (PLATFORM_RIDER_ID_INVALID = "PLATFORM_RIDER_ID_INVALID")."""
    prefixes = "|".join(p.upper() for p in PROCESSES)
    pattern = re.compile(rf"^({prefixes})_[A-Z0-9_]+$")
    found = set()
    for path in [*(REPO / "shared").rglob("*.py"), *(REPO / "services").rglob("*.py")]:
        tree = ast.parse(path.read_text())
        reasons = {id(node.value) for node in tree.body if isinstance(node, ast.Assign)
                   and isinstance(node.value, ast.Constant)
                   and [getattr(t, "id", None) for t in node.targets] == [node.value.value]}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and pattern.match(node.value) and id(node) not in reasons:
                found.add(node.value)
    return found


def documented() -> set[str]:
    """Every variable README's configuration table names, placeholders spelled out."""
    text = (REPO / "README.md").read_text()
    table = text[text.index("## Configuration"):]
    table = table[:table.index("\n## ", 1)]
    names: set[str] = set()
    for row in table.splitlines():
        if not row.startswith("| `"):
            continue
        for token in re.findall(r"`([A-Z<>_0-9]+)`", row.split("|")[1]):
            expanded = {token}
            for placeholder in ("<SERVICE>", "<OTHER>"):
                expanded = {e.replace(placeholder, p.upper(), 1) for e in expanded
                            for p in PROCESSES} if any(placeholder in e for e in expanded) \
                    else expanded
            names |= expanded
    return names


def test_the_readme_table_names_every_setting_the_code_reads() -> None:
    table = documented()
    missing = [f"{name} (read by {', '.join(sorted(processes))})"
               for name, processes in sorted(names_the_loader_reads().items())
               if f"QIJI_{name}" not in table
               and not all(f"{p.upper()}_{name}" in table for p in processes - {"qiji"})]
    missing += sorted(names_read_directly() - table)
    assert not missing, f"settings missing from README's table: {missing}"
    # Each service's own settings are there, under its own prefix or the common one.
    assert not [f"{s.upper()}_{n}" for s, own in OWN_SETTINGS.items() for n in own
                if not {f"{s.upper()}_{n}", f"QIJI_{n}"} & table]


def test_sharing_a_port_is_asked_for_and_only_on_postgresql() -> None:
    assert load_settings("identity", {}).grpc_share_port is False
    on_postgres = {"QIJI_PERSISTENCE": "postgres"}
    assert load_settings("identity", {**on_postgres, "IDENTITY_GRPC_SHARE_PORT": "yes"}
                         ).grpc_share_port is True
    assert load_settings("training", {**on_postgres, "IDENTITY_GRPC_SHARE_PORT": "yes"}
                         ).grpc_share_port is False
    # Processes sharing a port share one store: the embedded SQLite file is one process's.
    with pytest.raises(ConfigError, match=re.escape(
            "QIJI_GRPC_SHARE_PORT: processes sharing a port share one store")):
        load_settings("identity", {"QIJI_GRPC_SHARE_PORT": "yes"})
