"""The bucket worker's pinned wheels (catalog pipeline.yaml `worker`): together with the uploader's they are a
closed list, so `pip install --no-deps --require-hashes` of both gives the worker everything it imports.

Both sets come from the site's wheelhouse, which downloads them in hash mode (test_site_pipeline proves the
uploader's list closed on its own); each one's METADATA is read for every host environment, on both
architectures' wheels.
"""

from __future__ import annotations

import re

import pytest
from packaging.utils import canonicalize_name

from cnctl.catalog import catalog
from tests.unit.test_site_pipeline import unpinned_requirements


def _pins(section: str) -> dict[str, tuple[str, list[str]]]:
    return {str(canonicalize_name(p.name)): (p.version, list(p.sha256)) for p in getattr(catalog().pipeline, section).packages}


def test_worker_pins_are_well_formed_and_apart_from_the_uploaders() -> None:
    worker, uploader = catalog().pipeline.worker, catalog().pipeline.uploader
    assert worker.pythons == uploader.pythons
    names = [p.name for p in worker.packages]
    assert "google-cloud-pubsub" in names and "grpcio" in names and names == sorted(names)
    assert not set(_pins("worker")) & set(_pins("uploader"))  # one pin per package across the venv
    hashes = [h for p in worker.packages for h in p.sha256]
    assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes) and len(set(hashes)) == len(hashes)
    grpcio = next(p for p in worker.packages if p.name == "grpcio")
    assert len(grpcio.sha256) == 4  # binary: CPython 3.10 and 3.11, x86_64 and aarch64


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_worker_and_uploader_pins_together_are_closed(site_content, arch: str) -> None:
    worker, uploader = _pins("worker"), _pins("uploader")
    problems = unpinned_requirements({**uploader, **worker}, site_content.wheelhouse_dir, arch)
    assert not problems, "\n".join(problems)
