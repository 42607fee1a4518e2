"""`cnctl plan-diff --base-tree/--head-tree`: the host pins that move between two revisions, per host group,
read from each revision's own stack and catalog, and the host-file templates that change for the groups
that receive them (here: a temporary git repository with two commits)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cnctl.cli.main import app
from cnctl.config.loader import ROOT
from cnctl.plan.hostdiff import FileChange, PinChange, pin_changes, preview, read_revision, revision_pins

CNCTL = shutil.which("cnctl") or str(ROOT / ".venv/bin/cnctl")
GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid", "-c", "commit.gpgsign=false"]


def _git(repo: Path, *args: str) -> None:
    subprocess.run([*GIT, "-C", str(repo), *args], check=True, capture_output=True)


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two commits: the project's stacks, catalog and host layers, then a change to the prod stack and a unit."""
    repo = tmp_path_factory.mktemp("repo")
    shutil.copytree(ROOT / "stacks", repo / "stacks")
    shutil.copytree(ROOT / "cnctl/catalog", repo / "cnctl/catalog", ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    for layer in ("templates", "roles", "playbooks"):
        shutil.copytree(ROOT / layer, repo / layer)
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "base")
    prod = repo / "stacks/Pulumi.prod.yaml"
    _edit(prod, "server: nvcr.io/nvidia/tritonserver:25.02-py3", "server: nvcr.io/nvidia/tritonserver:24.08-py3")
    _edit(prod, 'driverBranch: "570"', 'driverBranch: "580"')
    _edit(prod, 'jetpack: "6.2"', 'jetpack: "6.1"')  # the first edge device only
    _edit(prod, "machineType: g2-standard-8", "machineType: g2-standard-4")  # a cloud change, no host pin
    unit = repo / "templates/systemd/jetson-clocks.service.j2"
    unit.write_text(unit.read_text().replace("[Unit]", "[Unit]\n# changed by the test", 1))
    _git(repo, "commit", "-q", "-am", "head")
    return repo


def test_the_pins_that_move_per_host_with_the_reboots(repo: Path) -> None:
    changes = pin_changes(revision_pins("HEAD~1", "prod", repo), revision_pins("HEAD", "prod", repo))
    triton = ("nvcr.io/nvidia/tritonserver:25.02-py3", "nvcr.io/nvidia/tritonserver:24.08-py3")
    got = {(c.group, c.host, c.pin, c.before, c.after, c.reboot) for c in changes}
    jetpack_61 = {(c.pin, c.after) for c in changes if c.host == "plant-a-belt-1"}
    assert ("JetPack", "6.1") in jetpack_61
    assert ("edge", "plant-a-belt-1", "JetPack", "6.2", "6.1", True) in got
    assert ("servers", "plant-b-gpu-1", "driver branch", "570", "580", True) in got
    assert ("servers", "plant-b-gpu-1", "Triton image", *triton, False) in got
    assert {c.host for c in changes} == {"plant-a-belt-1", "plant-b-gpu-1", "cn-prod-gpu-0", "cn-prod-gpu-1"}
    assert {c.pin for c in changes if c.group == "cloud"} == {"Triton image"}, "the machine type moves no pin"
    assert not any(c.host == "plant-a-belt-2" for c in changes)


def test_a_changed_unit_template_shows_for_the_group_that_receives_it(repo: Path) -> None:
    changes = preview(read_revision("HEAD~1", "prod", repo), read_revision("HEAD", "prod", repo))
    assert changes.files == [FileChange("edge", "systemd/jetson-clocks.service.j2", 2, "changed")]


def test_an_unchanged_tree_shows_no_changes(repo: Path, tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"stack": "prod", "resources": []}))
    result = subprocess.run([CNCTL, "plan-diff", str(plan), str(plan), "--repo", str(repo), "--base-tree", "HEAD",
                             "--head-tree", "HEAD"], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-2:] == ["host pins: no changes", "host files: no changes"]


def test_plain_and_markdown_show_the_moves_per_group(repo: Path, tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"stack": "prod", "resources": []}))
    args = ["plan-diff", str(plan), str(plan), "--repo", str(repo), "--base-tree", "HEAD~1", "--head-tree", "HEAD"]
    plain = CliRunner().invoke(app, args)
    assert plain.exit_code == 0, plain.output
    assert "  servers plant-b-gpu-1: driver branch 570 → 580 (reboot)" in plain.stdout.splitlines()
    assert "  edge plant-a-belt-1: JetPack 6.2 → 6.1 (reboot)" in plain.stdout.splitlines()
    assert "  edge (2 hosts): templates/systemd/jetson-clocks.service.j2 changed" in plain.stdout.splitlines()
    markdown = CliRunner().invoke(app, [*args, "--markdown"]).stdout
    assert "#### Hosts" in markdown and "**servers**" in markdown and "**edge**" in markdown
    assert "- `templates/systemd/jetson-clocks.service.j2` changed" in markdown
    assert "| `plant-b-gpu-1` | driver branch | `570` | `580` | **reboot** |" in markdown


def test_a_head_tree_without_the_stack_is_a_clear_error(repo: Path, tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"stack": "prod", "resources": []}))
    result = CliRunner().invoke(app, ["plan-diff", str(plan), str(plan), "--base-tree", "HEAD", "--head-tree",
                                      str(tmp_path)])
    assert result.exit_code == 2 and "has no stacks/Pulumi.prod.yaml" in result.stderr


def test_a_new_host_is_not_a_reboot() -> None:
    change = PinChange("edge", "new-orin", "JetPack", None, "6.2")
    assert not change.reboot


def test_plain_output_prints_the_violations_it_exits_1_for(tmp_path: Path) -> None:
    head = tmp_path / "head.json"
    head.write_text(json.dumps({"stack": "dev", "resources": [], "violations": [
        {"rule": "no-open-ingress", "resource": "[bold]fw[/]", "message": "allows ingress from 0.0.0.0/0"}]}))
    result = subprocess.run([CNCTL, "plan-diff", str(tmp_path / "none.json"), str(head)], capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 1
    assert "guardrail no-open-ingress failed on [bold]fw[/]: allows ingress from 0.0.0.0/0" in result.stderr
