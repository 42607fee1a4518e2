"""A failed pyinfra run still ends with the per-host table, and its log is shown once.

pyinfra writes no JSON report when every host failed (or it stopped on an error of its own): the hosts'
results are then read from its log. The samples are pyinfra 3.10's log as it prints it (pyinfra_cli/log.py
indents host lines; pyinfra/api/operations.py prints "Success", "No changes" or "Error: executed N commands"
per host and operation, and a failed command's output before it; connectors/ssh.py "Could not connect (...)").
"""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from cnctl import engines
from cnctl.cli import deploy as deploy_cli
from cnctl.cli.main import app
from cnctl.engines import pyinfra
from cnctl.engines.result import DeployResult, HostResult
from cnctl.engines.target import Target

SAMPLES = Path(__file__).parent / "samples"
FAILED_RUN = (SAMPLES / "pyinfra-failed-run.log").read_text()
UNREACHABLE = (SAMPLES / "pyinfra-unreachable.log").read_text()
FLEET = ("belt-1-orin", "belt-2-orin", "gpu-server-1", "gpu-server-2")


def lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def test_a_failed_run_log_gives_every_hosts_counts_and_reason() -> None:
    hosts = pyinfra.log_hosts(lines(FAILED_RUN), FLEET, dry=False, returncode=1)
    assert hosts == [
        HostResult("belt-1-orin", 3, 1, 1, 'Job for circularnet-triton.service failed because the control process exited '
                   'with error code.; See "systemctl status circularnet-triton.service" and "journalctl -xeu '
                   'circularnet-triton.service" for details.'),
        HostResult("belt-2-orin", 2, 1, 1, "no space left on device in /var/lib/circularnet/models: needs 412 MB, 96 MB free"),
        HostResult("gpu-server-1", 3, 1, 1, "Command timed out after 600s"),
        HostResult("gpu-server-2", 0, 0, 1, "Could not connect ([Errno None] Unable to connect to port 22 on 172.31.254.22)"),
    ]


def test_a_host_the_log_never_names_failed_with_pyinfras_own_error() -> None:
    hosts = pyinfra.log_hosts(lines(UNREACHABLE), ("belt-1-orin", "belt-2-orin"), dry=True, returncode=1)
    assert hosts == [
        HostResult("belt-1-orin", None, 0, 1, "Could not connect ([Errno None] Unable to connect to port 22 on 172.31.254.11)"),
        HostResult("belt-2-orin", None, 0, 1, "pyinfra error: No hosts remaining!"),
    ]
    assert pyinfra.log_hosts([], ("a",), dry=False, returncode=3)[0].reason == "pyinfra exited 3 before this host finished"


def test_the_table_of_a_failed_run_names_each_host_and_why() -> None:
    result = DeployResult("pyinfra", False, pyinfra.log_hosts(lines(FAILED_RUN), FLEET, dry=False, returncode=1), 1, 42.0)
    console = Console(width=100, record=True, color_system=None)
    console.print(deploy_cli.summary(result, "local"))
    text = console.export_text()
    assert "deploy · stack local · pyinfra run · 42.0 s" in text
    assert "│ belt-2-orin  │ pyinfra │  2 │       1 │      1 │ no space left on device in" in text
    assert "│ gpu-server-2 │ pyinfra │  0 │       0 │      1 │ Could not connect ([Errno None] Unable to" in text
    assert "│              │         │    │         │        │ connect to port 22 on 172.31.254.22)" in text
    assert "…" not in text  # a long reason folds onto more lines, never cut


def test_a_host_name_is_shown_as_text_not_markup() -> None:
    result = DeployResult("pyinfra", False, [HostResult("[red]x", 1, 0, 1, "[bold]boom")], 1)
    console = Console(width=100, record=True, color_system=None)
    console.print(deploy_cli.summary(result, "[i]s"))
    text = console.export_text()
    assert "[red]x" in text and "[bold]boom" in text and "stack [i]s" in text


def fake_pyinfra(tmp_path: Path, log: str, code: int) -> Path:
    """A pyinfra that prints `log` on stderr, nothing on stdout, and exits `code`."""
    fake = tmp_path / "pyinfra"
    fake.write_text(f"#!/bin/sh\ncat >&2 <<'LOG'\n{log}LOG\nexit {code}\n")
    fake.chmod(0o755)
    return tmp_path


def test_cnctl_deploy_of_a_failed_run_shows_the_log_once_then_the_table(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pyinfra, "BIN", fake_pyinfra(tmp_path, FAILED_RUN, 1))
    monkeypatch.setattr(deploy_cli, "load_stack", lambda stack: None)
    monkeypatch.setattr(engines, "for_stack", lambda cfg, limit, stack: Target(stack, tmp_path / "inv.py", tmp_path / "inv.yml", FLEET))
    outcome = CliRunner().invoke(app, ["deploy", "--stack", "local"], env={"COLUMNS": "100"})
    assert outcome.exit_code == 1, outcome.output
    assert "without a JSON report" not in outcome.output
    assert outcome.output.count("Starting operation: Model | Sync the pinned version") == 1
    assert all(f"│ {host}" in outcome.stdout for host in FLEET), outcome.stdout
    assert "no space left on device" in outcome.stdout
    assert outcome.stderr.rstrip().endswith("failed on belt-1-orin, belt-2-orin, gpu-server-1, gpu-server-2 (pyinfra exited 1)")
