"""The fleet dashboards (templates/prometheus: Prometheus console templates) served by the real Prometheus and
rendered by a real browser, on loopback only.

A stdlib HTTP server in a thread plays three hosts (two Jetsons, one GPU server): each host's node-exporter
(the health report's metrics from cnhost.metrics.exposition, the GPU's from cnhost.gpu_metrics' formatters) and
its Triton (nv_inference_*), counters growing with every scrape. Debian's /usr/bin/prometheus scrapes them under
the site's label contract (job, instance = the host's name, site, group, platform: static_configs `labels`),
evaluates the fleet's alert rules, and serves the consoles with the flags the site Prometheus gets
(`--web.console.templates`, `--web.console.libraries`). The tests read the pages over HTTP, then headless
Chromium renders them (its DOM after the graphs' script ran, and a screenshot kept under $CNCTL_ARTIFACTS_DIR,
default artifacts/dashboards/, which git ignores).
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import html
import http.server
import io
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from cnctl.sandbox.prometheus import loopback_prometheus
from cnhost import gpu_metrics, metrics
from tests.unit.http_server import http_server
from tests.unit.test_gpu_metrics import R36_ORIN_NANO_ROOT, R36_ORIN_NX
from tests.unit.test_metrics import full_report

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = REPO / "templates" / "prometheus"
CONSOLES = DASHBOARDS / "consoles"
LIBRARIES = DASHBOARDS / "console_libraries"
RULES = REPO / "monitoring" / "rules" / "circularnet.rules.yml"
BROWSERS = ("chromium-headless-shell", "chromium")  # Debian's packages; the first is the one of the one list
SCRAPES = 4  # samples of every counter before the pages are read (rate() needs two)
WAIT = 45.0  # seconds, at most, for them
BROWSER_TIMEOUT = 90  # seconds for one Chromium run

# name -> what the fake host is: its labels at the site Prometheus and what its metrics say.
HOSTS: dict[str, dict[str, Any]] = {
    "belt-1-orin": {"site": "plant-a", "group": "edge", "platform": "jetson", "tegrastats": R36_ORIN_NANO_ROOT,
                    "jetson": "NVIDIA Jetson Orin Nano Developer Kit", "served": 2, "pinned": 2, "problems": [],
                    "fps": 25, "dropped": 0, "failed": 0, "queue": 3, "free": 40 << 30, "p50_us": 18200,
                    "latency_us": 23400, "requests": 4, "batch": 8},
    "belt-2-orin": {"site": "plant-b", "group": "edge", "platform": "jetson", "tegrastats": R36_ORIN_NX,
                    "jetson": "NVIDIA Jetson Orin NX Engineering Reference Developer Kit", "served": 3, "pinned": 2,
                    "problems": ["disk: / has 6% free (< 10%)"], "fps": 15, "dropped": 2, "failed": 2, "queue": 14,
                    "free": 6 << 30, "p50_us": None, "latency_us": 31700, "requests": 2, "batch": 8},
    "gpu-server-1": {"site": "plant-a", "group": "servers", "platform": "server",
                     "nvidia_smi": "0, GPU-5a1e3c7e-0f6b-4d2c-9d1e-7c0a51d2b6f1, NVIDIA L4, 63, 21, 58, 5120, 17408, 41.52",
                     "served": 2, "pinned": 2, "problems": [], "fps": 0, "dropped": 0, "failed": 0, "queue": 0,
                     "free": 412 << 30, "p50_us": 9400, "latency_us": 11800, "requests": 30, "batch": 4},
}


def _iso(seconds_ago: float) -> str:
    return (datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=seconds_ago)).isoformat()


def node_text(name: str, n: int) -> str:
    """What the host's node-exporter serves at its n-th scrape: the health report's and the GPU's metrics."""
    host = HOSTS[name]
    report = copy.deepcopy(full_report())
    report.update(host=name, hostname=name, checked=_iso(20), problems=host["problems"], healthy=not host["problems"])
    report["model"]["version"] = host["served"]
    report["last_deploy"]["model"]["version"] = host["pinned"]
    report["last_deploy"]["at"] = _iso(86400)
    report["versions"]["triton"] = "2.48.0"
    if host["platform"] == "jetson":
        report["versions"].update(driver=None, l4t="36.4.3")
    size = 128 << 30 if host["platform"] == "jetson" else 1 << 40
    report["disk"] = [{"path": "/", "free_bytes": host["free"], "total_bytes": size},
                      {"path": "/opt/circularnet/models", "free_bytes": host["free"], "total_bytes": size}]
    pipeline = report["pipeline"]
    pipeline.update(frames_captured=1200 + host["fps"] * n, frames_dropped=3 + host["dropped"] * n,
                    batches=40 + n * (2 if host["fps"] else 0), failed_batches=host["failed"] * n,
                    rows=950 + 30 * n, queue_files=host["queue"], queue_bytes=host["queue"] * 4096,
                    last_frame=_iso(2), last_run=_iso(30), last_ok=_iso(30),
                    last_upload=_iso(1200 if host["queue"] > 10 else 60))
    text = metrics.exposition(report)
    if "tegrastats" in host:
        sample = gpu_metrics.parse_tegrastats(host["tegrastats"])
        sample["gpu"]["load"] = 71
        text += gpu_metrics.tegrastats_exposition(sample, time.time(), host["jetson"])
    else:
        text += gpu_metrics.nvidia_smi_exposition(gpu_metrics.parse_nvidia_smi([host["nvidia_smi"]]), time.time())
        text += results_text(n)  # the monitoring server runs the site's results loader
    return text


