"""The worker's /metrics merge: a process's file created but not yet sized does not fail the scrape."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector

from sandq.worker.metrics import SettledFilesCollector


def _files(path: Path) -> None:
    written = MmapedDict(str(path / "counter_101.db"))
    written.write_value(mmap_key("jobs", "jobs_total", [], [], "Jobs."), 3.0, 0.0)
    written.close()
    (path / "counter_102.db").touch()  # a process between creating its file and sizing it


def test_a_file_not_yet_sized_is_left_out_and_the_others_are_served(tmp_path: Path) -> None:
    _files(tmp_path)
    registry = CollectorRegistry()
    SettledFilesCollector(registry, str(tmp_path))
    assert "jobs_total 3.0" in generate_latest(registry).decode()


def test_prometheus_clients_own_collector_fails_on_it(tmp_path: Path) -> None:
    _files(tmp_path)  # what SettledFilesCollector is for (prometheus/client_python#1199)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, str(tmp_path))
    with pytest.raises(struct.error):
        generate_latest(registry)
