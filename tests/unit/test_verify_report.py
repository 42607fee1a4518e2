"""The verify layer's host script (cnhost/health_report.py) as data: what the host's commands printed and what
its files held in, the report out (`judge`); then the script itself on this machine against a stand-in
model_serve.py and a stand-in Triton: the file it writes (0644, atomic), read-only mode, exit codes."""

from __future__ import annotations

import ast
import copy
import http.server
import json
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cnhost import health_report
from cnhost.health_report import DEFAULTS, judge, triton_url

REPO = Path(__file__).resolve().parents[2]
SCRIPT = Path(health_report.__file__)
GIB = 1 << 30


def _ran(stdout: str, rc: int = 0, stderr: str = "") -> dict[str, Any]:
    return {"rc": rc, "stdout": stdout, "stderr": stderr}


SERVE_OK = {"result": "ok", "live": True, "served": 2, "ready": True, "loaded": [2], "history": [1], "message": ""}
PLATFORM = {"dpkg_architecture": "amd64", "host": "gpu-server-1", "l4t": None, "platform": "server",
            "os": {"codename": "bookworm", "id": "debian", "version": "12"}, "os_substitution": None}
RECORD: dict[str, Any] = {"host": "gpu-server-1", "stack": "local", "runtime": "container", "image": "nvcr.io/nvidia/tritonserver:24.08-py3",
          "model": {"name": "circularnet", "version": 2, "action": "pinned"}}
# What a converged, healthy server gives: every command's real output shape.
HEALTHY: dict[str, Any] = {
    "hostname": "gpu-server-1",
    "now": 1_790_000_000.0,
    "root": True,
    "platform_record": {"mtime": 1_780_000_000.0, "content": PLATFORM},
    "deploy_record": {"mtime": 1_789_999_000.0, "content": RECORD},
    "nvidia_smi": _ran("550.90.07\n550.90.07\n"),
    "docker_version": _ran("26.1.5+dfsg1\n"),
    "triton_unit": _ran("active\n"),
    "triton_metadata": {"name": "triton", "version": "2.48.0", "extensions": ["model_repository"]},
    "model_serve": _ran(json.dumps(SERVE_OK) + "\n"),
    "disks": [{"path": "/opt/circularnet/models", "device": 1, "free": 40 * GIB, "total": 100 * GIB},
              {"path": "/", "device": 1, "free": 40 * GIB, "total": 100 * GIB}],
}


def observed(**changes: Any) -> dict[str, Any]:
    seen = copy.deepcopy(HEALTHY)
    seen.update(changes)
    return seen


def test_a_converged_server_is_healthy_and_its_report_says_what_runs() -> None:
    report = judge(HEALTHY, DEFAULTS)
    assert report["healthy"] is True and report["problems"] == []
    assert report["host"] == "gpu-server-1" and report["checked"] == "2026-09-21T14:13:20+00:00"
    assert report["versions"] == {"driver": "550.90.07", "docker": "26.1.5+dfsg1", "l4t": None, "triton": "2.48.0"}
    assert report["triton"] == {"url": "http://127.0.0.1:8000", "unit": "circularnet-triton.service", "unit_state": "active",
                                "live": True}
    assert report["model"] == {"name": "circularnet", "version": 2, "ready": True, "loaded": [2], "history": [1]}
    assert report["disk"] == [
        {"path": "/opt/circularnet/models", "free_bytes": 40 * GIB, "total_bytes": 100 * GIB, "free_percent": 40.0},
        {"path": "/", "free_bytes": 40 * GIB, "total_bytes": 100 * GIB, "free_percent": 40.0}]
    assert report["last_deploy"] == {**RECORD, "at": "2026-09-21T13:56:40+00:00"}
    assert report["platform"] == PLATFORM
    json.dumps(report)  # plain JSON all through


def test_a_jetson_reports_its_l4t_from_the_platform_record() -> None:
    jetson = {**PLATFORM, "platform": "jetson", "l4t": "36.4.3", "dpkg_architecture": "arm64", "host": "belt-1-orin"}
    report = judge(observed(platform_record={"mtime": 0.0, "content": jetson}, nvidia_smi=None), DEFAULTS)
    assert report["healthy"] and report["host"] == "belt-1-orin"
    assert report["versions"]["l4t"] == "36.4.3" and report["versions"]["driver"] is None


TRITON_DOWN = _ran(json.dumps({"result": "failed", "live": False, "served": 2, "ready": False, "loaded": [],
                               "message": "connection refused"}), rc=1)

