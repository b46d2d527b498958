"""The worker's warm sandboxes: booted ahead of demand, each handed out once, sized to the arrivals.

A warm sandbox has booted gVisor and started the runner, which waits for its job on stdin;
taking one skips the boot. Only requests of the pool's ``Shape`` (the default cpu and memory)
take from it; the timeout and output caps travel with the job. One pool serves every
execution of the worker (the threads pool: one process per worker host).

- **Size**: ``sizing.Demand`` (Little's law on the arrival rate, between ``warm_pool_min``
  and ``warm_pool_max``). A request that takes a sandbox wakes the refill thread, which boots
  its replacement at once; sandboxes beyond the size are removed once they have waited
  ``warm_pool_idle_seconds``.
- **CPU**: a sandbox boots at the lowest CPU weight and without quota (``cgroup``), so boots
  run on CPU that running sandboxes leave; when taken it gets the weight of its work
  (interactive above batch), and its shape's quota once its runner is ready, before its job is
  written.
- **Interactive reserve**: while interactive work is around, batch work leaves it the first
  ``warm_pool_reserve`` sandboxes, and the boots that refill them run at interactive weight.
- **Boots at once**: every boot holds one of the worker's ``booting.BootSlots`` until its runner
  is ready. The pool boots ahead of demand only on a slot nobody waits for, a few at a time:
  one per core, one more for a while after a request found none ready (``Demand.ahead``), or
  ``max_booting_ahead``; a boot that refills the interactive reserve goes ahead of batch
  requests waiting for one.
- A request that finds nothing it may take takes a sandbox still booting (its job waits in
  stdin) rather than starting another; with none booting either, it starts one cold, on a slot.
- If the worker dies, even by SIGKILL, its sandboxes die with it (``sandbox._Spawner``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from sandq.broker.routing import Priority
from sandq.sandbox.gvisor import cgroup
from sandq.sandbox.gvisor.booting import BootSlots, Rank, cores
from sandq.sandbox.gvisor.bundle import Shape
from sandq.sandbox.gvisor.sandbox import LocalSandbox
from sandq.sandbox.gvisor.sizing import Demand, pick, refilling_reserve
from sandq.sandbox.metrics import Start, record_start, record_warm_pool
from sandq.settings import Settings

log = logging.getLogger(__name__)

READY_TIMEOUT_SECONDS = 60.0
"""A boot not ready after this long is abandoned (boots wait for spare CPU, so allow for a busy host)."""
FAILURE_BACKOFF_SECONDS = 5.0
TICK_SECONDS = 1.0
"""How often the refill thread looks at the size when nothing happens."""
CGROUP_POLL_SECONDS = 0.025
"""How often the refill thread looks again for the cgroup of a boot it must reweigh (refilling the
interactive reserve) while runsc is still setting it up."""
ARM_TIMEOUT_SECONDS = 10.0
"""Longest wait for a taken sandbox's cgroup, before its limits can be set."""


@dataclass
class _Boot:
    sandbox: LocalSandbox
    shares: int = cgroup.BOOT_SHARES
    """Its CPU weight (the bundle's, until reweighed)."""


@dataclass
class _Ready:
    sandbox: LocalSandbox
    since: float


