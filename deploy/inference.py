"""The inference layer: Triton as a supervised, hardened systemd service serving the stack's model version.

1. Refused before anything changes when the host cannot run the stack's runtime (the native runtime's pinned
   wheels do not fit its Python; the named bind interface has no address): deploy/rules/checks.py
   `inference_problem`;
2. the runtime: `container`, the Triton image the matrix (or the stack) names for the host's platform,
   pulled once; or `native`, tritonserver from the pinned nvidia-pytriton wheel in a venv (pip with
   --require-hashes from the stack's Python index), its python backend given the stub for the host's
   Python and numpy;
3. the unit from templates/systemd/circularnet-triton.service.j2 (explicit model control, the stack's bind
   address, Restart=on-failure, ExecStartPost loading the recorded version), enabled and running; restarted
   only when the unit or the runtime changed under a Triton that was already running;
4. the served version: the layer's script (cnhost/model_serve.py, one copy for both engines) switches
   Triton to the stack's pin (or, in a rollback run, `cn_model_action: previous`, to the version served
   before it) through the repository API while the old version keeps answering; a version Triton refuses
   leaves the old one serving and fails the host with Triton's own error.

roles/inference is the same layer for Ansible.
"""

from __future__ import annotations

import shlex
from typing import Any

from pyinfra import host
from pyinfra.api import deploy, operation
from pyinfra.facts.files import File
from pyinfra.facts.systemd import SystemdStatus
from pyinfra.operations import apt, files, systemd

from deploy.facts import DockerImage, HostPython, InterfaceAddress, TritonServing, VenvPackages
from deploy.rules import checks, scripts
from deploy.rules.inference import (
    options,
    pip_install_command,
    site_packages,
    triton_server,
    unit_variables,
)
from deploy.steps import after_change, index_refreshed, programs_shipped, refused, role_data, template, wishes


@operation(is_idempotent=True)
def image_pulled(image: str, docker: str, timeout: int):
    """Ensure the Docker engine holds `image` (pulled once; a tag is not pulled again while present)."""
    if host.get_fact(DockerImage, image=image) is None:
        yield shlex.join(["timeout", str(int(timeout)), docker, "pull", "--quiet", image])


@operation(is_idempotent=True)
def venv_created(venv: str):
    """Ensure `venv` is a Python venv of the host's python3 (with pip, from python3-venv's ensurepip)."""
    if host.get_fact(File, path=f"{venv}/bin/pip") is None:
        yield shlex.join(["python3", "-m", "venv", venv])


@operation(is_idempotent=True)
def wheels_installed(venv: str, requirements: str, index_url: str, wheels: list[dict[str, Any]]):
    """Ensure the venv holds each pinned wheel at its version (pip checks every file against its sha256)."""
    if checks.missing_wheels(host.get_fact(VenvPackages, venv=venv), wheels):
        yield pip_install_command(venv, requirements, index_url)


@operation(is_idempotent=True)
def model_served(helper: str, options: dict[str, Any], previous: bool):
    """Ensure Triton serves the wanted version, as the script's `check` judges it; switched when it does not."""
    found = host.get_fact(TritonServing, helper=helper, options=options, previous=previous)
    if not found or found.get("result") != "ok":
        yield scripts.serve_command(helper, "serve", options, previous)


def native_runtime(wants: dict[str, Any], data: dict[str, Any], python: str) -> list[Any]:
    """tritonserver from the pinned wheel in a venv; its python backend with the stub and numpy it needs."""
    venv, server = data["inference_venv"], triton_server(data["inference_venv"], python)
    packages = ["python3-venv", f"libpython{python}"]
    index_refreshed(name="Inference: package index fresh for the venv's packages", changed=[], packages=packages,
                    timeout=data["inference_apt_update_timeout"])
    apt.packages(name="Inference: python3-venv and the libpython the backend stub links", packages=packages,
                 no_recommends=True)
    requirements = template("Inference: the pinned wheels, with their sha256 (requirements)", "triton/requirements.txt.j2",
                            data["inference_requirements"], wheels=wants["cn_triton_wheels"])
    venv_created(name="Inference: the venv", venv=venv)
    wheels = wheels_installed(name="Inference: nvidia-pytriton and numpy in the venv (hashes required)", venv=venv,
                              requirements=data["inference_requirements"], index_url=wants["cn_python_index_url"],
                              wheels=wants["cn_triton_wheels"])
    backend = f"{server}/backends/{data['inference_python_backend']}"
    links = [files.link(name=f"Inference: python backend: {link}", path=f"{backend}/{link}", target=target, present=True)
             for link, target in (
                 ("triton_python_backend_stub", f"{server}/python_backend_stubs/{python}/triton_python_backend_stub"),
                 ("numpy", f"{site_packages(venv, python)}/numpy"),
                 ("numpy.libs", f"{site_packages(venv, python)}/numpy.libs"))]
    return [requirements, wheels, *links]


@deploy("Inference")
def inference() -> None:
    """Triton serving the stack's model version in the stack's runtime; refused when the host cannot run it."""
    wants, data = wishes(), role_data("inference")
    python = host.get_fact(HostPython)
    interface = wants.get("cn_inference_bind_interface")
    found = {"python": python, "address": host.get_fact(InterfaceAddress, interface=interface) if interface else None}
    problem = checks.inference_problem(found, wants)
    if problem:
        refused(name="Inference: the host can run the stack's Triton runtime", message=problem)
        return
    address = checks.inference_address(found, wants)
    helper = data["inference_helper"]
    programs_shipped("Inference", scripts.program_home(helper))
    if wants["cn_inference_runtime"] == "native":
        runtime = native_runtime(wants, data, str(python))
    else:
        runtime = [image_pulled(name=f"Inference: the Triton image {wants['cn_triton_image']}", image=wants["cn_triton_image"],
                                docker=data["inference_docker"], timeout=data["inference_pull_timeout"])]
    unit = template("Inference: the Triton unit", "systemd/circularnet-triton.service.j2", data["inference_unit_path"],
                    **unit_variables(wants, data, address, python))
    # Decided while the operations are prepared (after_change), not by `_if` callbacks at run time, so that
    # `--dry` on a converged host reports nothing; only a Triton that ran before this run is restarted.
    # Asked exactly as systemd.service below asks it, so that both read one cached fact (one round trip).
    ran_before = host.get_fact(SystemdStatus, user_mode=False, machine=None, user_name=None,
                               services=[data["inference_unit"]]).get(data["inference_unit"], False)
    after_change(name="Inference: systemd reloaded after a unit change", changed=[unit],
                 commands=["systemctl daemon-reload"])
    systemd.service(name="Inference: Triton enabled and running", service=data["inference_unit"], running=True,
                    enabled=True)
    after_change(name="Inference: Triton restarted after a change under it", changed=[unit, *runtime] if ran_before else [],
                 commands=[shlex.join(["systemctl", "restart", data["inference_unit"]])])
    model_served(name="Inference: Triton serves the wanted model version (switched through the repository API)",
                 helper=helper, options=options(wants, data, address), previous=wants.get("cn_model_action") == "previous")
