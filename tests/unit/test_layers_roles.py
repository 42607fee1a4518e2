"""The roles' inputs: meta/argument_specs.yml stops a bad variable before any task runs, naming it, and
declares exactly the cn_* host variables cnctl.hostvars gives (so both engines read the same names).

Each role runs once through ansible-playbook on local-connection hosts: one with a real host's variables
(from the local stack) that must pass, and one per bad value that must fail naming the variable. Only the
argument validation runs (it is tagged `always`; `--tags` selects nothing else), so nothing is touched.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from cnctl.ansible_yaml import unsafe_dump
from cnctl.config import load_stack
from cnctl.hostvars import host_vars
from tests.unit.collection_tree import ansible_env
from tests.unit.collection_tree import role as collection_role

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
LAYERS = ("platform", "nvidia", "jetson", "container", "model", "inference")


def _local(group: str) -> dict[str, Any]:
    cfg = load_stack("local")
    return host_vars(cfg, "edge", cfg.fleets.edge[0]) if group == "edge" else host_vars(cfg, "servers", cfg.fleets.servers[0])


ABSENT = object()  # the variable is not given at all

# role -> (the group whose host variables it gets, [(bad variable, bad value)])
CASES: dict[str, tuple[str, list[tuple[str, Any]]]] = {
    "platform": ("edge", [("cn_platform", "raspberry"), ("cn_arch", "i386"), ("cn_supported_os", "ubuntu"),
                          ("platform_systemd_wait", "a minute"), ("cn_host", ABSENT)]),
    "nvidia": ("servers", [("cn_driver_source", "ppa"), ("cn_reboot", "sometimes"), ("cn_driver_packages", {"cuda-drivers": "550"}),
                           ("nvidia_reboot_timeout", "long")]),
    "jetson": ("edge", [("cn_jetson_clocks", "fast"), ("cn_nvpmodel", "MAXN"), ("cn_jetson_packages", ["nvidia-jetpack"]),
                        ("jetson_kernel_packages", {"kernel": "nvidia-l4t-kernel"})]),
    "container": ("servers", [("cn_docker_source", "podman"), ("cn_docker_log_max_files", "three"),
                              ("cn_docker_registry_mirrors", {"url": "x"}), ("cn_platform", "windows")]),
    "model": ("servers", [("cn_model_version", "latest"), ("cn_model_keep", "two"), ("cn_model_format", "pytorch"),
                          ("cn_model_sha256", ABSENT), ("cn_model_name", ABSENT), ("cn_model_platform", ABSENT)]),
    "inference": ("edge", [("cn_inference_runtime", "podman"), ("cn_model_action", "latest"), ("cn_inference_http_port", "http"),
                           ("cn_triton_wheels", "nvidia-pytriton"), ("inference_start_timeout", "soon"), ("cn_triton_image", ABSENT)]),
}


def _validate(role: str, tmp_path: Path, hosts: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """{host: result of the argument validation task} of one ansible-playbook run over `hosts`."""
    inventory = {"all": {"hosts": {name: {**variables, "ansible_connection": "local",
                                          "ansible_python_interpreter": sys.executable}
                                   for name, variables in hosts.items()}}}
    (tmp_path / "inventory.yml").write_text(unsafe_dump(inventory))  # as cnctl writes it: every string `!unsafe`
    (tmp_path / "play.yml").write_text(yaml.safe_dump(
        [{"hosts": "all", "gather_facts": False, "roles": [{"role": collection_role(role)}]}]))
    env = ansible_env(tmp_path, ANSIBLE_CALLBACK_RESULT_FORMAT="json")
    result = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(tmp_path / "inventory.yml"), str(tmp_path / "play.yml"),
         "--tags", "cnctl-only-argument-validation"],
        check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    tasks = re.findall(r"^TASK \[(.*?)\]", result.stdout, re.MULTILINE)
    assert len(tasks) == 1 and "Validating arguments" in tasks[0], result.stdout[-2000:]
    outcomes: dict[str, dict[str, Any]] = {}
    for line in result.stdout.splitlines():
        if ok := re.match(r"^ok: \[([^]]+)\]", line):
            outcomes[ok[1]] = {"failed": False}
        elif failed := re.match(r"^fatal: \[([^]]+)\]: FAILED! => (\{.*\})$", line):
            outcomes[failed[1]] = {**json.loads(failed[2]), "failed": True}
    assert set(outcomes) == set(hosts), result.stdout[-2000:]
    return outcomes


def assert_bad_inputs_named(role: str, tmp_path: Path, good: dict[str, Any], other: dict[str, Any],
                            bad: list[tuple[str, Any]]) -> None:
    """`good` and `other` (two hosts' variables) pass the role's argument_specs; each (name, value) of `bad`
    (None: the variable left out) fails it with a message naming the variable."""
    hosts = {"good": good, "other": other}
    for i, (name, value) in enumerate(bad):
        hosts[f"bad{i}"] = {k: v for k, v in good.items() if k != name} if value is None else {**good, name: value}
    results = _validate(role, tmp_path, hosts)
    assert not results["good"].get("failed") and not results["other"].get("failed"), results
    for i, (name, _) in enumerate(bad):
        assert results[f"bad{i}"].get("failed") and name in results[f"bad{i}"]["msg"], (name, results[f"bad{i}"])


@pytest.mark.parametrize("role", LAYERS)
def test_a_bad_role_variable_is_stopped_by_argument_specs_naming_it(role: str, tmp_path: Path) -> None:
    group, bad = CASES[role]
    good = _local(group)
    hosts = {"good": good}
    for i, (name, value) in enumerate(bad):
        hosts[f"bad{i}"] = {k: v for k, v in good.items() if k != name} if value is ABSENT else {**good, name: value}
    results = _validate(role, tmp_path, hosts)
    assert not results["good"].get("failed"), results["good"].get("msg")
    for i, (name, _) in enumerate(bad):
        outcome = results[f"bad{i}"]
        assert outcome.get("failed"), f"{role}: {name} was accepted"
        assert name in outcome["msg"], outcome["msg"]


@pytest.mark.parametrize("role", LAYERS)
def test_the_roles_host_variables_are_the_ones_cnctl_hostvars_gives(role: str) -> None:
    """A cn_* input that hostvars does not produce would be a name only one engine knows."""
    options = yaml.safe_load((REPO / "roles" / role / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    declared = {name for name in options if name.startswith("cn_")}
    given = set(_local("edge")) | set(_local("servers"))
    assert declared and declared <= given, sorted(declared - given)
    required = {name for name in declared if options[name].get("required")}
    group = CASES[role][0] if role in ("nvidia", "jetson") else None
    for platform_group in ([group] if group else ["edge", "servers"]):
        assert required <= set(_local(platform_group)), (platform_group, sorted(required - set(_local(platform_group))))
