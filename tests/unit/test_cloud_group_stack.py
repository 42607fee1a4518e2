"""`compute.mode: group` in the stack file: each class of bad input exits 2 with one clear line at the field to
change (no traceback, the file untouched), and what Google Cloud and Pub/Sub accept still loads.

Bad stacks are the dev-group example changed one way each; a few run through the installed console script,
the rest the same Typer app in-process (as tests/unit/test_stack_strict.py does).
"""

from __future__ import annotations

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
from cnctl.config import load_stack
from cnctl.config.schema import WorkerGroup
from cnctl.paths import REPO_ROOT, STACKS_DIR

CNCTL = shutil.which("cnctl") or str(REPO_ROOT / ".venv/bin/cnctl")
GROUP_STACK = (STACKS_DIR / "Pulumi.dev-group.yaml").read_text(encoding="utf-8")
DEV_STACK = (STACKS_DIR / "Pulumi.dev.yaml").read_text(encoding="utf-8")
Change = Callable[[dict[str, Any]], None]


def group(**values: Any) -> Change:
    return lambda config: config["circularnet:compute"]["group"].update(copy.deepcopy(values))


def compute(**values: Any) -> Change:
    return lambda config: config["circularnet:compute"].update(copy.deepcopy(values))


def both(*changes: Change) -> Change:
    def change(config: dict[str, Any]) -> None:
        for one in changes:
            one(config)

    return change


def write(tmp_path: Path, change: Change, base: str = GROUP_STACK, env: str = "dev-group") -> Path:
    document = yaml.safe_load(base)
    change(document["config"])
    path = tmp_path / f"Pulumi.{env}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


@dataclass(frozen=True)
class Case:
    id: str
    change: Change
    line: str  # the problem line, from its start
    base: str = GROUP_STACK
    script: bool = False


CASES = [
    # the mode and its section must agree
    Case("group-in-vms-mode", compute(group={"min": 0, "max": 2}), "compute.group: is set but compute.mode is vms; "
         "set compute.mode: group or remove it", base=DEV_STACK, script=True),
    Case("vm-count-in-group-mode", compute(instances=2), "compute.instances: 2 is for compute.mode vms"),
    Case("placement-in-group-mode", compute(placement=[{"zone": "us-central1-a"}]), "compute.placement: is for compute.mode vms"),
    Case("unknown-mode", compute(mode="fleet"), "compute.mode: 'fleet'"),
    # unknown keys, hinted like the rest of the schema
    Case("group-key-typo", group(imagesPerWorkers=10), "compute.group.imagesPerWorkers: is not a known key (a typo?); "
         "known keys here: min, max, imagesPerWorker", script=True),
    # sizes
    Case("min-above-max", group(min=3, max=2), "compute.group.min: 3 is more than compute.group.max (2)", script=True),
    Case("max-zero", group(min=0, max=0), "compute.group.max: 0 must be at least 1"),
    Case("min-negative", group(min=-1), "compute.group.min: -1 must be 0 or more"),
    Case("min-not-a-number", group(min="two"), "compute.group.min: 'two'"),
    # the queue
    Case("images-per-worker-zero", group(imagesPerWorker=0), "compute.group.imagesPerWorker: 0 must be at least 1"),
    Case("delivery-attempts-low", group(maxDeliveryAttempts=4), "compute.group.maxDeliveryAttempts: 4 is outside 5-100"),
    Case("delivery-attempts-high", group(maxDeliveryAttempts=101), "compute.group.maxDeliveryAttempts: 101 is outside 5-100"),
    Case("ack-deadline-low", group(ackDeadlineSeconds=9), "compute.group.ackDeadlineSeconds: 9 is outside 10-600 seconds"),
    Case("ack-deadline-high", group(ackDeadlineSeconds=601), "compute.group.ackDeadlineSeconds: 601 is outside 10-600"),
    Case("initial-delay-high", group(initialDelaySeconds=3601), "compute.group.initialDelaySeconds: 3601 is outside 0-3600"),
    # where the group runs and how it is checked
    Case("no-zones", lambda c: c["circularnet:gcp"].update(zones=[]), "gcp.zones:"),
    Case("triton-on-loopback", lambda c: c["circularnet:inference"].pop("bindInterface"),
         "inference.bindInterface: must name the workers' private interface"),
    Case("group-without-gcp", lambda c: c.pop("circularnet:gcp"), "compute: GPU VMs need a `gcp` section"),
    # how the workers get configured: nothing pushes to them, so the stack's bundle is their only way
    Case("group-without-bundle", lambda c: c.pop("circularnet:bundle"), "compute.mode: 'group' needs the stack's "
         "bundle section (bundle.signers: the keys its bundles are signed with)", script=True),
]


