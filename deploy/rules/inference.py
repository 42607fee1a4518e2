"""The inference layer's pure builders (deploy/inference.py runs them; so do the collection's filters)."""

from __future__ import annotations

import shlex
from typing import Any
from urllib.parse import urlsplit

from cnhost import triton_endpoint  # a host program: the collection carries it (cnctl/collection.py)

from .scripts import program_home


def options(wants: dict[str, Any], data: dict[str, Any], address: str) -> dict[str, Any]:
    """model_serve.py's options for this host (model_serve.OPTIONS)."""
    return {"url": triton_endpoint.http_url(address, wants["cn_inference_http_port"]),
            "repository": data["inference_model_repository"], "name": wants["cn_model_name"],
            "version": wants["cn_model_version"]}


def site_packages(venv: str, python: str) -> str:
    return f"{venv}/lib/python{python}/site-packages"


def triton_server(venv: str, python: str) -> str:
    """The wheel's tritonserver directory: bin/tritonserver, backends/, python_backend_stubs/."""
    return f"{site_packages(venv, python)}/pytriton/tritonserver"


def pip_index_args(index_url: str) -> list[str]:
    """pip's options for the pinned wheels, as words: hashes required, no dependency resolution, the stack's index
    only (a plain-http site index must be named trusted; the hashes are what makes it safe)."""
    trusted = ["--trusted-host", str(urlsplit(index_url).hostname)] if index_url.startswith("http://") else []
    return ["--no-deps", "--require-hashes", "--no-cache-dir", "--disable-pip-version-check", "--index-url", index_url,
            *trusted]


def pip_install_command(venv: str, requirements: str, index_url: str, build: bool = False) -> str:
    """The pinned wheels into the venv: one command for both engines (Ansible's pip module would need the
    `packaging` library in the host's own Python), every word quoted. `build`: the file pins source archives,
    built with the venv's own pinned setuptools and wheel (no isolated build environment, so no unpinned build
    tool)."""
    isolation = ["--no-build-isolation"] if build else []
    return shlex.join([f"{venv}/bin/pip", "install", "--quiet", *pip_index_args(index_url), *isolation,
                       "--requirement", requirements])


def unit_variables(wants: dict[str, Any], data: dict[str, Any], address: str, python: str | None) -> dict[str, Any]:
    """What templates/systemd/circularnet-triton.service.j2 takes, for this host."""
    return {
        "runtime": wants["cn_inference_runtime"], "image": wants["cn_triton_image"], "docker": data["inference_docker"],
        "triton_server": triton_server(data["inference_venv"], python or "3"),
        "triton_libs": f"{site_packages(data['inference_venv'], python or '3')}/nvidia_pytriton.libs",
        "model_repository": data["inference_model_repository"],
        "model_name": wants["cn_model_name"], "bind_address": address, "http_port": wants["cn_inference_http_port"],
        "url": triton_endpoint.http_url(address, wants["cn_inference_http_port"]),  # where ExecStartPost reaches it
        "grpc_port": wants["cn_inference_grpc_port"], "metrics_port": wants["cn_inference_metrics_port"],
        "programs": program_home(data["inference_helper"]),  # ExecStartPost's PYTHONPATH: model_serve's package
        "container_name": data["inference_container_name"],
        "start_timeout": int(data["inference_start_timeout"]), "start_limit": int(data["inference_start_timeout"]) + 30,
        "shm_size": data["inference_shm_size"], "container_user": data["inference_container_user"],
    }
