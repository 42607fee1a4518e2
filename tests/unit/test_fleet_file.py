"""Fleet files (cnctl/fleet.py, docs/fleet-files.md): a stack's fleet as data another tool wrote. The hosts it
lists are the stack's, each with its fleet entry's settings, reached as the file says; the file is checked like
a stack (every field named, its value escaped, the fix said) and must be of the stack it is read for. What the
sandbox writes (cnctl/sandbox/inventory.py) is such a file, and the product reads it knowing nothing else."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cnctl.cli.main import app
from cnctl.config import StackConfigError, load_stack
from cnctl.config.schema import Server
from cnctl.fleet import FLEET_FILE_ENV, FleetFileProblem, members
from cnctl.inventory import InventoryProblem, ansible_inventory, fleet_hosts, pull_entry, pyinfra_groups
from cnctl.paths import REPO_ROOT
from tests.unit.stack_variants import stack_variant


@pytest.fixture(autouse=True)
def _own_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for name in ("CNCTL_STACK", FLEET_FILE_ENV):
        monkeypatch.delenv(name, raising=False)


def _write(tmp_path: Path, hosts: list[dict[str, Any]] | None = None, **top: Any) -> Path:
    """A fleet file of the local stack: its first Jetson and a server it does not list, behind a key of its own."""
    key = tmp_path / "ssh" / "id_ed25519"
    key.parent.mkdir(parents=True, exist_ok=True)
    key.write_text("not a key\n")
    document = {
        "format": 1, "stack": "local", "writtenBy": "a test",
        "ssh": {"key": str(key), "knownHosts": str(tmp_path / "ssh" / "known_hosts"), "strictHostKeyChecking": "yes"},
        "hosts": hosts if hosts is not None else [
            {"name": "belt-1-orin", "group": "edge", "address": "172.31.9.11", "jetpack": "6.0"},
            {"name": "server-9", "group": "servers", "address": "172.31.9.29", "driverBranch": "570", "site": "rack-9"},
        ],
        **top,
    }
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps(document))
    return path


def _env(path: Path) -> dict[str, str]:
    return {FLEET_FILE_ENV: str(path)}


# --- what the product makes of it -------------------------------------------------------------------------


def test_the_hosts_of_the_file_are_the_fleet_reached_with_its_key_and_strict_checking(tmp_path: Path) -> None:
    path = _write(tmp_path)
    cfg = load_stack("local")
    hosts = fleet_hosts(cfg, environ=_env(path))
    assert [(h.name, h.group, h.ssh.address) for h in hosts] == [
        ("belt-1-orin", "edge", "172.31.9.11"), ("server-9", "servers", "172.31.9.29")]
    groups = pyinfra_groups(hosts)
    edge = groups["edge"][0][1]
    assert edge["ssh_key"] == str(tmp_path / "ssh" / "id_ed25519") and edge["ssh_allow_agent"] is False
    assert edge["ssh_known_hosts_file"] == str(tmp_path / "ssh" / "known_hosts")
    assert edge["ssh_strict_host_key_checking"] == "yes"
    # the listed host keeps its entry's settings; the file's address wins
    assert edge["cn_stack"] == "local" and edge["cn_jetpack"] == "6.0" and edge["cn_host"] == "belt-1-orin"
    assert edge["cn_inference_runtime"] == cfg.fleets.edge[0].inference_runtime
    # a host the stack does not list takes its group's first entry's settings, with the file's own values
    server = groups["servers"][0][1]
    assert server["cn_driver_branch"] == "570" and server["cn_host"] == "server-9" and server["cn_site"] == "rack-9"
    args = ansible_inventory(hosts)["all"]["children"]["edge"]["hosts"]["belt-1-orin"]["ansible_ssh_common_args"]
    assert "StrictHostKeyChecking=yes" in args and f"UserKnownHostsFile={tmp_path / 'ssh' / 'known_hosts'}" in args
    # nothing beside the connection keys and cn_*: the file's writer has no say in host variables
    assert {k for k in edge if not k.startswith(("cn_", "ssh_"))} == set()


def test_a_host_may_say_how_it_is_reached_itself(tmp_path: Path) -> None:
    other = tmp_path / "other_key"
    other.write_text("x")
    path = _write(tmp_path, [{"name": "gpu-server-1", "group": "servers", "address": "10.9.0.5", "sshUser": "ops",
                              "sshPort": 2222, "ssh": {"key": str(other), "strictHostKeyChecking": "accept-new"}}])
    (host,) = fleet_hosts(load_stack("local"), environ=_env(path))
    assert (host.ssh.user, host.ssh.port, host.ssh.key, host.ssh.strict_host_key_checking) == (
        "ops", 2222, str(other), "accept-new")
    assert host.ssh.known_hosts == str(tmp_path / "ssh" / "known_hosts")  # the file's, for every host


def test_any_stack_can_name_a_fleet_file_and_the_environment_names_another(tmp_path: Path) -> None:
    """A user's own tool provisions the hosts: the stack names the file (`fleets.file`), CNCTL_FLEET_FILE wins."""
    named = _write(tmp_path / "named", [{"name": "plant-b-gpu-7", "group": "servers", "address": "10.41.0.7"}], stack="prod")
    stack = stack_variant(tmp_path, lambda c: c["circularnet:fleets"].update(file=str(named)), base="prod")
    cfg = load_stack(stack)
    (host,) = fleet_hosts(cfg, environ={})
    assert (host.name, host.ssh.address, host.vars["cn_driver_branch"]) == ("plant-b-gpu-7", "10.41.0.7", "570")
    other = _write(tmp_path / "other", [{"name": "plant-a-belt-1", "group": "edge", "address": "10.40.9.1"}], stack="prod")
    assert [h.ssh.address for h in fleet_hosts(cfg, environ=_env(other))] == ["10.40.9.1"]
    prod = load_stack("prod")  # no fleets.file: its entries, whatever the environment says
    assert [h.name for h in fleet_hosts(prod, environ=_env(other))] == [
        *(e.name for e in prod.fleets.edge), *(s.name for s in prod.fleets.servers)]


