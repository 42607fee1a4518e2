"""cnctl.status_prometheus as data: Prometheus' JSON answer in, the same HostStatus and table cells out.

A host's health report goes through cnhost.metrics.exposition (what node-exporter serves), is read back as the
instant vector Prometheus' API answers (the shape of /api/v1/query, with the site's target labels), and the
report rebuilt from it renders the table's cells as the report itself does. Prometheus' error answers, the
password file, an unreachable Prometheus and `--source` are here too; a real Prometheus in
test_status_prometheus_live.py."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from cnctl import status, status_prometheus
from cnctl.cli import status as status_cli
from cnctl.inventory import InventoryHost, Ssh
from cnctl.status import HostStatus
from cnctl.status_prometheus import (
    PrometheusUnavailable,
    Sample,
    fleet_status,
    host_status,
    parse_vector,
    query,
    read_password,
    report_of,
)
from cnhost import metrics
from cnhost.health_report import DEFAULTS, judge
from tests.unit.test_metrics import full_report
from tests.unit.test_status import GOOD
from tests.unit.test_verify_report import observed

URL = "http://10.40.2.10:9090"
GPU = InventoryHost("gpu-server-1", "servers", Ssh(address="10.40.2.10", user="deploy"),
                    {"cn_platform": "server", "cn_monitoring_collection": "site"})
BELT = InventoryHost("belt-1-orin", "edge", Ssh(address="10.40.1.21", user="deploy"),
                     {"cn_platform": "jetson", "cn_monitoring_collection": "agent"})
SAMPLE = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$')
LABEL = re.compile(r'(?P<key>[a-zA-Z_][a-zA-Z0-9_]*)="(?P<value>(?:[^"\\]|\\.)*)",?')


def vector(pages: dict[str, str], at: float = 1790000100.0, up: dict[str, int] | None = None,
           labels: dict[str, dict[str, str]] | None = None) -> dict[str, Any]:
    """What /api/v1/query answers for status_prometheus.QUERY when Prometheus has scraped `pages` (instance ->
    the text node-exporter served) as job circularnet-node: every sample with the target's labels, and `up`."""
    result: list[dict[str, Any]] = []
    for instance, text in pages.items():
        target: dict[str, str] = {"instance": instance, "job": "circularnet-node", "site": "plant-a",
                  **(labels or {}).get(instance, {"group": "edge", "platform": "jetson"})}
        result.append({"metric": {"__name__": "up", **target}, "value": [at, str((up or {}).get(instance, 1))]})
        for line in text.split("\n"):
            if not line or line.startswith("#"):
                continue
            found = SAMPLE.match(line)
            assert found is not None, line
            own = {m["key"]: re.sub(r"\\(.)", lambda e: "\n" if e[1] == "n" else e[1], m["value"])
                   for m in LABEL.finditer(found["labels"] or "")}
            value = found["value"]
            result.append({"metric": {"__name__": found["name"], **own, **target},
                           "value": [at, value if value in ("NaN", "+Inf", "-Inf") else repr(float(value))]})
    for instance, value in (up or {}).items():
        if instance not in pages:
            target = {"instance": instance, "job": "circularnet-node", "site": "plant-a", "group": "edge",
                      "platform": "jetson"}
            result.append({"metric": {"__name__": "up", **target}, "value": [at, str(value)]})
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


def samples_of(report: dict[str, Any]) -> list[Sample]:
    server = {"gpu-server-1": {"group": "servers", "platform": "server"}}
    return parse_vector(vector({"gpu-server-1": metrics.exposition(report)}, labels=server))


def cells(host: HostStatus) -> tuple[str, ...]:
    report = host.report or {}
    return (status_cli._platform(report), status_cli._model(report), status_cli._triton(host, report),
            status_cli._pipeline(report), status_cli._disk(report), status_cli._deployed(report))


NOW = 1790000000.0 + 60  # GOOD was checked at 1790000000 (2026-09-21 14:13:20 UTC): a minute later


# --- the report rebuilt ------------------------------------------------------------------------------------


