"""The GCE startup script, the cloud VMs' bootstrap: rendered from templates/gce-startup.sh.j2, valid bash,
records the stack, makes sure Python is there, waits a bounded time for the NVIDIA driver and records it, and
installs Google's Ops Agent from its signed repository with a verified key, never failing the boot for it."""

from __future__ import annotations

import base64
import itertools
import json
import os
import platform
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from jinja2 import nodes

from cnctl.catalog import catalog
from cnctl.cloud import ops_agent, startup
from cnctl.cloud.startup import (
    NVIDIA_ATTEMPTS,
    NVIDIA_WAIT_SECONDS,
    STACK_DIR,
    TEMPLATES,
    render_startup_script,
    stack_record,
)
from cnctl.config import StackConfig, load_stack
from tests.unit.bundle_helpers import keypair
from tests.unit.stack_variants import stack_variant

BASH = shutil.which("bash") or "/bin/bash"


@pytest.fixture(scope="module")
def dev() -> StackConfig:
    return load_stack("dev")


def script_values(script: str) -> dict[str, Any]:
    """The values the script assigns at the start of a line (`name=word`, `name=(words)`; a quoted word may span
    lines), as the shell reads them; `<name>_b64=...` decoded, under `<name>`. Assignments of expansions
    (`name="$x..."`) are skipped."""
    values: dict[str, Any] = {}
    for match in re.finditer(r"^([a-z_][a-z0-9_]*)=(?=[^\"$\s])", script, re.MULTILINE):
        lexer = shlex.shlex(script[match.end():], posix=True, punctuation_chars="()")
        lexer.whitespace_split = True
        first = lexer.get_token()
        if first == "(":
            words = []
            while (word := lexer.get_token()) != ")":
                words.append(word)
            values[match[1]] = words
            continue
        name, value = match[1], first
        if name.endswith("_b64"):
            name, value = name.removesuffix("_b64"), base64.b64decode(value or "", validate=True).decode()
        values[name] = value
    return values


def run(script: str, etc: Path, path: str | None = None, **extra: str) -> subprocess.CompletedProcess[str]:
    """Run the script as GCE would, writing under `etc`, never sleeping between nvidia-smi tries. The Ops Agent
    section is skipped (its own tests below pass `CNCTL_OPS_AGENT_SKIP=""` and a root it writes under); whatever
    runs, it writes under `etc`'s parent, never in this machine's /etc."""
    env = {**os.environ, "CNCTL_ETC_DIR": str(etc), "CNCTL_NVIDIA_WAIT_SECONDS": "0", "CNCTL_OPS_AGENT_SKIP": "1",
           "CNCTL_OPS_AGENT_ROOT": str(etc.parent / "ops-root"), **extra}
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

TOOLS = ("install", "mktemp", "cat", "chmod", "mv", "grep", "head", "cut", "tr", "sed", "paste", "sleep", "rm", "dirname",
         "base64", "cmp", "awk", "timeout", "gpg")


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


# --- the Ops Agent (issue 22): Google's signed repository, a verified key, never fatal ---------------------------

AGENT_VERSION = "2.65.0~ubuntu22.04"
SOURCE = ("deb [signed-by=/etc/apt/keyrings/google-cloud-ops-agent.gpg] https://packages.cloud.google.com/apt "
          "google-cloud-ops-agent-jammy-all main")


def gpg_key(home: Path, uid: str) -> tuple[Path, str]:
    """A fresh signing key made by gpg in `home`: its public key file (binary, as Google serves apt-key.gpg) and its
    fingerprint."""
    home.mkdir(mode=0o700, parents=True)
    gpg = ["gpg", "--batch", "--quiet", "--homedir", str(home)]
    subprocess.run([*gpg, "--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign", "never"], check=True,
                   capture_output=True, timeout=60)
    listed = subprocess.run([*gpg, "--with-colons", "--fingerprint", "--list-keys"], check=True, capture_output=True,
                            text=True, timeout=60).stdout
    fingerprint = next(line.split(":")[9] for line in listed.splitlines() if line.startswith("fpr:"))
    exported = home / "public.gpg"
    exported.write_bytes(subprocess.run([*gpg, "--export", fingerprint], check=True, capture_output=True, timeout=60).stdout)
    # making the key started a gpg-agent for this home: stopped here, not left running after the test
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=True, capture_output=True, timeout=60)
    return exported, fingerprint


