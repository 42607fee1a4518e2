"""The platform matrix, model catalog and GCP facts agree with themselves (pitfall: default branches rot)."""

from __future__ import annotations

import re

import pytest
from pydantic import TypeAdapter

from cnctl.catalog import catalog
from cnctl.config import values

CAT = catalog()
PLATFORMS = CAT.platforms
MODELS = CAT.models


def _v(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))


@pytest.mark.parametrize("rel", PLATFORMS.jetson.releases, ids=lambda r: f"jetpack-{r.jetpack}")
def test_jetson_release_is_consistent(rel) -> None:
    major, minor = rel.l4t.split(".")[:2]
    assert major == "36", "JetPack 6 is L4T r36"
    assert rel.apt_release == f"r{major}.{minor}", "the apt release tag is major.minor of L4T"
    assert rel.packages["nvidia-l4t-core"].startswith(rel.l4t + "-")
    assert rel.packages["nvidia-jetpack"].startswith(rel.jetpack + "+b")
    assert rel.nvcc.startswith(rel.cuda + ".")
    assert rel.triton_image.endswith("-py3-igpu"), "Jetson runs the iGPU Triton images"


def test_jetpack_and_l4t_are_unique() -> None:
    releases = PLATFORMS.jetson.releases
    assert len({r.jetpack for r in releases}) == len(releases)
    assert len({r.l4t for r in releases}) == len(releases)


@pytest.mark.parametrize("branch", PLATFORMS.servers.driver_branches, ids=lambda b: f"driver-{b.branch}")
def test_driver_branch_is_consistent(branch) -> None:
    assert branch.version.split(".")[0] == branch.branch
    assert all(pkg.endswith(f"-{branch.branch}") for pkg in branch.packages), "branch packages carry the suffix"
    assert f"cuda-drivers-{branch.branch}" in branch.packages


def test_every_cuda_toolkit_has_a_driver_branch_new_enough() -> None:
    newest = max(_v(b.max_cuda) for b in PLATFORMS.servers.driver_branches)
    for toolkit in PLATFORMS.servers.cuda_toolkits:
        assert toolkit.package == f"cuda-toolkit-{toolkit.cuda.replace('.', '-')}"
        assert toolkit.version.startswith(toolkit.cuda + ".")
        assert toolkit.nvcc.startswith(toolkit.cuda + ".")
        assert _v(toolkit.cuda) <= newest


def test_every_triton_image_runs_on_some_driver_branch() -> None:
    for image in PLATFORMS.servers.triton_images:
        fits = [b.branch for b in PLATFORMS.servers.driver_branches if _v(b.max_cuda) >= _v(image.cuda)]
        assert fits, f"{image.image} needs CUDA {image.cuda}; no driver branch in the matrix supports it"


def test_tensorflow_backend_is_gone_after_25_02() -> None:
    for image in PLATFORMS.servers.triton_images:
        tag = _v(image.image.rsplit(":", 1)[1].split("-")[0])
        assert image.tensorflow_backend == (tag <= (25, 2)), image.image


def test_every_gpu_accelerator_is_offered_by_a_machine_family() -> None:
    offered = {acc for fam in CAT.gcp.machine_families.values() for acc in fam.gpus}
    known_branches = {b.branch for b in PLATFORMS.servers.driver_branches}
    for gpu in PLATFORMS.servers.gpus:
        assert gpu.accelerator in offered, gpu
        assert gpu.min_branch in known_branches, gpu


def test_image_families_name_their_driver_branch_and_cuda() -> None:
    known_branches = {b.branch for b in PLATFORMS.servers.driver_branches}
    for family, image in CAT.gcp.images.families.items():
        assert family.endswith(f"-nvidia-{image.driver_branch}")
        assert f"cu{image.cuda.replace('.', '')}" in family
        assert image.driver_branch in known_branches
        branch = PLATFORMS.servers.driver(image.driver_branch)
        assert _v(image.cuda) <= _v(branch.max_cuda)