class WarmPool:
    """Keeps booted sandboxes of one shape, as many as demand calls for; each is taken at most once."""

    def __init__(self, settings: Settings, shape: Shape, slots: BootSlots) -> None:
        """Start refilling; boots take ``slots`` (the pool is woken whenever one frees)."""
        self.settings = settings
        self.shape = shape
        self.slots = slots
        self.weighted = cgroup.supported()
        """Boots are weighted, and a taken sandbox's quota set, through its cgroup (cgroups v1);
        otherwise every sandbox starts with its quota, as a cold one does."""
        self.demand = Demand(settings)
        self.ahead_floor = 0 if settings.max_booting_ahead else cores()
        """Boots ahead of demand at once: this many, one more while the refills fall behind (0:
        ``max_booting_ahead`` fixes them)."""
        self._ready: deque[_Ready] = deque()
        self._booting: list[_Boot] = []
        self._lock = threading.Lock()
        self._closed = False
        self._resume_at = 0.0
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._remover = ThreadPoolExecutor(max_workers=2, thread_name_prefix="sandq-pool-remove")
        slots.on_free = self._wake
        self._thread = threading.Thread(target=self._refill, name="sandq-warm-pool", daemon=True)
        self._thread.start()

    def take(self, priority: Priority) -> LocalSandbox | None:
        """A sandbox of this pool's shape, limited for its job (ready, or still booting), or None: start
        one cold. Counts the start (``sandq_sandbox_starts_total``)."""
        interactive = priority == "interactive"
        with self._lock:
            self.demand.arrived(time.monotonic(), interactive)
        while True:
            with self._lock:
                if self._closed:
                    return None
                now = time.monotonic()
                index = pick(len(self._ready), len(self._booting), self.demand.reserve(now), interactive)
                popped = None if index is None else self._pop(index)
                if popped is None or popped[1] != "ready":
                    self.demand.missed(now)
            self._wake()
            if popped is None:
                return None
            sandbox, start = popped
            if self._arm(sandbox, interactive):
                record_start(start)
                return sandbox
            log.warning("warm sandbox %s could not be handed over; trying another", sandbox.name)
            self._discard(sandbox)

    def ready_count(self) -> int:
        """How many sandboxes wait, booted, in the pool now."""
        with self._lock:
            return len(self._ready)

    def booting_count(self) -> int:
        """How many sandboxes of the pool are booting now."""
        with self._lock:
            return len(self._booting)

    def target(self) -> int:
        """How many sandboxes the pool keeps now, ready or booting."""
        with self._lock:
            return self.demand.target(time.monotonic())

    def close(self) -> None:
        """Stop refilling and remove every sandbox still in the pool."""
        with self._lock:
            self._closed = True
        self._wake()
        self._thread.join(timeout=30)
        self.slots.on_free = None  # its wake-up pipe closes below
        with self._lock:
            left = [r.sandbox for r in self._ready] + [b.sandbox for b in self._booting]
            self._ready.clear()
            self._booting.clear()
        for sandbox in left:
            self._discard(sandbox)
        record_warm_pool(0, 0, 0)
        self._remover.shutdown(wait=True)
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _pop(self, index: int) -> tuple[LocalSandbox, Start]:
        if index < len(self._ready):
            ready = self._ready[index]
            del self._ready[index]
            return ready.sandbox, "ready"
        return self._booting.pop(index - len(self._ready)).sandbox, "booting"

    def _arm(self, sandbox: LocalSandbox, interactive: bool) -> bool:
        """Give a taken sandbox its work's CPU weight; False if it cannot serve. (Its quota is set once
        its runner is ready, before its job is written: ``LocalSandbox.execute``.)"""
        if not self.weighted:
            return sandbox.alive()
        deadline = time.monotonic() + ARM_TIMEOUT_SECONDS
        while not cgroup.joined(sandbox.name):  # taken early in its boot: runsc is still setting it up
            if not sandbox.alive() or time.monotonic() > deadline:
                return False
            time.sleep(0.002)
        try:
            cgroup.set_shares(sandbox.name, cgroup.shares_of(interactive))
        except OSError as error:
            log.warning("could not weigh the CPU of %s: %s", sandbox.name, error)
            return False
        return sandbox.alive()

    def _discard(self, sandbox: LocalSandbox) -> None:
        """Remove ``sandbox`` off the caller's path (inline once the pool is closed)."""
        try:
            self._remover.submit(sandbox.remove)
        except RuntimeError:  # the remover has shut down
            sandbox.remove()

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"\0")

    def _refill(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
                now = time.monotonic()
                target = self.demand.target(now)
                surplus = self._surplus(now, target)
                missing = 0 if now < self._resume_at else target - len(self._ready) - len(self._booting)
                fds = [b.sandbox.proc.stderr.fileno() for b in self._booting if b.sandbox.proc.stderr]
                weighing = self._weigh(now)
                reserve_short = self.demand.reserve(now) - len(self._ready) - len(self._booting)
                counts = (len(self._ready), len(self._booting), target)
                ahead = self.demand.ahead(now, self.ahead_floor) if self.ahead_floor else 0
            record_warm_pool(*counts)
            if ahead:
                self.slots.pace(ahead)
            self.slots.hold(reserve_short)
            for sandbox in surplus:
                self._discard(sandbox)
            if missing > 0 and self._boot(missing, reserve_short):
                continue
            try:
                wait = CGROUP_POLL_SECONDS if weighing else TICK_SECONDS
                readable, _, _ = select.select([self._wake_r, *fds], [], [], wait)
            except (OSError, ValueError):  # a boot was taken and closed meanwhile
                continue
            if self._wake_r in readable:
                os.read(self._wake_r, 4096)
            self._collect(set(readable))

    def _surplus(self, now: float, target: int) -> list[LocalSandbox]:
        """Ready sandboxes beyond ``target`` that have waited ``warm_pool_idle_seconds``, taken out."""
        out = []
        while (len(self._ready) + len(self._booting) > target and self._ready
               and now - self._ready[0].since >= self.demand.window):
            out.append(self._ready.popleft().sandbox)
        return out

    def _weigh(self, now: float) -> bool:
        """Weigh each booting sandbox: interactive if it refills the reserve, else the lowest weight.

        True if one could not be reweighed yet (runsc is still setting its cgroup up).
        """
        if not self.weighted:
            return False
        refill = refilling_reserve(len(self._ready), len(self._booting), self.demand.reserve(now))
        pending = False
        for at, boot in enumerate(self._booting):
            shares = cgroup.INTERACTIVE_SHARES if at < refill else cgroup.BOOT_SHARES
            if boot.shares == shares:
                continue
            if not cgroup.joined(boot.sandbox.name):
                pending = True
                continue
            try:
                cgroup.set_shares(boot.sandbox.name, shares)
                boot.shares = shares
            except OSError:  # it died meanwhile: _collect sees it
                continue
        return pending

    def _boot(self, count: int, reserve_short: int) -> bool:
        """Start up to ``count`` boots, as slots allow (the first ``reserve_short`` refill the interactive
        reserve); True if one started."""
        started = False
        for at in range(count):
            slot = self.slots.try_acquire(Rank.INTERACTIVE if at < reserve_short else Rank.AHEAD)
            if slot is None:
                return started  # woken again when a slot frees
            try:
                shares = cgroup.BOOT_SHARES if self.weighted else cgroup.BATCH_SHARES
                sandbox = LocalSandbox(
                    self.settings, self.shape, shares=shares, quota_when_ready=self.weighted, slot=slot
                )
            except OSError as error:
                log.warning("could not start a warm sandbox: %s", error)
                self._back_off()
                return started
            with self._lock:
                self._booting.append(_Boot(sandbox))
            started = True
        return started

    def _collect(self, readable: set[int]) -> None:
        """Pool the boots that are ready; drop those that failed or took too long."""
        now = time.monotonic()
        failed = []
        with self._lock:
            for boot in list(self._booting):
                stderr = boot.sandbox.proc.stderr
                # (the descriptor of a sandbox taken meanwhile may have been reused: look again)
                done = stderr is not None and stderr.fileno() in readable and boot.sandbox.ready_to_read(0)
                if not (done or now - boot.sandbox.started > READY_TIMEOUT_SECONDS):
                    continue
                self._booting.remove(boot)
                if done and boot.sandbox.wait_ready(0) and boot.sandbox.boot_seconds is not None:
                    self._ready.append(_Ready(boot.sandbox, now))
                    self.demand.booted(boot.sandbox.boot_seconds)
                else:
                    failed.append(boot.sandbox)
        for sandbox in failed:
            log.warning("warm sandbox %s failed to start", sandbox.name)
            self._discard(sandbox)
            self._back_off()

    def _back_off(self) -> None:
        with self._lock:
            self._resume_at = time.monotonic() + FAILURE_BACKOFF_SECONDS