def keyring_fingerprints(keyring: Path) -> list[str]:
    shown = subprocess.run(["gpg", "--batch", "--with-colons", "--show-keys", str(keyring)], check=True,
                           capture_output=True, text=True, timeout=60).stdout.splitlines()
    return [b.split(":")[9] for a, b in itertools.pairwise(shown) if a.startswith("pub:") and b.startswith("fpr:")]


class Vm:
    """A VM's tools as the Ops Agent section meets them, each a stand-in recording its calls under `calls/`: curl
    serves `key` (whatever URL it is asked), apt-get "installs" the agent (dpkg-query then reports it at
    AGENT_VERSION), systemctl and ip answer as on a GCE VM; gpg is the real one. Paths are under `root`."""

    def __init__(self, tmp_path: Path, key: Path, ip: str = "", apt_fails: str = "") -> None:
        self.tmp, self.root, self.etc, self.calls = tmp_path, tmp_path / "root", tmp_path / "etc", tmp_path / "calls"
        self.calls.mkdir(parents=True)
        (self.root / "etc").mkdir(parents=True)
        (self.root / "etc/os-release").write_text('NAME="Ubuntu"\nVERSION_CODENAME=jammy\nID=ubuntu\n')
        state = tmp_path / "dpkg-installed"
        curl = (f'out=""; url=""; while [ $# -gt 0 ]; do case "$1" in -o) out="$2"; shift 2 ;; *) url="$1"; shift ;; '
                f'esac; done\necho "$url" >> {self.calls}/curl\ncat {key} > "$out"\n')
        apt = f'echo "$*" >> {self.calls}/apt-get\ncase " $* " in *" {apt_fails} "*) exit 100 ;; esac\n' if apt_fails \
            else ""
        apt = apt or f'echo "$*" >> {self.calls}/apt-get\ncase " $* " in *" install "*) : > {state} ;; esac\n'
        dpkg = f'[ -f {state} ] || exit 1\nprintf "installed {AGENT_VERSION}"\n'
        self.path = bin_dir(tmp_path, {
            "curl": curl, "apt-get": apt, "dpkg-query": dpkg, "nvidia-smi": "exit 9\n",
            "systemctl": f'echo "$*" >> {self.calls}/systemctl\n',
            "ip": f'echo "$*" >> {self.calls}/ip\n{ip}',
        })

    def boot(self, script: str) -> subprocess.CompletedProcess[str]:
        return run(script, self.etc, self.path, CNCTL_OPS_AGENT_SKIP="", CNCTL_OPS_AGENT_ROOT=str(self.root))

    def called(self, tool: str) -> list[str]:
        log = self.calls / tool
        return log.read_text().splitlines() if log.exists() else []

    def reset(self) -> None:
        for log in self.calls.iterdir():
            log.unlink()

    def path_of(self, path: str) -> Path:
        return self.root / path.lstrip("/")


def agent_values(cfg: StackConfig, fingerprints: list[str]) -> dict[str, Any]:
    """The fixed VMs' template values with the catalog's fingerprints replaced by the test's own key's, and no wait
    between apt's tries."""
    values = startup.template_values(cfg)
    values["ops_agent"] = {**values["ops_agent"], "fingerprints": fingerprints}
    return {**values, "ops_agent_apt_wait_seconds": 0}


