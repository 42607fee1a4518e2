"""What the sandbox gives the host layers to stand on: arm64 Jetsons, Debian's real Docker engine from the site's
signed apt repository, and the site registry's Triton image, pulled and run on both architectures.

Installing the engine is the container layer's job; here it is done by hand on fresh hosts (the test of the
sandbox, not of the layer), so that what the layer will do is proven possible on these hosts.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from cnctl.catalog import catalog
from cnctl.sandbox import fleet as sandbox
from cnctl.sandbox.remote import ssh
from cnctl.sandbox.site import build_site_content
from cnctl.sandbox.state import FleetState
from tests.e2e.fleet_helpers import cache_dir, install_site_source

pytestmark = pytest.mark.fleet

APT_TIMEOUT_S = 600  # apt-get install of docker.io under qemu-user takes minutes
READY_TIMEOUT_S = 180  # Triton start + model load under emulation: ~10 s measured; room for a busy CI machine


def test_jetson_hosts_are_arm64_and_servers_amd64(fleet: FleetState) -> None:
    for host in fleet.hosts:
        result = ssh(fleet, host, "uname -m; dpkg --print-architecture")
        assert result.returncode == 0, result.stderr
        expected = ["aarch64", "arm64"] if host.spec.flavour == "jetson" else ["x86_64", "amd64"]
        assert result.stdout.split() == expected, host.name


def test_arm64_hosts_boot_with_no_failed_units(fleet: FleetState) -> None:
    """Under qemu-user four units fail on credentials unless the image's drop-ins are in place."""
    for host in fleet.hosts:
        if host.spec.flavour != "jetson":
            continue
        result = ssh(fleet, host, "systemctl is-system-running --wait; systemctl --failed --no-legend", timeout=120)
        assert result.stdout.split()[0] in ("running",), f"{host.name}: {result.stdout}"


def _prepare(host: sandbox.FreshHost, fleet: FleetState) -> None:
    assert fleet.site
    install_site_source(host, Path(fleet.site["apt_keyring"]).read_bytes(), fleet.site["apt_url"])
    result = host.ssh("sudo apt-get update --error-on=any -q", timeout=APT_TIMEOUT_S)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_site_package_installs_on_an_arm64_host(boot_fresh, fleet: FleetState) -> None:
    host = boot_fresh("jetson", "6.0")
    _prepare(host, fleet)
    release = catalog().platforms.jetson.release("6.0")
    pinned = f"nvidia-l4t-core={release.packages['nvidia-l4t-core']}"
    result = host.ssh(f"sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q {pinned} && "
                      "dpkg-query -W -f='${Version} ${Architecture}' nvidia-l4t-core", timeout=APT_TIMEOUT_S)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split()[-2:] == [release.packages["nvidia-l4t-core"], "arm64"]


def _image_for(fleet: FleetState, flavour: str) -> str:
    """The matrix's Triton image for a host of `flavour`, from the site registry (an air-gapped mirror)."""
    assert fleet.site and fleet.site.get("registry"), "the site has no registry"
    platforms = catalog().platforms
    upstream = (platforms.jetson.release("6.0").triton_image if flavour == "jetson"
                else platforms.servers.triton_images[0].image)
    return f"{fleet.site['registry']}/{upstream.split('/', 1)[1]}"


INFER = r"""
import json, sys, time, urllib.request
base, model = sys.argv[1], sys.argv[2]
deadline = time.monotonic() + float(sys.argv[3])
while True:
    try:
        with urllib.request.urlopen(f"{base}/v2/health/ready", timeout=2) as r:
            if r.status == 200:
                break
    except OSError:
        pass
    if time.monotonic() > deadline:
        sys.exit("not ready in time")
    time.sleep(1)
with urllib.request.urlopen(f"{base}/v2/models/{model}", timeout=10) as r:
    meta = json.load(r)
inp = meta["inputs"][0]
shape = [int(d) for d in inp["shape"]]
count = 1
for d in shape:
    count *= d
body = {"inputs": [{"name": inp["name"], "shape": shape, "datatype": inp["datatype"], "data": [0] * count}]}
req = urllib.request.Request(f"{base}/v2/models/{model}/infer", data=json.dumps(body).encode(),
                             headers={"Content-Type": "application/json"}, method="POST")
with urllib.request.urlopen(req, timeout=60) as r:
    out = json.load(r)
print(json.dumps({"model": meta["name"], "outputs": sorted(o["name"] for o in out["outputs"])}))
"""