@pytest.mark.parametrize("report", [GOOD, full_report()], ids=["no pipeline", "pipeline"])
def test_a_healthy_hosts_row_is_the_same_as_from_its_report(report: dict[str, Any]) -> None:
    found = host_status(GPU, samples_of(report), NOW, URL)
    assert (found.reachable, found.healthy, found.problems, found.source, found.origin) == (
        True, True, (), "prometheus", URL)
    over_ssh = HostStatus("gpu-server-1", "servers", True, True, (), "fresh", report)
    assert cells(found) == cells(over_ssh)
    assert cells(found)[1:3] == ("circularnet@2", "[green]ready[/]")


def test_the_rebuilt_report_has_the_reports_own_values() -> None:
    report = full_report()
    rebuilt = report_of(samples_of(report), "server")
    assert rebuilt is not None
    for key in ("host", "hostname", "checked", "healthy", "disk", "versions"):
        assert rebuilt[key] == report[key], key
    assert rebuilt["problem_count"] == 0
    assert rebuilt["model"] == {"name": "circularnet", "version": 2, "ready": True}
    assert rebuilt["triton"] == {"live": True}
    assert rebuilt["last_deploy"] == {"at": report["last_deploy"]["at"], "stack": "local", "runtime": "container",
                                      "model": {"name": "circularnet", "version": 2, "action": "pinned"}}
    assert {k: v for k, v in rebuilt["pipeline"].items() if v is not None} == {
        k: v for k, v in report["pipeline"].items() if v is not None}
    assert rebuilt["platform"] == {"platform": "server", "host": "gpu-server-1", "l4t": None}  # the target's label


def test_a_jetson_shows_its_l4t() -> None:
    report = copy.deepcopy(GOOD)
    report["versions"]["l4t"] = "36.4.3"
    found = host_status(BELT, parse_vector(vector({"belt-1-orin": metrics.exposition(report)})), NOW, URL)
    assert cells(found)[0] == "jetson · L4T 36.4.3"


def test_an_unhealthy_report_counts_its_problems_and_says_what_the_metrics_show() -> None:
    bad = judge(observed(triton_metadata=None, model_serve=None), DEFAULTS)
    found = host_status(GPU, samples_of(bad), NOW, URL)
    assert (found.reachable, found.healthy) == (True, False)
    count = len(bad["problems"])
    assert found.problems == ((f"its health report has {count} problems (Triton not answering); their text stays on "
                              "the host: `cnctl status --source ssh --limit gpu-server-1` asks it directly"),)
    assert cells(found)[2] == "[red]down[/]"


def test_a_version_other_than_the_pinned_one_is_shown() -> None:
    report = copy.deepcopy(GOOD)
    report["model"]["version"] = 3
    report["healthy"], report["problems"] = False, ["model circularnet version 3 is served, but ..."]
    found = host_status(GPU, samples_of(report), NOW, URL)
    assert "its health report has 1 problem (version 3 served, 2 pinned)" in found.problems[0]


def test_a_stale_report_is_unhealthy_with_its_age() -> None:
    found = host_status(GPU, samples_of(GOOD), NOW + 3600, URL)
    assert (found.reachable, found.healthy) == (True, False)
    assert found.problems == (("its newest health report is 61 min old (of 2026-09-21T14:13:20+00:00), over 15 min: its "
                              "circularnet-health.timer has stopped (see `systemctl status circularnet-health.timer` "
                              "on it); `cnctl status --source ssh --limit gpu-server-1` asks it directly"),)
    assert found.report is not None and found.report["checked"] == "2026-09-21T14:13:20+00:00"


def test_exactly_the_alerts_bound_is_still_fresh() -> None:
    checked = 1790000000.0  # GOOD's checked time
    assert host_status(GPU, samples_of(GOOD), checked + status_prometheus.STALE_S, URL).healthy
    assert not host_status(GPU, samples_of(GOOD), checked + status_prometheus.STALE_S + 1, URL).healthy


