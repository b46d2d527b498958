"""agent-sandbox on the stand-in: its custom resources served, its controllers as v0.3.10+ run them.

Served (create answers 201, as the API server does): SandboxTemplate, SandboxWarmPool and
SandboxClaim (``extensions.agents.x-k8s.io/v1alpha1``), Sandbox (``agents.x-k8s.io/v1alpha1``).

* Warm pool: keeps ``spec.replicas`` Sandboxes ``<pool>-<random>`` of its template that it owns
  (labelled ``agents.x-k8s.io/warm-pool-sandbox``); one adopted by a claim leaves it, and it
  makes another.
* Sandbox: one pod of the same name, owned by it, started at once by the warm kubelet
  (``attach.WarmKubelet``: a real gVisor sandbox whose runner waits on stdin); ``Ready`` while
  the pod runs and is ready, ``Finished`` once it ended. A pod deleted (an eviction) under a live
  Sandbox is made again, same name, new uid.
* Claim: adopts the oldest sandbox of the pool it names (``spec.warmpool``), ready ones first:
  owner moved to the claim, pool labels removed, ``agents.x-k8s.io/claim-uid`` added; with none
  left, a Sandbox named like the claim starts cold. Its status forwards the sandbox's ``Ready``
  (and ``Finished``) and names it (``status.sandbox.name``); a template that does not exist gives
  ``Ready=False, TemplateNotFound``. Deleting a claim deletes its sandbox and pod (garbage
  collection, background); past ``lifecycle.shutdownTime`` with ``shutdownPolicy: Delete`` the
  controller deletes the claim itself.

What the warm kubelet cannot know, this module does: pod status changes are mirrored upward
(pod to Sandbox to claim) as the kubelet makes them.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import secrets
from pathlib import Path
from typing import Any

import kmock

from sandq.sandbox.kubernetes.manifests import CLAIMS_GROUP, CLAIMS_VERSION, MANAGED_BY, MANAGED_BY_VALUE
from sandq.settings import Settings
from tests.k8s_harness.attach import WarmKubelet
from tests.k8s_harness.standin import PODS, RunningStandIn, _now

TEMPLATES = kmock.resource(CLAIMS_GROUP, CLAIMS_VERSION, "sandboxtemplates")
POOLS = kmock.resource(CLAIMS_GROUP, CLAIMS_VERSION, "sandboxwarmpools")
CLAIMS = kmock.resource(CLAIMS_GROUP, CLAIMS_VERSION, "sandboxclaims")
SANDBOXES = kmock.resource("agents.x-k8s.io", "v1alpha1", "sandboxes")
RESOURCES = {TEMPLATES: "sandboxtemplates", POOLS: "sandboxwarmpools", CLAIMS: "sandboxclaims",
             SANDBOXES: "sandboxes"}
POOL_LABEL = "agents.x-k8s.io/warm-pool-sandbox"
TEMPLATE_LABEL = "agents.x-k8s.io/sandbox-template-ref-hash"
CLAIM_UID_LABEL = "agents.x-k8s.io/claim-uid"
NAME_HASH_LABEL = "agents.x-k8s.io/sandbox-name-hash"
EXPIRY_CHECK_SECONDS = 0.5


def name_hash(name: str) -> str:
    """agent-sandbox's label value for a name: FNV-1a 32 bit, as 8 hex digits."""
    value = 0x811C9DC5
    for byte in name.encode():
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return f"{value:08x}"


def pool_manifest(settings: Settings, replicas: int) -> dict[str, Any]:
    """sandq's SandboxWarmPool of ``replicas`` sandboxes of its template (as deploy/ has it)."""
    return {
        "apiVersion": f"{CLAIMS_GROUP}/{CLAIMS_VERSION}", "kind": "SandboxWarmPool",
        "metadata": {"name": settings.warm_pool, "namespace": settings.namespace,
                     "labels": {MANAGED_BY: MANAGED_BY_VALUE}},
        "spec": {"replicas": replicas, "sandboxTemplateRef": {"name": settings.sandbox_template},
                 "updateStrategy": {"type": "Recreate"}},
    }


def _ref(obj: dict[str, Any], controller: bool = True) -> dict[str, Any]:
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": obj["metadata"]["name"],
            "uid": obj["metadata"]["uid"], "controller": controller, "blockOwnerDeletion": True}


