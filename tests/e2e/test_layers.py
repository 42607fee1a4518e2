"""The host layers on the sandbox fleet: platform -> jetson|nvidia -> container, through either engine.

- a fresh Jetson host and a fresh server converge in one run with each engine; a second run changes
  nothing (pyinfra: no operation changes; Ansible: changed=0), nor does `--dry` on them;
- holds are in place; Docker runs with the configured runtimes (nvidia; the default one on a Jetson) and
  a second run does not restart it;
- parity: a host converged by pyinfra and one converged by Ansible have the same managed files (path,
  sha256, mode, owner), packages, holds and enabled services, and each engine finds nothing to change
  after the other;
- faults: a Jetson whose L4T does not match its fleet entry fails in the platform layer, untouched; one
  host unreachable: the others converge and the run exits non-zero naming it.

Fresh hosts are not in the session fleet's inventories: `view(hosts)` gives them a state directory of their
own (state.json), which the stack's inventories (cnctl.inventory: hosts/edge.py, hosts/servers.py) read
through CNCTL_STATE like any sandbox.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from cnctl.sandbox import fleet as sandbox
from cnctl.sandbox.instance import Instance
from cnctl.sandbox.inventory import write_ansible_inventory
from cnctl.sandbox.layout import HostSpec
from cnctl.sandbox.state import FleetState, HostState, save
from tests.e2e.fleet_helpers import BIN, REPO, SESSION_NET

pytestmark = pytest.mark.fleet

DEPLOY_TIMEOUT_S = 1800  # a first run installs docker.io and the JetPack stand-ins under qemu-user on the Jetsons

# Every path the layers manage, by platform (deploy/<layer>.py, roles/<layer>), for the parity snapshot. The
# local stack names a site repository (mirrors.siteApt), so the platform layer adds its source and the other
# layers add none of their own.
COMMON = (
    "/etc/apt/keyrings", "/etc/apt/keyrings/cnctl-site.asc", "/etc/apt/sources.list.d/cnctl-site.list",
    "/var/lib/circularnet", "/var/lib/circularnet/platform.json", "/etc/apt/preferences.d/cnctl-container.pref",
    "/etc/circularnet/docker", "/etc/circularnet/docker/daemon.base.json", "/etc/docker", "/etc/docker/daemon.json",
)
MANAGED = {
    "jetson": (*COMMON, "/etc/apt/preferences.d/cnctl-jetson.pref", "/etc/systemd/system/cnctl-jetson-clocks.service"),
    "server": (*COMMON, "/etc/apt/preferences.d/cnctl-nvidia.pref", "/etc/modprobe.d", "/etc/modprobe.d/blacklist-nouveau.conf"),
}
# The host's own name (in the platform record) is hashed as HOST, so that two hosts' files compare.
SNAPSHOT = """
name=$1; shift
for p in "$@"; do
  if [ -e "$p" ]; then stat -c '%n %F %a %U:%G' "$p"; if [ -f "$p" ]; then sed "s/\\"$name\\"/\\"HOST\\"/g" "$p" | sha256sum; fi
  else echo "$p absent"; fi
