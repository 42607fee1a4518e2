"""The fleet's health from the site's Prometheus (`cnctl status --source prometheus`): one HTTP query, no SSH.

    fleet = collect("prod")                  # the same FleetStatus cnctl.status.collect() gives over SSH

Every fleet host exports its health report as `cnctl_*` metrics (cnhost/metrics.py, through node-exporter's
textfile collector), and the site's Prometheus (`monitoring.server`, at `cnctl.hostvars.site_url(cfg)`) collects
them, by scraping or through the hosts' agents' remote-write, as job `circularnet-node` with `instance` = the host's
fleet name. One instant query (`/api/v1/query`, QUERY: the `cnctl_*` families the report writes and `up`, user
`circularnet`, the password the first line of `monitoring.passwordFile`) gives every host at once; the rest is pure:
Prometheus' JSON in (`parse_vector`), each host's HostStatus out (`host_status`), its `report` rebuilt with the
health report's own keys from the metrics (`report_of`), so `cnctl status` renders it like one asked over SSH.

What the metrics cannot say: a problem's text (the report exports how many, `cnctl_health_problems`), the loaded
and history lists of the model, Triton's URL and unit. A host is

- unreachable (and unhealthy) when Prometheus has no series of it (never collected, or not within its 5-minute
  lookback: the host, its exporter or its agent's link is down), or when its node-exporter's `up` is 0;
- unhealthy when its report says so (the count of problems, and what the metrics show of them), when it has no
  `cnctl_health_*` metrics (collected, but the verify layer's timer writes none), or when its newest report is older
  than STALE_S (the alert CircularNetHealthReportStale's bound: the timer has stopped).

The hosts the site's Prometheus does not collect (`cn_monitoring_collection` `none`: cloud VMs, which report to
Cloud Monitoring) are asked the usual way (cnctl.status: SSH, or a pull host's bucket). A Prometheus that cannot be
asked (unreachable, the password refused, the password file missing) raises PrometheusUnavailable, a UsageProblem
naming the URL or the file and the fix: `cnctl status` exits 2, or with `--source auto` falls back to SSH.
"""

from __future__ import annotations

import base64
import datetime
import json
import math
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from cnctl import status as ssh_status
from cnctl.config import StackConfig, load_stack
from cnctl.errors import UsageProblem
from cnctl.fleet import as_fleet
from cnctl.hostvars import site_url
from cnctl.inventory import InventoryHost
from cnctl.status import FleetStatus, HostStatus, StatusProblem
from cnhost.metrics import PIPELINE_COUNTERS, PIPELINE_GAUGES, PIPELINE_TIMES

Choice = Literal["auto", "ssh", "prometheus"]
CHOICES: tuple[Choice, ...] = ("auto", "ssh", "prometheus")
USER = "circularnet"  # the site's Prometheus' one user (docs/monitoring.md)
NODE_JOB = "circularnet-node"
# Every family of cnhost/metrics.py and the node job's `up`: the GPU collector's cnctl_tegra_* / cnctl_gpu_* are
# not asked for (one series per core and rail, none of them in the table).
QUERY = f'{{job="{NODE_JOB}",__name__=~"up|cnctl_(health|host|triton|model|deploy|disk|pipeline)_.+"}}'
TIMEOUT_S = 15.0
STALE_S = 900  # monitoring/rules: CircularNetHealthReportStale, `time() - cnctl_health_checked_timestamp_seconds > 900`
LOOKBACK = "5 min"  # Prometheus' default lookback: a series not collected for longer is absent from an instant query


class PrometheusUnavailable(UsageProblem):
    """The site's Prometheus cannot be asked: its URL or the password file, and the fix, in one line (exit 2)."""


@dataclass(frozen=True)
class Sample:
    """One series of an instant vector: its metric name, its other labels, its value."""

    name: str
    labels: Mapping[str, str]
    value: float


# --- Prometheus' answer -------------------------------------------------------------------------------------


