"""`cnctl model rollout` and `cnctl model rollback` on fresh sandbox servers, under load.

Three fresh amd64 servers converge the whole stack with the stand-in model version 1 (two with the
container runtime, one with the native one). Then, while one client per host sends inference requests in a
loop to that host's Triton through tritonclient (from this machine, inside the host's network namespace:
Triton binds the host's loopback):

- `cnctl model rollout` to version 2 (canary, then batches; pyinfra): zero failed requests, every host
  answers with version 2 afterwards, whose class ids are version 1's shifted by one (the stand-in's second
  revision), and no host ever answers with version 1 again once it answered with 2;
- `cnctl model rollback` (Ansible): zero failed requests, every host answers with version 1 again;
- a rollout to the archive that refuses to load (`--canary 1`): exit 1 naming the canary and Triton's
  reason, the canary keeps answering with version 1 without a failed request, and the other hosts are never
  touched (no request for the archive from them, their served record unchanged).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from cnctl.config import StackConfig, load_stack
from cnctl.sandbox import fleet as sandbox
from cnctl.sandbox.instance import Instance
from tests.e2e.fleet_helpers import BIN, REPO, SESSION_NET
from tests.e2e.host_state import SITE, request_log, site_sha256
from tests.e2e.test_model_layer import env_of, servers_only, stack_with

pytestmark = pytest.mark.fleet

__all__ = ["env_of"]  # the fixture this module shares with the model layer's tests

RUN_TIMEOUT_S = 2400
MODEL = "/opt/circularnet/models/circularnet"
RUNTIMES = ("container", "container", "native")  # fresh-1 (the canary), fresh-2, fresh-3
LABELS = 45  # the stand-in's class ids are 1..45 (catalog `labels`)
# One client per host, inside the host's network namespace: tritonclient.http from this machine's venv, one
# client (keep-alive connection) per loop, a request every 0.25 s after the answer (or every argv[6] s). Each request is one line of JSON in its log: when it was sent,
# whether it was answered, by which version, and the class ids of the detections (an image with one red
# corner cell: one detection).
CLIENT = r"""
import json, os, sys, time
import numpy as np
import tritonclient.http as http

