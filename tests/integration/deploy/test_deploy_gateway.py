"""The gateway's deployment: Deployment, Service, PDB, probes, metrics, NetworkPolicy, and compose."""

from __future__ import annotations

import ipaddress

import pytest
import yaml
from manifests import OVERLAYS, ROOT, WORKER_NAMESPACE, find, one, render
from pss import check

from sandq.gateway.settings import GatewaySettings
from sandq.gateway.ssrf import refusal
from sandq.settings import Settings

NAME = "sandq-gateway"


def container(objects: list[dict]) -> dict:
    return one(objects, "Deployment", NAME)["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gateway_deployment_service_and_pdb(overlay: str) -> None:
    objects = render(overlay)
    deployment = one(objects, "Deployment", NAME)
    pod = deployment["spec"]["template"]
    main = container(objects)
    assert main["command"] + main["args"] == ["sandq", "serve", "--host", "0.0.0.0", "--port", "8080"]
    assert main["image"] == container_image(objects, "sandq-worker"), "one image for both roles"
    assert deployment["spec"]["replicas"] >= 2
    assert deployment["metadata"]["namespace"] == WORKER_NAMESPACE
    assert {"name": "http", "containerPort": 8080, "protocol": "TCP"} in main["ports"]
    assert main["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert main["livenessProbe"]["tcpSocket"] == {"port": "http"}
    assert pod["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert check(deployment, "restricted") == []
    service = one(objects, "Service", NAME)
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (port,) = service["spec"]["ports"]
    assert port == {"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}
    pdb = one(objects, "PodDisruptionBudget", NAME)
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()


def container_image(objects: list[dict], deployment: str) -> str:
    return str(one(objects, "Deployment", deployment)["spec"]["template"]["spec"]["containers"][0]["image"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gateway_env_parses_with_its_secret_from_a_secret(
    overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = container(render(overlay))["env"]
    secret = next(e for e in env if e["name"] == "SANDQ_GATEWAY_SECRET")
    assert secret["valueFrom"]["secretKeyRef"] == {"name": NAME, "key": "secret"}
    values = {e["name"]: e["value"] for e in env if "value" in e}
    assert values["SANDQ_REDIS_URL"] == "redis://:$(REDIS_PASSWORD)@redis.sandq.svc:6379/0"
    for name, value in values.items():
        monkeypatch.setenv(name, value.replace("$(REDIS_PASSWORD)", "x"))
    monkeypatch.setenv("SANDQ_GATEWAY_SECRET", "s" * 40)
    assert Settings().queue == "sandq" and GatewaySettings().secret.get_secret_value() == "s" * 40


def test_gke_scrapes_the_gateway() -> None:
    monitoring = one(render("gke"), "PodMonitoring", NAME)
    assert monitoring["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "30s"}]
    assert not find(render("dev"), "PodMonitoring")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gateway_network_policy(overlay: str) -> None:
    objects = render(overlay)
    policy = one(objects, "NetworkPolicy", NAME)["spec"]
    labels = one(objects, "Deployment", NAME)["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    (ingress,) = policy["ingress"]
    assert ingress["ports"] == [{"protocol": "TCP", "port": "http"}]
    redis, dns, webhooks = policy["egress"]
    assert redis["ports"] == [{"protocol": "TCP", "port": 6379}]
    assert {(p["protocol"], p["port"]) for p in dns["ports"]} == {("UDP", 53), ("TCP", 53)}
    assert webhooks["ports"] == [{"protocol": "TCP", "port": 443}]
    for block in (peer["ipBlock"] for peer in webhooks["to"]):
        everything = ipaddress.ip_network(block["cidr"])
        assert everything.prefixlen == 0
        excluded = [ipaddress.ip_network(e) for e in block["except"]]
        samples = ["10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "127.0.0.1"]
        samples += ["fd00:ec2::254", "fe80::1", "::1"]
        for address in map(ipaddress.ip_address, samples):
            if address.version == everything.version:
                assert refusal(address), "the gateway's SSRF guard refuses it too"
                assert any(address in net for net in excluded), f"{address} is reachable"
        public = ipaddress.ip_address("8.8.8.8" if everything.version == 4 else "2001:4860:4860::8888")
        assert not any(public in net for net in excluded)


def test_compose_gateway() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())["services"]
    gateway = services["gateway"]
    assert gateway["command"][0] == "serve" and gateway["ports"] == ["127.0.0.1:8080:8080"]
    env = gateway["environment"]
    assert env["SANDQ_REDIS_URL"] == services["worker"]["environment"]["SANDQ_REDIS_URL"]
    assert "not-for-production" in env["SANDQ_GATEWAY_SECRET"]
    assert gateway["depends_on"] == {"redis": {"condition": "service_healthy"}}
    assert gateway["user"] == "10001:10001" and gateway["read_only"] is True
    assert gateway["cap_drop"] == ["ALL"]
    assert "/healthz" in " ".join(gateway["healthcheck"]["test"])
