"""The host layers on the sandbox fleet, every one of them (platform -> jetson|nvidia -> container -> model ->
inference -> pipeline -> verify), through either engine.

- two fresh servers (container runtime) converge in one run, one with each engine, and a fresh Jetson (arm64
  under qemu-user, native Triton runtime) with pyinfra: holds in place, Docker with the configured runtimes
  (nvidia; the default one on a Jetson), the pinned model version installed from one download with staging empty,
  Triton answering with it, the health report healthy and written by its hardened service; frames (the
  Jetson's replay camera, fed into a server's spool) reaching the emulated results bucket as NDJSON rows of
  the detections schema, one object per batch named by its upstream frame names;
- a second run changes nothing (pyinfra: no operation changes; Ansible: changed=0), downloads nothing,
  restarts no Docker and rewrites no deploy record; on the servers `--dry` sees nothing to do either
  (pyinfra `--dry`, Ansible `--check`);
- parity: a server converged by pyinfra and one converged by Ansible have the same managed files (path,
  sha256, mode, owner), packages, holds and enabled services, and each engine finds nothing to change after
  the other (on the Jetson: Ansible's platform and jetson roles after pyinfra);
- faults: a Jetson whose L4T does not match its fleet entry fails in the platform layer, untouched; one
  host unreachable: the others converge and the run exits non-zero naming it; a site repository signed by
  another key than the stack trusts fails closed in the first index refresh, naming the repository, with no
  package installed; an SSH connection cut while the nvidia layer installs fails that host, and a re-run
  converges it. The host lost (unreachable, cut) in the fleet's engine only; the rest in both (FAULT_ENGINE).

Fresh hosts are not in the session fleet's inventories: `view(hosts)` gives them a state directory of their
own (state.json and the fleet file it hands over), which the stack's inventories (cnctl.inventory: hosts/fleet.py)
read through CNCTL_FLEET_FILE like any fleet file.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from cnctl.sandbox import fleet as sandbox
from cnctl.sandbox import procs
from cnctl.sandbox.instance import Instance
from cnctl.sandbox.layout import HostSpec
from cnctl.sandbox.state import FleetState, HostState
from tests.e2e.fleet_helpers import (
    BIN,
    REPO,
    SESSION_NET,
    cut_ssh_sessions,
    deploy_rows,
    host_processes,
    other_signing_key,
    serving,
    what_changed,
)
from tests.e2e.host_state import (
    CAPTURE_FILES,
    HEALTH_HELPER,
    HEALTH_REPORT,
    MODEL_FILES,
    PIPELINE_FILES,
    TF_COLUMNS,
    feed_frames,
    health_report,
    marker,
    pipeline_state,
    request_log,
    requests_from,
    results,
    site_sha256,
    staging_entries,
)
from tests.e2e.triton_client import infer

pytestmark = pytest.mark.fleet

PIPELINE_TIMEOUT_S = 600  # the Jetsons' client sends 40 frames to a CPU Triton under qemu-user
DEPLOY_TIMEOUT_S = 1800  # a first run installs docker.io and the JetPack stand-ins under qemu-user on the Jetsons
# The faults below are in the driver's and container engine's layers: they run those (`--layers`; the platform
# layer always applies), not the model and Triton above them, which the first test converges.
DRIVER_LAYERS = ("--layers", "nvidia,container")
# The faults whose claim is not engine-specific run in one engine, the fleet's (docs/testing.md, "Faults in one
# engine"): a host lost mid-run or from the start, which each engine reports its own way, and the unit tier reads
# from both engines' recorded output (tests/unit/test_engines.py). The faults whose check each engine implements
# on its own (the L4T refusal, the refresh that fails closed, the reboot marker) run in both.
FAULT_ENGINE = "pyinfra"

# Every path the layers manage, by platform (deploy/<layer>.py, roles/<layer>), for the parity snapshot. The
# local stack names a site repository (mirrors.siteApt), so the platform layer adds its source and the other
# layers add none of their own.
COMMON = (
    "/etc/apt/keyrings", "/etc/apt/keyrings/cnctl-site.asc", "/etc/apt/sources.list.d/cnctl-site.list",
    "/var/lib/circularnet", "/var/lib/circularnet/platform.json", "/etc/apt/preferences.d/cnctl-container.pref",
    "/etc/circularnet/docker", "/etc/circularnet/docker/daemon.base.json", "/etc/docker", "/etc/docker/daemon.json",
)
# The model, inference and verify layers' files (pip's files in the native runtime's venv are pip's).
SERVING = (
    *MODEL_FILES, HEALTH_HELPER, "/etc/circularnet/health-report.json",
    "/var/lib/circularnet/deploy.json", "/etc/systemd/system/circularnet-health.service",
    "/etc/systemd/system/circularnet-health.timer",
)
NATIVE = ("/opt/circularnet/triton-requirements.txt", "/opt/circularnet/triton/bin/python3")
# The monitoring layer's files: node-exporter's drop-in, its textfile directory, the GPU collector's unit.
MONITORING = (
    "/etc/systemd/system/prometheus-node-exporter.service.d",
    "/etc/systemd/system/prometheus-node-exporter.service.d/cnctl.conf", "/var/lib/prometheus/node-exporter",
    "/etc/systemd/system/circularnet-gpu-metrics.service", "/usr/local/lib/circularnet/cnhost/gpu_metrics.py",
)
MANAGED = {
    "jetson": (*COMMON, "/etc/apt/preferences.d/cnctl-jetson.pref", "/etc/systemd/system/cnctl-jetson-clocks.service",
               *SERVING, *NATIVE, *PIPELINE_FILES, *CAPTURE_FILES, *MONITORING),
    "server": (*COMMON, "/etc/apt/preferences.d/cnctl-nvidia.pref", "/etc/modprobe.d", "/etc/modprobe.d/blacklist-nouveau.conf",
               *SERVING, *PIPELINE_FILES, *MONITORING),
}
# The Triton runtime the local stack gives each flavour (its first fleet entry's inferenceRuntime).
RUNTIME = {"jetson": "native", "server": "container"}
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
    return proc.returncode, deploy_rows(out), out + err


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


# --- the tests -------------------------------------------------------------------------------------


def serves_and_reports_healthy(host: sandbox.FreshHost, flavour: str, fleet_instance: Instance, since: int) -> None:
    """The model, inference and verify layers' end state on a converged host: the pinned stand-in version
    installed from one download, staging empty, Triton answering with it, the health report healthy and
    written by the report's hardened service."""
    name = host.state.name
    assert {k: marker(host, 1)[k] for k in ("name", "version", "sha256")} == {
        "name": "circularnet", "version": 1, "sha256": site_sha256("sandbox_standin.zip")}, name
    assert staging_entries(host) == [], name
    got = [(r["method"], r["status"]) for r in requests_from(fleet_instance, host, since)]
    assert got == [("GET", 200)], (name, got)
    answer = infer(host)  # through tritonclient, from the host's own network namespace
    assert (answer["version"], answer["num_detections"]) == ("1", [1]), (name, answer)
    ymin, xmin, ymax, xmax = answer["box"]
    assert ymin <= 400 <= ymax and xmin <= 700 <= xmax, answer  # the stand-in found the red patch

    found = health_report(host)
    assert found["healthy"] is True and found["problems"] == [], (name, found["problems"])
    assert found["host"] == name and found["platform"]["platform"] == flavour
    assert found["model"]["name"] == "circularnet" and found["model"]["version"] == 1 and found["model"]["ready"]
    assert found["triton"]["live"] and found["triton"]["unit_state"] == "active"
    assert found["versions"]["docker"]
    record = found["last_deploy"]
    assert (record["stack"], record["runtime"], record["model"]["version"]) == ("local", RUNTIME[flavour], 1), record
    assert {d["path"] for d in found["disk"]} == {"/opt/circularnet/models", "/"}
    # the timer runs; its hardened service writes the report, 0644
    assert host.ssh("systemctl is-enabled circularnet-health.timer").stdout.strip() == "enabled"
    assert host.ssh("systemctl is-active circularnet-health.timer").stdout.strip() == "active"
    ran = host.ssh("sudo systemctl start circularnet-health.service && "
                   "systemctl show -p Result --value circularnet-health.service", timeout=300)
    assert ran.returncode == 0 and ran.stdout.strip() == "success", (
        name, ran.stdout + ran.stderr, host.ssh("journalctl -u circularnet-health --no-pager | tail -20").stdout)
    assert host.ssh(f"stat -c '%a %U:%G' {HEALTH_REPORT}").stdout.strip() == "644 root:root"
    assert json.loads(host.ssh(f"cat {HEALTH_REPORT}").stdout)["healthy"] is True, name
    exports_its_metrics(host, flavour)