done
echo '--- packages'; dpkg-query -W -f '${Package} ${Version} ${db:Status-Abbrev}\\n'
echo '--- holds'; apt-mark showhold
echo '--- enabled'; systemctl list-unit-files --state=enabled --no-legend --no-pager | cut -d' ' -f1
"""


# --- helpers -------------------------------------------------------------------------------------


def snapshot(host: sandbox.FreshHost) -> dict[str, str]:
    """{"files": ..., "packages": ..., "holds": ..., "enabled": ...} of `host`, as text."""
    paths = " ".join(MANAGED[host.state.spec.flavour])
    result = host.ssh(f"sudo sh -s -- {host.state.name} {paths}", input=SNAPSHOT, timeout=120)
    assert result.returncode == 0, result.stderr
    files, _, rest = result.stdout.partition("--- packages\n")
    packages, _, rest = rest.partition("--- holds\n")
    holds, _, enabled = rest.partition("--- enabled\n")
    return {"files": files, "packages": packages, "holds": holds, "enabled": enabled}


def cnctl_deploy(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    """`cnctl deploy` of the session's stack file (the local stack moved to the session's subnet, so that its
    mirrors are the session site's)."""
    return subprocess.Popen([str(BIN / "cnctl"), "deploy", "--stack", env["CNCTL_STACK"], *args], cwd=REPO, env=env,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(proc: subprocess.Popen[str]) -> tuple[int, dict[str, tuple[int | None, int, int]], str]:
    """(exit code, {host: (ok, changed, failed)} from the summary table, the engine's log)."""
    out, err = proc.communicate(timeout=DEPLOY_TIMEOUT_S)
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if len(cells) == 5 and cells[1] in ("pyinfra", "ansible"):
            ok, changed, failed = cells[2:]
            rows[cells[0]] = (None if ok == "-" else int(ok), int(changed), int(failed))
    return proc.returncode, rows, out + err


def run_all(runs: Sequence[tuple[dict[str, str], tuple[str, ...]]]) -> list[tuple[int, dict[str, tuple[int | None, int, int]], str]]:
    """Several `cnctl deploy --stack local ARGS` at once, each in its environment; their outcomes in order."""
    procs = [cnctl_deploy(env, *args) for env, args in runs]
    return [finish(proc) for proc in procs]


def docker_pid(host: sandbox.FreshHost) -> str:
    result = host.ssh("systemctl show -p MainPID --value docker.service")
    assert result.returncode == 0 and result.stdout.strip() not in ("", "0"), result.stdout + result.stderr
    return result.stdout.strip()


@pytest.fixture(scope="module")
def session_stack(sandbox_stack: Callable[[str], Path]) -> Path:
    """The session fleet's stack file: stacks/Pulumi.local.yaml on the session's subnet."""
    return sandbox_stack(SESSION_NET)


@pytest.fixture
def view(fleet: FleetState, fleet_instance: Instance, fleet_env: dict[str, str], session_stack: Path,
         tmp_path_factory: pytest.TempPathFactory) -> Callable[..., dict[str, str]]:
    """`view(hosts, extra=())` -> the environment in which the local stack's inventories are exactly `hosts`
    (and `extra` host states, e.g. one that does not answer): a state directory of their own."""

    def make(hosts: Sequence[sandbox.FreshHost], extra: Sequence[HostState] = ()) -> dict[str, str]:
        directory = tmp_path_factory.mktemp("view")
        known = directory / "known_hosts"
        known.write_text("".join(Path(h.fleet.known_hosts).read_text() for h in hosts))
        state_dir = directory / "state"
        states = [h.state for h in hosts] + list(extra)
        view_state = replace(fleet, state_dir=str(state_dir), known_hosts=str(known), hosts=states,
                             inventories={**fleet.inventories, "ansible": str(state_dir / "inventory.yml")})
        inst = Instance(prefix=fleet_instance.prefix, state_dir=state_dir, cache=fleet_instance.cache)
        save(inst, view_state)
        write_ansible_inventory(state_dir / "inventory.yml", view_state)
        return {**fleet_env, "CNCTL_STATE": str(state_dir), "CNCTL_STACK": str(session_stack)}

    return make


# --- the tests -------------------------------------------------------------------------------------


@pytest.mark.parametrize("flavour", ["server", "jetson"])
def test_fresh_hosts_converge_once_and_both_engines_reach_the_same_end_state(
        flavour: str, boot_fresh: Callable[..., sandbox.FreshHost], view: Callable[..., dict[str, str]],
        fleet: FleetState) -> None:
    hosts = {engine: boot_fresh(flavour, "6.2") for engine in ("pyinfra", "ansible")}
    envs = {engine: view([host]) for engine, host in hosts.items()}
    started = time.monotonic()
    first = run_all([(envs[e], ("--engine", e)) for e in hosts])
    print(f"{flavour}: first run, both engines at once: {time.monotonic() - started:.0f} s")
    for (code, rows, log), engine in zip(first, hosts):
        assert code == 0, f"{engine}:\n{log[-6000:]}"
        assert all(changed > 0 and failed == 0 for _, changed, failed in rows.values()), (engine, rows)
    pids = {engine: docker_pid(host) for engine, host in hosts.items()}

    # holds and runtimes (containers start on the amd64 servers only: qemu-user cannot create namespaces)
    wanted = {"nvidia-container-toolkit", "docker.io"} | (
        {"nvidia-jetpack", "nvidia-l4t-core"} if flavour == "jetson" else {"cuda-drivers-550", "cuda-toolkit-12-4"})
    for host in hosts.values():
        assert wanted <= set(host.ssh("apt-mark showhold").stdout.split()), host.state.name
        info = host.ssh("sudo docker info --format '{{json .Runtimes}} {{.DefaultRuntime}}'")
        assert info.returncode == 0 and '"nvidia"' in info.stdout, info.stdout + info.stderr
        assert info.stdout.split()[-1] == ("nvidia" if flavour == "jetson" else "runc"), info.stdout
        if flavour == "server":  # the site registry's image, through NVIDIA's runtime (its stand-in execs runc)
            assert fleet.site and fleet.site.get("registry")
            image = f"{fleet.site['registry']}/nvidia/tritonserver:24.03-py3"
            ran = host.ssh(f"sudo docker pull -q {image} >/dev/null && sudo docker run --rm --runtime nvidia "
                           f"--network none --entrypoint /bin/sh {image} -c 'echo ran in a container'", timeout=600)
            assert "ran in a container" in ran.stdout, ran.stdout + ran.stderr

    # second runs: nothing changes, Docker is not restarted; a dry run on a converged host sees nothing to do
    second = run_all([(envs[e], ("--engine", e)) for e in hosts] + [(envs["pyinfra"], ("--engine", "pyinfra", "--dry"))])
    for code, rows, log in second:
        assert code == 0, log[-6000:]
        assert all(changed == 0 and failed == 0 for _, changed, failed in rows.values()), (rows, log[-6000:])
    assert {engine: docker_pid(host) for engine, host in hosts.items()} == pids

    # parity: the same files, packages, holds and enabled services, whichever engine converged the host
    by_pyinfra, by_ansible = snapshot(hosts["pyinfra"]), snapshot(hosts["ansible"])
    assert "absent" not in by_pyinfra["files"], by_pyinfra["files"]
    for part in ("files", "packages", "holds", "enabled"):
        assert by_pyinfra[part] == by_ansible[part], part

    # each engine finds nothing to change after the other
    crossed = run_all([(envs["pyinfra"], ("--engine", "ansible")), (envs["ansible"], ("--engine", "pyinfra"))])
    for code, rows, log in crossed:
        assert code == 0 and all(changed == 0 for _, changed, _ in rows.values()), (rows, log[-6000:])


@pytest.mark.parametrize("engine", ["pyinfra", "ansible"])
def test_a_jetson_whose_l4t_does_not_match_its_fleet_entry_fails_in_the_platform_layer_untouched(
        engine: str, boot_fresh: Callable[..., sandbox.FreshHost], view: Callable[..., dict[str, str]]) -> None:
    host = boot_fresh("jetson", "6.2")  # flashed with L4T 36.4.3
    listed = replace(host, state=replace(host.state, spec=replace(host.state.spec, jetpack="6.0")))  # the fleet says 6.0
    before = snapshot(host)
    code, rows, log = run_all([(view([listed]), ("--engine", engine))])[0]
    # pyinfra reports no table row when every host failed (no JSON report): the exit code and the log say it
    assert code != 0 and rows.get(host.state.name, (None, 0, 1))[2] > 0, log[-4000:]
    message = " ".join(log.split())
    assert f"{host.state.name}: platform refused: it runs L4T 36.4.3 (JetPack 6.2)" in message, log[-4000:]
    assert "the fleet entry wants JetPack 6.0 (L4T 36.3.0)" in message and "Nothing was changed on this host." in message
    assert snapshot(host) == before


@pytest.mark.parametrize("engine", ["pyinfra", "ansible"])
def test_one_host_unreachable_the_others_converge_and_the_run_fails_naming_it(
        engine: str, boot_fresh: Callable[..., sandbox.FreshHost], fleet: FleetState,
        view: Callable[..., dict[str, str]]) -> None:
    host = boot_fresh("server")
    prefix = host.state.address.rsplit(".", 1)[0]
    gone = HostState(HostSpec("gone-1", "servers", "server", f"{prefix}.250", driver_branch="550"), "none", "/none")
    code, rows, log = run_all([(view([host], extra=[gone]), ("--engine", engine))])[0]
    assert code != 0, log[-4000:]
    assert rows["gone-1"][2] > 0 and "gone-1" in log
    assert rows[host.state.name][1] > 0 and rows[host.state.name][2] == 0, rows


@pytest.mark.parametrize("engine", ["pyinfra", "ansible"])
def test_reboot_never_leaves_a_first_driver_install_reboot_pending_and_the_run_after_the_reboot_continues(
        engine: str, boot_fresh: Callable[..., sandbox.FreshHost], view: Callable[..., dict[str, str]]) -> None:
    """The stand-in driver's knob makes nvidia-smi fail as an unloaded module does (sandbox hosts cannot
    reboot into a new kernel module); the fleet entry of a generated server says `reboot: never`."""
    host = boot_fresh("server")
    env = view([host])
    assert host.ssh("sudo install -d /etc/cnctl-standin && sudo touch /etc/cnctl-standin/driver-unloaded").returncode == 0
    code, rows, log = run_all([(env, ("--engine", engine))])[0]
    # pyinfra reports no table row when every host failed (no JSON report): the exit code and the log say it
    assert code != 0 and rows.get(host.state.name, (None, 0, 1))[2] > 0, log[-4000:]
    assert f"{host.state.name}: reboot pending" in " ".join(log.split()), log[-4000:]
    assert host.ssh("test -f /run/circularnet/reboot-pending").returncode == 0
    assert "cuda-drivers-550" in host.ssh("apt-mark showhold").stdout  # installed and held before the stop

    # what the reboot does: the module loads, /run is empty again
    assert host.ssh("sudo rm -f /etc/cnctl-standin/driver-unloaded /run/circularnet/reboot-pending").returncode == 0
    code, rows, log = run_all([(env, ("--engine", engine))])[0]
    assert code == 0 and rows[host.state.name][2] == 0, log[-4000:]
    assert host.ssh("sudo docker info --format '{{json .Runtimes}}'").stdout.count('"nvidia"') == 1
