"""The sandbox's progress lines: what a log of `make demo` shows while a long phase runs (issue 25, item 8)."""

from __future__ import annotations

import io
import re
import time

from rich.console import Console

from cnctl.sandbox.commands import RichProgress
from cnctl.sandbox.progress import Progress, Quiet, heartbeat_line


def test_a_step_says_when_it_starts_and_how_long_it_took() -> None:
    said: list[str] = []
    with Progress(said.append, heartbeat_s=None).step("build arm64 host image"):
        said.append("(work)")
    assert said[:2] == ["build arm64 host image …", "(work)"]
    assert re.fullmatch(r"build arm64 host image \(\d+\.\d s\)", said[2]), said


def test_a_running_step_beats_with_elapsed_time_and_its_latest_detail_then_stops() -> None:
    said: list[str] = []
    with Progress(said.append, heartbeat_s=0.05).step("boot 3 hosts") as detail:
        detail("I: downloading packages...")
        time.sleep(0.3)
    ended = len(said)
    time.sleep(0.15)
    assert len(said) == ended, "the heartbeat outlived its step"
    beats = said[1:-1]
    assert len(beats) >= 2, said
    assert all(re.fullmatch(r"  … boot 3 hosts: \d+ s \[I: downloading packages\.\.\.\]", b) for b in beats), beats
    assert said[-1].startswith("boot 3 hosts (")


def test_a_heartbeat_shows_the_end_of_a_long_detail_line() -> None:
    line = heartbeat_line("build arm64 host image 5834 (mmdebstrap bookworm from http://deb.debian.org/debian)", 61.4,
                          "x" * 200 + "Setting up systemd (252.39-1~deb12u1) ...")
    assert line.startswith("  … build arm64 host image 5834: 61 s [")  # the title's parenthesis said at the start
    assert line.endswith("Setting up systemd (252.39-1~deb12u1) ...]")
    assert len(line) <= len("  … build arm64 host image 5834: 61 s []") + 90


def test_quiet_prints_nothing(capsys) -> None:
    quiet = Quiet()
    with quiet.step("build amd64 host image") as detail:
        detail("anything")
    quiet.note("a fact")
    assert capsys.readouterr().out == ""


def test_the_cli_writes_plain_lines_with_elapsed_time_when_its_output_is_not_a_terminal() -> None:
    buffer = io.StringIO()
    progress = RichProgress(Console(file=buffer, force_terminal=False, width=200))
    progress._heartbeat_s = 0.05
    with progress.step("start site network [172.31.254.0/24]") as detail:
        detail("registry up")
        time.sleep(0.2)
    progress.note("warning: [bold] stays literal")
    lines = buffer.getvalue().splitlines()
    assert lines[0] == "start site network [172.31.254.0/24] …"
    assert any(re.fullmatch(r"  … start site network \[172\.31\.254\.0/24\]: \d+ s \[registry up\]", x) for x in lines)
    assert re.fullmatch(r"start site network \[172\.31\.254\.0/24\] \(\d+\.\d s\)", lines[-2]), lines
    assert lines[-1] == "  warning: [bold] stays literal"
