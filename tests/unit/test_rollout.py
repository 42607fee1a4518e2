"""The model rollout and rollback without a fleet: batch planning (GOOD/BAD tables), the walk driven by a
fake engine and a fake fleet (what each host serves changes only when the fake engine converges it), the
health gate's verdicts from model_serve.py's JSON, and `cnctl model rollout|rollback` exit codes."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

import cnhost
from cnctl import engines
from cnctl import rollout as walks
from cnctl.cli.main import app
from cnctl.engines import DeployResult, EngineFailure, HostResult, Target
from cnctl.errors import UsageProblem
from cnctl.inventory import InventoryHost, Ssh
from cnctl.paths import STACKS_DIR
from cnctl.remote import RemoteOutcome
from cnctl.rollout import HostHealth
from tests.unit import host_python
from tests.unit.shell_shape import commands, shape

HOSTS = ("h1", "h2", "h3", "h4", "h5", "h6")

# --- batch planning ----------------------------------------------------------------------------

# (hosts, canary, percent) -> batches
GOOD_PLANS: list[tuple[Sequence[str], int, int, list[tuple[str, ...]]]] = [
    (HOSTS, 1, 50, [("h1",), ("h2", "h3", "h4"), ("h5", "h6")]),  # 50 % of the 5 after the canary: 3, then 2
    (HOSTS[:3], 1, 50, [("h1",), ("h2",), ("h3",)]),
    (HOSTS, 2, 100, [("h1", "h2"), ("h3", "h4", "h5", "h6")]),
    (HOSTS, 0, 50, [("h1", "h2", "h3"), ("h4", "h5", "h6")]),  # no canary
    (HOSTS, 1, 1, [("h1",), ("h2",), ("h3",), ("h4",), ("h5",), ("h6",)]),  # 1 % of 5 rounds up to one host
    (HOSTS[:1], 1, 50, [("h1",)]),  # the canary is the whole fleet
    (HOSTS[:2], 2, 50, [("h1", "h2")]),
    (("b", "a"), 1, 50, [("b",), ("a",)]),  # the fleet's order, not sorted: the stack names the canary first
]

# (hosts, canary, percent) -> the message's start
BAD_PLANS: list[tuple[Sequence[str], int, int, str]] = [
    (HOSTS[:3], 4, 50, "--canary 4: the selection has 3 host(s) (h1, h2, h3); give 0 to 3"),
    (HOSTS[:3], -1, 50, "--canary -1:"),
    (HOSTS, 1, 0, "--batch 0%: give a percentage from 1% to 100%"),
    (HOSTS, 1, 101, "--batch 101%"),
    ((), 0, 50, "no host to roll out to"),
]


@pytest.mark.parametrize(("hosts", "canary", "percent", "expected"), GOOD_PLANS)
def test_good_plans(hosts: Sequence[str], canary: int, percent: int, expected: list[tuple[str, ...]]) -> None:
    batches = walks.plan_batches(hosts, canary, percent)
    assert [b.hosts for b in batches] == expected
    assert [b.number for b in batches] == list(range(1, len(expected) + 1))
    assert [b.canary for b in batches] == [canary > 0] + [False] * (len(expected) - 1)
    assert [h for b in batches for h in b.hosts] == list(hosts)  # every host exactly once, in order


@pytest.mark.parametrize(("hosts", "canary", "percent", "message"), BAD_PLANS)
def test_bad_plans(hosts: Sequence[str], canary: int, percent: int, message: str) -> None:
    with pytest.raises(UsageProblem) as info:
        walks.plan_batches(hosts, canary, percent)
    assert str(info.value).startswith(message)


@pytest.mark.parametrize(("text", "percent"), [("50%", 50), ("50", 50), (" 100% ", 100), ("1%", 1)])
def test_good_batch_options(text: str, percent: int) -> None:
    assert walks.parse_batch(text) == percent


@pytest.mark.parametrize("text", ["0%", "101%", "abc", "-5%", "50.5%", "%", ""])
def test_bad_batch_options(text: str) -> None:
    with pytest.raises(UsageProblem, match=r"^--batch .*: give a percentage of the hosts after the canary from 1% to 100%"):
        walks.parse_batch(text)


# --- a fake fleet and engine ----------------------------------------------------------------------


@dataclass
class FakeHost:
    """What one host serves. `history` is newest first, as .cnctl-served.json keeps it."""

    served: int | None
    history: list[int] = field(default_factory=list)
    ready: bool = True


@dataclass
class FakeFleet:
    """Hosts whose served version only the fake engine changes. `refuse_load`: the engine fails the host and
    the old version keeps serving (Triton refused the new one); `bad_probe`: the switch happens, then no
    inference is answered; `engine_down`: the engine itself gives no result."""

    hosts: dict[str, FakeHost]
    version: int
    refuse_load: set[str] = field(default_factory=set)
    bad_probe: set[str] = field(default_factory=set)
    engine_down: bool = False
    runs: list[Target] = field(default_factory=list)
    reads: list[tuple[str, ...]] = field(default_factory=list)

    def converge(self, target: Target) -> DeployResult:
        self.runs.append(target)
        if self.engine_down:
            raise EngineFailure("pyinfra exited 1 without a JSON report:\nboom",
                                {"h1": "failed to load 'circularnet' version 2: stand-in refuses"})
        results = []
        for name in target.hosts:
            host = self.hosts[name]
            failed, reason = 0, ""
            if target.overrides[walks.ACTION] == walks.PREVIOUS:
                if host.served == self.version and host.history:
                    host.served, host.history = host.history[0], [self.version, *host.history[1:]]
            elif name in self.refuse_load:
                failed, reason = 1, f"failed to load 'circularnet' version {self.version}: stand-in refuses"
            elif host.served != self.version:
                host.history = [v for v in [host.served, *host.history] if v is not None]
                host.served = self.version
            results.append(HostResult(name, 5, 1, failed, reason))
        return DeployResult("pyinfra", False, results, 1 if any(r.failed for r in results) else 0, 1.0)

    def health(self, names: Sequence[str]) -> dict[str, HostHealth]:
        self.reads.append(tuple(names))
        out = {}
        for name in names:
            host = self.hosts[name]
            status = {"result": "ok", "live": True, "served": host.served, "ready": host.ready,
                      "loaded": [host.served], "history": host.history, "message": ""}
            probe: dict[str, Any]
            if name in self.bad_probe and host.served == self.version:
                probe = {"result": "failed", "message": "[StatusCode.INTERNAL] model stub crashed"}
            else:
                probe = {"result": "ok", "model_version": str(host.served), "outputs": {}, "ms": 12.0}
            out[name] = HostHealth(name, status, probe)
        return out


def fleet_of(n: int, version: int = 2, served: int = 1) -> FakeFleet:
    return FakeFleet({h: FakeHost(served, [0] if served else []) for h in HOSTS[:n]}, version)


def walk_of(fleet: FakeFleet, lines: list[str]) -> walks.Walk:
    base = Target("local", Path("/fleet.py"), Path("/inventory.yml"), tuple(fleet.hosts))
    return walks.Walk(base=base, converge=fleet.converge, health=fleet.health, say=lines.append, sleep=lambda s: None)


def served(fleet: FakeFleet) -> dict[str, int | None]:
    return {name: host.served for name, host in fleet.hosts.items()}


# --- the walk -----------------------------------------------------------------------------------------


def test_a_rollout_converges_batch_after_batch_limited_to_each_batch_with_the_rollout_layers() -> None:
    fleet, lines = fleet_of(6), list[str]()
    batches = walks.plan_batches(tuple(fleet.hosts), 1, 50)
    report = walks.run_rollout(walk_of(fleet, lines), batches, 2, "local")
    assert report.ok, walks.summary(report)
    assert served(fleet) == dict.fromkeys(HOSTS, 2)
    assert [(t.hosts, t.limit) for t in fleet.runs] == [(("h1",), "h1"), (("h2", "h3", "h4"), "h2,h3,h4"), (("h5", "h6"), "h5,h6")]
    assert {(t.layers, t.overrides[walks.ACTION]) for t in fleet.runs} == {(walks.LAYERS, "pinned")}
    assert "batch 2: h2, h3, h4: converging" in "\n".join(lines)
    assert "  h3: ok: version 2 READY, inference answered in 12 ms" in lines
    assert walks.summary(report).startswith("rollout ok: 6 host(s) serve version 2")


def test_a_failed_canary_stops_the_rollout_and_rolls_back_only_the_canary() -> None:
    fleet, lines = fleet_of(3), list[str]()
    fleet.bad_probe = {"h1"}
    report = walks.run_rollout(walk_of(fleet, lines), walks.plan_batches(tuple(fleet.hosts), 1, 50), 2, "local")
    assert not report.ok
    assert served(fleet) == {"h1": 1, "h2": 1, "h3": 1}  # the canary is back on 1, the others never moved
    assert [(t.hosts, t.overrides[walks.ACTION]) for t in fleet.runs] == [(("h1",), "pinned"), (("h1",), "previous")]
    assert all("h2" not in r and "h3" not in r for r in fleet.reads)  # not even read
    text = walks.summary(report)
    assert text.splitlines()[0] == "rollout of version 2 stopped at canary 1 (h1):"
    assert "  h1: health gate: inference failed: [StatusCode.INTERNAL] model stub crashed" in text
    assert "  h1: serves version 1 again (version 1 READY, inference answered in 12 ms)" in text
    assert "not touched: h2, h3" in text
    assert "stay on version" not in text


def test_a_failed_second_batch_rolls_back_that_batch_only_and_says_how_to_take_back_the_first() -> None:
    fleet, lines = fleet_of(6), list[str]()
    fleet.bad_probe = {"h3"}
    report = walks.run_rollout(walk_of(fleet, lines), walks.plan_batches(tuple(fleet.hosts), 1, 50), 2, "local")
    assert not report.ok and report.failed is not None and report.failed.batch.number == 2
    # the whole failed batch returns to 1 (h2 and h4 passed, but a batch goes back together); the canary stays on 2
    assert served(fleet) == {"h1": 2, "h2": 1, "h3": 1, "h4": 1, "h5": 1, "h6": 1}
    assert [t.hosts for t in fleet.runs] == [("h1",), ("h2", "h3", "h4"), ("h2", "h3", "h4")]
    assert fleet.runs[-1].overrides == {walks.ACTION: walks.PREVIOUS}
    text = walks.summary(report)
    assert list(report.failed.failures) == ["h3"]
    assert ("canary 1 (h1) stay on version 2: take them back with `cnctl model rollback --stack local --limit h1`"
            in text)
    assert "not touched: h5, h6" in text


def test_a_host_whose_load_was_refused_keeps_the_old_version_and_gets_no_rollback_run() -> None:
    """The engine failed the host and Triton kept serving 1: the gate names both reasons, the rollback
    only re-checks version 1 (an engine run with `previous` would take it to what it served before 1)."""
    fleet, lines = fleet_of(3), list[str]()
    fleet.refuse_load = {"h1"}
    report = walks.run_rollout(walk_of(fleet, lines), walks.plan_batches(tuple(fleet.hosts), 1, 50), 2, "local")
    assert served(fleet) == {"h1": 1, "h2": 1, "h3": 1}
    assert [t.overrides[walks.ACTION] for t in fleet.runs] == ["pinned"]
    assert report.failed is not None
    assert report.failed.failures["h1"] == ("pyinfra: failed to load 'circularnet' version 2: stand-in refuses; "
                                            "health gate: serves version 1, expected 2")
    assert report.rollback is not None and report.rollback.ok
    assert "  h1: serves version 1 again" in walks.summary(report)


def test_an_engine_that_gives_no_result_fails_every_host_of_the_batch_with_what_its_log_said() -> None:
    fleet, lines = fleet_of(4), list[str]()
    fleet.engine_down = True
    report = walks.run_rollout(walk_of(fleet, lines), walks.plan_batches(tuple(fleet.hosts), 2, 50), 2, "local")
    assert report.failed is not None
    assert report.failed.failures == {
        "h1": "pyinfra: failed to load 'circularnet' version 2: stand-in refuses; health gate: serves version 1, expected 2",
        "h2": "pyinfra: pyinfra exited 1 without a JSON report; health gate: serves version 1, expected 2",
    }
    assert served(fleet) == dict.fromkeys(("h1", "h2", "h3", "h4"), 1)


def test_the_gate_reads_a_failing_host_again_and_a_passing_one_never() -> None:
    fleet, lines = fleet_of(2), list[str]()
    slept: list[float] = []
    fleet.bad_probe = {"h2"}
    walk = walk_of(fleet, lines)
    walk.sleep = slept.append
    fleet.hosts["h1"].served = fleet.hosts["h2"].served = 2
    verdicts = walks.gate(walk, {"h1": 2, "h2": 2})
    assert fleet.reads == [("h1", "h2"), ("h2",), ("h2",)]
    assert slept == [walks.GATE_DELAY_S] * (walks.GATE_ATTEMPTS - 1)
    assert verdicts["h1"].ok and not verdicts["h2"].ok


def test_a_rollback_takes_hosts_on_the_pinned_version_back_and_leaves_the_others() -> None:
    fleet, lines = fleet_of(4), list[str]()
    for name in ("h1", "h2", "h3"):
        fleet.hosts[name].served, fleet.hosts[name].history = 2, [1, 0]
    selection = walks.select_rollback(fleet.health(tuple(fleet.hosts)), 2)
    assert selection.targets == {"h1": 1, "h2": 1, "h3": 1}
    assert selection.skipped == {"h4": "serves version 1, not the pinned 2: left as it is"}
    batches = walks.plan_batches(list(selection.targets), 1, 50)
    report = walks.run_rollback(walk_of(fleet, lines), batches, selection, 2, "local")
    assert report.ok, walks.summary(report)
    assert served(fleet) == dict.fromkeys(("h1", "h2", "h3", "h4"), 1)
    assert {t.overrides[walks.ACTION] for t in fleet.runs} == {walks.PREVIOUS}
    assert "h4" not in {h for t in fleet.runs for h in t.hosts}
    assert "left alone:\n  h4: serves version 1" in walks.summary(report)


def test_a_rollback_refuses_hosts_with_nothing_to_return_to_and_cannot_start_on_unreadable_ones() -> None:
    fleet = FakeFleet({"h1": FakeHost(2), "h2": FakeHost(2)}, 2)  # version 2, nothing served before it
    with pytest.raises(UsageProblem, match="h1, h2 serve.* version 2 with no earlier version to return to"):
        walks.select_rollback(fleet.health(("h1", "h2")), 2)
    with pytest.raises(walks.NotStarted, match=r"cannot tell what h1 \(unreachable: ssh: connect refused\)"):
        walks.select_rollback({"h1": HostHealth("h1", error="unreachable: ssh: connect refused")}, 2)


# --- the gate's verdicts ----------------------------------------------------------------------------


OK_STATUS = {"result": "ok", "live": True, "served": 2, "ready": True, "loaded": [2], "history": [1]}
OK_PROBE = {"result": "ok", "model_version": "2", "outputs": {}, "ms": 9.5}

# (status, probe, error) -> the verdict's detail (ok when it starts with "version 2 READY")
VERDICTS: list[tuple[dict[str, Any], dict[str, Any], str, str]] = [
    (OK_STATUS, OK_PROBE, "", "version 2 READY, inference answered in 10 ms"),
    ({**OK_STATUS, "served": 1, "message": "v2 failed to load"}, OK_PROBE, "", "serves version 1, expected 2 (v2 failed to load)"),
    ({**OK_STATUS, "ready": False, "message": "UNAVAILABLE: loading"}, OK_PROBE, "",
     "version 2 is not READY in Triton: UNAVAILABLE: loading"),
    (OK_STATUS, {"result": "failed", "message": "inference request timed out"}, "", "inference failed: inference request timed out"),
    (OK_STATUS, {**OK_PROBE, "model_version": "1"}, "", "the inference was answered by version 1, expected 2"),
    ({"result": "failed", "live": False, "message": "connection refused"}, {}, "", "Triton is not live: connection refused"),
    ({}, {}, "unreachable: ssh: no route to host", "unreachable: ssh: no route to host"),
]


@pytest.mark.parametrize(("status", "probe", "error", "detail"), VERDICTS)
def test_verdicts(status: dict[str, Any], probe: dict[str, Any], error: str, detail: str) -> None:
    verdict = walks.judge(HostHealth("h1", status, probe, error), 2)
    assert (verdict.ok, verdict.detail) == (detail.startswith("version 2 READY"), detail)


def gate_output(status: str, probe: str) -> str:
    return f"{walks.MARK}status\n{status}\n{walks.MARK}probe\n{probe}\n{walks.MARK}end\n"


def test_the_health_command_output_becomes_status_and_probe_or_the_reason_there_is_none() -> None:
    failed = {"result": "failed", "reason": "probe", "message": "inference on circularnet failed: boom"}
    # model_serve.py prints its message on stderr too when it fails: the JSON line is still found
    out = gate_output(json.dumps(OK_STATUS), f"{json.dumps(failed)}\ninference on circularnet failed: boom")
    health = walks.parse_health("h1", True, out, "")
    assert (health.served, health.history, health.probe, health.error) == (2, (1,), failed, "")
    missing = gate_output("/usr/bin/python3: Error while finding module specification for 'cnhost.model_serve' "
                          "(ModuleNotFoundError: No module named 'cnhost')", "")
    assert walks.parse_health("h1", True, missing, "").error.endswith("(is the inference layer deployed? `cnctl deploy`)")
    assert walks.parse_health("h1", True, gate_output("sudo: a password is required", ""), "").error == \
        "model_serve.py status printed no JSON: sudo: a password is required"
    assert walks.parse_health("h1", False, "", "x\nh1: cannot reach cn@10.0.0.1 over SSH: refused\n").error == \
        "unreachable: h1: cannot reach cn@10.0.0.1 over SSH: refused"
    no_probe = walks.parse_health("h1", True, gate_output(json.dumps(OK_STATUS), "Traceback (most recent call last):\nKeyError"), "")
    assert walks.judge(no_probe, 2).detail == "inference failed: model_serve.py probe printed no JSON: KeyError"


def test_the_health_command_runs_in_a_shell_and_its_output_parses(tmp_path: Path) -> None:
    """The command as a host's shell runs it, with stand-ins for sudo and the script: each part is found."""
    script = tmp_path / "cnhost" / "model_serve.py"  # run as on a host: python3 -m cnhost.model_serve
    script.parent.mkdir()
    (script.parent / "__init__.py").write_text("")
    script.write_text("import json, sys\nprint('noise on stdout')\n"
                      "print(json.dumps({'mode': sys.argv[1], 'args': sys.argv[2:]}))\nprint('said on stderr', file=sys.stderr)\n")
    sudo = tmp_path / "sudo"
    sudo.write_text('#!/bin/sh\n[ "$1" = -n ] && shift\nexec "$@"\n')
    sudo.chmod(0o755)
    host = InventoryHost("a", "servers", Ssh("10.0.0.1", "cn"), {"cn_model_name": "circularnet", "cn_inference_http_port": 8123})
    command = walks.health_command(host).replace(cnhost.HOME, str(tmp_path))
    done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=60, check=False,
                          env=host_python.install(tmp_path))
    health = walks.parse_health("a", True, done.stdout, done.stderr)
    assert health.status == {"mode": "status", "args": ["--url", "http://127.0.0.1:8123", "--repository",
                                                        "/opt/circularnet/models", "--name", "circularnet"]}
    assert health.probe["args"] == ["--url", "http://127.0.0.1:8123", "--name", "circularnet", "--timeout", "30"]


