"""The sandbox fleet, end to end: booted hosts, SSH with sudo, systemd, signed apt, site faults seen from a
host, the generated inventories, `down` and the leftovers of a crashed run. The host layers' own end-to-end
tests are test_layers.py and test_model_layer.py."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cnctl.cli.main import app
from cnctl.config import load_stack
from cnctl.sandbox import cleanup, mounts, network, procs
from cnctl.sandbox import fleet as sandbox
from cnctl.sandbox.flavours import nv_tegra_release
from cnctl.sandbox.instance import Instance
from cnctl.sandbox.keys import ssh_options
from cnctl.sandbox.progress import Quiet
from cnctl.sandbox.remote import ssh
from cnctl.sandbox.site import build_site_content
from cnctl.sandbox.state import FleetState, load
from tests.e2e.fleet_helpers import (
    BIN,
    REPO,
    Teardown,
    cache_dir,
    env_for,
    install_site_source,
    require_fleet_prerequisites,
)

pytestmark = pytest.mark.fleet

_IP_FORWARD_AT_START = Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()


def run_everywhere(fleet: FleetState, command: str) -> dict[str, subprocess.CompletedProcess[str]]:
    return {h.name: ssh(fleet, h, command, timeout=120) for h in fleet.hosts}


# --- hosts -------------------------------------------------------------------------------------


def test_every_host_answers_ssh_as_the_deploy_user_with_sudo(fleet: FleetState) -> None:
    for name, result in run_everywhere(fleet, "id -un; sudo -n id -u").items():
        assert result.returncode == 0, f"{name}: {result.stderr}"
        assert result.stdout.split() == ["circularnet", "0"], name


def test_systemd_is_pid_1_with_no_failed_units(fleet: FleetState) -> None:
    command = "cat /proc/1/comm; systemctl is-system-running --wait; systemctl list-units --failed --plain --no-legend"
    for name, result in run_everywhere(fleet, command).items():
        lines = result.stdout.split("\n")
        assert lines[:2] == ["systemd", "running"], f"{name}: {result.stdout}"
        assert not "".join(lines[2:]).strip(), f"{name} has failed units: {lines[2:]}"


def test_ssh_allows_keys_only_and_no_root(fleet: FleetState) -> None:
    host = fleet.hosts[0]
    effective = ssh(fleet, host, "sudo sshd -T").stdout
    assert "permitrootlogin no" in effective
    assert "passwordauthentication no" in effective
    as_root = subprocess.run(
        ["ssh", *ssh_options(Path(fleet.ssh_key), Path(fleet.known_hosts)), f"root@{host.address}", "true"],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert as_root.returncode == 255 and "Permission denied" in as_root.stderr
    modes = ssh(fleet, host, "sudo stat -c '%a %U %n' /etc/sudoers.d/circularnet /home/circularnet/.ssh/authorized_keys")
    assert modes.stdout.split("\n")[:2] == [
        "440 root /etc/sudoers.d/circularnet", "600 circularnet /home/circularnet/.ssh/authorized_keys",
    ]
    assert oct(Path(fleet.ssh_key).stat().st_mode & 0o777) == "0o600"


def test_known_hosts_is_exact_and_checked(fleet: FleetState, tmp_path: Path) -> None:
    """Every host's key is known in advance; a host with a key we did not record is refused."""
    known = Path(fleet.known_hosts).read_text().splitlines()
    assert sorted(line.split()[0] for line in known) == sorted(h.address for h in fleet.hosts)
    wrong = tmp_path / "known_hosts"
    first, second = fleet.hosts[0], fleet.hosts[1]
    wrong.write_text(f"{first.address} {second.host_key}\n")  # another host's key for this address
    refused = subprocess.run(
        ["ssh", *ssh_options(Path(fleet.ssh_key), wrong), f"circularnet@{first.address}", "true"],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert refused.returncode == 255 and "HOST IDENTIFICATION HAS CHANGED" in refused.stderr


def test_jetson_hosts_carry_the_l4t_release_file_and_servers_do_not(fleet: FleetState) -> None:
    for host in fleet.hosts:
        result = ssh(fleet, host, "cat /etc/nv_tegra_release 2>/dev/null; uname -m")
        if host.spec.flavour == "jetson":
            assert host.spec.l4t
            assert result.stdout == nv_tegra_release(host.spec.l4t) + "aarch64\n", host.name  # real arm64 userland
            assert re.match(r"# R36 \(release\), REVISION: \d\.\d, GCID: \d+, BOARD: generic, EABI: aarch64, DATE: ",
                            result.stdout)
        else:
            assert result.stdout == "x86_64\n", host.name


def test_a_fresh_host_carries_no_sandbox_marker(fresh_host: sandbox.FreshHost) -> None:
    """Host layers must detect the platform from what real devices show: no file names the sandbox."""
    found = fresh_host.ssh("sudo grep -rIli -e sandbox -e cnctl /etc /usr/local /opt /var/lib 2>/dev/null; true")
    assert found.stdout.strip() == ""


def test_each_host_runs_in_a_cgroup_of_its_own(fleet: FleetState) -> None:
    """Hosts sharing one cgroup tree remove each other's unit cgroups (units fail with 219/CGROUP at boot)."""
    paths = []
    for host in fleet.hosts:
        supervisor = host.pid or 0
        nspawn = int(Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()[0])
        init = int(Path(f"/proc/{nspawn}/task/{nspawn}/children").read_text().split()[0])
        lines = Path(f"/proc/{init}/cgroup").read_text().splitlines()
        # the hierarchy systemd manages: name=systemd on hybrid machines, the unified one on pure v2
        line = next((l for l in lines if ":name=systemd:" in l), None) or next(l for l in lines if l.startswith("0::"))
        path = line.split(":", 2)[2]
        assert f"/cnctl-{fleet.prefix}-{host.name}/" in path, path
        paths.append(path)
    assert len(set(paths)) == len(paths)


def test_hosts_have_no_route_out_of_the_site_subnet(fleet: FleetState) -> None:
    for name, result in run_everywhere(fleet, "ip -4 route; ip -4 -o addr show scope global").items():
        routes = [line for line in result.stdout.splitlines() if line and "inet " not in line]
        assert len(routes) == 1 and routes[0].startswith(fleet.subnet), f"{name}: {routes}"
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == _IP_FORWARD_AT_START


# --- apt against the site repo ----------------------------------------------------------------


def _other_keyring(tmp_path: Path) -> bytes:
    """A throwaway ed25519 key that did not sign the site repo, as a binary keyring."""
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    gpg = ["gpg", "--homedir", str(home), "--batch", "--quiet"]
    try:
        subprocess.run([*gpg, "--passphrase", "", "--quick-gen-key", "other <other@example.invalid>", "ed25519", "sign",
                        "never"], check=True, capture_output=True, timeout=60)
        return subprocess.run([*gpg, "--export"], check=True, capture_output=True, timeout=30).stdout
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], capture_output=True, timeout=30, check=False)


