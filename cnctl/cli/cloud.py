"""`cnctl preview` / `cnctl up`: the real Pulumi CLI, behind the offline plan's guardrails.

Both run the offline plan first: a stack that fails the schema (exit 2) or a guardrail (exit 1) never
reaches the cloud; `up` also refuses an example's placeholders (exit 2), as `cnctl validate` does. Then they hand over to `pulumi preview|up -s <env>` from the repository root, where
Pulumi.yaml and stacks/ are. Without the Pulumi CLI they say how to get it (exit 2).
"""

from __future__ import annotations

import os
import shutil
import subprocess

import typer

from cnctl.cli.errors import EXIT_VIOLATIONS, UsageProblem, err, report_violations, user_errors
from cnctl.cli.options import stack_option
from cnctl.config.loader import ROOT, environment_of, load_stack, stack_path


def preview(
    stack: str = stack_option("stack name (stacks/Pulumi.<name>.yaml)"),
    extra: list[str] | None = typer.Argument(None, help="further `pulumi preview` arguments, after --"),
) -> None:
    """Check the stack offline, then `pulumi preview -s <stack>` (needs the Pulumi CLI and credentials)."""
    _run_pulumi("preview", stack, extra or [])


def up(
    stack: str = stack_option("stack name (stacks/Pulumi.<name>.yaml)"),
    extra: list[str] | None = typer.Argument(None, help="further `pulumi up` arguments, after -- (e.g. --yes)"),
) -> None:
    """Check the stack offline, then `pulumi up -s <stack>` (needs the Pulumi CLI and credentials)."""
    _run_pulumi("up", stack, extra or [])


def _run_pulumi(verb: str, stack: str, extra: list[str]) -> None:
    from cnctl.plan import plan_stack, pulumi_cli_missing_message

    with user_errors():
        path = stack_path(stack)
        if path.parent.resolve() != (ROOT / "stacks").resolve():
            raise UsageProblem(f"`pulumi {verb}` runs stacks from {ROOT / 'stacks'}; {path} is elsewhere")
        env = environment_of(path)
        if verb == "up":  # what `pulumi up` would refuse too, said before the plan and the Pulumi CLI
            load_stack(stack, refuse_placeholders=True)
        result = plan_stack(stack)
        if result.violations:
            report_violations(result.violations)
            err.print(f"refusing `pulumi {verb}`: fix the stack first (`cnctl plan --stack {env}` shows the plan)")
            raise typer.Exit(EXIT_VIOLATIONS)
        pulumi = shutil.which("pulumi")
        if pulumi is None:
            raise UsageProblem(pulumi_cli_missing_message(f"cnctl {verb} --stack {env}"))
    # The same guardrails again inside Pulumi, on the values it resolves, through the policy pack (policy/), unless
    # the user names a pack of their own.
    pack = [] if any(arg.startswith("--policy-pack") for arg in extra) else ["--policy-pack", str(ROOT / "policy")]
    if result.without_cloud is not None:
        # Still handed over: Pulumi's state may hold what an earlier revision of this stack created.
        err.print(f"offline plan of {env}: 0 resources, {result.without_cloud}; handing over to pulumi {verb} "
                  "(it deletes only what an earlier revision of this stack created)", markup=False)
    else:
        err.print(f"offline plan of {env}: {len(result.resources)} resources, guardrails pass; handing over to pulumi {verb}")
    completed = subprocess.run([pulumi, verb, "--stack", env, *pack, *extra], cwd=ROOT, env=os.environ.copy(),
                               check=False)
    raise typer.Exit(completed.returncode)