# Read on the host itself (minimal hosts have python3, not curl): node-exporter answers on loopback only.
SCRAPE = ("import sys, urllib.request\n"
          "print(urllib.request.urlopen(sys.argv[1], timeout=30).read().decode())")


def exports_its_metrics(host: sandbox.FreshHost, flavour: str) -> None:
    """The monitoring layer's end state: node-exporter, as the layer's drop-in runs it, listens on the local stack's
    address only (loopback) and serves the health report's metrics (the verify layer's service, run now) and the GPU
    collector's, from the flavour's own tool (the stand-in nvidia-smi or tegrastats, in NVIDIA's formats); with both
    stopped, the host still reports healthy and serves (nothing on a host depends on monitoring)."""
    name = host.state.name
    ran = host.ssh("sudo systemctl start circularnet-health.service", timeout=300)
    assert ran.returncode == 0, (name, ran.stderr)
    listening = host.ssh("sudo ss -Hltnp 'sport = :9100'").stdout
    assert "127.0.0.1:9100" in listening and "prometheus-node" in listening, (name, listening)
    assert "0.0.0.0:9100" not in listening and "*:9100" not in listening and "[::]:9100" not in listening, listening
    deadline = time.monotonic() + 120  # the collector's first sample: the tool's first interval
    while True:
        scraped = host.ssh(f"python3 -c {shlex.quote(SCRAPE)} http://127.0.0.1:9100/metrics", timeout=60)
        if (scraped.returncode == 0 and "DCGM_FI_DEV_GPU_TEMP{" in scraped.stdout) or time.monotonic() > deadline:
            break
        time.sleep(5)
    journal = host.ssh("sudo journalctl -u circularnet-gpu-metrics -u prometheus-node-exporter --no-pager | tail -20")
    assert scraped.returncode == 0, (name, scraped.stderr, journal.stdout)
    metrics = scraped.stdout
    assert "\ncnctl_health_healthy 1\n" in metrics, (name, metrics[-2000:])
    assert "\nnode_textfile_scrape_error 0\n" in metrics, (name, journal.stdout)  # every .prom file parsed
    tool = "tegrastats" if flavour == "jetson" else "nvidia-smi"
    assert f'cnctl_gpu_collector_info{{tool="{tool}"}} 1' in metrics, (name, journal.stdout)
    assert re.search(r"^DCGM_FI_DEV_GPU_TEMP\{.*\} \d", metrics, re.MULTILINE), (name, journal.stdout)
    assert re.search(r"^node_cpu_seconds_total\{", metrics, re.MULTILINE), name  # the exporter's own collectors
    # nothing on a host depends on monitoring: with both exporters stopped, the report is still made and healthy,
    # and Triton still answers; started again, they serve again
    exporters = "prometheus-node-exporter.service circularnet-gpu-metrics.service"
    stopped = host.ssh(f"sudo systemctl stop {exporters} && sudo systemctl start circularnet-health.service && "
                       "systemctl show -p Result --value circularnet-health.service", timeout=300)
    assert stopped.returncode == 0 and stopped.stdout.strip() == "success", (name, stopped.stdout + stopped.stderr)
    assert health_report(host)["healthy"] is True, name
    assert infer(host)["version"] == "1", name
    restarted = host.ssh(f"sudo systemctl start {exporters} && systemctl is-active {exporters}")
    assert restarted.stdout.split() == ["active", "active"], (name, restarted.stdout + restarted.stderr)


