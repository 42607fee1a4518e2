"""Both engines render a shared template to the same bytes: the one harness the layers' parity tests use.

pyinfra renders through its own template loader (`pyinfra.api.util.get_template`) with the environment the layers
give it (deploy/steps.py `jinja_env_kwargs`: the unit filters); Ansible through its template module, all of a
test's renderings in one ansible-playbook run on localhost (its own Jinja2 environment, trim_blocks on), with the
roles' unit filter plugin (roles/*/filter_plugins/cnctl_units.py) on its filter path.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pyinfra.api.util import get_template

from cnctl.ansible_yaml import dump
from cnctl.paths import REPO_ROOT, TEMPLATES_DIR
from deploy.steps import jinja_env_kwargs

BIN = Path(sys.executable).parent
Renderings = Sequence[tuple[str, dict[str, Any]]]
# The unit filters as a role gives them (every role that renders a unit has the same file).
FILTER_PLUGINS = REPO_ROOT / "roles" / "inference" / "filter_plugins"


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
    tasks = [{"name": f"render {i}", "ansible.builtin.template": {"src": str(TEMPLATES_DIR / src),
                                                                  "dest": str(tmp_path / f"{i}.out"), "mode": "0644"},
              "vars": variables} for i, (src, variables) in enumerate(renderings)]
    playbook = tmp_path / "render.yml"
    playbook.write_text(dump([{"hosts": "localhost", "connection": "local", "gather_facts": False, "tasks": tasks}]))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "ANSIBLE_HOME": str(tmp_path / "home"),
           "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp"), "ANSIBLE_REMOTE_TMP": str(tmp_path / "remote"),  # not in ~
           "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FILTER_PLUGINS": str(FILTER_PLUGINS)}
    result = subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", str(playbook),
                             "-e", f"ansible_python_interpreter={sys.executable}"],
                            check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    return result
