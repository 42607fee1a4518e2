"""The GCE startup script, the cloud VMs' bootstrap: rendered from templates/gce-startup.sh.j2, valid bash,
records the stack, makes sure Python is there, waits a bounded time for the NVIDIA driver and records it."""

from __future__ import annotations

import json
import os
import platform
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from cnctl.catalog import catalog
from cnctl.cloud.startup import (
    NVIDIA_ATTEMPTS,
    NVIDIA_WAIT_SECONDS,
    STACK_DIR,
    TEMPLATES,
    render_startup_script,
    stack_record,
)
from cnctl.config import StackConfig, load_stack

BASH = shutil.which("bash") or "/bin/bash"


@pytest.fixture(scope="module")
def dev() -> StackConfig:
    return load_stack("dev")


def run(script: str, etc: Path, path: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the script as GCE would, writing under `etc`, never sleeping between nvidia-smi tries."""
    env = {**os.environ, "CNCTL_ETC_DIR": str(etc), "CNCTL_NVIDIA_WAIT_SECONDS": "0"}
    if path is not None:
        env["PATH"] = path
    return subprocess.run([BASH, "-c", script], env=env, capture_output=True, text=True, check=True, timeout=60)


def test_template_says_it_is_the_bootstrap_for_the_host_layers() -> None:
    template = (TEMPLATES / "gce-startup.sh.j2").read_text()
    assert "leaves the VM ready for the host layers" in template
    assert "pyinfra hosts/cloud.py deploy.py" in template


def test_script_is_valid_bash(dev: StackConfig) -> None:
    subprocess.run(["bash", "-n"], input=render_startup_script(dev), text=True, check=True)


def test_script_records_the_stack_privately_and_idempotently(dev: StackConfig, tmp_path: Path) -> None:
    etc = tmp_path / "etc" / "circularnet"
    script = render_startup_script(dev)
    first = run(script, etc)
    run(script, etc)  # every boot runs it again
    assert "host layers configure the rest" in first.stdout
    assert sorted(p.name for p in etc.iterdir()) == ["bootstrap.json", "stack.json"]  # no temp file left behind
    assert stat.S_IMODE((etc / "stack.json").stat().st_mode) == 0o640
    assert stat.S_IMODE((etc / "bootstrap.json").stat().st_mode) == 0o640
    assert stat.S_IMODE(etc.stat().st_mode) == 0o750
    assert json.loads((etc / "stack.json").read_text()) == stack_record(dev)


def test_stack_record_carries_model_pin_ports_and_data_locations(dev: StackConfig) -> None:
    record = stack_record(dev)
    assert record["model"] == {
        "key": "Jan2025_ver2_merged_1024_1024",
        "version": 1,
        "sha256": "0" * 64,
        "url": catalog().models.models["Jan2025_ver2_merged_1024_1024"].url,
        "generation": "tf",
    }
    assert record["inference"] == {"bindAddress": "127.0.0.1", "ports": {"http": 8000, "grpc": 8001, "metrics": 8002}}
    assert record["buckets"] == {
        "images": "my-circularnet-dev-images",
        "results": "my-circularnet-dev-results",
        "models": "my-circularnet-dev-models",
    }
    assert record["bigquery"] == {"dataset": "circularnet_dev", "table": "detections_tf"}
    assert STACK_DIR == "/etc/circularnet" and STACK_DIR in render_startup_script(dev)


def test_mirror_url_wins_over_the_catalog() -> None:
    assert stack_record(load_stack("prod"))["model"]["url"] == (
        "gs://my-circularnet-prod-models/archives/Jan2025_ver2_merged_1024_1024.zip"
    )


# --- the bootstrap: Python for the host layers, a bounded wait for the NVIDIA driver ------------------

TOOLS = ("install", "mktemp", "cat", "chmod", "mv", "grep", "head", "cut", "tr", "sed", "paste", "sleep", "rm", "dirname")


def bin_dir(tmp_path: Path, scripts: dict[str, str], python: bool = True) -> str:
    """A PATH of the tools the script uses, plus `scripts` (name -> bash body); python3 only if asked."""
    folder = tmp_path / "bin"
    folder.mkdir(parents=True)
    for tool in TOOLS:
        found = shutil.which(tool)
        assert found, tool
        (folder / tool).symlink_to(Path(found).resolve())
    if python:  # this interpreter itself: a pyenv or venv shim would need more than this PATH
        (folder / "python3").symlink_to(Path(sys.executable).resolve())
    for name, body in scripts.items():
        (folder / name).write_text("#!/bin/bash\n" + body)
        (folder / name).chmod(0o755)
    return str(folder)


def bootstrap(etc: Path) -> dict[str, object]:
    return json.loads((etc / "bootstrap.json").read_text())


def test_waits_for_the_driver_and_records_it(dev: StackConfig, tmp_path: Path) -> None:
    # The driver appears on the third try, as after a Deep Learning VM's first-boot install.
    count = tmp_path / "tries"
    smi = f'n=$(( $(cat {count} 2>/dev/null || echo 0) + 1 )); echo $n > {count}\n[ $n -ge 3 ] || exit 9\n'
    smi += 'printf "570.124.06, NVIDIA L4\\n570.124.06, NVIDIA L4\\n"\n'
    etc = tmp_path / "etc"
    result = run(render_startup_script(dev), etc, bin_dir(tmp_path, {"nvidia-smi": smi}))
    record = bootstrap(etc)
    assert record["gpuStatus"] == "ready" and record["attempts"] == 3
    assert record["driver"] == "570.124.06" and record["gpus"] == "NVIDIA L4;NVIDIA L4"
    assert "nvidia-smi: ready after 3 attempt(s), driver 570.124.06" in result.stdout


def test_the_wait_is_bounded_and_never_fails_the_boot(dev: StackConfig, tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    run(render_startup_script(dev), etc, bin_dir(tmp_path, {"nvidia-smi": "echo 'NVIDIA-SMI has failed' >&2; exit 9\n"}))
    assert bootstrap(etc)["gpuStatus"] == "timeout" and bootstrap(etc)["attempts"] == NVIDIA_ATTEMPTS
    run(render_startup_script(dev), etc, bin_dir(tmp_path / "none", {}))  # no driver tools at all
    assert bootstrap(etc)["gpuStatus"] == "absent" and bootstrap(etc)["attempts"] == NVIDIA_ATTEMPTS
    assert NVIDIA_ATTEMPTS * NVIDIA_WAIT_SECONDS <= 15 * 60  # a VM never waits longer than this


def test_installs_python_when_the_image_lacks_it(dev: StackConfig, tmp_path: Path) -> None:
    calls = tmp_path / "apt-calls"
    # apt-get "installs" python3 by dropping a stand-in into the PATH it was found on.
    apt = f'echo "$*" >> {calls}\nprintf "#!/bin/bash\\necho 3.10.12\\n" > "$(dirname "$0")/python3"\n'
    apt += 'chmod 755 "$(dirname "$0")/python3"\n'
    etc = tmp_path / "etc"
    run(render_startup_script(dev), etc, bin_dir(tmp_path, {"apt-get": apt, "nvidia-smi": "exit 9\n"}, python=False))
    assert "install -y --no-install-recommends python3" in calls.read_text()
    assert len(calls.read_text().splitlines()) == 1 and bootstrap(etc)["python"] == "3.10.12"


def test_present_python_is_recorded_and_apt_untouched(dev: StackConfig, tmp_path: Path) -> None:
    calls = tmp_path / "apt-calls"
    etc = tmp_path / "etc"
    path = bin_dir(tmp_path, {"apt-get": f'echo "$*" >> {calls}\n', "nvidia-smi": "exit 9\n"})
    run(render_startup_script(dev), etc, path)
    assert not calls.exists() and bootstrap(etc)["python"] == platform.python_version()
    assert bootstrap(etc)["osLogin"] in ("on", "off")