# The site's results loader's counts (cnhost/results_db.py), on the monitoring server: (site, host, belt, class) ->
# rows at the first scrape, and how many more at each scrape after it.
RESULTS = {("plant-a", "belt-1-orin", "belt1", "PET_bottle"): (1200, 5),
           ("plant-a", "belt-1-orin", "belt1", "Aluminium_can"): (340, 0),
           ("plant-b", "belt-2-orin", "line-2", "HDPE_container"): (77, 1)}


def results_text(n: int) -> str:
    """What the results loader's file says at the n-th scrape: its rows per class, grown since the last."""
    from cnhost import results_db

    return results_db.exposition([(*key, first + step * (n - 1)) for key, (first, step) in RESULTS.items()],
                                 12 + n, 1, time.time() - 60)


def triton_text(name: str, n: int) -> str:
    """What the host's Triton serves at its n-th scrape (its metrics port, 8002, /metrics)."""
    host = HOSTS[name]
    model = f'model="circularnet",version="{host["served"]}"'
    requests = 1000 + host["requests"] * n
    failures = 50 + 2 * n if name == "belt-2-orin" else 0  # far from 0: rate() extrapolates alike
    lines = [
        "# HELP nv_inference_request_success Number of successful inference requests, all batch sizes",
        "# TYPE nv_inference_request_success counter", f"nv_inference_request_success{{{model}}} {requests}",
        "# HELP nv_inference_request_failure Number of failed inference requests, all batch sizes",
        "# TYPE nv_inference_request_failure counter", f"nv_inference_request_failure{{{model}}} {failures}",
        "# HELP nv_inference_count Number of inferences performed (does not include cached requests)",
        "# TYPE nv_inference_count counter", f"nv_inference_count{{{model}}} {requests * host['batch']}",
        "# HELP nv_inference_exec_count Number of model executions performed (does not include cached requests)",
        "# TYPE nv_inference_exec_count counter", f"nv_inference_exec_count{{{model}}} {requests}",
        ("# HELP nv_inference_request_duration_us Cumulative inference request duration in microseconds "
         "(includes cached requests)"),
        "# TYPE nv_inference_request_duration_us counter",
        f"nv_inference_request_duration_us{{{model}}} {(requests + failures) * host['latency_us']}",
    ]
    if host["p50_us"] is not None:  # Triton with --metrics-config summary_latencies=true
        lines += ["# HELP nv_inference_request_summary_us Summary of inference request duration in microseconds",
                  "# TYPE nv_inference_request_summary_us summary",
                  f'nv_inference_request_summary_us{{{model},quantile="0.5"}} {host["p50_us"]}',
                  f'nv_inference_request_summary_us{{{model},quantile="0.99"}} {host["p50_us"] * 3}',
                  f"nv_inference_request_summary_us_sum{{{model}}} {requests * host['latency_us']}",
                  f"nv_inference_request_summary_us_count{{{model}}} {requests}"]
    return "\n".join(lines) + "\n"