# Values no schema should let through; the command must keep each one a single word all the same.
HOSTILE = ["eth0; touch /tmp/cnctl-pwned", "$(touch /tmp/cnctl-pwned)", "`id`", "a'b\"c", "x\ny", "-rf", "*", "&&", "#"]


def _gate_host(**data: Any) -> InventoryHost:
    return InventoryHost("a", "servers", Ssh("10.0.0.1", "cn"), {"cn_model_name": "circularnet",
                                                                  "cn_inference_http_port": 8000, **data})


@pytest.mark.parametrize("value", HOSTILE)
def test_the_health_command_keeps_every_value_one_word(value: str) -> None:
    """Parsed as bash parses it, the command has the same structure as with benign values, and the value is one
    whole argument of each model_serve.py command (model name, bind interface)."""
    benign = walks.health_command(_gate_host(cn_inference_bind_interface="ens4"))
    hostile = walks.health_command(_gate_host(cn_model_name=value, cn_inference_bind_interface=value))
    assert shape(hostile) == shape(benign)
    status, probe = commands(hostile)[1], commands(hostile)[3]
    assert status[:7] == ["sudo", "-n", "env", "PYTHONPATH=/usr/local/lib/circularnet", "python3", "-m",
                          "cnhost.model_serve"]
    assert status[7:13] == ["status", "--interface", value, "--port", "8000", "--repository"] and status[-1] == value
    assert probe[7:12] == ["probe", "--interface", value, "--port", "8000"] and probe[probe.index("--name") + 1] == value


