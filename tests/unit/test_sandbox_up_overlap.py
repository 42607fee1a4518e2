"""A cold `cnctl sandbox up` builds the site parts no host image decides while the images build (issue 25, item 8)."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from cnctl.sandbox import fleet, image
from cnctl.sandbox.instance import Instance
from cnctl.sandbox.progress import Progress


def _fakes(monkeypatch: pytest.MonkeyPatch, prefetch) -> list[str]:
    built: list[str] = []
    arm64_started = threading.Event()

    def ensure_image(cache: Path, progress: Progress, arch: str) -> Path:
        built.append(arch)
        if arch == "arm64":
            arm64_started.set()
            assert site_started.wait(5), "the site parts did not start while the images built"
        return cache / arch / "rootfs"

    site_started = threading.Event()

    def prefetch_site_content(cache: Path, *, progress, mirror: str) -> None:
        site_started.set()
        assert arm64_started.wait(5)
        prefetch(cache, mirror)

    monkeypatch.setattr(image, "ensure_image", ensure_image)
    monkeypatch.setattr(image, "debian_mirror", lambda: "http://m/debian")
    monkeypatch.setattr(fleet, "_site_api", lambda: SimpleNamespace(prefetch_site_content=prefetch_site_content))
    return built


def test_the_site_parts_build_while_the_images_do(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: list[tuple[Path, str]] = []
    built = _fakes(monkeypatch, lambda cache, mirror: seen.append((cache, mirror)))
    inst = Instance(prefix="cnun", state_dir=tmp_path / "state", cache=tmp_path / "cache")
    said: list[str] = []
    rootfs = fleet._images_beside_the_site(inst, fleet._site_api(), Progress(said.append, heartbeat_s=None))
    assert built == list(image.ARCHES) and set(rootfs) == set(image.ARCHES)
    assert seen == [(inst.cache, "http://m/debian")]
    assert said[-1].startswith("site content that needs no host image")


def test_a_failed_site_part_fails_up_after_the_images(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def broken(cache: Path, mirror: str) -> None:
        raise RuntimeError("pip download failed: no route to pypi.org")

    built = _fakes(monkeypatch, broken)
    inst = Instance(prefix="cnun", state_dir=tmp_path / "state", cache=tmp_path / "cache")
    with pytest.raises(RuntimeError, match="no route to pypi.org"):
        fleet._images_beside_the_site(inst, fleet._site_api(), Progress(lambda _m: None, heartbeat_s=None))
    assert built == list(image.ARCHES)
