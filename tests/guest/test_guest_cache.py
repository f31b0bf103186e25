"""The lab guest's cache: one build per recipe, never two builders at once."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from scmt_cli.lab.__main__ import main as lab_main
from scmt_cli.lab.guest import build, cache, recipe


def test_two_processes_wanting_the_image_build_it_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    builds: list[float] = []

    def fake_build(dest: Path, *, progress: object = None) -> dict[str, float]:
        builds.append(time.monotonic())
        time.sleep(0.5)  # long enough for the second caller to arrive while we build
        dest.write_bytes(b"\0" * 4096)
        return {"total_s": 0.5}

    monkeypatch.setattr(build, "build_image", fake_build)
    got: list[Path] = []
    threads = [threading.Thread(target=lambda: got.append(cache.ensure_image(tmp_path).path)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1
    assert got[0] == got[1] == tmp_path / recipe.recipe_key() / "disk.raw"
    assert cache.cached_image(tmp_path) is not None and cache.cached_image(tmp_path).info["total_s"] == 0.5


def test_guest_path_says_how_to_build_when_not_built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SCMT_GUEST_CACHE", str(tmp_path))
    assert lab_main(["guest", "path"]) == 1
    assert "python -m scmt_cli.lab guest build" in capsys.readouterr().err


def test_the_recipe_key_changes_with_the_recipe(monkeypatch: pytest.MonkeyPatch) -> None:
    key = recipe.recipe_key()
    monkeypatch.setattr(recipe, "INITRAMFS_MODULES", (*recipe.INITRAMFS_MODULES, "virtio_blk"))
    assert recipe.recipe_key() != key
