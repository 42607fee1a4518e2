"""cnctl.status: the fleet's health from each host's answer to one remote command.

A host's answer (reachable, stdout, stderr) in, its HostStatus out, as data; the remote command itself run
with sh on this machine against a stand-in script and saved report; the hosts a stack gives (fleets, cloud
VMs from recorded stack outputs, --limit), with the SSH fan-out replaced by a fake."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from cnctl import status
from cnctl.errors import UsageProblem
from cnctl.inventory import InventoryHost, Ssh
from cnctl.remote import RemoteOutcome
from cnctl.status import FleetStatus, HostStatus, collect, collect_from, host_status, remote_command
from cnhost.health_report import DEFAULTS, judge
from tests.unit import host_python
from tests.unit.shell_shape import shape
from tests.unit.test_verify_report import HEALTHY, observed

OUTPUTS = Path(__file__).parent / "samples" / "dev-outputs.json"
HOST = InventoryHost("gpu-server-1", "servers", Ssh(address="10.0.0.5", user="deploy"))
GOOD = judge(HEALTHY, DEFAULTS)
BAD = judge(observed(triton_metadata=None, model_serve=None), DEFAULTS)


def answer(stdout: str = "", stderr: str = "", reachable: bool = True) -> RemoteOutcome:
    return RemoteOutcome(reachable, 0 if reachable else 255, stdout, stderr)


def test_a_healthy_report_is_a_healthy_host() -> None:
    found = host_status(HOST, answer("Warning: something on stdout first\n" + json.dumps(GOOD) + "\n"))
    assert found == HostStatus("gpu-server-1", "servers", True, True, (), "fresh", GOOD)


def test_an_unhealthy_report_carries_its_problems() -> None:
    found = host_status(HOST, answer(json.dumps(BAD) + "\n"))
    assert (found.reachable, found.healthy, found.source) == (True, False, "fresh")
    assert found.problems == tuple(BAD["problems"]) and any("Triton not answering" in p for p in found.problems)


def test_an_unreachable_host_is_unhealthy_and_says_why() -> None:
    found = host_status(HOST, answer(stderr="gpu-server-1: cannot reach deploy@10.0.0.5 over SSH: No route to host\n",
                                     reachable=False))
    assert (found.reachable, found.healthy, found.report) == (False, False, None)
    assert found.problems == ("unreachable: gpu-server-1: cannot reach deploy@10.0.0.5 over SSH: No route to host",)


def test_a_script_that_cannot_run_falls_back_to_the_last_report_and_the_host_is_unhealthy() -> None:
    saved = {**GOOD, "checked": "2026-11-29T08:00:00+00:00"}
    stdout = f"{status._SAVED}\n{json.dumps(saved, indent=2)}\n"
    found = host_status(HOST, answer(stdout, stderr="Traceback (most recent call last):\nSyntaxError: bad\n"))
    assert (found.healthy, found.source, found.report) == (False, "saved", saved)
    assert found.problems == (
        "the health report could not run now (SyntaxError: bad): showing the last report, of 2026-11-29T08:00:00+00:00",)


def test_no_script_and_no_saved_report_says_the_verify_layer_has_not_run() -> None:
    stderr = f"no {status.SCRIPT}: {status._MISSING}\n"
    found = host_status(HOST, answer(f"{status._SAVED}\n", stderr))
    assert found.problems == (f"no {status.SCRIPT}: the verify layer has not run here; run the deploy",)
    assert (found.healthy, found.source) == (False, "none")


def test_a_report_claiming_health_with_problems_is_not_believed() -> None:
    found = host_status(HOST, answer(json.dumps({**GOOD, "problems": ["disk full"]})))
    assert not found.healthy


# --- the remote command, run here -------------------------------------------------------------------------------


def _remote(tmp_path: Path, script: str | None, saved: dict[str, Any] | None) -> RemoteOutcome:
    path = tmp_path / "cnhost" / "health_report.py"  # run as on a host: python3 -m cnhost.health_report
    path.parent.mkdir()
    (path.parent / "__init__.py").write_text("")
    if script is not None:
        path.write_text(script)
    last = tmp_path / "health.json"
    if saved is not None:
        last.write_text(json.dumps(saved, indent=2))
    proc = subprocess.run(["sh", "-c", remote_command(str(path), str(last))], capture_output=True, text=True,
                          timeout=60, check=False, env=host_python.install(tmp_path))
    assert proc.returncode == 0  # always: only SSH itself may exit 255
    return RemoteOutcome(True, proc.returncode, proc.stdout, proc.stderr)


def test_the_remote_command_runs_the_script_read_only(tmp_path: Path) -> None:
    script = ("import json, sys\nassert sys.argv[1:] == ['--read-only'], sys.argv\n"
              f"print(json.dumps({BAD!r}))\nsys.exit(1)\n")
    found = host_status(HOST, _remote(tmp_path, script, saved=GOOD))
    assert (found.source, found.report, found.healthy) == ("fresh", BAD, False)  # exit 1 is a report, not a failure


def test_the_remote_command_shows_the_saved_report_when_the_script_crashes(tmp_path: Path) -> None:
    found = host_status(HOST, _remote(tmp_path, "raise RuntimeError('broken settings')\n", saved=GOOD))
    assert (found.source, found.report) == ("saved", GOOD)
    assert found.problems[0].startswith("the health report could not run now (RuntimeError: broken settings): "
                                        "showing the last report, of ")


def test_the_remote_command_on_a_host_without_the_verify_layer(tmp_path: Path) -> None:
    found = host_status(HOST, _remote(tmp_path, None, saved=None))
    assert found.problems == (f"no {tmp_path / 'cnhost' / 'health_report.py'}: the verify layer has not run here; run the deploy",)


def test_the_remote_command_keeps_its_paths_one_word_whatever_they_hold(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Parsed as bash parses it, the command keeps its structure, and run by a shell it reaches the script in a
    directory whose name is shell syntax, running none of it."""
    monkeypatch.chdir(tmp_path)  # where the shell would touch the file
    pwned = tmp_path / "pwned"
    where = tmp_path / "a b;$(touch pwned)`touch pwned`'\"&&#"
    where.mkdir()
    assert shape(remote_command(str(where / "cnhost" / "health_report.py"), str(where / "h.json"))) == \
        shape(remote_command())
    script = f"import json\nprint(json.dumps({BAD!r}))\n"
    found = host_status(HOST, _remote(where, script, saved=GOOD))
    assert (found.source, found.report) == ("fresh", BAD) and not pwned.exists()


