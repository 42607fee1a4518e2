"""compute.mode group on the mock engine: the worker template, the regional group with autohealing, its
health-check firewall and autoscaler, the images queue (bucket notification, topic, subscription, dead letters)
and every IAM grant they add, as the Pulumi engine receives them for stacks/Pulumi.dev-group.yaml.

Consuming the subscription (the workers' pipeline) is the host layers' part; these tests stop at what the
cloud layer declares.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cnctl.catalog import catalog
from cnctl.config import load_stack
from cnctl.config.schema import WorkerGroup
from cnctl.plan import Plan, plan_stack
from cnctl.plan.mocks import project_number
from tests.unit.plan_queries import grants as plan_grants
from tests.unit.plan_queries import of_type, one
from tests.unit.stack_variants import stack_variant
from tests.unit.test_cloud_startup import script_values

PROJECT = "my-circularnet-dev"
NUMBER = project_number(PROJECT)
WORKER = f"serviceAccount:cn-dev-group-vm@{PROJECT}.iam.gserviceaccount.com"
EDGE = f"serviceAccount:cn-dev-group-edge@{PROJECT}.iam.gserviceaccount.com"
LOAD = f"serviceAccount:cn-dev-group-load@{PROJECT}.iam.gserviceaccount.com"
GCS_AGENT = f"serviceAccount:service-{NUMBER}@gs-project-accounts.iam.gserviceaccount.com"
PUBSUB_AGENT = f"serviceAccount:service-{NUMBER}@gcp-sa-pubsub.iam.gserviceaccount.com"
TRANSFER_AGENT = f"serviceAccount:service-{NUMBER}@gcp-sa-bigquerydatatransfer.iam.gserviceaccount.com"
IMAGES = "my-circularnet-dev-group-images"
TOPIC = f"projects/{PROJECT}/topics/cn-dev-group-images-queue"
DEAD = f"projects/{PROJECT}/topics/cn-dev-group-images-dead"
ZONES = ["us-central1-a", "us-central1-b", "us-central1-c"]

TEMPLATE = "gcp:compute/instanceTemplate:InstanceTemplate"
GROUP = "gcp:compute/regionInstanceGroupManager:RegionInstanceGroupManager"
SCALER = "gcp:compute/regionAutoscaler:RegionAutoscaler"
HEALTH = "gcp:compute/healthCheck:HealthCheck"
FIREWALL = "gcp:compute/firewall:Firewall"
TOPIC_T = "gcp:pubsub/topic:Topic"
SUBSCRIPTION = "gcp:pubsub/subscription:Subscription"
NOTIFICATION = "gcp:storage/notification:Notification"
# IAM member types and the input that names their scope
SCOPES = {
    "gcp:storage/bucketIAMMember:BucketIAMMember": "bucket",
    "gcp:projects/iAMMember:IAMMember": "project",
    "gcp:bigquery/datasetIamMember:DatasetIamMember": "datasetId",
    "gcp:bigquery/datasetAccess:DatasetAccess": "datasetId",
    "gcp:serviceaccount/iAMMember:IAMMember": "serviceAccountId",
    "gcp:pubsub/topicIAMMember:TopicIAMMember": "topic",
    "gcp:pubsub/subscriptionIAMMember:SubscriptionIAMMember": "subscription",
}
@pytest.fixture(scope="module")
def plan() -> Plan:
    return plan_stack("dev-group")


@pytest.fixture(scope="module")
def dev() -> Plan:
    return plan_stack("dev")


# --- the template: every property of today's VMs --------------------------------------------------


def test_the_template_is_the_vm_the_stack_would_create(plan: Plan, dev: Plan) -> None:
    template = one(plan, TEMPLATE)
    vm = of_type(dev, "gcp:compute/instance:Instance")["cn-dev-gpu-0"]
    vm_disk = of_type(dev, "gcp:compute/disk:Disk")["cn-dev-gpu-0"]
    assert template["machineType"] == vm["machineType"] == "n1-standard-8"
    assert template["guestAccelerators"] == vm["guestAccelerators"] == [{"type": "nvidia-tesla-t4", "count": 1}]
    assert template["shieldedInstanceConfig"] == vm["shieldedInstanceConfig"] == {
        "enableVtpm": True, "enableIntegrityMonitoring": True, "enableSecureBoot": False,
    }
    # the same driver image, disk, and startup script (the same bootstrap, rendered for this stack)
    disk = template["disks"]
    assert disk == [{
        "boot": True, "autoDelete": True, "diskSizeGb": 300, "diskType": "pd-balanced",
        "sourceImage": vm_disk["image"],
        "labels": {"app": "circularnet", "environment": "dev-group", "managed-by": "cnctl"},
    }]
    metadata = dict(template["metadata"])
    script = metadata.pop("startup-script")
    assert script.startswith("#!/bin/bash\n") and '"environment": "dev-group"' in script_values(script)["stack_json"]
    vm_metadata = {k: v for k, v in vm["metadata"].items() if k != "startup-script"}
    assert metadata == vm_metadata == {"install-nvidia-driver": "True", "enable-oslogin": "TRUE", "block-project-ssh-keys": "TRUE"}
    # GPUs cannot live-migrate; a preempted Spot worker is deleted and recreated by the group
    assert template["scheduling"] == {
        "onHostMaintenance": "TERMINATE", "provisioningModel": "SPOT", "preemptible": True,
        "automaticRestart": False, "instanceTerminationAction": "DELETE",
    }


def test_the_template_has_no_external_ip_and_its_own_account_and_labels(plan: Plan) -> None:
    template = one(plan, TEMPLATE)
    subnet = f"projects/{PROJECT}/regions/us-central1/subnetworks/cn-dev-group-subnet"
    assert template["networkInterfaces"] == [{"subnetwork": subnet}]  # no accessConfigs: no external IP
    assert template["serviceAccount"] == {"email": WORKER.removeprefix("serviceAccount:"), "scopes": ["cloud-platform"]}
    assert template["labels"] == {"app": "circularnet", "environment": "dev-group", "managed-by": "cnctl"}
    assert template["tags"] == ["cn-dev-group-gpu-vm", "cn-dev-group-gpu-worker"]
    # name_prefix: a changed template is created before the old one goes (templates are immutable)
    assert "name" not in template and template["namePrefix"].startswith("cn-dev-group-worker-")


def test_a_standard_cmek_worker_restarts_and_encrypts_its_disk(tmp_path: Path) -> None:
    key = "projects/my-circularnet-dev/locations/us-central1/keyRings/r/cryptoKeys/disks"
    plan = plan_stack(stack_variant(tmp_path, base="dev-group", change=lambda c: c["circularnet:compute"].update(spot=False, kmsKeyName=key)))
    template = one(plan, TEMPLATE)
    assert template["disks"][0]["diskEncryptionKey"] == {"kmsKeySelfLink": key}
    assert template["scheduling"] == {"onHostMaintenance": "TERMINATE", "provisioningModel": "STANDARD",
                                      "preemptible": False, "automaticRestart": True}


# --- the regional group, autohealing, rolling updates ------------------------------------------------


def test_a_regional_group_over_the_stacks_zones(plan: Plan) -> None:
    group = one(plan, GROUP)
    assert group["region"] == "us-central1" and group["distributionPolicyZones"] == ZONES
    assert group["distributionPolicyTargetShape"] == "BALANCED"  # grows where the zones have GPUs
    template = next(r for r in plan.resources if r.type == TEMPLATE)
    assert group["versions"] == [{"name": "primary", "instanceTemplate": (
        f"https://www.googleapis.com/compute/v1/projects/{PROJECT}/global/instanceTemplates/"
        f"{template.inputs['namePrefix']}{group['versions'][0]['instanceTemplate'].rsplit('-', 1)[1]}")}]
    assert "targetSize" not in group  # the autoscaler owns the size
    assert group["namedPorts"] == [{"name": "triton-http", "port": 8000}]


def test_autohealing_on_tritons_readiness_with_an_initial_delay(plan: Plan) -> None:
    check = one(plan, HEALTH)
    port = load_stack("dev-group").inference.ports.http  # Triton's HTTP port, the stack's one copy
    assert check["httpHealthCheck"] == {"port": port, "requestPath": "/v2/health/ready"}
    assert (check["checkIntervalSec"], check["timeoutSec"], check["healthyThreshold"], check["unhealthyThreshold"]) == (10, 5, 2, 3)
    group = one(plan, GROUP)
    assert group["autoHealingPolicies"] == {
        "healthCheck": f"projects/{PROJECT}/global/healthChecks/cn-dev-group-triton-ready", "initialDelaySec": 1920,
    }


# Autohealing's initial delay: (driver wait bound 600 + Ops Agent 120 + bundle 300 [+ Triton's image 300] + model
# 180) x 1.25, in whole minutes, unless the stack gives the one it measured. Too short: every worker recreated before
# it serves.
INITIAL_DELAYS = [
    ("container", None, 1920),
    ("native", None, 1500),  # no container image to pull
    ("container", 900, 900),  # measured on a first real boot: the stack's value wins
    ("container", 0, 0),
]


@pytest.mark.parametrize(("runtime", "given", "delay"), INITIAL_DELAYS)
def test_the_initial_delay_covers_a_workers_first_boot_unless_the_stack_measured_it(
        runtime: str, given: int | None, delay: int) -> None:
    from cnctl.cloud.group import initial_delay

    assert initial_delay(WorkerGroup(initial_delay_seconds=given), runtime) == delay


def test_the_measured_delay_reaches_autohealing_the_autoscaler_and_the_outputs(tmp_path: Path) -> None:
    plan = plan_stack(stack_variant(tmp_path, base="dev-group",
                                    change=lambda c: c["circularnet:compute"]["group"].update(initialDelaySeconds=900)))
    assert one(plan, GROUP)["autoHealingPolicies"]["initialDelaySec"] == 900
    assert one(plan, SCALER)["autoscalingPolicy"]["cooldownPeriod"] == 900  # a new worker says nothing before
    assert plan.outputs["workerGroup"]["initialDelaySeconds"] == 900  # what `pulumi stack output` shows


def test_the_health_port_is_tritons_http_port_from_the_stack(tmp_path: Path) -> None:
    plan = plan_stack(stack_variant(tmp_path, base="dev-group", change=lambda c: c["circularnet:inference"].update(ports={"http": 9000})))
    assert one(plan, HEALTH)["httpHealthCheck"]["port"] == 9000
    assert of_type(plan, FIREWALL)["cn-dev-group-allow-health-checks"]["allows"] == [{"protocol": "tcp", "ports": ["9000"]}]
    assert one(plan, GROUP)["namedPorts"] == [{"name": "triton-http", "port": 9000}]


def test_rolling_updates_never_drop_below_the_serving_minimum(plan: Plan) -> None:
    assert one(plan, GROUP)["updatePolicy"] == {
        "type": "PROACTIVE",
        "minimalAction": "REPLACE",
        "maxUnavailableFixed": 0,  # no worker stops before its replacement runs
        "maxSurgeFixed": len(ZONES),  # a regional group's fixed surge is 0 or at least its zone count
        "instanceRedistributionType": "NONE",  # required with a BALANCED shape
        "replacementMethod": "SUBSTITUTE",
    }


def zones_changed(tmp_path: Path, zones: list[str]) -> Plan:
    return plan_stack(stack_variant(tmp_path, base="dev-group", change=lambda c: c["circularnet:gcp"].update(zones=zones)))


def test_a_new_zone_set_creates_the_new_group_before_the_old_goes_and_a_reorder_changes_nothing(
        tmp_path: Path, plan: Plan) -> None:
    """A regional group's zones cannot change in place. Under a fixed name Pulumi would delete the group (every
    worker at once) before creating the new one; named by its zone set, the new group comes first."""
    from cnctl.plan.diff import diff_plans

    assert diff_plans(plan.to_json(), zones_changed(tmp_path, list(reversed(ZONES))).to_json()).empty
    fewer = zones_changed(tmp_path, ZONES[:2])
    assert one(fewer, GROUP)["distributionPolicyZones"] == ZONES[:2]
    changed = diff_plans(plan.to_json(), fewer.to_json())
    for token in (GROUP, SCALER):
        (key,) = [key for key in changed.replaced if key.startswith(f"{token} ")]
        assert "name" in changed.replaced[key]  # a new name: created while the old one runs, then the old deleted
        (registration,) = [r for r in fewer.resources if r.type == token]
        assert fewer.options[(token, registration.name)]["deleteBeforeReplace"] is False


def test_one_zone_surges_by_one(tmp_path: Path) -> None:
    plan = plan_stack(stack_variant(tmp_path, base="dev-group", change=lambda c: c["circularnet:gcp"].update(zones=["us-central1-f"])))
    group = one(plan, GROUP)
    assert group["distributionPolicyZones"] == ["us-central1-f"] and group["updatePolicy"]["maxSurgeFixed"] == 1


def test_health_checks_reach_the_workers_on_the_health_port_only(plan: Plan) -> None:
    rule = of_type(plan, FIREWALL)["cn-dev-group-allow-health-checks"]
    assert rule["direction"] == "INGRESS"
    assert rule["sourceRanges"] == ["35.191.0.0/16", "130.211.0.0/22"] == catalog().gcp.health_check_ranges
    assert rule["allows"] == [{"protocol": "tcp", "ports": ["8000"]}]
    assert rule["targetTags"] == ["cn-dev-group-gpu-worker"]  # the workers, not the fixed VMs' tag
    assert rule["logConfig"] == {"metadata": "INCLUDE_ALL_METADATA"}
    # and nothing else opens to those ranges
    others = [n for n, fw in of_type(plan, FIREWALL).items() if n != "cn-dev-group-allow-health-checks"]
    assert all(not set(of_type(plan, FIREWALL)[n]["sourceRanges"]) & set(rule["sourceRanges"]) for n in others)


# --- the autoscaler on the images backlog ------------------------------------------------------------


def test_the_autoscaler_scales_on_the_subscriptions_backlog(plan: Plan) -> None:
    scaler = one(plan, SCALER)
    assert scaler["region"] == "us-central1"
    group = one(plan, GROUP)["name"]
    assert scaler["target"] == f"projects/{PROJECT}/regions/us-central1/instanceGroupManagers/{group}"
    policy = scaler["autoscalingPolicy"]
    assert (policy["minReplicas"], policy["maxReplicas"], policy["mode"]) == (0, 3, "ON")
    assert policy["cooldownPeriod"] == one(plan, GROUP)["autoHealingPolicies"]["initialDelaySec"]
    assert policy["metrics"] == [{
        "name": "pubsub.googleapis.com/subscription/num_undelivered_messages",
        "filter": 'resource.type = "pubsub_subscription" AND resource.labels.subscription_id = "cn-dev-group-images-work"',
        "singleInstanceAssignment": 50,  # one worker per 50 waiting images
    }]
    assert "cpuUtilization" not in policy and "target" not in policy["metrics"][0]


def test_sizes_follow_the_stack(tmp_path: Path) -> None:
    def change(config: dict[str, Any]) -> None:
        config["circularnet:compute"]["group"].update(min=2, max=6, imagesPerWorker=10, maxDeliveryAttempts=9,
                                                       ackDeadlineSeconds=300, initialDelaySeconds=900)

    plan = plan_stack(stack_variant(tmp_path, base="dev-group", change=change))
    policy = one(plan, SCALER)["autoscalingPolicy"]
    assert (policy["minReplicas"], policy["maxReplicas"], policy["metrics"][0]["singleInstanceAssignment"]) == (2, 6, 10)
    work = of_type(plan, SUBSCRIPTION)["cn-dev-group-images-work"]
    assert work["ackDeadlineSeconds"] == 300 and work["deadLetterPolicy"]["maxDeliveryAttempts"] == 9
    assert one(plan, GROUP)["autoHealingPolicies"]["initialDelaySec"] == 900


# --- the images queue --------------------------------------------------------------------------------


def test_each_finished_image_is_one_message_on_the_images_topic(plan: Plan) -> None:
    notification = one(plan, NOTIFICATION)
    assert notification == {"bucket": IMAGES, "topic": TOPIC, "eventTypes": ["OBJECT_FINALIZE"],
                            "payloadFormat": "JSON_API_V1"}
    topics = of_type(plan, TOPIC_T)
    assert sorted(t["name"] for t in topics.values()) == ["cn-dev-group-images-dead", "cn-dev-group-images-queue"]


SLEEP = "time:index/sleep:Sleep"


def dependencies(monkeypatch: pytest.MonkeyPatch, stack: str) -> tuple[Plan, dict[str, set[str]]]:
    """The plan of `stack` and, per resource name, the names of the resources it was told to wait for
    (`depends_on`, which the mock engine is not given: read where the SDK applies options)."""
    from cnctl.plan import engine

    waits: dict[str, set[str]] = {}
    recording = engine._recording_options

    def also_waits(record: engine.OptionsRecord) -> Any:
        inner = recording(record)

        def transformation(args: Any) -> None:
            inner(args)
            waits[args.name] = {d.pulumi_resource_name for d in args.opts.depends_on or []}

        return transformation

    monkeypatch.setattr(engine, "_recording_options", also_waits)
    return plan_stack(stack), waits


def test_the_notification_waits_for_the_storage_agents_grant_to_propagate(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cloud Storage refuses a notification its agent cannot publish yet, and a new grant takes a while to apply:
    the first apply makes the grant, waits (a time.Sleep after it), then creates the notification."""
    plan, waits = dependencies(monkeypatch, "dev-group")
    grant = next(r for r in plan.resources if r.type == "gcp:pubsub/topicIAMMember:TopicIAMMember"
                 and r.inputs["member"] == GCS_AGENT)
    (sleep_name, sleep), = of_type(plan, SLEEP).items()
    assert waits[sleep_name] >= {grant.name}
    assert sleep["createDuration"] == "120s"
    # made anew (and waited for again) when the grant is: another agent or another topic
    assert sleep["triggers"] == {"member": GCS_AGENT, "topic": TOPIC}
    notification = next(r for r in plan.resources if r.type == NOTIFICATION)
    assert sleep_name in waits[notification.name]


