"""Invalid stacks, one per class of bad input, through `cnctl validate`.

Every case must exit 2 with a one-line problem naming the field (or the file line), print the user's
value verbatim (never read as terminal markup), show no traceback and leave the file untouched.
The file-level and printing classes (1, 2) and a sample of the value rules (3) run through the
installed console script, concurrently, as a user would start it; the other value rules run the same
Typer app in-process (same parsing, same printing) to keep the suite fast.
"""

from __future__ import annotations

import concurrent.futures
import copy
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from cnctl.cli.main import app
from cnctl.config import StackConfigError, load_stack
from cnctl.paths import STACKS_DIR

CNCTL = shutil.which("cnctl") or str(Path(__file__).resolve().parents[2] / ".venv/bin/cnctl")
DEV = (STACKS_DIR / "Pulumi.dev.yaml").read_text(encoding="utf-8")


@dataclass(frozen=True)
class Case:
    """A bad stack: how to write it, the problem line it must produce (prefix), and text that line holds."""

    id: str
    write: Callable[[Path], Path]
    prefix: str
    holds: str
    script: bool = True


def text(new: str | bytes, env: str = "dev") -> Callable[[Path], Path]:
    def write(directory: Path) -> Path:
        path = directory / f"Pulumi.{env}.yaml"
        path.write_bytes(new if isinstance(new, bytes) else new.encode("utf-8"))
        return path

    return write


def replaced(old: str, new: str, env: str = "dev") -> Callable[[Path], Path]:
    assert old in DEV, old
    return text(DEV.replace(old, new, 1), env)


def edited(change: Callable[[dict[str, Any]], None], env: str = "dev") -> Callable[[Path], Path]:
    document = yaml.safe_load(DEV)
    change(document["config"])
    return text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True), env)


def directory(directory: Path) -> Path:
    path = directory / "Pulumi.dev.yaml"
    path.mkdir()
    return path


def at(section: str, **values: Any) -> Callable[[dict[str, Any]], None]:
    return lambda config: config[f"circularnet:{section}"].update(copy.deepcopy(values))


def edge(**values: Any) -> Callable[[dict[str, Any]], None]:
    return lambda config: config["circularnet:fleets"]["edge"][0].update(values)


def add_server(**values: Any) -> Callable[[dict[str, Any]], None]:
    return lambda config: config["circularnet:fleets"]["servers"].append({"name": "gpu-1", **values})


def with_sandbox(config: dict[str, Any]) -> None:
    config["circularnet:sandbox"] = {"subnet": "172.31.250.0/24"}


def with_sandbox_standin(config: dict[str, Any]) -> None:
    with_sandbox(config)
    config["circularnet:model"].update(key="sandbox_standin")