def test_a_host_without_series_is_unreachable_and_says_how_it_is_collected() -> None:
    [found] = fleet_status("prod", [BELT], vector({"gpu-server-1": metrics.exposition(GOOD)}), NOW, URL).hosts
    assert (found.reachable, found.healthy, found.report) == (False, False, None)
    assert found.problems == ((f"unreachable: the site's Prometheus ({URL}) has no series of it from the last 5 min "
                              "(its Prometheus agent remote-writes its metrics): check the host, its node-exporter "
                              "(`systemctl status prometheus-node-exporter`) and the link to the site; `cnctl status "
                              "--source ssh --limit belt-1-orin` asks it directly"),)


def test_a_host_whose_exporter_is_down_is_unreachable() -> None:
    [found] = fleet_status("prod", [BELT], vector({}, up={"belt-1-orin": 0}), NOW, URL).hosts
    assert (found.reachable, found.healthy) == (False, False)
    assert found.problems[0].startswith("unreachable: the site's Prometheus cannot scrape its node-exporter (up 0")


def test_a_collected_host_without_health_metrics_is_unhealthy_naming_the_layers() -> None:
    only_node = "node_load1 0.5\n"
    [found] = fleet_status("prod", [BELT], vector({"belt-1-orin": only_node}), NOW, URL).hosts
    assert (found.reachable, found.healthy, found.report) == (True, False, None)
    assert "no health report metrics of it (cnctl_health_*)" in found.problems[0]
    assert "run the deploy (its monitoring and verify layers)" in found.problems[0]


def test_hosts_come_in_fleet_order_each_from_its_own_instance() -> None:
    bad = judge(observed(triton_metadata=None, model_serve=None), DEFAULTS)
    answer = vector({"belt-1-orin": metrics.exposition(bad), "gpu-server-1": metrics.exposition(GOOD),
                     "someone-else": metrics.exposition(GOOD)})
    fleet = fleet_status("prod", [GPU, BELT], answer, NOW, URL)
    assert [(h.name, h.healthy) for h in fleet.hosts] == [("gpu-server-1", True), ("belt-1-orin", False)]
    assert (fleet.source, fleet.origin, fleet.unhealthy) == ("prometheus", URL, ["belt-1-orin"])
    assert fleet.to_json()["source"] == "prometheus"


# --- Prometheus' answers -----------------------------------------------------------------------------------


# An answer in the shape Prometheus 2.42's /api/v1/query gives (values as strings, Go's float format, NaN).
REAL = json.loads("""{"status":"success","data":{"resultType":"vector","result":[
 {"metric":{"__name__":"cnctl_health_healthy","group":"edge","instance":"belt-1-orin","job":"circularnet-node",
   "platform":"jetson","site":"plant-a"},"value":[1790000100.123,"1"]},
 {"metric":{"__name__":"up","group":"edge","instance":"belt-1-orin","job":"circularnet-node","platform":"jetson",
   "site":"plant-a"},"value":[1790000100.123,"1"]},
 {"metric":{"__name__":"cnctl_disk_free_bytes","instance":"belt-1-orin","job":"circularnet-node","path":"/"},
  "value":[1790000100.123,"42949672960"]},
 {"metric":{"__name__":"cnctl_pipeline_last_run_timestamp_seconds","instance":"belt-1-orin"},
  "value":[1790000100.123,"NaN"]}]}}""")


def test_a_real_answers_samples_are_read() -> None:
    found = parse_vector(REAL)
    assert [(s.name, s.labels["instance"], s.value) for s in found[:3]] == [
        ("cnctl_health_healthy", "belt-1-orin", 1.0), ("up", "belt-1-orin", 1.0),
        ("cnctl_disk_free_bytes", "belt-1-orin", 42949672960.0)]
    assert found[2].labels["path"] == "/" and "__name__" not in found[0].labels
    rebuilt = report_of(found)
    assert rebuilt is not None and rebuilt["pipeline"]["last_run"] is None  # NaN: no time


