"""The pull layer in both engines (deploy/pull.py, roles/pull): the same templates rendered to the same bytes,
units systemd accepts silently with the hardening a root configuration agent keeps, the agent's settings with
exactly their keys, role inputs stopped by argument_specs naming them, the push-host branch (one fact read,
nothing else), the refusal (one failing operation), the agent tree equal to its list, and the wiring."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from cnctl.bundle import contents
from cnctl.config import load_stack
from cnctl.hostvars import host_vars
from deploy import pull
from deploy.rules import pull as pull_rules
from deploy.steps import role_data
from tests.unit import collection_tree
from tests.unit.render_parity import by_ansible, by_pyinfra, render
from tests.unit.test_layers_roles import assert_bad_inputs_named

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TEMPLATES = REPO / "templates"
ROLE = REPO / "roles" / "pull"
SIGNER = {"identity": "release@plant",
          "public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl release"}
CREDENTIALS = role_data("pipeline")["pipeline_credentials"]


def _wants(group: str = "servers", **overrides: Any) -> dict[str, Any]:
    """A real host's variables (the local stack), as a pull host unless overridden."""
    cfg = load_stack("local")
    entry = cfg.fleets.servers[0] if group == "servers" else cfg.fleets.edge[0]
    wants = host_vars(cfg, group, entry)  # type: ignore[arg-type]
    return {**wants, "cn_deploy_mode": "pull", "cn_pull_channel": "canary", "cn_pull_interval": 300,
            "cn_bundle_signers": [SIGNER], **overrides}


def _push(group: str = "servers") -> dict[str, Any]:
    return _wants(group, cn_deploy_mode="push", cn_pull_channel=None, cn_pull_interval=None, cn_bundle_signers=[])


def _config(**overrides: Any) -> dict[str, Any]:
    return pull_rules.agent_config(_wants(**overrides), role_data("pull"), CREDENTIALS)


def _units(**overrides: Any) -> dict[str, Any]:
    return pull_rules.unit_variables(_wants(**overrides), role_data("pull"))


# (template, variables): every template of the layer, with the values real hosts give
RENDERINGS: list[tuple[str, dict[str, Any]]] = [
    ("pull/agent.json.j2", {"agent_config": _config()}),
    ("pull/agent.json.j2", {"agent_config": _config(cn_storage_credentials_file="/keys/gcs.json", cn_storage_kind="s3",
                                                    cn_pull_channel="stable", cn_group="edge",
                                                    cn_bundle_signers=[SIGNER, {**SIGNER, "identity": "b@x"}])}),
    ("systemd/circularnet-pull.service.j2", {"unit": _units()}),
    ("systemd/circularnet-pull.timer.j2", {"unit": _units()}),
    ("systemd/circularnet-pull.timer.j2", {"unit": _units(cn_pull_interval=86400)}),
    ("triton/requirements.txt.j2", {"wheels": pull_rules.wheels(_wants())}),
]


def test_pyinfra_and_ansible_render_the_layers_templates_to_the_same_bytes(tmp_path: Path) -> None:
    assert by_pyinfra(RENDERINGS) == by_ansible(RENDERINGS, tmp_path)


def test_both_engines_render_the_same_templates() -> None:
    by_pyinfra = set(re.findall(r'"([a-z]+/[a-z.-]+\.j2)"', (REPO / "deploy" / "pull.py").read_text()))
    by_ansible = set(re.findall(r'_templates_dir \}\}/([a-z]+/[a-z.-]+\.j2)"', (ROLE / "tasks" / "main.yml").read_text()))
    assert by_pyinfra == by_ansible == {src for src, _ in RENDERINGS}


# --- the agent's settings ------------------------------------------------------------------------------------------


