"""Adding a host layer is a recipe (CONTRIBUTING.md, "Adding a host layer"): for every layer of cnctl/layers.py,
each place a layer must be in that no other fast test holds it to. Each failure names the layer, the place and
what is missing there.

Already held by other tests, over every layer of the list (not repeated here): deploy.py's APPLY and the
playbook's plays and tags (tests/unit/test_deploy_layers.py), the role's defaults against its argument specs and
ansible-lint (tests/unit/test_ansible_lint.py), the modules deploy.py imports in the bundle
(tests/unit/test_bundle_archive.py).

Everything here reads files (a repository tree: the checkout, or a broken copy of it) and the local and dev
stacks' host variables: no root, no sandbox, no engine run. The last test breaks each place once, in a copy of
the tree, and proves its check names the layer and what is missing.
"""

from __future__ import annotations

import ast
import re
import shutil
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from cnctl.bundle import contents
from cnctl.config import load_stack
from cnctl.hostvars import CloudVm, host_vars
from cnctl.layers import LAYERS, PLATFORM_ONLY, for_platform
from cnctl.paths import REPO_ROOT
from cnctl.plan import hostdiff
from cnctl.sandbox import image
from cnctl.sandbox.site import debian, standins

REPO = REPO_ROOT
Problems = list[str]
Host = tuple[str, dict[str, Any]]  # (stack, group and name as the message shows it) and its cn_* variables

# Every role has these (handlers/ and vars/ only where the role needs them).
ROLE_FILES = ("tasks/main.yml", "defaults/main.yml", "meta/main.yml", "meta/argument_specs.yml", "README.md")
# A template path as the layers name it: relative to templates/.
TEMPLATE = re.compile(r"[a-z0-9_-]+/[\w.-]+\.j2")
# The stacks whose hosts must get every cn_* input a layer requires: local (edge, servers) and dev (a cloud VM).
STACKS = ("local", "dev")
# Where a list of the layers in their order is written out (`platform → jetson → ...`, `platform -> ...`).
LAYER_LISTS = ("README.md", "CONTRIBUTING.md", "docs/*.md", "deploy.py")
CHAIN = re.compile(r"platform(?:\s*(?:→|->)\s*[a-z]+(?:/[a-z]+)*(?:\s*\([^)]*\))?)+")
# Packages a host image has or the site downloads bring these in as dependencies (Debian's own Depends).
DEBIAN_DEPENDENCIES = {"containerd": "docker.io", "runc": "docker.io", "openssh-client": "openssh-server"}


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def _options(root: Path, layer: str) -> dict[str, Any]:
    """The role's declared inputs (meta/argument_specs.yml), {} when it has none."""
    specs = _yaml(root / "roles" / layer / "meta" / "argument_specs.yml") or {}
    return ((specs.get("argument_specs") or {}).get("main") or {}).get("options") or {}


@cache
def _stack_hosts() -> tuple[Host, ...]:
    """Every host of the local and dev stacks (a cloud VM as the stack plans it) with its variables."""
    hosts: list[Host] = []
    for stack in STACKS:
        cfg = load_stack(stack)
        hosts += [(f"{stack} edge {d.name}", host_vars(cfg, "edge", d)) for d in cfg.fleets.edge]
        hosts += [(f"{stack} servers {s.name}", host_vars(cfg, "servers", s)) for s in cfg.fleets.servers]
        if cfg.compute is not None and cfg.gcp is not None:
            vm = CloudVm(name=f"cn-{stack}-gpu-0", zone=cfg.gcp.zones[0], project=cfg.gcp.project,
                         internal_ip="10.0.0.2", ssh_user="deploy")
            hosts.append((f"{stack} cloud {vm.name}", host_vars(cfg, "cloud", vm)))
    return tuple(hosts)


# --- 1. the role: its directory and standard files ---------------------------------------------------------------