def test_the_work_subscription_dead_letters_and_waits_for_long_inference(plan: Plan) -> None:
    work = of_type(plan, SUBSCRIPTION)["cn-dev-group-images-work"]
    assert work["topic"] == TOPIC
    assert work["deadLetterPolicy"] == {"deadLetterTopic": DEAD, "maxDeliveryAttempts": 5}
    assert work["ackDeadlineSeconds"] == 120
    assert work["messageRetentionDuration"] == "604800s"  # 7 days: Pub/Sub's most, shorter than the images' 14
    assert work["expirationPolicy"] == {"ttl": ""}  # an idle batch site's subscription is never deleted
    assert work["retryPolicy"] == {"minimumBackoff": "10s", "maximumBackoff": "600s"}
    assert work["retainAckedMessages"] is False
    inspect = of_type(plan, SUBSCRIPTION)["cn-dev-group-images-dead-inspect"]
    assert inspect["topic"] == DEAD and "deadLetterPolicy" not in inspect and inspect["expirationPolicy"] == {"ttl": ""}


def test_a_message_lives_no_longer_than_its_image(tmp_path: Path) -> None:
    plan = plan_stack(stack_variant(tmp_path, base="dev-group", change=lambda c: c["circularnet:storage"].update(imageRetentionDays=2)))
    assert of_type(plan, SUBSCRIPTION)["cn-dev-group-images-work"]["messageRetentionDuration"] == "172800s"