class FleetHandler(http.server.BaseHTTPRequestHandler):
    """GET /<host>/node or /<host>/triton: that host's exporter, counting its scrapes."""

    scrapes: ClassVar[dict[str, int]] = {}
    lock = threading.Lock()

    def do_GET(self) -> None:
        _, name, exporter = (self.path.split("?")[0].split("/") + ["", ""])[:3]
        if name not in HOSTS or exporter not in ("node", "triton"):
            self.send_error(404)
            return
        with self.lock:
            n = self.scrapes[self.path] = self.scrapes.get(self.path, 0) + 1
        body = (node_text(name, n) if exporter == "node" else triton_text(name, n)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


def scrape_config(exporters: str) -> str:
    """The site Prometheus's jobs for these fake hosts: the label contract set by static_configs."""
    address = urllib.parse.urlsplit(exporters).netloc

    def job(name: str, exporter: str) -> dict[str, Any]:
        return {"job_name": name, "static_configs": [
            {"targets": [address], "labels": {"__metrics_path__": f"/{host}/{exporter}", "instance": host,
                                              "site": info["site"], "group": info["group"],
                                              "platform": info["platform"]}}
            for host, info in HOSTS.items()]}

    return yaml.safe_dump({
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [job("circularnet-node", "node"), job("circularnet-triton", "triton")],
    })


def query(url: str, promql: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{url}/api/v1/query?query={urllib.parse.quote(promql)}", timeout=5) as resp:
        return list(json.load(resp)["data"]["result"])


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=20) as resp:
        assert resp.status == 200
        return str(resp.read().decode())


@pytest.fixture(scope="module")
def prometheus() -> Iterator[str]:
    """Prometheus on loopback serving the consoles, once every fake host's counters have SCRAPES samples."""
    FleetHandler.scrapes = {}
    with http_server(FleetHandler) as exporters, loopback_prometheus(scrape_config(exporters), extra_args=[
            f"--web.console.templates={CONSOLES}", f"--web.console.libraries={LIBRARIES}"]) as running:
        deadline = time.monotonic() + WAIT
        wanted = [f"count(count_over_time(cnctl_pipeline_frames_captured_total[1m]) >= {SCRAPES})",
                  f"count(count_over_time(nv_inference_count[1m]) >= {SCRAPES})"]
        while not all(len(r := query(running.url, q)) == 1 and r[0]["value"][1] == str(len(HOSTS)) for q in wanted):
            if time.monotonic() > deadline:
                pytest.fail(f"no {SCRAPES} scrapes of every host within {WAIT:.0f} s: {FleetHandler.scrapes}\n"
                            f"{running.log_text()}")
            time.sleep(0.5)
        time.sleep(1.5)  # one more rule evaluation over those samples
        yield running.url


def text_of(fragment: str) -> str:
    """The text a fragment of HTML shows, whitespace collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def host_rows(page: str) -> dict[str, list[str]]:
    """host -> its row's cells (as text) of the fleet table."""
    rows = re.findall(r'<tr class="host" data-instance="([^"]+)">(.*?)</tr>', page, re.DOTALL)
    return {name: [text_of(cell) for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.DOTALL)] for name, row in rows}


COLUMNS = ["host", "node · triton", "health", "model", "inferences/s", "avg ms", "p50 ms", "GPU", "GPU util",
           "frames/s", "dropped/s", "batches/h", "failed/h", "queue", "last upload", "disk free", "alerts"]


