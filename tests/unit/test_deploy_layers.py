"""`cnctl deploy --layers`: the layers named, in the order they apply, platform always; anything else is bad input
(exit 2) naming the choices. deploy.py reads the same list (CNCTL_LAYERS), the roles are tagged with its names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cnctl.cli.deploy import chosen_layers
from cnctl.cli.main import app
from cnctl.engines.target import HOST_LAYERS
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


def test_deploy_py_and_the_playbook_know_exactly_these_layers() -> None:
    plays = yaml.safe_load((REPO / "playbooks" / "site.yml").read_text())
    tagged = {role["role"]: role["tags"] for play in plays for role in play["roles"]}
    assert tagged == {name: ["always" if name == "platform" else name] for name in HOST_LAYERS}
    applied = re.findall(r'if (?:[\w ]+ and )?"(\w+)" in chosen', (REPO / "deploy.py").read_text())
    assert ["platform", *applied] == list(HOST_LAYERS)