def test_the_agent_comes_from_googles_signed_repository_with_the_key_it_verified(dev: StackConfig, tmp_path: Path) -> None:
    key, fingerprint = gpg_key(tmp_path / "gnupg", "Stand-in for Google's repository key <test@cnctl>")
    vm = Vm(tmp_path, key)
    done = vm.boot(startup.render_script(agent_values(dev, [fingerprint])))
    record = bootstrap(vm.etc)
    assert (record["opsAgent"], record["opsAgentVersion"], record["opsAgentMessage"]) == ("installed", AGENT_VERSION, "")
    assert vm.called("curl") == ["https://packages.cloud.google.com/apt/doc/apt-key.gpg"]  # the catalog's key, no script
    assert f"the repository key holds the catalog's key(s) only: {fingerprint}" in done.stdout
    keyring = vm.path_of(startup.OPS_AGENT_KEYRING)
    assert keyring_fingerprints(keyring) == [fingerprint] and stat.S_IMODE(keyring.stat().st_mode) == 0o644
    assert vm.path_of(startup.OPS_AGENT_SOURCE).read_text().splitlines()[-1] == SOURCE  # signed-by that keyring only
    assert "Package: google-cloud-ops-agent\nPin: version 2.*\nPin-Priority: 1001" in \
        vm.path_of(startup.OPS_AGENT_PINS).read_text()
    assert vm.called("apt-get") == ["-o DPkg::Lock::Timeout=60 -q update",
                                    ("-o DPkg::Lock::Timeout=60 -q install -y --no-install-recommends "
                                     "google-cloud-ops-agent=2.*")]
    config = vm.path_of("/etc/google-cloud-ops-agent/config.yaml").read_text()
    assert config == ops_agent.agent_config("cn-dev-node", "127.0.0.1:9100")  # where the dev stack's Triton binds
    assert vm.called("systemctl") == ["restart google-cloud-ops-agent"] and vm.called("ip") == []


def test_a_key_that_is_not_the_catalogs_installs_nothing_and_the_vm_boots(dev: StackConfig, tmp_path: Path) -> None:
    key, fingerprint = gpg_key(tmp_path / "gnupg", "Someone else <mallory@cnctl>")
    _, pinned = gpg_key(tmp_path / "pinned", "The key the catalog pins <test@cnctl>")
    vm = Vm(tmp_path, key)
    done = vm.boot(startup.render_script(agent_values(dev, [pinned])))
    record = bootstrap(vm.etc)
    assert record["opsAgent"] == "failed" and fingerprint in str(record["opsAgentMessage"])
    assert "not a fingerprint the catalog pins: nothing installed" in str(record["opsAgentMessage"])
    assert vm.called("apt-get") == [] and vm.called("systemctl") == []
    assert not vm.path_of("/etc/apt").exists() and not vm.path_of("/etc/google-cloud-ops-agent").exists()
    assert json.loads((vm.etc / "stack.json").read_text()) == stack_record(dev)  # the rest of the boot as ever
    assert "the VM serves without it" in done.stdout and record["python"]


def test_a_key_file_with_one_key_more_than_the_catalogs_is_refused(dev: StackConfig, tmp_path: Path) -> None:
    key, fingerprint = gpg_key(tmp_path / "gnupg", "Stand-in for Google's repository key <test@cnctl>")
    extra, stranger = gpg_key(tmp_path / "extra", "Someone else <mallory@cnctl>")
    both = tmp_path / "both.gpg"
    both.write_bytes(key.read_bytes() + extra.read_bytes())
    vm = Vm(tmp_path, both)
    vm.boot(startup.render_script(agent_values(dev, [fingerprint])))
    record = bootstrap(vm.etc)
    assert record["opsAgent"] == "failed" and stranger in str(record["opsAgentMessage"]) and vm.called("apt-get") == []
    assert not vm.path_of(startup.OPS_AGENT_KEYRING).exists()


