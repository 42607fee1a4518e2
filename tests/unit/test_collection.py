"""The Ansible side as the collection circularnet.fleet (cnctl/collection.py, docs/ansible.md): it builds, a user
installs the tarball into their own playbooks outside this repository, and a playbook there with only
`role: circularnet.fleet.model` checks its arguments and runs on without cnctl's checkout or pyinfra."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
from functools import cache
from pathlib import Path

import pytest
import yaml

from cnctl import collection, layers
from cnctl.paths import REPO_ROOT
from deploy import rules
from deploy.rules import roles
from tests.unit import collection_tree

BIN = Path(sys.executable).parent
GOOD_MODEL = {
    "cn_host": "h1", "cn_stack": "dev", "cn_model_key": "circularnet", "cn_model_name": "circularnet",
    "cn_model_platform": "tensorflow_savedmodel", "cn_model_sha256": "a" * 64, "cn_model_url": "https://example.com/m.zip",
    "cn_model_version": 1, "cn_model_keep": 2, "cn_model_format": "tf_savedmodel",
}


@cache
def _tarball(out: str) -> Path:
    return collection.build(Path(out))


@pytest.fixture(scope="module")
def tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tarball(str(tmp_path_factory.mktemp("dist")))


def test_the_collection_is_named_once_and_versioned_as_the_package() -> None:
    galaxy = yaml.safe_load((collection.RECIPE / "galaxy.yml").read_text())
    assert f"{galaxy['namespace']}.{galaxy['name']}." == rules.FILTER_PREFIX == f"{collection.FQCN}."
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    assert f'version = "{collection.version()}"' in pyproject
    built = yaml.safe_load((collection_tree.tree() / "galaxy.yml").read_text())
    assert built["version"] == collection.version() and built["license"] == ["Apache-2.0"]
    assert "Apache License" in (REPO_ROOT / "LICENSE").read_text()[:200]


def test_assembling_is_deterministic_and_cached_by_its_inputs(tmp_path: Path) -> None:
    first = collection.assemble(tmp_path / "a")
    second = collection.assemble(tmp_path / "b")
    assert first.name == second.name  # the hash of the inputs names the tree

    def files(root: Path) -> dict[str, bytes]:
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    assert files(first) == files(second)
    assert collection.assemble(tmp_path / "a") == first  # found in the cache, not rebuilt
    assert not list((tmp_path / "a").glob(".assembling-*"))


def test_the_tarball_holds_the_roles_filters_and_programs_and_nothing_of_the_tests(tarball: Path) -> None:
    assert tarball.name == f"circularnet-fleet-{collection.version()}.tar.gz"
    with tarfile.open(tarball) as tar:
        names = set(tar.getnames())
        manifest = json.loads(tar.extractfile("MANIFEST.json").read())  # type: ignore[union-attr]
    assert manifest["collection_info"]["namespace"] == "circularnet" and manifest["collection_info"]["name"] == "fleet"
    assert {"MANIFEST.json", "FILES.json", "meta/runtime.yml", "plugins/filter/layers.py", "plugins/filter/units.py",
            "plugins/module_utils/rules/checks.py", "plugins/module_utils/unitescape.py"} <= names
    for layer in layers.LAYERS:
        assert {f"roles/{layer}/tasks/main.yml", f"roles/{layer}/meta/argument_specs.yml"} <= names, layer
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc") or n.startswith(("tests/", "stacks/"))
                or "sandbox" in n or "filter_plugins" in n]


def _ansible_env(home: Path, collections: Path) -> dict[str, str]:
    """A user's environment: no repository path anywhere, Ansible's files in `home`."""
    return {"PATH": f"{BIN}{os.pathsep}/usr/bin:/bin", "HOME": str(home), "ANSIBLE_HOME": str(home / ".ansible"),
            "ANSIBLE_LOCAL_TEMP": str(home / "tmp"), "ANSIBLE_REMOTE_TMP": str(home / "remote"),
            "ANSIBLE_COLLECTIONS_PATH": str(collections), "ANSIBLE_NOCOLOR": "1", "LANG": "C.UTF-8"}


@pytest.fixture(scope="module")
def installed(tarball: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """The tarball installed with ansible-galaxy into a user's directory outside the repository."""
    user = tmp_path_factory.mktemp("user")
    assert not user.resolve().is_relative_to(REPO_ROOT)
    env = _ansible_env(user / "home", user / "collections")
    result = subprocess.run([str(BIN / "ansible-galaxy"), "collection", "install", str(tarball), "-p",
                             str(user / "collections")], check=False, cwd=user, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return user, env


def _play_model(user: Path, env: dict[str, str], variables: dict[str, object], *flags: str) -> str:
    paths = {"model_helper": str(user / "host" / "cnhost" / "model_sync.py"), "model_repository": str(user / "host" / "models"),
             "model_staging": str(user / "host" / "staging"), "model_default_config": str(user / "host" / "config.pbtxt")}
    (user / "play.yml").write_text(yaml.safe_dump([{"hosts": "localhost", "connection": "local", "gather_facts": False,
                                                    "vars": {**variables, **paths},
                                                    "roles": [{"role": "circularnet.fleet.model"}]}]))
    result = subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", "play.yml", *flags,
                             "-e", f"ansible_python_interpreter={sys.executable}"],
                            check=False, cwd=user, env=env, capture_output=True, text=True, timeout=300)
    return f"rc={result.returncode}\n{result.stdout}{result.stderr}"


