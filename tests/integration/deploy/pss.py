"""A small checker of the Kubernetes Pod Security Standards (baseline and restricted).

Follows https://kubernetes.io/docs/concepts/security/pod-security-standards/ (v1.33
policy). Works on plain dicts: a Pod, a pod template owner (Deployment, StatefulSet,
DaemonSet, ReplicaSet, Job, CronJob, PodTemplate, agent-sandbox's SandboxTemplate) or a
bare pod spec.

    violations = check(obj, "restricted")   # [] when the pod passes

Each violation is a short sentence naming the container and the field. Restricted
includes every baseline rule. Windows-only exemptions are not modelled (Linux pods).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

LEVELS = ("baseline", "restricted")

BASELINE_CAPABILITIES = frozenset({
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
    "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
})
RESTRICTED_CAPABILITIES = frozenset({"NET_BIND_SERVICE"})
SAFE_SYSCTLS = frozenset({
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
})
SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"})
RESTRICTED_VOLUME_TYPES = frozenset({
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
    "projected", "secret",
})
SECCOMP_ALLOWED = frozenset({"RuntimeDefault", "Localhost"})
APPARMOR_ALLOWED = frozenset({"RuntimeDefault", "Localhost"})
APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"
CONTAINER_FIELDS = ("initContainers", "containers", "ephemeralContainers")

_TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "ReplicationController"}


def pod_of(obj: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(metadata, spec)`` of the pod that ``obj`` runs (a bare spec has empty metadata)."""
    kind = obj.get("kind")
    if kind == "Pod":
        return obj.get("metadata") or {}, obj.get("spec") or {}
    if kind == "PodTemplate":
        template = obj.get("template") or {}
    elif kind == "CronJob":
        template = obj["spec"]["jobTemplate"]["spec"]["template"]
    elif kind in _TEMPLATE_KINDS:
        template = obj["spec"]["template"]
    elif kind == "SandboxTemplate":  # agent-sandbox's template of warm sandbox pods
        template = obj["spec"]["podTemplate"]
    elif kind is None and "containers" in obj:
        return {}, obj
    else:
        raise ValueError(f"{kind} runs no pod")
    return template.get("metadata") or {}, template.get("spec") or {}


def runs_pods(obj: dict[str, Any]) -> bool:
    """Whether ``obj`` is a kind that runs pods."""
    return obj.get("kind") in _TEMPLATE_KINDS | {"Pod", "PodTemplate", "CronJob", "SandboxTemplate"}


def _containers(spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for field in CONTAINER_FIELDS:
        for container in spec.get(field) or []:
            yield f"{field[:-1]} {container.get('name', '?')!r}", container


def check(obj: dict[str, Any], level: str = "restricted") -> list[str]:
    """The violations of ``level`` ("baseline" or "restricted") by ``obj``'s pod."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, not {level!r}")
    metadata, spec = pod_of(obj)
    violations = _baseline(metadata, spec)
    if level == "restricted":
        violations += _restricted(spec)
    return violations


def _baseline(metadata: dict[str, Any], spec: dict[str, Any]) -> list[str]:
    out: list[str] = []
    pod_sc = spec.get("securityContext") or {}
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            out.append(f"pod: {field} is true (host namespaces)")
    if (pod_sc.get("windowsOptions") or {}).get("hostProcess"):
        out.append("pod: windowsOptions.hostProcess is true")
    for volume in spec.get("volumes") or []:
        if "hostPath" in volume:
            out.append(f"volume {volume.get('name')!r}: hostPath")
    out += _seccomp_not_unconfined("pod", pod_sc)
    out += _apparmor("pod", pod_sc)
    out += _selinux("pod", pod_sc)
    for sysctl in pod_sc.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            out.append(f"pod: sysctl {sysctl.get('name')!r} is not in the safe set")
    for key, value in (metadata.get("annotations") or {}).items():
        if key.startswith(APPARMOR_ANNOTATION) and not (
            value == "runtime/default" or value.startswith("localhost/")
        ):
            out.append(f"pod: annotation {key} is {value!r}")
    for where, container in _containers(spec):
        sc = container.get("securityContext") or {}
        if sc.get("privileged"):
            out.append(f"{where}: privileged")
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            out.append(f"{where}: windowsOptions.hostProcess is true")
        added = set((sc.get("capabilities") or {}).get("add") or [])
        if added - BASELINE_CAPABILITIES:
            out.append(f"{where}: adds capabilities {sorted(added - BASELINE_CAPABILITIES)}")
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                out.append(f"{where}: hostPort {port['hostPort']}")
        if sc.get("procMount", "Default") != "Default":
            out.append(f"{where}: procMount {sc['procMount']!r}")
        out += _seccomp_not_unconfined(where, sc)
        out += _apparmor(where, sc)
        out += _selinux(where, sc)
    return out


def _seccomp_not_unconfined(where: str, sc: dict[str, Any]) -> list[str]:
    kind = (sc.get("seccompProfile") or {}).get("type")
    return [f"{where}: seccompProfile is Unconfined"] if kind == "Unconfined" else []


def _apparmor(where: str, sc: dict[str, Any]) -> list[str]:
    kind = (sc.get("appArmorProfile") or {}).get("type")
    if kind is not None and kind not in APPARMOR_ALLOWED:
        return [f"{where}: appArmorProfile is {kind!r}"]
    return []


def _selinux(where: str, sc: dict[str, Any]) -> list[str]:
    opts = sc.get("seLinuxOptions") or {}
    out = []
    if opts.get("type", "") not in SELINUX_TYPES:
        out.append(f"{where}: seLinuxOptions.type {opts['type']!r}")
    out += [f"{where}: seLinuxOptions.{field} is set" for field in ("user", "role") if opts.get(field)]
    return out


def _restricted(spec: dict[str, Any]) -> list[str]:
    out: list[str] = []
    pod_sc = spec.get("securityContext") or {}
    for volume in spec.get("volumes") or []:
        types = set(volume) - {"name"}
        if not types <= RESTRICTED_VOLUME_TYPES:
            out.append(f"volume {volume.get('name')!r}: type {sorted(types - RESTRICTED_VOLUME_TYPES)}")
    if pod_sc.get("runAsUser") == 0:
        out.append("pod: runAsUser is 0")
    pod_nonroot = pod_sc.get("runAsNonRoot") is True
    pod_seccomp = (pod_sc.get("seccompProfile") or {}).get("type") in SECCOMP_ALLOWED
    for where, container in _containers(spec):
        sc = container.get("securityContext") or {}
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{where}: allowPrivilegeEscalation is not false")
        if sc.get("runAsNonRoot") is False or not (pod_nonroot or sc.get("runAsNonRoot") is True):
            out.append(f"{where}: runAsNonRoot is not true")
        if sc.get("runAsUser") == 0:
            out.append(f"{where}: runAsUser is 0")
        container_seccomp = (sc.get("seccompProfile") or {}).get("type")
        if not (container_seccomp in SECCOMP_ALLOWED or (container_seccomp is None and pod_seccomp)):
            out.append(f"{where}: seccompProfile is not RuntimeDefault or Localhost")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            out.append(f"{where}: capabilities do not drop ALL")
        added = set(caps.get("add") or [])
        if added - RESTRICTED_CAPABILITIES:
            out.append(f"{where}: adds capabilities {sorted(added - RESTRICTED_CAPABILITIES)}")
    return out
