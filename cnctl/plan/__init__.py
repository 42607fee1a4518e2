"""The offline plan: the real Pulumi program on Pulumi's mock engine, plus guardrails.

Everything a change would do in the cloud is computable here without the Pulumi CLI, credentials
or network: `plan_stack("dev")` returns the resources as the engine would receive them, the
guardrail verdicts and the stack outputs.
"""

from cnctl.plan.guardrails import RULES, Rule, Violation
from cnctl.plan.mocks import Registration
from cnctl.plan.offline import Plan, plan_stack
from cnctl.plan.pulumi_cli import pulumi_cli_available, pulumi_cli_missing_message

__all__ = [
    "RULES",
    "Plan",
    "Registration",
    "Rule",
    "Violation",
    "plan_stack",
    "pulumi_cli_available",
    "pulumi_cli_missing_message",
]
