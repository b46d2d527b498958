"""The warm path: each execution in a sandbox that agent-sandbox started ahead of time.

Per execution: create a SandboxClaim (write 1) and wait, on the process's shared watch of
claims, until it is Ready and names its sandbox (whose pod bears the same name); attach to
that pod once, handing its runner the job and reading its report (``attaching``); delete the
claim (write 2), which takes the sandbox and its pod with it, off the result's path (a claim
whose delete fails expires by its ``lifecycle``). The pod was scheduled, pulled
and booted from the SandboxTemplate before the request came; an empty pool makes agent-sandbox
start one cold, which the claim waits for up to ``warm_claim_timeout_seconds``.

How an execution ends, Job-path rules throughout (a user's code is never run twice):

* the report came whole: it is the result;
* no sandbox in time, or the job could not be handed over whole: nothing ran, the fault is
  retried (``InfrastructureFault``);
* the stream ended or broke once the runner may hold its job: the pod's end and its log
  (which has ``STARTED`` and the report too) tell what happened, as a Job's pod's would; a pod
  that ended without ``STARTED`` ran nothing (retried); a pod evicted or deleted while its code
  may run is an ``infrastructure_error``, never run again;
* past the deadline the claim is deleted: ``timed_out`` once the code had started.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from sandq.contract import ExecutionRequest, SandboxReport, Status, now
from sandq.sandbox.backend import InfrastructureFault
from sandq.sandbox.kubernetes import classify
from sandq.sandbox.kubernetes.api import KubeApi
from sandq.sandbox.kubernetes.attaching import Ending, Session, attach
from sandq.sandbox.kubernetes.classify import Obj
from sandq.sandbox.kubernetes.creating import Launched, LaunchRejected, create_or_adopt
from sandq.sandbox.kubernetes.deleting import delete_object
from sandq.sandbox.kubernetes.fetching import frame_cap, read_logs
from sandq.sandbox.kubernetes.manifests import (
    CLAIMS,
    CLAIMS_GROUP,
    CLAIMS_VERSION,
    EXECUTION_ID_ANNOTATION,
    claim_manifest,
    run_deadline_seconds,
)
from sandq.sandbox.kubernetes.watching import SharedWatch
from sandq.sandbox.protocol import FRAME_BEGIN, STARTED, attached_payload, parse_frame

POLL_SECONDS = 1.0
"""Longest wait between two looks at the cache (a change wakes the waiter at once)."""
BACKSTOP_MARGIN_SECONDS = 30.0
"""Slack past a started run's deadline before sandq stops it itself."""
REFUSED_REASONS = frozenset({"TemplateNotFound", "InvalidMetadata"})
"""Claim conditions no retry can fix: the execution ends as an infrastructure error at once."""


class _Gone:
    """The bound pod was deleted, or replaced by another of its name (its sandbox recreates it)."""


GONE = _Gone()

Ended = SandboxReport | InfrastructureFault


@dataclass(frozen=True)
class Bound:
    """A claim that holds its sandbox: the pod to attach to, and which pod it was (its uid)."""

    pod: str
    pod_uid: str


def _uid(obj: Obj | None) -> str:
    return str(((obj or {}).get("metadata") or {}).get("uid") or "")


def claim_binding(claim: Obj) -> tuple[str | None, str | None]:
    """(the pod of a Ready claim, the reason of a refused one); (None, None) while it waits."""
    status = claim.get("status") or {}
    ready: Obj = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
    pod = (status.get("sandbox") or {}).get("name")
    if ready.get("status") == "True" and pod:
        return str(pod), None
    reason = ready.get("reason")
    if reason in REFUSED_REASONS:
        return None, f"{reason}: {ready.get('message') or ''}".rstrip(": ")
    return None, None


def list_claims(api: KubeApi, namespace: str, **options: Any) -> Any:
    """List (or watch) the namespace's SandboxClaims: the shared watch's third stream."""
    list_objects = api.custom.list_namespaced_custom_object
    return list_objects(CLAIMS_GROUP, CLAIMS_VERSION, namespace, CLAIMS, **options)