def test_the_second_boot_reinstalls_nothing_and_leaves_a_current_config_alone(dev: StackConfig, tmp_path: Path) -> None:
    key, fingerprint = gpg_key(tmp_path / "gnupg", "Stand-in for Google's repository key <test@cnctl>")
    vm = Vm(tmp_path, key)
    script = startup.render_script(agent_values(dev, [fingerprint]))
    vm.boot(script)
    vm.reset()
    done = vm.boot(script)
    record = bootstrap(vm.etc)
    assert (record["opsAgent"], record["opsAgentVersion"]) == ("present", AGENT_VERSION)
    assert vm.called("curl") == [] and vm.called("apt-get") == [] and vm.called("systemctl") == []
    assert "is installed; nothing to install" in done.stdout and "its config is current" in done.stdout
    # a new config (another stack revision) is written and the agent restarted, still without apt
    vm.reset()
    vm.boot(startup.render_script({**agent_values(dev, [fingerprint]), "ops_agent": {
        **agent_values(dev, [fingerprint])["ops_agent"], "config": ops_agent.agent_config("cn-dev-node", "127.0.0.2:9100")}}))
    assert vm.called("systemctl") == ["restart google-cloud-ops-agent"] and vm.called("apt-get") == []
    assert "127.0.0.2:9100" in vm.path_of("/etc/google-cloud-ops-agent/config.yaml").read_text()


def test_a_repository_out_of_reach_is_recorded_and_the_vm_boots(dev: StackConfig, tmp_path: Path) -> None:
    vm = Vm(tmp_path, tmp_path / "no-such-key")  # curl's stand-in fails to copy: nothing downloaded
    vm.boot(startup.render_script(agent_values(dev, ["0" * 40])))
    record = bootstrap(vm.etc)
    assert record["opsAgent"] == "failed" and record["opsAgentMessage"] == (
        "cannot download the repository key from https://packages.cloud.google.com/apt/doc/apt-key.gpg")
    assert vm.called("apt-get") == [] and record["gpuStatus"] == "timeout"  # the rest ran


@pytest.mark.parametrize("step", ["update", "install"])
def test_an_apt_step_that_keeps_failing_takes_the_source_out_again(dev: StackConfig, tmp_path: Path, step: str) -> None:
    """A few bounded tries, then the source and pin go (the host layers' `apt-get update --error-on=any` would trip on
    a source apt cannot use); the verified keyring may stay. The next boot tries again."""
    key, fingerprint = gpg_key(tmp_path / "gnupg", "Stand-in for Google's repository key <test@cnctl>")
    vm = Vm(tmp_path, key, apt_fails=step)
    vm.boot(startup.render_script(agent_values(dev, [fingerprint])))
    record = bootstrap(vm.etc)
    assert record["opsAgent"] == "failed" and f"apt-get {'update failed 3 times' if step == 'update' else 'could not'}" \
        in str(record["opsAgentMessage"])
    assert len([call for call in vm.called("apt-get") if f" {step} " in f" {call} "]) == startup.OPS_AGENT_APT_TRIES
    assert not vm.path_of(startup.OPS_AGENT_SOURCE).exists() and not vm.path_of(startup.OPS_AGENT_PINS).exists()
    assert vm.called("systemctl") == [] and not vm.path_of("/etc/google-cloud-ops-agent").exists()


def test_a_group_worker_scrapes_node_exporter_on_its_interfaces_address(tmp_path: Path) -> None:
    key, fingerprint = gpg_key(tmp_path / "gnupg", "Stand-in for Google's repository key <test@cnctl>")
    vm = Vm(tmp_path, key, ip='echo "2: ens4    inet 10.128.0.7/32 brd 10.128.0.7 scope global dynamic ens4"\n')
    group = startup.template_values(load_stack("dev-group"))  # bindInterface: ens4
    group["ops_agent"] = {**group["ops_agent"], "fingerprints": [fingerprint]}
    vm.boot(startup.render_script(group))
    assert bootstrap(vm.etc)["opsAgent"] == "installed" and vm.called("ip") == ["-4 -o addr show dev ens4"]
    config = yaml.safe_load(vm.path_of("/etc/google-cloud-ops-agent/config.yaml").read_text())
    assert config == yaml.safe_load(ops_agent.agent_config("cn-dev-group-node", "10.128.0.7:9100"))
    noaddress = Vm(tmp_path / "down", key, ip="exit 1\n")  # the interface has no address (yet)
    noaddress.boot(startup.render_script(group))
    record = bootstrap(noaddress.etc)
    assert record["opsAgent"] == "failed" and "ens4 has no IPv4 address" in str(record["opsAgentMessage"])
    assert noaddress.called("systemctl") == []


