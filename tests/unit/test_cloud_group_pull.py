"""A worker group's VMs apply the stack's signed bundle from their startup script (issue 12, item 3):
templates/gce-startup.sh.j2's pull section, rendered by cnctl/cloud/startup.py for the group's template only.

The pull section runs for real with bash against the GCS emulator (test_uploader's `endpoints` fixture), a
bundle published by `cnctl bundle publish` to a `dev-group` variant whose storage endpoint is the emulator, a
stand-in metadata server (name, zone, token) on loopback, and real signatures. What the test replaces, through
the script's test-only overrides (labelled as such in the script):
- the apt packages and the venv (CNCTL_PULL_SKIP_VENV=1): pip cannot reach PyPI in a unit test, and the venv
  step is the pull layer's own requirements and pip flags, checked here as rendered text only;
- the agent's python (CNCTL_PULL_AGENT): a recorder, so nothing is applied to the machine running the tests;
  it loads the written config with the verified tree's own agent, as `python -m cnctl.bundle.agent` would;
- every path the section writes is under CNCTL_PULL_ROOT, and the metadata server is CNCTL_GCE_METADATA;
- the Ops Agent section before it (CNCTL_OPS_AGENT_SKIP=1): its own tests are tests/unit/test_cloud_startup.py's.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from cnctl.bundle import publish as publishing
from cnctl.bundle.signing import allowed_signers
from cnctl.cloud.startup import render_startup_script
from cnctl.config import StackConfig, StackConfigError, load_stack
from cnctl.hostvars import CloudVm, host_vars
from tests.unit.bundle_helpers import keypair
from tests.unit.http_server import http_server
from tests.unit.stack_variants import stack_variant
from tests.unit.test_cloud_startup import script_values
from tests.unit.test_uploader import Store, endpoints  # the emulators' fixture

__all__ = ["endpoints"]
BASH = shutil.which("bash") or "/bin/bash"
VM = "cn-dev-group-worker-x1z9"
ZONE = "us-central1-b"
TOKEN = "ya29.test-token"


def group_stack(tmp_path: Path, public: str | None, key: Path | None = None, mode: str = "group",
                storage: dict[str, Any] | None = None) -> str:
    """stacks/Pulumi.dev-group.yaml with a `bundle` section (None: without it), in `mode`, `storage` changed."""

    def change(config: dict[str, Any]) -> None:
        config.pop("circularnet:bundle")  # the example's placeholder signer
        if public is not None:
            config["circularnet:bundle"] = {"signers": [{"identity": "release@plant", "publicKey": public}],
                                            **({"signingKey": str(key)} if key else {})}
        if mode != "group":
            config["circularnet:compute"] = {**config["circularnet:compute"], "mode": mode, "instances": 1}
            config["circularnet:compute"].pop("group")
        config["circularnet:storage"] = {**config["circularnet:storage"], **(storage or {})}

    return stack_variant(tmp_path, change, base="dev-group")


# --- host variables ------------------------------------------------------------------------------------------


def _vm(cfg: StackConfig) -> CloudVm:
    assert cfg.gcp is not None
    return CloudVm(name=VM, zone=ZONE, project=cfg.gcp.project, internal_ip="", ssh_user="root")


def test_a_group_vm_of_a_stack_with_a_bundle_pulls_the_stable_channel(tmp_path: Path) -> None:
    _, public = keypair(tmp_path / "keys")
    cfg = load_stack(group_stack(tmp_path, public))
    data = host_vars(cfg, "cloud", _vm(cfg))
    assert (data["cn_deploy_mode"], data["cn_pull_channel"], data["cn_group"]) == ("pull", "stable", "cloud")
    assert data["cn_bundle_signers"] == [{"identity": "release@plant", "public_key": public}]


def test_a_group_vm_uploads_and_reads_as_its_service_account_even_when_devices_have_a_key(tmp_path: Path) -> None:
    """storage.credentialsFile is the devices' key on the deploying machine: a worker booting from its template
    never got it, so its agent and uploader use the VM's own identity (else the agent would stop at a missing file)."""
    _, public = keypair(tmp_path / "keys")
    key = tmp_path / "devices.json"
    key.write_text("{}")
    key.chmod(0o600)
    cfg = load_stack(group_stack(tmp_path, public, storage={"credentialsFile": str(key)}))
    assert cfg.storage.credentials_file is not None
    assert host_vars(cfg, "cloud", _vm(cfg))["cn_storage_credentials_file"] is None
    assert '"credentials": null' in script_values(render_startup_script(cfg, workers=True))["agent_config"]