def test_cnctl_deploy_hands_the_engine_the_same_fleet_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cnctl.engines.target import for_stack

    path = _write(tmp_path)
    monkeypatch.setenv(FLEET_FILE_ENV, str(path))
    target = for_stack(load_stack("local"), limit="servers")
    assert target.env == {"CNCTL_STACK": "local", FLEET_FILE_ENV: str(path)} and target.hosts == ("server-9",)


def test_a_pull_host_the_stack_does_not_list_stands_for_its_groups_first_entry() -> None:
    cfg = load_stack("local")  # its fleet comes from a fleet file: the bundle carries the stack only
    first = cfg.fleets.servers[0]
    found = pull_entry(cfg.model_copy(update={"fleets": cfg.fleets.model_copy(update={
        "servers": [first.model_copy(update={"mode": "pull"})]})}), "sandbox-server-3", "servers")
    assert isinstance(found, Server) and found.name == "sandbox-server-3" and found.driver_branch == first.driver_branch
    with pytest.raises(InventoryProblem, match="host 'Bad;name': not a host name"):
        pull_entry(cfg, "Bad;name", "servers")
    with pytest.raises(InventoryProblem, match="is not in fleets.servers"):
        pull_entry(load_stack("prod"), "sandbox-server-3", "servers")  # no fleet file: only its entries


# --- what is refused, and how ---------------------------------------------------------------------------


def test_a_missing_file_says_who_writes_it(tmp_path: Path) -> None:
    with pytest.raises(FleetFileProblem, match=r"no fleet file .*none/fleet.json \(CNCTL_FLEET_FILE of stack local\): "
                                               r"the sandbox is not up; run `cnctl sandbox up` or `make demo`"):
        members(load_stack("local"), _env(tmp_path / "none" / "fleet.json"))
    stack = stack_variant(tmp_path, lambda c: c["circularnet:fleets"].update(file=str(tmp_path / "gone.json")), base="prod")
    with pytest.raises(FleetFileProblem, match=r"no fleet file .*gone.json \(fleets.file of stack prod\): the tool that "
                                               "provisions this fleet writes it"):
        members(load_stack(stack), {})