# (what the host showed, the one problem it must give)
FAULTS = [
    pytest.param({"model_serve": TRITON_DOWN, "triton_unit": _ran("failed\n", rc=3), "triton_metadata": None},
                 "Triton not answering on 127.0.0.1:8000 (circularnet-triton.service is failed): see "
                 "`journalctl -u circularnet-triton`", id="triton-down"),
    pytest.param({"model_serve": TRITON_DOWN, "triton_unit": _ran("activating\n", rc=3), "triton_metadata": None},
                 "Triton not answering on 127.0.0.1:8000 (circularnet-triton.service is activating)", id="triton-starting"),
    pytest.param({"model_serve": _ran(json.dumps({**SERVE_OK, "ready": False, "loaded": [],
                                                   "message": "version 2 is UNAVAILABLE: failed to load"}))},
                 "model circularnet version 2 is not READY in Triton: version 2 is UNAVAILABLE: failed to load; see "
                 "`journalctl -u circularnet-triton`", id="not-ready"),
    pytest.param({"model_serve": _ran(json.dumps({**SERVE_OK, "served": None, "ready": False}))},
                 "no version of model circularnet is served (no .cnctl-served.json in /opt/circularnet/models/circularnet): "
                 "run the deploy (its inference layer)", id="nothing-served"),
    pytest.param({"model_serve": _ran(json.dumps({**SERVE_OK, "served": 1, "loaded": [1]}))},
                 "model circularnet version 1 is served, but the last deploy pinned version 2: run the deploy again "
                 "(or `cnctl model rollout`)", id="served-other-version"),
    pytest.param({"model_serve": None},
                 "the inference layer's script /usr/local/lib/circularnet/cnhost/model_serve.py is missing: run the deploy "
                 "(its inference layer)", id="no-inference-script"),
    pytest.param({"model_serve": _ran("", rc=1, stderr="Traceback ...\nKeyError: 'x'\n")},
                 "`model_serve.py status` printed no report (exit 1: KeyError: 'x')", id="inference-script-crashed"),
    pytest.param({"docker_version": _ran("", rc=1, stderr="Cannot connect to the Docker daemon at "
                                                        "unix:///var/run/docker.sock. Is the docker daemon running?\n")},
                 "the Docker engine is not answering (Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
                 "Is the docker daemon running?): see `systemctl status docker`", id="docker-down"),
    pytest.param({"docker_version": None},
                 "the container runtime needs Docker, which is not installed: run the deploy (its container layer)",
                 id="no-docker"),
    pytest.param({"platform_record": {"error": "missing"}},
                 "no platform record /var/lib/circularnet/platform.json (missing): the platform layer has not run here",
                 id="no-platform-record"),
    pytest.param({"deploy_record": {"error": "Expecting value: line 1 column 1 (char 0)"}},
                 "no deploy record /var/lib/circularnet/deploy.json (Expecting value: line 1 column 1 (char 0)): the "
                 "verify layer has not run here", id="bad-deploy-record"),
    pytest.param({"disks": [{"path": "/opt/circularnet/models", "device": 1, "free": 5 * GIB, "total": 100 * GIB},
                            {"path": "/", "device": 1, "free": 5 * GIB, "total": 100 * GIB}]},
                 "only 5.0 GiB (5.0%) free on the model repository's filesystem (/opt/circularnet/models), below the "
                 "minimum of 1.0 GiB and 10%", id="disk-percent"),
    pytest.param({"disks": [{"path": "/opt/circularnet/models", "device": 2, "free": 50 * GIB, "total": 100 * GIB},
                            {"path": "/", "device": 1, "free": 512 << 20, "total": 2 * GIB}]},
                 "only 0.5 GiB (25.0%) free on the root filesystem (/), below the minimum of 1.0 GiB and 10%",
                 id="disk-bytes-on-root"),
]


@pytest.mark.parametrize(("changes", "problem"), FAULTS)
def test_each_fault_makes_the_host_unhealthy_with_one_problem_naming_it_and_the_fix(changes: dict[str, Any],
                                                                                     problem: str) -> None:
    report = judge(observed(**changes), DEFAULTS)
    assert report["healthy"] is False
    assert len(report["problems"]) == 1, report["problems"]
    assert problem in report["problems"][0]