def role_files(root: Path, layer: str) -> Problems:
    """roles/<layer>/ with the standard files, its meta naming it, its argument specs declaring its inputs."""
    role = root / "roles" / layer
    problems = [f"{layer}: roles/{layer}/{name} is missing" for name in ROLE_FILES if not (role / name).is_file()]
    meta = _yaml(role / "meta" / "main.yml") or {}
    if (role / "meta" / "main.yml").is_file() and (meta.get("galaxy_info") or {}).get("role_name") != layer:
        problems.append(f"{layer}: roles/{layer}/meta/main.yml galaxy_info.role_name is not {layer!r}")
    if (role / "meta" / "argument_specs.yml").is_file() and not _options(root, layer):
        problems.append(f"{layer}: roles/{layer}/meta/argument_specs.yml declares no argument_specs.main.options")
    return problems


# --- 2. the templates: both engines render the same ones, each proven byte-identical -----------------------------

def _template_strings(tree: ast.AST) -> set[str]:
    return {node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and TEMPLATE.fullmatch(node.value)}


@cache
def _helper_templates(module: Path) -> dict[str, set[str]]:
    """{function name: the template paths it names} of a deploy/ module (steps.py's apt_repository, ...)."""
    if not module.is_file():
        return {}
    tree = ast.parse(module.read_text())
    return {node.name: _template_strings(node) for node in tree.body if isinstance(node, ast.FunctionDef)}