def test_the_file_of_another_stack_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FleetFileProblem, match=r"\(written by 'a test'\) lists the hosts of stack 'prod', not 'local'"):
        members(load_stack("local"), _env(_write(tmp_path, stack="prod")))


def test_a_key_that_cannot_be_read_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path, ssh={"key": str(tmp_path / "gone")})
    with pytest.raises(FleetFileProblem, match=f"cannot read the SSH key {tmp_path / 'gone'} that fleet file"):
        members(load_stack("local"), _env(path))


@pytest.mark.parametrize(("body", "message"), [
    ("[]", "is not a JSON object"),
    ("{\"format\": 1, \"format\": 1}", "key 'format' is written twice"),
    ("{\"format\": 1,", "is not JSON"),
    ("{\"format\": 2, \"stack\": \"local\", \"hosts\": []}", "format 2 is not 1"),
    (b"\xff", "is not JSON"),
])
def test_a_file_that_is_no_fleet_file_is_named_in_one_line(tmp_path: Path, body: str | bytes, message: str) -> None:
    path = tmp_path / "fleet.json"
    path.write_bytes(body if isinstance(body, bytes) else body.encode())
    with pytest.raises(FleetFileProblem, match=message) as raised:
        members(load_stack("local"), _env(path))
    assert "\n" not in str(raised.value)


HOSTILE = "10.0.0.1; reboot"


@pytest.mark.parametrize(("hosts", "top", "expected"), [
    ([{"name": "belt-1-orin", "group": "edge", "address": HOSTILE}], {}, f"hosts[0].address: {HOSTILE!r} is not an IP address"),
    ([{"name": "x", "group": "edge", "address": "10.0.0.1", "sshUser": "root -oProxyCommand=x"}], {},
     "hosts[0].sshUser: 'root -oProxyCommand=x' String should match pattern"),
    ([{"name": "x", "group": "edge", "address": "10.0.0.1", "colour": "red"}], {}, "hosts[0].colour: is not a known key"),
    ([{"name": "x", "group": "gpus", "address": "10.0.0.1"}], {}, "hosts[0].group: 'gpus' Input should be 'edge' or 'servers'"),
    ([{"name": "belt-1-orin", "group": "servers", "address": "10.0.0.1"}], {},
     "hosts[0].group: 'servers' but stack local lists belt-1-orin in fleets.edge"),
    ([{"name": "x", "group": "servers", "address": "10.0.0.1", "jetpack": "6.0"}], {},
     "hosts[0].jetpack: is not a setting of a host of group servers"),
    ([{"name": "x", "group": "edge", "address": "10.0.0.1", "jetpack": "4.6"}], {},
     "hosts[0].jetpack: '4.6' is not in the platform matrix"),
    ([{"name": "x", "group": "edge", "address": "10.0.0.1"}, {"name": "x", "group": "edge", "address": "10.0.0.2"}], {},
     "hosts[1].name: 'x' is listed twice (also hosts[0])"),
    ([], {"ssh": {"key": "id_ed25519"}}, "ssh.key: 'id_ed25519' is not an absolute path"),
    ([], {"stack": "Local\n"}, "stack: 'Local\\n' holds the control character U+000A"),
])
def test_every_bad_value_is_named_at_its_place_escaped(tmp_path: Path, hosts: list[dict[str, Any]], top: dict[str, Any],
                                                      expected: str) -> None:
    path = _write(tmp_path, hosts, **top)
    with pytest.raises(StackConfigError) as raised:
        members(load_stack("local"), _env(path))
    assert raised.value.source.startswith(f"fleet file {path}")
    assert any(str(p).startswith(expected) for p in raised.value.problems), raised.value.render()