def test_the_fleet_page_shows_every_host_by_site_with_its_numbers(prometheus: str) -> None:
    page = fetch(f"{prometheus}/consoles/circularnet-fleet.html")
    assert "error executing template" not in page and "<h1>CircularNet fleet</h1>" in page
    assert page.index("Site plant-a") < page.index("gpu-server-1") < page.index("Site plant-b") < page.index("belt-2-orin")
    header = re.search(r"<table class=\"fleet\">\s*<tr>(.*?)</tr>", page, re.DOTALL)
    assert header and [text_of(c) for c in re.findall(r"<th[^>]*>(.*?)</th>", header[1], re.DOTALL)] == COLUMNS
    rows = {name: dict(zip(COLUMNS, cells, strict=True)) for name, cells in host_rows(page).items()}
    assert set(rows) == set(HOSTS)
    for name in HOSTS:
        assert f'href="circularnet-host.html?instance={name}"' in page
        assert rows[name]["node · triton"] == "up · up"
    one, two, server = rows["belt-1-orin"], rows["belt-2-orin"], rows["gpu-server-1"]
    assert (one["host"], server["host"]) == ("belt-1-orin edge · jetson", "gpu-server-1 servers · server")
    assert one["health"] == "healthy" and two["health"] == "problems: 1"
    assert one["model"] == "circularnet v2 = pinned" and two["model"] == "circularnet v3 pinned v2"
    # Triton: the average is the duration counter over the requests, whatever the scrapes' timing
    assert (one["avg ms"], two["avg ms"], server["avg ms"]) == ("23.4", "31.7", "11.8")
    assert (one["p50 ms"], two["p50 ms"], server["p50 ms"]) == ("18.2", "—", "9.4")
    assert float(server["inferences/s"]) > float(one["inferences/s"]) > 0
    # GPUs: tegrastats' gpu@ zone on the Jetsons, nvidia-smi on the server
    assert (one["GPU"], two["GPU"], server["GPU"]) == ("56 °C", "43 °C", "58 °C")
    assert (one["GPU util"], server["GPU util"]) == ("71 %", "63 %")
    # rates over seconds of data, shown to 0.1: both flowing, the faster belt never shown slower
    assert float(one["frames/s"]) >= float(two["frames/s"]) > 0 and float(two["dropped/s"]) > 0
    assert one["failed/h"] == "0" and int(two["failed/h"]) > 0
    assert (one["queue"], two["queue"], server["queue"]) == ("3 12kiB", "14 56kiB", "0 0B")
    assert one["last upload"] == "1m 0s ago" or one["last upload"].endswith("s ago")
    assert two["last upload"].startswith("20m")
    assert (one["disk free"], two["disk free"]) == ("31.25% /", "4.688% /")
    assert "firing" in two["alerts"] and one["alerts"] == "none"


def test_the_host_page_details_one_host(prometheus: str) -> None:
    page = fetch(f"{prometheus}/consoles/circularnet-host.html?instance=gpu-server-1")
    assert "error executing template" not in page and "<h1>gpu-server-1</h1>" in page
    shown = text_of(page)
    assert "site plant-a · group servers · platform server" in shown
    assert "gpu-server-1 local container 2.48.0 550.90.07" in shown  # cnctl_host_info
    assert "circularnet v2 = pinned" in shown
    assert "circularnet 2 " in shown and "NVIDIA L4 58 °C 63 % 5GiB 17GiB 42 W" in shown
    assert "/opt/circularnet/models 412GiB 1TiB 40.23%" in shown
    assert "no alert pending or firing" in shown
    graphs = re.findall(r'<svg class="cn-graph" data-expr="([^"]+)"', page)
    assert len(graphs) == 7 and all("gpu-server-1" in html.unescape(expr) for expr in graphs)


def test_the_host_page_of_a_jetson_shows_tegrastats_and_its_alerts(prometheus: str) -> None:
    shown = text_of(fetch(f"{prometheus}/consoles/circularnet-host.html?instance=belt-2-orin"))
    assert "NVIDIA Jetson Orin NX Engineering Reference Developer Kit 43 °C" in shown
    assert "Jetson (tegrastats)" in shown and "VDD_IN 4.3 W" in shown and "gpu 43 °C" in shown
    assert "circularnet v3 pinned v2" in shown
    assert "CircularNetBatchesFailing firing warning pipeline" in shown
    assert "CircularNetModelNotThePinnedVersion pending warning inference" in shown


def test_a_hostile_or_unknown_instance_is_data_never_markup_or_promql(prometheus: str) -> None:
    hostile = 'x"}) or vector(1) # <script>alert(1)</script>'
    page = fetch(f"{prometheus}/consoles/circularnet-host.html?instance={urllib.parse.quote(hostile)}")
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Prometheus has no series of instance" in page
    assert "no health report metrics" in page and "no Triton metrics" in page  # the quoted name matched nothing
    bare = fetch(f"{prometheus}/consoles/circularnet-host.html")
    assert "<h1>Which host?</h1>" in bare and all(f"instance={name}" in bare for name in HOSTS)