def test_the_agents_settings_have_exactly_their_keys_sorted_indented_with_a_final_newline() -> None:
    wants, data = _wants(), role_data("pull")
    text = render("pull/agent.json.j2", agent_config=_config())
    config = json.loads(text)
    assert text == json.dumps(config, sort_keys=True, indent=2) + "\n"
    assert config == {
        "format": 1, "stack": "local", "host": wants["cn_host"], "group": "servers", "channel": "canary",
        "store": {"kind": wants["cn_storage_kind"], "endpoint": wants["cn_storage_endpoint"],
                  "project": wants["cn_storage_project"], "bundles": wants["cn_storage_models_bucket"],
                  "reports": wants["cn_storage_results_bucket"]},
        "credentials": None,
        "signers": [SIGNER],
        "state": "/var/lib/circularnet/pull",
        "pyinfra": "/opt/circularnet/pull/venv/bin/pyinfra",
        "python": "/opt/circularnet/pull/venv/bin/python",
        "agent": "/opt/circularnet/pull/agent",
    }
    assert (data["pull_state"], data["pull_agent_dir"]) == (config["state"], config["agent"])  # the role's, one copy
    with_key = json.loads(render("pull/agent.json.j2", agent_config=_config(cn_storage_credentials_file="/k/gcs.json")))
    assert with_key["credentials"] == CREDENTIALS == "/etc/circularnet/pipeline/credentials.json"  # the host's copy


def test_the_agents_venv_is_the_uploaders_wheels_and_its_own() -> None:
    wants = _wants()
    names = [w["name"] for w in pull_rules.wheels(wants)]
    assert {"pyinfra", "pydantic", "pyyaml", "google-cloud-storage", "boto3"} <= set(names)
    assert len(names) == len(set(names))
    assert pull_rules.wheels(wants) == [*wants["cn_uploader_wheels"], *wants["cn_agent_wheels"]]


# --- the units: systemd-analyze on this machine ---------------------------------------------------------------


def _write_units(tmp_path: Path, **overrides: Any) -> tuple[Path, Path]:
    variables = {**_units(**overrides), "python": sys.executable, "config": str(tmp_path / "agent.json"),
                 "state": str(tmp_path)}
    (tmp_path / "agent.json").write_text("{}")
    service, timer = tmp_path / "circularnet-pull.service", tmp_path / "circularnet-pull.timer"
    service.write_text(render("systemd/circularnet-pull.service.j2", unit=variables))
    timer.write_text(render("systemd/circularnet-pull.timer.j2", unit=variables))
    return service, timer


def test_the_units_verify_silently(tmp_path: Path) -> None:
    """systemd-analyze only warns (rc 0) about unknown keys or bad values: any output at all is a failure."""
    service, timer = _write_units(tmp_path)
    result = subprocess.run(["systemd-analyze", "verify", str(service), str(timer)], capture_output=True, text=True,
                            check=False, timeout=60)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_the_service_runs_the_agent_as_root_once_per_start_with_the_hardening_it_can_keep() -> None:
    text = render("systemd/circularnet-pull.service.j2", unit=_units())
    source = (TEMPLATES / "systemd" / "circularnet-pull.service.j2").read_text()
    for line in ("Type=oneshot", "User=root",
                 ("ExecStart=/opt/circularnet/pull/venv/bin/python -m cnctl.bundle.agent "
                  "--config /etc/circularnet/pull/agent.json"),
                 "Environment=PYTHONPATH=/opt/circularnet/pull/agent", "Environment=PYTHONDONTWRITEBYTECODE=1",
                 "WorkingDirectory=/var/lib/circularnet/pull", "TimeoutStartSec=3600",
                 "PrivateTmp=yes", "ProtectClock=yes", "ProtectHostname=yes", "ProtectKernelLogs=yes",
                 "RestrictRealtime=yes", "RestrictNamespaces=yes", "LockPersonality=yes", "KeyringMode=private",
                 "SystemCallArchitectures=native"):
        assert f"\n{line}\n" in text, line
    # what would stop it configuring the host (sudo, apt, /etc, /opt, /usr, modules, /sys) is not there
    for absent in ("NoNewPrivileges", "RestrictSUIDSGID", "ProtectSystem", "ProtectHome", "ProtectKernelTunables",
                   "ProtectKernelModules", "PrivateDevices", "CapabilityBoundingSet", "IPAddressDeny",
                   "MemoryDenyWriteExecute"):
        assert not re.search(rf"^{absent}=", text, re.MULTILINE), absent
        assert f"- {absent}" in source or f", {absent}" in source, f"{absent}: the template does not say why it is left out"
    assert "[Install]" not in text  # started by its timer only, never enabled on its own


