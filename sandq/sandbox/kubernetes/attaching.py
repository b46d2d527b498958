"""Handing a warm pod its job through ``pods/attach``, and reading what its runner writes back.

One websocket (``v5.channel.k8s.io``, the official client's ``kubernetes.stream``) per
execution: the runner's source and the job go in on stdin (channel 0) in chunks; the runner's
stdout (channel 1) brings ``STARTED``, then the framed report, in which the program's stdout
and stderr stay apart, capped; its stderr (channel 2) only the runner's own complaints. The
pod's ``stdinOnce`` closes its stdin when this one session ends, so a pod never takes a second
job, and the session needs no network path to the pod (API server to kubelet only).

Reading stops at the report's end, at a cap (more than a report's worth), at the deadline, on
cancellation, or when the stream ends or breaks; ``Session`` says which, and whether the runner
said it started (what followed may be the user's code) or the last chunk of the job was on its
way (the runner may have it whole: the code may have run unseen).
"""

from __future__ import annotations

import functools
import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import websocket
from kubernetes.client.exceptions import ApiException
from kubernetes.stream import ws_client

from sandq.sandbox.kubernetes.api import KubeApi
from sandq.sandbox.kubernetes.manifests import CONTAINER
from sandq.sandbox.protocol import FRAME_BEGIN, FRAME_END, STARTED

CHUNK_BYTES = 64 * 1024
"""Largest websocket message of the job (the API server and the kubelet relay each one whole)."""
POLL_SECONDS = 0.25
"""How often a reader waiting for output checks for cancellation."""
STDERR_CAP = 8 * 1024
"""Most bytes of the runner's own stderr kept (for error messages)."""

_STARTED = STARTED.encode("ascii")
_BEGIN = FRAME_BEGIN.encode("ascii")
_END = FRAME_END.encode("ascii")

_stream_module: Any = importlib.import_module("kubernetes.stream.stream")
_attach = functools.partial(
    _stream_module._websocket_request, functools.partial(ws_client.websocket_call, capture_all=False), None
)
"""``kubernetes.stream.stream`` without its copy of every byte read (``capture_all``)."""


class Ending(StrEnum):
    """Why reading an attached pod stopped."""

    FRAMED = "framed"
    """The report came whole."""
    CLOSED = "closed"
    """The stream ended without it: the runner exited, or the pod went."""
    CUT = "cut"
    """The connection failed (or never opened)."""
    CANCELLED = "cancelled"
    DEADLINE = "deadline"
    """No ``STARTED`` in time after the job was sent, or no report by the run's deadline."""
    OVERFLOW = "overflow"
    """More came than a report can take."""


@dataclass
class Session:
    """What one attach brought: how it ended, the runner's stdout and stderr, and how far it got."""

    ending: Ending = Ending.CUT
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    delivering: bool = False
    """The job's last chunk was on its way: the runner may hold the whole job."""
    error: str = ""

    @property
    def started(self) -> bool:
        """The runner wrote ``STARTED``: it holds its job, and the code may have run."""
        return self.stdout[: len(_STARTED)] == _STARTED

    @property
    def framed(self) -> bool:
        """The report came whole."""
        return self.stdout.find(_BEGIN) >= 0 and self.stdout.endswith(_END)

    def why(self) -> str:
        """The error, and the tail of the runner's stderr, for a message."""
        tail = bytes(self.stderr[-500:]).decode("utf-8", errors="replace").strip()
        return "; ".join(part for part in (self.error, tail) if part) or self.ending.value


def attach(
    api: KubeApi,
    pod: str,
    payload: bytes,
    *,
    cap: int,
    run_seconds: float,
    cancelled: Callable[[], bool],
) -> Session:
    """Attach to ``pod``'s runner, hand it ``payload`` and read until one of the ``Ending``\\ s.

    ``cap`` bounds what is read from stdout; the runner has ``api.timeout`` seconds to say it
    started once the job is sent, then ``run_seconds`` for its report.
    """
    session = Session()
    websocket.setdefaulttimeout(api.timeout)  # connect and send; reading waits in poll()
    try:
        with api.streams_lock:
            stream = _attach(
                api.streams.connect_get_namespaced_pod_attach, pod, api.settings.namespace,
                container=CONTAINER, stdin=True, stdout=True, stderr=True, tty=False, binary=True,
                _preload_content=False,
            )
    except ApiException as error:
        session.error = f"attach to pod {pod} failed: {error.reason or error.status}"
        return session
    try:
        _deliver(stream, payload, session)
        session.ending = _read(stream, session, cap, api.timeout, run_seconds, cancelled)
    except (websocket.WebSocketException, OSError) as error:
        session.error = f"the attach to pod {pod} broke: {type(error).__name__}: {error}"
        session.ending = Ending.CUT
    finally:
        stream.close()
    return session


def _deliver(stream: Any, payload: bytes, session: Session) -> None:
    """Send ``payload`` on stdin in chunks, then close stdin (v5; the runner needs no end of stdin)."""
    chunks = [payload[at : at + CHUNK_BYTES] for at in range(0, len(payload), CHUNK_BYTES)]
    for index, chunk in enumerate(chunks):
        session.delivering = index == len(chunks) - 1
        stream.write_stdin(chunk)
    stream.close_channel(ws_client.STDIN_CHANNEL)


def _read(
    stream: Any, session: Session, cap: int, start_seconds: float, run_seconds: float,
    cancelled: Callable[[], bool],
) -> Ending:
    deadline = time.monotonic() + start_seconds
    started = False
    while True:
        if cancelled():
            return Ending.CANCELLED
        left = deadline - time.monotonic()
        if left <= 0:
            return Ending.DEADLINE
        stream.update(timeout=min(left, POLL_SECONDS))
        session.stdout += stream.read_channel(ws_client.STDOUT_CHANNEL)
        room = STDERR_CAP - len(session.stderr)
        session.stderr += stream.read_channel(ws_client.STDERR_CHANNEL)[: max(room, 0)]
        if not started and session.started:
            started = True
            deadline = time.monotonic() + run_seconds
        if session.framed:
            return Ending.FRAMED
        if len(session.stdout) > cap:
            return Ending.OVERFLOW
        if not stream.is_open():
            return Ending.CLOSED
