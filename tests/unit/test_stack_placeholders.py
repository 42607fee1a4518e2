"""An example stack's placeholder signer (issue 21, item 1): shown by the offline plan, refused where the stack
would be used.

stacks/Pulumi.dev-group.yaml ships complete, with a `bundle` section whose signer is the documented placeholder
(`PLACEHOLDER_SIGNER_KEY`, an all-zero Ed25519 key). Like the model's all-zero sha256 in every example, it loads
for `cnctl plan` and `pulumi preview`; unlike it, `cnctl validate`, `cnctl up` and the program under `pulumi up`
refuse it (exit 2, one line at bundle.signers naming the commands that make a real key), because a group whose
workers can never get a bundle burns GPUs.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml
from typer.testing import CliRunner

from cnctl.cli.main import app
from cnctl.config import StackConfigError, from_pulumi_config, load_stack, stack_path
from cnctl.config.bundle_checks import PLACEHOLDER_SIGNER_KEY
from cnctl.plan.engine import in_fresh_runtime
from tests.unit.stack_variants import stack_variant
from tests.unit.test_loader_parity import _NoResources
from tests.unit.test_schema import ED25519

PLACEHOLDER_LINE = "bundle.signers[0].publicKey: is the example's placeholder key (REPLACE-ME)"
Change = Callable[[dict[str, Any]], None]


def signers(*keys: str) -> Change:
    """The dev-group example with these signers' public keys (identities signer-0, signer-1, ...)."""
    listed = [{"identity": f"signer-{i}", "publicKey": key} for i, key in enumerate(keys)]
    return lambda config: config["circularnet:bundle"].update(signers=listed)


PLACEHOLDER_BLOB = PLACEHOLDER_SIGNER_KEY.split()[1]
# (id, the signers, the problem line it must give; None: it is a real key and the stack validates)
CASES: list[tuple[str, Change, str | None]] = [
    ("as-shipped", lambda config: None, PLACEHOLDER_LINE),
    ("without-its-comment", signers(f"ssh-ed25519 {PLACEHOLDER_BLOB}"), PLACEHOLDER_LINE),
    ("another-comment", signers(f"ssh-ed25519 {PLACEHOLDER_BLOB} release@plant"), PLACEHOLDER_LINE),
    ("second-of-two", signers(ED25519, PLACEHOLDER_SIGNER_KEY),
     "bundle.signers[1].publicKey: is the example's placeholder key"),
    ("a-real-key", signers(ED25519), None),
]


def validate(path: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["validate", "--stack", path])
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize(("change", "line"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_validate_refuses_the_placeholder_signer_at_its_field(tmp_path: Path, change: Change, line: str | None) -> None:
    path = stack_variant(tmp_path, change, base="dev-group")
    before = Path(path).read_bytes()
    code, stdout, stderr = validate(path)
    if line is None:
        assert (code, stderr) == (0, ""), stderr
        assert stdout.startswith("ok stack dev-group")
        return
    assert code == 2 and stdout == "" and "Traceback" not in stderr
    first, problem = stderr.splitlines()
    assert first == f"error: {path}: 1 problem" and problem.startswith(f"  - {line}"), stderr
    assert "`ssh-keygen -t ed25519 -f ~/.ssh/cn-release`" in stderr and "`ssh-keygen -y -f ~/.ssh/cn-release`" in stderr
    assert Path(path).read_bytes() == before


def test_the_group_example_ships_the_documented_placeholder() -> None:
    cfg = load_stack("dev-group")  # loads: what only shows a stack (plan, inventory, status) accepts it
    assert cfg.bundle is not None and [s.public_key for s in cfg.bundle.signers] == [PLACEHOLDER_SIGNER_KEY]
    with pytest.raises(StackConfigError) as refused:
        load_stack("dev-group", refuse_placeholders=True)
    [problem] = refused.value.problems
    assert str(problem).startswith(PLACEHOLDER_LINE)
    text = stack_path("dev-group").read_text()
    for step in ("ssh-keygen -t ed25519 -f ~/.ssh/cn-release", "ssh-keygen -y -f ~/.ssh/cn-release",
                 "cnctl validate --stack dev-group", "cnctl bundle publish --stack dev-group --channel stable"):
        assert step in text, step  # the commands that make it real, beside it


def test_every_example_with_a_placeholder_still_plans_only_the_group_one_is_refused() -> None:
    """The rule this follows: an example's placeholders load where nothing is created (the model's all-zero sha256
    in every example stays loadable everywhere, as before); only the placeholder signer is refused by validate."""
    names = sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in stack_path("dev").parent.glob("Pulumi.*.yaml"))
    refused = []
    for name in names:
        load_stack(name)
        try:
            load_stack(name, refuse_placeholders=True)
        except StackConfigError:
            refused.append(name)
    assert refused == ["dev-group"]


@pytest.mark.parametrize(("preview", "refused"), [(True, False), (False, True)], ids=["pulumi-preview", "pulumi-up"])
def test_the_pulumi_program_refuses_the_placeholder_under_up_only(preview: bool, refused: bool) -> None:
    document = yaml.safe_load(stack_path("dev-group").read_text())

    def program(_: object) -> None:  # in a fresh runtime of its own, as `pulumi preview|up` runs the program
        pulumi.runtime.set_all_config({key: json.dumps(value) for key, value in document["config"].items()})
        pulumi.runtime.set_mocks(_NoResources(), project="circularnet", stack="dev-group", preview=preview)
        if not refused:
            assert from_pulumi_config() == load_stack("dev-group")
            return
        with pytest.raises(StackConfigError) as caught:
            from_pulumi_config()
        assert isinstance(caught.value, pulumi.RunError)
        [problem] = caught.value.problems
        assert str(problem).startswith(PLACEHOLDER_LINE)

    in_fresh_runtime(program)


def test_cnctl_up_refuses_the_placeholder_before_planning_or_pulumi(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name, *args, **kwargs: None)  # never a real `pulumi up`
    result = CliRunner().invoke(app, ["up", "--stack", "dev-group"])
    assert result.exit_code == 2, result.stderr
    assert "Pulumi CLI" not in result.stderr  # stopped before looking for it
    assert any(line.startswith(f"  - {PLACEHOLDER_LINE}") for line in result.stderr.splitlines()), result.stderr
