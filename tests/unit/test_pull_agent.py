"""Pull mode's agent (cnctl/bundle/agent.py) against real stores on loopback (the GCS emulator and moto's S3,
test_uploader's `endpoints` fixture), real signatures (ssh-keygen) and bundles published by `cnctl bundle publish`.

What is replaced: the apply step. A unit test must not run the host layers on the machine that runs the tests,
so `Recording.apply` (a labelled stand-in) checks that it is handed the verified, unpacked tree with the host's
environment and answers with the exit code the test chose. The real apply (`pyinfra @local` in a sandbox host
with SSH closed) is tests/e2e/test_pull.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from cnctl.bundle import agent as pull
from cnctl.bundle import publish as publishing
from cnctl.inventory import for_pull_module
from tests.unit.bundle_helpers import keypair
from tests.unit.stack_variants import stack_variant
from tests.unit.test_uploader import KINDS, Store, endpoints  # the emulators' fixture

__all__ = ["endpoints"]
HOST = "gpu-server-1"


@pytest.fixture(autouse=True)
def _s3_default_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")


class Site:
    """One store with fresh buckets, a signing key and a stack whose server gpu-server-1 is in pull mode."""

    def __init__(self, kind: str, endpoint: str, tmp_path: Path) -> None:
        self.kind, self.tmp = kind, tmp_path
        self.store = Store(kind, endpoint)
        suffix = uuid.uuid4().hex[:10]
        self.models, self.results = f"cn-models-{suffix}", f"cn-results-{suffix}"
        for bucket in (self.models, self.results):
            self.store.make_bucket(bucket)
        self.key, self.public = keypair(tmp_path / "keys")
        buckets = {"images": "sandbox-images", "results": self.results, "models": self.models}

        def change(config: dict[str, Any]) -> None:
            config["circularnet:bundle"] = {"signers": [{"identity": "release@plant", "publicKey": self.public}],
                                            "signingKey": str(self.key)}
            config["circularnet:storage"] = {**config["circularnet:storage"], "kind": kind, "endpoint": endpoint,
                                             "buckets": buckets}
            config["circularnet:fleets"]["servers"][0].update(mode="pull")
            del config["circularnet:monitoring"]  # a pull-mode server cannot be the site (monitoring.server)

        self.stack = stack_variant(tmp_path, change, base="local")

    def publish(self, channel: str = "canary") -> str:
        return publishing.publish(self.stack, channel=channel, say=lambda line: None).bundle.version

    def change_stack(self, old: str, new: str) -> None:
        path = Path(self.stack)
        path.write_text(path.read_text().replace(old, new))

    def config(self, channel: str = "canary", signers: list[dict[str, str]] | None = None, name: str = "host") -> Path:
        """The agent's config as the pull layer renders it (templates/pull/agent.json.j2's keys)."""
        state = self.tmp / name / "state"
        data = {"format": 1, "stack": "local", "host": HOST, "group": "servers", "channel": channel,
                "store": {"kind": self.kind, "endpoint": self.store.endpoint, "project": None,
                          "bundles": self.models, "reports": self.results},
                "credentials": None, "signers": signers or [{"identity": "release@plant", "public_key": self.public}],
                "state": str(state), "pyinfra": str(Path(sys.executable).with_name("pyinfra")),
                "python": sys.executable, "agent": "/nonexistent"}
        path = self.tmp / name / "agent.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data))
        return path

    def reports(self) -> list[dict[str, Any]]:
        objects = self.store.objects(self.results)
        return [json.loads(body) for name, body in sorted(objects.items()) if name.startswith("pull-reports/local/")]


@pytest.fixture(params=KINDS)
def site(request: pytest.FixtureRequest, endpoints: dict[str, str], tmp_path: Path) -> Site:
    return Site(request.param, endpoints[request.param], tmp_path)


@pytest.fixture
def gcs_site(endpoints: dict[str, str], tmp_path: Path) -> Site:
    return Site("gcs", endpoints["gcs"], tmp_path)


class Recording(pull.Agent):
    """STAND-IN for the apply step only (see the module doc): records what pyinfra would have been given."""

    def __init__(self, *args: Any, exit_code: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.exit_code = exit_code
        self.applied: list[Path] = []

    def apply(self, tree: Path) -> subprocess.CompletedProcess[str]:
        assert (tree / "deploy.py").is_file() and (tree / "hosts" / "pull.py").is_file()
        assert (tree / "stacks" / "Pulumi.local.yaml").is_file()
        self.applied.append(tree)
        return subprocess.CompletedProcess(["pyinfra"], self.exit_code, "", "")


def agent(config: Path, exit_code: int = 0, allow_rollback: str | None = None) -> Recording:
    return Recording(pull.load_config(config), exit_code=exit_code, allow_rollback=allow_rollback)


def run(config: Path, **kwargs: Any) -> tuple[pull.Outcome, Recording]:
    one = agent(config, **kwargs)
    outcome = one.run()
    one.report(outcome)
    return outcome, one


def applied(config: Path) -> dict[str, Any]:
    return json.loads((Path(json.loads(config.read_text())["state"]) / "applied.json").read_text())


def bundles_kept(config: Path) -> list[str]:
    folder = Path(json.loads(config.read_text())["state"]) / "bundles"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


# --- convergence ------------------------------------------------------------------------------------------


def test_a_published_bundle_is_applied_once_then_the_host_is_up_to_date(site: Site) -> None:
    version = site.publish()
    config = site.config()
    outcome, first = run(config)
    assert (outcome.outcome, outcome.version, outcome.exit_code) == ("applied", version, 0)
    assert first.applied == [Path(json.loads(config.read_text())["state"]) / "bundles" / version]
    assert applied(config)["current"] == version

    outcome, second = run(config)
    assert (outcome.outcome, outcome.exit_code) == ("up-to-date", 0) and second.applied == []
    reports = site.reports()
    assert [r["outcome"] for r in reports] == ["applied"]  # an unchanged outcome is not sent again within the hour
    assert reports[0]["host"] == HOST and reports[0]["current"] == version and reports[0]["channel"] == "canary"


def test_the_report_carries_the_verify_layers_health_and_a_change_of_it_is_sent_at_once(gcs_site: Site) -> None:
    config = gcs_site.config()
    version = gcs_site.publish()
    outcome, one = run(config)
    assert gcs_site.reports()[-1]["health"] is None  # the bundle's verify role names a report this machine lacks
    health = gcs_site.tmp / "health.json"
    health.write_text(json.dumps({"healthy": True, "problems": []}))
    (one.applied[0] / "roles" / "verify" / "defaults" / "main.yml").write_text(f"verify_report: {health}\n")
    run(config)
    assert len(gcs_site.reports()) == 2 and gcs_site.reports()[-1]["health"] == {"healthy": True, "problems": []}
    run(config)
    assert len(gcs_site.reports()) == 2  # nothing changed: not sent again within the hour
    health.write_text(json.dumps({"healthy": False, "problems": ["Triton is down"]}))
    run(config)
    assert gcs_site.reports()[-1]["health"]["problems"] == ["Triton is down"]
    assert gcs_site.reports()[-1]["current"] == version and outcome.outcome == "applied"


def test_a_new_bundle_on_the_channel_is_applied_by_the_next_run(gcs_site: Site) -> None:
    config = gcs_site.config()
    first = gcs_site.publish()
    run(config)
    gcs_site.change_stack("scoreThreshold: 0.4", "scoreThreshold: 0.5")
    second = gcs_site.publish()
    assert second != first
    outcome, one = run(config)
    assert (outcome.outcome, outcome.version) == ("applied", second) and len(one.applied) == 1
    tree = one.applied[0]
    assert "scoreThreshold: 0.5" in (tree / "stacks" / "Pulumi.local.yaml").read_text()
    assert [h["version"] for h in applied(config)["history"]] == [first, second]
    assert [r["current"] for r in gcs_site.reports()] == [first, second]


def test_a_canary_bundle_reaches_canary_hosts_only_until_it_is_promoted(gcs_site: Site) -> None:
    canary, stable = gcs_site.config("canary", name="canary-host"), gcs_site.config("stable", name="stable-host")
    version = gcs_site.publish("canary")
    outcome, _ = run(stable)
    assert (outcome.outcome, outcome.exit_code) == ("waiting", 0)
    assert "channel stable of stack local points at nothing yet" in outcome.message and "promote" in outcome.message
    assert run(canary)[0].outcome == "applied"
    publishing.promote(gcs_site.stack, say=lambda line: None)
    outcome, one = run(stable)
    assert (outcome.outcome, outcome.version) == ("applied", version) and len(one.applied) == 1


# --- refusals: the host stays as it was ---------------------------------------------------------------------


def _tamper(site: Site, version: str, name: str, body: bytes | None, repoint: bool = False) -> None:
    base = f"bundles/local/{version}"
    if body is None:
        site.store.client.bucket(site.models).blob(f"{base}/{name}").delete() if site.kind == "gcs" else \
            site.store.client.delete_object(Bucket=site.models, Key=f"{base}/{name}")
    else:
        site.store.put(site.models, f"{base}/{name}", body)
    if repoint:  # a writer of the bucket who also fixes the pointer's checksum: only the signature is left
        archive = site.store.objects(site.models)[f"{base}/bundle.tar.gz"]
        key = "bundles/local/channels/canary.json"
        pointer = json.loads(site.store.objects(site.models)[key])
        site.store.put(site.models, key, json.dumps({**pointer, "sha256": hashlib.sha256(archive).hexdigest()}).encode())


def _resign(site: Site, archive: bytes, key: Path) -> bytes:
    return subprocess.run(["ssh-keygen", "-q", "-Y", "sign", "-f", str(key), "-n", "circularnet-bundle:local"],
                          input=archive, capture_output=True, check=True).stdout


@pytest.mark.parametrize("case", ["archive changed", "archive changed, pointer fixed", "signature missing",
                                  "signed by another key", "signed for another stack"])
def test_a_tampered_or_unsigned_bundle_is_refused_and_nothing_of_it_is_kept(gcs_site: Site, case: str) -> None:
    site = gcs_site
    config = site.config()
    good = site.publish()
    run(config)
    site.change_stack("scoreThreshold: 0.4", "scoreThreshold: 0.6")
    version = site.publish()
    base = f"bundles/local/{version}"
    archive = site.store.objects(site.models)[f"{base}/bundle.tar.gz"]
    changed = archive[:-40] + bytes(b ^ 1 for b in archive[-40:])
    if case == "archive changed":
        _tamper(site, version, "bundle.tar.gz", changed)
        why = "has sha256"
    elif case == "archive changed, pointer fixed":
        _tamper(site, version, "bundle.tar.gz", changed, repoint=True)
        why = "does not match the archive's bytes"
    elif case == "signature missing":
        _tamper(site, version, "bundle.tar.gz.sig", None)
        why = "not signed"
    elif case == "signed by another key":
        other, _ = keypair(site.tmp / "other", "intruder")
        _tamper(site, version, "bundle.tar.gz.sig", _resign(site, archive, other))
        why = "not by any key of bundle.signers"
    else:
        sig = subprocess.run(["ssh-keygen", "-q", "-Y", "sign", "-f", str(site.key), "-n", "circularnet-bundle:prod"],
                             input=archive, capture_output=True, check=True).stdout
        _tamper(site, version, "bundle.tar.gz.sig", sig)
        why = "namespace does not match"
    outcome, one = run(config)
    assert (outcome.outcome, outcome.exit_code) == ("refused", 1), outcome
    assert why in outcome.message and "the host stays as it was" in outcome.message
    assert one.applied == []
    assert applied(config)["current"] == good
    assert bundles_kept(config) == [good]  # no partial tree, no download left beside it
    assert site.reports()[-1]["outcome"] == "refused"


def test_a_pointer_moved_back_to_an_older_version_is_refused_unless_the_rollback_is_asked_for(gcs_site: Site) -> None:
    config = gcs_site.config()
    first = gcs_site.publish()
    run(config)
    gcs_site.change_stack("scoreThreshold: 0.4", "scoreThreshold: 0.5")
    second = gcs_site.publish()
    run(config)
    publishing.promote(gcs_site.stack, version=first, channel="canary", say=lambda line: None)  # the pointer goes back
    outcome, one = run(config)
    assert outcome.outcome == "refused" and "rollback protection" in outcome.message and one.applied == []
    assert f"--allow-rollback {first}" in outcome.message
    assert applied(config)["current"] == second
    outcome, one = run(config, allow_rollback=first)
    assert (outcome.outcome, outcome.version) == ("applied", first) and len(one.applied) == 1


def test_a_failed_apply_keeps_the_current_version_and_the_next_run_retries(gcs_site: Site) -> None:
    config = gcs_site.config()
    first = gcs_site.publish()
    run(config)
    gcs_site.change_stack("scoreThreshold: 0.4", "scoreThreshold: 0.5")
    second = gcs_site.publish()
    outcome, _ = run(config, exit_code=1)
    assert (outcome.outcome, outcome.exit_code) == ("failed", 1) and "the next run retries it" in outcome.message
    assert applied(config)["current"] == first
    outcome, one = run(config)
    assert (outcome.outcome, outcome.version) == ("applied", second) and len(one.applied) == 1
    assert [r["outcome"] for r in gcs_site.reports()] == ["applied", "failed", "applied"]


def test_an_unreachable_store_changes_nothing_and_the_report_stays_on_the_host(gcs_site: Site) -> None:
    config = gcs_site.config()
    data = json.loads(config.read_text())
    data["store"]["endpoint"] = "http://127.0.0.1:9"  # discard: nothing listens
    config.write_text(json.dumps(data))
    outcome, one = run(config)
    assert (outcome.outcome, outcome.exit_code) == ("unreachable", 1) and one.applied == []
    assert "Connection refused" in outcome.message
    local = json.loads((Path(data["state"]) / "report.json").read_text())
    assert local["outcome"] == "unreachable" and not (Path(data["state"]) / "applied.json").exists()


# --- the command ------------------------------------------------------------------------------------------


def _main(config: Path) -> tuple[int, str]:
    done = subprocess.run([sys.executable, "-m", "cnctl.bundle.agent", "--config", str(config)], capture_output=True,
                          text=True, timeout=120, check=False)
    return done.returncode, done.stderr


@pytest.mark.parametrize(("edit", "named"), [
    (lambda d: d.pop("host"), "host missing"),
    (lambda d: d["store"].pop("bundles"), "store.bundles missing"),
    (lambda d: d.update(channel="beta"), "channel 'beta' is not one of canary, stable"),
    (lambda d: d.update(signers=[]), "no signers"),
    (lambda d: d.update(signers=[{"identity": "a*", "public_key": "ssh-ed25519 AAAA"}]), "signers:"),
    (lambda d: d.update(format=2), "format 2 is not 1"),
    (lambda d: d["store"].update(kind="ftp"), "store.kind 'ftp' is not gcs or s3"),
])
def test_a_bad_config_exits_2_naming_the_key_and_touches_nothing(gcs_site: Site, edit: Any, named: str) -> None:
    config = gcs_site.config()
    data = json.loads(config.read_text())
    edit(data)
    config.write_text(json.dumps(data))
    code, err = _main(config)
    assert code == 2 and named in err and "Traceback" not in err, err
    assert not Path(json.loads(config.read_text())["state"]).exists()


def test_an_unreadable_config_exits_2_with_the_fix(tmp_path: Path) -> None:
    code, err = _main(tmp_path / "absent.json")
    assert code == 2 and "deploy the pull layer" in err and "Traceback" not in err
    (tmp_path / "bad.json").write_text("{")
    code, err = _main(tmp_path / "bad.json")
    assert code == 2 and "is not JSON" in err


def test_a_second_run_while_one_applies_stops_without_touching_anything(gcs_site: Site) -> None:
    config = gcs_site.config()
    state = Path(json.loads(config.read_text())["state"])
    state.mkdir(parents=True)
    hold = ("import fcntl, sys, time; f = open(sys.argv[1], 'w'); fcntl.flock(f, fcntl.LOCK_EX); "
            "print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(state / "lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        done = subprocess.run([sys.executable, "-m", "cnctl.bundle.agent", "--config", str(config)],
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0 and "another run of the agent is applying" in done.stdout
        assert not (state / "applied.json").exists() and not (state / "report.json").exists()
    finally:
        holder.kill()
        holder.wait()


# --- hosts/pull.py: this machine as its fleet entry ------------------------------------------------------------


def test_the_pull_inventory_is_local_with_the_hosts_variables_and_its_on_host_credentials(gcs_site: Site) -> None:
    env = {"CNCTL_STACK": gcs_site.stack, "CNCTL_PULL_HOST": HOST, "CNCTL_PULL_GROUP": "servers",
           "CNCTL_PULL_CREDENTIALS": "/etc/cn/creds.json"}
    groups = for_pull_module(env)
    assert groups["edge"] == [] and [name for name, _ in groups["servers"]] == ["@local"]
    data = groups["servers"][0][1]
    assert data["cn_host"] == HOST and data["cn_deploy_mode"] == "pull" and data["cn_pull_channel"] == "stable"
    assert data["cn_storage_credentials_file"] is None  # the stack names none: the host's identity stays


def test_a_host_the_sandbox_generated_pulls_as_its_groups_first_entry(gcs_site: Site) -> None:
    env = {"CNCTL_STACK": gcs_site.stack, "CNCTL_PULL_HOST": "sandbox-server-3", "CNCTL_PULL_GROUP": "servers"}
    data = for_pull_module(env)["servers"][0][1]
    assert data["cn_host"] == "sandbox-server-3" and data["cn_deploy_mode"] == "pull"


@pytest.mark.parametrize(("with_stack", "host", "group", "named"), [
    (False, HOST, "servers", "CNCTL_STACK (the bundle's stack file), CNCTL_PULL_HOST"),
    # the local stack's fleet comes from a fleet file: a host it does not list stands for its group's first entry
    (True, "belt-9-orin", "edge", ("host belt-9-orin is `mode: push` in stack local: only a pull-mode host applies a "
                                  "bundle to itself; set mode: pull in fleets.edge[0] (belt-1-orin), which it stands for")),
    (True, "Belt;9", "edge", "host 'Belt;9': not a host name"),
    (True, HOST, "edge", f"host {HOST} is in fleets.servers of stack local, not fleets.edge"),
    (True, "belt-1-orin", "edge", "host belt-1-orin is `mode: push`"),
    (True, HOST, "cloud", "group 'cloud': a pull-mode host is one of edge, servers"),
])
def test_the_pull_inventory_exits_2_naming_the_host(gcs_site: Site, with_stack: bool, host: str, group: str,
                                                     named: str) -> None:
    environ = {key: value for key, value in os.environ.items() if key != "CNCTL_STACK"}
    environ.update(CNCTL_PULL_HOST=host, CNCTL_PULL_GROUP=group, PYTHONPATH=os.getcwd(),
                   **({"CNCTL_STACK": gcs_site.stack} if with_stack else {}))
    done = subprocess.run([sys.executable, "-c", "import hosts.pull"], env=environ, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 2 and named in done.stderr and "Traceback" not in done.stderr, done.stderr


# --- hosts/pull.py: a VM of the autoscaled worker group (compute.mode: group) ---------------------------------------

GROUP_VM, GROUP_ZONE = "cn-dev-group-worker-x1z9", "us-central1-b"


def _group_stack(tmp_path: Path, bundle: bool = True, mode: str = "group") -> str:
    """stacks/Pulumi.dev-group.yaml with a `bundle` section (or none), in compute mode `mode`."""
    _, public = keypair(tmp_path / "keys")

    def change(config: dict[str, Any]) -> None:
        config.pop("circularnet:bundle")  # the example's placeholder signer
        if bundle:
            config["circularnet:bundle"] = {"signers": [{"identity": "release@plant", "publicKey": public}]}
        if mode != "group":
            config["circularnet:compute"] = {**config["circularnet:compute"], "mode": mode}
            config["circularnet:compute"].pop("group")

    return stack_variant(tmp_path, change, base="dev-group")


def test_a_group_vm_pulls_as_itself_in_group_cloud_with_its_zone_and_the_stacks_project(tmp_path: Path) -> None:
    env = {"CNCTL_STACK": _group_stack(tmp_path), "CNCTL_PULL_HOST": GROUP_VM, "CNCTL_PULL_GROUP": "cloud",
           "CNCTL_PULL_ZONE": GROUP_ZONE}
    groups = for_pull_module(env)
    assert groups["edge"] == [] and groups["servers"] == [] and [name for name, _ in groups["cloud"]] == ["@local"]
    data = groups["cloud"][0][1]
    assert (data["cn_host"], data["cn_group"], data["cn_site"], data["cn_gcp_zone"]) == (GROUP_VM, "cloud",
                                                                                         GROUP_ZONE, GROUP_ZONE)
    assert (data["cn_deploy_mode"], data["cn_pull_channel"], data["cn_gcp_project"]) == ("pull", "stable",
                                                                                        "my-circularnet-dev")
    assert data["cn_platform"] == "server" and data["cn_driver_source"] == "image"


@pytest.mark.parametrize(("shape", "host", "zone", "named"), [
    ("no bundle", GROUP_VM, GROUP_ZONE, "compute.mode: 'group' needs the stack's bundle section"),
    ("fixed vms", GROUP_VM, GROUP_ZONE, "stack dev-group has compute.mode vms"),
    ("group", GROUP_VM, "", "its zone (CNCTL_PULL_ZONE): None is not a GCP zone"),
    ("group", GROUP_VM, "europe-west4-a", "zone europe-west4-a is not one of stack dev-group's gcp.zones"),
    ("group", "Worker_1", GROUP_ZONE, "host Worker_1 of group cloud: its name: 'Worker_1' is not a VM name"),
])
def test_the_pull_inventory_refuses_a_cloud_host_that_is_not_a_group_vm_of_a_bundle_stack(
        tmp_path: Path, shape: str, host: str, zone: str, named: str) -> None:
    stack = _group_stack(tmp_path, bundle=shape != "no bundle", mode="vms" if shape == "fixed vms" else "group")
    environ = {key: value for key, value in os.environ.items() if not key.startswith("CNCTL_")}
    environ.update(CNCTL_STACK=stack, CNCTL_PULL_HOST=host, CNCTL_PULL_GROUP="cloud", CNCTL_PULL_ZONE=zone,
                   PYTHONPATH=os.getcwd())
    done = subprocess.run([sys.executable, "-c", "import hosts.pull"], env=environ, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 2 and named in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_a_group_vms_agent_config_names_its_zone_and_the_agent_passes_it_to_the_inventory(tmp_path: Path) -> None:
    config = tmp_path / "agent.json"
    data = {"format": 1, "stack": "dev-group", "host": GROUP_VM, "group": "cloud", "channel": "stable",
            "store": {"kind": "gcs", "endpoint": None, "project": "my-circularnet-dev",
                      "bundles": "b", "reports": "r"},
            "credentials": None, "signers": [{"identity": "release@plant", "public_key": keypair(tmp_path)[1]}],
            "state": str(tmp_path / "state"), "pyinfra": "/nonexistent/pyinfra"}
    config.write_text(json.dumps(data))
    with pytest.raises(pull.UsageProblem, match="zone missing: a VM of the worker group"):
        pull.load_config(config)
    config.write_text(json.dumps({**data, "zone": GROUP_ZONE}))
    assert pull.load_config(config).zone == GROUP_ZONE