def test_a_full_shared_filesystem_is_one_problem_not_two() -> None:
    """The model repository on / (the usual layout): one filesystem, one problem."""
    full = [{"path": p, "device": 7, "free": GIB // 2, "total": 100 * GIB} for p in ("/opt/circularnet/models", "/")]
    assert len(judge(observed(disks=full), DEFAULTS)["problems"]) == 1


def test_docker_refusing_a_user_who_is_not_root_is_no_finding() -> None:
    """`cnctl status` may run the script without sudo: the socket's refusal says nothing about the engine."""
    denied = _ran("", rc=1, stderr="permission denied while trying to connect to the Docker daemon socket\n")
    report = judge(observed(root=False, docker_version=denied), DEFAULTS)
    assert report["healthy"] and report["versions"]["docker"] is None


def test_the_native_runtime_needs_no_docker() -> None:
    record = {**RECORD, "runtime": "native", "image": None}
    report = judge(observed(deploy_record={"mtime": 0.0, "content": record}, docker_version=None), DEFAULTS)
    assert report["healthy"], report["problems"]


def test_a_rollback_run_serving_the_previous_version_is_not_a_mismatch() -> None:
    record = {**RECORD, "model": {**RECORD["model"], "action": "previous"}}
    serve = _ran(json.dumps({**SERVE_OK, "served": 1, "loaded": [1], "history": [2]}))
    assert judge(observed(deploy_record={"mtime": 0.0, "content": record}, model_serve=serve), DEFAULTS)["healthy"]


def test_without_model_serve_triton_is_judged_live_by_its_metadata() -> None:
    """An old host without the inference script: its Triton answering is still seen."""
    report = judge(observed(model_serve=None), DEFAULTS)
    assert report["triton"]["live"] is True
    assert judge(observed(model_serve=None, triton_metadata=None), DEFAULTS)["triton"]["live"] is False


@pytest.mark.parametrize(("lines", "driver"), [
    ("550.90.07\n", "550.90.07"),
    ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n", None),
    ("No devices were found\n", None),
    ("", None),
])
def test_the_driver_version_is_nvidia_smis_first_row(lines: str, driver: str | None) -> None:
    assert health_report.driver_version(_ran(lines, rc=0 if driver else 9)) == driver
    assert health_report.driver_version(_ran(lines)) == driver  # rc 0 with a sentence is no version either


@pytest.mark.parametrize(("bind", "port", "url"), [
    ("127.0.0.1", 8000, "http://127.0.0.1:8000"),
    ("0.0.0.0", 8000, "http://127.0.0.1:8000"),
    ("10.20.0.5", 9000, "http://10.20.0.5:9000"),
    ("::", 8000, "http://[::1]:8000"),
    ("fd00::5", 8000, "http://[fd00::5]:8000"),
])
def test_the_report_reaches_triton_where_it_binds(bind: str, port: int, url: str) -> None:
    cfg = {**DEFAULTS, "bind_address": bind, "http_port": port}
    assert triton_url(cfg, None) == url and judge(HEALTHY, cfg)["triton"]["url"] == url


def test_a_bound_interface_is_looked_up_on_the_host_and_one_without_an_address_is_the_problem() -> None:
    cfg = {**DEFAULTS, "bind_interface": "ens4", "http_port": 8000}
    report = judge(observed(interface_address="10.128.0.7"), cfg)
    assert report["healthy"] and report["triton"]["url"] == "http://10.128.0.7:8000"
    report = judge(observed(interface_address=None, triton_metadata=None, model_serve=_ran("", 5)), cfg)
    assert report["triton"]["url"] is None
    assert any(p.startswith("interface ens4 (inference.bindInterface) has no IPv4 address here") for p in report["problems"])


def test_the_observation_asks_model_serve_on_the_interface_it_could_not_resolve(tmp_path: Path,
                                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an address for the interface, model_serve.py gets the interface (it says why in its own words)."""
    calls: list[list[str]] = []
    monkeypatch.setattr(health_report.triton_endpoint, "interface_ipv4", lambda name: None)
    monkeypatch.setattr(health_report, "run", lambda argv, timeout: calls.append(argv))
    serve = tmp_path / "cnhost" / "model_serve.py"
    serve.parent.mkdir()
    serve.write_text("")
    seen = health_report.observe({**DEFAULTS, "model_serve": str(serve), "bind_interface": "ens4; reboot",
                                  "pipeline_settings": str(tmp_path / "none.json")})
    assert seen["interface_address"] is None and seen["triton_metadata"] is None
    assert calls[0][:5] == ["env", f"PYTHONPATH={tmp_path}", sys.executable, "-m", "cnhost.model_serve"]
    assert calls[0][5:10] == ["status", "--interface", "ens4; reboot", "--port", "8000"]


def test_a_bind_address_that_is_no_address_is_a_bad_setting(tmp_path: Path) -> None:
    config = tmp_path / "health-report.json"
    config.write_text(json.dumps({**DEFAULTS, "bind_address": "::1%$(touch x)"}))
    done = _run("--config", str(config), "--read-only")
    assert done.returncode == 2 and "bind_address: Triton's address '::1%$(touch x)'" in done.stderr


def test_the_scripts_defaults_are_the_role_defaults() -> None:
    """DEFAULTS only matter on a host whose settings file is gone; they must still be the role's."""
    role = yaml.safe_load((REPO / "roles" / "verify" / "defaults" / "main.yml").read_text())
    from_role = {"report": role["verify_report"], "platform_record": role["verify_platform_record"],
                 "deploy_record": role["verify_deploy_record"], "model_serve": role["verify_model_serve"],
                 "repository": role["verify_model_repository"], "triton_unit": role["verify_triton_unit"],
                 "min_free_percent": role["verify_min_free_percent"], "min_free_mib": role["verify_min_free_mib"],
                 "timeout": role["verify_timeout"]}
    assert {k: DEFAULTS[k] for k in from_role} == from_role
    model = yaml.safe_load((REPO / "roles" / "model" / "defaults" / "main.yml").read_text())
    platform = yaml.safe_load((REPO / "roles" / "platform" / "defaults" / "main.yml").read_text())
    assert role["verify_model_repository"] == model["model_repository"]
    assert role["verify_platform_record"] == platform["platform_record_file"]
    assert Path(role["verify_helper"]).parent == Path(model["model_helper"]).parent == Path(role["verify_model_serve"]).parent
    inference = yaml.safe_load((REPO / "roles" / "inference" / "defaults" / "main.yml").read_text())
    assert role["verify_model_serve"] == inference["inference_helper"]
    assert role["verify_triton_unit"] == inference["inference_unit"]


# --- the script on this machine -----------------------------------------------------------------------------


class _Triton(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"name": "triton", "version": "2.48.0"}).encode() if self.path == "/v2" else b"{}"
        self.send_response(200 if self.path == "/v2" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def triton() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Triton)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()


def _host(tmp_path: Path, port: int, serve: dict[str, Any]) -> Path:
    """A host's files under tmp_path: records, a stand-in model_serve.py printing `serve`, the settings."""
    state = tmp_path / "var"
    state.mkdir()
    (state / "platform.json").write_text(json.dumps(PLATFORM))
    (state / "deploy.json").write_text(json.dumps({**RECORD, "runtime": "native", "image": None}))
    serve_script = tmp_path / "cnhost" / "model_serve.py"  # run as on a host: python3 -m cnhost.model_serve
    serve_script.parent.mkdir()
    (serve_script.parent / "__init__.py").write_text("")
    serve_script.write_text("import json, sys\n"
                            f"assert sys.argv[1:4] == ['status', '--url', 'http://127.0.0.1:{port}'], sys.argv\n"
                            f"print(json.dumps({serve!r}))\n")
    config = tmp_path / "health-report.json"
    config.write_text(json.dumps({
        **DEFAULTS, "report": str(state / "health.json"), "platform_record": str(state / "platform.json"),
        "deploy_record": str(state / "deploy.json"), "model_serve": str(serve_script), "repository": str(tmp_path),
        "http_port": port, "min_free_percent": 0, "min_free_mib": 0, "timeout": 5}))
    return config


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    # cwd: `python3 -m` puts it first on sys.path, before PYTHONPATH (a checkout would shadow the stand-in)
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120, check=False,
                          cwd="/")


def test_the_script_writes_the_report_0644_and_prints_it(tmp_path: Path, triton: int) -> None:
    config = _host(tmp_path, triton, SERVE_OK)
    result = _run("--config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    printed = json.loads(result.stdout)
    written = tmp_path / "var" / "health.json"
    assert json.loads(written.read_text()) == printed
    assert stat.S_IMODE(written.stat().st_mode) == 0o644
    assert printed["healthy"] and printed["model"]["version"] == 2 and printed["versions"]["triton"] == "2.48.0"
    assert sorted(p.name for p in written.parent.iterdir()) == ["deploy.json", "health.json", "platform.json"]  # no temp left


def test_read_only_writes_nothing_and_an_unhealthy_host_exits_1(tmp_path: Path, triton: int) -> None:
    config = _host(tmp_path, triton, {**SERVE_OK, "ready": False, "message": "UNAVAILABLE"})
    result = _run("--config", str(config), "--read-only")
    assert result.returncode == 1
    assert json.loads(result.stdout)["problems"] == [
        "model circularnet version 2 is not READY in Triton: UNAVAILABLE; see `journalctl -u circularnet-triton`"]
    assert not (tmp_path / "var" / "health.json").exists()


def test_an_option_overrides_the_settings_file(tmp_path: Path, triton: int) -> None:
    config = _host(tmp_path, triton, SERVE_OK)
    result = _run("--config", str(config), "--read-only", "--min-free-percent", "101")
    assert result.returncode == 1 and "below the minimum of 0.0 GiB and 101%" in result.stdout


def test_a_mistyped_setting_exits_2_naming_it(tmp_path: Path) -> None:
    config = tmp_path / "bad.json"
    config.write_text(json.dumps({"http_port": "eight thousand"}))
    result = _run("--config", str(config), "--read-only")
    assert result.returncode == 2 and "http_port = 'eight thousand' is not a int" in result.stderr
    assert result.stdout == ""


def test_the_script_runs_on_the_oldest_python_it_supports() -> None:
    """Hosts run it with their own python3 (Ubuntu 22.04, JetPack 6: 3.10); it must at least compile there, and so
    must triton_endpoint.py, which it loads from beside it (the `cnhost` package only when imported as one)."""
    for path in (SCRIPT, SCRIPT.with_name("triton_endpoint.py")):
        tree = ast.parse(path.read_text(), str(path), feature_version=(3, 10))
        imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}
        imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                     if isinstance(node, ast.ImportFrom) and node.module and not node.level}
        assert imported - set(sys.stdlib_module_names) <= {"cnhost", "triton_endpoint"}, path


