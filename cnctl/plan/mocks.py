"""Pulumi mocks that record what the program declares and answer like Google Cloud would.

The mock engine hands every resource registration to `new_resource`, with its inputs exactly as
the real engine would receive them (camelCase keys, outputs of other resources resolved). We keep
those inputs for the plan and return plausible computed state (ids, self links, service account
emails, internal IPs), so that the program's outputs and the resources built from other
resources' outputs look as they would after `pulumi up`.
"""

from __future__ import annotations

import ipaddress
import json
import re
import threading
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pulumi

COMPUTE_API = "https://www.googleapis.com/compute/v1"
STORAGE_AGENT_CALL = "gcp:storage/getProjectServiceAccount:getProjectServiceAccount"
PROVIDER = "pulumi:providers:gcp"


@dataclass(frozen=True)
class Registration:
    """One resource as the engine received it: type token, logical name, inputs (camelCase)."""

    type: str
    name: str
    inputs: Mapping[str, Any]


class ProgramCalledDataSource(RuntimeError):
    """The cloud layer called a data source: the offline plan cannot answer it (no credentials)."""


State = dict[str, Any]


class CloudMocks(pulumi.runtime.Mocks):
    """Records custom resources; fabricates Google Cloud's computed outputs deterministically.

    Registrations arrive on the engine's worker threads, in an order that depends on scheduling:
    everything here is keyed by name, never by arrival order, and the caller sorts the record.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._registrations: list[Registration] = []
        self._project = ""
        self._region = ""
        self._subnets: dict[str, str] = {}  # subnetwork id or self link -> CIDR

    @property
    def registrations(self) -> list[Registration]:
        """Everything recorded, by type token then name (then inputs, should a name repeat)."""
        with self._lock:
            return sorted(self._registrations, key=lambda r: (r.type, r.name, json.dumps(r.inputs, sort_keys=True)))

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[Any, Any], list[tuple[str, str]] | None]:
        if args.token == STORAGE_AGENT_CALL:
            # The one data source the program calls: Cloud Storage's service agent of the project. Its answer
            # depends only on the project number, which the mocks fabricate anyway (as for every service
            # agent, `project_number`): no credential could change what the plan shows.
            project = args.args.get("project") or self._project
            email = f"service-{project_number(project)}@gs-project-accounts.iam.gserviceaccount.com"
            return {"emailAddress": email, "member": f"serviceAccount:{email}", "project": project, "id": project}, []
        raise ProgramCalledDataSource(
            f"the cloud layer called the data source {args.token}; the offline plan has no credentials to "
            "answer it: derive the value from the stack file or the catalog instead"
        )

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[Any, Any]]:
        inputs = dict(args.inputs)
        if not args.custom:  # our ComponentResources: structure, no state
            return args.name, {}
        with self._lock:
            self._registrations.append(Registration(args.typ, args.name, inputs))
            if args.typ == PROVIDER:
                self._project = inputs.get("project", "")
                self._region = inputs.get("region", "")
            computed = _COMPUTED.get(args.typ, _by_name)
            resource_id, state = computed(self, args.name, inputs)
        return resource_id, {**inputs, **state}

    # --- computed state, per resource type ------------------------------------------------------

    def _scoped(self, inputs: Mapping[str, Any]) -> tuple[str, str]:
        return inputs.get("project") or self._project, inputs.get("region") or self._region

    def _network(self, name: str, inputs: Mapping[str, Any]) -> tuple[str, State]:
        project, _ = self._scoped(inputs)
        path = f"projects/{project}/global/networks/{inputs.get('name', name)}"
        return path, {"project": project, "selfLink": f"{COMPUTE_API}/{path}"}

    def _subnetwork(self, name: str, inputs: Mapping[str, Any]) -> tuple[str, State]:
        project, region = self._scoped(inputs)
        path = f"projects/{project}/regions/{region}/subnetworks/{inputs.get('name', name)}"
        cidr = inputs["ipCidrRange"]
        self._subnets[path] = self._subnets[f"{COMPUTE_API}/{path}"] = cidr
        gateway = str(next(ipaddress.ip_network(cidr).hosts()))
        return path, {
            "project": project,
            "region": region,
            "selfLink": f"{COMPUTE_API}/{path}",
            "gatewayAddress": gateway,
        }

    def _router(self, name: str, inputs: Mapping[str, Any]) -> tuple[str, State]:
        project, region = self._scoped(inputs)
        path = f"projects/{project}/regions/{region}/routers/{inputs.get('name', name)}"
        return path, {"project": project, "region": region, "selfLink": f"{COMPUTE_API}/{path}"}

    def _router_nat(self, name: str, inputs: Mapping[str, Any]) -> tuple[str, State]:
        project, region = self._scoped(inputs)
        return f"{project}/{region}/{inputs['router']}/{inputs.get('name', name)}", {
            "project": project,
            "region": region,
        }

    def _firewall(self, name: str, inputs: Mapping[str, Any]) -> tuple[str, State]:
        project, _ = self._scoped(inputs)
        path = f"projects/{project}/global/firewalls/{inputs.get('name', name)}"
        return path, {"project": project, "selfLink": f"{COMPUTE_API}/{path}"}

    def _instance(self, name: str, inputs: Mapping[str, Any]) -> tuple[str, State]:
        project, _ = self._scoped(inputs)
        vm = inputs.get("name", name)
        path = f"projects/{project}/zones/{inputs['zone']}/instances/{vm}"
        nics = [
            {**nic, "name": f"nic{i}", "networkIp": _host_address(self._subnets[nic["subnetwork"]], vm)}
            for i, nic in enumerate(inputs.get("networkInterfaces", []))
        ]
        return path, {
            "project": project,
            "selfLink": f"{COMPUTE_API}/{path}",
            "instanceId": str(_stable_number(path)),
            "networkInterfaces": nics,
            "currentStatus": "RUNNING",
        }

    def _disk(self, name: str, inputs: Mapping[str, Any]) -> tuple[str, State]:
        project, _ = self._scoped(inputs)
        path = f"projects/{project}/zones/{inputs['zone']}/disks/{inputs.get('name', name)}"
        return path, {"project": project, "selfLink": f"{COMPUTE_API}/{path}"}

    def _account(self, name: str, inputs: Mapping[str, Any]) -> tuple[str, State]:
        project, _ = self._scoped(inputs)
        email = f"{inputs['accountId']}@{project}.iam.gserviceaccount.com"
        path = f"projects/{project}/serviceAccounts/{email}"
        return path, {
            "project": project,
            "email": email,
            "member": f"serviceAccount:{email}",
            "name": path,
            "uniqueId": str(_stable_number(email)),
        }

    def _bucket(self, name: str, inputs: Mapping[str, Any]) -> tuple[str, State]:
        project, _ = self._scoped(inputs)
        bucket = inputs["name"]
        return bucket, {
            "project": project,
            "url": f"gs://{bucket}",
            "selfLink": f"https://www.googleapis.com/storage/v1/b/{bucket}",
        }

    def _dataset(self, name: str, inputs: Mapping[str, Any]) -> tuple[str, State]:
        project, _ = self._scoped(inputs)
        path = f"projects/{project}/datasets/{inputs['datasetId']}"
        return path, {"project": project, "selfLink": f"https://bigquery.googleapis.com/bigquery/v2/{path}"}

    def _table(self, name: str, inputs: Mapping[str, Any]) -> tuple[str, State]:
        project, _ = self._scoped(inputs)
        path = f"projects/{project}/datasets/{inputs['datasetId']}/tables/{inputs['tableId']}"
        return path, {"project": project, "selfLink": f"https://bigquery.googleapis.com/bigquery/v2/{path}"}

    def _iam_member(self, name: str, inputs: Mapping[str, Any]) -> tuple[str, State]:
        scope = inputs.get("bucket") or inputs.get("datasetId") or inputs.get("project") or self._project
        return f"{scope}/{inputs['role']}/{inputs['member']}", {"etag": "BwYmock="}

    def _account_iam_member(self, name: str, inputs: Mapping[str, Any]) -> tuple[str, State]:
        return f"{inputs['serviceAccountId']}/{inputs['role']}/{inputs['member']}", {"etag": "BwYmock="}

    def _custom_role(self, name: str, inputs: Mapping[str, Any]) -> tuple[str, State]:
        """A project custom role: its name is `projects/<project>/roles/<roleId>`, what a grant names it by."""
        project, _ = self._scoped(inputs)
        role = f"projects/{project}/roles/{inputs['roleId']}"
        return role, {"name": role, "project": project}

    def _service_identity(self, name: str, inputs: Mapping[str, Any]) -> tuple[str, State]:
        """A Google service agent: `service-<project number>@gcp-sa-<api>.iam.gserviceaccount.com`."""
        project, _ = self._scoped(inputs)
        api = inputs["service"].split(".", 1)[0]
        email = f"service-{project_number(project)}@gcp-sa-{api}.iam.gserviceaccount.com"
        return f"projects/{project}/services/{inputs['service']}", {
            "project": project,
            "email": email,
            "member": f"serviceAccount:{email}",
        }

    def _transfer_config(self, name: str, inputs: Mapping[str, Any]) -> tuple[str, State]:
        project, region = self._scoped(inputs)
        location = inputs.get("location") or region
        path = f"projects/{project_number(project)}/locations/{location}/transferConfigs/{_stable_number(name):08x}"
        return path, {"project": project, "name": path}

    def _service(self, name: str, inputs: Mapping[str, Any]) -> tuple[str, State]:
        project, _ = self._scoped(inputs)
        return f"{project}/{inputs['service']}", {"project": project}

    def _global(self, kind: str) -> Callable[[str, Mapping[str, Any]], tuple[str, State]]:
        """A global Compute Engine resource of `kind` (healthChecks, ...): id and self link from its name."""

        def computed(name: str, inputs: Mapping[str, Any]) -> tuple[str, State]:
            project, _ = self._scoped(inputs)
            path = f"projects/{project}/global/{kind}/{inputs.get('name', name)}"
            return path, {"project": project, "selfLink": f"{COMPUTE_API}/{path}"}

        return computed

    def _instance_template(self, name: str, inputs: Mapping[str, Any]) -> tuple[str, State]:
        """GCE names a template `<namePrefix><suffix>`; the suffix here is stable per logical name."""
        project, _ = self._scoped(inputs)
        template = inputs.get("name") or f"{inputs.get('namePrefix', name)}{_stable_number(name):08x}"
        path = f"projects/{project}/global/instanceTemplates/{template}"
        return path, {"project": project, "name": template, "selfLink": f"{COMPUTE_API}/{path}",
                      "selfLinkUnique": f"{COMPUTE_API}/{path}?uniqueId={_stable_number(path)}"}

    def _region_group(self, name: str, inputs: Mapping[str, Any]) -> tuple[str, State]:
        project, region = self._scoped(inputs)
        group = inputs.get("name", name)
        path = f"projects/{project}/regions/{region}/instanceGroupManagers/{group}"
        return path, {"project": project, "region": region, "selfLink": f"{COMPUTE_API}/{path}",
                      "instanceGroup": f"{COMPUTE_API}/projects/{project}/regions/{region}/instanceGroups/{group}"}

    def _region_autoscaler(self, name: str, inputs: Mapping[str, Any]) -> tuple[str, State]:
        project, region = self._scoped(inputs)
        path = f"projects/{project}/regions/{region}/autoscalers/{inputs.get('name', name)}"
        return path, {"project": project, "region": region, "selfLink": f"{COMPUTE_API}/{path}"}

    def _pubsub(self, kind: str) -> Callable[[str, Mapping[str, Any]], tuple[str, State]]:
        """A Pub/Sub topic or subscription: id `projects/<p>/<kind>/<name>`, as the provider gives it."""

        def computed(name: str, inputs: Mapping[str, Any]) -> tuple[str, State]:
            project, _ = self._scoped(inputs)
            return f"projects/{project}/{kind}/{inputs.get('name', name)}", {"project": project}

        return computed

    def _pubsub_iam_member(self, name: str, inputs: Mapping[str, Any]) -> tuple[str, State]:
        scope = inputs.get("topic") or inputs.get("subscription")
        return f"{scope}/{inputs['role']}/{inputs['member']}", {"etag": "BwYmock="}

    def _notification(self, name: str, inputs: Mapping[str, Any]) -> tuple[str, State]:
        number = _stable_number(name) % 1000
        return f"{inputs['bucket']}/notificationConfigs/{number}", {
            "notificationId": str(number),
            "selfLink": f"https://www.googleapis.com/storage/v1/b/{inputs['bucket']}/notificationConfigs/{number}",
        }

    def _provider(self, name: str, inputs: Mapping[str, Any]) -> tuple[str, State]:
        return "offline-plan", {}


def _by_name(mocks: CloudMocks, name: str, inputs: Mapping[str, Any]) -> tuple[str, State]:
    """Any type without a rule below: id = logical name, no computed state."""
    return name, {}


_COMPUTED: dict[str, Callable[[CloudMocks, str, Mapping[str, Any]], tuple[str, State]]] = {
    PROVIDER: CloudMocks._provider,
    "gcp:projects/service:Service": CloudMocks._service,
    "gcp:compute/network:Network": CloudMocks._network,
    "gcp:compute/subnetwork:Subnetwork": CloudMocks._subnetwork,
    "gcp:compute/router:Router": CloudMocks._router,
    "gcp:compute/routerNat:RouterNat": CloudMocks._router_nat,
    "gcp:compute/firewall:Firewall": CloudMocks._firewall,
    "gcp:compute/instance:Instance": CloudMocks._instance,
    "gcp:compute/disk:Disk": CloudMocks._disk,
    "gcp:serviceaccount/account:Account": CloudMocks._account,
    "gcp:storage/bucket:Bucket": CloudMocks._bucket,
    "gcp:storage/bucketIAMMember:BucketIAMMember": CloudMocks._iam_member,
    "gcp:bigquery/dataset:Dataset": CloudMocks._dataset,
    "gcp:bigquery/table:Table": CloudMocks._table,
    "gcp:bigquery/datasetIamMember:DatasetIamMember": CloudMocks._iam_member,
    "gcp:projects/iAMCustomRole:IAMCustomRole": CloudMocks._custom_role,
    "gcp:projects/iAMMember:IAMMember": CloudMocks._iam_member,
    "gcp:serviceaccount/iAMMember:IAMMember": CloudMocks._account_iam_member,
    "gcp:projects/serviceIdentity:ServiceIdentity": CloudMocks._service_identity,
    "gcp:bigquery/dataTransferConfig:DataTransferConfig": CloudMocks._transfer_config,
    "gcp:compute/instanceTemplate:InstanceTemplate": CloudMocks._instance_template,
    "gcp:compute/healthCheck:HealthCheck": lambda m, n, i: m._global("healthChecks")(n, i),
    "gcp:compute/regionInstanceGroupManager:RegionInstanceGroupManager": CloudMocks._region_group,
    "gcp:compute/regionAutoscaler:RegionAutoscaler": CloudMocks._region_autoscaler,
    "gcp:pubsub/topic:Topic": lambda m, n, i: m._pubsub("topics")(n, i),
    "gcp:pubsub/subscription:Subscription": lambda m, n, i: m._pubsub("subscriptions")(n, i),
    "gcp:pubsub/topicIAMMember:TopicIAMMember": CloudMocks._pubsub_iam_member,
    "gcp:pubsub/subscriptionIAMMember:SubscriptionIAMMember": CloudMocks._pubsub_iam_member,
    "gcp:storage/notification:Notification": CloudMocks._notification,
}


def _stable_number(text: str) -> int:
    return zlib.crc32(text.encode())


def project_number(project: str) -> int:
    """A project's number, stable per project id (12 digits, as Google Cloud's are)."""
    return 100000000000 + _stable_number(project)


def _host_address(cidr: str, vm: str) -> str:
    """A VM's internal IP: `cn-dev-gpu-3` (or `cn-dev-gpu-3-<revision>`) gets the 4th usable address;
    other names a stable hash.

    GCE keeps the network address, the gateway (first host) and the last two addresses of a subnet.
    """
    net = ipaddress.ip_network(cidr)
    usable = net.num_addresses - 4
    match = re.search(r"-(\d+)(?:-[0-9a-f]{4})?$", vm)
    index = int(match.group(1)) if match else _stable_number(vm)
    return str(net.network_address + 2 + index % usable)
