"""A local sandbox's CPU weight and quota, set on its running cgroup (cgroups v1, ``cpu`` controller).

A sandbox boots from a bundle whose only CPU resource is a weight: the lowest for a warm one,
whose boot takes only CPU that running sandboxes leave, its work's for a cold one. Without a
quota, a boot finishes fast when CPU is spare (a 500m quota made a cold boot about 120 ms
slower). A warm sandbox gets the weight of its work when it is taken, and every sandbox gets
its shape's quota once its runner is ready, before the job is written to its stdin. runsc
writes the bundle's ``cpu.shares`` when it creates the cgroup, before it moves the sandbox's
first process in, and never writes ``cpu.*`` again, so what is written here once the cgroup
has a process stays (measured on runsc 20221219: 40 of 40;
the cgroup has its first process 35-60 ms after ``runsc run`` starts).
"""

from __future__ import annotations

from pathlib import Path

CPU_ROOT = Path("/sys/fs/cgroup/cpu")
"""The cgroups v1 ``cpu`` hierarchy."""
PARENT = "sandq"
"""Every local sandbox's cgroup is ``/sandq/<name>`` (``linux.cgroupsPath`` of its bundle)."""

BOOT_SHARES = 2
"""The kernel's lowest weight: a boot ahead of demand runs on CPU nothing else wants."""
BATCH_SHARES = 64
"""Batch executions: ahead of boots for the pool, far behind interactive work, so that a boot
refilling the interactive reserve is not slowed down by a batch's boots."""
INTERACTIVE_SHARES = 8192
"""Interactive executions, and boots that refill the interactive reserve."""


def shares_of(interactive: bool) -> int:
    """The CPU weight of an execution: ``INTERACTIVE_SHARES`` or ``BATCH_SHARES``."""
    return INTERACTIVE_SHARES if interactive else BATCH_SHARES


def supported() -> bool:
    """True if this host has the cgroups v1 ``cpu`` controller that weights and quotas are set through."""
    return (CPU_ROOT / "cpu.shares").is_file()


def directory(name: str) -> Path:
    """The ``cpu`` cgroup of the sandbox ``name`` (it exists once runsc has created it)."""
    return CPU_ROOT / PARENT / name


def joined(name: str) -> bool:
    """True once runsc has set up the sandbox's cgroup and moved a process in: writes then stay."""
    try:
        return bool((directory(name) / "cgroup.procs").read_text().strip())
    except OSError:
        return False


def set_shares(name: str, shares: int) -> None:
    """Give the sandbox ``name`` the CPU weight ``shares``; OSError if its cgroup is gone."""
    (directory(name) / "cpu.shares").write_text(str(shares))


def set_quota(name: str, quota_us: int, period_us: int) -> None:
    """Cap the sandbox ``name`` at ``quota_us`` of CPU every ``period_us``, and check it holds.

    OSError if the cgroup is gone or the kernel did not take the value: the caller must not
    hand the sandbox a job then.
    """
    cgroup = directory(name)
    (cgroup / "cpu.cfs_period_us").write_text(str(period_us))
    (cgroup / "cpu.cfs_quota_us").write_text(str(quota_us))
    if int((cgroup / "cpu.cfs_quota_us").read_text()) != quota_us:
        raise OSError(f"the CPU quota of {name} did not take")
