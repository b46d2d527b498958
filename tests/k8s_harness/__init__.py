"""The missing parts of a cluster, on top of kmock's KubernetesEmulator, behaving like Kubernetes 1.31+.

``standin``: the API server stand-in (uids, resourceVersions, watches from a resourceVersion
with 410 Gone, bookmarks, timeouts and selectors (``watches``), finalizers, garbage collection,
the ConfigMap size limit, pod logs with rotation, request counting, fault injection) run in a
thread. ``cluster``: a Job controller; ``node``: a kubelet that runs each pod's container
command in the local gVisor sandbox (runsc), with a memory cgroup that tells OOM kills apart
(``cgroups``). ``agent_sandbox``: agent-sandbox's custom resources and controllers (warm pools,
sandboxes, claims); ``attach``: their kubelet, which starts warm pods in runsc at once and serves
``pods/attach``. ``env``: one of each for a test, and sandq settings pointing at it.
"""

from tests.k8s_harness.standin import Call, FaultRule, RunningStandIn, StandIn

__all__ = ["Call", "FaultRule", "RunningStandIn", "StandIn"]
