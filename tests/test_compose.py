"""The compose stack's structure: services, health, start order, durability, and settings the code reads."""

from __future__ import annotations

import json
import pathlib
import tomllib
from dataclasses import fields
from typing import Any

import pytest
import yaml

from deploy.make_secrets import write_secrets
from shared.settings import ENV_PREFIX, FILE_SUFFIX, UNPREFIXED, Settings

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUR_SERVICES = ("migrate", "consumer", "simulator", "operator")
SECRETS_DIR = "/run/secrets/"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return doc


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = compose["services"]
    return found


@pytest.fixture(scope="module")
def secret_files(
    compose: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, pathlib.Path]:
    """Each compose secret's name, and the file deploy/make_secrets.py writes for it."""
    written = {path.name: path for path in write_secrets(tmp_path_factory.mktemp("secrets"))}
    return {name: written[pathlib.Path(s["file"]).name] for name, s in compose["secrets"].items()}


def settings_env_names() -> set[str]:
    """Every environment variable Settings.from_env reads."""
    names = set()
    for field in fields(Settings):
        name = field.name.upper()
        names |= {name, name + FILE_SUFFIX} if name in UNPREFIXED else {ENV_PREFIX + name}
    return names


def service_env(service: dict[str, Any], secret_files: dict[str, pathlib.Path]) -> dict[str, str]:
    """A service's environment, its secrets' paths pointing at files make_secrets.py wrote."""
    env = {k: str(v) for k, v in service["environment"].items()}
    return {
        k: str(secret_files[v.removeprefix(SECRETS_DIR)]) if v.startswith(SECRETS_DIR) else v
        for k, v in env.items()
    }


def args_of(command: list[str], flag: str) -> list[str]:
    return [command[i + 1] for i, word in enumerate(command[:-1]) if word == flag]


def test_the_stack_has_its_services(services: dict[str, Any]) -> None:
    # Given the compose file, then it runs the stores, the migration, the consumers and the producer
    assert {"redis", "postgres", *OUR_SERVICES} <= set(services)


def test_redis_persists_every_write_and_reports_health(services: dict[str, Any]) -> None:
    # Given the redis service, then AOF is on with an fsync per write, and it has a healthcheck and a volume
    command = services["redis"]["command"]
    assert args_of(command, "--appendonly") == ["yes"]
    assert args_of(command, "--appendfsync") == ["always"]
    # And a full Redis refuses writes rather than evicting streams or leases
    assert args_of(command, "--maxmemory-policy") == ["noeviction"]
    assert args_of(command, "--maxmemory")
    assert services["redis"]["healthcheck"]["test"]
    assert any(v.endswith(":/data") for v in services["redis"]["volumes"])


def test_postgres_is_durable_and_reports_health(services: dict[str, Any], compose: dict[str, Any]) -> None:
    # Given the postgres service, then it is 15, keeps its data in a named volume, and fsyncs every commit
    pg = services["postgres"]
    assert pg["image"].split(":")[1].startswith("15")
    assert pg["healthcheck"]["test"]
    volume = pg["volumes"][0].split(":")[0]
    assert volume in compose["volumes"]
    settings = dict(s.split("=", 1) for s in args_of(pg["command"], "-c"))
    assert {k: settings.get(k) for k in ("fsync", "synchronous_commit", "full_page_writes")} == {
        "fsync": "on",
        "synchronous_commit": "on",
        "full_page_writes": "on",
    }


