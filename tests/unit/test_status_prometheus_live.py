"""`cnctl status --source prometheus` against a real Prometheus: Debian's /usr/bin/prometheus on 127.0.0.1 behind
basic auth, scraping fake hosts' node-exporter pages (cnhost.metrics.exposition of their reports) from a loopback
HTTP server (cnctl/sandbox/prometheus.py), and a stack in tmp_path whose monitoring.server is 127.0.0.1.

No root, loopback only. A machine without Prometheus fails here with the install hint: never a skip."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from cnctl import status
from cnctl.cli.main import app
from cnctl.sandbox import prometheus
from cnhost.health_report import DEFAULTS, judge
from cnhost.metrics import exposition
from tests.unit.stack_variants import stack_variant
from tests.unit.test_status import FakeRemote
from tests.unit.test_verify_report import observed

PASSWORD = "the-site's password"
EDGE = ("belt-1-orin", "belt-2-orin", "belt-3-orin", "belt-4-orin")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[prometheus.Site, prometheus.FakeHosts]]:
    """Prometheus scraping every second: the monitoring server and belt-1 healthy, belt-2 unhealthy (Triton
    down), belt-3's exporter failing (HTTP 503: up 0); belt-4 is in the stack but not collected."""
    try:
        prometheus.binary()
    except FileNotFoundError as exc:
        pytest.fail(str(exc))
    now = time.time()
    good, bad = judge(observed(now=now), DEFAULTS), judge(observed(now=now, triton_metadata=None, model_serve=None), DEFAULTS)
    hosts = prometheus.FakeHosts(
        {"plant-gpu-1": exposition(good), "belt-1-orin": exposition(good), "belt-2-orin": exposition(bad),
         "belt-3-orin": 503},
        labels={"plant-gpu-1": {"group": "servers", "platform": "server"}})
    with hosts.serving(), prometheus.running_prometheus(tmp_path_factory.mktemp("prometheus"), hosts, PASSWORD,
                                                        interval_s=1.0, rounds=4) as running:
        prometheus.wait_for_targets(running, 4, healthy_pages=3)
        yield running, hosts


def stack(tmp_path: Path, port: int, password: str | None = PASSWORD) -> str:
    """The onprem stack with the monitoring server at `localhost` (127.0.0.1: a stack refuses a loopback IP as a
    host's address, not a name) port `port`, and the four belts; the password file in tmp_path (absent when
    `password` is None)."""
    secret = tmp_path / "monitoring.password"
    if password is not None:
        secret.write_text(password + "\n")

    def change(config: dict[str, Any]) -> None:
        config.update(prometheus.site_sections("plant-gpu-1", EDGE, port, secret))

    return stack_variant(tmp_path, change, base="onprem")


def run(*args: str) -> Result:
    result = CliRunner().invoke(app, list(args))
    assert "Traceback" not in result.output, result.output
    return result


def URL(site: prometheus.Site) -> str:
    """The site's URL as the stack names it (site_url: the monitoring server's address, `localhost`)."""
    return site.url.replace("127.0.0.1", "localhost")


def port_of(site: prometheus.Site) -> int:
    return int(site.url.rsplit(":", 1)[1])


def test_status_reads_every_host_from_prometheus(site: tuple[prometheus.Site, prometheus.FakeHosts],
                                                 tmp_path: Path) -> None:
    running, _ = site
    started = time.monotonic()
    result = run("status", "--stack", stack(tmp_path, port_of(running)), "--source", "prometheus")
    took = time.monotonic() - started
    assert result.exit_code == 1, result.output
    assert "2/5 healthy" in result.stdout
    lines = result.stdout.splitlines()
    assert f"source: prometheus, the site's at {URL(running)}" in lines
    rows = {line.split("│")[1].strip(): line for line in lines if line.startswith("│ ") and "-orin" in line or
            line.startswith("│ plant-gpu-1")}
    assert set(rows) == {"plant-gpu-1", *EDGE}, result.stdout
    for name in ("plant-gpu-1", "belt-1-orin"):
        assert all(cell in rows[name] for cell in ("circularnet@2", "ready", "40.0 GiB (40%)", "none")), rows[name]
    assert "down" in rows["belt-2-orin"]
    assert " ".join(result.stderr.split()) == ("not healthy: belt-2-orin (unhealthy), belt-3-orin (unreachable), "
                                               "belt-4-orin (unreachable)")
    problems = [line for line in lines if line.startswith("belt-")]
    assert problems[0].startswith("belt-2-orin: its health report has ") and "(Triton not answering)" in problems[0]
    assert problems[1].startswith("belt-3-orin: unreachable: the site's Prometheus cannot scrape its node-exporter "
                                  "(up 0")
    assert problems[2].startswith(f"belt-4-orin: unreachable: the site's Prometheus ({URL(running)}) has no series")
    assert took < 10, took  # one query; a bounded answer, whatever the machine