def pipeline_delivers(host: sandbox.FreshHost, flavour: str) -> None:
    """The pipeline layer's end state: frames (the Jetson's replay camera; fed into a server's spool, which has no
    camera) become NDJSON rows of the TF detections schema in the emulated results bucket, one object per batch
    named by its first and last frame (upstream naming), with nothing left queued; the report says so."""
    name = host.state.name
    if flavour == "server":
        frames, prefix = len(feed_frames(host, "srv", 0, 6)), "srv"
    else:
        frames, prefix = 40, "belt1"  # the site's footage, replayed once by the fleet entry's camera
    deadline = time.monotonic() + PIPELINE_TIMEOUT_S
    while time.monotonic() < deadline:
        run, upload = pipeline_state(host, "pipeline.json"), pipeline_state(host, "upload.json")
        if run.get("frames") == frames and upload.get("queue_files") == 0 and upload.get("uploaded_files"):
            break
        time.sleep(5)
    else:
        journal = host.ssh("sudo journalctl -u circularnet-pipeline -u circularnet-upload -u circularnet-capture "
                           "--no-pager | tail -30").stdout
        raise AssertionError(f"{name}: {frames} frames did not reach the bucket: {run} {upload}\n{journal}")
    objects = results(host, prefix)
    batch = re.compile(rf"^detections/tf/{name}/20\d{{6}}/({prefix}_\d{{8}}_\d{{8}})--({prefix}_\d{{8}}_\d{{8}})\.ndjson$")
    assert objects and all(batch.match(key) for key in objects), (name, sorted(objects))
    rows = [json.loads(line) for body in objects.values() for line in body.decode().splitlines()]
    assert all(set(row) == TF_COLUMNS for row in rows), rows[:2]
    assert len({row["image_name"] for row in rows}) == frames, (name, len(rows))
    report = health_report(host)["pipeline"]
    assert (report["queue_files"], report["rows"]) == (0, len(rows)), report
    if flavour == "jetson":
        assert report["frames_captured"] == frames, report


