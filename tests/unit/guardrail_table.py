"""The one table of guardrail cases: a GOOD production stack that passes every rule, and per rule the
BAD changes it must reject. Both the offline plan's `evaluate` (test_plan_guardrails.py) and the
policy pack's validators (test_policy_pack.py) are driven by it, so they cannot drift apart.

A case is a whole stack (type token, resource name, inputs), because some rules judge a resource by
what the rest of the stack says (production, CMEK in use, the VMs' account). The judged resource is
always named `judged`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

INSTANCE = "gcp:compute/instance:Instance"
DISK = "gcp:compute/disk:Disk"
FIREWALL = "gcp:compute/firewall:Firewall"
SUBNETWORK = "gcp:compute/subnetwork:Subnetwork"
BUCKET = "gcp:storage/bucket:Bucket"
DATASET = "gcp:bigquery/dataset:Dataset"
TABLE = "gcp:bigquery/table:Table"
PROJECT_MEMBER = "gcp:projects/iAMMember:IAMMember"
BUCKET_MEMBER = "gcp:storage/bucketIAMMember:BucketIAMMember"
DATASET_MEMBER = "gcp:bigquery/datasetIamMember:DatasetIamMember"
DATASET_ACCESS = "gcp:bigquery/datasetAccess:DatasetAccess"
TABLE_MEMBER = "gcp:bigquery/iamMember:IamMember"
ACCOUNT_MEMBER = "gcp:serviceaccount/iAMMember:IAMMember"
PROJECT_ITEM = "gcp:compute/projectMetadataItem:ProjectMetadataItem"
TRANSFER = "gcp:bigquery/dataTransferConfig:DataTransferConfig"
CUSTOM_ROLE = "gcp:projects/iAMCustomRole:IAMCustomRole"
TEMPLATE = "gcp:compute/instanceTemplate:InstanceTemplate"
HEALTH_CHECK = "gcp:compute/healthCheck:HealthCheck"
AUTOSCALER = "gcp:compute/regionAutoscaler:RegionAutoscaler"
TOPIC = "gcp:pubsub/topic:Topic"
SUBSCRIPTION = "gcp:pubsub/subscription:Subscription"
NOTIFICATION = "gcp:storage/notification:Notification"
TOPIC_MEMBER = "gcp:pubsub/topicIAMMember:TopicIAMMember"
SUBSCRIPTION_MEMBER = "gcp:pubsub/subscriptionIAMMember:SubscriptionIAMMember"
ALERT_POLICY = "gcp:monitoring/alertPolicy:AlertPolicy"
CHANNEL = "gcp:monitoring/notificationChannel:NotificationChannel"
UPTIME_CHECK = "gcp:monitoring/uptimeCheckConfig:UptimeCheckConfig"
LOG_METRIC = "gcp:logging/metric:Metric"

KEY = "projects/p/locations/us-central1/keyRings/r/cryptoKeys/k"
VM_EMAIL = "cn-prod-vm@p.iam.gserviceaccount.com"
VM = f"serviceAccount:{VM_EMAIL}"
EDGE = "serviceAccount:cn-prod-edge@p.iam.gserviceaccount.com"
LOAD_EMAIL = "cn-prod-load@p.iam.gserviceaccount.com"
LOAD = f"serviceAccount:{LOAD_EMAIL}"
AGENT = "serviceAccount:service-123456789012@gcp-sa-bigquerydatatransfer.iam.gserviceaccount.com"
RESULTS = "results-bucket"
MODELS = "models-bucket"
IAP = "35.235.240.0/20"
HEALTH_RANGES = ["35.191.0.0/16", "130.211.0.0/22"]
GCS_AGENT = "serviceAccount:service-123456789012@gs-project-accounts.iam.gserviceaccount.com"
PUBSUB_AGENT = "serviceAccount:service-123456789012@gcp-sa-pubsub.iam.gserviceaccount.com"
QUEUE = "projects/p/topics/cn-prod-images-queue"
DEAD = "projects/p/topics/cn-prod-images-dead"


def labels(env: str) -> dict[str, str]:
    return {"environment": env, "managed-by": "cnctl"}


def good_instance(env: str = "prod") -> dict[str, Any]:
    return {
        "machineType": "n1-standard-8",
        "guestAccelerators": [{"type": "nvidia-tesla-t4", "count": 1}],
        "networkInterfaces": [{"subnetwork": "projects/p/regions/r/subnetworks/s"}],
        "scheduling": {"onHostMaintenance": "TERMINATE", "provisioningModel": "STANDARD", "preemptible": False},
        "shieldedInstanceConfig": {"enableVtpm": True, "enableIntegrityMonitoring": True},
        "serviceAccount": {"email": VM_EMAIL, "scopes": ["cloud-platform"]},
        "metadata": {"enable-oslogin": "TRUE", "block-project-ssh-keys": "TRUE", "startup-script": "#!/bin/sh"},
        "bootDisk": {"kmsKeySelfLink": KEY, "initializeParams": {"type": "pd-balanced"}},
        "deletionProtection": True,
        "labels": labels(env),
    }


def good_template() -> dict[str, Any]:
    """A worker template of compute.mode group: the VM's properties, its disk in the template's form."""
    vm = good_instance()
    for key in ("bootDisk", "deletionProtection"):
        vm.pop(key)
    return {**vm, "namePrefix": "cn-prod-worker-", "tags": ["cn-prod-gpu-vm", "cn-prod-gpu-worker"],
            "disks": [{"boot": True, "diskType": "pd-balanced", "diskEncryptionKey": {"kmsKeySelfLink": KEY}}]}


LOGGED = {"metadata": "INCLUDE_ALL_METADATA"}

# One production stack that passes every rule: (type token, name, inputs).
GOOD: list[tuple[str, str, dict[str, Any]]] = [
    (INSTANCE, "vm", good_instance()),
    (INSTANCE, "vm-g2", {**good_instance(), "machineType": "g2-standard-8", "guestAccelerators": None}),
    (FIREWALL, "ssh", {"direction": "INGRESS", "allows": [{"protocol": "tcp", "ports": ["22"]}],
                       "sourceRanges": [IAP], "logConfig": LOGGED}),
    (FIREWALL, "inference", {"direction": "INGRESS", "allows": [{"protocol": "tcp", "ports": ["8000-8002"]}],
                             "sourceRanges": ["10.40.0.0/16", "100.64.0.0/10"], "logConfig": LOGGED}),
    (FIREWALL, "deny-all", {"direction": "INGRESS", "denies": [{"protocol": "all"}], "sourceRanges": ["0.0.0.0/0"]}),
    (FIREWALL, "egress", {"direction": "EGRESS", "allows": [{"protocol": "tcp"}], "destinationRanges": ["0.0.0.0/0"]}),
    (SUBNETWORK, "subnet", {"ipCidrRange": "10.30.0.0/24", "logConfig": {"aggregationInterval": "INTERVAL_5_SEC"}}),
    (BUCKET, "results", {"publicAccessPrevention": "enforced", "uniformBucketLevelAccess": True, "forceDestroy": False,
                         "encryption": {"defaultKmsKeyName": KEY}, "labels": labels("prod")}),
    (DATASET, "dataset", {"datasetId": "d", "location": "europe-west4", "deleteContentsOnDestroy": False,
                          "defaultEncryptionConfiguration": {"kmsKeyName": KEY}, "labels": labels("prod")}),
    (TABLE, "table", {"datasetId": "d", "tableId": "t", "deletionProtection": True, "labels": labels("prod")}),
    (DISK, "vm-disk", {"zone": "europe-west4-a", "size": 300, "type": "pd-balanced",
                       "diskEncryptionKey": {"kmsKeySelfLink": KEY}, "labels": labels("prod")}),
    (PROJECT_MEMBER, "logs", {"project": "p", "role": "roles/logging.logWriter", "member": VM}),
    (BUCKET_MEMBER, "frames", {"bucket": "b", "role": "roles/storage.objectCreator", "member": VM}),
    (BUCKET_MEMBER, "frames-read", {"bucket": "b", "role": "roles/storage.objectViewer", "member": VM}),
    (BUCKET_MEMBER, "uploads", {"bucket": RESULTS, "role": "roles/storage.objectCreator", "member": EDGE}),
    # The BigQuery Data Transfer: its own account reads the results bucket and alone writes the dataset.
    (TRANSFER, "load", {"dataSourceId": "google_cloud_storage", "serviceAccountName": LOAD_EMAIL, "location": "europe-west4",
                        "params": {"data_path_template": f"gs://{RESULTS}/detections/tf/*.ndjson"}}),
    (BUCKET_MEMBER, "load-reads", {"bucket": RESULTS, "role": "roles/storage.objectViewer", "member": LOAD}),
    # on the dataset, as access entries: WRITER (dataEditor) and the custom role of what a transfer's account needs
    (DATASET_ACCESS, "rows", {"datasetId": "d", "role": "WRITER", "userByEmail": LOAD_EMAIL}),
    (CUSTOM_ROLE, "transfer-dataset", {"project": "p", "roleId": "cn_prod_load_dataset",
                                       "permissions": ["bigquery.datasets.get", "bigquery.datasets.update"]}),
    (DATASET_ACCESS, "dataset-update", {"datasetId": "d", "role": "projects/p/roles/cn_prod_load_dataset",
                                        "userByEmail": LOAD_EMAIL}),
    (PROJECT_MEMBER, "jobs", {"project": "p", "role": "roles/bigquery.jobUser", "member": LOAD}),
    (ACCOUNT_MEMBER, "agent", {"serviceAccountId": f"projects/p/serviceAccounts/{LOAD_EMAIL}",
                               "role": "roles/iam.serviceAccountTokenCreator", "member": AGENT}),
    # What hosts install from: the VMs read it, nobody in the stack writes it (operators publish).
    (BUCKET, "models", {"name": MODELS, "publicAccessPrevention": "enforced", "uniformBucketLevelAccess": True,
                        "forceDestroy": False, "encryption": {"defaultKmsKeyName": KEY},
                        "labels": {**labels("prod"), "contents": "models"}}),
    (BUCKET_MEMBER, "models-read", {"bucket": MODELS, "role": "roles/storage.objectViewer", "member": VM}),
    # compute.mode group: the worker template, its autohealing, autoscaler and the images queue.
    (TEMPLATE, "template", good_template()),
    (HEALTH_CHECK, "triton-ready", {"httpHealthCheck": {"port": 8000, "requestPath": "/v2/health/ready"}}),
    (FIREWALL, "health-checks", {"direction": "INGRESS", "allows": [{"protocol": "tcp", "ports": ["8000"]}],
                                 "sourceRanges": HEALTH_RANGES, "targetTags": ["cn-prod-gpu-worker"], "logConfig": LOGGED}),
    (AUTOSCALER, "scaler", {"autoscalingPolicy": {"minReplicas": 0, "maxReplicas": 3}}),
    (TOPIC, "queue", {"name": "cn-prod-images-queue", "kmsKeyName": KEY}),
    (TOPIC, "dead", {"name": "cn-prod-images-dead", "kmsKeyName": KEY}),
    (NOTIFICATION, "notify", {"bucket": "images-bucket", "topic": QUEUE, "eventTypes": ["OBJECT_FINALIZE"]}),
    (SUBSCRIPTION, "work", {"name": "cn-prod-images-work", "topic": QUEUE,
                            "deadLetterPolicy": {"deadLetterTopic": DEAD, "maxDeliveryAttempts": 5}}),
    (TOPIC_MEMBER, "gcs-publishes", {"topic": "cn-prod-images-queue", "role": "roles/pubsub.publisher", "member": GCS_AGENT}),
    (TOPIC_MEMBER, "dead-letters", {"topic": "cn-prod-images-dead", "role": "roles/pubsub.publisher", "member": PUBSUB_AGENT}),
    (SUBSCRIPTION_MEMBER, "worker-pulls", {"subscription": "cn-prod-images-work", "role": "roles/pubsub.subscriber",
                                           "member": VM}),
    (SUBSCRIPTION_MEMBER, "agent-acks", {"subscription": "cn-prod-images-work", "role": "roles/pubsub.subscriber",
                                         "member": PUBSUB_AGENT}),
    # Cloud Monitoring: what the stack watches, who it tells, Compute Engine's repairs of the workers as a metric.
    (CHANNEL, "alerts", {"type": "email", "labels": {"email_address": "ops@plant.example"},
                         "userLabels": labels("prod")}),
    (ALERT_POLICY, "host-unhealthy", {
        "combiner": "OR", "userLabels": labels("prod"), "notificationChannels": ["projects/p/notificationChannels/1"],
        "conditions": [{"conditionThreshold": {
            "filter": 'resource.type = "prometheus_target" AND metric.type = '
                      '"prometheus.googleapis.com/cnctl_health_healthy/gauge"',
            "comparison": "COMPARISON_LT", "thresholdValue": 1, "duration": "600s"}}]}),
    (LOG_METRIC, "recreations", {"filter": 'protoPayload.methodName="compute.instances.repair.recreateInstance"',
                                 "metricDescriptor": {"metricKind": "DELTA", "valueType": "INT64"}}),
]

# The same stack as dev without CMEK: Spot VMs, no deletion protection and no logging are fine there.
GOOD_DEV: list[tuple[str, str, dict[str, Any]]] = [
    (INSTANCE, "vm", {**good_instance("dev"), "deletionProtection": False, "bootDisk": {},
                      "scheduling": {"onHostMaintenance": "TERMINATE", "provisioningModel": "SPOT", "preemptible": True}}),
    (FIREWALL, "ssh", {"direction": "INGRESS", "allows": [{"protocol": "tcp", "ports": ["22"]}], "sourceRanges": [IAP]}),
    (SUBNETWORK, "subnet", {"ipCidrRange": "10.20.0.0/24"}),
    (BUCKET, "results", {"publicAccessPrevention": "enforced", "uniformBucketLevelAccess": True, "forceDestroy": True,
                         "labels": labels("dev")}),
    (DATASET, "dataset", {"datasetId": "d", "location": "us-central1", "deleteContentsOnDestroy": True,
                          "labels": labels("dev")}),
    (TABLE, "table", {"datasetId": "d", "tableId": "t", "deletionProtection": False, "labels": labels("dev")}),
]


def inputs_of(name: str, stack: list[tuple[str, str, dict[str, Any]]] = GOOD) -> dict[str, Any]:
    return copy.deepcopy(next(i for _, n, i in stack if n == name))


def changed(name: str, **changes: Any) -> dict[str, Any]:
    """GOOD's resource `name` with top-level keys replaced (None removes the key)."""
    inputs = inputs_of(name)
    for key, value in changes.items():
        if value is None:
            inputs.pop(key, None)
        else:
            inputs[key] = value
    return inputs