def test_fixed_vms_stay_push_even_with_a_bundle(tmp_path: Path) -> None:
    _, public = keypair(tmp_path / "keys")
    for cfg in (load_stack(group_stack(tmp_path, public, mode="vms")), load_stack("dev")):
        data = host_vars(cfg, "cloud", _vm(cfg))
        assert (data["cn_deploy_mode"], data["cn_pull_channel"]) == ("push", None), cfg.environment


def test_the_group_example_pulls_and_a_group_without_a_bundle_is_refused(tmp_path: Path) -> None:
    """A group's VMs are in no inventory, so the bundle is their only way to be configured (issue 21, item 1)."""
    cfg = load_stack("dev-group")  # its signer is the placeholder `cnctl validate` refuses (test_stack_placeholders)
    assert (host_vars(cfg, "cloud", _vm(cfg))["cn_deploy_mode"], render_startup_script(cfg, workers=True).count(
        "pull bootstrap: a worker group")) == ("pull", 1)
    with pytest.raises(StackConfigError, match="compute.mode: 'group' needs the stack's bundle section"):
        load_stack(group_stack(tmp_path, None))


# --- the rendered script -----------------------------------------------------------------------------------------


def test_the_group_script_carries_the_signers_the_hashes_and_the_store(tmp_path: Path) -> None:
    _, public = keypair(tmp_path / "keys")
    cfg = load_stack(group_stack(tmp_path, public))
    assert cfg.bundle is not None
    script = render_startup_script(cfg, workers=True)
    subprocess.run([BASH, "-n"], input=script, text=True, check=True)
    values = script_values(script)  # the files travel as base64, each value as one shell word
    assert values["allowed_signers"] == allowed_signers(cfg.bundle.signers, "circularnet-bundle:dev-group")
    assert 'release@plant namespaces="circularnet-bundle:dev-group" ' + public in values["allowed_signers"]
    wants = host_vars(cfg, "cloud", _vm(cfg))
    for wheel in [*wants["cn_uploader_wheels"], *wants["cn_agent_wheels"]]:
        assert f"{wheel['name']}=={wheel['version']}" in values["requirements"]
        assert all(f"--hash=sha256:{digest}" in values["requirements"] for digest in wheel["sha256"])
    assert values["pip_args"][:2] == ["--no-deps", "--require-hashes"]
    assert values["pip_args"][-2:] == ["--index-url", "https://pypi.org/simple"]
    assert (values["gcs_api"], values["bucket_path"]) == ("https://storage.googleapis.com", "my-circularnet-dev-group-models")
    assert '/storage/v1/b/$bucket_path/o/$1?alt=media"' in script
    assert values["pointer_object"] == "bundles%2Fdev-group%2Fchannels%2Fstable.json"
    assert values["versions_object"] == "bundles%2Fdev-group%2F"
    assert '"host": "@CNCTL_VM_NAME@"' in values["agent_config"] and '"zone": "@CNCTL_VM_ZONE@"' in values["agent_config"]
    assert '"channel": "stable"' in values["agent_config"] and '"group": "cloud"' in values["agent_config"]
    assert {"python3-venv", "openssh-client"} <= set(values["pull_apt_packages"])
    assert "gcloud" not in script.split("pull bootstrap: a worker group")[1]  # curl and the metadata server only


@pytest.mark.parametrize("workers", [True, False], ids=["group template", "fixed VMs"])
def test_the_startup_scripts_pass_shellcheck(tmp_path: Path, workers: bool) -> None:
    if shutil.which("shellcheck") is None:  # a system package of the one list: missing is a failure, never a skip
        pytest.fail("shellcheck is missing: `sudo python3 cnctl/sandbox/prereqs.py ensure` installs it", pytrace=False)
    _, public = keypair(tmp_path / "keys")
    script = tmp_path / "startup.sh"
    script.write_text(render_startup_script(load_stack(group_stack(tmp_path, public)), workers=workers))
    done = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout


def test_fixed_vms_and_a_stack_without_a_bundle_have_no_pull_section(tmp_path: Path) -> None:
    _, public = keypair(tmp_path / "keys")
    with_bundle = load_stack(group_stack(tmp_path, public))
    fixed = render_startup_script(with_bundle)  # the fixed VMs' script of the same stack
    assert "pull bootstrap" not in fixed and "CNCTL_PULL" not in fixed
    assert render_startup_script(load_stack("dev"), workers=True) == render_startup_script(load_stack("dev"))
    assert fixed.endswith('the host layers configure the rest"\n')


# --- the pull section, run for real ---------------------------------------------------------------------------


