"""`cnctl deploy --layers`: the layers named, in the order they apply, platform always; anything else is bad input
(exit 2) naming the choices. The list is cnctl/layers.py: deploy.py applies it (CNCTL_LAYERS), the playbook's
roles follow it with its names as tags, a rollout applies its ROLLOUT."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cnctl import layers, rollout
from cnctl.cli.deploy import chosen_layers
from cnctl.cli.main import app
from cnctl.errors import UsageProblem

REPO = Path(__file__).resolve().parents[2]

GOOD = [
    ("model,inference", ("platform", "model", "inference")),
    ("verify, jetson", ("platform", "jetson", "verify")),
    ("platform", ("platform",)),
]
BAD = ["", "foo", "model,foo", " , "]


@pytest.mark.parametrize(("text", "expected"), GOOD)
def test_layers_apply_in_their_order_with_the_platform_layer_first(text: str, expected: tuple[str, ...]) -> None:
    assert chosen_layers(text) == expected


@pytest.mark.parametrize("text", BAD)
def test_an_unknown_or_empty_layer_list_is_refused(text: str) -> None:
    with pytest.raises(UsageProblem, match="choose from platform, jetson"):
        chosen_layers(text)


def test_the_cli_exits_2_naming_the_option_before_reading_any_fleet() -> None:
    result = CliRunner().invoke(app, ["deploy", "--stack", "prod", "--layers", "model,foo"])
    assert result.exit_code == 2 and "--layers 'model,foo': foo is not a host layer" in " ".join(result.stderr.split())


def test_the_playbook_applies_the_layers_of_each_platform_in_order_tagged_with_their_names() -> None:
    plays = {play["hosts"]: play["roles"] for play in yaml.safe_load((REPO / "playbooks" / "site.yml").read_text())}
    platforms = {"edge": "jetson", "servers:cloud": "server"}
    assert set(plays) == set(platforms)
    for hosts, platform in platforms.items():
        expected = [{"role": f"circularnet.fleet.{name}", "tags": ["always" if name == layers.ALWAYS else name]}
                    for name in layers.for_platform(platform)]
        assert plays[hosts] == expected, hosts


def test_deploy_py_applies_every_layer_by_its_name() -> None:
    """deploy.py's APPLY maps each layer after platform to its deploy, in the list's order."""
    tree = ast.parse((REPO / "deploy.py").read_text())
    apply = next(node.value for node in tree.body if isinstance(node, ast.Assign)
                 and any(isinstance(t, ast.Name) and t.id == "APPLY" for t in node.targets))
    assert isinstance(apply, ast.Dict)
    names = [key.value for key in apply.keys if isinstance(key, ast.Constant)]
    assert names == [name for name in layers.LAYERS if name != layers.ALWAYS]
    calls = [v.body for v in apply.values if isinstance(v, ast.Lambda) and isinstance(v.body, ast.Call)]
    assert [c.func.id for c in calls if isinstance(c.func, ast.Name)] == names
    assert all([(k.arg, getattr(k.value, "value", None)) for k in c.keywords] == [("_sudo", True)] for c in calls)
    # pyinfra tells operations apart by the line numbers of their call stack: one call line per layer
    assert len({c.lineno for c in calls}) == len(names)


@pytest.mark.parametrize(("platform", "expected"), [
    ("jetson", ("platform", "jetson", "container", "model", "inference", "pipeline", "monitoring", "verify", "pull")),
    ("server", ("platform", "nvidia", "container", "model", "inference", "pipeline", "monitoring", "verify", "pull")),
])
def test_each_platform_takes_its_own_driver_layer(platform: str, expected: tuple[str, ...]) -> None:
    assert layers.for_platform(platform) == expected
    assert layers.for_platform(platform, layers.chosen("model,nvidia,jetson")) == (
        "platform", "jetson" if platform == "jetson" else "nvidia", "model")


def test_a_rollout_applies_layers_of_the_list() -> None:
    assert rollout.LAYERS == layers.ROLLOUT and set(layers.ROLLOUT) <= set(layers.LAYERS)


def test_deploy_py_refuses_an_unknown_layer_in_cnctl_layers_with_exit_2() -> None:
    """deploy.py parses CNCTL_LAYERS with the same function as --layers (run as pyinfra would, without a host)."""
    code = "import os, runpy; os.environ['CNCTL_LAYERS'] = 'model,foo'; runpy.run_path('deploy.py')"
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip().splitlines()[-1] == (
        "CNCTL_LAYERS: foo is not a host layer; choose from " + ", ".join(layers.LAYERS))
