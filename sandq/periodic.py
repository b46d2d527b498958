"""Run a function every N seconds in a daemon thread until stopped."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Periodic:
    """Calls ``action`` every ``interval`` seconds; an exception is logged, not fatal."""

    def __init__(self, name: str, interval: float, action: Callable[[], object]) -> None:
        self.interval = interval
        self.action = action
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        """Begin calling ``action`` (first call after one interval)."""
        self._thread.start()

    def _loop(self) -> None:
        while not self._stopped.wait(self.interval):
            try:
                self.action()
            except Exception:
                log.exception("periodic %s failed", self._thread.name)

    def stop(self) -> None:
        """Stop calling ``action``."""
        self._stopped.set()
