"""The sandbox's logic that needs no root and no fleet: subnet clashes, host placement, the L4T release
file, the apt source template, mirror discovery, the image recipe, prerequisites and the inventories."""

from __future__ import annotations

import json
import runpy
import shlex
from pathlib import Path

import jinja2
import pytest

from cnctl.catalog import catalog
from cnctl.config import load_stack
from cnctl.paths import REPO_ROOT
from cnctl.sandbox import image
from cnctl.sandbox.errors import SandboxProblem
from cnctl.sandbox.flavours import nv_tegra_release
from cnctl.sandbox.instance import Instance
from cnctl.sandbox.inventory import ansible_inventory, fleet_document, publish
from cnctl.sandbox.layout import HostSpec, layout_from_stack
from cnctl.sandbox.network import overlaps, subnet_problem
from cnctl.sandbox.state import FleetState, HostState, save
from tests.unit.test_engines import SOURCES

REPO = REPO_ROOT


# --- subnet ------------------------------------------------------------------------------------


def _addr(ifname: str, cidr: str) -> dict:
    local, prefixlen = cidr.split("/")
    return {"ifname": ifname, "addr_info": [{"family": "inet", "local": local, "prefixlen": int(prefixlen)}]}


def test_a_subnet_clash_names_the_interface_and_the_stack_field() -> None:
    problem = subnet_problem("172.31.254.0/24", [_addr("eth0", "192.0.2.2/24"), _addr("docker0", "172.31.0.1/16")],
                             [{"dst": "default", "dev": "eth0"}], own="cnsb-up")
    assert problem is not None
    assert "interface docker0 (172.31.0.1/16)" in problem
    assert "`sandbox.subnet` of stacks/Pulumi.local.yaml" in problem
    assert "e.g. 10.254.254.0/24" in problem  # a suggestion that is itself free


def test_routes_clash_too_but_default_routes_and_our_own_uplink_do_not() -> None:
    routes = [{"dst": "default", "dev": "eth0"}, {"dst": "0.0.0.0/0", "dev": "wg0"},
              {"dst": "172.31.254.0/24", "dev": "cnsb-up"}, {"dst": "172.31.0.0/16", "dev": "wg1", "table": "local"}]
    assert overlaps("172.31.254.0/24", [_addr("cnsb-up", "172.31.254.1/24")], routes, ignore=["cnsb-up"]) == [
        ("wg1", "route 172.31.0.0/16 table local")
    ]
    assert subnet_problem("10.9.9.0/24", [], routes, own="cnsb-up") is None


def test_another_sandbox_on_the_subnet_is_named_with_its_down_command() -> None:
    problem = subnet_problem("172.31.254.0/24", [_addr("cnte-up", "172.31.254.1/24")], [], own="cnsb-up")
    assert problem and "CNCTL_SANDBOX_PREFIX=cnte cnctl sandbox down" in problem


# --- layout ------------------------------------------------------------------------------------


def test_the_local_stack_places_two_jetsons_and_a_server() -> None:
    layout = layout_from_stack(load_stack("local"))
    assert (layout.machine_address, layout.site_address) == ("172.31.254.1", "172.31.254.2")
    assert [(h.name, h.flavour, h.address, h.l4t, h.driver_branch) for h in layout.hosts] == [
        ("belt-1-orin", "jetson", "172.31.254.11", "36.3.0", None),
        ("belt-2-orin", "jetson", "172.31.254.12", "36.4.3", None),
        ("gpu-server-1", "server", "172.31.254.21", None, "550"),
    ]


def test_fewer_hosts_boot_the_first_ones_and_more_are_generated() -> None:
    cfg = load_stack("local")
    assert [h.name for h in layout_from_stack(cfg, edge=1, servers=0).hosts] == ["belt-1-orin"]
    layout = layout_from_stack(cfg, edge=3, servers=1)
    extra = layout.generated
    assert [(h.name, h.address, h.jetpack) for h in extra] == [("sandbox-edge-3", "172.31.254.10", "6.0")]
    assert len({h.address for h in layout.hosts}) == len(layout.hosts)


def test_a_stack_without_sandbox_or_with_an_address_outside_the_subnet_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SandboxProblem, match="no `sandbox` section"):
        layout_from_stack(load_stack("dev"))
    moved = tmp_path / "Pulumi.local.yaml"
    moved.write_text((REPO / "stacks" / "Pulumi.local.yaml").read_text().replace("address: 172.31.254.21", "address: 10.0.0.5"))
    with pytest.raises(SandboxProblem, match=r"fleets.servers\[0\].address 10.0.0.5 is not a host address"):
        layout_from_stack(load_stack(str(moved)))