@pytest.mark.parametrize(("bind", "interface", "target"), [
    ("127.0.0.1", None, "127.0.0.1:9100"), ("0.0.0.0", None, "127.0.0.1:9100"), ("10.20.0.7", None, "10.20.0.7:9100"),
    ("::", None, "[::1]:9100"), ("fd00::5", None, "[fd00::5]:9100"), ("127.0.0.1", "ens4", f"{ops_agent.ADDRESS_PLACEHOLDER}:9100"),
])
def test_node_exporter_is_scraped_where_triton_binds(bind: str, interface: str | None, target: str) -> None:
    assert ops_agent.scrape_target(bind, interface, 9100) == target


def test_the_agent_scrapes_node_exporter_on_the_stacks_port(dev: StackConfig) -> None:
    moved = dev.model_copy(update={"monitoring": dev.monitoring.model_copy(update={"node_exporter_port": 9200})})
    for cfg, port in ((dev, 9100), (moved, 9200)):
        config = yaml.safe_load(startup.template_values(cfg)["ops_agent"]["config"])
        scrape = config["metrics"]["receivers"][ops_agent.RECEIVER]["config"]["scrape_configs"][0]
        assert scrape["static_configs"] == [{"targets": [f"127.0.0.1:{port}"]}], scrape


def test_the_agent_keeps_the_health_metrics_only_and_its_pipelines_stay(dev: StackConfig) -> None:
    config = yaml.safe_load(startup.template_values(dev)["ops_agent"]["config"])
    assert set(config) == {"metrics"}  # logging: the agent's built-in pipeline, untouched
    receiver = config["metrics"]["receivers"]["circularnet_node"]
    scrape = receiver["config"]["scrape_configs"][0]
    assert receiver["type"] == "prometheus" and scrape["job_name"] == "cn-dev-node"
    assert scrape["metric_relabel_configs"] == [{"source_labels": ["__name__"], "regex": "cnctl_.*", "action": "keep"}]
    assert config["metrics"]["service"]["pipelines"] == {"circularnet_node": {"receivers": ["circularnet_node"]}}


def test_the_stacks_mirror_replaces_googles_base_for_key_and_repository(tmp_path: Path) -> None:
    def change(config: dict[str, Any]) -> None:
        config["circularnet:mirrors"] = {"opsAgentApt": "https://mirror.plant.example/google/apt/"}

    agent = startup.ops_agent_bootstrap(load_stack(stack_variant(tmp_path, change)))
    assert agent["key_url"] == "https://mirror.plant.example/google/apt/doc/apt-key.gpg"
    assert agent["source"].splitlines()[-1] == (
        "deb [signed-by=/etc/apt/keyrings/google-cloud-ops-agent.gpg] https://mirror.plant.example/google/apt "
        "google-cloud-ops-agent-@CNCTL_CODENAME@-all main")
    pinned = catalog().gcp.ops_agent
    assert pinned is not None and agent["fingerprints"] == pinned.key_fingerprints  # a mirror serves Google's key


def test_a_mirror_the_apt_source_cannot_hold_is_refused_naming_the_field(dev: StackConfig) -> None:
    """Past the schema (which refuses it first): the source template's refusal names the field."""
    cfg = dev.model_copy(update={"mirrors": dev.mirrors.model_copy(update={"ops_agent_apt": "https://m.example/a b"})})
    with pytest.raises(ValueError, match=r"mirrors.opsAgentApt 'https://m.example/a b': .*refused"):
        startup.ops_agent_bootstrap(cfg)


