"""``sandq doctor``'s checks of the sandbox environment: the local one, and the image's by its tag."""

from __future__ import annotations

from pathlib import Path

from sandq.doctor import check_sandbox_env, check_sandbox_image
from sandq.sandbox.environment import default_lock, env_hash, location
from sandq.settings import Settings

HASH = env_hash(default_lock())
IMAGE = "europe-docker.pkg.dev/p/sandq/sandq-sandbox"


def test_the_built_environment_is_reported_with_its_hash() -> None:
    check = check_sandbox_env(Settings())
    assert check.ok and check.required, check.detail
    assert check.detail.startswith(f"{HASH} at {location(Settings())}: Python 3.11.")


def test_a_missing_or_stale_environment_fails_with_the_fix(tmp_path: Path) -> None:
    settings = Settings(sandbox_env_dir=tmp_path)
    missing = check_sandbox_env(settings)
    assert not missing.ok and missing.required
    assert "no sandbox environment" in missing.detail and "make sandbox-env" in missing.detail
    (tmp_path / HASH).mkdir()  # a build that died half-way
    stale = check_sandbox_env(settings)
    assert not stale.ok and "sandq-env.json" in stale.detail
    assert not check_sandbox_env(settings.model_copy(update={"backend": "kubernetes"})).required


def test_the_image_tag_names_the_environment_it_holds() -> None:
    kube = Settings(backend="kubernetes", image=f"{IMAGE}:env-{HASH}")
    same = check_sandbox_image(kube)
    assert same.ok and same.required
    other = check_sandbox_image(kube.model_copy(update={"image": f"{IMAGE}:0.1.0-env-{'0' * 16}"}))
    assert not other.ok and other.required and f"this sandq's lock is {HASH}" in other.detail
    digest = check_sandbox_image(kube.model_copy(update={"image": f"{IMAGE}:env-{HASH}@sha256:{'a' * 64}"}))
    assert digest.ok


def test_an_image_whose_tag_does_not_tell_is_a_note_with_how_to_check() -> None:
    unknown = check_sandbox_image(Settings(backend="kubernetes", image="python:3.11-slim"))
    assert not unknown.ok and not unknown.required
    assert f"env-{HASH}" in unknown.detail and "/opt/sandq-env/sandq-env.json" in unknown.detail
    registry_port = check_sandbox_image(Settings(image=f"registry:5000/sandbox:env-{HASH}"))
    assert registry_port.ok and not registry_port.required  # the local backend needs no image