def parse_vector(body: Any, url: str = "Prometheus") -> list[Sample]:
    """The samples of an instant query's answer (`{"status": "success", "data": {"resultType": "vector",
    "result": [{"metric": {...}, "value": [<time>, "<value>"]}]}}`). An error answer, or any other shape, raises
    PrometheusUnavailable naming `url`; a value Prometheus writes as NaN or ±Inf is kept as such."""
    if not isinstance(body, dict):
        raise PrometheusUnavailable(f"{url} did not answer as Prometheus' API does (not a JSON object): is it Prometheus?")
    if body.get("status") != "success":
        raise PrometheusUnavailable(f"{url} refused the query ({body.get('errorType') or 'error'}: "
                                    f"{body.get('error') or 'no message'})")
    data = body.get("data")
    if not isinstance(data, dict) or data.get("resultType") != "vector" or not isinstance(data.get("result"), list):
        kind = data.get("resultType") if isinstance(data, dict) else None
        raise PrometheusUnavailable(f"{url} answered an instant query with no vector (resultType {kind!r})")
    samples = []
    for item in data["result"]:
        metric = item.get("metric") if isinstance(item, dict) else None
        value = item.get("value") if isinstance(item, dict) else None
        if not isinstance(metric, dict) or not isinstance(value, list) or len(value) != 2:
            raise PrometheusUnavailable(f"{url} answered a series this reader does not know: {json.dumps(item)[:200]}")
        try:
            number = float(value[1])
        except (TypeError, ValueError):
            raise PrometheusUnavailable(f"{url} answered a sample value that is no number: {value[1]!r}") from None
        labels = {str(k): str(v) for k, v in metric.items() if k != "__name__"}
        samples.append(Sample(str(metric.get("__name__", "")), labels, number))
    return samples


def by_instance(samples: Sequence[Sample]) -> dict[str, list[Sample]]:
    """The samples of each `instance` (the host's fleet name); a sample without one is dropped."""
    hosts: dict[str, list[Sample]] = {}
    for sample in samples:
        if "instance" in sample.labels:
            hosts.setdefault(sample.labels["instance"], []).append(sample)
    return hosts


# --- a host's report, rebuilt -----------------------------------------------------------------------------


def report_of(samples: Sequence[Sample], platform: str | None = None) -> dict[str, Any] | None:
    """The health report's fields the metrics carry (cnhost/health_report.py's keys, cnhost/metrics.py's
    families read back), None when there is no `cnctl_*` sample. `problem_count` stands for `problems`, whose
    texts are not exported. `platform`: the host's (`jetson`, `server`) when no series carries it as a label."""
    own = [s for s in samples if s.name.startswith("cnctl_")]
    if not own:
        return None

    def one(name: str) -> Sample | None:
        return next((s for s in own if s.name == name), None)

    def value(name: str) -> float | None:
        found = one(name)
        return found.value if found is not None else None

    info = (one("cnctl_host_info") or Sample("", {}, 1.0)).labels
    platform = next((s.labels["platform"] for s in samples if "platform" in s.labels), platform)
    served, pinned = one("cnctl_model_served_version"), one("cnctl_model_pinned_version")
    ready = one("cnctl_model_ready")
    model_name = next((s.labels["model"] for s in (served, ready) if s is not None and "model" in s.labels), None)
    healthy, problems = value("cnctl_health_healthy"), value("cnctl_health_problems")
    live = value("cnctl_triton_live")
    report: dict[str, Any] = {
        "host": info.get("host") or own[0].labels.get("instance"),
        "hostname": info.get("hostname"),
        "checked": _iso(value("cnctl_health_checked_timestamp_seconds")),
        "healthy": None if healthy is None else healthy == 1,
        "problem_count": _count(problems),
        "platform": {"platform": platform, "host": info.get("host"), "l4t": info.get("l4t")} if platform else None,
        "versions": {key: info.get(key) for key in ("driver", "docker", "l4t", "triton")},
        "triton": {"live": None if live is None else live == 1},
        "model": None if served is None and ready is None else {
            "name": model_name, "version": _count(served.value) if served else None,
            "ready": ready is not None and ready.value == 1},
        "disk": _disks(own),
        "last_deploy": _deploy(info, value("cnctl_deploy_timestamp_seconds"), pinned),
        "pipeline": _pipeline(own),
    }
    return report