def test_apt_fails_closed_when_the_repo_is_signed_by_another_key(fresh_host: sandbox.FreshHost, fleet: FleetState,
                                                                 tmp_path: Path) -> None:
    assert fleet.site
    good = Path(fleet.site["apt_keyring"]).read_bytes()
    install_site_source(fresh_host, good, fleet.site["apt_url"])
    ok = fresh_host.ssh("sudo apt-get update --error-on=any")
    assert ok.returncode == 0, ok.stdout + ok.stderr  # the positive control: the right key works

    install_site_source(fresh_host, _other_keyring(tmp_path), fleet.site["apt_url"])
    lenient = fresh_host.ssh("sudo apt-get update")
    strict = fresh_host.ssh("sudo apt-get update --error-on=any")
    assert lenient.returncode == 0  # what apt does by default: warn and go on (why the deploy uses the flag)
    assert strict.returncode != 0
    assert re.search(r"NO_PUBKEY|not signed|couldn't be verified", strict.stdout + strict.stderr)


# --- the artifact server's faults, seen from a host ---------------------------------------------

FETCH = r"""
import hashlib, json, sys, urllib.error, urllib.request
out = {}
try:
    with urllib.request.urlopen(sys.argv[1], timeout=20) as response:
        digest, size = hashlib.sha256(), 0
        out["length"] = int(response.headers.get("Content-Length") or -1)
        out["status"] = response.status
        try:
            while chunk := response.read(65536):
                digest.update(chunk)
                size += len(chunk)
        except Exception as exc:
            out["error"] = type(exc).__name__
        out.update(size=size, sha256=digest.hexdigest())
except urllib.error.HTTPError as exc:
    out["status"] = exc.code
except Exception as exc:
    out["error"] = type(exc).__name__
print(json.dumps(out))
"""


