"""The engines without a fleet: both render the shared templates to the same bytes, their reports become
the same per-host results, and `cnctl deploy` refuses what it cannot reach with exit 2.

Rendering goes through each engine's real machinery: pyinfra's template loader, and Ansible's template
module run by ansible-playbook on localhost (trim_blocks on, Ansible's own Jinja2 environment).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from cnctl.cli.main import app
from cnctl.engines import ansible, pyinfra
from cnctl.engines import target as target_module
from cnctl.engines.result import EngineFailure, HostResult
from cnctl.engines.target import Target, TargetProblem
from cnctl.inventory import InventoryHost, Ssh
from cnctl.paths import REPO_ROOT
from cnctl.sandbox.flavours import nv_tegra_release
from cnctl.sandbox.instance import Instance
from cnctl.sandbox.inventory import publish
from cnctl.sandbox.layout import HostSpec
from cnctl.sandbox.state import FleetState, HostState, save
from tests.unit.render_parity import by_ansible, by_pyinfra
from tests.unit.unsafe_yaml import plain_strings, unsafe_load

REPO = REPO_ROOT
BIN = Path(sys.executable).parent
SERVER_FACTS = {"architecture": "x86_64", "dpkg_architecture": "amd64", "nv_tegra_release": None,
                "os": {"id": "debian", "version_id": "12"}}
JETSON_FACTS = {"architecture": "aarch64", "dpkg_architecture": "arm64",
                "nv_tegra_release": nv_tegra_release("36.4.3").splitlines()[0], "os": {"id": "ubuntu", "version_id": "22.04"}}
SOURCES = {
    "description": "The sandbox site's apt repository (STAND-IN NVIDIA packages)",
    "sources": [
        {"uri": "http://172.31.254.2:8080/apt/", "suite": "/", "signed_by": "/etc/apt/keyrings/cnctl-sandbox.gpg"},
        {"uri": "https://repo.download.nvidia.com/jetson/common", "suite": "r36.4", "components": ["main"],
         "signed_by": "/etc/apt/trusted.gpg.d/jetson-ota-public.asc", "arch": "arm64"},
    ],
}
# (template under templates/, its variables)
# templates/systemd/circularnet-triton.service.j2's variables as deploy/inference.py `unit_variables` gives them.
TRITON_UNIT = {
    "image": "nvcr.io/nvidia/tritonserver:24.03-py3", "docker": "/usr/bin/docker",
    "triton_server": "/opt/circularnet/triton/lib/python3.11/site-packages/pytriton/tritonserver",
    "triton_libs": "/opt/circularnet/triton/lib/python3.11/site-packages/nvidia_pytriton.libs",
    "model_repository": "/opt/circularnet/models", "model_name": "circularnet", "bind_address": "127.0.0.1",
    "http_port": 8000, "grpc_port": 8001, "metrics_port": 8002,
    "helper": "/usr/local/lib/circularnet/cnhost/model_serve.py", "programs": "/usr/local/lib/circularnet",
    "url": "http://127.0.0.1:8000", "container_name": "circularnet-triton", "start_timeout": 180, "start_limit": 210,
    "shm_size": "256m", "container_user": "1000:1000",
}

RENDERINGS: list[tuple[str, dict[str, Any]]] = [
    ("apt/source.list.j2", SOURCES),
    # the host layers' files (tests/unit/test_layers_templates.py checks every template is listed here)
    ("apt/preferences.j2", {"description": "NVIDIA driver and CUDA toolkit", "pins": [
        {"packages": ["cuda-drivers-550", "nvidia-driver-550"], "version": "550.90.07-*"},
        {"packages": ["cuda-toolkit-12-4"], "version": "12.4.1-1"}]}),
    ("apt/preferences.j2", {"description": "nothing pinned", "pins": []}),
    ("docker/daemon.json.j2", {"data_root": "/var/lib/docker", "log_max_size": "10m", "log_max_files": 3,
                               "registry_mirrors": []}),
    ("docker/daemon.json.j2", {"data_root": "/srv/docker", "log_max_size": "50m", "log_max_files": 5,
                               "registry_mirrors": ["https://mirror.plant.local", "http://10.0.0.5:5000"]}),
    ("modprobe/blacklist-nouveau.conf.j2", {}),
    ("systemd/jetson-clocks.service.j2", {"jetson_clocks": "/usr/bin/jetson_clocks"}),
    ("platform/facts.json.j2", {"platform_record": {
        "host": "belt-1-orin", "platform": "jetson", "os": {"id": "debian", "version": "12", "codename": "bookworm"},
        "dpkg_architecture": "arm64", "l4t": "36.3.0",
        "os_substitution": {"id": "debian", "version": "12", "codename": "bookworm", "repo_distro": None}}}),
    ("triton/config.pbtxt.j2", {"model_name": "circularnet", "platform": "python", "max_batch_size": 0}),
    ("triton/config.pbtxt.j2", {"model_name": "circularnet", "platform": "tensorflow_savedmodel", "max_batch_size": 0}),
    ("platform/facts.json.j2", {"platform_record": {
        "host": "gpu-server-1", "platform": "server", "os": {"id": "ubuntu", "version": "22.04", "codename": "jammy"},
        "dpkg_architecture": "amd64", "l4t": None, "os_substitution": None}}),
    *(("systemd/circularnet-triton.service.j2", TRITON_UNIT | {"runtime": runtime}) for runtime in ("container", "native")),
    ("triton/requirements.txt.j2", {"wheels": [
        {"name": "nvidia-pytriton", "version": "0.7.0", "sha256": ["a" * 64, "b" * 64]},
        {"name": "numpy", "version": "1.26.4", "sha256": ["c" * 64]}]}),
]


def test_pyinfra_and_ansible_render_every_shared_template_to_the_same_bytes(tmp_path: Path) -> None:
    assert by_pyinfra(RENDERINGS) == by_ansible(RENDERINGS, tmp_path)


# --- engine reports -> per-host results --------------------------------------------------------


def _op(**outcomes: list[str]) -> dict[str, Any]:
    return {"success": [], "no_change": [], "error": [], **outcomes}


def test_a_pyinfra_run_report_counts_like_an_ansible_recap() -> None:
    report = {"results": {
        "operations": [_op(success=["a"], no_change=["b"]), _op(no_change=["a"], error=["b"])],
        "failed_hosts": ["b"],
    }}
    results = {h.host: (h.ok, h.changed, h.failed) for h in pyinfra.result_hosts(report, ("a", "b", "c"))}
    assert results == {"a": (2, 1, 0), "b": (1, 0, 1), "c": (0, 0, 1)}  # c: never reached, so failed


def test_a_pyinfra_dry_run_counts_would_change_and_fails_hosts_it_never_got_ready() -> None:
    report = {"plan": [{"hosts_with_change": ["a"], "hosts_with_conditional_change": []},
                       {"hosts_with_change": [], "hosts_with_conditional_change": ["a", "b"]}], "results": None}
    results = {h.host: (h.ok, h.changed, h.failed) for h in pyinfra.plan_hosts(report, ("a", "b", "c"), {"a", "b"})}
    assert results == {"a": (None, 2, 0), "b": (None, 1, 0), "c": (None, 0, 1)}


def test_an_ansible_recap_counts_unreachable_and_missing_hosts_as_failed() -> None:
    stats = {"ok": {"a": 11, "b": 1}, "changed": {"a": 4}, "failures": {}, "dark": {"b": 1}, "processed": {"a": 1, "b": 1}}
    results = {h.host: (h.ok, h.changed, h.failed) for h in ansible.stats_hosts(stats, ("a", "b", "c"))}
    assert results == {"a": (11, 4, 0), "b": (1, 0, 1), "c": (0, 0, 1)}


def test_ansible_runs_with_host_key_checking_on_and_everything_in_its_temp_dir(tmp_path: Path) -> None:
    """ansible-runner turns host key checking off unless told otherwise; the inventories pin known_hosts."""
    env = ansible.envvars(tmp_path, Path("/collections"))
    assert env["ANSIBLE_HOST_KEY_CHECKING"] == "True"
    assert env["ANSIBLE_COLLECTIONS_PATH"] == "/collections" and "ANSIBLE_ROLES_PATH" not in env
    assert env["PATH"].split(os.pathsep)[0] == str(BIN)
    for key in ("ANSIBLE_HOME", "ANSIBLE_LOCAL_TEMP", "ANSIBLE_SSH_CONTROL_PATH_DIR"):
        assert Path(env[key]).is_relative_to(tmp_path), key


def test_the_pyinfra_command_line() -> None:
    target = Target("local", REPO / "hosts" / "fleet.py", Path("/x/inventory.yml"), ("a",), limit="a")
    assert pyinfra.command(target, dry=True)[1:] == ["--json", "--dry", "--diff", "--limit", "a", str(REPO / "hosts" / "fleet.py"), "deploy.py"]
    assert pyinfra.command(target, dry=False)[1:4] == ["--json", "-y", "--limit"]


# --- cnctl deploy refuses what it cannot reach (exit 2, no traceback) ------------------------------


def _deploy(args: list[str], monkeypatch: pytest.MonkeyPatch, state: Path) -> tuple[int, str]:
    monkeypatch.setenv("CNCTL_FLEET_FILE", str(state / "fleet.json"))
    outcome = CliRunner().invoke(app, ["deploy", *args])
    assert "Traceback" not in outcome.output
    return outcome.exit_code, " ".join(outcome.output.split())


def _fake_sandbox(state_dir: Path) -> None:
    """What a sandbox that is up leaves: its state and fleet file (nothing runs: enough for the checks before
    any engine)."""
    key = state_dir / "id_ed25519"
    state_dir.mkdir(parents=True)
    key.write_text("not a key\n")
    hosts = [HostState(HostSpec("belt-1-orin", "edge", "jetson", "172.31.9.11", jetpack="6.0", l4t="36.3.0"), "ns", "/m")]
    state = FleetState(prefix="cnut", state_dir=str(state_dir), stack="local", subnet="172.31.9.0/24", machine_address="172.31.9.1",
                       site_address="172.31.9.2", site_netns="cnut-site", uplink="cnut-up", images={"amd64": "/i"}, ssh_key=str(key),
                       known_hosts=str(state_dir / "known_hosts"), phase="up", hosts=hosts,
                       inventories={"ansible": str(state_dir / "inventory.yml")})
    inst = Instance(prefix="cnut", state_dir=state_dir)
    save(inst, state)
    publish(inst, state)


@pytest.mark.parametrize(("args", "message"), [
    (["--engine", "chef"], "--engine chef: unknown engine; known: pyinfra, ansible"),
    (["--stack", "EMPTY"], "stack prod: fleets.edge and fleets.servers list no host to deploy to"),
    (["--stack", "EMPTY", "--engine", "ansible"], "stack prod: fleets.edge and fleets.servers list no host to deploy to"),
    (["--stack", "local"], "no fleet file "),
])
def test_deploy_exits_2_when_there_is_nothing_to_reach(args: list[str], message: str, monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    if "EMPTY" in args:  # a real stack whose fleets list no host
        document = yaml.safe_load((REPO / "stacks" / "Pulumi.prod.yaml").read_text())
        document["config"]["circularnet:fleets"] = {"edge": [], "servers": []}
        (tmp_path / "Pulumi.prod.yaml").write_text(yaml.safe_dump(document))
        args = [str(tmp_path / "Pulumi.prod.yaml") if a == "EMPTY" else a for a in args]
    code, output = _deploy(args, monkeypatch, tmp_path / "no-sandbox")
    assert code == 2, output
    assert message in output
    if "fleet file" in message:
        assert "the sandbox is not up; run `cnctl sandbox up` or `make demo`" in output


def test_deploy_exits_2_for_a_host_the_sandbox_does_not_have(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _fake_sandbox(tmp_path / "state")
    code, output = _deploy(["--limit", "nope", "--engine", "ansible"], monkeypatch, tmp_path / "state")
    assert code == 2, output
    assert "--limit nope: no such host or group in the fleet; known: belt-1-orin, edge" in output


# --- per-run overrides, layers and comma limits (the model rollout's batches) ------------------------

ROLLOUT_LAYERS = ("model", "inference", "verify")


def _batch_target(**changes: Any) -> Target:
    base = Target("local", REPO / "hosts" / "fleet.py", Path("/x/inventory.yml"), ("a", "b"), limit="a,b",
                  extravars={"cn_stack": "local", "cn_model_action": "pinned"},
                  overrides={"cn_model_action": "previous", "n": 1, "s": "1", "flag": True, "nothing": None},
                  layers=ROLLOUT_LAYERS)
    return replace(base, **changes)


def test_pyinfra_gets_one_limit_per_host_and_overrides_that_keep_their_type() -> None:
    """pyinfra's --limit takes one name each time ("a,b" would match no host), and it turns a --data value
    into a bool/int/JSON where it can: every value goes as JSON, so each arrives exactly as given. pyinfra's
    own parser runs in a child process: importing pyinfra_cli monkey-patches this process with gevent, after
    which asyncio code here (Pulumi's mock engine) hangs."""
    argv = pyinfra.command(_batch_target(), dry=False)
    assert argv[1:7] == ["--json", "-y", "--limit", "a", "--limit", "b"]
    data = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--data"]
    parse = ("import json, sys\nfrom pyinfra_cli.util import parse_cli_arg\n"
             "print(json.dumps({d.split('=', 1)[0]: parse_cli_arg(d.split('=', 1)[1]) for d in sys.argv[1:]}))")
    child = subprocess.run([sys.executable, "-c", parse, *data], capture_output=True, text=True, check=True, timeout=120)
    parsed = json.loads(child.stdout)
    assert parsed == {"cn_model_action": "previous", "n": 1, "s": "1", "flag": True, "nothing": None}
    assert [type(v) for v in parsed.values()] == [str, int, str, bool, type(None)]
    assert argv[-2:] == [str(REPO / "hosts" / "fleet.py"), "deploy.py"]


def test_pyinfra_names_the_layers_in_its_environment_only_when_the_target_does(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CNCTL_LAYERS", raising=False)
    assert pyinfra.environment(_batch_target())["CNCTL_LAYERS"] == "model,inference,verify"
    assert "CNCTL_LAYERS" not in pyinfra.environment(_batch_target(layers=None))


def test_a_deploy_target_gives_the_same_command_line_as_before() -> None:
    """`cnctl deploy` sets neither overrides nor layers: no --data, one --limit, every layer."""
    target = Target("local", REPO / "hosts" / "fleet.py", Path("/x/inventory.yml"), ("a",), limit="a")
    assert pyinfra.command(target, dry=False)[1:] == ["--json", "-y", "--limit", "a", str(REPO / "hosts" / "fleet.py"), "deploy.py"]
    args = ansible.runner_args(target, Path("/w"), dry=False)
    assert (args["limit"], args["tags"], args["cmdline"]) == ("a", None, None) and ansible.extravars(target) == {}


def test_ansible_gets_the_batch_as_its_limit_the_layers_as_tags_and_overrides_over_the_stack_values(tmp_path: Path) -> None:
    args = ansible.runner_args(_batch_target(), tmp_path, dry=True)
    assert args["limit"] == "a,b"
    assert args["tags"] == "model,inference,verify"
    assert args["cmdline"] == "--check --diff"
    # The extra vars: a file in the run's env/ (ansible-runner passes it as -e @file), never a dict, which it would
    # write as JSON on the command line, where no value can be marked as data.
    assert "extravars" not in args
    written = ansible.write_extravars(_batch_target(), tmp_path)
    assert written == tmp_path / "env" / "extravars"
    extra = unsafe_load(written.read_text())
    assert extra["cn_model_action"] == "previous"  # the stack's "pinned" loses to the run's override
    assert extra["cn_stack"] == "local" and extra["s"] == "1" and extra["n"] == 1 and extra["flag"] is True
    assert extra["nothing"] is None and plain_strings(written.read_text()) == []


def test_ansible_runner_passes_the_extra_vars_file_to_ansible_playbook(tmp_path: Path) -> None:
    """ansible-runner's own command line for the run: `-e @<workdir>/env/extravars` and no JSON extra vars."""
    from ansible_runner.config.runner import RunnerConfig

    target = _batch_target()
    ansible.write_extravars(target, tmp_path)
    args = ansible.runner_args(target, tmp_path, dry=False)
    config = RunnerConfig(**{k: v for k, v in args.items() if k not in ("quiet",)})
    config.prepare()
    argv = config.command
    e_values = [argv[i + 1] for i, arg in enumerate(argv) if arg == "-e"]
    assert e_values == [f"@{tmp_path / 'env' / 'extravars'}"], argv


def test_a_comma_limit_selects_hosts_in_the_fleets_order_and_names_an_unknown_part() -> None:
    ssh = Ssh("10.0.0.1", "cn")
    hosts = [InventoryHost("e1", "edge", ssh), InventoryHost("s1", "servers", ssh), InventoryHost("s2", "servers", ssh)]
    assert target_module._in_scope(hosts, "s2, e1") == ("e1", "s2")
    assert target_module._in_scope(hosts, "servers,e1") == ("e1", "s1", "s2")
    assert target_module._in_scope(hosts, None) == ("e1", "s1", "s2")
    with pytest.raises(TargetProblem, match=r"^--limit nope: no such host or group in the fleet; known: e1, s1, s2, edge, servers$"):
        target_module._in_scope(hosts, "s1,nope")


PYINFRA_FAILED_LOG = """\
--> Starting operation: Model: the pinned version in the repository
    [s1] Success
    [s2] download cut (connection closed early) after 0 bytes
    [s2] Error: executed 0 commands
--> Starting operation: Inference: serve the pinned version
    [s1] {"changed": false, "message": "Triton did not load circularnet version 3: stand-in refuses\\n\\nAt:\\n  model.py(78)", "reason": "load", "result": "failed"}
    [s1] Triton did not load circularnet version 3: stand-in refuses
    [s1] At:
    [s1] Error: executed 0 commands
--> Starting operation: Verify
    [s4] Error: executed 0 commands
    [s3] Could not connect (Connection refused)
"""


def test_a_failed_pyinfra_host_gets_the_output_of_its_failed_operation_as_its_reason() -> None:
    reasons = pyinfra.failure_reasons(PYINFRA_FAILED_LOG.splitlines(keepends=True))
    assert reasons == {
        "s2": "download cut (connection closed early) after 0 bytes",
        "s1": "Triton did not load circularnet version 3: stand-in refuses",  # the script's JSON message, once
        "s4": "Error: executed 0 commands",  # it printed nothing else
        "s3": "Could not connect (Connection refused)",
    }
    hosts = pyinfra.with_reasons([HostResult("s1", 3, 1, 1), HostResult("s4", 2, 0, 0)], reasons)
    assert [h.reason for h in hosts] == [reasons["s1"], ""]


def test_a_failed_or_unreachable_ansible_task_is_the_hosts_reason_and_an_ignored_one_is_not() -> None:
    def event(kind: str, **data: Any) -> dict[str, Any]:
        return {"event": kind, "event_data": {"host": "s1", "task": "inference : serve", **data}}

    failed = event("runner_on_failed", res={"msg": "non-zero return code", "stderr": "a\nb\nTriton: failed to load"})
    assert ansible.failure_reason(failed) == ("s1", "inference : serve: non-zero return code: a; b; Triton: failed to load")
    assert ansible.failure_reason(event("runner_on_unreachable", res={"msg": "ssh: connect refused"})) == \
        ("s1", "inference : serve: ssh: connect refused")
    assert ansible.failure_reason(event("runner_on_failed", ignore_errors=True, res={"msg": "x"})) is None
    assert ansible.failure_reason(event("runner_on_ok", res={})) is None


def test_when_pyinfra_writes_no_report_the_result_is_read_from_its_log(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """pyinfra prints no JSON when every host failed: the run's result comes from its log, each host with its
    reason (no exception, so `cnctl deploy` still ends with the per-host table)."""
    fake = tmp_path / "pyinfra"
    fake.write_text("#!/bin/sh\ncat >&2 <<'LOG'\n" + PYINFRA_FAILED_LOG + "LOG\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr(pyinfra, "BIN", tmp_path)
    result = pyinfra.run(_batch_target(hosts=("s1", "s2", "s3", "s4")), echo=False)
    assert not result.ok and result.returncode == 1
    assert result.failed_hosts == ["s1", "s2", "s3", "s4"]
    assert result.reason("s1") == "Triton did not load circularnet version 3: stand-in refuses"
    assert result.reason("s3") == "Could not connect (Connection refused)"


def test_a_pyinfra_that_exits_0_without_a_report_is_an_engine_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "pyinfra"
    fake.write_text("#!/bin/sh\necho 'half a report' >&2\nexit 0\n")
    fake.chmod(0o755)
    monkeypatch.setattr(pyinfra, "BIN", tmp_path)
    with pytest.raises(EngineFailure, match=r"^pyinfra exited 0 without a JSON report:\nhalf a report$"):
        pyinfra.run(_batch_target(), echo=False)
