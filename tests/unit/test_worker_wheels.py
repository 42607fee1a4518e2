"""The bucket worker's pinned wheels (catalog pipeline.yaml `worker`): together with the uploader's they are a
closed list, so `pip install --no-deps --require-hashes` of both gives the worker everything it imports. The pull
agent's (`agent`: pyinfra, pydantic, PyYAML at uv.lock's versions) are the same with the uploader's.

Both sets come from the site's wheelhouse, which downloads them in hash mode (test_site_pipeline proves the
uploader's list closed on its own); each one's METADATA is read for every host environment, on both
architectures' wheels.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from cnctl.catalog import catalog
from cnctl.sandbox.site import wheelhouse
from tests.unit.test_site_pipeline import unpinned_requirements

REPO = Path(__file__).resolve().parents[2]


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


# --- the pull agent's wheels ----------------------------------------------------------------------------------


def test_agent_pins_are_well_formed_apart_from_the_others_and_at_uv_locks_versions() -> None:
    agent, uploader = catalog().pipeline.agent, catalog().pipeline.uploader
    assert agent.pythons == uploader.pythons
    names = [p.name for p in agent.packages]
    assert names == sorted(names) and len(set(map(canonicalize_name, names))) == len(names)
    assert not set(_pins("agent")) & set(_pins("uploader"))  # one pin per package across the venv
    assert not set(_pins("agent")) & set(_pins("worker"))  # one pin per package across the site's wheelhouse
    hashes = [h for p in agent.packages for h in p.sha256]
    assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes) and len(set(hashes)) == len(hashes)
    locked = {str(canonicalize_name(p["name"])): p["version"]
              for p in tomllib.loads((REPO / "uv.lock").read_text())["package"]}
    pins = {**_pins("uploader"), **_pins("agent")}
    for top in ("pyinfra", "pydantic", "pyyaml"):  # what the deploy code is written and tested against
        assert pins[top][0] == locked[top], top


def test_the_sites_wheelhouse_serves_the_agents_wheels() -> None:
    served = {(p.name, p.version) for p in wheelhouse.pipeline_pins()}
    assert {(p.name, p.version) for p in catalog().pipeline.agent.packages} <= served
    assert any(r.startswith("pyinfra==") for r in wheelhouse.requirements())


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_agent_and_uploader_pins_together_are_closed(site_content, arch: str) -> None:
    problems = unpinned_requirements({**_pins("uploader"), **_pins("agent")}, site_content.wheelhouse_dir, arch)
    assert not problems, "\n".join(problems)