# --- every stack value is data in the script (issue 20) --------------------------------------------------------

# Heredoc terminators the script used, `$(...)`, backticks, quotes, globs, a comment, newlines, a NUL-free control.
HOSTILE = ("x'\"$(touch pwned)`touch pwned`\nCNCTL_ALLOWED_SIGNERS\nCNCTL_STACK_JSON\nCNCTL_AGENT_JSON\n; touch pwned #"
           "\\ \t*?[a]{b,c}~!$HOME%%\x1b[0m")
FILTERS = {"sh", "sh_words", "b64"}
NUMBERS = {"nvidia_attempts", "nvidia_wait_seconds", "ops_agent_apt_tries", "ops_agent_apt_timeout",
           "ops_agent_apt_wait_seconds"}


def test_every_value_of_the_template_goes_in_quoted_or_as_base64() -> None:
    """Read from the template itself: each `{{ }}` is `| sh`, `| sh_words` or `| b64` of a value, or a number."""
    env = startup._script_environment()
    assert env.loader is not None
    source = env.loader.get_source(env, startup.STARTUP_TEMPLATE)[0]
    outputs = [expr for output in env.parse(source).find_all(nodes.Output) for expr in output.nodes
               if not isinstance(expr, nodes.TemplateData)]
    assert len(outputs) > 30
    for expr in outputs:
        ok = (isinstance(expr, nodes.Filter) and expr.name in FILTERS) or (isinstance(expr, nodes.Name) and expr.name in NUMBERS)
        assert ok, f"line {expr.lineno}: a value goes into the script unquoted"


@pytest.mark.parametrize("value", ["text", True, 1.5, None, ["a"]])
def test_a_value_left_unquoted_is_refused_when_rendering(value: object) -> None:
    env = startup._script_environment()
    with pytest.raises(TypeError, match=r"pass it through \| sh, \| sh_words or \| b64"):
        env.from_string("x={{ v }}").render(v=value)
    assert env.from_string("x={{ v | sh }} n={{ n }}").render(v="a b", n=3) == "x='a b' n=3"


def _group_values(tmp_path: Path) -> dict[str, Any]:
    """The template values of the worker group's script of a dev-group stack with a `bundle` section."""
    _, public = keypair(tmp_path / "keys")

    def change(config: dict[str, Any]) -> None:
        config["circularnet:bundle"] = {"signers": [{"identity": "release@plant", "publicKey": public}]}

    return startup.template_values(load_stack(stack_variant(tmp_path, change, base="dev-group")), workers=True)


def _each_string(values: Any, make: Any, path: str = "") -> Any:
    """`values` with every string (and list of strings) replaced by make(path) (one per list item)."""
    if isinstance(values, dict):
        return {k: _each_string(v, make, f"{path}.{k}") for k, v in values.items()}
    if isinstance(values, list):
        return [make(f"{path}[{i}]") for i in range(len(values))]
    return make(path) if isinstance(values, str) else values