def _claims_api(api: KubeApi, verb: str) -> Callable[..., Any]:
    method = getattr(api.custom, f"{verb}_namespaced_custom_object")
    return functools.partial(method, CLAIMS_GROUP, CLAIMS_VERSION, api.settings.namespace, CLAIMS)


class WarmPath:
    """Runs executions in claimed warm sandboxes; one per backend."""

    def __init__(self, api: KubeApi, watch: SharedWatch, cancelled: Callable[[str], bool]) -> None:
        self.api = api
        self.settings = api.settings
        self.watch = watch
        self.cancelled = cancelled
        self._releases = ThreadPoolExecutor(max_workers=2, thread_name_prefix="sandq-release")

    def close(self) -> None:
        """Finish the claims' deletes still under way."""
        self._releases.shutdown(wait=True)

    def run(self, execution_id: str, request: ExecutionRequest) -> SandboxReport:
        """Run ``request`` in a claimed sandbox; raise ``InfrastructureFault`` when nothing ran."""
        self.watch.add(CLAIMS, functools.partial(list_claims, self.api))
        started = now()
        body = claim_manifest(request, self.settings, execution_id, started)
        try:
            claim = create_or_adopt(
                self.api, "SandboxClaim", _claims_api(self.api, "create"), _claims_api(self.api, "get"), body,
                EXECUTION_ID_ANNOTATION,
            )
        except LaunchRejected as error:  # 404: no agent-sandbox CRDs; 403: the Role lacks the warm rules
            why = f"{error} (warm sandboxes need agent-sandbox and the warm-sandboxes deploy component)"
            return SandboxReport(status=Status.INFRASTRUCTURE_ERROR, error=why, started_at=started)
        name = claim.name
        try:
            bound = self._bind(claim, execution_id)
            ended = bound if not isinstance(bound, Bound) else self._run(claim, bound, execution_id, request)
            name = bound.pod if isinstance(bound, Bound) else name
        finally:
            delete = _claims_api(self.api, "delete")
            self._releases.submit(delete_object, self.api, "SandboxClaim", delete, claim.name)
        if isinstance(ended, InfrastructureFault):
            raise ended
        return ended.model_copy(update={"sandbox_name": name, "started_at": started, "finished_at": now()})

    def _bind(self, claim: Launched, execution_id: str) -> Bound | Ended:
        """Wait for the claim's sandbox and its pod, up to the claim timeout."""
        timeout = self.settings.warm_claim_timeout_seconds
        end = time.monotonic() + timeout
        pod: str | None = None
        with self.watch.listen([claim.name]) as changed:
            while True:
                changed.clear()
                if self.cancelled(execution_id):
                    return SandboxReport(status=Status.CANCELLED, error="cancelled waiting for a sandbox")
                cached = self.watch.get(CLAIMS, claim.name)
                if cached is not None and _uid(cached) == claim.uid:
                    pod, refused = claim_binding(cached)
                    if refused is not None:
                        return SandboxReport(
                            status=Status.INFRASTRUCTURE_ERROR, error=f"SandboxClaim {claim.name}: {refused}"
                        )
                if pod is not None:
                    break
                if time.monotonic() >= end:
                    return InfrastructureFault(f"SandboxClaim {claim.name}: no sandbox within {timeout:g} s")
                changed.wait(min(POLL_SECONDS, max(end - time.monotonic(), 0)))
        with self.watch.listen([pod]) as changed:
            while (cached_pod := self.watch.get("pods", pod)) is None:
                if time.monotonic() >= end:
                    return InfrastructureFault(f"pod {pod} of SandboxClaim {claim.name} never showed up")
                changed.clear()
                changed.wait(min(POLL_SECONDS, max(end - time.monotonic(), 0)))
        return Bound(pod, _uid(cached_pod))

    def _run(self, claim: Launched, bound: Bound, execution_id: str, request: ExecutionRequest) -> Ended:
        """Attach once; the report, or what the pod's end tells (``_recover``)."""
        session = attach(
            self.api, bound.pod, attached_payload(request, self.settings),
            cap=frame_cap(request, self.settings) + len(STARTED), run_seconds=self._run_seconds(request),
            cancelled=lambda: self.cancelled(execution_id),
        )
        if session.ending is Ending.FRAMED and (report := parse_frame(bytes(session.stdout))) is not None:
            return report
        if session.ending is Ending.CANCELLED:
            return SandboxReport(status=Status.CANCELLED, error="cancelled while running")
        if session.ending is Ending.DEADLINE and session.started:
            return _stopped()
        if claim.created and not (session.started or session.delivering):
            return InfrastructureFault(f"could not hand the job to pod {bound.pod}: {session.why()}")
        return self._recover(bound, session, request, execution_id)

    def _run_seconds(self, request: ExecutionRequest) -> float:
        return run_deadline_seconds(request, self.settings) + BACKSTOP_MARGIN_SECONDS

    def _recover(self, bound: Bound, session: Session, request: ExecutionRequest, execution_id: str) -> Ended:
        """The report was not read off the stream, and the code may have run: wait for the pod to end
        and read its log once, as on the Job path."""
        wait = self._run_seconds(request) if session.started else self.api.timeout
        pod = self._wait_end(bound, time.monotonic() + wait, execution_id)
        if isinstance(pod, SandboxReport):
            return pod
        if pod is None:  # still running at the deadline: sandq deletes the claim
            if session.started:
                return _stopped()
            return _lost(bound, f"its runner never said it started ({session.why()})")
        if isinstance(pod, _Gone):
            return _lost(bound, "the pod was deleted (evicted?) before its end could be read")
        logs = read_logs(self.api, bound.pod, frame_cap(request, self.settings) + len(STARTED))
        if logs is None:
            return _lost(bound, "the pod was deleted (evicted?) before its end could be read")
        report = parse_frame(logs)
        if report is not None:
            return report
        if not (session.started or STARTED.encode() in logs or FRAME_BEGIN.encode() in logs):
            return InfrastructureFault(f"pod {bound.pod} ended before its code started: {session.why()}")
        if classify.disrupted(pod):
            return _lost(bound, "the pod was evicted while the code ran")
        verdict = classify.without_frame(None, pod, request.timeout_seconds)
        return verdict.report or SandboxReport(status=Status.INFRASTRUCTURE_ERROR, error=verdict.fault)

    def _wait_end(self, bound: Bound, end: float, execution_id: str) -> Obj | _Gone | SandboxReport | None:
        """The bound pod once it ended; ``GONE`` if it was deleted or replaced; None at ``end``."""
        with self.watch.listen([bound.pod]) as changed:
            while True:
                changed.clear()
                if self.cancelled(execution_id):
                    return SandboxReport(status=Status.CANCELLED, error="cancelled while running")
                pod = self.watch.get("pods", bound.pod)
                if pod is None or _uid(pod) != bound.pod_uid:
                    return GONE
                if classify.pod_phase(pod) in ("Succeeded", "Failed"):
                    return pod
                if time.monotonic() >= end:
                    return None
                changed.wait(min(POLL_SECONDS, max(end - time.monotonic(), 0)))


def _stopped() -> SandboxReport:
    return SandboxReport(
        status=Status.TIMED_OUT, exit_code=classify.KILLED,
        error="the sandbox did not stop at its deadline; sandq deleted its claim",
    )


def _lost(bound: Bound, why: str) -> SandboxReport:
    """The code may have run, and its end is unknown: an error, never retried."""
    return SandboxReport(
        status=Status.INFRASTRUCTURE_ERROR,
        error=f"sandbox pod {bound.pod}: {why}; the code may have run, so it is not run again",
    )