MARKUP = "[bold red]x[/]"
CASES = [
    # 1. errors never crash and never lie: values are text, files that are no stack are one line
    Case("markup-value", replaced("project: my-circularnet-dev", f'project: "{MARKUP}"'), "gcp.project:", repr(MARKUP)),
    Case("markup-key", edited(at("compute", **{"[link=x]gpu[/link]": 1})), "compute.[link=x]gpu[/link]:", "known keys"),
    Case("escape-char", replaced("site: plant-a", 'site: "a\\e[2Jb"'), "fleets.edge[0].site:", r"'a\x1b[2Jb'"),
    Case("pattern-shown-whole", edited(edge(sshUser="Root User")), "fleets.edge[0].sshUser:", "^[a-z_][a-z0-9_-]{0,31}$"),
    Case("not-utf8", text(DEV.encode() + b"# caf\xe9\n"), "(file): is not UTF-8", f"line {DEV.count(chr(10)) + 1}"),
    Case("directory", directory, "(file): is a directory", "Pulumi.<env>.yaml"),
    Case("directory-no-suffix", lambda d: d, "(file): is a directory", "Pulumi.<env>.yaml", script=False),
    Case("deep-nesting", text("config:\n  circularnet:model: " + "[" * 500 + "]" * 500 + "\n"), "(file):", "nested"),
    Case("anchors", text(DEV + "  circularnet:security: &s {osLogin: true}\n  pulumi:tags: *s\n"), "(file):", "alias"),
    Case("not-yaml", text("config: {circularnet:model: [\n"), "(file): is not valid YAML: line 2", "column"),
    # 2. nothing is silently dropped
    Case("dup-section", text(DEV + "  circularnet:gcp: {project: other-project, region: us-east1, zones: [us-east1-b]}\n"),
         f"(file): line {DEV.count(chr(10)) + 1}:", "'circularnet:gcp' is written twice (first on line 4)"),
    Case("dup-nested", replaced("    spot: true\n", "    spot: true\n    spot: false\n"), "(file): line 29:", "'spot'"),
    Case("namespace-typo", replaced("circularnet:compute:", "circularnett:compute:"), "circularnett:compute:",
         "write circularnet:compute"),
    Case("namespace-case", replaced("circularnet:gcp:", "circularNet:gcp:"), "circularNet:gcp:", "write circularnet:gcp"),
    Case("no-namespace", replaced("circularnet:compute:", "compute:"), "compute:", "write circularnet:compute"),
    Case("section-typo", replaced("circularnet:compute:", "circularnet:computer:"), "circularnet:computer:",
         "did you mean circularnet:compute"),
    Case("empty-section", text(DEV.split("  circularnet:compute:")[0] + "  circularnet:compute:\n"
                               + "  circularnet:model:" + DEV.split("  circularnet:model:")[1]),
         "compute: is empty", "remove the key"),
    Case("file-key-typo", text(DEV + "confg: {}\n"), "confg:", "not a stack file key"),
    # 3. values GCP and the hosts accept
    Case("region", edited(at("gcp", region="us-central9", zones=["us-central9-a"])), "gcp.region: 'us-central9'",
         "did you mean"),
    Case("zone", edited(at("gcp", zones=["us-central1-a", "us-central1-d"])), "gcp.zones[1]: 'us-central1-d'",
         "a, us-central1-b", script=False),
    Case("machine-type", edited(at("compute", machineType="n1-standard-7")), "compute.machineType: 'n1-standard-7'",
         "n1-standard-8", script=False),
    Case("bucket-lookalike", edited(lambda c: c["circularnet:storage"]["buckets"].update(images="my-g00gle-images")),
         "storage.buckets.images: 'my-g00gle-images'", "look-alikes"),
    Case("bucket-dots", edited(lambda c: c["circularnet:storage"]["buckets"].update(images="a..b.example.com")),
         "storage.buckets.images: 'a..b.example.com'", "dot-separated", script=False),
    Case("kms-key", edited(at("storage", kmsKeyName="my-key")), "storage.kmsKeyName: 'my-key'", "projects/P/locations/L", script=False),
    Case("endpoint-scheme", edited(at("storage", endpoint="ftp://10.0.0.2:21")), "storage.endpoint: 'ftp://10.0.0.2:21'",
         "https", script=False),
    Case("url-template", edited(at("model", url="https://{{ mirror }}/m.zip")), "model.url: 'https://{{ mirror }}/m.zip'",
         "URL", script=False),
    Case("address-template", edited(edge(address="{{ edge_ip }}")), "fleets.edge[0].address: '{{ edge_ip }}'", "DNS name"),
    Case("address-bad-ip", edited(edge(address="10.50.1.256")), "fleets.edge[0].address: '10.50.1.256'", "DNS name", script=False),
    Case("capture-dir-shell", edited(edge(camera={"captureDir": "/data/$(reboot)"})),
         "fleets.edge[0].camera.captureDir: '/data/$(reboot)'", "shell", script=False),
    Case("capture-dir-relative", edited(edge(camera={"captureDir": "frames"})), "fleets.edge[0].camera.captureDir:",
         "absolute", script=False),
    Case("address-twice", edited(add_server(address="10.50.1.21")), "fleets.servers[0].address: '10.50.1.21'",
         "fleets.edge[0]", script=False),
    Case("address-loopback", edited(edge(address="127.0.0.1")), "fleets.edge[0].address: '127.0.0.1'", "loopback", script=False),
    Case("subnet-loopback", edited(at("network", subnetCidr="127.0.0.0/24")), "network.subnetCidr: '127.0.0.0/24'",
         "100.64.0.0/10"),
    Case("subnet-link-local", edited(at("network", subnetCidr="169.254.0.0/24")), "network.subnetCidr:", "private range", script=False),
    Case("subnet-prefix", edited(at("network", subnetCidr="10.0.0.0/30")), "network.subnetCidr: '10.0.0.0/30'", "/8 to /29", script=False),
    Case("source-multicast", edited(at("network", inferenceAllowedCidrs=["224.0.0.0/4"])),
         "network.inferenceAllowedCidrs[0]: '224.0.0.0/4'", "not routable", script=False),
    Case("port-twice", edited(at("inference", ports={"http": 8000, "grpc": 8000})), "inference.ports.grpc: 8000",
         "inference.ports.http", script=False),
    Case("triton-on-ssh-port", edited(at("inference", ports={"http": 22})), "inference.ports.http: 22", "SSH",
         script=False),
    Case("ssh-on-triton-port", edited(edge(sshPort=8002)), "fleets.edge[0].sshPort: 8002", "metrics", script=False),
    Case("sandbox-outside-local", edited(with_sandbox), "sandbox:", "only the local stack"),
    Case("standin-outside-local", edited(with_sandbox_standin),
         "model.key: 'sandbox_standin'", "only the local stack", script=False),
    Case("unquoted-version", replaced('jetpack: "6.0"', "jetpack: 6.2"), "fleets.edge[0].jetpack: 6.2", 'quote it: "6.2"'),
    Case("unquoted-branch", edited(add_server(address="10.50.1.30", driverBranch=570)),
         "fleets.servers[0].driverBranch: 570", "quote it", script=False),
    Case("label-count", edited(at("gcp", labels={f"k{i}": "v" for i in range(63)})), "gcp.labels:", "at most 62", script=False),
    Case("label-too-long", edited(at("gcp", labels={"team": "x" * 64})), "gcp.labels:", "label value", script=False),
]


