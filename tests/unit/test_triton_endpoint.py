"""cnhost/triton_endpoint.py, the one builder of Triton's endpoints (issue 25), and the host scripts that load it
from beside them (model_serve.py `--interface`, health_report.py): IPv6 in brackets, loopback for every address,
an interface's address looked up on the host by the script itself, and nothing but an address accepted as one."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import cnhost
from cnctl import rollout
from cnhost import model_serve, triton_endpoint
from deploy import facts, pipeline
from deploy.rules import inference as inference_rules
from deploy.steps import role_data

SCRIPTS = Path(triton_endpoint.__file__).parent


@pytest.mark.parametrize(("bind", "port", "url", "grpc"), [
    ("127.0.0.1", 8000, "http://127.0.0.1:8000", "127.0.0.1:8001"),
    ("0.0.0.0", 8000, "http://127.0.0.1:8000", "127.0.0.1:8001"),
    ("", 8000, "http://127.0.0.1:8000", "127.0.0.1:8001"),
    ("10.20.0.5", 9000, "http://10.20.0.5:9000", "10.20.0.5:9001"),
    ("::", 8000, "http://[::1]:8000", "[::1]:8001"),
    ("::1", 8000, "http://[::1]:8000", "[::1]:8001"),
    ("fd00::5", 8000, "http://[fd00::5]:8000", "[fd00::5]:8001"),
    ("fe80::1%eth0", 8000, "http://[fe80::1%eth0]:8000", "[fe80::1%eth0]:8001"),
    ("triton.plant.example", 8000, "http://triton.plant.example:8000", "triton.plant.example:8001"),
])
def test_the_endpoints_of_a_triton_bound_to_an_address(bind: str, port: int, url: str, grpc: str) -> None:
    assert triton_endpoint.http_url(bind, port) == url
    assert triton_endpoint.grpc_target(bind, port + 1) == grpc


@pytest.mark.parametrize("bind", ["::1%$(touch /tmp/cnctl-pwned)", "::1%eth0 x", "fe80::1%a]b", "10.0.0.1; id", "a b",
                                  "x/y", "host:80", "-x", "a\nb", "{{ 7*7 }}"])
def test_anything_but_an_address_is_refused(bind: str) -> None:
    with pytest.raises(ValueError, match="Triton's address"):
        triton_endpoint.http_url(bind, 8000)


def test_every_builder_of_the_controller_and_the_hosts_is_this_one() -> None:
    """The layers (pyinfra and, through their filters, Ansible) and the rollout's gate all give the same URL."""
    wants = {"cn_inference_http_port": 8000, "cn_inference_grpc_port": 8001, "cn_model_name": "m", "cn_model_version": 1}
    assert inference_rules.options(wants, role_data("inference"), "::")["url"] == "http://[::1]:8000"
    assert inference_rules.unit_variables({**wants, "cn_inference_runtime": "native", "cn_triton_image": None,
                                     "cn_inference_metrics_port": 8002}, role_data("inference"), "::", "3.11")["url"] \
        == "http://[::1]:8000"
    assert not hasattr(pipeline, "triton_reach") and not hasattr(pipeline, "triton_url")
    assert rollout.triton_endpoint is triton_endpoint  # the controller imports it: one module, one builder
    for source in ("deploy/pipeline.py", "deploy/inference.py", "cnhost/health_report.py", "cnctl/rollout.py",
                   "templates/systemd/circularnet-triton.service.j2"):
        assert "http://{" not in (SCRIPTS.parent / source).read_text(), source  # no URL spliced together by hand


def test_the_interface_fact_and_the_host_scripts_read_ip_alike() -> None:
    out = ["2: ens4    inet 10.128.0.7/32 brd 10.128.0.7 scope global dynamic ens4\\       valid_lft 3000sec"]
    assert triton_endpoint.parse_ipv4(out) == facts.InterfaceAddress().process(out) == "10.128.0.7"
    assert triton_endpoint.parse_ipv4([]) is None
    assert triton_endpoint.interface_ipv4("lo") == "127.0.0.1"  # this machine's own, through `ip`
    assert triton_endpoint.interface_ipv4("cnctl-none0") is None


def test_model_serve_looks_the_interfaces_address_up_itself() -> None:
    args = model_serve.parse(["status", "--interface", "lo", "--port", "8123", "--name", "m", "--repository", "/r"])
    assert args.url == "http://127.0.0.1:8123"
    with pytest.raises(model_serve.Failure, match="needs --port"):
        model_serve.parse(["status", "--interface", "lo", "--name", "m", "--repository", "/r"])
    with pytest.raises(SystemExit):  # argparse: --url and --interface exclude each other
        model_serve.parse(["status", "--interface", "lo", "--url", "http://x", "--name", "m", "--repository", "/r"])


@pytest.mark.parametrize("program", ["model_serve", "health_report"])
def test_a_host_program_runs_from_the_shipped_package_alone(program: str, tmp_path: Path) -> None:
    """As on a host: the package's files (cnhost.FILES, what both engines ship) alone under a home directory, run
    as the units and the controller run them (`env PYTHONPATH=<home> python3 -m cnhost.<program>`), with no site
    packages at all (-S): the standard library and the package are all a program finds."""
    (tmp_path / "cnhost").mkdir()
    for name in cnhost.FILES:
        shutil.copy(SCRIPTS / name, tmp_path / "cnhost" / name)
    argv = (["status", "--interface", "cnctl-none0", "--port", "8000", "--name", "m", "--repository", str(tmp_path)]
            if program == "model_serve" else ["--config", str(tmp_path / "none.json"), "--read-only"])
    host = cnhost.argv(program, str(tmp_path), sys.executable)  # env PYTHONPATH=<home> <python> -m cnhost.<program>
    done = subprocess.run([*host[:3], "-S", *host[3:], *argv], capture_output=True, text=True, timeout=120,
                          check=False, cwd="/")
    printed = cnhost.answer(done.stdout) or {}
    if program == "model_serve":
        assert done.returncode == model_serve.EXIT["triton"], done.stderr
        assert printed["message"].startswith("interface 'cnctl-none0' has no IPv4 address here")
    else:
        assert done.returncode == 1 and printed["triton"]["url"] == "http://127.0.0.1:8000", done.stderr


def test_the_builder_is_standard_library_only_for_the_hosts_python() -> None:
    tree = ast.parse((SCRIPTS / "triton_endpoint.py").read_text(), feature_version=(3, 10))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {str(node.module).split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= set(sys.stdlib_module_names), imported - set(sys.stdlib_module_names)