def _disks(samples: Sequence[Sample]) -> list[dict[str, Any]]:
    free = {s.labels.get("path"): s.value for s in samples if s.name == "cnctl_disk_free_bytes"}
    size = {s.labels.get("path"): s.value for s in samples if s.name == "cnctl_disk_size_bytes"}
    return [{"path": path, "free_bytes": _count(f), "total_bytes": _count(size.get(path)),
             "free_percent": round(100 * f / size[path], 1) if size.get(path) else 0.0}
            for path, f in free.items()]


def _deploy(info: Mapping[str, str], at: float | None, pinned: Sample | None) -> dict[str, Any] | None:
    if at is None and not info.get("stack") and pinned is None:
        return None
    deploy: dict[str, Any] = {"at": _iso(at), "stack": info.get("stack"), "runtime": info.get("runtime")}
    if pinned is not None:
        deploy["model"] = {"name": pinned.labels.get("model"), "version": _count(pinned.value), "action": "pinned"}
    return deploy


def _pipeline(samples: Sequence[Sample]) -> dict[str, Any] | None:
    values = {s.name: s.value for s in samples if s.name.startswith("cnctl_pipeline_")}
    if not values:
        return None
    summary: dict[str, Any] = {}
    for key in PIPELINE_COUNTERS:
        summary[key] = _count(values.get(f"cnctl_pipeline_{key}_total"))
    for key in PIPELINE_GAUGES:
        summary[key] = _count(values.get(f"cnctl_pipeline_{key}"))
    for key in PIPELINE_TIMES:
        summary[key] = _iso(values.get(f"cnctl_pipeline_{key}_timestamp_seconds"))
    return summary


def _count(value: float | None) -> int | float | None:
    """A sample value as the report wrote it: a whole number as an int."""
    if value is None or not math.isfinite(value):
        return None
    return int(value) if value.is_integer() else value


def _iso(epoch: float | None) -> str | None:
    """Epoch seconds as the report writes its times (cnhost/health_report.py: UTC, whole seconds)."""
    if epoch is None or not math.isfinite(epoch):
        return None
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).isoformat(timespec="seconds")


# --- a host's status ----------------------------------------------------------------------------------------


def host_status(host: InventoryHost, samples: Sequence[Sample], now: float, url: str) -> HostStatus:
    """What the site's Prometheus (at `url`) knows of one host, at `now` (epoch seconds): see the module doc."""
    ask = f"`cnctl status --source ssh --limit {host.name}` asks it directly"

    def status(reachable: bool, problems: list[str], report: dict[str, Any] | None = None) -> HostStatus:
        healthy = reachable and not problems
        return HostStatus(host.name, host.group, reachable, healthy, tuple(problems), "prometheus", report, url)

    if not samples:
        silent = (f"unreachable: the site's Prometheus ({url}) has no series of it from the last {LOOKBACK} "
                  f"({_how_collected(host)}): check the host, its node-exporter (`systemctl status "
                  f"prometheus-node-exporter`) and the link to the site; {ask}")
        return status(False, [silent])
    ups = [s.value for s in samples if s.name == "up"]
    if ups and not any(v == 1 for v in ups):
        down = (f"unreachable: the site's Prometheus cannot scrape its node-exporter (up 0, job {NODE_JOB}): check "
                f"`systemctl status prometheus-node-exporter` on it and that it listens where it is scraped; {ask}")
        return status(False, [down])
    report = report_of(samples, host.vars.get("cn_platform"))
    if report is None or report["checked"] is None or report["healthy"] is None:
        blind = ("the site's Prometheus collects it but has no health report metrics of it (cnctl_health_*): the "
                 "verify layer's circularnet-health.timer writes them to node-exporter's textfile directory; run the "
                 "deploy (its monitoring and verify layers)")
        return status(True, [blind], report)
    problems: list[str] = []
    count = report["problem_count"] or 0
    if not report["healthy"] or count:
        shown = _visible_problems(report)
        seen = f" ({'; '.join(shown)})" if shown else ""
        problems.append(f"its health report has {count} problem{'s' if count != 1 else ''}{seen}; their text stays "
                        f"on the host: {ask}")
    age = now - datetime.datetime.fromisoformat(report["checked"]).timestamp()
    if age > STALE_S:
        problems.append(f"its newest health report is {ssh_status.duration(age)} old (of {report['checked']}), over "
                        f"{ssh_status.duration(STALE_S)}: its circularnet-health.timer has stopped (see `systemctl status "
                        f"circularnet-health.timer` on it); {ask}")
    return status(True, problems, report)


