"""The guardrails as a Pulumi policy pack: `pulumi preview --policy-pack policy` refuses what `cnctl plan` refuses.

Each rule of `cnctl.plan.guardrails.RULES` becomes one policy with the same id and description, and
calls the same function, so the pack and the offline plan cannot disagree (tests/unit/test_policy_pack.py
drives both with one table). Every rule is a security rule here: enforcement is mandatory.

Rules that judge one resource alone are resource policies: they run before Pulumi creates or changes
the resource. Stack-wide rules (production, CMEK everywhere, who may write detections, what uploaders and
transfers may touch, which ports Google's health checks reach, who publishes and subscribes on the
images queue, who may write the models bucket) need the whole stack and run as stack policies, which Pulumi evaluates on the full
set of resources; during a preview of resources not created yet, a value they read may still be unknown
(the transfer account's email, or Cloud Storage's agent, say), and Pulumi then reports that policy as not run (advisory) instead
of passing it.
"""

from __future__ import annotations

from pulumi_policy import (
    EnforcementLevel,
    Policy,
    PolicyPack,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from cnctl.plan.guardrails import NO_CONTEXT, RULES, Context, Rule

PACK_NAME = "circularnet-guardrails"


def resource_validator(rule: Rule):
    """A resource validation that reports the rule's message for the one resource, if any."""

    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        message = rule.check(args.resource_type, args.props, NO_CONTEXT)
        if message is not None:
            report_violation(message, None)

    return validate


def stack_validator(rule: Rule):
    """A stack validation: the Context from every resource, then the rule over each, reported at its URN."""

    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        ctx = Context.of((r.resource_type, r.props) for r in args.resources)
        for resource in args.resources:
            message = rule.check(resource.resource_type, resource.props, ctx)
            if message is not None:
                report_violation(f"{resource.name}: {message}", resource.urn)

    return validate


def policies() -> list[Policy]:
    """One mandatory policy per guardrail, in the plan's rule order."""
    out: list[Policy] = []
    for rule in RULES:
        if rule.stack_wide:
            out.append(StackValidationPolicy(name=rule.id, description=rule.description,
                                             validate=stack_validator(rule), enforcement_level=EnforcementLevel.MANDATORY))
        else:
            out.append(ResourceValidationPolicy(name=rule.id, description=rule.description,
                                                validate=resource_validator(rule), enforcement_level=EnforcementLevel.MANDATORY))
    return out


if __name__ == "__main__":  # as Pulumi runs the pack (pulumi.policy runs this file as __main__)
    PolicyPack(name=PACK_NAME, policies=policies(), enforcement_level=EnforcementLevel.MANDATORY)