@pytest.mark.parametrize(("bind", "url"), [
    ("127.0.0.1", "http://127.0.0.1:8000"), ("0.0.0.0", "http://127.0.0.1:8000"), ("", "http://127.0.0.1:8000"),
    ("::", "http://[::1]:8000"), ("::1", "http://[::1]:8000"), ("fd00::5", "http://[fd00::5]:8000"),
    ("fe80::1%eth0", "http://[fe80::1%eth0]:8000"), ("10.20.0.5", "http://10.20.0.5:8000"),
])
def test_the_health_command_reaches_triton_where_it_binds(bind: str, url: str) -> None:
    command = walks.health_command(_gate_host(cn_inference_bind_address=bind))
    assert shape(command) == shape(walks.health_command(_gate_host()))
    assert commands(command)[1][8:10] == ["--url", url]


@pytest.mark.parametrize("bind", ["::1%$(touch /tmp/cnctl-pwned)", "::1%eth0 x", "10.0.0.1; id", "a b"])
def test_a_bind_address_that_is_no_address_stops_before_any_host_is_asked(bind: str) -> None:
    with pytest.raises(UsageProblem, match="host a: cn_inference_bind_address: .* fix inference.bindAddress"):
        walks.health_command(_gate_host(cn_inference_bind_address=bind))