def with_metadata(**items: str | None) -> dict[str, Any]:
    metadata = {k: v for k, v in {**inputs_of("vm")["metadata"], **items}.items() if v is not None}
    return changed("vm", metadata=metadata)


@dataclass(frozen=True)
class Bad:
    """A stack that breaks `rule` at the resource named `judged`: GOOD (or `base`) plus this resource."""

    rule: str
    type: str
    inputs: dict[str, Any]
    base: tuple[tuple[str, str, dict[str, Any]], ...] = tuple(GOOD)
    why: str = ""

    def stack(self) -> list[tuple[str, str, dict[str, Any]]]:
        return [*copy.deepcopy(list(self.base)), (self.type, "judged", copy.deepcopy(self.inputs))]


def fw(sources: list[str] | None, ports: list[str] | None = None, protocol: str = "tcp", **extra: Any) -> dict[str, Any]:
    allow: dict[str, Any] = {"protocol": protocol}
    if ports is not None:
        allow["ports"] = ports
    inputs: dict[str, Any] = {"direction": "INGRESS", "allows": [allow], "logConfig": LOGGED, **extra}
    if sources is not None:
        inputs["sourceRanges"] = sources
    return inputs


G2_BARE = {**changed("vm", guestAccelerators=None, scheduling={}), "machineType": "g2-standard-8"}
DEV = tuple(GOOD_DEV)
# GOOD with two custom roles declared: one that appends rows, one that only reads.
INSERTER = (
    *GOOD,
    (CUSTOM_ROLE, "inserter", {"project": "p", "roleId": "inserter",
                               "permissions": ["bigquery.tables.get", "bigquery.tables.updateData"]}),
    (CUSTOM_ROLE, "reader", {"project": "p", "roleId": "reader", "permissions": ["bigquery.tables.getData"]}),
)