@dataclass(frozen=True)
class Outcome:
    path: Path
    before: bytes | None
    returncode: int
    stdout: str
    stderr: str


def _validate(case: Case, directory: Path) -> Outcome:
    """`cnctl validate` on the case's file: the console script, or the same Typer app in-process."""
    path = case.write(directory)
    before = path.read_bytes() if path.is_file() else None
    args = ["validate", "--stack", str(path)]
    if case.script:
        done = subprocess.run([CNCTL, *args], capture_output=True, text=True, timeout=120, check=False)
        return Outcome(path, before, done.returncode, done.stdout, done.stderr)
    result = CliRunner().invoke(app, args)
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    return Outcome(path, before, result.exit_code, result.stdout, result.stderr)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    """Every case run once: console-script cases two processes at a time, then the in-process ones."""
    scripted = [case for case in CASES if case.script]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        futures = {case.id: pool.submit(_validate, case, tmp_path_factory.mktemp(case.id)) for case in scripted}
        done = {key: future.result() for key, future in futures.items()}
    for case in CASES:
        if not case.script:
            done[case.id] = _validate(case, tmp_path_factory.mktemp(case.id))
    return done


def test_each_class_runs_through_the_console_script() -> None:
    scripted = {case.id for case in CASES if case.script}
    assert {"markup-value", "not-utf8", "directory", "deep-nesting", "dup-section", "namespace-typo",
            "empty-section", "region", "address-template", "unquoted-version"} <= scripted


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_stack_is_one_clear_line_and_exit_2(case: Case, results: dict[str, Outcome]) -> None:
    result = results[case.id]
    path, before = result.path, result.before
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"error: {path}: "), lines
    problems = [line.removeprefix("  - ") for line in lines[1:]]
    assert all(line.startswith("  - ") for line in lines[1:]), lines
    assert any(p.startswith(case.prefix) and case.holds in p for p in problems), problems
    assert "\x1b" not in result.stderr  # no escape reaches the terminal, from the file or from markup
    if before is not None:
        assert path.read_bytes() == before


def _stack(tmp_path: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    return edited(change)(tmp_path)


@pytest.mark.parametrize(
    "change",
    [
        at("network", subnetCidr="100.64.0.0/24"),  # shared address space: Google Cloud accepts it
        at("network", subnetCidr="172.16.0.0/12"),
        at("gcp", region="europe-west1", zones=["europe-west1-b", "europe-west1-d"]),
        at("storage", endpoint="https://s3.plant-a.example:9000"),
        at("storage", kmsKeyName="projects/my-circularnet-dev/locations/us-central1/keyRings/r/cryptoKeys/k"),
        at("model", url="gs://my-circularnet-dev-models/archives/m.zip"),
        lambda c: c["circularnet:storage"]["buckets"].update(images="images.circularnet.example.com"),
        at("gcp", labels={f"k{i}": "v" for i in range(62)}),
        edge(address="orin-1.plant-a.example"),
        edge(camera={"captureDir": "/srv/frames/belt_1"}),
        add_server(address="10.50.1.30", sshPort=2222),
        at("compute", machineType="n1-highmem-8"),
    ],
    ids=["cgnat-subnet", "big-subnet", "europe-west1", "https-endpoint", "kms-key", "gs-url", "dotted-bucket",
         "62-labels", "dns-address", "capture-dir", "ssh-port", "n1-highmem"],
)
def test_what_google_cloud_and_the_hosts_accept_still_loads(tmp_path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    load_stack(str(_stack(tmp_path, change)))


def test_the_example_stacks_break_no_rule() -> None:
    for name in ("local", "dev", "prod"):
        load_stack(name)


def test_a_sandbox_section_is_fine_in_the_local_stack_only(tmp_path: Path) -> None:
    local = (STACKS_DIR / "Pulumi.local.yaml").read_text()
    (tmp_path / "Pulumi.local.yaml").write_text(local)
    (tmp_path / "Pulumi.staging.yaml").write_text(local)
    assert load_stack(str(tmp_path / "Pulumi.local.yaml")).sandbox is not None
    with pytest.raises(StackConfigError) as caught:
        load_stack(str(tmp_path / "Pulumi.staging.yaml"))
    assert {p.path for p in caught.value.problems} >= {"sandbox", "model.key"}
