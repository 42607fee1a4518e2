#!/usr/bin/env python3
"""The host's health, as one JSON report: the verify layer's one copy of its logic.

Shipped to the host by both engines (deploy/verify.py, roles/verify) beside the inference layer's
model_serve.py, and run with the host's python3 (standard library only; Python 3.10+):

- every few minutes by circularnet-health.timer, which writes the report to `--report`
  (/var/lib/circularnet/health.json, 0644, replaced atomically) and prints it;
- read-only (`--read-only`: prints, writes nothing) by the verify layer's last step, which fails the host
  with the report's problems when it is unhealthy, and by `cnctl status`, over SSH.

    health_report.py [--config /etc/circularnet/health-report.json] [--read-only] [--min-free-percent 10] ...

Settings come from `--config` (rendered by the verify layer from the role defaults and the host's
variables), then the command line; DEFAULTS are the role defaults again, for a host whose config is gone.

The report: `host`, `platform` (the platform layer's record), `versions` (driver from nvidia-smi, Docker
engine, L4T, Triton), `triton` (URL, its unit's state, live), `model` (name, the version served and whether
Triton reports it READY, from `model_serve.py status`), `disk` (free bytes and percent of the model
repository's filesystem and of /), `last_deploy` (the deploy record the verify layer renders, and when it
last changed), `healthy` and `problems`: one sentence per problem naming what is wrong and the fix.

Exit code: 0 healthy, 1 unhealthy (the report is written and printed all the same), 2 bad settings.
Gathering (`observe`) and judging (`judge`) are separate: `judge` is a function of the observations only,
so tests feed it command output and get the report back.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cnhost
from cnhost import metrics, triton_endpoint

SCHEMA = 1
EXIT = {"healthy": 0, "unhealthy": 1, "usage": 2}

# The role defaults (roles/verify/defaults/main.yml; tests/unit/test_verify_layer.py keeps them equal).
DEFAULTS: dict[str, Any] = {
    "report": "/var/lib/circularnet/health.json",
    "platform_record": "/var/lib/circularnet/platform.json",
    "deploy_record": "/var/lib/circularnet/deploy.json",
    "model_serve": "/usr/local/lib/circularnet/cnhost/model_serve.py",
    "repository": "/opt/circularnet/models",
    "model_name": "circularnet",
    "bind_address": "127.0.0.1",
    "bind_interface": "",  # a named interface whose IPv4 address Triton binds instead (inference.bindInterface)
    "http_port": 8000,
    "triton_unit": "circularnet-triton.service",
    "min_free_percent": 10,
    "min_free_mib": 1024,
    "timeout": 10,
    "pipeline_settings": "/etc/circularnet/pipeline.json",
    "pipeline_stale_seconds": 900,
}
CONFIG = "/etc/circularnet/health-report.json"
SERVED = ".cnctl-served.json"  # the inference layer's record of the version served (model_serve.py)
_VERSION = re.compile(r"^\d+(\.\d+)+")

Observation = dict[str, Any]


# --- settings -----------------------------------------------------------------------------------


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Write and print this host's health report (cnctl verify layer).")
    parser.add_argument("--config", default=CONFIG, help="JSON settings rendered by the verify layer")
    parser.add_argument("--read-only", action="store_true", help="print the report; write nothing")
    parser.add_argument("--metrics", metavar="PATH", help="also write the report as Prometheus metrics there "
                        "(node-exporter's textfile collector; skipped while its directory is missing)")
    for key, value in DEFAULTS.items():
        parser.add_argument(f"--{key.replace('_', '-')}", dest=key, type=type(value), default=None)
    return parser.parse_args(argv)


def settings(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    """DEFAULTS, then the config file, then the command line; and the problems of the config file.
    TypeError names a setting of the wrong type."""
    found: dict[str, Any] = dict(DEFAULTS)
    problems = []
    try:
        loaded = json.loads(Path(args.config).read_text())
        if not isinstance(loaded, dict):
            raise TypeError("not a JSON object")
        found.update({k: v for k, v in loaded.items() if k in DEFAULTS})
    except FileNotFoundError:
        problems.append(f"the verify layer's settings {args.config} are missing: run the deploy (its verify layer)")
    except (OSError, ValueError, TypeError) as exc:
        problems.append(f"cannot read the verify layer's settings {args.config} ({exc}): run the deploy (its verify layer)")
    found.update({k: v for k, v in vars(args).items() if k in DEFAULTS and v is not None})
    for key, value in DEFAULTS.items():
        if not isinstance(found[key], type(value)) or isinstance(found[key], bool):
            raise TypeError(f"{key} = {found[key]!r} is not a {type(value).__name__}")
    try:
        triton_endpoint.reach(found["bind_address"])
    except ValueError as exc:
        raise TypeError(f"bind_address: {exc}") from None
    return found, problems


def triton_url(cfg: dict[str, Any], interface_address: str | None) -> str | None:
    """Where this host reaches its own Triton (triton_endpoint.py): the bind interface's IPv4 address when the
    settings name an interface (None when it has none), else the bind address (loopback when it is every one)."""
    if cfg["bind_interface"]:
        return triton_endpoint.http_url(interface_address, cfg["http_port"]) if interface_address else None
    return triton_endpoint.http_url(cfg["bind_address"], cfg["http_port"])


# --- observing the host (the only part that touches it) ----------------------------------------


def run(argv: list[str], timeout: float) -> Observation | None:
    """{"rc", "stdout", "stderr"} of a command; None when its program is not installed."""
    if shutil.which(argv[0]) is None and not Path(argv[0]).is_file():
        return None
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return {"rc": None, "stdout": "", "stderr": f"no answer within {timeout:g} s"}
    except OSError as exc:
        return {"rc": None, "stdout": "", "stderr": str(exc)}
    return {"rc": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr}


def read_json(path: str) -> Observation:
    """{"mtime", "content"} of a JSON file; {"error": ...} when it is missing or unreadable."""
    try:
        stat = os.stat(path)
        return {"mtime": stat.st_mtime, "content": json.loads(Path(path).read_text())}
    except FileNotFoundError:
        return {"error": "missing"}
    except (OSError, ValueError) as exc:
        return {"error": str(exc)}


def disk(path: str) -> Observation:
    """Free and total bytes of the filesystem holding `path` (its nearest existing parent)."""
    where = Path(path)
    while not where.exists() and where != where.parent:
        where = where.parent
    usage = shutil.disk_usage(where)
    return {"path": path, "device": os.stat(where).st_dev, "free": usage.free, "total": usage.total}


def triton_metadata(url: str, timeout: float) -> Observation | None:
    """Triton's server metadata (GET /v2: name, version, extensions); None when it does not answer."""
    try:
        with urllib.request.urlopen(f"{url}/v2", timeout=timeout) as resp:
            data = json.loads(resp.read(1 << 20))
    except (OSError, ValueError, urllib.error.URLError):
        return None
    return data if isinstance(data, dict) else None


