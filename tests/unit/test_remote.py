"""cnctl.remote: one command on many hosts over SSH at once, each bounded in time.

A fake `ssh` client (a script standing in for OpenSSH, selected with `client=`) records its argv and runs
the command locally, so the tests see exactly what OpenSSH would be asked and what comes back; the real
OpenSSH client is used once, against a closed port, for its own "could not connect" exit code.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from cnctl.inventory import InventoryHost, Ssh
from cnctl.remote import RemoteOutcome, run_on_host, run_on_hosts, ssh_argv

FAKE_SSH = r"""#!/usr/bin/env python3
import json, os, subprocess, sys, time
argv = sys.argv[1:]
split = argv.index("--")
destination, command = argv[split + 1], argv[split + 2]
with open(os.environ["FAKE_SSH_LOG"], "a") as log:
    log.write(json.dumps(argv) + "\n")
address = destination.split("@", 1)[1]
if address.startswith("down"):
    print(f"ssh: connect to host {address} port 22: No route to host", file=sys.stderr)
    sys.exit(255)
if address.startswith("hang"):
    # a ProxyCommand-like child in the same process group: it must die with the client
    child = subprocess.Popen(["sleep", "60"])
    with open(os.environ["FAKE_SSH_LOG"] + ".pid", "w") as f:
        f.write(str(child.pid))
    time.sleep(60)
sys.exit(subprocess.run(["sh", "-c", command], stdin=sys.stdin).returncode)
"""


@pytest.fixture
def fake_ssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    client = tmp_path / "ssh"
    client.write_text(FAKE_SSH)
    client.chmod(0o755)
    log = tmp_path / "ssh.log"
    monkeypatch.setenv("FAKE_SSH_LOG", str(log))
    return str(client), log


def host(name: str, address: str | None = None, **ssh: object) -> InventoryHost:
    return InventoryHost(name, "servers", Ssh(address=address or name, user="deploy", **ssh))  # type: ignore[arg-type]


def test_the_ssh_command_line_carries_the_inventorys_connection_settings() -> None:
    sandbox = Ssh(address="172.31.254.21", user="deploy", port=2222, key="/run/k", known_hosts="/run/known",
                  strict_host_key_checking="yes")
    argv = ssh_argv(sandbox, "uptime")
    assert argv[-3:] == ["--", "deploy@172.31.254.21", "uptime"]
    joined = " ".join(argv)
    for option in ("BatchMode=yes", "-p 2222", "-i /run/k", "IdentitiesOnly=yes", "UserKnownHostsFile=/run/known",
                   "GlobalKnownHostsFile=/dev/null", "StrictHostKeyChecking=yes"):
        assert option in joined, option
    cloud = Ssh(address="gpu-vm-1", user="sa_1", proxy_command="gcloud compute start-iap-tunnel gpu-vm-1 22 --listen-on-stdin")
    argv = ssh_argv(cloud, "uptime")
    assert "ProxyCommand=gcloud compute start-iap-tunnel gpu-vm-1 22 --listen-on-stdin" in argv
    assert not {"-p", "-i", "IdentitiesOnly=yes"} & set(argv)  # the user's own SSH setup (agent, config) applies


def test_the_remote_command_and_the_destination_are_single_words_after_the_options() -> None:
    """ssh takes an argv (no local shell); `--` ends the options, so no user, address or command is read as one."""
    command = "echo '$(id)'; touch x"
    argv = ssh_argv(Ssh(address="-oProxyCommand=touch x", user="-x", port=22), command)
    assert argv[-3:] == ["--", "-x@-oProxyCommand=touch x", command] and argv.count("--") == 1


def test_every_host_answers_in_order_with_its_exit_code_and_output(fake_ssh: tuple[str, Path]) -> None:
    client, log = fake_ssh
    hosts = [host("b-host"), host("a-host"), host("c-host")]
    outcomes = run_on_hosts(hosts, 'echo "out"; echo "err" >&2; exit 3', timeout=20, client=client)
    assert list(outcomes) == ["b-host", "a-host", "c-host"]
    assert set(outcomes.values()) == {RemoteOutcome(True, 3, "out\n", "err\n")}
    assert not outcomes["a-host"].ok
    assert len(log.read_text().splitlines()) == 3


def test_stdin_reaches_the_command(fake_ssh: tuple[str, Path]) -> None:
    client, _ = fake_ssh
    outcome = run_on_hosts([host("one")], "cat", timeout=20, input="hello\n", client=client)["one"]
    assert outcome.ok and outcome.stdout == "hello\n"


def test_a_host_ssh_cannot_reach_is_unreachable_and_named_while_the_others_answer(fake_ssh: tuple[str, Path]) -> None:
    client, _ = fake_ssh
    outcomes = run_on_hosts([host("edge-1", "down-1"), host("server-1")], "echo up", timeout=20, client=client)
    assert outcomes["server-1"] == RemoteOutcome(True, 0, "up\n", "")
    down = outcomes["edge-1"]
    assert (down.reachable, down.rc) == (False, 255)
    assert "edge-1: cannot reach deploy@down-1 over SSH: ssh: connect to host down-1 port 22: No route to host" in down.stderr


def test_a_host_that_does_not_answer_in_time_is_cut_off_with_its_proxy(fake_ssh: tuple[str, Path]) -> None:
    client, log = fake_ssh
    started = time.monotonic()
    outcomes = run_on_hosts([host("stuck", "hang-1"), host("fine")], "echo fine", timeout=2, client=client)
    assert time.monotonic() - started < 10
    assert outcomes["fine"].ok
    stuck = outcomes["stuck"]
    assert (stuck.reachable, stuck.rc) == (False, None)
    assert "stuck (deploy@hang-1) gave no answer within 2 s" in stuck.stderr
    child = int(Path(f"{log}.pid").read_text())
    for _ in range(50):  # reaped by init shortly after the kill
        if not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the fake proxy {child} outlived the timeout")


def test_hosts_are_asked_at_the_same_time(fake_ssh: tuple[str, Path]) -> None:
    client, _ = fake_ssh
    started = time.monotonic()
    outcomes = run_on_hosts([host(f"h{i}") for i in range(6)], "sleep 1.5", timeout=20, client=client)
    assert all(o.ok for o in outcomes.values())
    assert time.monotonic() - started < 6  # one after the other: 9 s


def test_a_missing_client_is_an_unreachable_outcome_not_an_exception(tmp_path: Path) -> None:
    outcome = run_on_host(host("h"), "true", timeout=5, client=str(tmp_path / "no-ssh"))
    assert not outcome.reachable and "h: cannot run" in outcome.stderr


def test_the_real_openssh_client_refused_is_unreachable(tmp_path: Path) -> None:
    """OpenSSH itself: a closed port gives its exit code 255, which means unreachable."""
    if not any(os.access(Path(d) / "ssh", os.X_OK) for d in os.environ.get("PATH", "").split(os.pathsep)):
        pytest.skip("no OpenSSH client on PATH")
    closed = host("closed", "127.0.0.1", port=1, known_hosts=str(tmp_path / "known"), strict_host_key_checking="yes")
    outcome = run_on_hosts([closed], "true", timeout=15)["closed"]
    assert (outcome.reachable, outcome.rc) == (False, 255), outcome
    assert "closed: cannot reach deploy@127.0.0.1 over SSH" in outcome.stderr


def test_no_hosts_no_connections(fake_ssh: tuple[str, Path]) -> None:
    client, log = fake_ssh
    assert run_on_hosts([], "true", timeout=1, client=client) == {}
    assert not log.exists()