def test_a_users_playbook_with_only_the_model_role_checks_its_arguments(installed: tuple[Path, dict[str, str]]) -> None:
    user, env = installed
    bad = {**GOOD_MODEL, "cn_model_version": "latest"}
    del bad["cn_model_url"]
    output = _play_model(user, env, bad)
    assert output.startswith("rc=2"), output[-3000:]
    assert "Validation of arguments failed" in output and "cn_model_url" in output and "cn_model_version" in output


def test_with_good_inputs_it_runs_on_past_the_checks_with_every_filter_found(installed: tuple[Path, dict[str, str]]) -> None:
    user, env = installed
    output = _play_model(user, env, GOOD_MODEL, "--check")
    assert output.startswith("rc=0"), output[-3000:]
    assert "No filter named" not in output and "Check the pinned version is in place" in output
    assert re.search(r"localhost\s+: ok=\d+\s+changed=\d+\s+unreachable=0\s+failed=0", output), output[-2000:]
    assert not [k for k, v in env.items() if k.startswith("ANSIBLE_") and str(REPO_ROOT) in v]


def _filters_used(text: str) -> set[str]:
    return set(re.findall(r"circularnet\.fleet\.(cnctl_\w+)", text))


@pytest.mark.parametrize("layer", layers.LAYERS)
def test_every_role_reaches_its_filters_by_fqcn_in_the_collection_alone(layer: str) -> None:
    """A playbook with only this role resolves every filter it and its templates call: the filters are the
    collection's plugins, called by FQCN (a short name is not found from a collection's role), so no role needs
    another to provide them and no role declares a dependency."""
    role = collection_tree.tree() / "roles" / layer
    texts = [p.read_text() for p in sorted(role.rglob("*.yml"))]
    templates = {m for text in texts for m in re.findall(r"(\w+/[\w.-]+\.j2)", text)}
    texts += [(collection_tree.tree() / "templates" / t).read_text() for t in templates
              if (collection_tree.tree() / "templates" / t).is_file()]
    used = set().union(*(_filters_used(t) for t in texts))
    given = collection_tree.filters()
    assert used and used <= set(given), sorted(used - set(given))
    short = [m for t in texts for m in re.findall(r"\|\s*(cnctl_\w+)|map\('(cnctl_\w+)'\)", t)]
    assert not short, f"{layer}: filters called by short name: {short}"
    assert yaml.safe_load((role / "meta" / "main.yml").read_text())["dependencies"] == []


def test_every_role_setting_the_filters_read_is_the_roles_own() -> None:
    for layer in layers.LAYERS:
        data = roles.role_data(collection_tree.tree() / "roles", layer)
        assert data == roles.role_data(REPO_ROOT / "roles", layer), layer


def test_the_filters_load_without_pyinfra_cnctl_or_the_repository() -> None:
    """Every filter plugin of the assembled collection, imported in a fresh interpreter whose path holds the
    collection and the venv's libraries only (no checkout, no editable cnctl)."""
    code = ("import sys; sys.path[:] = [p for p in sys.path if 'site-packages' in p or 'lib/python' in p]; "
            "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in type(f).__module__.lower()]; "
            f"sys.path.insert(0, {str(collection_tree.collections_path())!r}); "
            "from ansible_collections.circularnet.fleet.plugins.filter import layers, units; "
            "n = len(layers.FilterModule().filters()) + len(units.FilterModule().filters()); "
            "print(n, sorted(m for m in sys.modules if m.split('.')[0] in ('pyinfra', 'cnctl', 'deploy', 'cnhost')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60, cwd="/")
    assert result.returncode == 0, result.stderr
    count, loaded = result.stdout.split(" ", 1)
    assert int(count) > 50 and loaded.strip() == "[]", result.stdout


def test_the_engine_runs_the_assembled_collection_by_fqcn(tmp_path: Path) -> None:
    from cnctl.engines import ansible

    env = ansible.envvars(tmp_path, collection_tree.collections_path())
    assert (Path(env["ANSIBLE_COLLECTIONS_PATH"]) / "ansible_collections" / "circularnet" / "fleet" / "galaxy.yml").is_file()
    plays = yaml.safe_load(ansible.PLAYBOOK.read_text())
    assert all(r["role"].startswith("circularnet.fleet.") for play in plays for r in play["roles"])


def test_ansible_cfg_lets_a_checkout_run_the_playbook_as_users_type_it() -> None:
    cfg = (REPO_ROOT / "ansible.cfg").read_text()
    assert re.search(r"^collections_path = ~/\.cache/cnctl/collections:", cfg, re.MULTILINE)
    assert "retry_files_enabled = False" in cfg
    assert collection.cache_root() == Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cnctl" / "collections"