def test_the_timer_runs_it_a_minute_after_boot_then_every_interval_after_each_run() -> None:
    text = render("systemd/circularnet-pull.timer.j2", unit=_units(cn_pull_interval=600))
    for line in ("OnBootSec=60", "OnUnitInactiveSec=600", "RandomizedDelaySec=120",
                 "Unit=circularnet-pull.service", "WantedBy=timers.target"):
        assert f"\n{line}\n" in text, line


# --- pyinfra: the push host, the refusal, the pull host (a dry run through @local) ------------------------------

HARNESS = '''
import json, os, sys
sys.path.insert(0, os.environ["CNCTL_REPO"])
from pyinfra import state
from pyinfra.api.host import Host

calls, fake, real = [], json.loads(os.environ["CNCTL_FAKE"]), Host.get_fact


def counted(self, fact, *args, **kwargs):
    calls.append(fact.__name__)
    return fake[fact.__name__] if fact.__name__ in fake else real(self, fact, *args, **kwargs)


Host.get_fact = counted
from deploy.pull import pull  # noqa: E402

pull()
names = [sorted(state.get_op_meta(h).names)[0].split(" | ", 1)[1] for h in state.get_op_order()]
with open(os.environ["CNCTL_OUT"], "w") as f:
    json.dump({"facts": calls, "ops": names}, f)
'''