def test_json_says_the_source_and_each_hosts_rebuilt_report(site: tuple[prometheus.Site, prometheus.FakeHosts],
                                                            tmp_path: Path) -> None:
    running, _ = site
    result = run("status", "--stack", stack(tmp_path, port_of(running)), "--source", "prometheus", "--json")
    data = json.loads(result.stdout)
    assert (data["source"], data["origin"], data["unhealthy"]) == ("prometheus", URL(running),
                                                                   ["belt-2-orin", "belt-3-orin", "belt-4-orin"])
    assert [h["name"] for h in data["hosts"]] == [*EDGE, "plant-gpu-1"]  # fleet order
    first = data["hosts"][-1]
    assert (first["name"], first["source"], first["reachable"], first["healthy"]) == ("plant-gpu-1", "prometheus",
                                                                                      True, True)
    assert first["report"]["model"] == {"name": "circularnet", "version": 2, "ready": True}
    assert first["report"]["versions"]["driver"] == "550.90.07"


def test_auto_reads_prometheus_when_the_stack_has_a_monitoring_server(
        site: tuple[prometheus.Site, prometheus.FakeHosts], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    running, _ = site
    remote = FakeRemote()
    monkeypatch.setattr(status, "run_on_hosts", remote)
    result = run("status", "--stack", stack(tmp_path, port_of(running)), "--limit", "belt-1-orin")
    assert result.exit_code == 0, result.output
    assert f"source: prometheus, the site's at {URL(running)}" in result.stdout.splitlines()
    assert remote.calls == []  # no host asked over SSH


def test_a_wrong_password_is_exit_2_naming_the_url_and_the_file(site: tuple[prometheus.Site, prometheus.FakeHosts],
                                                                tmp_path: Path) -> None:
    running, _ = site
    result = run("status", "--stack", stack(tmp_path, port_of(running), "not-the-password"), "--source", "prometheus")
    assert result.exit_code == 2, result.output
    assert " ".join(result.stderr.split()) == (
        f"error: the site's Prometheus at {URL(running)} refused the password of user circularnet (HTTP 401): put its "
        f"password as the first line of {tmp_path / 'monitoring.password'}, or use --source ssh")
    assert result.stdout == ""


def test_a_missing_password_file_is_exit_2_naming_it(site: tuple[prometheus.Site, prometheus.FakeHosts],
                                                    tmp_path: Path) -> None:
    running, _ = site
    result = run("status", "--stack", stack(tmp_path, port_of(running), None), "--source", "prometheus")
    assert result.exit_code == 2, result.output
    assert f"error: monitoring.passwordFile {tmp_path / 'monitoring.password'}: no such file: write" in \
        " ".join(result.stderr.split())


def test_an_unreachable_prometheus_is_exit_2_or_with_auto_a_warning_and_ssh(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    closed = prometheus.free_port()
    path = stack(tmp_path, closed)
    result = run("status", "--stack", path, "--source", "prometheus")
    assert result.exit_code == 2, result.output
    said = " ".join(result.stderr.split())
    assert said.startswith(f"error: cannot reach the site's Prometheus at http://localhost:{closed} (") and \
        said.endswith("or use --source ssh"), said

    remote = FakeRemote()
    monkeypatch.setattr(status, "run_on_hosts", remote)
    result = run("status", "--stack", path, "--limit", "edge")
    assert result.exit_code == 0, result.output
    said = " ".join(result.stderr.split())
    assert said.startswith(f"warning: cannot reach the site's Prometheus at http://localhost:{closed} (") and \
        said.endswith("asking every host over SSH instead"), said
    assert "source: ssh, each host's health report run now" in result.stdout
    assert sorted(h.name for h in remote.calls[0][0]) == sorted(EDGE)
