"""A pod's memory cgroup that tells an OOM kill from any other SIGKILL, as containerd does.

On cgroup v1 the memory limit is set on a per-pod cgroup that runsc's own cgroup nests in, and
an eventfd is registered on its ``memory.oom_control`` (``cgroup.event_control``): the kernel
signals it when the OOM killer acts there. runsc's own cgroup gets no memory limit, so the OOM
happens in the pod's. Measured here (Debian 12, runsc 20221219): a memory bomb signals it, a
SIGKILL of the sandbox's init does not, and ``oom_kill`` in ``memory.oom_control`` stays 0 for
gVisor's processes either way, so only the event tells. Without cgroup v1's memory controller
(``available`` False) the sandbox keeps runsc's limit and nothing tells an OOM kill apart.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

CGROUP_FS = Path("/sys/fs/cgroup")
MEMORY = CGROUP_FS / "memory"


class MemoryCgroup:
    """The cgroup ``<root>/<pod>`` with the pod's memory limit; runsc's goes below it."""

    available = (MEMORY / "memory.limit_in_bytes").exists()

    def __init__(self, root: str, pod: str, limit: int) -> None:
        self.relative = f"{root}/{pod}"
        self.path = MEMORY / self.relative
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "memory.limit_in_bytes").write_text(str(limit))
        swap = self.path / "memory.memsw.limit_in_bytes"
        if swap.exists():
            swap.write_text(str(limit))
        self.eventfd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        control = os.open(self.path / "memory.oom_control", os.O_RDONLY | os.O_CLOEXEC)
        try:
            (self.path / "cgroup.event_control").write_text(f"{self.eventfd} {control}")
        finally:
            os.close(control)

    @property
    def runsc_path(self) -> str:
        """The ``cgroupsPath`` of the sandbox: inside this cgroup."""
        return f"/{self.relative}/sandbox"

    def oom_killed(self) -> bool:
        """Whether the OOM killer acted in this cgroup since it was made."""
        try:
            return os.eventfd_read(self.eventfd) > 0
        except BlockingIOError:
            return False

    def remove(self) -> None:
        """Close the eventfd and remove this cgroup from every controller (runsc leaves it); one try,
        on the stand-in's loop: what is still busy goes with the cluster's root."""
        os.close(self.eventfd)
        remove_tree(self.relative, attempts=1)


def remove_tree(relative: str, attempts: int = 50) -> None:
    """Remove the cgroup ``relative`` and the cgroups below it, in every controller (retrying while
    the last processes of a sandbox leave them)."""
    for _ in range(attempts):
        left = [c / relative for c in CGROUP_FS.iterdir() if (c / relative).is_dir()]
        for top in left:
            for directory in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                with contextlib.suppress(OSError):
                    directory.rmdir()
            with contextlib.suppress(OSError):
                top.rmdir()
        if not any(top.is_dir() for top in left):
            return
        time.sleep(0.1)