def triton_confined(host: sandbox.FreshHost) -> None:
    """The container runtime's Triton as Docker runs it (`docker inspect`): every capability dropped, no new
    privileges, a read-only root, a non-root user, only the model repository mounted, read-only, no published
    port; and its unit, Docker's client, at an exposure of at most 3.0 as the host's own systemd measures it."""
    name = host.state.name
    found = host.ssh("sudo docker inspect circularnet-triton")
    assert found.returncode == 0, (name, found.stderr)
    container = json.loads(found.stdout)[0]
    config, running = container["HostConfig"], container["Config"]
    assert config["CapDrop"] == ["ALL"] and not config["CapAdd"], (name, config["CapDrop"], config["CapAdd"])
    assert "no-new-privileges" in (config["SecurityOpt"] or []), (name, config["SecurityOpt"])
    assert config["ReadonlyRootfs"] is True and config["Privileged"] is False, name
    assert set(config["Tmpfs"] or {}) == {"/tmp"}, (name, config["Tmpfs"])
    user = running["User"]
    assert user and user.split(":")[0] not in ("", "0", "root"), (name, user)
    uid = host.ssh("sudo stat -c %u /proc/$(sudo docker inspect -f '{{.State.Pid}}' circularnet-triton)")
    assert uid.returncode == 0 and uid.stdout.strip() not in ("", "0"), (name, uid.stdout + uid.stderr)  # tritonserver
    mounts = [(m["Type"], m["Destination"], m["RW"]) for m in container["Mounts"]]
    assert mounts == [("bind", "/models", False)], (name, mounts)
    assert not config["PortBindings"] and config["NetworkMode"] == "host", (name, config["PortBindings"])
    exposure = host.ssh("sudo systemd-analyze security circularnet-triton.service --no-pager")
    level = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", exposure.stdout)
    assert level and float(level[1]) <= 3.0, (name, exposure.stdout[-3000:] + exposure.stderr)