def validate(case: Case, directory: Path) -> tuple[Path, bytes, int, str, str]:
    path = write(directory, case.change, case.base, "dev" if case.base is DEV_STACK else "dev-group")
    before = path.read_bytes()
    args = ["validate", "--stack", str(path)]
    if case.script:
        done = subprocess.run([CNCTL, *args], capture_output=True, text=True, timeout=120, check=False)
        return path, before, done.returncode, done.stdout, done.stderr
    result = CliRunner().invoke(app, args)
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    return path, before, result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_group_input_is_one_clear_line_and_exit_2(case: Case, tmp_path: Path) -> None:
    path, before, code, stdout, stderr = validate(case, tmp_path)
    assert code == 2, (stdout, stderr)
    assert "Traceback" not in stderr and stdout == ""
    lines = stderr.splitlines()
    assert lines[0].startswith(f"error: {path}: ")
    assert all(line.startswith("  - ") for line in lines[1:]), lines
    assert any(line.removeprefix("  - ").startswith(case.line) for line in lines[1:]), lines
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    "change",
    [
        group(min=0, max=1),  # a batch site: nothing runs while the queue is empty
        group(min=4, max=4),  # a fixed-size group still autoheals and rolls safely
        group(maxDeliveryAttempts=5, ackDeadlineSeconds=10, initialDelaySeconds=0),
        group(maxDeliveryAttempts=100, ackDeadlineSeconds=600, initialDelaySeconds=3600, imagesPerWorker=1),
        lambda c: c["circularnet:gcp"].update(zones=["us-central1-f"]),  # one zone is a group too
        lambda c: c["circularnet:compute"].pop("group"),  # mode group with its defaults
        lambda c: (c["circularnet:inference"].update(bindAddress="0.0.0.0", bindAllInterfaces=True, bindInterface=None),
                   c["circularnet:network"].update(inferenceAllowedCidrs=["10.40.0.0/16"])),  # every interface, opted in
    ],
    ids=["min-0", "fixed", "lowest", "highest", "one-zone", "defaults", "any-address"],
)
def test_what_google_cloud_and_pubsub_accept_loads(tmp_path: Path, change: Change) -> None:
    def drop_nulls(config: dict[str, Any]) -> None:
        change(config)
        config["circularnet:inference"] = {k: v for k, v in config["circularnet:inference"].items() if v is not None}

    load_stack(str(write(tmp_path, drop_nulls)))


def test_the_example_stacks_say_their_mode() -> None:
    dev, grouped = load_stack("dev"), load_stack("dev-group")
    assert dev.compute is not None and dev.compute.mode == "vms" and dev.compute.worker_group is None
    assert grouped.compute is not None and grouped.compute.mode == "group"
    assert grouped.compute.worker_group == WorkerGroup(
        min=0, max=3, images_per_worker=50, max_delivery_attempts=5, ack_deadline_seconds=120, initial_delay_seconds=None
    )


def test_group_defaults_are_pubsubs_and_keep_one_worker() -> None:
    defaults = WorkerGroup()
    assert (defaults.min, defaults.max_delivery_attempts, defaults.ack_deadline_seconds) == (1, 5, 120)