def observe(cfg: dict[str, Any]) -> Observation:
    """Everything the report is judged from: files read, commands run, Triton asked. Changes nothing."""
    timeout = float(cfg["timeout"])
    interface = cfg["bind_interface"]
    address = triton_endpoint.interface_ipv4(interface) if interface else None
    url = triton_url(cfg, address)
    where = ["--url", url] if url else ["--interface", interface, "--port", str(cfg["http_port"])]
    serve = None
    if Path(cfg["model_serve"]).is_file():
        home, program = cnhost.located(cfg["model_serve"])
        serve = run([*cnhost.argv(program, home, sys.executable), "status", *where, "--repository", cfg["repository"],
                     "--name", cfg["model_name"]], timeout * 3)
    return {
        "hostname": socket.gethostname(),
        "now": time.time(),
        "root": os.geteuid() == 0,
        "platform_record": read_json(cfg["platform_record"]),
        "deploy_record": read_json(cfg["deploy_record"]),
        "nvidia_smi": run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], timeout),
        "docker_version": run(["docker", "version", "--format", "{{.Server.Version}}"], timeout),
        "triton_unit": run(["systemctl", "is-active", cfg["triton_unit"]], timeout),
        "interface_address": address,
        "triton_metadata": triton_metadata(url, timeout) if url else None,
        "model_serve": serve,
        "disks": [disk(cfg["repository"]), disk("/")],
        "pipeline": observe_pipeline(cfg["pipeline_settings"], timeout),
    }