def test_the_script_writes_the_metrics_where_node_exporter_reads_them(tmp_path: Path, triton: int) -> None:
    config = _host(tmp_path, triton, SERVE_OK)
    collector = tmp_path / "node-exporter"
    collector.mkdir()
    result = _run("--config", str(config), "--metrics", str(collector / "circularnet.prom"))
    assert result.returncode == 0, result.stdout + result.stderr
    text = (collector / "circularnet.prom").read_text()
    assert "cnctl_health_healthy 1\n" in text and 'cnctl_model_served_version{model="circularnet"} 2\n' in text
    assert _run("--config", str(config), "--read-only", "--metrics", str(collector / "other.prom")).returncode == 0
    assert [p.name for p in collector.iterdir()] == ["circularnet.prom"]  # read-only writes neither


def test_metrics_that_cannot_be_written_leave_the_report_whole(tmp_path: Path, triton: int) -> None:
    config = _host(tmp_path, triton, SERVE_OK)
    blocked = tmp_path / "node-exporter" / "circularnet.prom"
    blocked.mkdir(parents=True)  # a directory where the file goes: the rename onto it fails
    result = _run("--config", str(config), "--metrics", str(blocked))
    assert result.returncode == 0 and json.loads(result.stdout)["healthy"]
    assert (tmp_path / "var" / "health.json").exists()
    assert f"health_report: metrics not written to {blocked}: " in result.stderr
    assert [p.name for p in blocked.parent.iterdir()] == ["circularnet.prom"]  # no temporary file left


@pytest.mark.parametrize(("run", "upload", "depth"), [
    # the uploader sent last: its count
    ({"updated": 100.0, "queue_files": 4, "queue_bytes": 40}, {"updated": 200.0, "queue_files": 0, "queue_bytes": 0},
     (0, 0)),
    # the uploader stopped (its state is old) while runs go on queueing results: the run's count
    ({"updated": 900.0, "queue_files": 7, "queue_bytes": 70}, {"updated": 200.0, "queue_files": 0, "queue_bytes": 0},
     (7, 70)),
    # a run from before runs counted the queue: the uploader's; nothing counted yet: unknown, never 0
    ({"updated": 900.0}, {"updated": 200.0, "queue_files": 2, "queue_bytes": 20}, (2, 20)),
    ({}, {}, (None, None)),
])
def test_the_queue_depth_is_the_newest_count(run: dict, upload: dict, depth: tuple) -> None:
    found = health_report.queue_depth(run, upload)
    assert (found["queue_files"], found["queue_bytes"]) == depth