def test_pyinfra_and_the_cli_say_it_in_one_line_and_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, [{"name": "x", "group": "edge", "address": HOSTILE}])
    monkeypatch.setenv(FLEET_FILE_ENV, str(path))
    monkeypatch.setattr(sys, "argv", ["pyinfra", "hosts/fleet.py", "deploy.py"])
    with pytest.raises(SystemExit) as raised:
        runpy.run_path(str(REPO_ROOT / "hosts" / "fleet.py"))
    err = capsys.readouterr().err
    assert raised.value.code == 2 and err.count("\n") == 1 and f"hosts[0].address: {HOSTILE!r}" in err, err
    result = CliRunner().invoke(app, ["deploy", "--stack", "local"])
    assert result.exit_code == 2 and "Traceback" not in result.output and f"fleet file {path}" in result.output


# --- what the sandbox writes is such a file ---------------------------------------------------------------


def test_the_sandboxs_fleet_file_is_read_as_written(tmp_path: Path) -> None:
    from cnctl.sandbox.instance import Instance
    from cnctl.sandbox.inventory import publish
    from cnctl.sandbox.layout import HostSpec
    from cnctl.sandbox.state import FleetState, HostState

    inst = Instance(prefix="cnut", state_dir=tmp_path / "state")
    key = tmp_path / "state" / "ssh" / "id_ed25519"
    key.parent.mkdir(parents=True)
    key.write_text("x")
    specs = [HostSpec("belt-2-orin", "edge", "jetson", "172.31.9.12", site="sandbox", jetpack="6.2", l4t="36.4.3"),
             HostSpec("sandbox-server-2", "servers", "server", "172.31.9.22", driver_branch="550", generated=True)]
    state = FleetState(prefix="cnut", state_dir=str(inst.state_dir), stack="local", subnet="172.31.9.0/24",
                       machine_address="172.31.9.1", site_address="172.31.9.2", site_netns="cnut-site", uplink="cnut-up",
                       images={}, ssh_key=str(key), known_hosts=str(key.parent / "known_hosts"), phase="up",
                       hosts=[HostState(s, "n", "/m") for s in specs])
    publish(inst, state)
    assert inst.environment()[FLEET_FILE_ENV] == str(inst.fleet_file) and inst.ansible_inventory.is_file()
    hosts = fleet_hosts(load_stack("local"), environ=inst.environment())
    assert [(h.name, h.group, h.ssh.address, h.ssh.user, h.ssh.key) for h in hosts] == [
        ("belt-2-orin", "edge", "172.31.9.12", "circularnet", str(key)),
        ("sandbox-server-2", "servers", "172.31.9.22", "circularnet", str(key))]
    assert hosts[0].vars["cn_jetpack"] == "6.2" and hosts[1].vars["cn_driver_branch"] == "550"


def test_the_monitoring_server_is_the_fleet_files_host_of_that_name_and_the_others_its_agents(tmp_path: Path) -> None:
    """monitoring.server names a host of the fleet as it is: a fleet file's host the stack does not list (a sandbox's
    extra server, a host another tool provisioned) is the site when named, at the address the file gives it."""
    stack = stack_variant(tmp_path, lambda config: config["circularnet:monitoring"].update(server="server-9"), base="local")
    path = _write(tmp_path)
    hosts = {h.name: h.vars for h in fleet_hosts(load_stack(stack), environ=_env(path))}
    assert {name: v["cn_monitoring_collection"] for name, v in hosts.items()} == {"belt-1-orin": "agent",
                                                                                  "server-9": "site"}
    assert {v["cn_monitoring_site_url"] for v in hosts.values()} == {"http://172.31.9.29:9090"}
    # a fleet without the host the stack names has no site: nobody runs an agent for nothing
    other = _write(tmp_path, hosts=[{"name": "belt-1-orin", "group": "edge", "address": "172.31.9.11", "jetpack": "6.0"}])
    (alone,) = fleet_hosts(load_stack(stack), environ=_env(other))
    assert (alone.vars["cn_monitoring_collection"], alone.vars["cn_monitoring_site_url"]) == ("none", None)