def _owner_uid(obj: dict[str, Any]) -> str | None:
    refs = [r for r in obj["metadata"].get("ownerReferences") or [] if r.get("controller")]
    return refs[0]["uid"] if refs else None


def _condition(kind: str, status: bool, reason: str, message: str = "") -> dict[str, Any]:
    return {"type": kind, "status": "True" if status else "False", "reason": reason, "message": message,
            "lastTransitionTime": _now()}


class AgentSandbox:
    """agent-sandbox's controllers and the warm kubelet, attached to a running stand-in."""

    def __init__(self, running: RunningStandIn, workdir: Path, node_labels: dict[str, str]) -> None:
        self.running = running
        self.api = running.api
        self.kubelet = WarmKubelet(running, workdir, self._on_pod_change, node_labels)
        self._lock: asyncio.Lock | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        running.run(self._install())

    async def _install(self) -> None:
        for resource in RESOURCES:
            self.api.resources[f"{resource.group}/{resource.version}/{resource.plural}"] = {}
        self._lock = asyncio.Lock()
        self.api.hooks.append(self._on_api_write)
        self._spawn(self._expire_claims())

    # -- what tests do (as kubectl apply would) ----------------------------------------------

    def apply(self, manifest: dict[str, Any]) -> None:
        """Create or replace a SandboxTemplate or a SandboxWarmPool (uncounted: not the worker's call)."""
        resource = {"SandboxTemplate": TEMPLATES, "SandboxWarmPool": POOLS}[manifest["kind"]]
        ns = manifest["metadata"]["namespace"]

        async def apply() -> None:
            await self.api.put(resource, ns, copy.deepcopy(manifest))
            if resource is POOLS:
                await self._reconcile_pool(ns, manifest["metadata"]["name"])

        self.running.run(apply())

    def scale(self, ns: str, pool: str, replicas: int) -> None:
        """Set a pool's replicas (what KEDA or an HPA does through its scale subresource)."""

        async def scale() -> None:
            await self.api.patch(POOLS, ns, pool, {"spec": {"replicas": replicas}})
            await self._reconcile_pool(ns, pool)

        self.running.run(scale())

    def ready(self, ns: str, pool: str) -> int:
        """How many of the pool's sandboxes are Ready."""
        return sum(1 for s in self._pool_sandboxes(ns, pool) if self._is_ready(s))

    def wait_ready(self, ns: str, pool: str, count: int, timeout: float = 60) -> None:
        """Wait until ``count`` of the pool's sandboxes are Ready."""

        async def wait() -> None:
            while self.ready(ns, pool) < count:
                await asyncio.sleep(0.05)

        self.running.run(wait(), timeout)

    def pooled(self) -> set[tuple[str, str]]:
        """(resource, name) of the templates, the pools, and the pools' unclaimed sandboxes and pods."""
        kept = {(RESOURCES[res], o["metadata"]["name"]) for res in (TEMPLATES, POOLS)
                for o in self.api.items(res)}
        for sandbox in self.api.items(SANDBOXES):
            if POOL_LABEL in (sandbox["metadata"].get("labels") or {}):
                kept |= {("sandboxes", sandbox["metadata"]["name"]), ("pods", sandbox["metadata"]["name"])}
        return kept

    def evict(self, ns: str, pod: str) -> None:
        """Evict a (claimed) pod; its Sandbox makes it again."""
        self.running.run(self.kubelet.evict(ns, pod, lambda: self._pod_deleted(ns, pod)))

    def uninstall(self, ns: str) -> None:
        """Delete every pool and template (as ``kubectl delete -k`` would) and whatever they own."""

        async def uninstall() -> None:
            for pool in self.api.items(POOLS):
                await self.api.remove(POOLS, ns, pool["metadata"]["name"])
                await self._collect(ns, pool["metadata"]["uid"])
            for template in self.api.items(TEMPLATES):
                await self.api.remove(TEMPLATES, ns, template["metadata"]["name"])

        self.running.run(uninstall(), timeout=120)

    def close(self) -> None:
        for task in list(self._tasks):
            self.running.loop.call_soon_threadsafe(task.cancel)
        self.kubelet.close()

    # -- the warm pool controller ------------------------------------------------------------

    def _pool_sandboxes(self, ns: str, pool: str) -> list[dict[str, Any]]:
        found = [s for s in self.api.items(SANDBOXES)
                 if s["metadata"]["namespace"] == ns and s["metadata"].get("labels", {}).get(POOL_LABEL)
                 == name_hash(pool)]
        return sorted(found, key=lambda s: (not self._is_ready(s), s["metadata"]["creationTimestamp"]))

    @staticmethod
    def _is_ready(sandbox: dict[str, Any]) -> bool:
        conditions = (sandbox.get("status") or {}).get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    async def _reconcile_pool(self, ns: str, name: str) -> None:
        assert self._lock is not None
        async with self._lock:
            pool = self.api.get(POOLS, ns, name)
            if pool is None:
                return
            have = self._pool_sandboxes(ns, name)
            want = int(pool["spec"]["replicas"])
            for extra in have[want:]:
                await self._delete_sandbox(ns, extra["metadata"]["name"])
            template = self.api.get(TEMPLATES, ns, pool["spec"]["sandboxTemplateRef"]["name"])
            if template is None:
                return
            labels = {POOL_LABEL: name_hash(name), TEMPLATE_LABEL: name_hash(template["metadata"]["name"])}
            for _ in range(want - len(have)):
                await self._create_sandbox(ns, f"{name}-{secrets.token_hex(3)[:5]}", template, pool, labels)

    # -- the sandbox controller --------------------------------------------------------------

    async def _create_sandbox(self, ns: str, name: str, template: dict[str, Any], owner: dict[str, Any],
                              labels: dict[str, str]) -> None:
        await self.api.put(SANDBOXES, ns, {
            "apiVersion": "agents.x-k8s.io/v1alpha1", "kind": "Sandbox",
            "metadata": {"name": name, "labels": labels, "ownerReferences": [_ref(owner)]},
            "spec": {"podTemplate": copy.deepcopy(template["spec"]["podTemplate"]), "replicas": 1},
            "status": {}})
        await self._create_pod(ns, name)

    async def _create_pod(self, ns: str, name: str) -> None:
        sandbox = self.api.get(SANDBOXES, ns, name)
        if sandbox is None:
            return
        template = sandbox["spec"]["podTemplate"]
        labels = {**(template.get("metadata") or {}).get("labels", {}), NAME_HASH_LABEL: name_hash(name)}
        claim_uid = sandbox["metadata"].get("labels", {}).get(CLAIM_UID_LABEL)
        if claim_uid:
            labels[CLAIM_UID_LABEL] = claim_uid
        await self.api.put(PODS, ns, {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels, "ownerReferences": [_ref(sandbox)]},
            "spec": copy.deepcopy(template["spec"]), "status": {"phase": "Pending"}})
        pod = self.api.get(PODS, ns, name)
        assert pod is not None
        await self.kubelet.start(ns, pod)

    async def _on_pod_change(self, ns: str, name: str) -> None:
        """Mirror a pod's state into its Sandbox, and that into the claim that owns it."""
        pod = self.api.get(PODS, ns, name)
        sandbox = self.api.get(SANDBOXES, ns, name)
        if pod is None or sandbox is None:
            return
        status = pod.get("status") or {}
        phase = status.get("phase")
        ready = phase == "Running" and any(
            c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or [])
        conditions = [_condition("Ready", ready, "DependenciesReady" if ready else "DependenciesNotReady")]
        if phase in ("Succeeded", "Failed"):
            reason = "PodSucceeded" if phase == "Succeeded" else "PodFailed"
            conditions.append(_condition("Finished", True, reason))
        ips = [ip["ip"] for ip in status.get("podIPs") or []]
        await self.api.patch(SANDBOXES, ns, name, {"status": {"conditions": conditions, "podIPs": ips}})
        await self._sync_claim(ns, name)

    async def _pod_deleted(self, ns: str, name: str) -> None:
        """A pod of a live Sandbox went (an eviction): not Ready meanwhile, then made again."""
        if self.api.get(SANDBOXES, ns, name) is None:
            return
        await self.api.patch(SANDBOXES, ns, name, {"status": {
            "conditions": [_condition("Ready", False, "DependenciesNotReady")], "podIPs": None}})
        await self._sync_claim(ns, name)
        await self._create_pod(ns, name)

    async def _delete_sandbox(self, ns: str, name: str) -> None:
        sandbox = self.api.get(SANDBOXES, ns, name)
        if sandbox is None:
            return
        await self.api.remove(SANDBOXES, ns, name)
        await self.kubelet.stop(ns, name)
        await self.api.remove(PODS, ns, name)

    async def _collect(self, ns: str, owner_uid: str) -> None:
        """The garbage collector: delete the sandboxes (and so the pods) ``owner_uid`` controlled."""
        for sandbox in self.api.items(SANDBOXES):
            if sandbox["metadata"]["namespace"] == ns and _owner_uid(sandbox) == owner_uid:
                await self._delete_sandbox(ns, sandbox["metadata"]["name"])

    # -- the claim controller ----------------------------------------------------------------

    def _on_api_write(self, verb: str, resource: str, ns: str, obj: dict[str, Any]) -> None:
        if resource != "sandboxclaims" or not obj:
            return
        if verb == "create":
            self._spawn(self._claim_created(ns, obj))
        elif verb == "delete":
            self._spawn(self._collect(ns, obj["metadata"]["uid"]))

    async def _claim_created(self, ns: str, claim: dict[str, Any]) -> None:
        name = claim["metadata"]["name"]
        template_name = claim["spec"]["sandboxTemplateRef"]["name"]
        template = self.api.get(TEMPLATES, ns, template_name)
        if template is None:
            await self.api.patch(CLAIMS, ns, name, {"status": {"conditions": [_condition(
                "Ready", False, "TemplateNotFound", f'SandboxTemplate "{template_name}" not found')]}})
            return
        pool = str(claim["spec"].get("warmpool") or "")
        assert self._lock is not None
        async with self._lock:
            candidates = self._pool_sandboxes(ns, pool)
            if candidates:
                await self._adopt(ns, candidates[0], claim)
        if candidates:
            await self._sync_claim(ns, candidates[0]["metadata"]["name"])
            await self._reconcile_pool(ns, pool)
        else:
            await self._create_sandbox(ns, name, template, claim, {CLAIM_UID_LABEL: claim["metadata"]["uid"]})

    async def _adopt(self, ns: str, sandbox: dict[str, Any], claim: dict[str, Any]) -> None:
        name = sandbox["metadata"]["name"]
        uid = claim["metadata"]["uid"]
        await self.api.patch(SANDBOXES, ns, name, {"metadata": {
            "labels": {POOL_LABEL: None, TEMPLATE_LABEL: None, CLAIM_UID_LABEL: uid},
            "ownerReferences": [_ref(claim)]}})
        await self.api.patch(PODS, ns, name, {"metadata": {"labels": {CLAIM_UID_LABEL: uid}}})
        await self.api.patch(CLAIMS, ns, claim["metadata"]["name"], {"metadata": {
            "labels": {"agents.x-k8s.io/sandbox-name": name}}})

    async def _sync_claim(self, ns: str, sandbox_name: str) -> None:
        """Forward a claimed Sandbox's Ready (and Finished) to its claim, which names it."""
        sandbox = self.api.get(SANDBOXES, ns, sandbox_name)
        if sandbox is None:
            return
        owner = next((r for r in sandbox["metadata"].get("ownerReferences") or []
                      if r.get("kind") == "SandboxClaim"), None)
        claim = self.api.get(CLAIMS, ns, owner["name"]) if owner else None
        if claim is None or claim["metadata"]["uid"] != owner["uid"]:  # type: ignore[index]
            return
        conditions = [c for c in (sandbox.get("status") or {}).get("conditions") or []
                      if c["type"] in ("Ready", "Finished")]
        await self.api.patch(CLAIMS, ns, claim["metadata"]["name"], {"status": {
            "conditions": conditions or [_condition("Ready", False, "SandboxNotReady")],
            "sandbox": {"name": sandbox_name, "podIPs": (sandbox.get("status") or {}).get("podIPs") or []}}})

    async def _expire_claims(self) -> None:
        """Delete claims past their ``lifecycle.shutdownTime`` (``shutdownPolicy: Delete``)."""
        while True:
            await asyncio.sleep(EXPIRY_CHECK_SECONDS)
            at = datetime.datetime.now(tz=datetime.UTC)
            for claim in self.api.items(CLAIMS):
                lifecycle = claim["spec"].get("lifecycle") or {}
                when = lifecycle.get("shutdownTime")
                if when and lifecycle.get("shutdownPolicy") == "Delete" and datetime.datetime.fromisoformat(
                        when.replace("Z", "+00:00")) <= at:
                    ns = claim["metadata"]["namespace"]
                    await self.api.remove(CLAIMS, ns, claim["metadata"]["name"])
                    await self._collect(ns, claim["metadata"]["uid"])

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