@pytest.mark.parametrize(("body", "message"), [
    ({"status": "error", "errorType": "bad_data", "error": "invalid parameter \"query\": 1:2: parse error"},
     "refused the query (bad_data: invalid parameter \"query\": 1:2: parse error)"),
    ({"status": "success", "data": {"resultType": "matrix", "result": []}}, "no vector (resultType 'matrix')"),
    ({"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1]}]}},
     "a series this reader does not know"),
    ({"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "x"]}]}},
     "a sample value that is no number: 'x'"),
    (["not", "an", "object"], "not a JSON object"),
])
def test_an_answer_of_another_shape_is_a_problem_naming_the_url(body: Any, message: str) -> None:
    with pytest.raises(PrometheusUnavailable, match=re.escape(message)) as caught:
        parse_vector(body, URL)
    assert URL in str(caught.value)


# --- the password and the connection --------------------------------------------------------------------


class Monitoring:
    def __init__(self, password_file: str | None) -> None:
        self.password_file = password_file


class Config:
    def __init__(self, password_file: str | None) -> None:
        self.monitoring = Monitoring(password_file)


def test_the_password_is_the_files_first_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "pw").write_text("s3cret \nsecond line\n")
    assert read_password(Config("~/pw")) == "s3cret"  # type: ignore[arg-type]


@pytest.mark.parametrize(("content", "message"), [
    (None, "no such file: write the site Prometheus' password of user circularnet as its first line"),
    ("\n\n", "its first line is empty"),
])
def test_a_missing_or_empty_password_file_is_named_with_the_fix(tmp_path: Path, content: str | None,
                                                                message: str) -> None:
    path = tmp_path / "pw"
    if content is not None:
        path.write_text(content)
    with pytest.raises(PrometheusUnavailable, match=re.escape(f"monitoring.passwordFile {path}: {message}")):
        read_password(Config(str(path)))  # type: ignore[arg-type]
    with pytest.raises(PrometheusUnavailable, match="monitoring.passwordFile is not set"):
        read_password(Config(None))  # type: ignore[arg-type]


def test_a_closed_port_is_unreachable_naming_the_url() -> None:
    from cnctl.sandbox.prometheus import free_port

    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(PrometheusUnavailable, match=re.escape(f"cannot reach the site's Prometheus at {url} (")):
        query(url, "up", "pw", timeout=5)


# --- --source ------------------------------------------------------------------------------------------


def test_auto_reads_ssh_for_a_stack_without_a_monitoring_server(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def over_ssh(stack: str, limit: str | None, **_: Any) -> str:
        asked.append(stack)
        return "fleet"

    monkeypatch.setattr(status, "collect", over_ssh)
    assert status_prometheus.collect_from_source("auto", "prod", "edge") == "fleet"
    assert asked == ["prod"]


def test_prometheus_for_a_stack_without_a_monitoring_server_is_bad_input() -> None:
    with pytest.raises(status.StatusProblem, match="stack prod names no monitoring.server"):
        status_prometheus.collect_from_source("prometheus", "prod", "edge")


def test_auto_warns_and_falls_back_to_ssh_when_prometheus_cannot_be_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    def unavailable(*_: Any, **__: Any) -> None:
        raise PrometheusUnavailable("cannot reach the site's Prometheus at http://x:9090 (refused)")

    monkeypatch.setattr(status_prometheus, "has_site", lambda stack, environ=None: True)
    monkeypatch.setattr(status_prometheus, "collect", unavailable)
    monkeypatch.setattr(status, "collect", lambda stack, limit, **_: "over ssh")
    warned: list[str] = []
    assert status_prometheus.collect_from_source("auto", "x", warn=warned.append) == "over ssh"
    assert warned == [("cannot reach the site's Prometheus at http://x:9090 (refused); asking every host over SSH "
                       "instead")]
    with pytest.raises(PrometheusUnavailable):
        status_prometheus.collect_from_source("prometheus", "x", warn=warned.append)


def test_the_query_asks_for_every_family_the_report_writes_and_no_other() -> None:
    names = {line.split()[2] for line in metrics.exposition(full_report()).splitlines() if line.startswith("# TYPE")}
    pattern = re.search(r'__name__=~"([^"]+)"', status_prometheus.QUERY)
    assert pattern is not None
    assert all(re.fullmatch(pattern.group(1), name) for name in names | {"up"}), names
    assert not re.fullmatch(pattern.group(1), "cnctl_tegra_cpu_frequency_hertz")