def converged(host: sandbox.FreshHost, flavour: str, fleet_instance: Instance, since: int) -> None:
    """A host's end state after its first run: holds, Docker's runtimes (containers start on the amd64 servers
    only: qemu-user cannot create namespaces), serving, healthy, frames delivered."""
    wanted = {"nvidia-container-toolkit", "docker.io"} | (
        {"nvidia-jetpack", "nvidia-l4t-core"} if flavour == "jetson" else {"cuda-drivers-550", "cuda-toolkit-12-4"})
    assert wanted <= set(host.ssh("apt-mark showhold").stdout.split()), host.state.name
    info = host.ssh("sudo docker info --format '{{json .Runtimes}} {{.DefaultRuntime}}'")
    assert info.returncode == 0 and '"nvidia"' in info.stdout, info.stdout + info.stderr
    assert info.stdout.split()[-1] == ("nvidia" if flavour == "jetson" else "runc"), info.stdout
    serves_and_reports_healthy(host, flavour, fleet_instance, since)
    if RUNTIME[flavour] == "container":
        triton_confined(host)
    pipeline_delivers(host, flavour)


def nothing_changes(runs: Sequence[tuple[dict[str, str], tuple[str, ...]]]) -> None:
    """Each of these runs succeeds and changes nothing (pyinfra: no operation changes; Ansible: changed=0)."""
    for code, rows, log in run_all(runs):
        assert code == 0, log[-6000:]
        assert rows and all(changed == 0 and failed == 0 for _, changed, failed in rows.values()), \
            f"{rows} changed: {what_changed(log)}\n{log[-6000:]}"


def test_fresh_servers_converge_once_with_each_engine_and_reach_the_same_end_state(
        boot_fresh: Callable[..., sandbox.FreshHost], view: Callable[..., dict[str, str]],
        fleet: FleetState, fleet_instance: Instance) -> None:
    """Every layer on two fresh servers (the container runtime), one converged by each engine, at once: the
    same end state; a second run and a dry run (pyinfra --dry, ansible --check) of each see nothing to do,
    download nothing, restart no Docker, rewrite no deploy record; each engine finds nothing to change after
    the other."""
    since = len(request_log(fleet_instance))
    hosts = {engine: boot_fresh("server") for engine in ("pyinfra", "ansible")}
    envs = {engine: view([host]) for engine, host in hosts.items()}
    started = time.monotonic()
    first = run_all([(envs[e], ("--engine", e)) for e in hosts])
    print(f"servers: first run, both engines at once: {time.monotonic() - started:.0f} s")
    for (code, rows, log), engine in zip(first, hosts):
        assert code == 0, f"{engine}:\n{log[-6000:]}"
        assert all(changed > 0 and failed == 0 for _, changed, failed in rows.values()), (engine, rows)
    pids = {engine: docker_pid(host) for engine, host in hosts.items()}
    records = {e: h.ssh("stat -c %Y /var/lib/circularnet/deploy.json").stdout for e, h in hosts.items()}
    for host in hosts.values():
        converged(host, "server", fleet_instance, since)

    nothing_changes([(envs[e], ("--engine", e, *dry)) for e in hosts for dry in ((), ("--dry",))])
    assert {engine: docker_pid(host) for engine, host in hosts.items()} == pids
    assert {e: h.ssh("stat -c %Y /var/lib/circularnet/deploy.json").stdout for e, h in hosts.items()} == records
    for host in hosts.values():
        assert len(requests_from(fleet_instance, host, since)) == 1, host.state.name

    # parity: the same files, packages, holds and enabled services, whichever engine converged the host
    by_pyinfra, by_ansible = snapshot(hosts["pyinfra"]), snapshot(hosts["ansible"])
    assert "absent" not in by_pyinfra["files"], by_pyinfra["files"]
    for part in ("files", "packages", "holds", "enabled"):
        assert by_pyinfra[part] == by_ansible[part], part
    nothing_changes([(envs["pyinfra"], ("--engine", "ansible")), (envs["ansible"], ("--engine", "pyinfra"))])
    print(f"servers: done at {time.monotonic() - started:.0f} s")


