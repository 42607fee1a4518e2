"""A host's variables come from the stack and the platform matrix, with the same values for both engines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from cnctl.catalog import catalog
from cnctl.config import StackConfigError, load_stack
from cnctl.config.loader import parse
from cnctl.config.schema import StackConfig
from cnctl.hostvars import CloudVm, host_vars, stack_vars
from cnctl.paths import STACKS_DIR

MATRIX = catalog().platforms


def _raw(stack: str) -> dict[str, Any]:
    """The `circularnet:` mapping of an example stack, to be changed by a test."""
    document = yaml.safe_load((STACKS_DIR / f"Pulumi.{stack}.yaml").read_text())
    return {key.partition(":")[2]: value for key, value in document["config"].items()}


def _stack(raw: dict[str, Any], env: str = "dev") -> StackConfig:
    return parse(raw, environment=env, source="test")


def _with_fleet(raw: dict[str, Any], **fleets: Any) -> dict[str, Any]:
    return {**raw, "fleets": fleets}


def test_jetson_entry_gets_its_jetpack_row_of_the_matrix() -> None:
    raw = _with_fleet(_raw("dev"), edge=[{"name": "belt-9", "address": "10.0.0.9", "site": "plant-b", "jetpack": "6.2"}])
    cfg = _stack(raw)
    hv = host_vars(cfg, "edge", cfg.fleets.edge[0])
    row = MATRIX.jetson.release("6.2")
    assert (hv["cn_host"], hv["cn_group"], hv["cn_site"], hv["cn_stack"]) == ("belt-9", "edge", "plant-b", "dev")
    assert (hv["cn_platform"], hv["cn_arch"]) == ("jetson", "arm64")
    assert (hv["cn_jetpack"], hv["cn_l4t"], hv["cn_l4t_gcid"]) == ("6.2", row.l4t, row.gcid)
    assert hv["cn_jetson_apt_release"] == row.apt_release == "r36.4"
    assert hv["cn_jetson_packages"] == row.packages and hv["cn_jetson_packages"]["nvidia-l4t-core"].startswith("36.4.3-")
    assert (hv["cn_cuda"], hv["cn_nvcc_version"], hv["cn_driver_version"]) == (row.cuda, row.nvcc, row.driver)
    assert hv["cn_driver_branch"] == row.driver.split(".")[0] and hv["cn_driver_source"] == "l4t"
    assert hv["cn_jetson_apt_url"] == MATRIX.jetson.apt.base_url
    assert hv["cn_jetson_apt_key_url"] == MATRIX.jetson.apt.key_url
    assert hv["cn_triton_image"] == row.triton_image
    assert hv["cn_supported_os"] == [{"id": "ubuntu", "version": "22.04", "codename": "jammy", "repo_distro": None}]
    assert "cn_cuda_toolkit_package" not in hv  # JetPack brings CUDA; no server keys leak onto a Jetson


def test_jetson_image_override_wins_over_the_matrix() -> None:
    raw = _with_fleet(_raw("dev"), edge=[{"name": "belt-9", "address": "10.0.0.9", "jetpack": "6.0"}])
    raw["inference"] = {**raw["inference"], "images": {"jetson": "registry.plant.local:5000/triton:24.03-igpu"}}
    cfg = _stack(raw)
    assert host_vars(cfg, "edge", cfg.fleets.edge[0])["cn_triton_image"] == "registry.plant.local:5000/triton:24.03-igpu"


@pytest.mark.parametrize(
    ("branch", "toolkit", "image"),
    [
        ("550", "cuda-toolkit-12-4", "nvcr.io/nvidia/tritonserver:24.03-py3"),
        # 570 runs CUDA 12.8; the catalog model is a TF SavedModel, so no image past 25.02
        ("570", "cuda-toolkit-12-8", "nvcr.io/nvidia/tritonserver:25.02-py3"),
        ("580", "cuda-toolkit-12-8", "nvcr.io/nvidia/tritonserver:25.02-py3"),
    ],
)
def test_server_entry_gets_its_branch_and_the_newest_toolkit_it_runs(branch: str, toolkit: str, image: str) -> None:
    raw = _with_fleet(_raw("dev"), servers=[{"name": "gpu-1", "address": "10.0.0.5", "driverBranch": branch}])
    raw["inference"] = {"runtime": "container"}  # no image override: the matrix picks
    cfg = _stack(raw)
    hv = host_vars(cfg, "servers", cfg.fleets.servers[0])
    driver = MATRIX.servers.driver(branch)
    assert (hv["cn_platform"], hv["cn_arch"], hv["cn_group"], hv["cn_site"]) == ("server", "amd64", "servers", "default")
    assert (hv["cn_driver_branch"], hv["cn_driver_version"]) == (branch, driver.version)
    assert hv["cn_driver_packages"] == driver.packages and hv["cn_driver_source"] == "cuda-repo"
    assert hv["cn_cuda_toolkit_package"] == toolkit
    assert hv["cn_cuda_toolkit_version"] == next(t.version for t in MATRIX.servers.cuda_toolkits if t.package == toolkit)
    assert hv["cn_triton_image"] == image
    assert hv["cn_cuda_repo_url"] == MATRIX.servers.cuda_repo.base_url
    assert hv["cn_cuda_keyring_file"] == "/usr/share/keyrings/cuda-archive-keyring.gpg"
    assert {os["repo_distro"] for os in hv["cn_supported_os"]} >= {"ubuntu2204", "ubuntu2404"}
    assert "cn_jetpack" not in hv


def test_server_image_from_the_stack_wins() -> None:
    cfg = _stack(_with_fleet(_raw("dev"), servers=[{"name": "gpu-1", "address": "10.0.0.5"}]))
    assert host_vars(cfg, "servers", cfg.fleets.servers[0])["cn_triton_image"] == cfg.inference.images["server"]


def test_cloud_vm_keeps_the_image_driver() -> None:
    cfg = load_stack("dev")
    vm = CloudVm(name="cn-dev-gpu-0", zone="us-central1-a", project="my-circularnet-dev", internal_ip="10.20.0.2",
                 ssh_user="deploy")
    hv = host_vars(cfg, "cloud", vm)
    assert (hv["cn_group"], hv["cn_platform"], hv["cn_site"], hv["cn_gcp_zone"]) == ("cloud", "server", "us-central1-a", "us-central1-a")
    assert (hv["cn_driver_source"], hv["cn_driver_branch"], hv["cn_driver_version"]) == ("image", "550", None)
    assert hv["cn_driver_packages"] == [] and hv["cn_cuda_toolkit_package"] is None
    assert hv["cn_gcp_project"] == "my-circularnet-dev" and hv["cn_image_family"] == cfg.compute.image_family  # type: ignore[union-attr]


def test_entry_of_the_wrong_group_is_refused() -> None:
    cfg = load_stack("local")
    with pytest.raises(TypeError, match="belt-1-orin"):
        host_vars(cfg, "servers", cfg.fleets.edge[0])


def test_every_mirror_replaces_its_sources_base_url() -> None:
    raw = _with_fleet(
        _raw("dev"),
        edge=[{"name": "belt-9", "address": "10.0.0.9", "jetpack": "6.1"}],
        servers=[{"name": "gpu-1", "address": "10.0.0.5"}],
    )
    raw["mirrors"] = {
        "jetsonApt": "http://mirror.plant.local/jetson/",
        "cudaApt": "https://mirror.plant.local/cuda",
        "containerToolkitApt": "https://mirror.plant.local/libnvidia-container",
        "dockerApt": "https://mirror.plant.local/docker",
        "pythonIndex": "https://mirror.plant.local/pypi/simple/",
        "registry": "https://registry.plant.local:5000",
    }
    raw["model"]["url"] = "https://mirror.plant.local/models/circularnet.zip"  # the model's mirror is the stack's model.url
    cfg = _stack(raw)
    edge = host_vars(cfg, "edge", cfg.fleets.edge[0])
    server = host_vars(cfg, "servers", cfg.fleets.servers[0])
    assert edge["cn_jetson_apt_url"] == "http://mirror.plant.local/jetson"
    assert edge["cn_jetson_apt_key_url"] == "http://mirror.plant.local/jetson/jetson-ota-public.asc"
    assert server["cn_cuda_repo_url"] == "https://mirror.plant.local/cuda"
    for hv in (edge, server):
        assert hv["cn_nvidia_ctk_key_url"] == "https://mirror.plant.local/libnvidia-container/gpgkey"
        assert hv["cn_nvidia_ctk_repo_url"] == "https://mirror.plant.local/libnvidia-container/stable/deb/$(ARCH)"
        assert hv["cn_docker_apt_url"] == "https://mirror.plant.local/docker"
        assert hv["cn_python_index_url"] == "https://mirror.plant.local/pypi/simple/"
        assert hv["cn_docker_registry_mirrors"] == ["https://registry.plant.local:5000"]
    # no upstream host is left in any URL once every source has a mirror
    urls = [v for hv in (edge, server) for k, v in hv.items() if k.endswith("_url") and v is not None]
    assert len(urls) >= 7 and all(u.startswith(("http://mirror.plant.local/", "https://mirror.plant.local/")) for u in urls)


def test_without_mirrors_every_url_is_the_matrix_upstream() -> None:
    local = load_stack("local")
    cfg = local.model_copy(update={"mirrors": type(local.mirrors)()})  # the local stack uses its site's mirrors
    hv = host_vars(cfg, "servers", cfg.fleets.servers[0])
    ctk = MATRIX.container.nvidia_container_toolkit
    assert (hv["cn_nvidia_ctk_key_url"], hv["cn_nvidia_ctk_repo_url"]) == (ctk.key_url, ctk.repo_url)
    assert hv["cn_docker_apt_url"] == MATRIX.container.docker.base_url and hv["cn_docker_registry_mirrors"] == []


@pytest.mark.parametrize("url", ["ftp://mirror/x", "mirror.plant.local/cuda", "https://mirror/ has space", "https://"])
def test_a_bad_mirror_url_is_named_at_its_field(tmp_path: Path, url: str) -> None:
    document = {"config": {f"circularnet:{k}": v for k, v in _raw("local").items()}}
    document["config"]["circularnet:mirrors"] = {"cudaApt": url}
    path = tmp_path / "Pulumi.local.yaml"
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(StackConfigError) as err:
        load_stack(str(path))
    assert "mirrors.cudaApt" in err.value.render() and "mirror URL" in err.value.render()


def _all_hosts(cfg: StackConfig) -> list[dict[str, Any]]:
    return [host_vars(cfg, "edge", e) for e in cfg.fleets.edge] + [host_vars(cfg, "servers", s) for s in cfg.fleets.servers]


@pytest.mark.parametrize("stack", ["local", "dev", "prod"])
def test_both_engines_see_equal_values(stack: str) -> None:
    """pyinfra takes the dict as host data; Ansible reads it back from a YAML inventory and JSON extra vars.
    Both round trips give back the same values, names prefixed cn_, and the extra vars agree with every host."""
    cfg = load_stack(stack)
    common = stack_vars(cfg)
    assert json.loads(json.dumps(common)) == common
    for hv in _all_hosts(cfg):
        assert all(key.startswith("cn_") for key in hv)
        assert yaml.safe_load(yaml.safe_dump(hv)) == hv
        assert json.loads(json.dumps(hv)) == hv
        assert {k: hv[k] for k in common} == common  # extra vars (highest precedence) never differ from host vars


def test_every_variable_is_in_the_docstring_table() -> None:
    import cnctl.hostvars as module

    cfg = load_stack("local")
    vm = CloudVm(name="vm", zone="us-central1-a", project="p-123456", internal_ip="10.20.0.2", ssh_user="u")
    names = {k for hv in _all_hosts(cfg) for k in hv} | set(host_vars(load_stack("dev"), "cloud", vm))
    documented = {line.split("|")[1].strip() for line in (module.__doc__ or "").splitlines() if line.startswith("| cn_")}
    assert names == documented