class Metadata(http.server.BaseHTTPRequestHandler):
    """STAND-IN for the GCE metadata server: the VM's name, zone and an access token (Metadata-Flavor required)."""

    answers: ClassVar[dict[str, str]] = {"/computeMetadata/v1/instance/name": VM,
               "/computeMetadata/v1/instance/zone": f"projects/123456789/zones/{ZONE}",
               "/computeMetadata/v1/instance/service-accounts/default/token":
                   json.dumps({"access_token": TOKEN, "expires_in": 3599, "token_type": "Bearer"})}

    def do_GET(self) -> None:
        body = self.answers.get(self.path)
        if body is None or self.headers.get("Metadata-Flavor") != "Google":
            self.send_error(404 if body is None else 403)
            return
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def metadata() -> Iterator[str]:
    with http_server(Metadata) as base:
        yield base


RECORDER = '''#!{python}
"""STAND-IN for the venv's python running `-m cnctl.bundle.agent` (see the test module): records what it was
handed and loads the config with the agent of the tree on PYTHONPATH, applying nothing."""
import json, os, sys
from pathlib import Path
tree = Path(os.environ["PYTHONPATH"])
sys.path.insert(0, str(tree))
from cnctl.bundle import agent
cfg = agent.load_config(Path(sys.argv[sys.argv.index("--config") + 1]))
Path({record!r}).write_text(json.dumps({{
    "argv": sys.argv[1:], "cwd": os.getcwd(), "tree": str(tree), "agent_from": agent.__file__,
    "manifest": json.loads((tree / "manifest.json").read_text()),
    "files": sorted(str(p.relative_to(tree)) for p in tree.rglob("*") if p.is_file()),
    "config": {{"host": cfg.host, "group": cfg.group, "channel": cfg.channel, "zone": cfg.zone,
               "bundles": cfg.bundles, "endpoint": cfg.endpoint, "signers": [s.identity for s in cfg.signers]}},
}}))
sys.exit(int(os.environ.get("RECORDER_EXIT", "0")))
'''


class GroupSite:
    """The emulator's models bucket, a signing key, a dev-group variant with a bundle section whose storage is the
    emulator, its rendered group script, and a root the script writes under."""

    def __init__(self, endpoint: str, metadata: str, tmp_path: Path) -> None:
        self.tmp, self.metadata = tmp_path, metadata
        self.store = Store("gcs", endpoint)
        suffix = uuid.uuid4().hex[:10]
        self.models = f"cn-models-{suffix}"
        self.store.make_bucket(self.models)
        self.key, self.public = keypair(tmp_path / "keys")
        buckets = {"images": f"cn-images-{suffix}", "results": f"cn-results-{suffix}", "models": self.models}
        self.stack = group_stack(tmp_path, self.public, self.key, storage={"endpoint": endpoint, "buckets": buckets})
        self.script = render_startup_script(load_stack(self.stack), workers=True)
        self.root, self.etc, self.record = tmp_path / "root", tmp_path / "etc", tmp_path / "record.json"
        self.recorder = tmp_path / "recorder"
        self.recorder.write_text(RECORDER.format(python=sys.executable, record=str(self.record)))
        self.recorder.chmod(0o755)

    def publish(self) -> str:
        return publishing.publish(self.stack, channel="stable", say=lambda line: None).bundle.version

    def base(self, version: str) -> str:
        return f"bundles/dev-group/{version}"

    def run(self, **env: str) -> subprocess.CompletedProcess[str]:
        environ = {**os.environ, "CNCTL_ETC_DIR": str(self.etc), "CNCTL_NVIDIA_WAIT_SECONDS": "0",
                   "CNCTL_PULL_ROOT": str(self.root), "CNCTL_GCE_METADATA": self.metadata,
                   "CNCTL_PULL_SKIP_VENV": "1", "CNCTL_PULL_AGENT": str(self.recorder),
                   # the Ops Agent section has its own tests (test_cloud_startup.py): skipped, and never this machine's
                   "CNCTL_OPS_AGENT_SKIP": "1", "CNCTL_OPS_AGENT_ROOT": str(self.root), **env}
        environ.pop("PYTHONPATH", None)
        return subprocess.run([BASH, "-c", self.script], env=environ, capture_output=True, text=True, timeout=300,
                              check=False)

    def pull_record(self) -> dict[str, Any]:
        return json.loads((self.etc / "pull.json").read_text())

    def scratch_left(self) -> list[str]:
        state = self.root / "var/lib/circularnet/pull"
        return sorted(p.name for p in state.iterdir()) if state.is_dir() else []


@pytest.fixture
def group_site(endpoints: dict[str, str], metadata: str, tmp_path: Path) -> GroupSite:
    return GroupSite(endpoints["gcs"], metadata, tmp_path)


