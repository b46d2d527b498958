"""docker-compose.yaml: valid Compose, and a development stack that matches the deployment."""

from __future__ import annotations

import copy
import hashlib

import jsonschema
import pytest
import yaml
from manifests import ROOT, SCHEMAS

from sandq.settings import Settings

COMPOSE_SCHEMA_SHA256 = "56bab44c85c0ce8affb74474950293f37d510673283a243bcd7eeadb900fa35c"


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yaml").read_text())


def validator() -> jsonschema.protocols.Validator:
    raw = (SCHEMAS / "compose-spec.json").read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    assert digest == COMPOSE_SCHEMA_SHA256, "vendored schema changed: see schemas/README.md"
    schema = yaml.safe_load(raw)
    # The file names draft 2019-09 (with a "$schema" URL jsonschema does not recognise).
    assert "2019-09" in schema["$schema"]
    jsonschema.Draft201909Validator.check_schema(schema)
    return jsonschema.Draft201909Validator(schema)


def test_compose_file_matches_the_spec() -> None:
    errors = sorted(validator().iter_errors(compose()), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


@pytest.mark.parametrize(
    ("service", "key", "value"),
    [
        ("worker", "privilegd", True),
        ("redis", "ports", "6379"),
        ("flower", "depends_on", {"redis": {"x": 1}}),
    ],
)
def test_schema_rejects_mistakes(service: str, key: str, value: object) -> None:
    broken = copy.deepcopy(compose())
    broken["services"][service][key] = value
    assert list(validator().iter_errors(broken))


def test_redis_is_persistent_with_aof() -> None:
    redis = compose()["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--appendfsync") + 1] == "everysec"
    assert "--requirepass" in command
    assert any(v.endswith(":/data") for v in redis["volumes"])
    assert "healthcheck" in redis


def test_worker_uses_a_mounted_kubeconfig() -> None:
    worker = compose()["services"]["worker"]
    env = worker["environment"]
    assert env["SANDQ_BACKEND"] == "kubernetes"
    assert any(v.rsplit(":", 2)[1] == env["SANDQ_KUBECONFIG_PATH"] for v in worker["volumes"])
    assert env["SANDQ_REDIS_URL"].endswith("@redis:6379/0")
    assert worker["command"] == ["worker"]
    assert worker["user"] == "10001:10001" and worker["read_only"] is True
    assert worker["cap_drop"] == ["ALL"]
    for name, value in env.items():
        assert name.removeprefix("SANDQ_").lower() in Settings.model_fields or name == "SANDQ_METRICS_PORT"
        assert isinstance(value, str)


def test_gvisor_worker_is_opt_in_and_privileged() -> None:
    services = compose()["services"]
    gvisor = services["worker-gvisor"]
    assert gvisor["profiles"] == ["gvisor"], "never started by a plain `docker compose up`"
    assert gvisor["environment"]["SANDQ_BACKEND"] == "gvisor"
    assert gvisor["privileged"] is True
    assert {"seccomp:unconfined", "apparmor:unconfined"} <= set(gvisor["security_opt"])
    assert any(t.startswith(str(Settings().runsc_root.parent)) for t in gvisor["tmpfs"])
    assert "privileged" not in services["worker"] and "profiles" not in services["worker"]


def test_flower_watches_the_same_redis() -> None:
    services = compose()["services"]
    flower = services["flower"]
    assert "flower" in flower["command"]
    broker = next(a for a in flower["command"] if a.startswith("--broker="))
    assert broker.removeprefix("--broker=") == services["worker"]["environment"]["SANDQ_REDIS_URL"]


def test_builds_name_dockerfile_stages() -> None:
    stages = {
        line.split()[-1]
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.startswith("FROM ") and " AS " in line
    }
    for service in compose()["services"].values():
        if "build" in service:
            assert service["build"]["target"] in stages