# --- which hosts, and the fan-out ---------------------------------------------------------------------------------


class FakeRemote:
    """Stands in for cnctl.remote.run_on_hosts: each host answers what `answers` says (healthy by default)."""

    def __init__(self, answers: dict[str, RemoteOutcome] | None = None) -> None:
        self.answers = answers or {}
        self.calls: list[tuple[list[InventoryHost], str, float]] = []

    def __call__(self, hosts: Sequence[InventoryHost], command: str, timeout: float) -> dict[str, RemoteOutcome]:
        self.calls.append((list(hosts), command, timeout))
        return {h.name: self.answers.get(h.name, answer(json.dumps(GOOD))) for h in hosts}


@pytest.fixture
def dev_outputs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNCTL_OUTPUTS", str(OUTPUTS))
    monkeypatch.setenv("CNCTL_SSH_USER", "deploy_example_com")


def test_a_stack_with_cloud_vms_asks_its_fleet_and_its_vms_at_once(dev_outputs: None) -> None:
    remote = FakeRemote({"cn-dev-gpu-1-81b5": answer(reachable=False, stderr="timed out")})
    fleet = collect("dev", run=remote, timeout=5)
    [(hosts, command, timeout)] = remote.calls
    assert [h.name for h in hosts] == ["belt-1-orin", "cn-dev-gpu-0-81b5", "cn-dev-gpu-1-81b5"]
    assert hosts[1].ssh.proxy_command and "start-iap-tunnel cn-dev-gpu-0-81b5" in hosts[1].ssh.proxy_command
    assert command == remote_command() and timeout == 5
    assert fleet.stack == "dev" and not fleet.healthy and fleet.unhealthy == ["cn-dev-gpu-1-81b5"]


def test_limit_names_one_host_or_a_group_and_a_fleet_host_needs_no_cloud_outputs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNCTL_OUTPUTS", "/nonexistent/outputs.json")  # would fail if the VMs were looked up
    remote = FakeRemote()
    assert [h.name for h in collect("prod", "plant-a-belt-2", run=remote).hosts] == ["plant-a-belt-2"]
    assert [h.name for h in collect("prod", "edge", run=remote).hosts] == ["plant-a-belt-1", "plant-a-belt-2"]
    assert remote.calls[0][0][0].ssh == Ssh(address="10.40.1.22", user="circularnet")  # the fleet entry's


def test_an_unknown_limit_is_bad_input_naming_the_known_hosts(dev_outputs: None) -> None:
    with pytest.raises(UsageProblem, match=r"--limit nope: no such host or group in stack dev; known: belt-1-orin, "
                                            r"cn-dev-gpu-0-81b5, cn-dev-gpu-1-81b5, cloud, edge"):
        collect("dev", "nope", run=FakeRemote())


def test_the_local_stack_without_a_sandbox_up_is_bad_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNCTL_FLEET_FILE", str(tmp_path / "none" / "fleet.json"))
    with pytest.raises(UsageProblem, match="the sandbox is not up"):
        collect("local", run=FakeRemote())


def test_the_fleets_json_lists_every_host_with_its_report() -> None:
    fleet = collect_from("x", [HOST], FakeRemote())
    assert isinstance(fleet, FleetStatus)
    data = json.loads(json.dumps(fleet.to_json()))
    assert data == {"stack": "x", "source": "ssh", "origin": None, "healthy": True, "unhealthy": [], "hosts": [
        {"name": "gpu-server-1", "group": "servers", "reachable": True, "healthy": True, "problems": [],
         "source": "fresh", "report": GOOD, "origin": None}]}