def _fault(url: str, method: str, body: dict | None = None) -> None:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status in (200, 201)


def _site_archive() -> tuple[str, str]:
    """(path below the artifacts URL, sha256) of the stand-in model archive the site serves."""
    content = build_site_content(cache_dir(), progress=lambda _message: None)
    return content.model_url_path, content.model_sha256


def test_the_local_stack_pins_the_archive_the_site_serves(fleet: FleetState, fleet_stack) -> None:
    """stacks/Pulumi.local.yaml is the one source of truth: its model URL and sha256 match the site's."""
    assert fleet.site
    path, sha256 = _site_archive()
    assert fleet_stack.model.url == fleet.site["artifacts_url"] + path
    assert fleet_stack.model.sha256 == sha256, "update model.sha256 in stacks/Pulumi.local.yaml"
    assert fleet_stack.storage.endpoint == fleet.site["gcs_url"]


def test_artifact_server_faults_reach_a_host_over_the_site_network(fleet: FleetState) -> None:
    assert fleet.site
    path, pin = _site_archive()
    url, faults = fleet.site["artifacts_url"] + path, fleet.site["faults_url"]
    host = fleet.hosts[-1]

    def fetch() -> dict:
        result = ssh(fleet, host, f"python3 - {url}", input=FETCH, timeout=60)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    try:
        clean = fetch()
        assert clean["status"] == 200 and clean["sha256"] == pin and clean["size"] == clean["length"]

        _fault(faults, "POST", {"kind": "error", "status": 500, "prefix": "/artifacts/models/", "times": 1})
        assert fetch()["status"] == 500

        _fault(faults, "POST", {"kind": "corrupt", "offset": 100, "prefix": "/artifacts/models/", "times": 1})
        corrupt = fetch()
        assert corrupt["status"] == 200 and corrupt["size"] == clean["size"] and corrupt["sha256"] != pin

        _fault(faults, "POST", {"kind": "cut", "bytes": 1000, "prefix": "/artifacts/models/", "times": 1})
        cut = fetch()
        assert cut["size"] < clean["length"] or "error" in cut

        assert fetch()["sha256"] == pin  # `times: 1` faults are spent: the next download is whole again
    finally:
        _fault(faults, "DELETE")


# --- the inventories ----------------------------------------------------------------------------


