"""The host layers' shell commands as data (issue 20): each builder both engines run (pyinfra operations and facts,
the roles through their filters) given hostile values keeps the structure it has with benign ones, as bash parses
it, and carries each value as one whole word."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from cnhost import model_serve
from deploy import pull
from deploy.rules import container as container_rules
from deploy.rules import inference as inference_rules
from deploy.rules import pipeline as pipeline_rules
from deploy.rules import probe, scripts
from deploy.rules import pull as pull_rules
from deploy.rules import verify as verify_rules
from tests.unit.shell_shape import shape, words

# A value no schema should let through; each builder must keep it one word all the same.
HOSTILE = "a b;$(touch /tmp/cnctl-pwned)`id`'\"\n&& #*"

# name -> builder of (the command, a value in it)
Builder = Callable[[str], str]
BUILDERS: dict[str, Builder] = {
    "pip install (index, venv, requirements)": lambda v: inference_rules.pip_install_command(v, v, f"http://{v}", build=True),
    "pipeline install (two pip runs)": lambda v: pipeline_rules.install_command(
        v, {"pipeline_requirements": v, "pipeline_sources_requirements": v},
        {"cn_python_index_url": v, "cn_uploader_wheels": [{"name": "x", "sdist": True}]}),
    "client unpack": lambda v: pipeline_rules.unpack_command(v, v),
    "nvidia-ctk configure": lambda v: container_rules.configure_command(v, v, True),
    "pull: present paths": lambda v: pull_rules.present_command([v, v]),
    "pull: tree": lambda v: pull.tree_command(v),
    "verify: check": lambda v: verify_rules.check_command(f"/{v}/cnhost/health_report.py", v),
    "model_serve check": lambda v: scripts.serve_command(f"/{v}/cnhost/model_serve.py", "check",
                                                         dict.fromkeys(model_serve.OPTIONS, v), True),
    "model_serve serve": lambda v: scripts.serve_command(f"/{v}/cnhost/model_serve.py", "serve",
                                                         dict.fromkeys(model_serve.OPTIONS, v)),
    "probe script (facts with arguments)": lambda v: probe.script({
        "image": ["DockerImage", {"image": v}], "address": ["InterfaceAddress", {"interface": v}],
        "packages": ["DpkgVersions", {"packages": [v, v]}], "venv": ["VenvPackages", {"venv": v}],
        "units": ["UnitsActive", {"units": [v]}]}),
}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_a_layers_command_keeps_its_structure_and_each_value_whole(name: str) -> None:
    build = BUILDERS[name]
    benign, hostile = build("v"), build(HOSTILE)
    assert shape(hostile) == shape(benign), name
    found = words(hostile)
    assert HOSTILE in found or any(word.count(HOSTILE) == 1 for word in found), (name, found)
    assert len(found) == len(words(benign))


def test_pips_options_are_words_and_the_plain_http_index_is_trusted_by_its_host() -> None:
    assert inference_rules.pip_index_args("http://10.0.0.2:8080/simple") == [
        "--no-deps", "--require-hashes", "--no-cache-dir", "--disable-pip-version-check", "--index-url",
        "http://10.0.0.2:8080/simple", "--trusted-host", "10.0.0.2"]
    assert "--trusted-host" not in inference_rules.pip_index_args("https://pypi.org/simple")


