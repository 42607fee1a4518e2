"""STAND-IN Triton Inference Server images for the site registry, built without a Docker daemon.

NVIDIA's `nvcr.io/nvidia/tritonserver` images cannot be fetched here, so the site serves images with the same
names, tags, layout and entry point, built from the CPU `tritonserver` that the nvidia-pytriton wheel carries:

- a root filesystem of Debian bookworm's real packages (the C/C++ runtime and libpython the server and its
  python-backend stub link against), unpacked with `dpkg-deb -x`, for each architecture;
- `/opt/tritonserver/{bin,lib,backends}` as in NVIDIA's image (the wheel's server, its bundled libraries, the
  python backend with the stub for Python 3.11 and numpy beside it);
- entry point `/opt/nvidia/nvidia_entrypoint.sh` (prints a STAND-IN banner, then runs the command), so the
  production command `docker run <image> tritonserver --model-repository=...` runs unchanged;
- labels saying it is a stand-in (`org.opencontainers.image.description`, `com.cnctl.standin=true`).

`umoci` assembles each image into an OCI layout; `skopeo` copies it, under every tag of the platform matrix
for its architecture (x86_64 server tags `YY.MM-py3`, Jetson `YY.MM-py3-igpu`), into a registry's storage
that is then served read-only (`registry.py`).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from cnctl.catalog import Catalog
from cnctl.sandbox import procs
from cnctl.sandbox.relay import free_port
from cnctl.sandbox.site import debian, probe, registry, triton

ARCHES = ("amd64", "arm64")
SUITE = "bookworm"
PYTHON = "3.11"
# What the server, its bundled libraries and the python-backend stub need from the distribution (the python
# backend starts its stub through `bash -c`).
BASE_PACKAGES = ("bash", "dash", "libpython3.11", "libstdc++6", "zlib1g")
ENTRYPOINT = "/opt/nvidia/nvidia_entrypoint.sh"
STANDIN_LABEL = ("STAND-IN for tests (cnctl sandbox), not NVIDIA software: a CPU tritonserver from the "
                 "nvidia-pytriton wheel in NVIDIA's image layout")
ENTRYPOINT_SCRIPT = f"""#!/bin/sh
# {STANDIN_LABEL}.
echo "== STAND-IN Triton Inference Server image (cnctl sandbox): CPU only, not NVIDIA's image ==" >&2
if [ "$#" -eq 0 ]; then exec /bin/sh; fi
exec "$@"
"""
ENV = ("PATH=/opt/tritonserver/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
       "LD_LIBRARY_PATH=/opt/tritonserver/lib", "TRITON_SERVER_VERSION=2.51.0")
PUSH_TIMEOUT_S = 600


def tags(cat: Catalog) -> dict[str, list[str]]:
    """Repository paths with tags (`nvidia/tritonserver:24.03-py3`) the site serves, per architecture."""
    def path(image: str) -> str:
        return image.split("/", 1)[1]  # without the registry host: a mirror serves the same paths

    server = sorted({path(i.image) for i in cat.platforms.servers.triton_images})
    jetson = sorted({path(r.triton_image) for r in cat.platforms.jetson.releases})
    return {"amd64": server, "arm64": jetson}


def _rootfs(arch: str, mirror: str, wheelhouse: Path, work: Path) -> Path:
    """The image's root filesystem for `arch`, assembled in `work`."""
    root = work / f"rootfs-{arch}"
    empty_status = work / "empty-status"
    empty_status.parent.mkdir(parents=True, exist_ok=True)
    empty_status.write_text("")
    debs = debian.download(empty_status, arch, mirror, SUITE, work / f"debs-{arch}", work / f"apt-{arch}",
                           BASE_PACKAGES, recommends=False)
    root.mkdir(parents=True)
    for deb in debs:
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True, capture_output=True)
    if not (root / "bin" / "sh").exists():
        (root / "bin" / "sh").symlink_to("dash")
    server = triton.unpack(wheelhouse, work / f"triton-{arch}", python=PYTHON, arch=arch)
    opt = root / "opt" / "tritonserver"
    shutil.copytree(server.binary.parent.parent, opt, symlinks=True)
    shutil.copytree(Path(server.env["LD_LIBRARY_PATH"]), opt / "lib", dirs_exist_ok=True)
    shutil.rmtree(opt / "python_backend_stubs", ignore_errors=True)  # the stub for Python 3.11 is in place
    entry = root / ENTRYPOINT.lstrip("/")
    entry.parent.mkdir(parents=True, exist_ok=True)
    entry.write_text(ENTRYPOINT_SCRIPT)
    entry.chmod(0o755)
    for scratch in ("tmp", "models"):
        (root / scratch).mkdir(exist_ok=True)
    (root / "tmp").chmod(0o1777)
    return root


def _oci(layout: Path, tag: str, arch: str, root: Path) -> None:
    """One single-layer OCI image of `root` tagged `tag` in `layout`."""
    image = f"{layout}:{tag}"
    if not (layout / "index.json").exists():
        _run(["umoci", "init", "--layout", str(layout)])
    _run(["umoci", "new", "--image", image])
    _run(["umoci", "insert", "--image", image, "--no-history", str(root), "/"])
    config = ["umoci", "config", "--image", image, "--no-history", "--architecture", arch, "--os", "linux",
              "--config.entrypoint", ENTRYPOINT, "--config.workingdir", "/opt/tritonserver",
              "--config.label", f"org.opencontainers.image.description={STANDIN_LABEL}",
              "--config.label", "com.cnctl.standin=true", "--created", "2024-01-01T00:00:00Z"]
    for env in ENV:
        config += ["--config.env", env]
    _run(config)


def build(out: Path, cat: Catalog, mirror: str, wheelhouse: Path, work: Path) -> dict[str, list[str]]:
    """Fill `out` (empty) with registry storage holding the stand-in images under every matrix tag."""
    layout = work / "oci"
    for arch in ARCHES:
        _oci(layout, f"standin-{arch}", arch, _rootfs(arch, mirror, wheelhouse, work))
    port = free_port()
    conf = work / "registry.yml"
    conf.write_text(registry.config(out, "127.0.0.1", port, None, read_only=False))
    proc = subprocess.Popen(registry.argv(conf), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        _wait_for(f"http://127.0.0.1:{port}/v2/", proc)
        served = tags(cat)
        for arch, refs in served.items():
            for ref in refs:
                _run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:standin-{arch}",
                      f"docker://127.0.0.1:{port}/{ref}"], timeout=PUSH_TIMEOUT_S)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return served


def _wait_for(url: str, proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Until the registry answers at `url`; its own error when it exits instead."""
    if not procs.until(lambda: proc.poll() is not None or probe.answers(url), timeout, interval=0.1):
        raise RuntimeError(f"docker-registry did not answer at {url} within {timeout:.0f} s")
    if proc.poll() is not None:
        raise RuntimeError(f"docker-registry exited at start: {proc.stderr.read().decode()[-500:] if proc.stderr else ''}")


def _run(cmd: list[str], timeout: float = 300) -> None:
    res = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if res.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd[:3])} ...` failed (exit {res.returncode}): {res.stderr.strip()[-500:]}")
