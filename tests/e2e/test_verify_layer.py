"""`cnctl status` and the verify layer on the sandbox fleet (a fresh amd64 server; every layer below runs first).
A fresh host converging healthy with either engine, the report's timer and hardened service, the same files
whichever engine wrote them and a second run that changes nothing: tests/e2e/test_layers.py.

- `cnctl status`: exit 0 on a healthy fleet; with Triton stopped exit 1 naming the host and the problem,
  and a deploy of the verify layer alone fails the host with that problem in either engine; healthy again
  once Triton runs; a host that does not answer makes it exit 1 naming it, the healthy one still reported.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from cnctl import engines
from cnctl.config import StackConfig, load_stack
from cnctl.sandbox import fleet as sandbox
from cnctl.sandbox.layout import HostSpec
from cnctl.sandbox.state import HostState
from tests.e2e.fleet_helpers import BIN, REPO, SESSION_NET, deploy_rows

pytestmark = pytest.mark.fleet

DEPLOY_TIMEOUT_S = 1800
STATUS_TIMEOUT_S = 300


# --- helpers -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def session_stack(sandbox_stack: Callable[[str], Path]) -> Path:
    """The local stack on the session's subnet, booting no edge host (no emulated Jetson in these tests)."""
    path = sandbox_stack(SESSION_NET)
    document = yaml.safe_load(path.read_text())
    document["config"]["circularnet:sandbox"]["edge"] = 0
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def fleet_stack(session_stack: Path) -> StackConfig:
    """The session fleet of these tests: the local stack's servers only."""
    return load_stack(str(session_stack))


def deploy(runs: Sequence[tuple[dict[str, str], str]], logs: Path) -> list[tuple[int, dict[str, tuple[int, int]], str]]:
    """`cnctl deploy --engine E` of the session stack for each (env, engine) at once: (exit code, {host: (changed,
    failed)} from the summary table, the log) in order; each whole log is kept in `logs`."""
    procs = [subprocess.Popen([str(BIN / "cnctl"), "deploy", "--stack", env["CNCTL_STACK"], "--engine", engine], cwd=REPO,
                              env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for env, engine in runs]
    outcomes = []
    for proc, (_, engine) in zip(procs, runs):
        out, err = proc.communicate(timeout=DEPLOY_TIMEOUT_S)
        rows = {host: (changed, failed) for host, (_, changed, failed) in deploy_rows(out).items()}
        log = logs / f"deploy-{engine}-{time.monotonic_ns()}.log"
        log.write_text(out + err)  # the whole log, for a failure's post-mortem (assertions show its tail)
        outcomes.append((proc.returncode, rows, f"{out + err}\n{log}"))
    return outcomes


def status(env: dict[str, str], *args: str) -> tuple[int, dict[str, Any] | None, str]:
    """`cnctl status --stack <session stack> --json ARGS`: (exit code, the JSON, stderr)."""
    proc = subprocess.run([str(BIN / "cnctl"), "status", "--stack", env["CNCTL_STACK"], "--json", *args], cwd=REPO,
                          env=env, text=True, capture_output=True, timeout=STATUS_TIMEOUT_S, check=False)
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        data = None
    return proc.returncode, data, proc.stderr


def until_healthy(env: dict[str, str], seconds: float = 180) -> tuple[int, dict[str, Any] | None, str]:
    """`cnctl status` again until it exits 0 or `seconds` passed (Triton loads the model after a start)."""
    deadline = time.monotonic() + seconds
    while True:
        outcome = status(env)
        if outcome[0] == 0 or time.monotonic() > deadline:
            return outcome
        time.sleep(5)


@pytest.fixture
def verify_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[dict[str, str], str], engines.DeployResult]]:
    """`verify_only(env, engine)`: one engine run of the verify layer alone (the platform layer always runs)."""

    def run(env: dict[str, str], engine: str) -> engines.DeployResult:
        for key in ("CNCTL_FLEET_FILE", "CNCTL_STACK", "CNCTL_CACHE", "XDG_CACHE_HOME", "PATH"):
            monkeypatch.setenv(key, env[key])
        target = engines.for_stack(load_stack(env["CNCTL_STACK"]), stack=env["CNCTL_STACK"])
        return engines.run(engine, replace(target, layers=("verify",)), echo=False)

    yield run


# --- the tests -------------------------------------------------------------------------------------


def test_cnctl_status_exits_1_naming_an_unhealthy_or_unreachable_host_and_the_verify_layer_fails_it(
        boot_fresh: Callable[..., sandbox.FreshHost], view: Callable[..., dict[str, str]], tmp_path: Path,
        verify_only: Callable[[dict[str, str], str], engines.DeployResult]) -> None:
    host = boot_fresh("server")
    name = host.state.name
    env = view([host])
    code, _, log = deploy([(env, "pyinfra")], tmp_path)[0]
    assert code == 0, log[-6000:]

    code, data, err = status(env)
    assert code == 0 and data is not None, err
    assert data["healthy"] and [h["name"] for h in data["hosts"]] == [name] and data["hosts"][0]["source"] == "fresh"
    assert data["hosts"][0]["report"]["model"]["ready"] is True

    # Triton stopped: unhealthy, named, with the fix; a deploy of the verify layer alone fails the host with it
    assert host.ssh("sudo systemctl stop circularnet-triton").returncode == 0
    try:
        code, data, err = status(env)
        assert code == 1 and data is not None and data["unhealthy"] == [name], (code, err)
        assert f"{name} (unhealthy)" in err
        problems = data["hosts"][0]["problems"]
        assert any(p.startswith("Triton not answering on 127.0.0.1:8000 (circularnet-triton.service is inactive): "
                                "see `journalctl -u circularnet-triton`") for p in problems), problems
        for engine in ("pyinfra", "ansible"):
            try:
                result = verify_only(env, engine)
            except engines.EngineFailure as exc:  # pyinfra writes no JSON report when every host failed
                said = str(exc)
            else:
                [row] = [h for h in result.hosts if h.host == name]
                assert not result.ok and row.failed > 0 and row.changed == 0, (engine, result)
                said = row.reason
            assert f"{name}: unhealthy: Triton not answering on 127.0.0.1:8000" in " ".join(said.split()), (engine, said)
    finally:
        host.ssh("sudo systemctl start circularnet-triton", timeout=300)
    code, data, err = until_healthy(env)
    assert code == 0, (err, data)

    # a host that does not answer: exit 1 naming it; the healthy one is still reported; --limit leaves it out
    prefix = host.state.address.rsplit(".", 1)[0]
    gone = HostState(HostSpec("gone-1", "servers", "server", f"{prefix}.250", driver_branch="550"), "none", "/none")
    both = view([host], extra=[gone])
    started = time.monotonic()
    code, data, err = status(both)
    assert time.monotonic() - started < 120
    assert code == 1 and data is not None and data["unhealthy"] == ["gone-1"], (code, err)
    assert "gone-1 (unreachable)" in err
    by_name = {h["name"]: h for h in data["hosts"]}
    assert by_name["gone-1"]["reachable"] is False and by_name["gone-1"]["problems"][0].startswith("unreachable: ")
    assert by_name[name]["healthy"] is True
    assert status(both, "--limit", name)[0] == 0
    code, _, err = status(both, "--limit", "nope")
    assert code == 2 and "--limit nope: no such host or group" in err