def test_a_good_bundle_reaches_the_agent_as_a_verified_tree_with_the_vms_config(group_site: GroupSite) -> None:
    site = group_site
    version = site.publish()
    done = site.run()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "apt packages and venv skipped (CNCTL_PULL_SKIP_VENV, test-only)" in done.stdout
    assert f"version {version} signed by release@plant" in done.stdout
    record = json.loads(site.record.read_text())
    config = site.root / "etc/circularnet/pull/agent.json"
    assert record["argv"] == ["-m", "cnctl.bundle.agent", "--config", str(config)]
    assert record["cwd"] == record["tree"] and record["agent_from"].startswith(record["tree"])  # the bundle's agent
    assert record["manifest"]["version"] == version and record["manifest"]["stack"] == "dev-group"
    assert {"deploy.py", "hosts/pull.py", "cnctl/bundle/agent.py", "stacks/Pulumi.dev-group.yaml"} <= set(record["files"])
    assert record["config"] == {"host": VM, "group": "cloud", "channel": "stable", "zone": ZONE,
                                "bundles": site.models, "endpoint": site.store.endpoint, "signers": ["release@plant"]}
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert site.pull_record() == {"channel": "stable", "message": f"the agent applied version {version}",
                                  "status": "applied", "step": "", "version": version}
    assert not Path(record["tree"]).exists() and site.scratch_left() == []  # the boot's tree and download are gone
    assert json.loads((site.etc / "bootstrap.json").read_text())["python"]  # the bootstrap ran first, as before


def test_once_the_pull_layers_timer_is_installed_the_script_leaves_it_to_the_timer(group_site: GroupSite) -> None:
    site = group_site
    site.publish()
    timer = site.root / "etc/systemd/system/circularnet-pull.timer"
    timer.parent.mkdir(parents=True)
    timer.write_text("[Timer]\n")
    done = site.run()
    assert done.returncode == 0 and "the pull layer's timer converges this VM" in done.stdout
    assert not site.record.exists() and site.pull_record()["status"] == "installed"


def test_an_agent_that_fails_is_recorded_and_fails_the_script(group_site: GroupSite) -> None:
    site = group_site
    site.publish()
    done = site.run(RECORDER_EXIT="1")
    assert done.returncode == 1 and "the agent exited 1" in done.stdout
    assert site.pull_record()["status"] == "failed" and site.pull_record()["step"] == "agent"
    assert site.scratch_left() == []


def _resign(archive: bytes, key: Path) -> bytes:
    return subprocess.run(["ssh-keygen", "-q", "-Y", "sign", "-f", str(key), "-n", "circularnet-bundle:dev-group"],
                          input=archive, capture_output=True, check=True).stdout


@pytest.mark.parametrize(("case", "step", "why"), [
    ("archive differs from the pointer", "sha256", "has sha256"),
    ("signed by another key", "signature", "is not signed by a key of bundle.signers"),
    ("signature missing", "signature", "is not signed (no bundle.tar.gz.sig)"),
    ("nothing published", "pointer", "nothing published on channel stable"),
])
def test_a_bundle_that_does_not_verify_stops_the_script_and_nothing_is_extracted(
        group_site: GroupSite, case: str, step: str, why: str) -> None:
    site = group_site
    version = site.publish() if case != "nothing published" else ""
    if case != "nothing published":
        bucket = site.store.client.bucket(site.models)
        archive = site.store.objects(site.models)[f"{site.base(version)}/bundle.tar.gz"]
        if case == "archive differs from the pointer":
            changed = archive[:-40] + bytes(b ^ 1 for b in archive[-40:])
            assert hashlib.sha256(changed).hexdigest() != hashlib.sha256(archive).hexdigest()
            site.store.put(site.models, f"{site.base(version)}/bundle.tar.gz", changed)
        elif case == "signed by another key":
            other, _ = keypair(site.tmp / "other", "intruder")
            site.store.put(site.models, f"{site.base(version)}/bundle.tar.gz.sig", _resign(archive, other))
        else:
            bucket.blob(f"{site.base(version)}/bundle.tar.gz.sig").delete()
    done = site.run()
    assert done.returncode == 1, done.stdout + done.stderr
    assert why in done.stdout and "pull bootstrap failed (recorded in" in done.stdout
    record = site.pull_record()
    assert (record["status"], record["step"], record["version"]) == ("failed", step, version)
    assert not site.record.exists()  # the agent was never run
    assert site.scratch_left() == []  # nothing downloaded or extracted is left
    assert not (site.root / "etc/circularnet/pull/agent.json").exists()
