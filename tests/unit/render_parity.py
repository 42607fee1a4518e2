"""Both engines render a shared template to the same bytes: the one harness the layers' parity tests use.

pyinfra renders through its own template loader (`pyinfra.api.util.get_template`) with the environment the layers
give it (deploy/steps.py `jinja_env_kwargs`: the unit filters); Ansible through its template module, all of a
test's renderings in one ansible-playbook run on localhost (its own Jinja2 environment, trim_blocks on), with the
collection's unit filters (collection/plugins/filter/units.py) found by FQCN in the assembled collection, and
the templates as the collection carries them (tests/unit/collection_tree.py).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pyinfra.api.util import get_template

from cnctl.ansible_yaml import dump
from cnctl.paths import TEMPLATES_DIR
from deploy.steps import jinja_env_kwargs
from tests.unit.collection_tree import ansible_env, tree

BIN = Path(sys.executable).parent
Renderings = Sequence[tuple[str, dict[str, Any]]]


def render(src: str, **variables: Any) -> str:
    """templates/<src> as pyinfra renders it."""
    return str(get_template(str(TEMPLATES_DIR / src), jinja_env_kwargs()).render(**variables))


def by_pyinfra(renderings: Renderings) -> list[bytes]:
    return [render(src, **variables).encode() for src, variables in renderings]


def by_ansible(renderings: Renderings, tmp_path: Path) -> list[bytes]:
    """Each (template, variables) through Ansible's template module (a cnctl.ansible_yaml `Unsafe` string as
    `!unsafe` data, as the inventory and the extra vars carry stack values)."""
    result = _playbook(renderings, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    return [(tmp_path / f"{i}.out").read_bytes() for i in range(len(renderings))]


def refused_by_ansible(renderings: Renderings, tmp_path: Path) -> str:
    """The output of an ansible-playbook run of `renderings` that must fail (a template refusing a value)."""
    result = _playbook(renderings, tmp_path)
    assert result.returncode != 0, f"Ansible rendered {[src for src, _ in renderings]}: {result.stdout[-1000:]}"
    return result.stdout + result.stderr


def _playbook(renderings: Renderings, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    tasks = [{"name": f"render {i}", "ansible.builtin.template": {"src": str(tree() / "templates" / src),
                                                                  "dest": str(tmp_path / f"{i}.out"), "mode": "0644"},
              "vars": variables} for i, (src, variables) in enumerate(renderings)]
    playbook = tmp_path / "render.yml"
    playbook.write_text(dump([{"hosts": "localhost", "connection": "local", "gather_facts": False, "tasks": tasks}]))
    env = ansible_env(tmp_path)
    result = subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", str(playbook),
                             "-e", f"ansible_python_interpreter={sys.executable}"],
                            check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    return result