def _how_collected(host: InventoryHost) -> str:
    how = host.vars.get("cn_monitoring_collection")
    if how == "agent":
        return "its Prometheus agent remote-writes its metrics"
    if how == "scraped":
        return "the site scrapes it at its fleet address"
    if how == "site":
        return "it runs the site's Prometheus"
    return f"collection {how or 'unknown'}"


def _visible_problems(report: Mapping[str, Any]) -> list[str]:
    """What the metrics themselves show of a report's problems."""
    shown = []
    model = report.get("model") or {}
    if (report.get("triton") or {}).get("live") is False:
        shown.append("Triton not answering")
    elif model and not model.get("ready"):
        shown.append(f"model {model.get('name')} version {model.get('version')} not READY")
    pinned = ((report.get("last_deploy") or {}).get("model") or {}).get("version")
    if pinned is not None and model.get("version") is not None and model["version"] != pinned:
        shown.append(f"version {model['version']} served, {pinned} pinned")
    for disk in report.get("disk") or []:
        if disk.get("free_percent", 100.0) < 10:
            shown.append(f"{disk['free_percent']}% free on {disk['path']}")
    return shown


def fleet_status(stack: str, hosts: Sequence[InventoryHost], body: Any, now: float, url: str) -> FleetStatus:
    """Every host of `hosts` (all collected by the site's Prometheus) from one answer to QUERY, in fleet order."""
    found = by_instance(parse_vector(body, url))
    return FleetStatus(stack, tuple(host_status(h, found.get(h.name, []), now, url) for h in hosts),
                       "prometheus", url)


# --- asking Prometheus ------------------------------------------------------------------------------------