def test_the_queue_api_is_enabled_only_for_a_group(plan: Plan, dev: Plan) -> None:
    def apis(p: Plan) -> set[str]:
        return {s["service"] for s in of_type(p, "gcp:projects/service:Service").values()}

    assert apis(plan) == set(catalog().gcp.services) | {"pubsub.googleapis.com"}
    assert apis(dev) == set(catalog().gcp.services)


# --- IAM: every grant, and none broader ---------------------------------------------------------------


def grants(plan: Plan) -> set[tuple[str, str, str]]:
    """(role, member, scope) of every grant in the plan."""
    return plan_grants(plan, SCOPES)


def test_every_grant_exactly(plan: Plan) -> None:
    assert grants(plan) == {
        # the worker: reads frames and models, adds results, pulls from its subscription; never adds frames
        # (each new image is work for the group: a worker adding frames would feed itself)
        ("roles/storage.objectViewer", WORKER, f"bucket:{IMAGES}"),
        ("roles/storage.objectCreator", WORKER, "bucket:my-circularnet-dev-group-results"),
        ("roles/storage.objectViewer", WORKER, "bucket:my-circularnet-dev-group-models"),
        ("roles/logging.logWriter", WORKER, f"project:{PROJECT}"),
        ("roles/monitoring.metricWriter", WORKER, f"project:{PROJECT}"),
        ("roles/pubsub.subscriber", WORKER, "subscription:cn-dev-group-images-work"),
        # Cloud Storage's agent publishes the images bucket's notifications, on that topic only
        ("roles/pubsub.publisher", GCS_AGENT, "topic:cn-dev-group-images-queue"),
        # Pub/Sub's agent dead-letters: publishes on the dead-letter topic, acknowledges on the source subscription
        ("roles/pubsub.publisher", PUBSUB_AGENT, "topic:cn-dev-group-images-dead"),
        ("roles/pubsub.subscriber", PUBSUB_AGENT, "subscription:cn-dev-group-images-work"),
        # unchanged from mode vms: devices add objects, the transfer loads results
        ("roles/storage.objectCreator", EDGE, f"bucket:{IMAGES}"),
        ("roles/storage.objectCreator", EDGE, "bucket:my-circularnet-dev-group-results"),
        ("roles/storage.objectViewer", LOAD, "bucket:my-circularnet-dev-group-results"),
        ("WRITER", LOAD, "datasetId:circularnet_dev_group"),
        (f"projects/{PROJECT}/roles/cn_dev_group_load_dataset", LOAD, "datasetId:circularnet_dev_group"),
        ("roles/bigquery.jobUser", LOAD, f"project:{PROJECT}"),
        ("roles/iam.serviceAccountTokenCreator", TRANSFER_AGENT,
         f"serviceAccountId:projects/{PROJECT}/serviceAccounts/cn-dev-group-load@{PROJECT}.iam.gserviceaccount.com"),
    }