def observe_pipeline(path: str, timeout: float) -> Observation | None:
    """The pipeline layer's settings, its scripts' state files and its units; None where it is not deployed."""
    found = read_json(path)
    if found.get("error") == "missing":
        return None
    settings = found["content"] if isinstance(found.get("content"), dict) else {"error": found.get("error", "not JSON")}
    state = Path(str(settings.get("state") or "/nonexistent"))

    def content(name: str) -> dict[str, Any]:
        data = read_json(str(state / name)).get("content")
        return data if isinstance(data, dict) else {}

    bucket = settings.get("input") == "bucket"  # the bucket worker runs the client in place of the timer
    units = (["circularnet-capture.service"] if settings.get("capture") else []) + [
        "circularnet-worker.service" if bucket else "circularnet-pipeline.timer", "circularnet-upload.service"]
    return {
        "settings": settings,
        "capture": content("capture.json") if settings.get("capture") else None,
        "pipeline": content("pipeline.json"),
        "worker": content("worker.json") if bucket else None,
        "upload": content("upload.json"),
        "units": {unit: run(["systemctl", "is-active", unit], timeout) for unit in units},
    }


# --- judging (a function of the observations only) ----------------------------------------------


def driver_version(found: Observation | None) -> str | None:
    """The driver version nvidia-smi reports (the first GPU's); None without nvidia-smi or an answer."""
    if not found or found["rc"] != 0:
        return None
    for line in found["stdout"].splitlines():
        if _VERSION.match(line.strip()):
            return line.strip()
    return None


def docker_version(found: Observation | None) -> tuple[str | None, str | None]:
    """(the engine's version, why there is none): None, None without the docker client."""
    if found is None:
        return None, None
    version = found["stdout"].strip()
    if found["rc"] == 0 and _VERSION.match(version):
        return version, None
    lines = (found["stderr"] or found["stdout"]).strip().splitlines()
    return None, lines[-1] if lines else f"docker version exited {found['rc']}"


def serve_status(found: Observation | None) -> Observation | None:
    """The JSON line `model_serve.py status` printed last; None when it printed none."""
    if not found:
        return None
    for line in reversed(found["stdout"].splitlines()):
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict) and "result" in data:
            return data
    return None


def _gib(n: float) -> str:
    return f"{n / (1 << 30):.1f} GiB"


def _iso(epoch: float) -> str:
    utc = datetime.timezone.utc
    return datetime.datetime.fromtimestamp(epoch, utc).isoformat(timespec="seconds")


def disk_entries(disks: list[Observation]) -> list[Observation]:
    return [{"path": d["path"], "free_bytes": d["free"], "total_bytes": d["total"],
             "free_percent": round(100 * d["free"] / d["total"], 1) if d["total"] else 0.0} for d in disks]


def disk_problems(disks: list[Observation], cfg: dict[str, Any]) -> list[str]:
    """One problem per filesystem below either threshold (the model repository's and /, once if shared)."""
    problems, seen = [], set()
    minimum = cfg["min_free_mib"] << 20
    for entry, raw in zip(disk_entries(disks), disks):
        if raw["device"] in seen:
            continue
        seen.add(raw["device"])
        if entry["free_bytes"] < minimum or entry["free_percent"] < cfg["min_free_percent"]:
            what = "the model repository's filesystem" if entry["path"] != "/" else "the root filesystem"
            problems.append(
                f"only {_gib(entry['free_bytes'])} ({entry['free_percent']}%) free on {what} ({entry['path']}), below "
                f"the minimum of {_gib(minimum)} and {cfg['min_free_percent']}%: free space (old images: "
                f"`docker image prune`; old model versions: a lower model.keep) or grow the disk")
    return problems


