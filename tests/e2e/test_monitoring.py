"""The site's monitoring on the sandbox fleet (the monitoring layer's part 5, docs/monitoring.md): two fresh
servers of a stack that names the first as `monitoring.server`, converged at once, the site by pyinfra and the
other (Triton on loopback, so an agent) by Ansible; then each engine finds nothing to change on the other's host.

- the site holds both hosts' series with the stack's labels, scraped (the site itself) or remote-written (the
  agent), evaluates the alert rules, and asks for the site's password on every page; Prometheus and
  Alertmanager listen on the site interface's address only, the agent on loopback only;
- faults, overlapped in one schedule: the site host's uploader stopped with results waiting
  (CircularNetUploadsStalled fires after 15 minutes without an upload, and resolves when it runs again); Triton
  stopped on the site host (CircularNetTritonDown reaches Alertmanager, and resolves once systemd runs Triton
  again); the monitoring host's Prometheus and Alertmanager stopped (both hosts keep serving: nothing on a host
  depends on monitoring); the agent's link to the site cut for LINK_CUT_S (a blackhole route on the host: its SSH
  stays up), after which the agent's WAL delivers the backlog: no sample of the cut is missing.
"""

from __future__ import annotations

import base64
import concurrent.futures
import functools
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from cnctl.sandbox import fleet as sandbox
from cnctl.sandbox.instance import Instance
from cnctl.sandbox.layout import HostSpec
from cnctl.sandbox.state import FleetState
from tests.e2e.fleet_helpers import SESSION_NET, view_of, write_stack
from tests.e2e.host_state import feed_frames, health_report, pipeline_state
from tests.e2e.test_layers import nothing_changes, run_all
from tests.e2e.triton_client import infer
from tests.unit.test_dashboards import run_browser, screenshot_kept

pytestmark = pytest.mark.fleet

LINK_CUT_S = 600  # the fault: a host's link to the site cut for 10 minutes
STALL_S = 900 + 120  # CircularNetUploadsStalled: no upload for 15 minutes, `for: 2m`
SCRAPE_S = 30  # roles/monitoring monitoring_scrape_interval
ALERT_TIMEOUT_S = 480  # Triton down -> health report (run now) -> scrape -> `for: 3m` -> Alertmanager


# The scenario's two hosts: names and addresses of their own, so that it runs beside the tier's other fresh hosts.
SITE_HOST, AGENT_HOST = ("mon-1", 231), ("mon-2", 232)


def monitoring_stack(directory: Path) -> Path:
    """The local stack on the session's subnet, naming mon-1 as the site."""
    path = write_stack(directory, SESSION_NET)
    document = yaml.safe_load(path.read_text())
    document["config"]["circularnet:monitoring"]["server"] = SITE_HOST[0]
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


class Site:
    """The site's Prometheus and Alertmanager as the machine reaches them, with the stack's password."""

    def __init__(self, address: str, stack: Path) -> None:
        document = yaml.safe_load(stack.read_text())["config"]["circularnet:monitoring"]
        password = Path(document["passwordFile"]).expanduser().read_text().splitlines()[0]
        self.prometheus, self.alertmanager = f"http://{address}:9090", f"http://{address}:9093"
        self.password = urllib.parse.quote(password, safe="")
        self.auth = "Basic " + base64.b64encode(f"circularnet:{password}".encode()).decode()

    def get(self, url: str, auth: bool = True) -> tuple[int, Any]:
        """(HTTP status, the JSON answer or None); status 0 when nothing answers."""
        request = urllib.request.Request(url, headers={"Authorization": self.auth} if auth else {})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                body = response.read()
                return response.status, json.loads(body) if body.lstrip().startswith((b"{", b"[")) else None
        except urllib.error.HTTPError as exc:
            return exc.code, None
        except (urllib.error.URLError, OSError):
            return 0, None

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        params = {"query": promql, **({"time": f"{at:.3f}"} if at is not None else {})}
        status, body = self.get(f"{self.prometheus}/api/v1/query?{urllib.parse.urlencode(params)}")
        assert status == 200, (status, promql)
        return body["data"]["result"]

    def firing(self, alert: str, instance: str) -> list[dict[str, Any]]:
        """The alert as Alertmanager has it (Prometheus sent it: it fired)."""
        status, body = self.get(f"{self.alertmanager}/api/v2/alerts?active=true")
        assert status == 200, status
        return [a for a in body if a["labels"].get("alertname") == alert and a["labels"].get("instance") == instance]

    def pending_or_firing(self, alert: str, instance: str) -> list[dict[str, Any]]:
        return self.query(f'ALERTS{{alertname="{alert}",instance="{instance}"}}')