BAD: list[Bad] = [
    Bad("no-external-ip", INSTANCE, changed("vm", networkInterfaces=[{"subnetwork": "s", "accessConfigs": [{}]}])),
    Bad("no-external-ip", INSTANCE, changed("vm", networkInterfaces=[{"subnetwork": "s", "ipv6AccessConfigs": [{}]}])),
    Bad("no-open-ingress", FIREWALL, fw(["10.0.0.0/8", "0.0.0.0/0"], ["8000"])),
    Bad("no-open-ingress", FIREWALL, fw(["::/0"], ["8000"])),
    Bad("no-open-ingress", FIREWALL, fw(None, ["8000"]), why="no source at all is 0.0.0.0/0"),
    Bad("no-open-ingress", FIREWALL, fw(["0.0.0.0/1", "128.0.0.0/1"], ["8000"]), why="two halves are the internet"),
    Bad("no-open-ingress", FIREWALL, fw(["0.0.0.0/2", "64.0.0.0/2", "128.0.0.0/2", "192.0.0.0/2"], ["443"])),
    Bad("no-open-ingress", FIREWALL, fw(["1.0.0.0/8", "2.0.0.0/7", "4.0.0.0/6", "8.0.0.0/5", "16.0.0.0/4", "32.0.0.0/3",
                                        "64.0.0.0/2", "128.0.0.0/1"], ["443"]),
        why="every public range, skipping only 0.0.0.0/8 which is not the internet"),
    Bad("no-open-ingress", FIREWALL, fw(["2000::/4", "3000::/4"], ["443"]), why="all of IPv6 global unicast"),
    Bad("ssh-only-from-iap", FIREWALL, fw(["10.0.0.0/8"], ["22"])),
    Bad("ssh-only-from-iap", FIREWALL, fw(["10.40.0.0/16"], ["8000-8002", "20-30"]), why="a range that spans 22"),
    Bad("ssh-only-from-iap", FIREWALL, fw(["10.40.0.0/16"], None), why="tcp with no ports is every port"),
    Bad("ssh-only-from-iap", FIREWALL, fw(["10.40.0.0/16"], None, protocol="all")),
    Bad("ssh-only-from-iap", FIREWALL, fw([IAP, "35.235.0.0/16"], ["22"]), why="wider than IAP's range"),
    Bad("ssh-only-from-iap", FIREWALL, fw([], ["22"], sourceTags=["bastion"])),
    Bad("os-login-enforced", INSTANCE, with_metadata(**{"enable-oslogin": "FALSE"})),
    Bad("os-login-enforced", INSTANCE, with_metadata(**{"enable-oslogin": None})),
    Bad("os-login-enforced", INSTANCE, with_metadata(**{"block-project-ssh-keys": "false"})),
    Bad("os-login-enforced", INSTANCE, with_metadata(**{"ssh-keys": "root:ssh-ed25519 AAAA"})),
    Bad("os-login-enforced", PROJECT_ITEM, {"key": "enable-oslogin", "value": "FALSE"}),
    Bad("os-login-enforced", PROJECT_ITEM, {"key": "ssh-keys", "value": "me:ssh-rsa AAAA"}),
    Bad("buckets-private", BUCKET, changed("results", publicAccessPrevention="inherited")),
    Bad("buckets-private", BUCKET, changed("results", publicAccessPrevention=None)),
    Bad("buckets-private", BUCKET, changed("results", uniformBucketLevelAccess=False)),
    Bad("no-default-compute-service-account", INSTANCE,
        changed("vm", serviceAccount={"email": "123-compute@developer.gserviceaccount.com"})),
    Bad("no-default-compute-service-account", INSTANCE, changed("vm", serviceAccount={"email": "default"})),
    Bad("no-default-compute-service-account", INSTANCE, changed("vm", serviceAccount={"scopes": ["cloud-platform"]})),
    Bad("no-default-compute-service-account", PROJECT_MEMBER,
        {"project": "p", "role": "roles/logging.logWriter", "member": "serviceAccount:1-compute@developer.gserviceaccount.com"}),
    Bad("no-primitive-roles", PROJECT_MEMBER, {"project": "p", "role": "roles/editor", "member": VM}),
    Bad("no-primitive-roles", PROJECT_MEMBER, {"project": "p", "role": "roles/owner", "member": VM}),
    Bad("no-primitive-roles", BUCKET_MEMBER, {"bucket": "b", "role": "roles/viewer", "member": VM}),
    Bad("no-primitive-roles", "gcp:projects/iAMPolicy:IAMPolicy",
        {"project": "p", "policyData": '{"bindings": [{"role": "roles/owner", "members": []}]}'}),
    Bad("no-project-storage-roles", PROJECT_MEMBER, {"project": "p", "role": "roles/storage.objectAdmin", "member": VM}),
    Bad("no-project-storage-roles", "gcp:projects/iAMBinding:IAMBinding",
        {"project": "p", "role": "roles/storage.admin", "members": [VM]}),
    Bad("gpu-vms-terminate-on-maintenance", INSTANCE, changed("vm", scheduling={"onHostMaintenance": "MIGRATE"})),
    Bad("gpu-vms-terminate-on-maintenance", INSTANCE, changed("vm", scheduling=None)),
    Bad("gpu-vms-terminate-on-maintenance", INSTANCE, G2_BARE, why="the GPU comes with the g2 shape"),
    Bad("shielded-vm", INSTANCE, changed("vm", shieldedInstanceConfig={"enableVtpm": True})),
    Bad("shielded-vm", INSTANCE, changed("vm", shieldedInstanceConfig={"enableIntegrityMonitoring": True})),
    Bad("shielded-vm", INSTANCE, changed("vm", shieldedInstanceConfig=None)),
    Bad("dataset-location-set", DATASET, changed("dataset", location=None)),
    Bad("dataset-location-set", DATASET, changed("dataset", location="")),
    Bad("labels-present", INSTANCE, changed("vm", labels=None)),
    Bad("labels-present", BUCKET, changed("results", labels={"environment": "prod"})),
    Bad("labels-present", DATASET, changed("dataset", labels={})),
    Bad("labels-present", TABLE, changed("table", labels={"managed-by": "cnctl"})),
    Bad("labels-present", DISK, changed("vm-disk", labels={"environment": "prod"})),
    Bad("labels-present", ALERT_POLICY, changed("host-unhealthy", userLabels=None)),
    Bad("labels-present", ALERT_POLICY, changed("host-unhealthy", userLabels={}, labels=labels("prod")),
        why="an alert policy's labels are userLabels"),
    Bad("labels-present", CHANNEL, changed("alerts", userLabels={"environment": "prod"})),
    Bad("no-uptime-checks-from-the-internet", UPTIME_CHECK,
        {"httpCheck": {"path": "/v2/health/ready", "port": 8000},
         "monitoredResource": {"type": "uptime_url", "labels": {"host": "10.20.0.7", "project_id": "p"}}},
        why="Google's public checkers: the VM would have to answer the internet"),
    Bad("no-uptime-checks-from-the-internet", UPTIME_CHECK,
        {"tcpCheck": {"port": 22}, "checkerType": "STATIC_IP_CHECKERS",
         "monitoredResource": {"type": "gce_instance", "labels": {"instance_id": "1", "zone": "europe-west4-a"}}}),
    Bad("production-keeps-deletion-protection", INSTANCE, changed("vm", deletionProtection=False)),
    Bad("production-keeps-deletion-protection", INSTANCE, changed("vm", deletionProtection=None)),
    Bad("production-keeps-deletion-protection", TABLE, changed("table", deletionProtection=False)),
    Bad("production-keeps-deletion-protection", BUCKET, changed("results", forceDestroy=True)),
    Bad("production-keeps-deletion-protection", DATASET, changed("dataset", deleteContentsOnDestroy=True)),
    Bad("production-no-spot", INSTANCE, changed("vm", scheduling={"onHostMaintenance": "TERMINATE",
                                                                 "provisioningModel": "SPOT"})),
    Bad("production-no-spot", INSTANCE, changed("vm", scheduling={"onHostMaintenance": "TERMINATE", "preemptible": True})),
    Bad("detections-written-only-by-the-transfer", DATASET_MEMBER,
        {"datasetId": "d", "role": "roles/bigquery.dataEditor", "member": EDGE}),
    Bad("detections-written-only-by-the-transfer", DATASET_MEMBER,
        {"datasetId": "d", "role": "roles/bigquery.dataEditor", "member": "user:analyst@example.com"},
        why="not only uploaders: nobody but the transfer"),
    Bad("detections-written-only-by-the-transfer", TABLE_MEMBER,
        {"datasetId": "d", "tableId": "t", "role": "roles/bigquery.dataOwner", "member": "user:someone@example.com"}),
    Bad("detections-written-only-by-the-transfer", PROJECT_MEMBER, {"project": "p", "role": "roles/bigquery.admin", "member": EDGE},
        base=DEV, why="no transfer in the stack at all is no excuse"),
    Bad("detections-written-only-by-the-transfer", "gcp:bigquery/datasetIamBinding:DatasetIamBinding",
        {"datasetId": "d", "role": "roles/bigquery.dataEditor", "members": [LOAD, VM]}),
    Bad("detections-written-only-by-the-transfer", PROJECT_MEMBER, {"project": "p", "role": "roles/bigquery.dataEditor", "member": LOAD},
        why="the transfer's account too: on the dataset, not every dataset of the project"),
    Bad("detections-written-only-by-the-transfer", TABLE_MEMBER,
        {"datasetId": "d", "tableId": "t", "role": "projects/p/roles/inserter", "member": "user:someone@example.com"},
        base=INSERTER, why="a custom role the stack declares with tables.updateData writes rows too"),
    # a dataset's access entry is a grant too, its basic role the predefined one, its member by kind
    Bad("detections-written-only-by-the-transfer", DATASET_ACCESS,
        {"datasetId": "d", "role": "WRITER", "userByEmail": "analyst@example.com"}, why="WRITER is dataEditor"),
    Bad("detections-written-only-by-the-transfer", DATASET_ACCESS,
        {"datasetId": "d", "role": "roles/bigquery.dataOwner", "groupByEmail": "analysts@example.com"}),
    Bad("detections-written-only-by-the-transfer", DATASET_ACCESS,
        {"datasetId": "d", "role": "projects/p/roles/cn_prod_load_dataset", "userByEmail": VM_EMAIL},
        why="the transfer's custom role (datasets.update) to anyone else"),
    Bad("uploaders-hold-no-bigquery-roles", DATASET_ACCESS, {"datasetId": "d", "role": "READER", "userByEmail": VM_EMAIL},
        why="READER is dataViewer, and the VMs upload"),
    Bad("uploaders-hold-no-bigquery-roles", DATASET_ACCESS, {"datasetId": "d", "role": "roles/bigquery.dataViewer",
                                                            "iamMember": EDGE}),
    Bad("no-primitive-roles", DATASET_ACCESS, {"datasetId": "d", "role": "roles/editor", "userByEmail": LOAD_EMAIL}),
    Bad("no-default-compute-service-account", DATASET_ACCESS,
        {"datasetId": "d", "role": "READER", "userByEmail": "1-compute@developer.gserviceaccount.com"}),
    Bad("uploaders-hold-no-bigquery-roles", PROJECT_MEMBER, {"project": "p", "role": "roles/bigquery.jobUser", "member": EDGE}),
    Bad("uploaders-hold-no-bigquery-roles", DATASET_MEMBER, {"datasetId": "d", "role": "roles/bigquery.dataViewer", "member": VM},
        why="the VMs upload through the same uploader"),
    Bad("uploaders-hold-no-bigquery-roles", TABLE_MEMBER,
        {"datasetId": "d", "tableId": "t", "role": "projects/p/roles/reader", "member": EDGE}, base=INSERTER,
        why="a custom role with BigQuery permissions counts as a BigQuery role"),
    Bad("transfer-reads-only-what-it-loads", BUCKET_MEMBER, {"bucket": "images-bucket", "role": "roles/storage.objectViewer",
                                                             "member": LOAD}),
    Bad("transfer-reads-only-what-it-loads", BUCKET_MEMBER, {"bucket": RESULTS, "role": "roles/storage.legacyBucketReader",
                                                             "member": LOAD}),
    Bad("transfers-run-as-a-service-account", TRANSFER, {"dataSourceId": "google_cloud_storage", "location": "europe-west4",
                                                         "params": {"data_path_template": f"gs://{RESULTS}/x/*.ndjson"}}),
    Bad("transfers-run-as-a-service-account", TRANSFER,
        {"dataSourceId": "google_cloud_storage", "serviceAccountName": "1-compute@developer.gserviceaccount.com",
         "params": {"data_path_template": "gs://other/x/*.ndjson"}}),
    Bad("objects-never-overwritten-or-deleted", BUCKET_MEMBER, {"bucket": "b", "role": "roles/storage.objectAdmin", "member": VM}),
    Bad("objects-never-overwritten-or-deleted", "gcp:storage/bucketIAMBinding:BucketIAMBinding",
        {"bucket": RESULTS, "role": "roles/storage.objectUser", "members": [EDGE]}),
    Bad("objects-never-overwritten-or-deleted", "gcp:storage/bucketIAMPolicy:BucketIAMPolicy",
        {"bucket": "b", "policyData": '{"bindings": [{"role": "roles/storage.legacyObjectOwner", "members": []}]}'}),
    Bad("impersonation-only-for-service-agents", ACCOUNT_MEMBER,
        {"serviceAccountId": f"projects/p/serviceAccounts/{LOAD_EMAIL}", "role": "roles/iam.serviceAccountTokenCreator",
         "member": "user:someone@example.com"}),
    Bad("impersonation-only-for-service-agents", ACCOUNT_MEMBER,
        {"serviceAccountId": "projects/p/serviceAccounts/x", "role": "roles/iam.serviceAccountUser", "member": EDGE}),
    Bad("impersonation-only-for-service-agents", PROJECT_MEMBER,
        {"project": "p", "role": "roles/iam.serviceAccountTokenCreator", "member": AGENT},
        why="even the agent: on its one account, not every account of the project"),
    Bad("cmek-everywhere", BUCKET, changed("results", encryption=None)),
    Bad("cmek-everywhere", DATASET, changed("dataset", defaultEncryptionConfiguration=None)),
    Bad("cmek-everywhere", DISK, changed("vm-disk", diskEncryptionKey=None), why="the boot disk a VM attaches"),
    Bad("cmek-everywhere", INSTANCE, changed("vm", bootDisk={"initializeParams": {"type": "pd-balanced"}})),
    Bad("production-logs-traffic", SUBNETWORK, {"ipCidrRange": "10.31.0.0/24"}),
    Bad("production-logs-traffic", FIREWALL, fw([IAP], ["22"], logConfig=None)),
    # compute.mode group
    Bad("no-external-ip", TEMPLATE, {**good_template(), "networkInterfaces": [{"subnetwork": "s", "accessConfigs": [{}]}]},
        why="a template stamps its external IP on every worker"),
    Bad("shielded-vm", TEMPLATE, {**good_template(), "shieldedInstanceConfig": {"enableVtpm": True}}),
    Bad("no-default-compute-service-account", TEMPLATE, {**good_template(), "serviceAccount": {"email": "default"}}),
    Bad("cmek-everywhere", TEMPLATE, {**good_template(), "disks": [{"boot": True}]}),
    Bad("cmek-everywhere", TOPIC, changed("queue", kmsKeyName=None), why="the queue's messages name the plant's images"),
    Bad("production-no-spot", TEMPLATE, {**good_template(), "scheduling": {"onHostMaintenance": "TERMINATE",
                                                                          "provisioningModel": "SPOT"}}),
    Bad("autoscaler-min-not-above-max", AUTOSCALER, {"autoscalingPolicy": {"minReplicas": 4, "maxReplicas": 3}}),
    Bad("autoscaler-min-not-above-max", AUTOSCALER, {"autoscalingPolicy": {"minReplicas": 0, "maxReplicas": 0}}),
    Bad("autoscaler-min-not-above-max", "gcp:compute/autoscaler:Autoscaler", {"autoscalingPolicy": {"minReplicas": 1}},
        why="no max at all"),
    Bad("autoscaler-min-not-above-max", AUTOSCALER, {"autoscalingPolicy": {"minReplicas": -1, "maxReplicas": 2}}),
    Bad("health-checks-only-to-the-health-port", FIREWALL, fw(HEALTH_RANGES, ["8000", "8001"]), why="gRPC too"),
    Bad("health-checks-only-to-the-health-port", FIREWALL, fw(HEALTH_RANGES, None), why="tcp with no ports is every port"),
    Bad("health-checks-only-to-the-health-port", FIREWALL, fw(HEALTH_RANGES, None, protocol="all")),
    Bad("health-checks-only-to-the-health-port", FIREWALL, fw(HEALTH_RANGES, ["7000-9000"]), why="a range around it"),
    Bad("health-checks-only-to-the-health-port", FIREWALL, fw([*HEALTH_RANGES, "10.40.0.0/16"], ["8000"]),
        why="the plant network rides on the health-check rule"),
    Bad("health-checks-only-to-the-health-port", FIREWALL, fw(["35.191.0.0/16"], ["8000"], sourceTags=["x"])),
    Bad("health-checks-only-to-the-health-port", FIREWALL, fw(["35.191.0.0/16"], ["8000"]), base=DEV,
        why="no health check in the stack: nothing to let in"),
    Bad("pubsub-least-privilege", PROJECT_MEMBER, {"project": "p", "role": "roles/pubsub.subscriber", "member": VM}),
    Bad("pubsub-least-privilege", PROJECT_MEMBER, {"project": "p", "role": "roles/pubsub.publisher", "member": GCS_AGENT},
        why="even the agent: on the one topic"),
    Bad("pubsub-least-privilege", TOPIC_MEMBER, {"topic": "cn-prod-images-queue", "role": "roles/pubsub.publisher",
                                                 "member": EDGE}, why="a device could fake work"),
    Bad("pubsub-least-privilege", TOPIC_MEMBER, {"topic": QUEUE, "role": "roles/pubsub.publisher", "member": PUBSUB_AGENT},
        why="the topic named by its full path"),
    Bad("pubsub-least-privilege", TOPIC_MEMBER, {"topic": "cn-prod-images-dead", "role": "roles/pubsub.publisher",
                                                 "member": VM}),
    Bad("pubsub-least-privilege", TOPIC_MEMBER, {"topic": "cn-prod-images-queue", "role": "roles/pubsub.subscriber",
                                                 "member": VM}, why="subscribers get their subscription"),
    Bad("pubsub-least-privilege", TOPIC_MEMBER, {"topic": "other", "role": "roles/pubsub.admin", "member": VM}),
    Bad("pubsub-least-privilege", SUBSCRIPTION_MEMBER, {"subscription": "cn-prod-images-work",
                                                        "role": "roles/pubsub.subscriber", "member": EDGE}),
    Bad("pubsub-least-privilege", SUBSCRIPTION_MEMBER, {"subscription": "cn-prod-images-work",
                                                        "role": "roles/pubsub.editor", "member": VM}),
    Bad("pubsub-least-privilege", "gcp:pubsub/subscriptionIAMBinding:SubscriptionIAMBinding",
        {"subscription": "cn-prod-images-work", "role": "roles/pubsub.subscriber", "members": [VM, "user:me@example.com"]}),
    Bad("artifacts-not-writable-by-hosts", BUCKET_MEMBER, {"bucket": MODELS, "role": "roles/storage.objectCreator",
                                                           "member": VM}, why="a worker"),
    Bad("artifacts-not-writable-by-hosts", BUCKET_MEMBER, {"bucket": MODELS, "role": "roles/storage.objectCreator",
                                                           "member": EDGE}, why="a device (it uploads results)"),
    Bad("artifacts-not-writable-by-hosts", "gcp:storage/bucketIAMBinding:BucketIAMBinding",
        {"bucket": f"b/{MODELS}", "role": "roles/storage.objectCreator", "members": ["user:ops@example.com", EDGE]}),
]