def test_too_many_hosts_is_a_usage_problem() -> None:
    with pytest.raises(SandboxProblem, match="--edge must be between 0 and 8"):
        layout_from_stack(load_stack("local"), edge=9)


# --- the Jetson flavour ------------------------------------------------------------------------


def test_nv_tegra_release_is_the_real_four_line_format() -> None:
    assert nv_tegra_release("36.4.3") == (
        "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8 01:49:37 UTC 2025\n"
        "# KERNEL_VARIANT: oot\n"
        "TARGET_USERSPACE_LIB_DIR=nvidia\n"
        "TARGET_USERSPACE_LIB_DIR_PATH=usr/lib/aarch64-linux-gnu/nvidia\n"
    )


def test_every_jetpack_release_in_the_matrix_has_a_release_file() -> None:
    for release in catalog().platforms.jetson.releases:
        first = nv_tegra_release(release.l4t).splitlines()[0]
        # how parsers read it (jetson_containers l4t_version.py): "R36" + REVISION -> the L4T version
        parts = first.split(", ")
        major = parts[0].removeprefix("# R").removesuffix(" (release)")
        assert f"{major}.{parts[1].removeprefix('REVISION: ')}" == release.l4t


# --- the apt source template ------------------------------------------------------------------


def test_the_apt_source_template_renders_real_apt_lines() -> None:
    """The exact lines apt reads (that both engines render them alike: tests/unit/test_engines.py)."""
    source = (REPO / "templates" / "apt" / "source.list.j2").read_text()
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    rendered = env.from_string(source).render(**SOURCES)
    assert rendered.splitlines()[2:] == [
        "deb [signed-by=/etc/apt/keyrings/cnctl-sandbox.gpg] http://172.31.254.2:8080/apt/ /",
        ("deb [arch=arm64 signed-by=/etc/apt/trusted.gpg.d/jetson-ota-public.asc] "
         "https://repo.download.nvidia.com/jetson/common r36.4 main"),
    ]


# --- the image ---------------------------------------------------------------------------------


def test_the_mirror_is_read_from_the_machines_apt_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CNCTL_SANDBOX_MIRROR", raising=False)
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text("# nothing here\n")
    (tmp_path / "sources.list.d" / "other.list").write_text("deb [arch=amd64] https://example.invalid/x stable main\n")
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\n\n"
        "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm bookworm-updates\nComponents: main\n"
    )
    assert image.debian_mirror(tmp_path) == "http://mirror.example/debian"
    monkeypatch.setenv("CNCTL_SANDBOX_MIRROR", "http://override.example/debian")
    assert image.debian_mirror(tmp_path) == "http://override.example/debian"


def test_the_image_cache_key_follows_the_recipe(monkeypatch: pytest.MonkeyPatch) -> None:
    key = image.recipe_hash(image.recipe("http://m/debian"))
    assert key == image.recipe_hash(image.recipe("http://m/debian"))
    assert key != image.recipe_hash(image.recipe("http://other/debian"))
    monkeypatch.setattr(image, "MERGED_USR_HOOKS", Path("/elsewhere"))  # how it is built is the recipe too
    built_otherwise = image.recipe_hash(image.recipe("http://m/debian"))
    assert key != built_otherwise
    monkeypatch.setattr(image, "PACKAGES", (*image.PACKAGES, "curl"))
    assert built_otherwise != image.recipe_hash(image.recipe("http://m/debian"))


def test_the_image_build_keeps_the_deb_cache_whole_and_sets_up_usr_as_debootstrap_did(tmp_path: Path) -> None:
    debs = tmp_path / "a cache" / "debs"
    cmd = image.build_command(tmp_path / "rootfs", "http://m/debian", debs, "arm64")
    assert cmd[0] == "mmdebstrap" and cmd[-3:] == ["bookworm", str(tmp_path / "rootfs"), "http://m/debian"]
    assert "--arch=arm64" in cmd and f"--include={','.join(image.PACKAGES)}" in cmd
    hooks = {word.split("=", 1)[1].split()[0]: shlex.split(word.split("=", 1)[1]) for word in cmd
             if word.startswith(("--setup-hook=sync", "--customize-hook=sync"))}
    assert hooks["sync-in"][1] == str(debs) and hooks["sync-out"][2] == str(debs)  # mmdebstrap splits like a shell
    assert f"--hook-dir={image.MERGED_USR_HOOKS}" in cmd  # usr-is-merged, not usrmerge and its perl
    assert not debs.exists()  # the recipe calls this too: it must not touch the disk


