"""Routing: a queue per tenant, and message priorities in the order they are served."""

from __future__ import annotations

from pathlib import Path

from sandq.broker.routing import HANDED_OFF_PRIORITY, PRIORITY_VALUES, priority_of, queue_for, tenant_queues
from sandq.contract import DEFAULT_TENANT
from sandq.settings import Settings


def settings(tmp_path: Path) -> Settings:
    return Settings(queue="base", runsc_root=tmp_path / "runsc", bundle_dir=tmp_path / "bundles")


def test_the_default_tenant_uses_the_base_queue_and_others_their_own(tmp_path: Path) -> None:
    s = settings(tmp_path)
    assert queue_for(s, DEFAULT_TENANT) == "base"
    assert queue_for(s, "acme") == "base.acme"


def test_tenant_queues_are_sorted_unique_and_include_the_base_queue(tmp_path: Path) -> None:
    s = settings(tmp_path)
    assert tenant_queues(s, ["zeta", "acme", DEFAULT_TENANT, "acme"]) == ["base", "base.acme", "base.zeta"]
    assert tenant_queues(s, []) == ["base"]


def test_handed_off_messages_go_first_then_interactive_then_batch() -> None:
    assert HANDED_OFF_PRIORITY < PRIORITY_VALUES["interactive"] < PRIORITY_VALUES["batch"]


def test_a_priority_reads_back_as_the_kind_it_stands_for() -> None:
    assert [priority_of(v) for v in (None, 0, PRIORITY_VALUES["interactive"], 8)] == ["interactive"] * 4
    assert [priority_of(v) for v in (PRIORITY_VALUES["batch"], 10)] == ["batch", "batch"]
