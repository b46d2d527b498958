"""``has_state``: whether runsc still keeps a sandbox's state file, by the sandbox's exact name."""

from __future__ import annotations

from pathlib import Path

from sandq.sandbox.gvisor.sandbox import has_state
from tests.conftest import make_settings


def test_the_state_file_of_the_sandbox_itself_counts(tmp_path: Path) -> None:
    settings = make_settings("redis://127.0.0.1:1/0", tmp_path)
    assert not has_state(settings, "sandq-a")  # no state directory yet
    settings.runsc_root.mkdir()
    (settings.runsc_root / "sandq-ab_sandbox:sandq-ab.state").touch()  # a name it is a prefix of
    (settings.runsc_root / "sandq-a_sandbox:sandq-a.lock").touch()
    assert not has_state(settings, "sandq-a")
    (settings.runsc_root / "sandq-a_sandbox:sandq-a.state").touch()
    assert has_state(settings, "sandq-a") and has_state(settings, "sandq-ab")