# --- prerequisites and names -------------------------------------------------------------------


def test_a_prefix_must_fit_an_interface_name() -> None:
    assert len(Instance(prefix="abcdefghij").uplink) <= 15  # IFNAMSIZ - 1
    with pytest.raises(SandboxProblem, match="prefix"):
        Instance(prefix="abcdefghijk")
    with pytest.raises(SandboxProblem, match="prefix"):
        Instance(prefix="Bad-Prefix")


# --- inventories -------------------------------------------------------------------------------


def _state(tmp_path: Path) -> tuple[Instance, FleetState]:
    inst = Instance(prefix="cnun", state_dir=tmp_path / "state", cache=tmp_path / "cache")
    specs = [HostSpec("belt-1-orin", "edge", "jetson", "172.31.254.11", jetpack="6.0", l4t="36.3.0"),
             HostSpec("gpu-server-1", "servers", "server", "172.31.254.21", driver_branch="550")]
    state = FleetState(
        prefix="cnun", state_dir=str(inst.state_dir), stack="local", subnet="172.31.254.0/24",
        machine_address="172.31.254.1", site_address="172.31.254.2", site_netns="cnun-site", uplink="cnun-up",
        images={"amd64": "/img"}, ssh_key="/k/id_ed25519", known_hosts="/k/known_hosts", phase="up",
        hosts=[HostState(s, f"cnun-h-{s.name}", f"/m/{s.name}") for s in specs],
        site={"apt_url": "http://172.31.254.2:8080/apt/", "apt_keyring": "/c/site/apt/cnctl-sandbox.gpg"},
    )
    save(inst, state)
    return inst, state


def test_the_fleet_file_names_our_key_strict_host_keys_and_each_hosts_platform(tmp_path: Path) -> None:
    inst, state = _state(tmp_path)
    publish(inst, state)
    document = json.loads(inst.fleet_file.read_text())
    assert document == fleet_document(state) and (document["format"], document["stack"]) == (1, "local")
    assert document["ssh"] == {"key": "/k/id_ed25519", "knownHosts": "/k/known_hosts", "strictHostKeyChecking": "yes"}
    assert document["hosts"] == [
        {"name": "belt-1-orin", "group": "edge", "address": "172.31.254.11", "sshUser": "circularnet",
         "site": "default", "jetpack": "6.0"},
        {"name": "gpu-server-1", "group": "servers", "address": "172.31.254.21", "sshUser": "circularnet",
         "site": "default", "driverBranch": "550"}]
    assert inst.environment() == {"CNCTL_SANDBOX_PREFIX": "cnun", "CNCTL_STATE": str(inst.state_dir),
                                  "CNCTL_CACHE": str(inst.cache), "CNCTL_FLEET_FILE": str(inst.state_dir / "fleet.json")}


def test_ansible_inventory_keeps_host_key_checking_strict(tmp_path: Path) -> None:
    _, state = _state(tmp_path)
    inventory = ansible_inventory(state)
    args = inventory["all"]["vars"]["ansible_ssh_common_args"]
    assert "StrictHostKeyChecking=yes" in args and "UserKnownHostsFile=/k/known_hosts" in args
    assert "StrictHostKeyChecking=no" not in json.dumps(inventory)
    assert set(inventory["all"]["children"]["edge"]["hosts"]) == {"belt-1-orin"}


def test_the_pyinfra_inventory_says_how_to_start_the_sandbox_when_it_is_not_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """hosts/fleet.py exits 2 with the fix (pyinfra passes the exit status on: `pyinfra` then exits 2)."""
    monkeypatch.setenv("CNCTL_FLEET_FILE", str(tmp_path / "none" / "fleet.json"))
    monkeypatch.delenv("CNCTL_STACK", raising=False)
    with pytest.raises(SystemExit) as raised:
        runpy.run_path(str(REPO / "hosts" / "fleet.py"))
    assert raised.value.code == 2
    assert "run `cnctl sandbox up` or `make demo`" in capsys.readouterr().err