def results_rows(page: str) -> dict[tuple[str, str, str], dict[str, list[str]]]:
    """(site, host, belt) -> class -> its totals' cells (as text)."""
    found = {}
    for site, host, belt, body in re.findall(
            r'<section class="belt" data-site="([^"]*)" data-host="([^"]*)" data-belt="([^"]*)">(.*?)</section>', page,
            re.DOTALL):
        found[(site, host, belt)] = {
            klass: [text_of(cell) for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.DOTALL)]
            for klass, row in re.findall(r'<tr class="class" data-class="([^"]+)">(.*?)</tr>', body, re.DOTALL)}
    return found


def test_the_results_page_shows_each_belts_classes_and_counts(prometheus: str) -> None:
    page = fetch(f"{prometheus}/consoles/circularnet-results.html")
    assert "error executing template" not in page and "<h1>CircularNet results</h1>" in page
    assert "load time" in text_of(page)
    belts = results_rows(page)
    assert list(belts) == [("plant-a", "belt-1-orin", "belt1"), ("plant-b", "belt-2-orin", "line-2")]
    one, two = belts[("plant-a", "belt-1-orin", "belt1")], belts[("plant-b", "belt-2-orin", "line-2")]
    assert sorted(one) == ["Aluminium_can", "PET_bottle"] and list(two) == ["HDPE_container"]
    assert one["Aluminium_can"][0] == "Aluminium_can" and one["Aluminium_can"][3] == "340"
    assert one["Aluminium_can"][1:3] == ["0", "0"]  # no new can since the first load
    assert int(one["PET_bottle"][3]) >= 1200 + 5 * (SCRAPES - 1) and int(one["PET_bottle"][1]) > 0
    assert int(two["HDPE_container"][3]) >= 77 + SCRAPES - 1
    graphs = [html.unescape(g) for g in re.findall(r'<svg class="cn-graph" data-expr="([^"]+)"', page)]
    assert graphs == [f'sum by (class) (increase(cnctl_results_detections_total{{belt_site="{s}", host="{h}", '
                      f'belt="{b}"}}[1h]))' for s, h, b in belts]
    assert 'href="/consoles/circularnet-results.html">Results</a>' in page  # in the menu of every page


# --- in a real browser ------------------------------------------------------------------------------------------

def browser() -> str:
    """Debian's headless Chromium, or the test fails with the command that installs it (never a skip)."""
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("headless Chromium is missing: `sudo python3 cnctl/sandbox/prereqs.py ensure` installs it "
                "(Debian's chromium-headless-shell, in the machine's one list)")


def run_browser(url: str, *action: str, allow: str = "127.0.0.1") -> str:
    """One headless Chromium run on `url` (`allow` only, loopback unless said: every other host resolves nowhere
    and goes through a proxy that is not there); its stdout. Its whole process group is ended by its PID,
    whatever happens."""
    with tempfile.TemporaryDirectory(prefix="cnctl-chromium-") as profile:
        argv = [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--user-data-dir={profile}", "--no-first-run", "--no-default-browser-check",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-extensions", "--disable-domain-reliability", "--metrics-recording-only",
                "--proxy-server=http://127.0.0.1:9", f"--proxy-bypass-list={allow}",
                f"--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE {allow}",
                "--window-size=1400,900", "--hide-scrollbars", "--virtual-time-budget=8000", *action, url]
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   start_new_session=True, cwd=profile)
        try:
            out, err = process.communicate(timeout=BROWSER_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"chromium did not finish within {BROWSER_TIMEOUT} s on {url}")
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # its own group (start_new_session): the zygotes too
            process.wait(10)
        assert process.returncode == 0, err.decode(errors="replace")[-2000:]
        return out.decode(errors="replace")


def artifacts() -> Path:
    where = Path(os.environ.get("CNCTL_ARTIFACTS_DIR") or REPO / "artifacts") / "dashboards"
    where.mkdir(parents=True, exist_ok=True)
    return where


def screenshot_kept(url: str, name: str, allow: str = "127.0.0.1") -> None:
    """`url` in headless Chromium, its screenshot kept as the artifact `name`, and a real picture."""
    shot = artifacts() / name
    shot.unlink(missing_ok=True)
    run_browser(url, f"--screenshot={shot}", allow=allow)
    assert_a_real_picture(shot)