def _dry_run(tmp_path: Path, data: dict[str, Any]) -> dict[str, list[str]]:
    """deploy/pull.py's pull() on @local with `data` as host data, in a dry run: the facts it read and the
    operations it added (systemd's facts given: this machine may run no systemd)."""
    (tmp_path / "deploy_pull.py").write_text(HARNESS)
    (tmp_path / "data.json").write_text(json.dumps(data))
    (tmp_path / "inventory.py").write_text(
        "import json, os\nhosts = [('@local', json.load(open(os.environ['CNCTL_DATA'])))]\n")
    env = {**os.environ, "CNCTL_REPO": str(REPO), "CNCTL_DATA": str(tmp_path / "data.json"),
           "CNCTL_OUT": str(tmp_path / "out.json"), "CNCTL_FAKE": json.dumps({"SystemdStatus": {}, "SystemdEnabled": {}})}
    result = subprocess.run([str(BIN / "pyinfra"), "-y", "--dry", "inventory.py", "deploy_pull.py"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, check=False, timeout=180)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads((tmp_path / "out.json").read_text())


def _in(tmp_path: Path) -> dict[str, Any]:
    """The layer's paths moved under tmp_path (host data over the role's defaults, as in both engines)."""
    root = tmp_path / "opt"
    return {"pull_root": str(root), "pull_venv": str(root / "venv"), "pull_requirements": str(root / "req.txt"),
            "pull_agent_dir": str(root / "agent"), "pull_config": str(tmp_path / "etc" / "agent.json"),
            "pull_state": str(tmp_path / "state")}


def test_a_push_host_without_the_agent_costs_one_fact_and_no_operation(tmp_path: Path) -> None:
    assert _dry_run(tmp_path, {**_push(), **_in(tmp_path)}) == {"facts": ["PathsPresent"], "ops": []}


def test_a_push_host_with_the_agent_loses_its_timer_units_settings_and_tree(tmp_path: Path) -> None:
    paths = _in(tmp_path)
    Path(paths["pull_agent_dir"], "cnctl").mkdir(parents=True)
    ops = _dry_run(tmp_path, {**_push(), **paths})["ops"]
    assert ops == ["Pull: the agent's timer stopped and disabled (push host)", "Pull: no circularnet-pull.timer (push host)",
                   "Pull: no circularnet-pull.service (push host)", "Pull: systemd reloaded after the units went",
                   "Pull: no agent settings (push host)", "Pull: no agent tree (push host)"]
    assert not any("service" in op and "stopped" in op for op in ops)  # the agent itself is never stopped


@pytest.mark.parametrize(("overrides", "named"), [
    ({"cn_bundle_signers": []}, "cn_bundle_signers is empty"),
    ({"cn_pull_interval": None}, "cn_pull_interval is None"),
    ({"cn_bundle_signers": [], "cn_pull_interval": None}, "cn_bundle_signers is empty"),
])
def test_a_pull_host_without_signers_or_interval_gets_one_failing_operation(tmp_path: Path, overrides, named) -> None:
    problem = pull_rules.problem(_wants(**overrides))
    assert problem.startswith(f"{_wants()['cn_host']}: mode: pull") and named in problem
    assert "`circularnet:bundle` section with `signers`" in problem and "mode to push" in problem
    found = _dry_run(tmp_path, {**_wants(**overrides), **_in(tmp_path)})
    assert found == {"facts": [], "ops": ["Pull: the stack gives a pull host its bundle signers and interval"]}


def test_a_pull_host_that_has_what_it_needs_is_not_refused() -> None:
    assert pull_rules.problem(_wants()) == "" and pull_rules.problem(_wants("edge")) == ""


def test_a_pull_host_gets_packages_venv_agent_tree_settings_and_a_started_timer_never_the_service(tmp_path: Path) -> None:
    ops = _dry_run(tmp_path, {**_wants(), **_in(tmp_path)})["ops"]
    files = pull.agent_files()
    assert [op for op in ops if op.startswith("Pull: the agent's ") and op.split(" ", 3)[3] in files] == \
        [f"Pull: the agent's {path}" for path in files]
    for expected in ("Pull: openssh-client (ssh-keygen -Y) and python3-venv",
                     "Pull: the venv holds the uploader's and the agent's wheels (hashes required)",
                     "Pull: nothing else in the agent tree", "Pull: the agent's settings (0600)",
                     "Pull: the agent's state directory (0700)", "Pull: systemd reloaded after a unit change",
                     "Pull: the agent's timer enabled and started"):
        assert expected in ops, expected
    assert ops.index("Pull: the agent's timer enabled and started") > ops.index("Pull: the agent's timer unit")
    assert not [op for op in ops if "service" in op and ("start" in op or "restart" in op)]


# --- the agent tree: exactly the list -----------------------------------------------------------------------------


def test_the_agent_tree_is_cnctl_bundle_contents_agent_list() -> None:
    files = pull.agent_files()
    assert files == contents.files(REPO, contents.AGENT_ENTRIES)
    assert "cnctl/bundle/agent.py" in files and "cnhost/uploader.py" in files
    assert pull_rules.agent_dirs(files)[:2] == ["cnctl", "cnhost"]  # parents first
    assert {str(Path(f).parent) for f in files if "/" in f} <= set(pull_rules.agent_dirs(files))


def test_whatever_else_is_in_the_agent_tree_is_named_for_removal_topmost_only() -> None:
    files = ["cnctl/__init__.py", "cnctl/bundle/agent.py", "cnhost/uploader.py"]
    found = [*files, "cnctl", "cnctl/bundle", "cnhost", "cnctl/old.py", "cnctl/bundle/__pycache__",
             "cnctl/bundle/__pycache__/agent.cpython-311.pyc", "gone", "gone/x.py"]
    assert pull_rules.extras(found, files) == ["cnctl/bundle/__pycache__", "cnctl/old.py", "gone"]
    assert pull_rules.extras_under([f"/a/{p}" for p in found] + ["/a"], "/a", files) == \
        ["/a/cnctl/bundle/__pycache__", "/a/cnctl/old.py", "/a/gone"]
    assert pull_rules.extras(files + ["cnctl", "cnctl/bundle", "cnhost"], files) == []


def test_the_tree_and_present_commands_read_what_is_there(tmp_path: Path) -> None:
    (tmp_path / "agent" / "cnctl").mkdir(parents=True)
    (tmp_path / "agent" / "cnctl" / "x.py").write_text("")
    out = subprocess.run(["sh", "-c", pull.tree_command(str(tmp_path / "agent"))], capture_output=True, text=True,
                         check=True).stdout
    assert sorted(out.split()) == ["cnctl", "cnctl/x.py"]
    assert subprocess.run(["sh", "-c", pull.tree_command(str(tmp_path / "none"))], capture_output=True, text=True,
                          check=True).stdout == ""
    paths = [str(tmp_path / "agent"), str(tmp_path / "none")]
    out = subprocess.run(["sh", "-c", pull_rules.present_command(paths)], capture_output=True, text=True, check=True).stdout
    assert pull_rules.present(out.splitlines()) == [str(tmp_path / "agent")]


# --- the role's inputs, its filters, and the wiring --------------------------------------------------------------


def test_a_bad_role_variable_is_stopped_by_argument_specs_naming_it(tmp_path: Path) -> None:
    bad = [("cn_deploy_mode", "both"), ("cn_pull_channel", "beta"), ("cn_pull_interval", "often"),
           ("cn_bundle_signers", [{"identity": "release@plant"}]), ("cn_bundle_signers", "release@plant"),
           ("cn_storage_kind", "azure"), ("cn_agent_wheels", "pyinfra"), ("pull_run_timeout", "an hour"),
           ("cn_host", None)]
    assert_bad_inputs_named("pull", tmp_path, _wants(), _push("edge"), bad)


def test_the_roles_host_variables_are_the_ones_cnctl_hostvars_gives() -> None:
    options = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    declared = {name for name in options if name.startswith("cn_")}
    cfg = load_stack("local")
    for group, entry in (("servers", cfg.fleets.servers[0]), ("edge", cfg.fleets.edge[0])):
        given = host_vars(cfg, group, entry)  # type: ignore[arg-type]
        assert declared <= set(given), (group, sorted(declared - set(given)))
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    assert {name for name in options if not name.startswith("cn_")} == set(defaults)


def test_the_roles_filters_are_the_deploys_functions() -> None:
    filters = collection_tree.filters()
    for name, function in (("cnctl_pull_problem", pull_rules.problem), ("cnctl_pull_config", pull_rules.agent_config),
                           ("cnctl_pull_unit_vars", pull_rules.unit_variables), ("cnctl_pull_wheels", pull_rules.wheels),
                           ("cnctl_pull_extras", pull_rules.extras_under),
                           ("cnctl_pull_present_command", pull_rules.present_command)):
        assert collection_tree.same_function(filters[name], function), name
    # the collection's list of the agent's files is the bundle's (cnctl.bundle.contents), found in the collection
    assert filters["cnctl_pull_agent_files"](str(collection_tree.tree())) == pull.agent_files()
    assert filters["cnctl_role_default"]("pipeline_credentials", "pipeline") == CREDENTIALS


def test_pull_is_the_last_layer_of_both_engines() -> None:
    from deploy import LAYERS  # cnctl/layers.py: deploy.py applies them in its order (test_deploy_layers)

    assert LAYERS[-2:] == ("verify", "pull"), LAYERS
    for play in yaml.safe_load((REPO / "playbooks" / "site.yml").read_text()):
        assert play["roles"][-1] == {"role": "circularnet.fleet.pull", "tags": ["pull"]}, play["name"]