def judge(seen: Observation, cfg: dict[str, Any], config_problems: Sequence[str] = ()) -> dict[str, Any]:
    """The report of these observations: what was found, and every problem with its fix."""
    problems = list(config_problems)
    url = triton_url(cfg, seen.get("interface_address"))
    unit = cfg["triton_unit"]
    journal = f"see `journalctl -u {unit.removesuffix('.service')}`"

    platform = seen["platform_record"].get("content")
    if not isinstance(platform, dict):
        platform = None
        problems.append(f"no platform record {cfg['platform_record']} ({seen['platform_record'].get('error')}): the "
                        "platform layer has not run here; run the deploy")
    record = seen["deploy_record"].get("content")
    last_deploy = None
    if isinstance(record, dict):
        last_deploy = {**record, "at": _iso(seen["deploy_record"]["mtime"])}
    else:
        record = {}
        problems.append(f"no deploy record {cfg['deploy_record']} ({seen['deploy_record'].get('error')}): the verify "
                        "layer has not run here; run the deploy")

    docker, docker_error = docker_version(seen["docker_version"])
    if record.get("runtime") == "container":
        if seen["docker_version"] is None:
            problems.append("the container runtime needs Docker, which is not installed: run the deploy (its container "
                            "layer)")
        elif docker is None and seen["root"]:  # as another user, a refused socket says nothing about the engine
            problems.append(f"the Docker engine is not answering ({docker_error}): see `systemctl status docker` and "
                            "`journalctl -u docker`")

    unit_state = (seen["triton_unit"] or {}).get("stdout", "").strip() or None
    status = serve_status(seen["model_serve"])
    live = bool(status.get("live")) if status else seen["triton_metadata"] is not None
    name = cfg["model_name"]
    served = status.get("served") if status else None
    ready = bool(status and status.get("ready"))
    if seen["model_serve"] is None:
        problems.append(f"the inference layer's script {cfg['model_serve']} is missing: run the deploy (its inference layer)")
    elif status is None:
        tail = (seen["model_serve"]["stderr"].strip().splitlines() or ["no output"])[-1]
        problems.append(f"`model_serve.py status` printed no report (exit {seen['model_serve']['rc']}: {tail}): run the "
                        "deploy (its inference layer)")
    if url is None:
        problems.append(f"interface {cfg['bind_interface']} (inference.bindInterface) has no IPv4 address here, so "
                        "Triton cannot bind it: name an interface this host has, or bind an address "
                        "(inference.bindAddress)")
    elif not live:
        state = f" ({unit} is {unit_state})" if unit_state and unit_state != "active" else ""
        problems.append(f"Triton not answering on {url.removeprefix('http://')}{state}: {journal}")
    elif status is not None and served is None:
        problems.append(f"no version of model {name} is served (no {SERVED} in {cfg['repository']}/{name}): run the "
                        "deploy (its inference layer)")
    elif status is not None and not ready:
        why = f": {status['message']}" if status.get("message") else ""
        problems.append(f"model {name} version {served} is not READY in Triton{why}; {journal}")
    pinned = (record.get("model") or {}).get("version")
    action = (record.get("model") or {}).get("action", "pinned")
    if served is not None and pinned is not None and action == "pinned" and served != pinned:
        problems.append(f"model {name} version {served} is served, but the last deploy pinned version {pinned}: run "
                        "the deploy again (or `cnctl model rollout`)")

    problems += disk_problems(seen["disks"], cfg)
    pipeline, pipeline_problems = judge_pipeline(seen.get("pipeline"), seen["now"], cfg)
    problems += pipeline_problems
    return {
        "schema": SCHEMA,
        "host": (platform or {}).get("host") or seen["hostname"],
        "hostname": seen["hostname"],
        "checked": _iso(seen["now"]),
        "healthy": not problems,
        "problems": problems,
        "platform": platform,
        "versions": {
            "driver": driver_version(seen["nvidia_smi"]),
            "docker": docker,
            "l4t": (platform or {}).get("l4t"),
            "triton": (seen["triton_metadata"] or {}).get("version"),
        },
        "triton": {"url": url, "unit": unit, "unit_state": unit_state, "live": live},
        "model": {"name": name, "version": served, "ready": ready,
                  "loaded": (status or {}).get("loaded") or [], "history": (status or {}).get("history") or []},
        "disk": disk_entries(seen["disks"]),
        "last_deploy": last_deploy,
        "pipeline": pipeline,
    }


def _when(epoch: Any) -> str | None:
    return _iso(float(epoch)) if isinstance(epoch, int | float) else None


def queue_depth(run: Observation, upload: Observation) -> dict[str, Any]:
    """{queue_files, queue_bytes} as the newest count has them: the uploader's (at each send) or the pipeline
    run's (at each run, the uploader running or not: a stopped uploader counts nothing)."""
    counted = [state for state in (upload, run) if state.get("queue_files") is not None]
    newest = max(counted, key=lambda state: float(state.get("updated") or 0), default={})
    return {"queue_files": newest.get("queue_files"), "queue_bytes": newest.get("queue_bytes")}


