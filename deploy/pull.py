"""The pull layer: on a pull-mode host (`cn_deploy_mode: pull`), what lets it configure itself.

A systemd timer runs the agent (cnctl/bundle/agent.py), which downloads the stack's signed bundle from the
models bucket, verifies it and runs `pyinfra @local deploy.py` inside it (docs/pull-mode.md). This layer
installs that agent; it is the last layer, so a push deploy installs it and every bundle the agent applies
re-installs the agent of that bundle.

On a pull host:
1. refused before anything changes when the stack cannot feed it (`problem`: no bundle signers, no interval);
2. openssh-client (`ssh-keygen -Y` verifies the signatures) and python3-venv;
3. the venv (pull_venv): the uploader's wheels (the agent reads the bucket with its store clients) and the
   agent's (pyinfra, pydantic, PyYAML at uv.lock's versions), `pip --require-hashes` from the stack's Python
   index, through the pipeline layer's requirements template and venv operation;
4. the agent tree (pull_agent_dir): every file of cnctl.bundle.contents AGENT_ENTRIES, copied from the tree
   this deploy runs in (the repository on a push, the verified bundle on a pull) at the same relative path,
   root-owned 0644; whatever else is in the tree is removed, so the tree is exactly the list;
5. the agent's settings (pull_config, 0600 root, templates/pull/agent.json.j2) and its state directory (0700);
6. circularnet-pull.service (oneshot, root: it configures the host) and its timer, the timer enabled and
   started; systemd reloaded and the timer restarted when a unit changed. The service is never started or
   restarted here: when the agent's own run applies this layer, that would wait on itself.

On a push host: the timer stopped and disabled, the units, the settings and the agent tree removed; one fact
read (are any of them there?) when none was ever installed.

roles/pull is the same layer for Ansible: same templates, same builders (through its filters), same verdict.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from pyinfra import host
from pyinfra.api import FactBase, deploy, operation
from pyinfra.facts.systemd import SystemdStatus
from pyinfra.operations import apt, files, systemd

from cnctl.bundle import contents
from cnctl.paths import REPO_ROOT
from deploy import pipeline
from deploy.rules.inference import pip_install_command
from deploy.rules.pull import (
    agent_config,
    agent_dirs,
    extras,
    installed_paths,
    present,
    present_command,
    problem,
    unit_variables,
    wheels,
)
from deploy.steps import after_change, directory, host_settings, index_refreshed, refused, template, wishes


def role_settings() -> dict[str, Any]:
    """roles/pull's defaults, with the host's own pull_* values over them (its inventory, or `--data`): the
    precedence Ansible gives the role. The Ansible-only source path is left out (pyinfra knows REPO_ROOT)."""
    return {key: value for key, value in host_settings("pull").items() if not key.endswith("_src")}


def agent_files(root: str | Path = REPO_ROOT) -> list[str]:
    """The agent's files (relative paths) in the tree at `root`: cnctl.bundle.contents' one list."""
    return contents.files(Path(root), contents.AGENT_ENTRIES)


class PathsPresent(FactBase):
    """Which of `paths` exist on the host."""

    def command(self, paths: list[str]) -> str:
        return present_command(paths)

    @staticmethod
    def default() -> list[str]:
        return []

    def process(self, output: list[str]) -> list[str]:
        return present(output)


def tree_command(root: str) -> str:
    """Every path under `root`, relative to it (nothing when it does not exist)."""
    return f"cd {shlex.quote(root)} 2>/dev/null && find . -mindepth 1 | cut -c3- || true"


class TreePaths(FactBase):
    """Every path (file or directory) under `root`, relative to it; none when it does not exist."""

    def command(self, root: str) -> str:
        return tree_command(root)

    @staticmethod
    def default() -> list[str]:
        return []

    def process(self, output: list[str]) -> list[str]:
        return sorted(line for line in output if line)


@operation(is_idempotent=True)
def tree_pruned(root: str, paths: list[str]):
    """Ensure `root` holds nothing but `paths` (and their directories): whatever else is there is removed."""
    unwanted = extras(host.get_fact(TreePaths, root=root), paths)
    if unwanted:
        yield "rm -rf " + " ".join(shlex.quote(f"{root}/{p}") for p in unwanted)


def _removed(data: dict[str, Any]) -> None:
    """A push host: nothing of the pull layer left, at the cost of one fact where it never was."""
    if not host.get_fact(PathsPresent, paths=installed_paths(data)):
        return
    unit = data["pull_unit"]
    # The service is not stopped: it is the agent, and when this is the agent's own run (the stack moved the
    # host to push), stopping it would end the run that is doing this. It ends on its own; the timer no
    # longer starts it.
    systemd.service(name="Pull: the agent's timer stopped and disabled (push host)", service=f"{unit}.timer",
                    running=False, enabled=False)
    units = [files.file(name=f"Pull: no {unit}.{kind} (push host)", path=f"/etc/systemd/system/{unit}.{kind}",
                        present=False) for kind in ("timer", "service")]
    after_change(name="Pull: systemd reloaded after the units went", changed=units, commands=["systemctl daemon-reload"])
    files.directory(name="Pull: no agent settings (push host)", path=data["pull_config"].rsplit("/", 1)[0],
                    present=False)
    files.directory(name="Pull: no agent tree (push host)", path=data["pull_agent_dir"], present=False)


@deploy("Pull")
def pull() -> None:
    """The pull agent, its settings and timer on a pull-mode host; none of it on a push host."""
    wants, data = wishes(), role_settings()
    if wants.get("cn_deploy_mode") != "pull":
        _removed(data)
        return
    refusal = problem(wants)
    if refusal:
        refused(name="Pull: the stack gives a pull host its bundle signers and interval", message=refusal)
        return
    unit, venv, agent_dir = data["pull_unit"], data["pull_venv"], data["pull_agent_dir"]

    index_refreshed(name="Pull: package index fresh before installing missing packages", changed=[],
                    packages=data["pull_apt_packages"], timeout=data["pull_apt_update_timeout"])
    apt.packages(name="Pull: openssh-client (ssh-keygen -Y) and python3-venv", packages=data["pull_apt_packages"],
                 no_recommends=True)

    directory("Pull: the layer's directory", data["pull_root"])
    template("Pull: the pinned wheels, with their sha256 (requirements)", "triton/requirements.txt.j2",
                            data["pull_requirements"], wheels=wheels(wants))
    pipeline.wheels_installed(
        name="Pull: the venv holds the uploader's and the agent's wheels (hashes required)", venv=venv,
        install=pip_install_command(venv, data["pull_requirements"], wants["cn_python_index_url"]), wanted=wheels(wants))

    paths = agent_files()
    directory("Pull: the agent tree", agent_dir)
    for relative in agent_dirs(paths):
        directory(f"Pull: the agent tree's {relative}/", f"{agent_dir}/{relative}")
    for relative in paths:
        files.put(name=f"Pull: the agent's {relative}", src=str(REPO_ROOT / relative), dest=f"{agent_dir}/{relative}",
                  mode="644", user="root", group="root", create_remote_dir=False)
    tree_pruned(name="Pull: nothing else in the agent tree", root=agent_dir, paths=paths)

    directory("Pull: the agent's settings directory", data["pull_config"].rsplit("/", 1)[0])
    credentials = pipeline.role_settings()["pipeline_credentials"]
    template("Pull: the agent's settings (0600)", "pull/agent.json.j2", data["pull_config"], mode="600",
             agent_config=agent_config(wants, data, credentials))
    directory("Pull: the agent's state directory (0700)", data["pull_state"], mode="700")

    unit_vars = unit_variables(wants, data)
    service = template("Pull: the agent's service unit", "systemd/circularnet-pull.service.j2",
                       f"/etc/systemd/system/{unit}.service", unit=unit_vars)
    timer = template("Pull: the agent's timer unit", "systemd/circularnet-pull.timer.j2",
                     f"/etc/systemd/system/{unit}.timer", unit=unit_vars)
    after_change(name="Pull: systemd reloaded after a unit change", changed=[service, timer],
                 commands=["systemctl daemon-reload"])
    ran = host.get_fact(SystemdStatus, user_mode=False, machine=None, user_name=None,
                        services=[f"{unit}.timer"]).get(f"{unit}.timer", False)
    systemd.service(name="Pull: the agent's timer enabled and started", service=f"{unit}.timer", running=True,
                    enabled=True)
    after_change(name="Pull: the agent's timer restarted after its unit changed", changed=[timer] if ran else [],
                 commands=[shlex.join(["systemctl", "restart", f"{unit}.timer"])])
    # A change of the venv, the agent or its settings needs no restart: the timer's next run of the agent uses it.
