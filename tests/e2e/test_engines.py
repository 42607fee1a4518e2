"""Both engines on the sandbox fleet: `cnctl deploy --engine pyinfra|ansible` reach the same end state.

- the Ansible role finds nothing to change on hosts the pyinfra deploy configured, and a second run
  changes nothing either (every host, both flavours);
- on fresh hosts, every file the smoke deploy manages is identical (sha256, mode, owner) whichever engine
  wrote it, and each engine finds nothing to change after the other;
- `--dry` with either engine changes nothing;
- a stack whose fleets have no inventory exits 2 with the reason.

Fresh hosts are not in the fleet's inventories: `fresh_fleet` gives them a state directory of their own
(state.json + Ansible inventory), which `cnctl deploy` reads through CNCTL_STATE like any sandbox.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

import pytest

from cnctl.sandbox import fleet as sandbox
from cnctl.sandbox.flavours import nv_tegra_release
from cnctl.sandbox.instance import Instance
from cnctl.sandbox.inventory import write_ansible_inventory
from cnctl.sandbox.state import FleetState, save
from tests.e2e.fleet_helpers import BIN, REPO

# Every path the smoke deploy manages (deploy/smoke.py, roles/smoke).
MANAGED = (
    "/etc/apt/keyrings",
    "/etc/apt/keyrings/cnctl-sandbox.gpg",
    "/etc/apt/sources.list.d/cnctl-sandbox.list",
    "/var/lib/circularnet",
    "/var/lib/circularnet/smoke.json",
)
SNAPSHOT = f"""
for p in {' '.join(MANAGED)}; do
  if [ -e "$p" ]; then stat -c '%n %F %a %U:%G' "$p"; if [ -f "$p" ]; then sha256sum < "$p"; fi
  else echo "$p absent"; fi