# Changes every rule must accept (their GOOD counterpart in the dev stack, or a near miss of a BAD case).
ALSO_GOOD: list[tuple[tuple[tuple[str, str, dict[str, Any]], ...], str, dict[str, Any]]] = [
    (DEV, INSTANCE, inputs_of("vm", GOOD_DEV)),
    (tuple(GOOD), FIREWALL, fw(["0.0.0.0/1", "128.0.0.0/2"], ["443"])),  # three quarters is not all of it
    (tuple(GOOD), FIREWALL, fw(["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"], ["8000"])),
    (tuple(GOOD), FIREWALL, fw(["35.235.240.0/24"], ["22"])),  # inside IAP's range
    (tuple(GOOD), FIREWALL, fw(["10.40.0.0/16"], ["8000-8002", "23-65535"])),  # spans everything but 22
    (tuple(GOOD), FIREWALL, fw(["10.40.0.0/16"], None, protocol="udp")),
    (tuple(GOOD), PROJECT_ITEM, {"key": "enable-oslogin", "value": "TRUE"}),
    (tuple(GOOD), DATASET_MEMBER, {"datasetId": "d", "role": "roles/bigquery.dataViewer",
                                   "member": "group:analysts@example.com"}),  # reading is not writing, nor an uploader
    (tuple(GOOD), DATASET_ACCESS, {"datasetId": "d", "role": "READER", "groupByEmail": "analysts@example.com"}),
    (tuple(GOOD), BUCKET_MEMBER, {"bucket": RESULTS, "role": "roles/storage.objectViewer", "member": VM}),
    (INSERTER, TABLE_MEMBER, {"datasetId": "d", "tableId": "t", "role": "projects/p/roles/inserter", "member": LOAD}),
    (INSERTER, TABLE_MEMBER, {"datasetId": "d", "tableId": "t", "role": "projects/p/roles/reader",
                              "member": "group:analysts@example.com"}),
    (tuple(GOOD), ACCOUNT_MEMBER, {"serviceAccountId": "projects/p/serviceAccounts/x",
                                   "role": "roles/iam.serviceAccountTokenCreator", "member": AGENT}),
    (tuple(GOOD), FIREWALL, fw(["35.191.0.0/17"], ["8000"])),  # inside Google's health-check range
    (tuple(GOOD), FIREWALL, fw(["10.40.0.0/16"], ["8000-8002"])),  # the inference rule never touches those ranges
    (tuple(GOOD), AUTOSCALER, {"autoscalingPolicy": {"minReplicas": 2, "maxReplicas": 2}}),
    # an operator's or CI's identity may publish models; it uploads nowhere else
    (tuple(GOOD), BUCKET_MEMBER, {"bucket": MODELS, "role": "roles/storage.objectCreator",
                                  "member": "serviceAccount:cn-prod-publish@p.iam.gserviceaccount.com"}),
    (tuple(GOOD), TOPIC_MEMBER, {"topic": "someone-elses", "role": "roles/pubsub.publisher", "member": EDGE}),
    (tuple(GOOD), SUBSCRIPTION_MEMBER, {"subscription": "cn-prod-images-work", "role": "roles/pubsub.subscriber",
                                        "member": "serviceAccount:service-9@gcp-sa-pubsub.iam.gserviceaccount.com"}),
    # a private uptime check: Google's checkers inside the VPC (Service Directory), nothing opened to the internet
    (tuple(GOOD), UPTIME_CHECK, {"checkerType": "VPC_CHECKERS", "httpCheck": {"path": "/v2/health/ready", "port": 8000},
                                 "monitoredResource": {"type": "servicedirectory_service", "labels": {"project_id": "p"}}}),
]