def test_a_bound_interface_is_looked_up_by_the_host_script_not_by_a_shell(tmp_path: Path) -> None:
    """The interface's name reaches model_serve.py as one argument, run by a real shell: nothing in it runs."""
    script, pwned = tmp_path / "cnhost" / "model_serve.py", tmp_path / "pwned"
    script.parent.mkdir()
    (script.parent / "__init__.py").write_text("")
    script.write_text("import json, sys\nprint(json.dumps({'mode': sys.argv[1], 'args': sys.argv[2:]}))\n")
    sudo = tmp_path / "sudo"
    sudo.write_text('#!/bin/sh\n[ "$1" = -n ] && shift\nexec "$@"\n')
    sudo.chmod(0o755)
    interface = f"ens4$(touch {pwned}); touch {pwned} `touch {pwned}`"
    command = walks.health_command(_gate_host(cn_inference_bind_interface=interface)).replace(cnhost.HOME, str(tmp_path))
    assert "$(ip" not in command and "awk" not in command
    done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=60, check=False,
                          env=host_python.install(tmp_path))
    health = walks.parse_health("a", True, done.stdout, done.stderr)
    assert health.status["args"][:4] == ["--interface", interface, "--port", "8000"] and not pwned.exists()


def test_the_health_command_asks_each_hosts_own_triton_and_one_fan_out_serves_hosts_alike() -> None:
    ssh = Ssh("10.0.0.1", "cn")
    hosts = [InventoryHost("a", "servers", ssh, {"cn_model_name": "circularnet", "cn_inference_http_port": 8000,
                                                 "cn_inference_bind_address": "127.0.0.1"}),
             InventoryHost("b", "servers", ssh, {"cn_model_name": "circularnet", "cn_inference_http_port": 8000,
                                                 "cn_inference_bind_address": "0.0.0.0"}),
             InventoryHost("c", "servers", ssh, {"cn_model_name": "circularnet", "cn_inference_http_port": 9000,
                                                 "cn_inference_bind_address": "127.0.0.1"})]
    command = walks.health_command(hosts[0])
    assert "cnhost.model_serve status --url http://127.0.0.1:8000 --repository /opt/circularnet/models --name circularnet" in command
    assert "cnhost.model_serve probe --url http://127.0.0.1:8000 --name circularnet --timeout 30" in command
    calls: list[tuple[list[str], str]] = []

    def run(members: Sequence[InventoryHost], cmd: str, timeout: float) -> dict[str, RemoteOutcome]:
        calls.append(([m.name for m in members], cmd))
        return {m.name: RemoteOutcome(True, 0, gate_output(json.dumps(OK_STATUS), json.dumps(OK_PROBE)), "")
                for m in members}

    read = walks.remote_health(hosts, run=run)(["c", "a", "b"])
    assert list(read) == ["c", "a", "b"]
    assert sorted(names for names, _ in calls) == [["a", "b"], ["c"]]  # 0.0.0.0 is asked on loopback, like a
    assert ":9000" in next(cmd for names, cmd in calls if names == ["c"])