def test_a_fresh_jetson_converges_with_pyinfra_and_ansible_then_finds_nothing_to_change(
        boot_fresh: Callable[..., sandbox.FreshHost], view: Callable[..., dict[str, str]],
        fleet: FleetState, fleet_instance: Instance) -> None:
    """Every layer on one fresh Jetson (arm64 under qemu-user, the native Triton runtime), converged by pyinfra
    (the fleet's engine, `pyinfra hosts/edge.py`); then Ansible's platform and jetson roles find nothing to change
    on it, and pyinfra's second run changes nothing: Docker is not restarted, nothing downloaded, the deploy
    record not rewritten.

    One host, not a pair like the servers, and only the Jetson's own roles through Ansible: Ansible costs ~4.6 s
    a task under qemu-user even when it changes nothing (measured: pyinfra's first run ~535 s, Ansible's no-op of
    all 124 tasks 623 s, of the platform and jetson roles 169 s; the pair this replaced took 1,709 s of a CI run
    that came within 10 minutes of its limit). The engines' parity over every layer is the servers' test; the roles' Jetson branches (Docker's
    default runtime, the native runtime, the camera) render the same templates (tests/unit parity tests)."""
    since = len(request_log(fleet_instance))
    host = boot_fresh("jetson", "6.2")
    env = view([host])
    started = time.monotonic()
    ((code, rows, log),) = run_all([(env, ("--engine", "pyinfra"))])
    print(f"jetson: pyinfra's first run: {time.monotonic() - started:.0f} s")
    assert code == 0, log[-6000:]
    assert all(changed > 0 and failed == 0 for _, changed, failed in rows.values()), rows
    pid, record = docker_pid(host), host.ssh("stat -c %Y /var/lib/circularnet/deploy.json").stdout
    converged(host, "jetson", fleet_instance, since)
    print(f"jetson: serving and frames delivered at {time.monotonic() - started:.0f} s")
    assert "absent" not in snapshot(host)["files"]

    nothing_changes([(env, ("--engine", "ansible", "--layers", "jetson"))])
    print(f"jetson: Ansible's run at {time.monotonic() - started:.0f} s")
    nothing_changes([(env, ("--engine", "pyinfra"))])
    assert (docker_pid(host), host.ssh("stat -c %Y /var/lib/circularnet/deploy.json").stdout) == (pid, record)
    assert len(requests_from(fleet_instance, host, since)) == 1
    print(f"jetson: done at {time.monotonic() - started:.0f} s")


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


def test_one_host_unreachable_the_others_converge_and_the_run_fails_naming_it(
        boot_fresh: Callable[..., sandbox.FreshHost], fleet: FleetState,
        view: Callable[..., dict[str, str]]) -> None:
    host = boot_fresh("server")
    prefix = host.state.address.rsplit(".", 1)[0]
    gone = HostState(HostSpec("gone-1", "servers", "server", f"{prefix}.250", driver_branch="550"), "none", "/none")
    code, rows, log = run_all([(view([host], extra=[gone]), ("--engine", FAULT_ENGINE, *DRIVER_LAYERS))])[0]
    assert code != 0, log[-4000:]
    assert rows["gone-1"][2] > 0 and "gone-1" in log
    assert rows[host.state.name][1] > 0 and rows[host.state.name][2] == 0, rows