def test_services_start_in_order(services: dict[str, Any]) -> None:
    # Given the start conditions, then migrations run once Postgres is healthy, and consumers after them
    assert services["migrate"]["command"][-3:] == ["-m", "consumer", "migrate"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    consumer = services["consumer"]["depends_on"]
    assert consumer["migrate"]["condition"] == "service_completed_successfully"
    assert consumer["redis"]["condition"] == consumer["postgres"]["condition"] == "service_healthy"
    assert services["simulator"]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_two_consumer_replicas_with_distinct_names(services: dict[str, Any]) -> None:
    # Given the consumer service, then it runs twice, and no fixed name makes the replicas share one
    consumer = services["consumer"]
    assert consumer["deploy"]["replicas"] == 2
    assert ENV_PREFIX + "CONSUMER" not in consumer["environment"]
    assert "--name" not in consumer["command"]


@pytest.mark.parametrize("service", OUR_SERVICES)
def test_every_variable_set_is_a_setting_the_code_reads(
    services: dict[str, Any], service: str, secret_files: dict[str, pathlib.Path]
) -> None:
    # Given the environment compose sets for one of our services
    env = service_env(services[service], secret_files)
    # Then each variable is one Settings reads, and together they make valid settings
    assert set(env) <= settings_env_names()
    Settings.from_env(env)


@pytest.mark.parametrize("service", [*OUR_SERVICES, "postgres"])
def test_passwords_come_from_secrets_never_from_the_environment(
    services: dict[str, Any], service: str, secret_files: dict[str, pathlib.Path]
) -> None:
    # Given a service's environment and the secrets it mounts
    env = {k: str(v) for k, v in services[service]["environment"].items()}
    # Then no URL or password is set directly, and every file it reads is a secret it mounts
    assert not {"REDIS_URL", "DATABASE_URL", "POSTGRES_PASSWORD"} & set(env)
    files = {k: v for k, v in env.items() if k.endswith(FILE_SUFFIX)}
    assert files, "the service reads no secret"
    for path in files.values():
        assert path.removeprefix(SECRETS_DIR) in services[service]["secrets"]
    assert set(services[service]["secrets"]) <= set(secret_files)


def test_redis_loads_its_users_from_a_secret_and_checks_health_as_the_operator(
    services: dict[str, Any], secret_files: dict[str, pathlib.Path]
) -> None:
    # Given the redis service, then it loads the ACL file make_secrets.py writes from the committed rules
    redis = services["redis"]
    assert args_of(redis["command"], "--aclfile") == [SECRETS_DIR + "redis_users_acl"]
    assert "redis_users_acl" in redis["secrets"]
    assert "user default off" in secret_files["redis_users_acl"].read_text()
    # And its health check logs in as the operator, since the default user is off
    assert "redis_operator_url" in " ".join(redis["healthcheck"]["test"])


def test_each_service_connects_to_redis_as_its_own_user(services: dict[str, Any]) -> None:
    users = {
        s: services[s]["environment"].get("REDIS_URL_FILE") for s in ("consumer", "simulator", "operator")
    }
    assert users == {
        "consumer": SECRETS_DIR + "redis_consumer_url",
        "simulator": SECRETS_DIR + "redis_producer_url",
        "operator": SECRETS_DIR + "redis_operator_url",
    }


def test_prometheus_scrapes_the_ports_the_services_serve_on(
    services: dict[str, Any], secret_files: dict[str, pathlib.Path]
) -> None:
    # Given the scrape config and the metrics ports set for the consumer and the simulator
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    targets = set()
    for job in config["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            targets |= {f"{name}:{sd['port']}" for name in sd["names"]}
        for static in job.get("static_configs", []):
            targets |= set(static["targets"])
    # Then each service is scraped where its metrics port is
    for service in ("consumer", "simulator"):
        port = Settings.from_env(service_env(services[service], secret_files)).metrics_port
        assert port and f"{service}:{port}" in targets


def test_dockerfile_installs_every_package_on_python_3_11_slim() -> None:
    # Given the Dockerfile and the packages pyproject.toml ships
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    packages = {p.rstrip("*") for p in include["include"]}
    # Then it starts from python:3.11-slim, copies each package and installs the project
    assert lines[0] == "FROM python:3.11-slim"
    copied = {line.split()[1] for line in lines if line.startswith("COPY ")}
    assert packages <= copied
    assert "RUN pip install ." in lines


def mounts(service: dict[str, Any]) -> dict[str, pathlib.Path]:
    """Container path -> the repository path mounted there."""
    found = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            found[target] = ROOT / source
    return found


def test_prometheus_loads_the_alert_rules_from_beside_its_config(services: dict[str, Any]) -> None:
    # Given the rule files the config names, relative to the config's own folder in the container
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    mounted = mounts(services["prometheus"])
    config_dir = pathlib.PurePosixPath(
        next(t for t, s in mounted.items() if s.name == "prometheus.yml")
    ).parent
    # Then each is mounted there from deploy/
    for rule_file in config["rule_files"]:
        assert mounted[str(config_dir / rule_file)] == ROOT / "deploy" / rule_file


def test_grafana_is_provisioned_with_the_prometheus_datasource_and_the_dashboard(
    services: dict[str, Any],
) -> None:
    # Given the grafana service and what it mounts
    grafana = services["grafana"]
    assert grafana["depends_on"]["prometheus"]["condition"] == "service_started"
    mounted = mounts(grafana)
    provisioning = mounted["/etc/grafana/provisioning"]
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    providers = yaml.safe_load((provisioning / "dashboards" / "odds-pipeline.yml").read_text())["providers"]
    # Then the datasource points at the prometheus service on the port it listens on
    (source,) = datasources
    prometheus_port = services["prometheus"]["ports"][0].split(":")[-1]
    assert source["type"] == "prometheus" and source["url"] == f"http://prometheus:{prometheus_port}"
    # And the dashboard folder is mounted where the provider looks, holding the dashboard
    (provider,) = providers
    dashboards = mounted[provider["options"]["path"]]
    dashboard = json.loads((dashboards / "odds-pipeline.json").read_text())
    # And every panel and query uses that datasource by its uid
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            uids = {panel["datasource"]["uid"], *(t["datasource"]["uid"] for t in panel["targets"])}
            assert uids == {source["uid"]}, panel["title"]


def test_dashboard_panels_fit_the_grid_without_overlapping() -> None:
    # Given the dashboard's panels
    doc = json.loads((ROOT / "deploy" / "grafana" / "dashboards" / "odds-pipeline.json").read_text())
    cells: dict[tuple[int, int], str] = {}
    assert len({p["id"] for p in doc["panels"]}) == len(doc["panels"])
    for panel in doc["panels"]:
        g = panel["gridPos"]
        # Then each lies within Grafana's 24 columns and covers no cell another one covers
        assert g["x"] + g["w"] <= 24, panel["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]