def assert_a_real_picture(png: Path) -> None:
    """A 1400x900 PNG with a page on it: not blank, not one colour, the header's dark band at the top."""
    from PIL import Image

    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000, (png, len(data))
    with Image.open(io.BytesIO(data)) as image:
        assert image.size == (1400, 900)
        rgb = image.convert("RGB")
        colours = rgb.getcolors(maxcolors=1 << 16)
        assert colours is None or len(colours) > 50, "the screenshot is (nearly) one colour"
        assert sum(rgb.getpixel((700, 10))) < 200, "no dark header band at the top"  # type: ignore[arg-type]


def test_the_fleet_page_renders_in_a_browser_and_a_screenshot_is_kept(prometheus: str) -> None:
    url = f"{prometheus}/consoles/circularnet-fleet.html"
    dom = run_browser(url, "--dump-dom")
    assert all(f">{name}</a>" in dom for name in HOSTS) and "circularnet <b>v3</b>" in dom
    screenshot_kept(url, "circularnet-fleet.png")


def test_the_host_page_draws_its_graphs_in_a_browser(prometheus: str) -> None:
    url = f"{prometheus}/consoles/circularnet-host.html?instance=belt-1-orin&range=60"
    dom = run_browser(url, "--dump-dom")
    graphs = re.findall(r'<svg class="cn-graph".*?</svg>', dom, re.DOTALL)
    assert len(graphs) == 7
    drawn = [g for g in graphs if "<polyline" in g]
    assert len(drawn) == 7, "every graph has data: the script queried this Prometheus and drew its series"
    captions = re.findall(r'<div class="range">(.*?)</div>', dom)
    assert len(captions) == 7 and all(re.fullmatch(r"min \S+ · max \S+ · [12] series", c) for c in captions), captions
    screenshot_kept(url, "circularnet-host.png")


def test_the_results_page_draws_its_graphs_in_a_browser(prometheus: str) -> None:
    url = f"{prometheus}/consoles/circularnet-results.html?range=60"
    dom = run_browser(url, "--dump-dom")
    assert all(f'data-class="{key[3]}"' in dom for key in RESULTS) and ">340</td>" in dom
    graphs = re.findall(r'<svg class="cn-graph".*?</svg>', dom, re.DOTALL)
    assert len(graphs) == 2 and all("<polyline" in g for g in graphs), "each belt's graph has its classes' lines"
    captions = re.findall(r'<div class="range">(.*?)</div>', dom)
    assert [c.rsplit(" · ", 1)[1] for c in captions] == ["2 series", "1 series"], captions
    screenshot_kept(url, "circularnet-results.png")


# --- the files themselves --------------------------------------------------------------------------------------

def test_the_dashboards_are_copied_verbatim_and_fetch_nothing_from_elsewhere() -> None:
    """Go templates for Prometheus, not Jinja: no .j2 (the layers render templates/**/*.j2 only; beside the
    dashboards, templates/prometheus/ holds the site's prometheus.yml.j2 and web.yml.j2), and nothing a
    browser would fetch from outside the monitoring server (the plant may be offline)."""
    files = sorted(p for p in DASHBOARDS.rglob("*") if p.is_file() and p.suffix != ".j2")
    assert {p.relative_to(DASHBOARDS).as_posix() for p in files} == {
        "README.md", "consoles/circularnet-fleet.html", "consoles/circularnet-host.html",
        "consoles/circularnet-results.html", "console_libraries/circularnet.lib"}
    assert "verbatim" in (DASHBOARDS / "README.md").read_text()
    rendered = [p for p in (REPO / "templates").rglob("*") if p.is_file() and p not in files]
    assert rendered and all(p.suffix == ".j2" for p in rendered), "but the dashboards, every file of templates/ is Jinja"
    for path in files:
        text = path.read_text()
        assert not re.search(r"""(src|href|action)\s*=\s*["']?(https?:)?//""", text), path
        assert not re.search(r"url\(\s*['\"]?(https?:)?//|@import", text), path
        assert not re.search(r"\{%-?\s*(if|for|set|block|macro|raw|include|extends)\b|\{#", text), \
            f"{path}: Jinja syntax in a verbatim file"