@pytest.mark.parametrize("engine", ["pyinfra", "ansible"])
def test_reboot_never_leaves_a_first_driver_install_reboot_pending_and_the_run_after_the_reboot_continues(
        engine: str, boot_fresh: Callable[..., sandbox.FreshHost], view: Callable[..., dict[str, str]],
        session_stack: Path, tmp_path: Path) -> None:
    """The stand-in driver's knob makes nvidia-smi fail as an unloaded module does (sandbox hosts cannot
    reboot into a new kernel module, and share the machine's uptime, by which a reboot is seen). The fresh
    server stands for the stack's first server (cnctl.inventory), whose entry here says `reboot: never`."""
    host = boot_fresh("server")
    stack = tmp_path / "stack" / "Pulumi.local.yaml"  # still the local stack, on the session's subnet
    stack.parent.mkdir()
    document = yaml.safe_load(session_stack.read_text())
    for entry in document["config"]["circularnet:fleets"]["servers"]:
        entry["reboot"] = "never"
    stack.write_text(yaml.safe_dump(document, sort_keys=False))
    env = {**view([host]), "CNCTL_STACK": str(stack)}
    assert host.ssh("sudo install -d /etc/cnctl-standin && sudo touch /etc/cnctl-standin/driver-unloaded").returncode == 0
    code, rows, log = run_all([(env, ("--engine", engine, *DRIVER_LAYERS))])[0]
    # pyinfra reports no table row when every host failed (no JSON report): the exit code and the log say it
    assert code != 0 and rows.get(host.state.name, (None, 0, 1))[2] > 0, log[-4000:]
    assert f"{host.state.name}: reboot pending" in " ".join(log.split()), log[-4000:]
    assert host.ssh("test -f /run/circularnet/reboot-pending").returncode == 0
    assert "cuda-drivers-550" in host.ssh("apt-mark showhold").stdout  # installed and held before the stop

    # what the reboot does: the module loads, /run is empty again
    assert host.ssh("sudo rm -f /etc/cnctl-standin/driver-unloaded /run/circularnet/reboot-pending").returncode == 0
    code, rows, log = run_all([(env, ("--engine", engine, *DRIVER_LAYERS))])[0]
    assert code == 0 and rows[host.state.name][2] == 0, log[-4000:]
    assert host.ssh("sudo docker info --format '{{json .Runtimes}}'").stdout.count('"nvidia"') == 1


# The first apt index refresh on a server, by engine: the nvidia layer's (the platform layer only adds the site
# repository's key and source; the refresh that reads them comes with the first install).
INDEX_REFRESH = {"pyinfra": "NVIDIA: package index fresh",
                 "ansible": "nvidia : Refresh the package index, failing closed"}
# apt's words for a Release file that no trusted key signed.
BAD_SIGNATURE = re.compile(
    r"NO_PUBKEY|not signed|signatures? (couldn't|could not|were not) be(en)? verified|invalid signature", re.IGNORECASE)


@pytest.mark.parametrize("engine", ["pyinfra", "ansible"])
def test_a_site_repository_signed_by_another_key_than_the_stack_trusts_fails_closed_installing_nothing(
        engine: str, boot_fresh: Callable[..., sandbox.FreshHost], view: Callable[..., dict[str, str]],
        session_stack: Path, fleet: FleetState, tmp_path: Path) -> None:
    """The stack's siteAptKey names a key that did not sign the site repository (a rotated key, a wrong URL):
    the key is installed as the stack says, then the first index refresh fails naming the repository, and no
    package is installed, upgraded or held."""
    host = boot_fresh("server")
    before = snapshot(host)
    other_key = other_signing_key(tmp_path)
    with serving(fleet.machine_address, other_key) as key_url:
        stack = tmp_path / "stack" / "Pulumi.local.yaml"  # still the local stack, on the session's subnet
        stack.parent.mkdir()
        stack.write_text(re.sub(r"(siteAptKey:\s*)\S+", lambda m: m[1] + key_url, session_stack.read_text(), count=1))
        assert key_url in stack.read_text()
        code, rows, log = run_all([({**view([host]), "CNCTL_STACK": str(stack)}, ("--engine", engine))])[0]
    # pyinfra reports no table row when every host failed (no JSON report): the exit code and the log say it
    assert code != 0 and rows.get(host.state.name, (None, 0, 1))[2] > 0, log[-4000:]
    assert host.ssh("cat /etc/apt/keyrings/cnctl-site.asc").stdout.encode() == other_key  # the stack's key was used
    assert INDEX_REFRESH[engine] in log, log[-4000:]
    failure = log[log.index(INDEX_REFRESH[engine]):]
    assert fleet.site and fleet.site["apt_url"].rstrip("/") in failure, failure[-4000:]  # names the repository
    assert BAD_SIGNATURE.search(failure), failure[-4000:]
    after = snapshot(host)
    assert after["packages"] == before["packages"] and after["holds"] == before["holds"] == ""