def _install_engine(host: sandbox.FreshHost, fleet: FleetState, flavour: str) -> dict:
    """What the container layer will do, by hand: Debian's engine and the toolkit from the site, the runtime set."""
    _prepare(host, fleet)
    install = host.ssh(
        "sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker.io "
        "nvidia-container-toolkit && "
        f"sudo nvidia-ctk runtime configure --runtime=docker {'--set-as-default' if flavour == 'jetson' else ''} && "
        "sudo systemctl restart docker && sudo docker info --format '{{json .}}'",
        timeout=APT_TIMEOUT_S)
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    info = json.loads(install.stdout.strip().splitlines()[-1])
    assert "nvidia" in info["Runtimes"]
    assert info["Driver"] == "overlay2"  # not the vfs fallback: /var/lib/docker is off the overlay root
    assert info["DefaultRuntime"] == ("nvidia" if flavour == "jetson" else "runc")
    return info


def test_docker_from_the_site_repo_runs_the_registry_triton_image_on_a_server(boot_fresh, fleet: FleetState) -> None:
    host = boot_fresh("server")
    _install_engine(host, fleet, "server")
    content = build_site_content(cache_dir(), progress=lambda _m: None)
    archive = content.models[""]
    image = _image_for(fleet, "server")
    model_url = fleet.site["artifacts_url"] + archive.url_path  # type: ignore[index]
    run = host.ssh(
        "set -e; sudo install -d /srv/models && "
        f"python3 -c 'import io,sys,urllib.request,zipfile; zipfile.ZipFile(io.BytesIO(urllib.request.urlopen(sys.argv[1])"
        f".read())).extractall(\"/tmp/models\")' {shlex.quote(model_url)} && sudo cp -r /tmp/models/. /srv/models/ && "
        f"sudo docker pull -q {image} && "
        f"sudo docker run -d --name triton --runtime nvidia -p 127.0.0.1:8000:8000 -v /srv/models:/models:ro {image} "
        f"tritonserver --model-repository=/models --model-control-mode=explicit --load-model={archive.model_name} "
        "--allow-grpc=false --allow-metrics=false",
        timeout=APT_TIMEOUT_S)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    answer = host.ssh(f"python3 -c {shlex.quote(INFER)} http://127.0.0.1:8000 {archive.model_name} {READY_TIMEOUT_S}",
                      timeout=READY_TIMEOUT_S + 120)
    logs = host.ssh("sudo docker logs triton 2>&1").stdout
    assert answer.returncode == 0, answer.stdout + answer.stderr + logs[-3000:]
    result = json.loads(answer.stdout)
    assert result["model"] == archive.model_name
    assert "detection_scores" in result["outputs"]
    assert "STAND-IN Triton Inference Server image" in logs
    labels = host.ssh(f"sudo docker image inspect --format '{{{{json .Config.Labels}}}}' {image}").stdout
    assert json.loads(labels)["com.cnctl.standin"] == "true"


def test_docker_runs_on_an_arm64_host_and_pulls_the_jetson_image(boot_fresh, fleet: FleetState) -> None:
    """On an emulated arm64 host the engine installs, runs with nvidia as its default runtime and pulls the
    registry's arm64 image; starting containers is beyond qemu-user (docs/sandbox.md), so Jetson hosts run
    Triton natively in the sandbox."""
    host = boot_fresh("jetson", "6.0")
    _install_engine(host, fleet, "jetson")
    image = _image_for(fleet, "jetson")
    pulled = host.ssh(f"sudo docker pull -q {image} && sudo docker image inspect --format '{{{{.Architecture}}}}' "
                      f"{image}", timeout=APT_TIMEOUT_S)
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    assert pulled.stdout.split()[-1] == "arm64"