def test_storage_locations_are_places_that_exist() -> None:
    """Each dual-region spans two Compute Engine regions of the catalog; names are Cloud Storage's (upper-case),
    KMS locations Cloud KMS's (lower-case); no multi- or dual-region shadows a region."""
    places = CAT.gcp.storage_locations
    assert places is not None and {"US", "EU", "ASIA"} <= set(places.multi_regions) and "NAM4" in places.dual_regions
    regions = {region.upper() for region in CAT.gcp.regions}
    for name, dual in places.dual_regions.items():
        assert len(dual.regions) == 2 and set(dual.regions) <= set(CAT.gcp.regions), name
    for name, place in {**places.multi_regions, **places.dual_regions}.items():
        assert name == name.upper() and name not in regions and re.fullmatch(r"[a-z0-9-]+", place.kms), name
    assert len(CAT.gcp.bucket_locations()) == len(set(CAT.gcp.bucket_locations()))


def test_every_catalog_value_a_stack_can_name_fits_its_schema_type() -> None:
    """A catalog entry whose name the stack schema's character set refuses could never be chosen."""
    named = {
        values.CatalogKey: [*MODELS.models, *CAT.pipeline.clients],
        values.MachineType: [t for fam in CAT.gcp.machine_families.values() for t in fam.machine_types()],
        values.GpuType: [gpu for fam in CAT.gcp.machine_families.values() for gpu in fam.gpus],
        values.ImageFamily: list(CAT.gcp.images.families),
        values.JetPackVersion: [rel.jetpack for rel in PLATFORMS.jetson.releases],
        values.DriverBranch: [branch.branch for branch in PLATFORMS.servers.driver_branches],
        values.Region: list(CAT.gcp.regions),
        values.StorageLocation: CAT.gcp.bucket_locations(),
    }
    for kind, names in named.items():
        adapter = TypeAdapter(kind)
        for name in names:
            adapter.validate_python(name)


@pytest.mark.parametrize("key", sorted(MODELS.models))
def test_model_entry_is_servable(key: str) -> None:
    model = MODELS.models[key]
    assert model.generation in MODELS.generations
    if model.requires_backend == "tensorflow":
        assert any(i.tensorflow_backend for i in PLATFORMS.servers.triton_images), "no image can serve it"
    if not model.standin:
        assert model.url and model.url.startswith("https://storage.googleapis.com/tf_model_garden/")
    assert model.sha256 is None, "upstream publishes no checksum: stacks pin their own"


def test_generation_schemas_differ_only_where_upstream_renamed() -> None:
    tf = [f.name for f in MODELS.generations["tf"].bigquery_schema]
    detr = [f.name for f in MODELS.generations["detr"].bigquery_schema]
    assert set(tf) - set(detr) == {"detection_classes", "detection_classes_names"}
    assert set(detr) - set(tf) == {"detected_classes", "detected_classes_names", "detected_colors"}
    assert MODELS.generations["tf"].flags == {"model": "--model", "score": "--score"}
    assert MODELS.generations["detr"].flags == {"model": "--model_name", "score": "--threshold"}


def test_the_ops_agent_pin_is_a_major_version_that_collects_gpu_metrics() -> None:
    """The cloud VMs' Ops Agent: a `2.*` pin, whose newest version known collects GPU metrics (2.39 and 2.40 crash on
    GPU VMs; gpu_minimum is after them), from a repository whose key is pinned by full fingerprints."""
    agent = CAT.gcp.ops_agent
    assert agent is not None
    major = agent.version.removesuffix(".*")
    assert agent.version == f"{major}.*" and major.isdigit() and agent.current.split(".")[0] == major
    assert _v(agent.current) >= _v(agent.gpu_minimum) >= (2, 41)
    assert len(set(agent.key_fingerprints)) == len(agent.key_fingerprints) >= 1
    assert agent.key_url.startswith(agent.base_url + "/") and agent.base_url.startswith("https://")