class Recorded:
    """The texts the quoting filters put into a script, in order (a test's stand-in for startup.sh etc.)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.texts: list[str] = []
        for name in FILTERS:
            real = getattr(startup, name)
            monkeypatch.setattr(startup, name, lambda value, real=real: self.keep(real(value)))

    def keep(self, text: startup.ShellText) -> startup.ShellText:
        self.texts.append(str(text))
        return text


def bash_structure(script: str, inserted: list[str]) -> str:
    """`script` as bash's own parser reads it (`declare -f` prints a function holding it, normalized: comments
    gone, one command a line), each inserted text masked where it stands. A value that left its word would be
    reprinted otherwise, and not be found whole."""
    printed = subprocess.run([BASH, "-c", f"cnctl_script() {{\n{script}\n}}\ndeclare -f cnctl_script"], capture_output=True,
                             text=True, check=True, timeout=60).stdout
    at = 0
    for k, text in enumerate(inserted):
        at = printed.index(text, at)  # ValueError: the value is not one word where the template put it
        printed = f"{printed[:at]}@value{k}@{printed[at + len(text):]}"
    return printed


@pytest.mark.parametrize("workers", [True, False], ids=["group template", "fixed VMs"])
def test_hostile_values_leave_the_scripts_structure_as_it_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             workers: bool) -> None:
    """Every string value replaced by unique benign words, then by hostile text: bash parses both scripts to the
    same commands and heredocs, `bash -n` and shellcheck pass, and each value reads back byte for byte."""
    values = _group_values(tmp_path) if workers else startup.template_values(load_stack("dev"))
    benign = _each_string(values, lambda path: "v" + path.replace(".", "_").replace("[", "_").rstrip("]"))
    hostile = _each_string(values, lambda path: f"{HOSTILE}{path}")
    structures = []
    for case in (benign, hostile):
        recorded = Recorded(monkeypatch)
        script = startup.render_script(case)
        subprocess.run([BASH, "-n"], input=script, text=True, check=True)
        structures.append(bash_structure(script, recorded.texts))
        monkeypatch.undo()
    assert structures[0] == structures[1]
    assert "CNCTL_ALLOWED_SIGNERS" not in structures[0] and "<<'" not in structures[0]  # no quoted heredoc left
    if shutil.which("shellcheck") is None:
        pytest.fail("shellcheck is missing: `sudo python3 cnctl/sandbox/prereqs.py ensure` installs it", pytrace=False)
    (tmp_path / "hostile.sh").write_text(script)
    # SC2016 notes `$(...)` inside single quotes "will not expand": what a quoted value must do; nothing else may fire.
    done = subprocess.run(["shellcheck", "--exclude=SC2016", str(tmp_path / "hostile.sh")], capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stdout
    read = script_values(script)
    assert (read["environment"], read["stack_json"], read["os_login"]) == (
        hostile["environment"], hostile["stack_json"], hostile["os_login"])
    if workers:
        pull = hostile["pull"]
        for name, key in (("allowed_signers", "allowed_signers"), ("agent_config", "agent_config"),
                          ("requirements", "requirements"), ("pull_stack", "stack"), ("namespace", "namespace"),
                          ("pull_apt_packages", "apt_packages"), ("pip_args", "pip_args"), ("bucket_path", "bucket_path"),
                          ("pointer_object", "pointer_object"), ("metadata_server", "metadata")):
            assert read[name] == pull[key], name


def test_hostile_values_reach_the_vm_byte_for_byte_and_nothing_runs(dev: StackConfig, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The fixed VMs' script run with a stack record and a name holding shell and heredoc syntax: stack.json is
    exactly the record, and nothing in it ran (run from tmp_path, where `touch pwned` would land)."""
    monkeypatch.chdir(tmp_path)
    values = {**startup.template_values(dev), "environment": HOSTILE, "stack_json": HOSTILE + "\n{}\nCNCTL_STACK_JSON\n"}
    etc = tmp_path / "etc"
    done = run(startup.render_script(values), etc, bin_dir(tmp_path, {"nvidia-smi": "exit 9\n"}))
    assert (etc / "stack.json").read_bytes() == values["stack_json"].encode()
    assert f"recorded stack {HOSTILE} in" in done.stdout and not (tmp_path / "pwned").exists()


def test_object_names_are_url_encoded_whole() -> None:
    assert startup.object_path("bundles/dev", "channels", "stable.json") == "bundles%2Fdev%2Fchannels%2Fstable.json"
    assert startup.object_path("a b?#%", "") == "a%20b%3F%23%25%2F"
    assert isinstance(startup.sh("x"), startup.ShellText)