# --- the CLI: exit codes and messages -----------------------------------------------------------


def _prod_stack(tmp_path: Path, *, pinned: bool = True) -> str:
    document = yaml.safe_load((STACKS_DIR / "Pulumi.prod.yaml").read_text())
    if not pinned:
        document["config"]["circularnet:model"].pop("sha256", None)
    path = tmp_path / "Pulumi.prod.yaml"
    path.write_text(yaml.safe_dump(document))
    return str(path)


def _cli(args: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[int, str]:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the run's Ansible inventory goes there
    outcome = CliRunner().invoke(app, ["model", *args])
    assert "Traceback" not in outcome.output
    return outcome.exit_code, " ".join(outcome.output.split())


@pytest.mark.parametrize(("args", "message"), [
    (["rollout", "--limit", "nope"], "--limit nope: no such host or group in the fleet; known: plant-a-belt-1"),
    (["rollback", "--limit", "plant-a-belt-1,nope"], "--limit nope: no such host or group in the fleet"),
    (["rollout", "--canary", "4"], "--canary 4: the selection has 3 host(s) (plant-a-belt-1, plant-a-belt-2, plant-b-gpu-1); give 0 to 3"),
    (["rollout", "--limit", "edge", "--canary", "3"], "--canary 3: the selection has 2 host(s)"),
    (["rollout", "--batch", "0%"], "--batch 0%: give a percentage of the hosts after the canary from 1% to 100%"),
    (["rollback", "--batch", "150"], "--batch 150: give a percentage"),
    (["rollout", "--engine", "chef"], "--engine chef: unknown engine; known: pyinfra, ansible"),
    (["rollout", "UNPINNED"], "model.sha256: must pin the archive's sha256 (upstream publishes none); run `cnctl model pin`"),
    (["rollback", "UNPINNED"], "run `cnctl model pin`"),
])
def test_bad_input_exits_2_naming_the_option_and_the_fix(args: list[str], message: str, monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    stack = _prod_stack(tmp_path, pinned="UNPINNED" not in args)
    args = [a for a in args if a != "UNPINNED"]
    fleet = FakeFleet({}, 1)
    monkeypatch.setitem(engines.ENGINES, "pyinfra", lambda target, **_: fleet.converge(target))
    monkeypatch.setattr(walks, "remote_health", lambda hosts: fleet.health)
    code, output = _cli([*args, "--stack", stack], monkeypatch, tmp_path)
    assert code == 2, output
    assert message in output
    assert fleet.runs == [] and fleet.reads == []


@pytest.fixture
def prod_fleet(monkeypatch: pytest.MonkeyPatch) -> FakeFleet:
    """The prod stack's three hosts as a fake fleet serving version 0 (the stack pins 1)."""
    fleet = FakeFleet({h: FakeHost(0) for h in ("plant-a-belt-1", "plant-a-belt-2", "plant-b-gpu-1")}, 1)
    monkeypatch.setitem(engines.ENGINES, "pyinfra", lambda target, **_: fleet.converge(target))
    monkeypatch.setattr(walks, "remote_health", lambda hosts: fleet.health)
    return fleet


def test_a_dry_rollout_prints_the_plan_and_reaches_no_host(prod_fleet: FakeFleet, monkeypatch: pytest.MonkeyPatch,
                                                           tmp_path: Path) -> None:
    code, output = _cli(["rollout", "--stack", _prod_stack(tmp_path), "--dry"], monkeypatch, tmp_path)
    assert code == 0, output
    assert "canary 1: plant-a-belt-1 batch 2: plant-a-belt-2 batch 3: plant-b-gpu-1" in output
    assert prod_fleet.runs == [] and prod_fleet.reads == []
    assert {h.served for h in prod_fleet.hosts.values()} == {0}


def test_a_rollout_exits_0_when_every_batch_passes_and_1_naming_the_host_when_one_fails(
        prod_fleet: FakeFleet, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    stack = _prod_stack(tmp_path)
    prod_fleet.bad_probe = {"plant-a-belt-2"}
    code, output = _cli(["rollout", "--stack", stack], monkeypatch, tmp_path)
    assert code == 1, output
    assert "failed: rollout of version 1 stopped at batch 2 (plant-a-belt-2):" in output
    assert "plant-a-belt-2: health gate: inference failed: [StatusCode.INTERNAL] model stub crashed" in output
    assert f"`cnctl model rollback --stack {stack} --limit plant-a-belt-1`" in output
    assert "not touched: plant-b-gpu-1" in output

    prod_fleet.bad_probe = set()
    code, output = _cli(["rollout", "--stack", stack], monkeypatch, tmp_path)
    assert code == 0, output
    assert "rollout ok: 3 host(s) serve version 1" in output


def test_a_rollback_warns_that_the_stack_still_pins_the_version(prod_fleet: FakeFleet, monkeypatch: pytest.MonkeyPatch,
                                                                tmp_path: Path) -> None:
    stack = _prod_stack(tmp_path)
    prod_fleet.hosts["plant-a-belt-1"] = FakeHost(1, [0])
    code, output = _cli(["rollback", "--stack", stack, "--dry"], monkeypatch, tmp_path)
    assert code == 0 and prod_fleet.runs == [], output
    assert "plant-a-belt-1: version 1 -> 0" in output
    code, output = _cli(["rollback", "--stack", stack], monkeypatch, tmp_path)
    assert code == 0, output
    assert prod_fleet.hosts["plant-a-belt-1"].served == 0
    assert [t.hosts for t in prod_fleet.runs] == [("plant-a-belt-1",)]
    assert "plant-a-belt-2: serves version 0, not the pinned 1: left as it is" in output
    assert (f"warning: stack {stack} still pins model version 1: the next `cnctl deploy` or `cnctl model rollout` "
            "serves it again unless the stack is re-pinned") in output
    code, output = _cli(["rollback", "--stack", stack], monkeypatch, tmp_path)
    assert code == 0 and "nothing to roll back: no selected host serves version 1" in output
