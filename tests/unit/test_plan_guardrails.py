"""Each guardrail fails on a crafted bad resource and passes on the good one (engine inputs, camelCase)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from cnctl.plan.guardrails import RULES, Rule, Violation, evaluate
from cnctl.plan.mocks import Registration

INSTANCE = "gcp:compute/instance:Instance"
FIREWALL = "gcp:compute/firewall:Firewall"
BUCKET = "gcp:storage/bucket:Bucket"
DATASET = "gcp:bigquery/dataset:Dataset"
TABLE = "gcp:bigquery/table:Table"
PROJECT_MEMBER = "gcp:projects/iAMMember:IAMMember"
BUCKET_MEMBER = "gcp:storage/bucketIAMMember:BucketIAMMember"
LABELS = {"environment": "dev", "managed-by": "cnctl"}
SA = "serviceAccount:cn-dev-vm@p.iam.gserviceaccount.com"

GOOD: dict[str, dict[str, Any]] = {
    INSTANCE: {
        "machineType": "n1-standard-8",
        "guestAccelerators": [{"type": "nvidia-tesla-t4", "count": 1}],
        "networkInterfaces": [{"subnetwork": "projects/p/regions/r/subnetworks/s"}],
        "scheduling": {"onHostMaintenance": "TERMINATE"},
        "shieldedInstanceConfig": {"enableVtpm": True, "enableIntegrityMonitoring": True},
        "serviceAccount": {"email": "cn-dev-vm@p.iam.gserviceaccount.com", "scopes": ["cloud-platform"]},
        "labels": LABELS,
    },
    FIREWALL: {
        "direction": "INGRESS",
        "allows": [{"protocol": "tcp", "ports": ["22"]}],
        "sourceRanges": ["35.235.240.0/20"],
    },
    BUCKET: {"publicAccessPrevention": "enforced", "uniformBucketLevelAccess": True, "labels": LABELS},
    DATASET: {"datasetId": "d", "location": "us-central1", "labels": LABELS},
    TABLE: {"datasetId": "d", "tableId": "t", "labels": LABELS},
    PROJECT_MEMBER: {"project": "p", "role": "roles/bigquery.jobUser", "member": SA},
    BUCKET_MEMBER: {"bucket": "b", "role": "roles/storage.objectAdmin", "member": SA},
}


def changed(token: str, **changes: Any) -> dict[str, Any]:
    """GOOD[token] with top-level keys replaced (None removes the key)."""
    inputs = copy.deepcopy(GOOD[token])
    for key, value in changes.items():
        if value is None:
            inputs.pop(key, None)
        else:
            inputs[key] = value
    return inputs


g2 = {**changed(INSTANCE, guestAccelerators=None), "machineType": "g2-standard-8"}

# rule id -> resources (type token, inputs) it must reject
BAD: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "no-external-ip": [
        (INSTANCE, changed(INSTANCE, networkInterfaces=[{"subnetwork": "s", "accessConfigs": [{}]}])),
        (INSTANCE, changed(INSTANCE, networkInterfaces=[{"subnetwork": "s", "ipv6AccessConfigs": [{}]}])),
    ],
    "no-open-ingress": [
        (FIREWALL, changed(FIREWALL, sourceRanges=["10.0.0.0/8", "0.0.0.0/0"])),
        (FIREWALL, changed(FIREWALL, sourceRanges=["::/0"])),
        (FIREWALL, changed(FIREWALL, sourceRanges=None, direction=None)),  # no source = anywhere
    ],
    "buckets-private": [
        (BUCKET, changed(BUCKET, publicAccessPrevention="inherited")),
        (BUCKET, changed(BUCKET, publicAccessPrevention=None)),
        (BUCKET, changed(BUCKET, uniformBucketLevelAccess=False)),
    ],
    "no-default-compute-service-account": [
        (INSTANCE, changed(INSTANCE, serviceAccount={"email": "123-compute@developer.gserviceaccount.com"})),
        (INSTANCE, changed(INSTANCE, serviceAccount={"email": "default", "scopes": ["cloud-platform"]})),
        (INSTANCE, changed(INSTANCE, serviceAccount={"scopes": ["cloud-platform"]})),
        (PROJECT_MEMBER, changed(PROJECT_MEMBER, member="serviceAccount:1-compute@developer.gserviceaccount.com")),
    ],
    "no-primitive-roles": [
        (PROJECT_MEMBER, changed(PROJECT_MEMBER, role="roles/editor")),
        (PROJECT_MEMBER, changed(PROJECT_MEMBER, role="roles/owner")),
        (BUCKET_MEMBER, changed(BUCKET_MEMBER, role="roles/viewer")),
        (
            "gcp:projects/iAMPolicy:IAMPolicy",
            {"project": "p", "policyData": '{"bindings": [{"role": "roles/owner", "members": []}]}'},
        ),
    ],
    "no-project-storage-roles": [
        (PROJECT_MEMBER, changed(PROJECT_MEMBER, role="roles/storage.objectAdmin")),
        ("gcp:projects/iAMBinding:IAMBinding", {"project": "p", "role": "roles/storage.admin", "members": [SA]}),
    ],
    "gpu-vms-terminate-on-maintenance": [
        (INSTANCE, changed(INSTANCE, scheduling={"onHostMaintenance": "MIGRATE"})),
        (INSTANCE, changed(INSTANCE, scheduling=None)),
        ("gcp:compute/instance:Instance", {**g2, "scheduling": {}}),  # the GPU comes with the g2 shape
    ],
    "shielded-vm": [
        (INSTANCE, changed(INSTANCE, shieldedInstanceConfig={"enableVtpm": True})),
        (INSTANCE, changed(INSTANCE, shieldedInstanceConfig={"enableIntegrityMonitoring": True, "enableVtpm": False})),
        (INSTANCE, changed(INSTANCE, shieldedInstanceConfig=None)),
    ],
    "dataset-location-set": [(DATASET, changed(DATASET, location=None)), (DATASET, changed(DATASET, location=""))],
    "labels-present": [
        (INSTANCE, changed(INSTANCE, labels=None)),
        (BUCKET, changed(BUCKET, labels={"environment": "dev"})),
        (DATASET, changed(DATASET, labels={})),
        (TABLE, changed(TABLE, labels={"managed-by": "cnctl"})),
    ],
}


def rule(rule_id: str) -> Rule:
    return next(r for r in RULES if r.id == rule_id)


def test_every_rule_has_bad_cases_and_a_description() -> None:
    assert sorted(BAD) == sorted(r.id for r in RULES)
    assert len({r.id for r in RULES}) == len(RULES)
    for r in RULES:
        assert r.description and "\n" not in r.description


@pytest.mark.parametrize(
    ("rule_id", "token", "inputs"),
    [(rule_id, token, inputs) for rule_id, cases in BAD.items() for token, inputs in cases],
)
def test_rule_rejects_bad_resource(rule_id: str, token: str, inputs: dict[str, Any]) -> None:
    message = rule(rule_id).check(token, inputs)
    assert message, f"{rule_id} accepted {inputs}"


@pytest.mark.parametrize("rule_id", sorted(BAD))
def test_rule_passes_every_good_resource(rule_id: str) -> None:
    for token, inputs in [*GOOD.items(), (INSTANCE, g2)]:
        assert rule(rule_id).check(token, inputs) is None, (rule_id, token)


def test_deny_rules_and_egress_from_anywhere_are_fine() -> None:
    deny = {"direction": "INGRESS", "denies": [{"protocol": "all"}], "sourceRanges": ["0.0.0.0/0"]}
    egress = {"direction": "EGRESS", "allows": [{"protocol": "tcp"}], "destinationRanges": ["0.0.0.0/0"]}
    assert rule("no-open-ingress").check(FIREWALL, deny) is None
    assert rule("no-open-ingress").check(FIREWALL, egress) is None


def test_evaluate_names_rule_and_resource() -> None:
    resources = [
        Registration(FIREWALL, "open", changed(FIREWALL, sourceRanges=["0.0.0.0/0"])),
        Registration(BUCKET, "fine", GOOD[BUCKET]),
    ]
    assert evaluate(resources) == [
        Violation("no-open-ingress", "open", "allows ingress from 0.0.0.0/0; list the sources that need it")
    ]