def test_no_pubsub_role_on_the_project_and_no_wider_pubsub_role(plan: Plan) -> None:
    for role, _, scope in grants(plan):
        if role.startswith("roles/pubsub."):
            assert role in {"roles/pubsub.publisher", "roles/pubsub.subscriber"} and not scope.startswith("project:")
    assert not [r for r in plan.resources if "IAMBinding" in r.type or "IAMPolicy" in r.type]


def test_the_plan_passes_every_guardrail(plan: Plan) -> None:
    assert plan.violations == ()


# --- outputs -----------------------------------------------------------------------------------------


def test_outputs_name_the_group_and_its_queue(plan: Plan, dev: Plan) -> None:
    out = plan.outputs["workerGroup"]
    assert out == {
        "name": one(plan, GROUP)["name"],
        "region": "us-central1",
        "zones": ZONES,
        "template": out["template"],
        "initialDelaySeconds": one(plan, GROUP)["autoHealingPolicies"]["initialDelaySec"],
        "topic": "cn-dev-group-images-queue",
        "subscription": "cn-dev-group-images-work",
        "deadLetterTopic": "cn-dev-group-images-dead",
        "deadLetterSubscription": "cn-dev-group-images-dead-inspect",
    }
    assert out["template"].startswith(one(plan, TEMPLATE)["namePrefix"])
    assert plan.outputs["vms"] == []  # no fixed VM: the workers configure themselves (pull mode)
    assert "workerGroup" not in dev.outputs and len(dev.outputs["vms"]) == 1  # mode vms exports what it did


