"""The Ansible side is lint-clean and its inputs are declared: ansible-lint's production profile over roles/
and playbooks/ (offline, strict, no skips), and every role default declared in meta/argument_specs.yml.

ansible-lint runs with ANSIBLE_HOME, the local temp dir and its cache in a temporary directory, so it
writes nothing into the repository or $HOME, and with --offline it never asks Ansible Galaxy.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from cnctl.paths import REPO_ROOT
from tests.unit.collection_tree import collections_path

REPO = REPO_ROOT
BIN = Path(sys.executable).parent
ROLES = sorted(p for p in (REPO / "roles").iterdir() if (p / "tasks" / "main.yml").is_file())


def test_roles_and_playbooks_pass_the_production_profile_offline(tmp_path: Path) -> None:
    linted = sorted(str(p.relative_to(REPO)) for p in [*(REPO / "roles").rglob("*.yml"), *(REPO / "playbooks").glob("*.yml")])
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "ANSIBLE_HOME": str(tmp_path / "ansible"),
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible" / "tmp"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "NO_COLOR": "1",
        # the playbook names the roles by FQCN: the collection they are assembled into (cnctl/collection.py)
        "ANSIBLE_COLLECTIONS_PATH": str(collections_path()),
    }
    result = subprocess.run(
        [str(BIN / "ansible-lint"), "--offline", "--profile", "production", "--strict", "--nocolor", "roles", "playbooks"],
        check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Profile 'production' was required, and it passed" in output, output
    processed = re.search(r"in (\d+) files processed", output)
    assert processed and int(processed.group(1)) >= len(linted), (linted, output)  # it really looked at them
    assert not (REPO / ".ansible").exists(), "ansible-lint wrote into the repository"


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text()) or {}


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_every_default_is_declared_in_the_argument_specs_and_every_optional_input_has_a_default(role: Path) -> None:
    defaults = _yaml(role / "defaults" / "main.yml")
    options = _yaml(role / "meta" / "argument_specs.yml")["argument_specs"]["main"]["options"]
    required = {name for name, spec in options.items() if spec.get("required")}
    # cn_* inputs are the host's variables (cnctl.hostvars, the inventory gives them): never defaulted in a role
    host_vars = {name for name in options if name.startswith("cn_")}
    assert set(defaults) == set(options) - required - host_vars, "defaults/main.yml and meta/argument_specs.yml disagree"
    for name, spec in options.items():
        assert spec.get("type") and spec.get("description"), f"{name}: every input is typed and described"
        if name in required or name in host_vars:
            assert "default" not in spec, f"{name}: a required input or host variable has no default"
        else:
            assert spec.get("default") == defaults[name], f"{name}: the spec's default differs from defaults/main.yml"
    assert all(name.startswith(f"{role.name}_") for name in set(options) - host_vars), "role inputs carry the role's prefix"


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_every_default_is_documented_by_a_comment(role: Path) -> None:
    lines = (role / "defaults" / "main.yml").read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^[a-z_]+:", line):
            assert i and lines[i - 1].startswith("#"), f"defaults/main.yml: {line.split(':')[0]} has no comment above it"
