"""Kubernetes client configuration, a client-side rate limit, and retries of infrastructure faults."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import urllib3
from kubernetes import client
from kubernetes import config as _config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from sandq.sandbox.backend import InfrastructureFault
from sandq.sandbox.metrics import record_api_error
from sandq.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

config: Any = _config  # the loaders are untyped

_RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
_MAX_BACKOFF_SECONDS = 30.0


def load_configuration(settings: Settings) -> client.Configuration:
    """Explicit kubeconfig if set, else in-cluster, else ``~/.kube/config`` (GkeCodeExecutor's order)."""
    cfg = client.Configuration()
    if settings.kubeconfig_path:
        config.load_kube_config(
            config_file=settings.kubeconfig_path, context=settings.kubeconfig_context,
            client_configuration=cfg,
        )
    else:
        try:
            config.load_incluster_config(client_configuration=cfg)
        except ConfigException:
            config.load_kube_config(context=settings.kubeconfig_context, client_configuration=cfg)
    cfg.retries = False  # sandq retries itself, and only infrastructure faults
    cfg.connection_pool_maxsize = max(settings.concurrency + 4, 8)
    return cfg


class RateLimiter:
    """A thread-safe token bucket: ``qps`` tokens a second, at most ``burst`` saved up."""

    def __init__(self, qps: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.qps = qps
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Take one token, sleeping until one is free; return the seconds waited."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.qps)
            self._last = now
            self._tokens -= 1
            wait = 0.0 if self._tokens >= 0 else -self._tokens / self.qps
        if wait > 0:
            time.sleep(wait)
        return wait


@dataclass(frozen=True)
class Fault:
    """A retryable infrastructure fault and how long the server asked us to wait."""

    reason: str
    retry_after: float | None = None


def _retry_after(error: ApiException) -> float | None:
    value = (error.headers or {}).get("Retry-After")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        try:
            return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
        except (TypeError, ValueError):
            return None


def retryable(error: BaseException) -> Fault | None:
    """The fault if ``error`` is a transient infrastructure fault, else None.

    Retryable: 429 (honouring Retry-After), 5xx, ``403 exceeded quota``, and
    connection errors. Everything else (404, 409, 422, other 403s) is not.
    """
    if isinstance(error, ApiException):
        status = int(error.status or 0)
        if status in _RETRYABLE_STATUS or status > 500:
            return Fault(f"HTTP {status} {error.reason}", _retry_after(error))
        if status == 403 and "exceeded quota" in str(error.body or ""):
            return Fault("403 exceeded quota", _retry_after(error))
        if status == 0:
            return Fault(f"API unreachable: {error.reason}")
        return None
    if isinstance(error, urllib3.exceptions.HTTPError | ConnectionError | TimeoutError):
        return Fault(f"API unreachable: {type(error).__name__}: {error}")
    return None


def error_code(error: BaseException) -> str | None:
    """What a failed API call's ``error`` says, for the error metric: its HTTP status, ``timeout`` or
    ``unreachable``; None if it is no API error."""
    if isinstance(error, ApiException):
        return str(error.status) if error.status else "unreachable"
    if isinstance(error, TimeoutError | urllib3.exceptions.TimeoutError):
        return "timeout"
    if isinstance(error, urllib3.exceptions.HTTPError | ConnectionError):
        return "unreachable"
    return None


class KubeApi:
    """The typed API objects of one worker, behind one rate limiter and one retry policy."""

    def __init__(self, settings: Settings, api_client: client.ApiClient | None = None) -> None:
        self.settings = settings
        # Typed as Any: the generated client's annotations are partial.
        self.api_client: Any = api_client or client.ApiClient(load_configuration(settings))
        self.core: Any = client.CoreV1Api(self.api_client)
        self.batch: Any = client.BatchV1Api(self.api_client)
        self.custom: Any = client.CustomObjectsApi(self.api_client)
        # kubernetes.stream swaps its ApiClient's call_api while it connects: attaches get a client
        # of their own, and connect one at a time, so that no other call goes out as a websocket.
        self.streams: Any = client.CoreV1Api(client.ApiClient(self.api_client.configuration))
        self.streams_lock = threading.Lock()
        self.limiter = RateLimiter(settings.api_qps, settings.api_burst)
        self.timeout = settings.api_timeout_seconds

    def call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call ``fn`` rate-limited, retrying infrastructure faults with backoff.

        Raises ``InfrastructureFault`` when a fault outlives the retries; any
        other ``ApiException`` (404, 409, ...) passes through at once. Every failed call is
        counted by its verb (the first word of ``what``) and ``error_code``.
        """
        kwargs.setdefault("_request_timeout", self.timeout)
        delay = self.settings.api_backoff_seconds
        attempt = 0
        while True:
            self.limiter.acquire()
            try:
                return fn(*args, **kwargs)
            except Exception as error:
                code = error_code(error)
                if code is not None:
                    record_api_error(what.split(maxsplit=1)[0], code)
                fault = retryable(error)
                if fault is None:
                    raise
                if attempt >= self.settings.api_retries:
                    raise InfrastructureFault(f"{what}: {fault.reason} (after {attempt} retries)") from error
                attempt += 1
                wait = fault.retry_after if fault.retry_after is not None else delay
                log.warning("%s: %s; retry %d in %.2fs", what, fault.reason, attempt, wait)
                time.sleep(min(wait, _MAX_BACKOFF_SECONDS))
                delay = min(delay * 2, _MAX_BACKOFF_SECONDS)

    def close(self) -> None:
        """Close the connection pools."""
        self.api_client.close()
        self.streams.api_client.close()