def test_mode_vms_declares_no_group_resource(dev: Plan) -> None:
    tokens = {r.type for r in dev.resources}
    assert not tokens & {TEMPLATE, GROUP, SCALER, HEALTH, TOPIC_T, SUBSCRIPTION, NOTIFICATION}


def test_cnctl_plan_shows_the_autoscaled_autohealing_group_fed_by_the_queue() -> None:
    from typer.testing import CliRunner

    from cnctl.cli.main import app

    result = CliRunner().invoke(app, ["plan", "--stack", "dev-group"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert "0–3 workers · one per 50 of num_undelivered_messages (\"cn-dev-group-images-work\")" in text
    assert ("regional over us-central1-a, us-central1-b, us-central1-c · autohealing on cn-dev-group-triton-ready "
            "after 1920 s · updates: maxUnavailable 0, maxSurge 3") in text
    assert "HTTP :8000/v2/health/ready every 10 s" in text
    assert "OBJECT_FINALIZE of my-circularnet-dev-group-images → cn-dev-group-images-queue" in text
    assert "of cn-dev-group-images-queue · ack 120 s · dead letter after 5 → cn-dev-group-images-dead" in text
    assert "no external IP" in text and "FAIL" not in text


def test_the_guardrails_see_what_the_group_declares(plan: Plan) -> None:
    """The stack-wide guardrails are not vacuous on the real program: they find its health port, topics,
    workers and the bucket hosts install from."""
    from cnctl.plan.guardrails import Context

    ctx = Context.of((r.type, r.inputs) for r in plan.resources)
    assert ctx.health_ports == {8000}
    assert ctx.notification_topics == {"cn-dev-group-images-queue"}
    assert ctx.dead_letter_topics == {"cn-dev-group-images-dead"}
    assert ctx.vm_accounts == {WORKER}
    assert ctx.artifact_buckets == {"my-circularnet-dev-group-models"}
    assert {WORKER, EDGE} <= ctx.host_identities and LOAD not in ctx.host_identities


# --- production: the queue's data is protected and encrypted like the rest -----------------------------


def prod_group(tmp_path: Path) -> str:
    """The prod stack (CMEK, deletion protection) with dev-group's autoscaled workers instead of fixed VMs."""
    group = load_document("dev-group")

    def change(config: dict[str, Any]) -> None:
        compute = config["circularnet:compute"]
        for key in ("instances", "placement"):
            compute.pop(key)
        compute.update(mode="group", group=group["circularnet:compute"]["group"])
        config["circularnet:pipeline"].update(group["circularnet:pipeline"])
        for section in set(group) - set(config):  # what a group stack needs and prod lacks (e.g. its bundle)
            config[section] = group[section]

    return stack_variant(tmp_path, change, base="prod")


def load_document(stack: str) -> dict[str, Any]:
    import yaml

    from cnctl.config import stack_path

    return dict(yaml.safe_load(stack_path(stack).read_text(encoding="utf-8"))["config"])


def test_in_prod_every_stateful_resource_of_the_group_is_protected_and_its_topics_use_the_key(tmp_path: Path) -> None:
    """The work subscription holds the images waiting for a worker, the dead-letter one those waiting for a
    person: in prod Pulumi refuses to delete or replace them, as it does the buckets and the dataset. Where the
    stack encrypts its data with a KMS key, the queue's messages (the images' names) are under it too."""
    plan = plan_stack(prod_group(tmp_path))
    assert plan.ok, plan.violations
    stateful = {token for token, entry in catalog().gcp.replacements.items() if entry.stateful}
    unprotected = [(r.type, r.name) for r in plan.resources if r.type in stateful
                   and not plan.options.get((r.type, r.name), {}).get("protect")]
    assert unprotected == []
    assert {r.inputs["name"] for r in plan.resources if r.type == SUBSCRIPTION} == {
        "cn-prod-images-work", "cn-prod-images-dead-inspect"}
    storage_key = load_document("prod")["circularnet:storage"]["kmsKeyName"]
    assert {r.inputs["name"]: r.inputs.get("kmsKeyName") for r in plan.resources if r.type == TOPIC_T} == {
        "cn-prod-images-queue": storage_key, "cn-prod-images-dead": storage_key}