def _apt_or_dpkg(argv: list[str]) -> bool:
    return bool(argv) and os.path.basename(argv[0]) in ("apt-get", "apt", "dpkg")


def _installing_the_driver(processes: list[tuple[int, list[str]]]) -> bool:
    """The nvidia layer's `apt-get install` runs and has handed packages to dpkg (unpacking or configuring)."""
    apt = any(os.path.basename(argv[0]) == "apt-get" and "install" in argv and any("cuda-drivers" in a for a in argv)
              for _, argv in processes if argv)
    dpkg = any(os.path.basename(argv[0]) == "dpkg" and {"--unpack", "--configure", "--install"} & set(argv)
               for _, argv in processes if argv)
    return apt and dpkg


def test_an_ssh_connection_cut_while_the_nvidia_layer_installs_fails_the_host_and_a_rerun_converges(
        boot_fresh: Callable[..., sandbox.FreshHost], view: Callable[..., dict[str, str]]) -> None:
    """The deploy user's SSH sessions are killed on the host (its sshd processes, from the machine) while the
    nvidia layer's apt-get install has dpkg unpacking or configuring the driver: the run fails for the host;
    once what the cut left running has ended, a re-run converges it (nothing half-installed, holds, Docker)."""
    host = boot_fresh("server")
    env = view([host])
    proc = cnctl_deploy(env, "--engine", FAULT_ENGINE, *DRIVER_LAYERS)
    cut: list[int] = []
    deadline = time.monotonic() + DEPLOY_TIMEOUT_S
    while not cut and proc.poll() is None and time.monotonic() < deadline:
        running = host_processes(host.state.netns)
        if _installing_the_driver(running):
            cut = cut_ssh_sessions(host.state.netns, host.state.spec.ssh_user)
            print(f"cut {len(cut)} sshd processes during:", *(" ".join(a) for _, a in running if _apt_or_dpkg(a)),
                  sep="\n  ")
        else:
            time.sleep(0.02)
    code, rows, log = finish(proc)
    assert cut, f"the nvidia layer's install was never seen running:\n{log[-4000:]}"
    # pyinfra reports no table row when every host failed (no JSON report): the exit code and the log say it
    assert code != 0 and rows.get(host.state.name, (None, 0, 1))[2] > 0, log[-4000:]
    assert host.state.name in log

    # what the cut left behind (apt-get, dpkg) ends on its own; the re-run comes after it, as an operator's would
    assert procs.until(lambda: not any(_apt_or_dpkg(argv) for _, argv in host_processes(host.state.netns)), 300)
    print("left by the cut: dpkg --audit:", host.ssh("sudo dpkg --audit").stdout.strip() or "(nothing)")
    code, rows, log = run_all([(env, ("--engine", FAULT_ENGINE, *DRIVER_LAYERS))])[0]
    assert code == 0 and rows[host.state.name][2] == 0, log[-4000:]
    audit = host.ssh("sudo dpkg --audit")
    assert audit.returncode == 0 and audit.stdout.strip() == "", audit.stdout  # nothing half-installed
    holds = set(host.ssh("apt-mark showhold").stdout.split())
    assert {"cuda-drivers-550", "cuda-toolkit-12-4", "docker.io", "nvidia-container-toolkit"} <= holds, holds
    assert '"nvidia"' in host.ssh("sudo docker info --format '{{json .Runtimes}}'").stdout
