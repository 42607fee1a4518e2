"""Run the real Triton Inference Server (CPU build) that the wheelhouse's nvidia-pytriton wheel carries.

What it takes (measured, shared/reference/toolchain.md): the wheel's `pytriton/tritonserver` tree and its
`nvidia_pytriton.libs` on LD_LIBRARY_PATH; the python-backend stub built for the running CPython copied from
`python_backend_stubs/<X.Y>/` into `backends/python/`; numpy importable by the stub; and the system's
libpython<X.Y>.so.1.0 (Debian package libpython3.11), which the stub links against. Sandbox hosts need the
same steps; this module does them locally for tests and benchmarks.

Measured: the stub embeds CPython in isolated mode, so PYTHONPATH is ignored; its sys.path is the system one
plus the model's directories plus `backends/python/`. numpy therefore goes next to the stub, unpacked from the
wheelhouse's numpy wheel into `backends/python/` (no system-wide pip install needed). But the embedded CPython
finds its prefix through the first `python3` on PATH: with a venv's bin first (as `make test` runs), the stub
took that venv's site-packages, whose numpy 2 the stub's numpy-1 ABI misreads (every output "does not match
size" of its shape). So the server runs with the system's PATH only (`SYSTEM_PATH`).
"""

from __future__ import annotations

import shutil
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from cnctl.sandbox.site.wheelhouse import wheel_for

# PATH for tritonserver: the system's directories only, so that the stub's CPython is the system one.
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class TritonInstall:
    """An unpacked tritonserver and the environment it needs."""

    root: Path
    binary: Path
    backend_dir: Path
    env: dict[str, str]

    def command(self, model_repository: Path, http_port: int, address: str = "127.0.0.1",
                exit_timeout: int = 5) -> list[str]:
        """tritonserver on `address:http_port` only (no gRPC, no metrics), explicit model control.

        `exit_timeout`: how long SIGTERM waits for models to unload (a failed load leaves one that never does).
        """
        return [
            str(self.binary),
            f"--model-repository={model_repository}",
            "--model-control-mode=explicit",
            f"--backend-directory={self.backend_dir}",
            f"--http-address={address}",
            f"--http-port={http_port}",
            "--allow-grpc=false",
            "--allow-metrics=false",
            f"--exit-timeout-secs={exit_timeout}",
        ]


def unpack(wheelhouse: Path, dest: Path,
           python: str = f"{sys.version_info.major}.{sys.version_info.minor}", arch: str = "amd64") -> TritonInstall:
    """Ensure `dest` holds a runnable tritonserver from the wheelhouse (done once; reused when complete)."""
    pytriton = wheel_for(wheelhouse, "nvidia_pytriton", arch)
    numpy = wheel_for(wheelhouse, "numpy", arch)
    marker = dest / ".unpacked"
    server = dest / "pytriton" / "tritonserver"
    install = TritonInstall(
        root=dest, binary=server / "bin" / "tritonserver", backend_dir=server / "backends",
        env={"LD_LIBRARY_PATH": str(dest / "nvidia_pytriton.libs"), "PATH": SYSTEM_PATH},
    )
    stamp = f"{pytriton.name} {numpy.name} {python}\n"
    if marker.is_file() and marker.read_text() == stamp:
        return install
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    with zipfile.ZipFile(pytriton) as zf:
        members = [n for n in zf.namelist() if n.startswith(("pytriton/tritonserver/", "nvidia_pytriton.libs/"))]
        zf.extractall(dest, members)
    with zipfile.ZipFile(numpy) as zf:
        zf.extractall(server / "backends" / "python")
    stub = server / "python_backend_stubs" / python / "triton_python_backend_stub"
    if not stub.is_file():
        raise FileNotFoundError(f"nvidia-pytriton has no python-backend stub for Python {python}")
    shutil.copy2(stub, server / "backends" / "python" / stub.name)
    # zip does not keep the execute bits.
    for exe in (install.binary, server / "backends" / "python" / stub.name):
        exe.chmod(0o755)
    marker.write_text(stamp)
    return install
