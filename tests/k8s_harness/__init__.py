"""The missing parts of a cluster, on top of kmock's KubernetesEmulator.

``standin``: the API server stand-in (uids, resourceVersions, garbage
collection, pod logs, request counting, fault injection) run in a thread.
``cluster``: a Job controller and kubelet that run each pod's container
command in the local gVisor sandbox (runsc). ``agent_sandbox``: agent-sandbox's
custom resources and controllers (warm pools, sandboxes, claims); ``attach``:
their kubelet, which starts warm pods in runsc at once and serves ``pods/attach``.
"""

from tests.k8s_harness.standin import Call, FaultRule, RunningStandIn, StandIn

__all__ = ["Call", "FaultRule", "RunningStandIn", "StandIn"]