def judge_pipeline(seen: Observation | None, now: float, cfg: dict[str, Any]) -> tuple[Observation | None, list[str]]:
    """The pipeline's summary (frames captured, last run, queue depth, last upload, dropped) and its problems."""
    if seen is None:
        return None, []
    settings = seen["settings"]
    if "error" in settings:
        unreadable = f"cannot read the pipeline settings {cfg['pipeline_settings']} ({settings['error']})"
        return None, [f"{unreadable}: run the deploy (its pipeline layer)"]
    problems: list[str] = []
    for unit, found in seen["units"].items():
        state = (found or {}).get("stdout", "").strip() or "unknown"
        if state != "active":
            problems.append(f"{unit} is {state}: see `journalctl -u {unit}`, then run the deploy (its pipeline layer)")
    capture, run, upload = seen.get("capture") or {}, seen["pipeline"], seen["upload"]
    stale = float(cfg["pipeline_stale_seconds"])
    last_run = run.get("last_run")
    if isinstance(last_run, int | float) and now - last_run > stale:
        problems.append(f"the pipeline last ran {_when(last_run)}, over {int(stale)} s ago: see "
                        "`systemctl list-timers circularnet-pipeline.timer`")
    if run.get("last_error") and now - float(run.get("last_ok") or 0) > stale:
        problems.append(f"the pipeline fails: {run['last_error']}; its batches wait in {settings.get('work')}")
    failing = upload.get("failing_since")
    if isinstance(failing, int | float) and now - failing > stale:
        bucket = (settings.get("storage") or {}).get("buckets", {}).get("results")
        problems.append(f"uploads to {bucket} fail since {_when(failing)} ({upload.get('last_error')}); "
                        f"{upload.get('queue_files', 0)} files wait in the queue: check the store's endpoint and credentials")
    if capture.get("error"):
        problems.append(f"the camera fails: {capture['error']}")
    worker = seen.get("worker")
    if worker is not None:  # bucket input: cnhost/bucket_worker.py's counters stand for the runner's
        run = worker
        if worker.get("last_error") and now - float(worker.get("last_ok") or worker.get("started") or 0) > stale:
            problems.append(f"the bucket worker fails: {worker['last_error']}; its images go back to the subscription "
                            "(see `journalctl -u circularnet-worker`)")
    summary = {
        "frames_captured": capture.get("captured"), "frames_dropped": capture.get("dropped"),
        "last_frame": _when(capture.get("last_frame_at")),
        "last_run": _when(last_run), "last_ok": _when(run.get("last_ok")), "batches": run.get("batches"),
        "rows": run.get("rows"), "failed_batches": run.get("failed_batches"),
        **queue_depth(run, upload),
        "last_upload": _when(upload.get("last_success")), "uploaded_files": upload.get("uploaded_files"),
        "dropped_files": upload.get("dropped_files"), "failing_since": _when(failing),
    }
    if worker is not None:
        summary.update(last_run=_when(worker.get("updated")), images=worker.get("images"),
                       skipped=worker.get("skipped"), acked=worker.get("acked"), nacked=worker.get("nacked"),
                       uploaded=worker.get("uploaded"), already_present=worker.get("already_present"),
                       failed_uploads=worker.get("failed_uploads"))
    return summary, problems


# --- writing ------------------------------------------------------------------------------------


def write(report: dict[str, Any], path: str) -> None:
    """Ensure `path` holds `report` (0644, replaced atomically)."""
    cnhost.replace_file(path, (json.dumps(report, indent=2, sort_keys=True) + "\n").encode())


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        cfg, config_problems = settings(args)
    except TypeError as exc:
        print(f"health_report: {args.config}: {exc}", file=sys.stderr)
        return EXIT["usage"]
    report = judge(observe(cfg), cfg, config_problems)
    if not args.read_only:
        write(report, cfg["report"])
        if args.metrics:
            try:
                metrics.write(metrics.exposition(report), args.metrics)
            except OSError as exc:  # the collector's directory not ours to write: the report stands without them
                print(f"health_report: metrics not written to {args.metrics}: {exc}", file=sys.stderr)
    print(json.dumps(report, sort_keys=True), flush=True)
    return EXIT["healthy"] if report["healthy"] else EXIT["unhealthy"]


if __name__ == "__main__":
    sys.exit(main())
