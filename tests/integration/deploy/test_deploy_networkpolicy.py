"""Network policies: sandboxes offline, workers to API/Redis/DNS only, Redis to its clients only."""

from __future__ import annotations

import pytest
from manifests import CLIENT_LABEL, OVERLAYS, SANDBOX_NAMESPACE, WORKER_NAMESPACE, find, one, render


def selects(selector: dict, labels: dict) -> bool:
    assert set(selector) <= {"matchLabels"}, "only matchLabels is used here"
    return selector.get("matchLabels", {}).items() <= labels.items()


def pod_labels(objects: list[dict], kind: str, name: str) -> dict:
    return one(objects, kind, name)["spec"]["template"]["metadata"]["labels"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_sandboxes_get_no_traffic(overlay: str) -> None:
    policies = find(render(overlay), "NetworkPolicy")
    (policy,) = [p for p in policies if p["metadata"]["namespace"] == SANDBOX_NAMESPACE]
    spec = policy["spec"]
    assert spec["podSelector"] == {}, "every pod of the namespace"
    assert sorted(spec["policyTypes"]) == ["Egress", "Ingress"]
    assert not spec.get("ingress") and not spec.get("egress")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_sandq_namespace_denies_by_default(overlay: str) -> None:
    spec = one(render(overlay), "NetworkPolicy", "default-deny")["spec"]
    assert spec["podSelector"] == {} and sorted(spec["policyTypes"]) == ["Egress", "Ingress"]
    assert not spec.get("ingress") and not spec.get("egress")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workers_reach_only_apiserver_redis_and_dns(overlay: str) -> None:
    objects = render(overlay)
    policy = one(objects, "NetworkPolicy", "sandq-worker")
    assert policy["metadata"]["namespace"] == WORKER_NAMESPACE
    assert selects(policy["spec"]["podSelector"], pod_labels(objects, "Deployment", "sandq-worker"))
    assert not selects(policy["spec"]["podSelector"], pod_labels(objects, "StatefulSet", "redis"))
    apiserver, redis, dns = policy["spec"]["egress"]
    assert list(apiserver["to"][0]) == ["ipBlock"] and "except" not in apiserver["to"][0]["ipBlock"]
    assert {(p["protocol"], p["port"]) for p in apiserver["ports"]} == {("TCP", 443), ("TCP", 6443)}
    (peer,) = redis["to"]
    assert list(peer) == ["podSelector"]
    assert selects(peer["podSelector"], pod_labels(objects, "StatefulSet", "redis"))
    assert redis["ports"] == [{"protocol": "TCP", "port": 6379}]
    (peer,) = dns["to"]
    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "kube-system"}
    assert {(p["protocol"], p["port"]) for p in dns["ports"]} == {("UDP", 53), ("TCP", 53)}
    (ingress,) = policy["spec"]["ingress"]
    assert ingress["ports"] == [{"protocol": "TCP", "port": "metrics"}]


def test_gke_apiserver_is_one_address() -> None:
    policy = one(render("gke"), "NetworkPolicy", "sandq-worker")
    cidr = policy["spec"]["egress"][0]["to"][0]["ipBlock"]["cidr"]
    assert cidr.endswith("/32"), "on GKE the workers reach one control-plane address"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_redis_accepts_workers_the_gateway_agents_and_keda_only(overlay: str) -> None:
    objects = render(overlay)
    policy = one(objects, "NetworkPolicy", "redis")
    assert selects(policy["spec"]["podSelector"], pod_labels(objects, "StatefulSet", "redis"))
    assert sorted(policy["spec"]["policyTypes"]) == ["Egress", "Ingress"]
    assert not policy["spec"].get("egress"), "Redis opens no connections"
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 6379}]
    workers, gateway, agents, keda = rule["from"]
    assert list(workers) == ["podSelector"]
    assert selects(workers["podSelector"], pod_labels(objects, "Deployment", "sandq-worker"))
    assert list(gateway) == ["podSelector"]
    assert selects(gateway["podSelector"], pod_labels(objects, "Deployment", "sandq-gateway"))
    assert agents == {"namespaceSelector": {}, "podSelector": {"matchLabels": {CLIENT_LABEL: "true"}}}
    assert keda["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "keda"}
    assert keda["podSelector"]["matchLabels"] == {"app": "keda-operator"}