host, port, name, log_path, stop_path = sys.argv[1:6]
period = float(sys.argv[6]) if len(sys.argv) > 6 else 0.25
image = np.zeros((1, 1024, 1024, 3), np.uint8)
image[0, :256, :256] = (200, 30, 30)
client = http.InferenceServerClient(f"{host}:{port}", connection_timeout=10.0, network_timeout=60.0)
inputs = http.InferInput("inputs", list(image.shape), "UINT8")
inputs.set_data_from_numpy(image, binary_data=True)
outputs = [http.InferRequestedOutput(n, binary_data=True) for n in ("detection_classes", "num_detections")]
with open(log_path, "a", buffering=1) as log:
    while not os.path.exists(stop_path):
        sent = time.time()
        try:
            result = client.infer(name, [inputs], outputs=outputs)
            count = int(result.as_numpy("num_detections").reshape(-1)[0])
            record = {"t": sent, "ok": True, "version": result.get_response()["model_version"],
                      "classes": result.as_numpy("detection_classes").reshape(-1)[:count].tolist()}
        except Exception as exc:
            record = {"t": sent, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
        log.write(json.dumps(record) + "\n")
        time.sleep(period)
"""


@pytest.fixture(scope="session")
def fleet_stack(sandbox_stack: Callable[[str], Path]) -> StackConfig:
    """The session fleet of these tests: the local stack's servers (amd64) only."""
    return load_stack(str(servers_only(sandbox_stack(SESSION_NET))))


def rollout_stack(sandbox_stack: Callable[[str], Path], hosts: Sequence[sandbox.FreshHost], version: int,
                  archive: str) -> str:
    """A copy of the session's stack pinning `archive` (served by the site, its sha256 read from there) as
    `version`, whose fleet lists the fresh hosts with their runtimes."""
    path = Path(stack_with(sandbox_stack, version=version, url=f"{SITE}/artifacts/models/{archive}",
                           sha256=site_sha256(archive)))
    document = yaml.safe_load(path.read_text())
    document["config"]["circularnet:fleets"]["servers"] = [
        {"name": h.state.name, "address": h.state.address, "site": "sandbox", "driverBranch": "550", "reboot": "allowed",
         "inferenceRuntime": runtime} for h, runtime in zip(hosts, RUNTIMES, strict=True)
    ]
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    load_stack(str(path))  # a stack the commands accept
    return str(path)


def cnctl(args: Sequence[str], env: dict[str, str], logs: Path) -> tuple[int, str]:
    """Run `cnctl ARGS`: (exit code, stdout + stderr); the whole output is kept in `logs` for a post-mortem."""
    proc = subprocess.run([str(BIN / "cnctl"), *args], cwd=REPO, env=env, text=True, capture_output=True,
                          timeout=RUN_TIMEOUT_S, check=False)
    output = proc.stdout + proc.stderr
    (logs / f"cnctl-{args[0]}-{args[1]}-{time.monotonic_ns()}.log").write_text(output)
    return proc.returncode, output


@contextmanager
def clients(hosts: Sequence[sandbox.FreshHost], fleet_instance: Instance, logs: Path) -> Iterator[dict[str, list[dict[str, Any]]]]:
    """One client loop per host while the block runs; afterwards the dict holds each host's request records.
    The block starts once every host has answered three requests."""
    stop = logs / f"stop-{time.monotonic_ns()}"
    paths = {h.state.name: logs / f"requests-{h.state.name}-{time.monotonic_ns()}.jsonl" for h in hosts}
    procs = [subprocess.Popen(["ip", "netns", "exec", fleet_instance.host_netns(h.state.name), str(BIN / "python"), "-c",
                               CLIENT, "127.0.0.1", "8000", "circularnet", str(paths[h.state.name]), str(stop)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for h in hosts]
    records: dict[str, list[dict[str, Any]]] = {}
    try:
        deadline = time.monotonic() + 300
        while not all(len(_answered(p)) >= 3 for p in paths.values()):
            assert time.monotonic() < deadline, {n: _read(p)[-3:] for n, p in paths.items()}
            assert all(p.poll() is None for p in procs), [p.stderr.read() if p.stderr else "" for p in procs]
            time.sleep(1)
        yield records
    finally:
        stop.touch()
        for proc in procs:
            try:
                proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        records.update({name: _read(path) for name, path in paths.items()})


def _read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _answered(path: Path) -> list[dict[str, Any]]:
    return [r for r in _read(path) if r["ok"]]


def failed_requests(records: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    return {name: [r for r in rs if not r["ok"]] for name, rs in records.items() if any(not r["ok"] for r in rs)}


def versions_in_order(records: list[dict[str, Any]]) -> list[str]:
    """The versions that answered, each run of equal answers once: ["1", "2"] is one clean switch."""
    runs: list[str] = []
    for r in records:
        if r["ok"] and (not runs or runs[-1] != r["version"]):
            runs.append(r["version"])
    return runs


def served_record(host: sandbox.FreshHost) -> dict[str, Any]:
    result = host.ssh(f"sudo cat {MODEL}/.cnctl-served.json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def journal(host: sandbox.FreshHost) -> str:
    """The end of the host's Triton unit journal, for a failure's message."""
    result = host.ssh("sudo journalctl -u circularnet-triton --no-pager -n 40", timeout=60)
    return f"\n--- {host.state.name}: journalctl -u circularnet-triton\n{result.stdout}{result.stderr}"


def shifted(classes: Sequence[int]) -> list[int]:
    """Version 1's class ids as the stand-in's second revision gives them (one further, modulo the labels)."""
    return [c % LABELS + 1 for c in classes]


# --- the test -----------------------------------------------------------------------------------------


def test_rollout_and_rollback_drop_no_request_and_a_broken_canary_stops_there(
        boot_fresh: Callable[..., sandbox.FreshHost], env_of: Callable[..., dict[str, str]],
        fleet_instance: Instance, sandbox_stack: Callable[[str], Path], tmp_path: Path) -> None:
    hosts = [boot_fresh("server") for _ in RUNTIMES]
    names = [h.state.name for h in hosts]
    env = env_of(hosts)
    v1 = rollout_stack(sandbox_stack, hosts, 1, "sandbox_standin.zip")
    v2 = rollout_stack(sandbox_stack, hosts, 2, "sandbox_standin-v2.zip")
    broken = rollout_stack(sandbox_stack, hosts, 3, "sandbox_standin-broken.zip")

    code, log = cnctl(["deploy", "--stack", v1], env, tmp_path)
    assert code == 0, log[-4000:] + "".join(journal(h) for h in hosts)

    # v1 -> v2 under load: canary, then batches (3 hosts: one by one)
    with clients(hosts, fleet_instance, tmp_path) as during_rollout:
        code, log = cnctl(["model", "rollout", "--stack", v2], env, tmp_path)
    assert code == 0, log[-6000:]
    assert "canary 1: fresh-1" in log and "batch 3: fresh-3" in log, log[-3000:]
    assert failed_requests(during_rollout) == {}
    for name in names:
        records = during_rollout[name]
        assert versions_in_order(records) == ["1", "2"], (name, versions_in_order(records))
        first = next(r["classes"] for r in records if r["version"] == "1")
        last = records[-1]
        assert first and last["classes"] == shifted(first), (name, first, last)
        assert served_record(hosts[names.index(name)])["version"] == 2

    # v2 -> v1 through the other engine, under load
    with clients(hosts, fleet_instance, tmp_path) as during_rollback:
        code, log = cnctl(["model", "rollback", "--stack", v2, "--engine", "ansible"], env, tmp_path)
    assert code == 0, log[-6000:]
    assert "still pins model version 2" in " ".join(log.split())
    assert failed_requests(during_rollback) == {}
    for name in names:
        assert versions_in_order(during_rollback[name]) == ["2", "1"], (name, versions_in_order(during_rollback[name]))
        assert served_record(hosts[names.index(name)])["version"] == 1

    # a rollout to an archive Triton refuses: it stops at the canary, which keeps serving v1; the rest never hear of it
    untouched = {h.state.name: served_record(h) for h in hosts[1:]}
    since = len(request_log(fleet_instance))
    with clients(hosts[:1], fleet_instance, tmp_path) as during_broken:
        code, log = cnctl(["model", "rollout", "--stack", broken, "--canary", "1"], env, tmp_path)
    flat = " ".join(log.split())
    assert code == 1, log[-6000:]
    assert "rollout of version 3 stopped at canary 1 (fresh-1):" in flat, log[-6000:]
    assert "fresh-1: pyinfra:" in flat and "refuses to load" in flat, log[-6000:]  # the stand-in's own words, via Triton
    assert "fresh-1: serves version 1 again" in flat and "not touched: fresh-2, fresh-3" in flat, log[-6000:]
    assert failed_requests(during_broken) == {}
    assert versions_in_order(during_broken["fresh-1"]) == ["1"]
    assert served_record(hosts[0])["version"] == 1
    broken_requests = [r for r in request_log(fleet_instance)[since:] if r.get("path", "").endswith("sandbox_standin-broken.zip")]
    assert {r["client"] for r in broken_requests} == {hosts[0].state.address}, broken_requests
    for host in hosts[1:]:
        assert served_record(host) == untouched[host.state.name]
        assert host.ssh(f"sudo test -e {MODEL}/3").returncode != 0

