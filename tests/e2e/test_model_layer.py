"""The model and inference layers on the sandbox fleet under faults (fresh servers; every layer below runs
first). Fresh hosts converging through these layers with either engine, in either runtime, to the same files
and with a second run that downloads nothing: tests/e2e/test_layers.py.

- faults, on a converged host: a download cut on every attempt fails the host naming the cut, leaves
  version 1 serving and staging empty; once the fault is gone a re-run converges, and a single cut is
  resumed in the same run with a Range request; a wrong sha256 fails the host naming both sha256, with
  either engine, and leaves the installed versions and config.pbtxt as they were;
- while a client sends requests in a loop, none of these fails one: HTTP 500 for the archive, a version
  Triton refuses to load (the host fails with Triton's own words), the deploy killed (SIGKILL) in the
  middle of a switch, a full staging disk; each leaves the old version serving and staging clean, and a
  re-run converges once the fault is gone.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from cnctl.config import StackConfig, load_stack
from cnctl.sandbox import fleet as sandbox
from cnctl.sandbox.instance import Instance
from cnctl.sandbox.inventory import publish
from cnctl.sandbox.state import FleetState, save
from tests.e2e.fleet_helpers import BIN, REPO, SESSION_NET, deploy_rows
from tests.e2e.host_state import (
    MODEL,
    MODEL_FILES,
    SITE,
    STAGING,
    init_pid,
    marker,
    requests_from,
    site_sha256,
    staging_entries,
)
from tests.e2e.triton_client import infer, infer_loop

pytestmark = pytest.mark.fleet

DEPLOY_TIMEOUT_S = 1800
# What a model change touches: once a host has converged, the faults below are played through these layers
# only (`cnctl deploy --layers`, as `cnctl model rollout` runs them); the platform layer always applies.
MODEL_LAYERS = ("model", "inference")
MANAGED = MODEL_FILES
SNAPSHOT = """
for p in "$@"; do
  if [ -e "$p" ]; then stat -c '%n %F %a %U:%G' "$p"; if [ -f "$p" ]; then sha256sum < "$p"; fi
  else echo "$p absent"; fi
done
"""


# --- helpers -------------------------------------------------------------------------------------


@pytest.fixture
def env_of(fleet: FleetState, fleet_instance: Instance, fleet_env: dict[str, str],
           tmp_path_factory: pytest.TempPathFactory) -> Callable[[Sequence[sandbox.FreshHost]], dict[str, str]]:
    """The environment in which the local stack's inventories are exactly `hosts` (a state dir of their own)."""

    def make(hosts: Sequence[sandbox.FreshHost]) -> dict[str, str]:
        directory = tmp_path_factory.mktemp("view")
        known = directory / "known_hosts"
        known.write_text("".join(Path(h.fleet.known_hosts).read_text() for h in hosts))
        inst = Instance(prefix=fleet_instance.prefix, state_dir=directory / "state", cache=fleet_instance.cache)
        view = replace(fleet, state_dir=str(inst.state_dir), known_hosts=str(known), hosts=[h.state for h in hosts],
                       inventories={**fleet.inventories, "fleet": str(inst.fleet_file), "ansible": str(inst.ansible_inventory)})
        save(inst, view)
        publish(inst, view)  # the fleet file the product reads: exactly these hosts
        # its own user cache too: cnctl writes the run's Ansible inventory there, per stack name
        return {**fleet_env, **inst.environment(), "XDG_CACHE_HOME": str(directory / "cache")}

    return make