done
"""


# --- helpers -------------------------------------------------------------------------------------


def cnctl_deploy(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    """Start `cnctl deploy ARGS` (the table on stdout, the engine's log on stderr)."""
    return subprocess.Popen([str(BIN / "cnctl"), "deploy", *args], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


def deploy(env: dict[str, str], *args: str) -> dict[str, tuple[int | None, int, int]]:
    """Run `cnctl deploy ARGS`; assert it succeeded; {host: (ok, changed, failed)} from its table."""
    code, out, err = finish(cnctl_deploy(env, *args))
    assert code == 0, f"{args}:\n{out}\n{err[-4000:]}"
    return table(out)


def deploy_all(env: dict[str, str], runs: Iterable[tuple[str, ...]]) -> list[dict[str, tuple[int | None, int, int]]]:
    """Several `cnctl deploy` runs at once (on different hosts, or dry): their tables, in order."""
    procs = [(args, cnctl_deploy(env, *args)) for args in runs]
    tables = []
    for args, proc in procs:
        code, out, err = finish(proc)
        assert code == 0, f"{args}:\n{out}\n{err[-4000:]}"
        tables.append(table(out))
    return tables


def table(stdout: str) -> dict[str, tuple[int | None, int, int]]:
    """{host: (ok, changed, failed)} from the summary table `cnctl deploy` prints."""
    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if len(cells) == 5 and cells[1] in ("pyinfra", "ansible"):
            ok, changed, failed = cells[2:]
            rows[cells[0]] = (None if ok == "-" else int(ok), int(changed), int(failed))
    assert rows, stdout
    return rows


def snapshot(host: sandbox.FreshHost) -> str:
    """Kind, mode, owner and sha256 of every managed path on `host` ("absent" where there is none)."""
    result = host.ssh("sudo sh -s", input=SNAPSHOT)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def fresh_fleet(boot_fresh: Callable[..., sandbox.FreshHost], fleet: FleetState, fleet_instance: Instance,
                fleet_env: dict[str, str], tmp_path: Path) -> Callable[..., tuple[list[sandbox.FreshHost], dict[str, str]]]:
    """`fresh_fleet(n)` -> n fresh Jetson-flavour hosts and the environment in which `cnctl deploy` sees
    exactly them (a state dir of their own: state.json and Ansible inventory, the fleet's key)."""

    def make(n: int) -> tuple[list[sandbox.FreshHost], dict[str, str]]:
        hosts = [boot_fresh("jetson", "6.2") for _ in range(n)]
        known = tmp_path / "known_hosts"
        known.write_text("".join(Path(h.fleet.known_hosts).read_text() for h in hosts))
        state_dir = tmp_path / "state"
        view = replace(fleet, state_dir=str(state_dir), known_hosts=str(known), hosts=[h.state for h in hosts],
                       inventories={**fleet.inventories, "ansible": str(state_dir / "inventory.yml")})
        inst = Instance(prefix=fleet_instance.prefix, state_dir=state_dir, cache=fleet_instance.cache)
        save(inst, view)
        write_ansible_inventory(state_dir / "inventory.yml", view)
        return hosts, {**fleet_env, "CNCTL_STATE": str(state_dir)}

    return make


# --- the tests -----------------------------------------------------------------------------------


@pytest.mark.fleet
def test_ansible_finds_the_pyinfra_end_state_on_every_host_and_a_second_run_changes_nothing(
    deployed_fleet: tuple[FleetState, object], fleet_env: dict[str, str]
) -> None:
    fleet, _ = deployed_fleet  # configured by the pyinfra smoke deploy
    names = {h.name for h in fleet.hosts}
    for run in (1, 2):
        started = time.monotonic()
        rows = deploy(fleet_env, "--engine", "ansible")
        assert set(rows) == names
        assert all(ok and ok > 0 and changed == 0 and failed == 0 for ok, changed, failed in rows.values()), (run, rows)
        print(f"ansible run {run} on {len(names)} hosts: {time.monotonic() - started:.1f} s")


@pytest.mark.fleet
def test_both_engines_write_identical_files_and_each_finds_nothing_to_change_after_the_other(
    fresh_fleet: Callable[..., tuple[list[sandbox.FreshHost], dict[str, str]]]
) -> None:
    (by_pyinfra, by_ansible), env = fresh_fleet(2)
    stack = ("--stack", "local")  # the session fleet is the local stack's, on its own subnet
    first = deploy_all(env, [(*stack, "--engine", "pyinfra", "--limit", by_pyinfra.state.name),
                             (*stack, "--engine", "ansible", "--limit", by_ansible.state.name)])
    assert first[0][by_pyinfra.state.name][1] > 0 and first[1][by_ansible.state.name][1] > 0  # fresh: work done

    written = snapshot(by_pyinfra)
    assert "absent" not in written, written
    assert written == snapshot(by_ansible)
    facts = json.loads(by_ansible.ssh("cat /var/lib/circularnet/smoke.json").stdout)
    assert facts["nv_tegra_release"] == nv_tegra_release(by_ansible.state.spec.l4t or "").splitlines()[0]

    crossed = deploy_all(env, [(*stack, "--engine", "ansible", "--limit", by_pyinfra.state.name),
                               (*stack, "--engine", "pyinfra", "--limit", by_ansible.state.name)])
    assert [changed for rows in crossed for (_, changed, _) in rows.values()] == [0, 0], crossed


@pytest.mark.fleet
def test_dry_runs_of_either_engine_change_nothing_on_a_fresh_host(
    fresh_fleet: Callable[..., tuple[list[sandbox.FreshHost], dict[str, str]]]
) -> None:
    (host,), env = fresh_fleet(1)
    before = snapshot(host)
    assert before.count("absent") == 4  # only /etc/apt/keyrings comes with the image
    stack = ("--stack", "local")  # the session fleet is the local stack's, on its own subnet
    pyinfra, ansible = deploy_all(env, [(*stack, "--engine", "pyinfra", "--dry"), (*stack, "--engine", "ansible", "--dry")])
    assert pyinfra[host.state.name][1] > 0 and ansible[host.state.name][1] > 0  # both saw what they would do
    assert snapshot(host) == before


def test_a_stack_whose_fleets_have_no_inventory_exits_2_with_the_reason() -> None:
    result = subprocess.run([str(BIN / "cnctl"), "deploy", "--stack", "dev", "--engine", "ansible"], check=False,
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    message = " ".join(result.stderr.split())
    assert "no inventory yet" in message and "hosts/edge.py" in message
    assert "Traceback" not in result.stderr