def _helpers_used(tree: ast.Module) -> Iterator[tuple[str, str]]:
    """(deploy module, function) of each helper the layer uses from another deploy/ module: `from deploy.steps
    import template` ... `template(...)`, and `from deploy import pipeline` ... `pipeline.units(...)`."""
    functions: dict[str, str] = {}  # local name -> its module
    modules: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("deploy."):
            functions |= {alias.asname or alias.name: node.module.split(".", 1)[1] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module == "deploy":
            modules |= {alias.asname or alias.name for alias in node.names}
    for used in ast.walk(tree):
        if isinstance(used, ast.Name) and used.id in functions:
            yield functions[used.id], used.id
        elif isinstance(used, ast.Attribute) and isinstance(used.value, ast.Name) and used.value.id in modules:
            yield used.value.id, used.attr


def pyinfra_templates(root: Path, layer: str) -> set[str]:
    """The templates deploy/<layer>.py renders: the paths it names, and those of the deploy/ helpers it calls."""
    path = root / "deploy" / f"{layer}.py"
    if not path.is_file():
        return set()
    tree = ast.parse(path.read_text())
    found = _template_strings(tree)
    for module, function in _helpers_used(tree):
        found |= _helper_templates(root / "deploy" / f"{module}.py").get(function, set())
    return found


def layer_templates(root: Path, layer: str) -> set[str]:
    return pyinfra_templates(root, layer) | hostdiff.role_templates(root / "roles" / layer)


def templates_both_engines(root: Path, layer: str) -> Problems:
    """deploy/<layer>.py and roles/<layer>/tasks/*.yml render the same templates."""
    by_pyinfra, by_role = pyinfra_templates(root, layer), hostdiff.role_templates(root / "roles" / layer)
    return ([f"{layer}: templates/{src} is rendered by deploy/{layer}.py but not by roles/{layer}/tasks"
             for src in sorted(by_pyinfra - by_role)]
            + [f"{layer}: templates/{src} is rendered by roles/{layer}/tasks but not by deploy/{layer}.py"
               for src in sorted(by_role - by_pyinfra)])


def _assignments(tree: ast.Module) -> dict[str, ast.AST]:
    """{name: its value} of a module's top-level assignments."""
    found: dict[str, ast.AST] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            found |= {target.id: node.value for target in targets if isinstance(target, ast.Name)}
    return found


def _constant_templates(name: str, assigned: dict[str, ast.AST], seen: frozenset[str] = frozenset()) -> set[str]:
    """The template paths in the module constant `name`, and in the module constants it names (`*UNITS`)."""
    value = assigned.get(name)
    if value is None or name in seen:
        return set()
    names = {node.id for node in ast.walk(value) if isinstance(node, ast.Name)}
    return _template_strings(value).union(*(_constant_templates(n, assigned, seen | {name}) for n in names))


@cache
def parity_renderings(tests: Path = REPO / "tests" / "unit") -> frozenset[str]:
    """The templates of every RENDERINGS list of a test module that renders through both engines
    (tests/unit/render_parity.py: by_pyinfra == by_ansible, byte for byte)."""
    found: set[str] = set()
    for module in sorted(tests.glob("test_*.py")):
        text = module.read_text()
        if "render_parity import" in text:
            found |= _constant_templates("RENDERINGS", _assignments(ast.parse(text)))
    return frozenset(found)


def templates_proven(root: Path, layer: str, proven: frozenset[str] | None = None) -> Problems:
    """Each template the layer renders is in a render-parity test's RENDERINGS."""
    proven = parity_renderings() if proven is None else proven
    return [f"{layer}: templates/{src} is in no RENDERINGS list of a render-parity test (tests/unit/render_parity.py)"
            for src in sorted(layer_templates(root, layer) - proven)]


# --- 3. the offline plan's host preview --------------------------------------------------------------------------

def _group_platforms() -> dict[str, str]:
    """host group -> its hosts' platform (cn_platform), from the stacks' hosts."""
    return {where.split()[1]: variables["cn_platform"] for where, variables in _stack_hosts()}


@cache
def _checkout_group_templates() -> dict[str, dict[str, bytes]]:
    return hostdiff.group_templates(REPO)


def plan_preview(root: Path, layer: str) -> Problems:
    """The plan's host preview (cnctl/plan/hostdiff.py) lists each of the layer's templates for every host group
    that takes the layer, so a pull request that changes one shows it."""
    listed = _checkout_group_templates() if root == REPO else hostdiff.group_templates(root)
    problems = []
    for group, platform in sorted(_group_platforms().items()):
        if layer in for_platform(platform):
            problems += [f"{layer}: the plan's host preview (cnctl/plan/hostdiff.py) does not list templates/{src} "
                         f"for the {group} group" for src in sorted(layer_templates(root, layer) - set(listed.get(group, {})))]
    return problems


# --- 4. the role's cn_* inputs are what cnctl/hostvars.py gives ---------------------------------------------------

def host_inputs(root: Path, layer: str, hosts: tuple[Host, ...] | None = None) -> Problems:
    """Every cn_* input the role requires (without a default) is given to every host that takes the layer; every
    cn_* input it declares is given to some host (else it is a name only one engine knows)."""
    hosts = _stack_hosts() if hosts is None else hosts
    options = {name: spec or {} for name, spec in _options(root, layer).items() if name.startswith("cn_")}
    taking = [(where, variables) for where, variables in hosts if layer in for_platform(variables["cn_platform"])]
    problems = [f"{layer}: roles/{layer}/meta/argument_specs.yml declares {name}, which cnctl/hostvars.py gives no host"
                for name in sorted(options) if not any(name in variables for _, variables in hosts)]
    for name, spec in sorted(options.items()):
        if spec.get("required") and "default" not in spec:
            missing = [where for where, variables in taking if name not in variables]
            if missing:
                problems.append(f"{layer}: roles/{layer} requires {name}, which cnctl/hostvars.py does not give "
                                f"{', '.join(missing)}")
    return problems


# --- 5. the bundle carries the layer ------------------------------------------------------------------------------

def _role_shipped(root: Path, layer: str) -> set[str]:
    """Files the role copies from the repository (defaults like `{{ role_path }}/../../cnhost/health_report.py`)."""
    defaults = _yaml(root / "roles" / layer / "defaults" / "main.yml") or {}
    refs = {match[1] for value in defaults.values() if isinstance(value, str)
            for match in [re.fullmatch(r"\{\{ role_path \}\}/\.\./\.\./(.+)", value)] if match}
    return {ref for ref in refs if (root / ref).is_file()}


def bundled(root: Path, layer: str, entries: tuple[tuple[str, str | None], ...] = contents.ENTRIES) -> Problems:
    """A bundle (cnctl/bundle/contents.py ENTRIES) carries what the layer's pyinfra deploy reads on a pull host:
    deploy/<layer>.py, the templates it renders, the role's defaults and vars (deploy/steps.py role_data)."""
    role = Path("roles") / layer
    needed = {f"deploy/{layer}.py", *(f"templates/{src}" for src in layer_templates(root, layer)),
              *(str(role / part / "main.yml") for part in ("defaults", "vars") if (root / role / part / "main.yml").is_file()),
              *_role_shipped(root, layer)}
    shipped = set(contents.files(root, entries))
    return [f"{layer}: {path} is not in a bundle (cnctl/bundle/contents.py ENTRIES)" for path in sorted(needed - shipped)]


# --- 6. the docs --------------------------------------------------------------------------------------------------

def _chains(text: str) -> Iterator[tuple[str, list[str]]]:
    """Each written-out list of layers (`platform → nvidia/jetson → ...`) and the layers it names, in its order."""
    flat = " ".join(text.replace("*", "").split())
    for match in CHAIN.finditer(flat):
        steps = re.split(r"\s*(?:→|->)\s*", re.sub(r"\s*\([^)]*\)", "", match[0]))
        yield match[0], [name for step in steps for name in sorted(step.split("/"), key=_position)]


def _position(name: str) -> int:
    return LAYERS.index(name) if name in LAYERS else len(LAYERS)


def _expected(names: list[str]) -> list[str]:
    """The layers a list naming `names` must name: one platform's, or both's when it names both driver layers."""
    platforms = {PLATFORM_ONLY[name] for name in names if name in PLATFORM_ONLY} or set(PLATFORM_ONLY.values())
    return [name for name in LAYERS if PLATFORM_ONLY.get(name, "every") in platforms | {"every"}]


def documented(root: Path, layer: str) -> Problems:
    """docs/host-layers.md has the layer's row; every list of the layers in the docs, the README and deploy.py
    names it in its place."""
    problems = []
    if not re.search(rf"^\| `{layer}` \|", (root / "docs" / "host-layers.md").read_text(), re.MULTILINE):
        problems.append(f"{layer}: docs/host-layers.md has no row `| `{layer}` | what it ensures |`")
    for pattern in LAYER_LISTS:
        for path in sorted(root.glob(pattern)):
            for written, names in _chains(path.read_text()):
                expected = _expected(names)
                if layer in expected and layer not in names:
                    problems.append(f"{layer}: {path.relative_to(root)} lists the layers without it: {written!r}")
                elif layer in names and [n for n in names if n in expected] != [n for n in expected if n in names]:
                    problems.append(f"{layer}: {path.relative_to(root)} lists the layers out of order: {written!r}")
    return problems


# --- 7. the sandbox serves what the layer installs ----------------------------------------------------------------

@cache
def sandbox_packages() -> frozenset[str]:
    """What a sandbox host can install: the site's stand-ins, Debian's packages the site downloads with their
    dependencies, and what the host image has."""
    standin = {name for pkg in standins.all_packages() for name in (pkg.name, *pkg.provides)}
    return frozenset(standin | set(debian.PACKAGES) | set(image.PACKAGES) | set(DEBIAN_DEPENDENCIES))


def _package_names(value: Any) -> set[str]:
    """The package names in a packages value: a name, a list of them, {name: version}, pins ([{packages,
    version}]) or pins per release ({codename: pins}); globs (held patterns, not installs) left out."""
    if isinstance(value, str):
        return set() if set(value) & set("*?[") else {value}
    if isinstance(value, list):
        return set().union(*map(_package_names, value))
    if isinstance(value, dict) and "packages" in value:
        return _package_names(value["packages"])
    if isinstance(value, dict):
        return set().union(*(_package_names(key if isinstance(item, str) else item) for key, item in value.items()))
    return set()


def layer_packages(root: Path, layer: str) -> set[str]:
    """The apt packages the layer names as data: its role's `*_packages` settings and the values of the
    `cn_*_package(s)` and `cn_*_pins` inputs it declares, as the local stack (the sandbox's) gives them."""
    role = root / "roles" / layer
    found: set[str] = set()
    for part in ("defaults", "vars"):
        settings = _yaml(role / part / "main.yml") or {}
        found |= {n for key, value in settings.items() if key.endswith("_packages") for n in _package_names(value)}
    inputs = [name for name in _options(root, layer) if name.startswith("cn_") and name.endswith(("_package", "_packages", "_pins"))]
    for where, variables in _stack_hosts():
        if where.startswith("local ") and layer in for_platform(variables["cn_platform"]):
            found |= {n for name in inputs for n in _package_names(variables.get(name))}
    return found


def sandbox_serves(root: Path, layer: str, served: frozenset[str] | None = None) -> Problems:
    served = sandbox_packages() if served is None else served
    return [f"{layer}: installs {name}, which the sandbox does not serve: a stand-in in cnctl/sandbox/site/standins.py "
            f"or a Debian package in cnctl/sandbox/site/debian.py PACKAGES" for name in sorted(layer_packages(root, layer) - served)]


PLACES: dict[str, Callable[..., Problems]] = {
    "role files": role_files,
    "templates in both engines": templates_both_engines,
    "templates proven byte-identical": templates_proven,
    "plan host preview": plan_preview,
    "cn_* inputs from hostvars": host_inputs,
    "bundle": bundled,
    "docs": documented,
    "sandbox packages": sandbox_serves,
}


@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize("layer", LAYERS)
def test_every_layer_is_in_every_place(layer: str, place: str) -> None:
    problems = PLACES[place](REPO, layer)
    assert not problems, f"{layer} ({place}; CONTRIBUTING.md, Adding a host layer):\n" + "\n".join(problems)


def test_the_checks_read_what_is_there() -> None:
    """The scans find the real thing, so an empty result above is not an empty reading."""
    assert pyinfra_templates(REPO, "platform") == {"apt/source.list.j2", "platform/facts.json.j2"}  # via steps.py
    assert {"systemd/circularnet-health.service.j2", "systemd/circularnet-health.timer.j2"} <= layer_templates(REPO, "verify")
    assert layer_templates(REPO, "verify") <= parity_renderings()
    assert {"nvidia-jetpack", "docker.io", "cuda-toolkit-12-4", "openssh-client"} <= set().union(
        *(layer_packages(REPO, layer) for layer in LAYERS))
    assert {where.split()[1] for where, _ in _stack_hosts()} == {"edge", "servers", "cloud"}
    assert any(_chains((REPO / "docs" / "host-layers.md").read_text()))
    assert set(DEBIAN_DEPENDENCIES.values()) <= {*debian.PACKAGES, *image.PACKAGES}


# --- each check can fail: one place broken in a copy of the tree, the check names the layer and the place ---------

def _replace(path: str, old: str, new: str, count: int = 1) -> Callable[[Path], dict[str, Any]]:
    def broken(tree: Path) -> dict[str, Any]:
        target = tree / path
        text = target.read_text()
        assert text.count(old) == count, (path, old)
        target.write_text(text.replace(old, new))
        return {}
    return broken


def _remove(path: str) -> Callable[[Path], dict[str, Any]]:
    def broken(tree: Path) -> dict[str, Any]:
        (tree / path).unlink()
        return {}
    return broken


def _without_entry(entry: tuple[str, str | None]) -> Callable[[Path], dict[str, Any]]:
    return lambda tree: {"entries": tuple(e for e in contents.ENTRIES if e != entry)}


SPEC_OPTIONS = "    options:\n"
BROKEN: dict[str, tuple[str, str, Callable[[Path], dict[str, Any]], str]] = {
    # case: (layer, place, how it is broken, what the failure says)
    "role README missing": ("verify", "role files", _remove("roles/verify/README.md"), "roles/verify/README.md is missing"),
    "role argument specs missing": ("model", "role files", _remove("roles/model/meta/argument_specs.yml"),
                                    "roles/model/meta/argument_specs.yml is missing"),
    "role named otherwise": ("pull", "role files", _replace("roles/pull/meta/main.yml", "role_name: pull", "role_name: agent"),
                             "galaxy_info.role_name is not 'pull'"),
    "a loop item only pyinfra renders": (
        "verify", "templates in both engines", _replace("roles/verify/tasks/main.yml", "    - service\n    - timer\n", "    - service\n"),
        "templates/systemd/circularnet-health.timer.j2 is rendered by deploy/verify.py but not by roles/verify/tasks"),
    "a template only the role renders": (
        "verify", "templates in both engines", _replace("deploy/verify.py", '"verify/deploy.json.j2"', '"verify/record.json.j2"'),
        "templates/verify/deploy.json.j2 is rendered by roles/verify/tasks but not by deploy/verify.py"),
    "a helper's template only the role renders": (
        "platform", "templates in both engines",
        _replace("deploy/platform.py", "apt_repository(", "unused("),
        "templates/apt/source.list.j2 is rendered by roles/platform/tasks but not by deploy/platform.py"),
    "a template no parity test renders": (
        "pull", "templates proven byte-identical", lambda tree: {"proven": parity_renderings() - {"pull/agent.json.j2"}},
        "templates/pull/agent.json.j2 is in no RENDERINGS list"),
    "a role missing from a play": (
        "verify", "plan host preview", _replace("playbooks/site.yml", "    - {role: circularnet.fleet.verify, tags: [verify]}\n", "", count=2),
        "does not list templates/verify/deploy.json.j2 for the edge group"),
    "a required input hostvars does not give": (
        "inference", "cn_* inputs from hostvars",
        _replace("roles/inference/meta/argument_specs.yml", SPEC_OPTIONS,
                 SPEC_OPTIONS + "      cn_inference_gpus:\n        type: int\n        required: true\n        description: x\n"),
        "declares cn_inference_gpus, which cnctl/hostvars.py gives no host"),
    "a required input one platform lacks": (
        "container", "cn_* inputs from hostvars",
        lambda tree: {"hosts": tuple((w, {k: v for k, v in h.items() if not (k == "cn_docker_source" and " edge " in w)})
                                     for w, h in _stack_hosts())},
        "requires cn_docker_source, which cnctl/hostvars.py does not give local edge belt-1-orin"),
    "role defaults not bundled": ("verify", "bundle", _without_entry(("roles", "*/defaults/main.yml")),
                                  "roles/verify/defaults/main.yml is not in a bundle"),
    "templates not bundled": ("pipeline", "bundle", _without_entry(("templates", "**/*")),
                              "templates/pipeline/pipeline.json.j2 is not in a bundle"),
    "no row in the layers' table": ("pull", "docs", _replace("docs/host-layers.md", "| `pull` |", "| pull agent |"),
                                    "docs/host-layers.md has no row"),
    "a layer list without it": ("pull", "docs", _replace("README.md", "verify → pull", "verify"),
                                "README.md lists the layers without it: 'platform → nvidia/jetson"),
    "a layer list out of order": ("model", "docs", _replace("deploy.py", "container -> model -> inference", "container -> inference -> model", count=3),
                                  "deploy.py lists the layers out of order"),
    "a package the sandbox lacks": (
        "pull", "sandbox packages", _replace("roles/pull/vars/main.yml", "[openssh-client, python3-venv]",
                                             "[openssh-client, python3-venv, gnupg-nonesuch]"),
        "installs gnupg-nonesuch, which the sandbox does not serve"),
    "a stand-in the site lacks": (
        "jetson", "sandbox packages", lambda tree: {"served": sandbox_packages() - {"nvidia-jetpack"}},
        "installs nvidia-jetpack, which the sandbox does not serve"),
}
TREE = ("deploy.py", "README.md", "CONTRIBUTING.md", "deploy", "cnhost", "roles", "playbooks", "templates", "monitoring", "docs", "cnctl", "hosts")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the parts of the repository the checks read."""
    tree = tmp_path_factory.mktemp("pristine")
    for name in TREE:
        source = REPO / name
        if not source.exists():
            continue
        if source.is_dir():
            shutil.copytree(source, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, tree / name)
    return tree


@pytest.mark.parametrize("case", BROKEN)
def test_each_check_names_the_layer_and_what_is_missing(case: str, pristine: Path, tmp_path: Path) -> None:
    layer, place, broken, says = BROKEN[case]
    tree = tmp_path / "tree"
    shutil.copytree(pristine, tree)
    check = PLACES[place]
    assert not check(tree, layer), "the copy is whole before it is broken"
    problems = check(tree, layer, **broken(tree))
    assert any(problem.startswith(f"{layer}: ") and says in problem for problem in problems), problems