def read_password(cfg: StackConfig) -> str:
    """The first line of `monitoring.passwordFile` (`~` expanded); a PrometheusUnavailable naming it when it is
    not set, missing, unreadable or empty."""
    named = cfg.monitoring.password_file
    if named is None:
        raise PrometheusUnavailable("monitoring.passwordFile is not set: name the file on this machine holding the "
                                    f"password of user {USER} of the site's Prometheus, or use --source ssh")
    path = Path(str(named)).expanduser()
    fix = (f"write the site Prometheus' password of user {USER} as its first line (chmod 600; the one the "
           "monitoring server was deployed with), or use --source ssh")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PrometheusUnavailable(f"monitoring.passwordFile {path}: no such file: {fix}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PrometheusUnavailable(f"monitoring.passwordFile {path}: cannot read it ({exc}): {fix}") from None
    password = text.splitlines()[0].strip() if text.strip() else ""
    if not password:
        raise PrometheusUnavailable(f"monitoring.passwordFile {path}: its first line is empty: {fix}")
    return password


def query(url: str, promql: str, password: str, timeout: float = TIMEOUT_S,
          password_file: str = "monitoring.passwordFile") -> Any:
    """The JSON answer of an instant query at `url` (user USER, `password`); PrometheusUnavailable when
    Prometheus cannot be reached, refuses the password or does not answer JSON."""
    endpoint = f"{url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    token = base64.b64encode(f"{USER}:{password}".encode()).decode()
    request = urllib.request.Request(endpoint, headers={"Authorization": f"Basic {token}", "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            raise PrometheusUnavailable(
                f"the site's Prometheus at {url} refused the password of user {USER} (HTTP 401): put its password as "
                f"the first line of {password_file}, or use --source ssh") from None
        raw = exc.read()  # the API answers its own errors (400, 422, 503) as JSON: parse_vector names them
        if not raw.lstrip().startswith(b"{"):
            raise PrometheusUnavailable(f"the site's Prometheus at {url} answered HTTP {exc.code} {exc.reason}: "
                                        "check it on the monitoring server, or use --source ssh") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise PrometheusUnavailable(
            f"cannot reach the site's Prometheus at {url} ({reason}): check that the monitoring server is up, that "
            "its Prometheus runs and that this machine reaches its monitoring.interface address; or use --source "
            "ssh") from None
    try:
        return json.loads(raw)
    except ValueError:
        raise PrometheusUnavailable(f"{url} did not answer JSON to /api/v1/query: is it the site's Prometheus?") from None


# --- the fleet ------------------------------------------------------------------------------------------


def collect(stack: str, limit: str | None = None, *, environ: Mapping[str, str] | None = None,
            now: float | None = None, timeout: float = TIMEOUT_S, run: ssh_status.Runner | None = None) -> FleetStatus:
    """The health of `stack`'s hosts (or those `limit` names) from the site's Prometheus; the hosts it does not
    collect (cloud VMs) the usual way (cnctl.status.collect_from). StatusProblem when the stack has no
    `monitoring.server`; PrometheusUnavailable when Prometheus cannot be asked."""
    cfg, hosts = ssh_status.chosen(stack, limit, environ)
    url = site_url(as_fleet(cfg, environ))  # the monitoring server as the fleet (file) has it
    if url is None:
        raise StatusProblem(f"--source prometheus: stack {cfg.environment} names no monitoring.server, so it has no "
                            "site Prometheus to read: use --source ssh (or auto)")
    watched = [h for h in hosts if h.vars.get("cn_monitoring_collection", "none") != "none"]
    body = query(url, QUERY, read_password(cfg), timeout, str(cfg.monitoring.password_file))
    fleet = fleet_status(cfg.environment, watched, body, time.time() if now is None else now, url)
    others = [h for h in hosts if h not in watched]
    if not others:
        return fleet
    rest = ssh_status.collect_from(cfg.environment, others, run, ssh_status.TIMEOUT_S,
                                   ssh_status.results_store(cfg))
    by_name = {h.name: h for h in (*fleet.hosts, *rest.hosts)}
    return replace(fleet, hosts=tuple(by_name[h.name] for h in hosts))


def has_site(stack: str, environ: Mapping[str, str] | None = None) -> bool:
    """Whether `stack`'s fleet has a monitoring server (`--source auto` then reads its Prometheus)."""
    return site_url(as_fleet(load_stack(stack), environ)) is not None


def collect_from_source(source: Choice, stack: str, limit: str | None = None, *,
                        warn: Callable[[str], None] = lambda _: None,
                        environ: Mapping[str, str] | None = None, run: ssh_status.Runner | None = None) -> FleetStatus:
    """`cnctl status --source`: `ssh` (each host over SSH; pull hosts from the bucket), `prometheus` (this module;
    a Prometheus that cannot be asked is an error), `auto` (prometheus when the stack names a monitoring server,
    else ssh; a Prometheus that cannot be asked is `warn`ed about in one line, then SSH)."""
    if source == "ssh" or (source == "auto" and not has_site(stack, environ)):
        return ssh_status.collect(stack, limit, run=run, environ=environ)
    try:
        return collect(stack, limit, environ=environ, run=run)
    except PrometheusUnavailable as exc:
        if source == "prometheus":
            raise
        warn(f"{exc}; asking every host over SSH instead")
    return ssh_status.collect(stack, limit, run=run, environ=environ)
