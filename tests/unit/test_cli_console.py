"""Output a user reads whole: no log line wrapped mid-phrase, no table cell cut (`trit…`).

Written to a file or a pipe (CliRunner's output is one), the width is unbounded whatever COLUMNS says; in a
terminal, tables fit its width by folding cells onto more lines, never by cutting them.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
from typer.testing import CliRunner

from cnctl.cli import status as status_cli
from cnctl.cli.main import app
from cnctl.console import CliConsole
from cnctl.status import FleetStatus, HostStatus

LONG_PROBLEM = ("Triton not answering on 127.0.0.1:8000 (circularnet-triton.service is inactive): "
                "see `journalctl -u circularnet-triton`")
REPORT: dict[str, Any] = {
    "platform": {"platform": "server"}, "versions": {"driver": "550.90.07"},
    "model": {"name": "circularnet-efficientnet-v2-instance-segmentation", "version": 12, "ready": False},
    "triton": {"live": False},
    "pipeline": {"frames_captured": 123456, "last_run": "2026-09-21T13:56:01Z", "rows": 98765, "queue_files": 3,
                 "uploaded_files": 4321, "last_upload": "2026-09-21T13:55:00Z", "frames_dropped": 2},
    "disk": [{"path": "/var/lib/circularnet", "free_bytes": 40 * 2**30, "free_percent": 40.0}],
}
FLEET = FleetStatus("local", (
    HostStatus("plant-a-line-7-gpu-server-with-a-long-name", "servers", True, False, (LONG_PROBLEM,), "fresh", REPORT),
))
CELLS = ("plant-a-line-7-gpu-server-with-a-long-name", "servers", "server · driver 550.90.07",
         "circularnet-efficientnet-v2-instance-segmentation@12", "down",
         "123456 frames · run 13:56:01 · 98765 rows · queue 3 · 4321 up 13:55:00 · dropped 2")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("columns", ["40", "80", "200"])
def test_to_a_file_the_status_table_is_whole_at_any_columns(columns: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(status_cli, "collect_from_source", lambda source, stack, limit, warn: FLEET)
    result = CliRunner().invoke(app, ["status", "--stack", "local"], env={"COLUMNS": columns})
    assert result.exit_code == 1, result.output
    [row] = [line for line in result.stdout.splitlines() if line.startswith("│ plant-a")]
    assert all(f"│ {cell}" in row for cell in CELLS), row
    assert f"1: {LONG_PROBLEM}" in row
    assert "…" not in result.stdout
    assert f"plant-a-line-7-gpu-server-with-a-long-name: {LONG_PROBLEM}" in result.stdout.splitlines()


def columns_of(table_text: str) -> list[str]:
    """Each column's text in a rendered one-row table, its folded lines joined, without whitespace."""
    body = table_text.split("┩\n", 1)[1].split("└", 1)[0]
    cells = [line.split("│")[1:-1] for line in body.splitlines()]
    return ["".join("".join(row[i].split()) for row in cells) for i in range(len(cells[0]))]


@pytest.mark.parametrize("width", [60, 100])
def test_to_a_narrow_terminal_the_status_table_folds_and_cuts_nothing(width: int) -> None:
    terminal = Terminal()
    CliConsole(file=terminal, width=width, color_system=None).print(status_cli.table(FLEET))
    text = terminal.getvalue()
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= width
    expected = [*CELLS, "40.0 GiB (40%)", "-", f"1: {LONG_PROBLEM}"]
    assert columns_of(text) == ["".join(cell.split()) for cell in expected]


def test_to_a_file_a_long_line_is_one_line_whatever_columns_says() -> None:
    result = CliRunner().invoke(app, ["validate", "--stack", "local"], env={"COLUMNS": "30"})
    assert result.exit_code == 0, result.output
    [line] = result.stdout.splitlines()
    assert line.startswith("ok stack local: ") and " model " in line


def test_in_a_terminal_the_width_is_the_terminals() -> None:
    assert CliConsole(file=Terminal(), width=72).width == 72
    assert CliConsole(file=io.StringIO(), width=72).width > 1000