STOP = threading.Event()  # set when the session ends early: the background faults stop at their next pause


def pause(seconds: float) -> None:
    """Sleep `seconds`, unless the session is ending (then the scenario stops here)."""
    if STOP.wait(max(0.0, seconds)):
        raise RuntimeError("the session ended: the monitoring scenario stopped")


def waited_quietly(check: Callable[[], Any], timeout: float, every: float = 5) -> Any:
    """check() until it is truthy (returned), at most `timeout` seconds; its last answer then."""
    deadline = time.monotonic() + timeout
    while not (found := check()) and time.monotonic() < deadline:
        pause(every)
    return found


def waited(what: str, check: Callable[[], Any], timeout: float, every: float = 10) -> Any:
    """check() until it is truthy (returned), at most `timeout` seconds; then fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s"
        pause(every)


@dataclass
class Scenario:
    """The two hosts, their view of the stack, and the faults running in the background once started."""

    site_host: sandbox.FreshHost
    agent_host: sandbox.FreshHost
    stack: Path
    env: dict[str, str]
    pool: concurrent.futures.ThreadPoolExecutor
    faults: concurrent.futures.Future[None] | None = None


@pytest.fixture(scope="session")
def scenario(fleet: FleetState, fleet_instance: Instance, fleet_env: dict[str, str],
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    """mon-1 and mon-2, fresh servers of a stack that names mon-1 its site, for the whole session: the faults run
    in a thread between the first test (which starts them) and the last (which judges them)."""
    hosts = []
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="monitoring-faults")
    try:
        for name, last in (SITE_HOST, AGENT_HOST):
            spec = HostSpec(name=name, group="servers", flavour="server", address=f"{SESSION_NET}{last}",
                            driver_branch="550")
            hosts.append(sandbox.boot_fresh_host(fleet_instance, fleet, spec))
        stack = monitoring_stack(tmp_path_factory.mktemp("monitoring-stack"))
        env = view_of(fleet, fleet_instance, fleet_env, stack, tmp_path_factory.mktemp("monitoring-view"), hosts)
        yield Scenario(hosts[0], hosts[1], stack, env, pool)
    finally:
        STOP.set()
        pool.shutdown(wait=True, cancel_futures=True)
        for host in hosts:
            sandbox.remove_fresh_host(fleet_instance, host.state)


def test_the_site_collects_the_fleet_behind_its_password_in_both_engines(scenario: Scenario) -> None:
    """The site (pyinfra) and an agent (Ansible) converged at once; the site collects both behind its password;
    each engine finds nothing to change after the other. Then the faults start in the background (judged by the
    tier's last test)."""
    site_host, agent_host, env = scenario.site_host, scenario.agent_host, scenario.env
    started = time.monotonic()
    first = run_all([(env, ("--engine", "pyinfra", "--limit", site_host.state.name)),
                     (env, ("--engine", "ansible", "--limit", agent_host.state.name))])
    print(f"monitoring: the site (pyinfra) and an agent (ansible) converged at once: {time.monotonic() - started:.0f} s")
    for (code, _, log), engine in zip(first, ("pyinfra", "ansible")):
        assert code == 0, f"{engine}:\n{log[-6000:]}"
    site = Site(site_host.state.address, scenario.stack)
    collects_both_behind_its_password(site, site_host, agent_host)
    nothing_changes([(env, ("--engine", "ansible", "--limit", site_host.state.name)),
                     (env, ("--engine", "pyinfra", "--limit", agent_host.state.name))])
    print(f"monitoring: checked, each engine after the other: {time.monotonic() - started:.0f} s")
    scenario.faults = scenario.pool.submit(faults, site, site_host, agent_host)


def test_alerts_fire_and_resolve_the_fleet_serves_and_a_cut_link_loses_nothing(scenario: Scenario) -> None:
    """The faults the first test started, judged: see `faults`."""
    assert scenario.faults is not None, "the site's monitoring scenario did not start (its first test failed)"
    scenario.faults.result(timeout=LINK_CUT_S + STALL_S + 1800)


def collects_both_behind_its_password(site: Site, site_host: sandbox.FreshHost, agent_host: sandbox.FreshHost) -> None:
    """Both hosts' series at the site with the stack's labels (the site scraped itself, the agent remote-wrote),
    the rules loaded, the password asked on every page, each service listening where the stack says only."""
    journal = "sudo journalctl -u prometheus -u prometheus-alertmanager --no-pager | tail -30"
    def ready(url: str) -> bool:
        return site.get(url)[0] == 200

    for url in (f"{site.prometheus}/-/ready", f"{site.alertmanager}/-/ready"):
        if not waited_quietly(functools.partial(ready, url), 90):
            pytest.fail(f"{url} does not answer:\n{site_host.ssh(journal).stdout}")
    for url in (f"{site.prometheus}/api/v1/query?query=up", f"{site.alertmanager}/api/v2/status",
                f"{site.prometheus}/graph", f"{site.prometheus}/api/v1/write"):
        assert site.get(url, auth=False)[0] == 401, url
    names = (site_host.state.name, agent_host.state.name)

    def both_up() -> list[dict[str, Any]]:
        found = site.query('up{job=~"circularnet-node|circularnet-triton"} == 1')
        return found if len(found) == 4 else []

    found = waited("both hosts' exporters up at the site", both_up, 240)
    labels = {(r["metric"]["instance"], r["metric"]["job"]): r["metric"] for r in found}
    assert set(labels) == {(h, j) for h in names for j in ("circularnet-node", "circularnet-triton")}
    assert {k: labels[(names[1], "circularnet-node")][k] for k in ("site", "group", "platform")} == {
        "site": agent_host.state.spec.site, "group": "servers", "platform": "server"}
    def both_healthy() -> bool:
        for host in (site_host, agent_host):
            host.ssh("sudo systemctl start circularnet-health.service", timeout=300)  # what its timer does
        return {r["metric"]["instance"] for r in site.query("cnctl_health_healthy == 1")} == set(names)

    if not waited_quietly(both_healthy, 240, every=15):
        pytest.fail(f"not both healthy at the site: {site.query('cnctl_health_healthy')}; "
                    f"{[health_report(h)['problems'] for h in (site_host, agent_host)]}")
    # the timer's report reads the pipeline's state (through its data directory, 0751): its flow reaches the site
    for host in (site_host, agent_host):
        name = host.state.name

        def pipeline_at_site(host: sandbox.FreshHost = host, name: str = name) -> list[dict[str, Any]]:
            host.ssh("sudo systemctl start circularnet-health.service", timeout=300)  # what its timer does
            return site.query(f'cnctl_pipeline_last_run_timestamp_seconds{{instance="{name}"}} > 0')

        waited(f"{name}'s pipeline at the site", pipeline_at_site, 300, every=20)
    seen_in_a_browser(site, site_host.state.address, names)
    status, rules = site.get(f"{site.prometheus}/api/v1/rules")
    assert status == 200 and "CircularNetTritonDown" in json.dumps(rules)
    listening = site_host.ssh("sudo ss -Hltnp").stdout
    assert f"{site_host.state.address}:9090" in listening and f"{site_host.state.address}:9093" in listening
    assert ":9094" not in listening and "*:9090" not in listening and "0.0.0.0:9090" not in listening, listening
    agent_listening = agent_host.ssh("sudo ss -Hltnp 'sport = :9090'").stdout
    assert "127.0.0.1:9090" in agent_listening and "prometheus" in agent_listening, agent_listening
    assert agent_host.ssh("systemctl is-active prometheus-alertmanager").stdout.strip() != "active"
    modes = agent_host.ssh("sudo stat -c '%a %U:%G' /etc/circularnet/prometheus/site.password").stdout.strip()
    assert modes == "640 root:prometheus", modes


def seen_in_a_browser(site: Site, address: str, names: tuple[str, ...]) -> None:
    """The fleet dashboard in headless Chromium, logged in: both hosts on it; a screenshot kept as an artifact."""
    url = f"http://circularnet:{site.password}@{address}:9090/consoles/circularnet-fleet.html"
    dom = run_browser(url, "--dump-dom", allow=address)
    assert all(f">{name}</a>" in dom for name in names), dom[-3000:]
    screenshot_kept(url, "site-fleet.png", allow=address)


def faults(site: Site, site_host: sandbox.FreshHost, agent_host: sandbox.FreshHost) -> None:
    """The faults, overlapped: the site host's uploader stopped (results wait; CircularNetUploadsStalled is due
    STALL_S after its last upload), meanwhile Triton down on the site host (its alert fires and resolves) and the
    monitoring host's services down (both hosts serve), and, ending when the stall's alert is due, the agent's link
    cut for LINK_CUT_S; then the stall's alert fires and resolves, and the agent's backlog arrives whole."""
    stalled_at = uploads_stop(site_host)
    results_on_the_dashboard(site, site_host)
    triton_alert_fires_and_resolves(site, site_host)
    fleet_serves_without_monitoring(site_host, agent_host)
    pause(stalled_at + STALL_S - LINK_CUT_S - time.time())
    cut_at = time.time()
    route = f"blackhole {site_host.state.address}/32"
    assert agent_host.ssh(f"sudo ip route add {route}").returncode == 0
    try:
        pause(LINK_CUT_S)
    finally:
        agent_host.ssh(f"sudo ip route del {route}")
    healed_at = time.time()
    uploads_stalled_alert_fires_and_resolves(site, site_host)
    backlog_arrives(site, agent_host, cut_at, healed_at)


def uploads_stop(host: sandbox.FreshHost) -> float:
    """Results uploaded once, then the uploader stopped and more results queued behind it; when it stopped."""
    feed_frames(host, "stall", 0, 3)

    def uploaded() -> bool:
        state = pipeline_state(host, "upload.json")
        return bool(state.get("uploaded_files")) and state.get("queue_files") == 0

    waited(f"{host.state.name}'s first results uploaded", uploaded, 300, every=5)
    assert host.ssh("sudo systemctl stop circularnet-upload").returncode == 0
    stopped = time.time()
    feed_frames(host, "stall", 3, 3)
    # their results queued (before Triton is stopped below: a batch without Triton would wait, then be set aside)
    waited(f"{host.state.name}'s results queued behind the stopped uploader",
           lambda: (pipeline_state(host, "pipeline.json").get("queue_files") or 0) > 0, 300, every=5)
    return stopped


def results_on_the_dashboard(site: Site, host: sandbox.FreshHost) -> None:
    """The results just uploaded, loaded by the site's loader into its database, counted on the results dashboard
    (the belt `stall`, its detections per class), as a browser shows it; a screenshot kept."""
    name = host.state.name

    def counted() -> list[dict[str, Any]]:
        host.ssh("sudo systemctl start circularnet-results.service", timeout=300)  # what its timer does
        return site.query(f'cnctl_results_detections_total{{host="{name}",belt="stall"}} > 0')

    found = waited("the uploaded results counted at the site", counted, 240, every=15)
    rows = host.ssh("sudo sqlite3 -readonly /var/lib/circularnet/results/results.db "
                    "'select count(*) from detections' 2>/dev/null || true").stdout.strip()
    classes = {r["metric"]["class"] for r in found}
    url = f"http://circularnet:{site.password}@{host.state.address}:9090/consoles/circularnet-results.html"
    dom = run_browser(url, "--dump-dom", allow=host.state.address)
    assert 'data-belt="stall"' in dom and all(f'data-class="{c}"' in dom for c in classes), (rows, dom[-3000:])
    screenshot_kept(url, "site-results.png", allow=host.state.address)


def triton_alert_fires_and_resolves(site: Site, host: sandbox.FreshHost) -> None:
    """Triton stopped: CircularNetTritonDown reaches Alertmanager within the rule's window; Triton run again by
    systemd: the alert resolves."""
    name = host.state.name
    host.ssh("sudo systemctl stop circularnet-triton; sudo systemctl start circularnet-health.service", timeout=300)
    alert = waited("CircularNetTritonDown at Alertmanager", lambda: site.firing("CircularNetTritonDown", name),
                   ALERT_TIMEOUT_S, every=15)
    assert alert[0]["labels"]["severity"] == "critical"
    assert host.ssh("sudo systemctl start circularnet-triton").returncode == 0
    waited("Triton serving again", lambda: _serves(host), 300)
    host.ssh("sudo systemctl start circularnet-health.service", timeout=300)
    waited("CircularNetTritonDown resolved", lambda: not site.pending_or_firing("CircularNetTritonDown", name),
           180, every=15)


def fleet_serves_without_monitoring(site_host: sandbox.FreshHost, agent_host: sandbox.FreshHost) -> None:
    """The monitoring host's Prometheus and Alertmanager down: both hosts keep serving and report healthy."""
    assert site_host.ssh("sudo systemctl stop prometheus prometheus-alertmanager").returncode == 0
    try:
        for host in (site_host, agent_host):
            assert infer(host)["version"] == "1", host.state.name
            ran = host.ssh("sudo systemctl start circularnet-health.service", timeout=300)
            problems = health_report(host)["problems"]
            assert ran.returncode == 0 and all("upload" in p for p in problems), (host.state.name, problems)
    finally:
        assert site_host.ssh("sudo systemctl start prometheus prometheus-alertmanager").returncode == 0


def uploads_stalled_alert_fires_and_resolves(site: Site, host: sandbox.FreshHost) -> None:
    """Results waiting and no upload for 15 minutes: CircularNetUploadsStalled at Alertmanager; the uploader run
    again, the queue drains and the alert resolves."""
    name = host.state.name

    def firing() -> list[dict[str, Any]]:
        host.ssh("sudo systemctl start circularnet-health.service", timeout=300)  # what its timer does
        return site.firing("CircularNetUploadsStalled", name)

    alert = waited("CircularNetUploadsStalled at Alertmanager", firing, 420, every=20)
    assert alert[0]["labels"]["severity"] == "critical"
    assert host.ssh("sudo systemctl start circularnet-upload").returncode == 0

    def resolved() -> bool:
        host.ssh("sudo systemctl start circularnet-health.service", timeout=300)
        return not site.pending_or_firing("CircularNetUploadsStalled", name)

    waited("CircularNetUploadsStalled resolved", resolved, 300, every=20)


def backlog_arrives(site: Site, agent_host: sandbox.FreshHost, cut_at: float, healed_at: float) -> None:
    """The agent's WAL sends the backlog of the cut: every scrape of it is at the site."""
    expected = int(LINK_CUT_S / SCRAPE_S)
    window = f"{int(healed_at - cut_at)}s"

    def backlog() -> int:
        query = f'count_over_time(up{{instance="{agent_host.state.name}",job="circularnet-node"}}[{window}])'
        found = site.query(query, at=healed_at)
        return int(float(found[0]["value"][1])) if found else 0

    waited(f"the {expected} samples of the cut at the site", lambda: backlog() >= expected - 1, 300, every=15)


def _serves(host: sandbox.FreshHost) -> bool:
    try:
        return infer(host)["version"] == "1"
    except Exception:  # noqa: BLE001 - not up yet: asked again
        return False