def deploy(runs: Sequence[tuple[dict[str, str], str, str]], logs: Path,
           layers: Sequence[str] = ()) -> list[tuple[int, dict[str, tuple[int, int]], str]]:
    """`cnctl deploy --stack STACK --engine E [--layers ...]` for each (env, stack, engine) at once: (exit code,
    {host: (changed, failed)} from the summary table, the log) in order; each whole log is kept in `logs`."""
    only = ["--layers", ",".join(layers)] if layers else []
    procs = [subprocess.Popen([str(BIN / "cnctl"), "deploy", "--stack", stack, "--engine", engine, *only], cwd=REPO,
                              env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for env, stack, engine in runs]
    outcomes = []
    for proc in procs:
        out, err = proc.communicate(timeout=DEPLOY_TIMEOUT_S)
        rows = {host: (changed, failed) for host, (_, changed, failed) in deploy_rows(out).items()}
        log = Path(tempfile.mkstemp(prefix="deploy-", suffix=".log", dir=logs)[1])
        log.write_text(out + err)  # the whole log, for a failure's post-mortem (assertions show its tail)
        outcomes.append((proc.returncode, rows, f"{out + err}\n{log}"))
    return outcomes


def servers_only(path: Path) -> Path:
    """The stack at `path` whose sandbox boots no edge host: no emulated arm64 Jetson in these tests."""
    document = yaml.safe_load(path.read_text())
    document["config"]["circularnet:sandbox"]["edge"] = 0
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def fleet_stack(sandbox_stack: Callable[[str], Path]) -> StackConfig:
    """The session fleet of these tests: the local stack's servers (amd64) only."""
    return load_stack(str(servers_only(sandbox_stack(SESSION_NET))))


def stack_with(sandbox_stack: Callable[[str], Path], runtime: str = "container", **model: Any) -> str:
    """A copy of the session's stack whose circularnet:model keys are replaced by `model`, with Triton in
    `runtime` on the servers."""
    path = servers_only(sandbox_stack(SESSION_NET))
    document = yaml.safe_load(path.read_text())
    document["config"]["circularnet:inference"]["runtime"] = runtime
    document["config"]["circularnet:model"].update(model)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return str(path)


def fault(body: dict[str, Any] | None) -> None:
    """Switch a fault on at the site's artifact server (None: all off)."""
    request = urllib.request.Request(f"{SITE}/_faults", method="DELETE" if body is None else "POST",
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status in (200, 201, 204)


def snapshot(host: sandbox.FreshHost, paths: Sequence[str] = MANAGED) -> str:
    result = host.ssh(f"sudo sh -s -- {' '.join(paths)}", input=SNAPSHOT, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


# --- the tests -------------------------------------------------------------------------------------


def test_a_cut_download_fails_cleanly_then_converges_and_a_wrong_sha256_changes_nothing(
        boot_fresh: Callable[..., sandbox.FreshHost], env_of: Callable[..., dict[str, str]],
        fleet_instance: Instance, sandbox_stack: Callable[[str], Path], tmp_path: Path) -> None:
    host = boot_fresh("server")
    env = env_of([host])
    code, _, log = deploy([(env, stack_with(sandbox_stack), "pyinfra")], tmp_path)[0]
    assert code == 0, log[-6000:]
    v1 = snapshot(host)
    v2_url = f"{SITE}/artifacts/models/sandbox_standin-v2.zip"
    v2 = stack_with(sandbox_stack, version=2, url=v2_url, sha256=site_sha256("sandbox_standin-v2.zip"))
    try:
        # cut on every attempt: no progress, the host fails naming the cut, version 1 untouched, staging empty
        fault({"kind": "cut", "bytes": 0, "prefix": "/artifacts/models/sandbox_standin-v2.zip"})
        code, _, log = deploy([(env, v2, "pyinfra")], tmp_path, MODEL_LAYERS)[0]  # every host failed: pyinfra writes no report to count
        assert code != 0, log[-6000:]
        assert f"{v2_url}: download cut (connection closed early) after 0 bytes; 5 attempts in a row made no progress" \
            in log, log[-6000:]
        assert snapshot(host) == v1 and staging_entries(host) == []

        # one cut (the stand-in archive is ~3 kB): resumed with a Range request in the same run
        fault(None)
        fault({"kind": "cut", "bytes": 1000, "prefix": "/artifacts/models/sandbox_standin-v2.zip", "times": 1})
        code, rows, log = deploy([(env, v2, "pyinfra")], tmp_path, MODEL_LAYERS)[0]
        assert code == 0 and rows[host.state.name][1] == 0, log[-6000:]
        last = requests_from(fleet_instance, host)[-2:]
        assert [(r["status"], r["range"]) for r in last] == [(200, None), (206, "bytes=1000-")], last
    finally:
        fault(None)
    assert marker(host, 2)["version"] == 2 and staging_entries(host) == []
    assert host.ssh(f"sudo cat {MODEL}/config.pbtxt").stdout.count('string_value: "2"') == 1  # v2's own config
    assert infer(host)["version"] == "2"
    converged = snapshot(host, (*MANAGED, f"{MODEL}/2", f"{MODEL}/2/model.py"))

    # a wrong pin for a third version: both engines fail naming both sha256; nothing changes
    actual = site_sha256("sandbox_standin-broken.zip")
    wrong = site_sha256("sandbox_standin.zip")
    v3 = stack_with(sandbox_stack, version=3, url=f"{SITE}/artifacts/models/sandbox_standin-broken.zip", sha256=wrong)
    for engine in ("pyinfra", "ansible"):
        code, _, log = deploy([(env, v3, engine)], tmp_path, MODEL_LAYERS)[0]
        assert code != 0, log[-6000:]
        assert f"sha256 is {actual}, the stack pins {wrong}" in " ".join(log.split()), f"{engine}\n{log[-6000:]}"
        assert snapshot(host, (*MANAGED, f"{MODEL}/2", f"{MODEL}/2/model.py")) == converged, engine
        assert host.ssh(f"sudo test -e {MODEL}/3").returncode != 0 and staging_entries(host) == []


def served_version(host: sandbox.FreshHost) -> int:
    result = host.ssh(f"sudo cat {MODEL}/.cnctl-served.json")
    assert result.returncode == 0, result.stderr
    return int(json.loads(result.stdout)["version"])


def deploy_killed_in_the_switch(env: dict[str, str], stack: str, host: sandbox.FreshHost, logs: Path) -> None:
    """`cnctl deploy` SIGKILLed, with its engine, the moment the host runs the switch (`cnhost.model_serve serve`)."""
    proc = subprocess.Popen([str(BIN / "cnctl"), "deploy", "--stack", stack, "--layers", ",".join(MODEL_LAYERS)],
                            cwd=REPO, env=env, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + DEPLOY_TIMEOUT_S
        while host.ssh("pgrep -f 'cnhost.model_serve serve'").returncode != 0:
            assert proc.poll() is None, "the deploy ended before the switch began"
            assert time.monotonic() < deadline, "the switch never began"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def test_while_a_client_sends_requests_no_fault_fails_one_and_each_leaves_the_old_version_serving(
        boot_fresh: Callable[..., sandbox.FreshHost], env_of: Callable[..., dict[str, str]],
        sandbox_stack: Callable[[str], Path], tmp_path: Path) -> None:
    host = boot_fresh("server")
    env = env_of([host])
    code, _, log = deploy([(env, stack_with(sandbox_stack), "pyinfra")], tmp_path)[0]
    assert code == 0, log[-6000:]
    v2_url = f"{SITE}/artifacts/models/sandbox_standin-v2.zip"
    v2 = stack_with(sandbox_stack, version=2, url=v2_url, sha256=site_sha256("sandbox_standin-v2.zip"))
    broken = stack_with(sandbox_stack, version=3, url=f"{SITE}/artifacts/models/sandbox_standin-broken.zip",
                        sha256=site_sha256("sandbox_standin-broken.zip"))
    loop = infer_loop(host)
    try:
        # HTTP 500 for the archive: the host fails with the status, v1 serves on
        fault({"kind": "error", "status": 500, "prefix": "/artifacts/models/sandbox_standin-v2.zip"})
        code, _, log = deploy([(env, v2, "pyinfra")], tmp_path, MODEL_LAYERS)[0]
        fault(None)
        assert code != 0 and f"{v2_url}: HTTP 500 Internal Server Error" in log, log[-6000:]
        assert served_version(host) == 1 and staging_entries(host) == []

        # a full staging disk (no inode left): the host fails naming the disk, v1 serves on; then it converges
        leader = init_pid(host)
        mount = ["nsenter", "-t", leader, "-m", "mount", "-t", "tmpfs", "-o", "size=64k,nr_inodes=1,mode=700", "tmpfs", STAGING]
        subprocess.run(mount, check=True, timeout=30)
        try:
            code, _, log = deploy([(env, v2, "ansible")], tmp_path, MODEL_LAYERS)[0]
        finally:
            subprocess.run(["nsenter", "-t", leader, "-m", "umount", STAGING], check=True, timeout=30)
        assert code != 0 and "No space left on device" in log, log[-6000:]
        assert served_version(host) == 1 and staging_entries(host) == []

        # the deploy killed in the middle of the switch to v2: whatever it left, a re-run converges to v2
        deploy_killed_in_the_switch(env, v2, host, tmp_path)
        assert served_version(host) in (1, 2) and staging_entries(host) == []
        code, _, log = deploy([(env, v2, "pyinfra")], tmp_path, MODEL_LAYERS)[0]
        assert code == 0 and served_version(host) == 2, log[-6000:]

        # a version Triton refuses to load: the host fails with Triton's words, v2 serves on, its config on disk
        config_v2 = host.ssh(f"sudo cat {MODEL}/config.pbtxt").stdout
        for engine in ("pyinfra", "ansible"):
            code, _, log = deploy([(env, broken, engine)], tmp_path, MODEL_LAYERS)[0]
            assert code != 0 and "refuses to load (standin_fail_load=true)" in log, f"{engine}\n{log[-6000:]}"
            assert served_version(host) == 2 and host.ssh(f"sudo cat {MODEL}/config.pbtxt").stdout == config_v2
            assert infer(host)["version"] == "2"
    finally:
        fault(None)
        answers = loop.stop()
    assert answers.outlived, "the client stopped before the test did"
    assert answers.errors == [], answers.errors[:5]
    assert set(answers.versions) == {"1", "2"} and answers.order[-1] == "2", answers.versions
    assert answers.order.index("2") > answers.order.index("1")  # 1 until the switch, 2 after it
    assert "1" not in answers.order[answers.order.index("2"):], "v1 answered again after the switch"