def test_ansible_reaches_every_host_through_the_generated_inventory(fleet: FleetState, fleet_env: dict[str, str],
                                                                    tmp_path: Path) -> None:
    result = subprocess.run(
        [str(BIN / "ansible"), "-i", fleet.inventories["ansible"], "all", "-m", "command", "-a", "id -u"],
        env={**fleet_env, "ANSIBLE_LOCAL_TEMP": str(tmp_path), "ANSIBLE_HOME": str(tmp_path)},
        capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("CHANGED | rc=0 >>\n0") == len(fleet.hosts)


# --- the CLI -----------------------------------------------------------------------------------


def test_status_reports_every_host_running_with_ssh_and_systemd(fleet: FleetState, fleet_env: dict[str, str]) -> None:
    result = subprocess.run([str(BIN / "cnctl"), "sandbox", "status", "--json"], env=fleet_env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert [(h["name"], h["running"], h["ssh"], h["systemd"]) for h in report["hosts"]] == [
        (h.name, True, True, "running") for h in fleet.hosts
    ]
    assert report["site"] and all(svc["answering"] for svc in report["site"].values())
    assert Path(report["inventories"]["ansible"]).is_file() and Path(report["inventories"]["pyinfra"]).is_file()
    # the fleet file the product reads (CNCTL_FLEET_FILE in fleet_env): every host up, by name and address
    fleet_file = json.loads(Path(report["inventories"]["fleet"]).read_text())
    assert report["inventories"]["fleet"] == fleet_env["CNCTL_FLEET_FILE"] and fleet_file["stack"] == "local"
    assert [(h["name"], h["address"]) for h in fleet_file["hosts"]] == [(h.name, h.address) for h in fleet.hosts]


def test_up_refuses_a_subnet_the_machine_already_uses(fleet: FleetState, fleet_instance: Instance, sandbox_stack) -> None:
    """A second sandbox on the session fleet's subnet: exit 2, naming the interface and the stack field."""
    other = Instance(prefix="cntx", state_dir=Path("/run/cnctl/test-subnet"), cache=fleet_instance.cache)
    stack = sandbox_stack(fleet.subnet.rsplit(".", 1)[0] + ".")
    result = subprocess.run([str(BIN / "cnctl"), "sandbox", "up", "--stack", str(stack)], env=env_for(other),
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    message = " ".join(result.stderr.split())
    assert f"interface {fleet_instance.uplink}" in message and "sandbox.subnet" in message
    assert "Traceback" not in result.stderr
    assert not other.state_dir.exists() and not network.our_namespaces(other)


def test_up_as_non_root_exits_2_with_the_fix() -> None:
    if os.geteuid() == 0:  # a real process that really is not root
        # It keeps only CAP_DAC_READ_SEARCH: CI's clone may sit below a 0700 directory that nobody could
        # not even read the console script from; the capability lets it read, not act as root.
        result = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=+dac_read_search",
             "--ambient-caps=+dac_read_search", str(BIN / "cnctl"), "sandbox", "up"],
            capture_output=True, text=True, timeout=60, cwd="/",
            env={"PATH": os.environ.get("PATH", ""), "HOME": "/nonexistent", "CNCTL_STATE": "/run/cnctl/test-nonroot"}, check=False,
        )
        code, stderr = result.returncode, result.stderr
    else:  # already not root: the same command in-process
        outcome = CliRunner().invoke(app, ["sandbox", "up"])
        code, stderr = outcome.exit_code, outcome.output
    assert code == 2, stderr
    message = " ".join(stderr.split())
    assert "must run as root" in message and "sudo" in message
    assert "Traceback" not in stderr


# --- down and crashes (their own small sandboxes: the session fleet stays up) --------------------


def _nothing_left(inst: Instance, pids: list[int]) -> None:
    assert cleanup.find(inst).empty, cleanup.find(inst).describe()
    assert not network.our_namespaces(inst)
    assert not list(cleanup.NSPAWN_PROPAGATE.glob(f"{inst.prefix}-*"))
    assert not cleanup.our_cgroups(inst)
    assert not network.uplink_exists(inst)
    assert not mounts.mounts_under(inst.state_dir)
    assert not inst.state_dir.exists()
    assert [p for p in pids if procs.alive(p)] == []
    assert [p for p in procs.pids() if str(inst.state_dir) in " ".join(procs.cmdline(p))] == []


def _processes_of(inst: Instance) -> list[int]:
    """Every process of the sandbox now: hosts, their containers, site services."""
    inodes = network.namespace_inodes(network.our_namespaces(inst))
    return [p for p in procs.pids() if procs.net_ns_inode(p) in inodes or procs.boots_under(p, inst.hosts_dir)]


def _run_a_container(state: FleetState, host) -> None:
    """Docker from the site repository on `host`, and a container from the site registry left running."""
    assert state.site
    keyring = base64.b64encode(Path(state.site["apt_keyring"]).read_bytes()).decode()
    image = f"{state.site['registry']}/nvidia/tritonserver:24.03-py3"
    result = ssh(state, host, (
        "set -e; sudo install -d /etc/apt/keyrings; "
        f"echo {keyring} | base64 -d | sudo tee /etc/apt/keyrings/site.gpg >/dev/null; "
        f"echo 'deb [signed-by=/etc/apt/keyrings/site.gpg] {state.site['apt_url']} /' | "
        "sudo tee /etc/apt/sources.list.d/site.list >/dev/null; sudo apt-get update -q --error-on=any >/dev/null; "
        "sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker.io >/dev/null; "
        f"sudo docker run -d {image} sleep 600"), timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr


def test_down_leaves_no_namespace_mount_or_process(sandbox_stack) -> None:
    require_fleet_prerequisites()
    inst = Instance(prefix="cntd", state_dir=Path("/run/cnctl/test-down"), cache=cache_dir())
    env = env_for(inst)
    cnctl = str(BIN / "cnctl")
    teardown = Teardown(inst)
    try:
        up = subprocess.run([cnctl, "sandbox", "up", "--stack", str(sandbox_stack("172.31.251.")), "--edge", "0",
                             "--servers", "1"], env=env, capture_output=True, text=True, timeout=600, check=False)
        assert up.returncode == 0, up.stdout + up.stderr
        # A container left running inside the host: its engine's cgroups and processes must go with `down` too.
        state = load(inst)
        assert state and state.site
        host = state.hosts[0]
        _run_a_container(state, host)
        running = _processes_of(inst)
        assert len(running) > 5 and mounts.mounts_under(inst.state_dir) and network.our_namespaces(inst)
        assert any(d.name.endswith("-docker") for d in cleanup.our_cgroups(inst)), cleanup.our_cgroups(inst)
        assert not list(Path("/sys/fs/cgroup").glob("*/docker"))  # never the machine's own /docker

        down = subprocess.run([cnctl, "sandbox", "down"], env=env, capture_output=True, text=True, timeout=120, check=False)
        assert down.returncode == 0, down.stdout + down.stderr
        _nothing_left(inst, running)

        again = subprocess.run([cnctl, "sandbox", "down"], env=env, capture_output=True, text=True, timeout=120, check=False)
        assert again.returncode == 0 and "nothing was running" in again.stdout
    finally:
        teardown()


def _crash(supervisor: int) -> list[int]:
    """kill -9 a host's supervisor and its systemd-nspawn; return the container's processes left running."""
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    nspawn = int(children[0])
    inner = [int(p) for p in Path(f"/proc/{nspawn}/task/{nspawn}/children").read_text().split()]
    procs.signal_all([supervisor, nspawn], 9)
    procs.wait_gone([supervisor, nspawn], 5)
    return inner


def test_leftovers_of_a_crashed_run_are_cleaned_by_the_next_up_and_down(sandbox_stack) -> None:
    require_fleet_prerequisites()
    inst = Instance(prefix="cntc", state_dir=Path("/run/cnctl/test-crash"), cache=cache_dir())
    cfg = load_stack(str(sandbox_stack("172.31.250.")))
    teardown = Teardown(inst)
    try:
        state = sandbox.up(inst, cfg, edge=1, servers=0, progress=Quiet())
        orphans = _crash(state.hosts[0].pid or 0)
        assert orphans and all(procs.alive(p) for p in orphans)  # the container outlives its systemd-nspawn
        assert mounts.mounts_under(inst.state_dir) and network.our_namespaces(inst)

        state = sandbox.up(inst, cfg, edge=1, servers=0, progress=Quiet())  # cleans, then boots afresh
        assert [p for p in orphans if procs.alive(p)] == []
        assert ssh(state, state.hosts[0], "systemctl is-system-running --wait").stdout.strip() == "running"

        running = _processes_of(inst)
        orphans = _crash(state.hosts[0].pid or 0)
        inst.state_file.unlink()  # a crash before the state was written: the scan alone must find everything
        down = subprocess.run([str(BIN / "cnctl"), "sandbox", "down"], env=env_for(inst), capture_output=True,
                              text=True, timeout=120, check=False)
        assert down.returncode == 0, down.stdout + down.stderr
        _nothing_left(inst, running + orphans)
    finally:
        teardown()


def test_make_demo_targets_are_wired(tmp_path: Path) -> None:
    """`make -n demo` names setup, up, the pyinfra deploys users type for real fleets, one inference per host,
    the fleet's status and, last, the site's dashboards and Alertmanager (no fleet needed)."""
    result = subprocess.run(["make", "-n", "demo", "demo-down"], cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "cnctl sandbox up --stack local" in result.stdout
    assert "cnctl/sandbox/prereqs.py ensure" in result.stdout
    assert re.search(r"\.venv/bin/pyinfra -y hosts/fleet\.py deploy\.py", result.stdout)
    assert "cnctl infer --stack local" in result.stdout and "cnctl status --stack local" in result.stdout
    assert result.stdout.index("hosts/fleet.py deploy.py") < result.stdout.index("cnctl infer")
    assert result.stdout.index("cnctl status") < result.stdout.index("cnctl monitoring urls --stack local")
    assert "cnctl sandbox down" in result.stdout
