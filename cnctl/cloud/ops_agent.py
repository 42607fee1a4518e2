"""Google's Ops Agent on the cloud VMs: its configuration, and the names Cloud Monitoring knows its metrics by.

The GCE startup script (templates/gce-startup.sh.j2, cnctl/cloud/startup.py) installs the agent on every cloud VM,
fixed GPU VMs and group workers alike, from Google's signed apt repository (catalog gcp.yaml `ops_agent`), and
writes `CONFIG_PATH` from `agent_config`: the agent's built-in logging (syslog) and host metrics stay as they are,
and one `prometheus` receiver scrapes the host's node-exporter, keeping only the `cnctl_*` metrics of the verify
layer's health report (docs/monitoring.md). Cloud Monitoring stores them as `prometheus.googleapis.com/<name>/<kind>`
on the `prometheus_target` resource: `job` is the stack's scrape job (`job_name`), `namespace` the VM
(`<instance id>/<name>`), `location` its zone, `cluster` always `__gce__`.

GPU metrics need nothing here: on a VM with the NVIDIA driver, the agent (2.38.0, or 2.41.0 and later) reads NVML
itself and writes `agent.googleapis.com/gpu/*` (utilization, memory, per-process use). Its DCGM receiver (profiling
metrics, needing NVIDIA's DCGM 3.1-3.3.9 as a privileged service on every VM) is not configured: docs/monitoring.md
says why.

Nothing of the stack is text in the config but the address node-exporter listens on, which is the stack's
inference bind address (`cn_inference_bind_address`; node-exporter binds where Triton does), or, with
`inference.bindInterface`, `ADDRESS_PLACEHOLDER`, which the script replaces at boot with that interface's IPv4
address (checked to be one).
"""

from __future__ import annotations

from typing import Any

import yaml

from cnhost import triton_endpoint

CONFIG_PATH = "/etc/google-cloud-ops-agent/config.yaml"
SERVICE = "google-cloud-ops-agent"
# the scrape job is `cn-<env>-node` (`job_name`): the job label of every series, so policies take one stack's only
RECEIVER = "circularnet_node"
JOB_SUFFIX = "node"
SCRAPE_INTERVAL = "60s"
KEPT = "cnctl_.*"  # node-exporter's own node_* series stay out: the agent's host metrics already cover the VM
# the VM's address on `inference.bindInterface`, known at boot only (letters, digits, `_` and `@`: a sed pattern)
ADDRESS_PLACEHOLDER = "@CNCTL_NODE_EXPORTER_ADDRESS@"

PROMETHEUS = "prometheus.googleapis.com"
PROMETHEUS_RESOURCE = "prometheus_target"
GPU_UTILIZATION = "agent.googleapis.com/gpu/utilization"


def prometheus_metric(name: str, kind: str = "gauge") -> str:
    """The Cloud Monitoring type of a scraped Prometheus metric: `cnctl_health_healthy` -> its `/gauge` type."""
    return f"{PROMETHEUS}/{name}/{kind}"


HEALTHY = prometheus_metric("cnctl_health_healthy")


def job_name(environment: str) -> str:
    """The scrape job of a stack's VMs, named like its resources (cnctl.cloud.base.Naming)."""
    return f"cn-{environment}-{JOB_SUFFIX}"


def scrape_target(bind_address: str, bind_interface: str | None, port: int) -> str:
    """`host:port` of node-exporter (the monitoring layer's, on `port`: `monitoring.nodeExporterPort`) as the agent on
    the same VM reaches it: the bind address (loopback of its family
    for every address, IPv6 in brackets: cnhost/triton_endpoint.py), or the interface's address filled in at boot."""
    if bind_interface:
        return f"{ADDRESS_PLACEHOLDER}:{int(port)}"
    return triton_endpoint.host_port(triton_endpoint.reach(bind_address), port)


def agent_config(job: str, target: str) -> str:
    """/etc/google-cloud-ops-agent/config.yaml: the built-in pipelines, plus node-exporter's `cnctl_*` metrics."""
    config: dict[str, Any] = {
        "metrics": {
            "receivers": {
                RECEIVER: {
                    "type": "prometheus",
                    "config": {
                        "scrape_configs": [{
                            "job_name": job,
                            "scrape_interval": SCRAPE_INTERVAL,
                            "static_configs": [{"targets": [target]}],
                            "metric_relabel_configs": [
                                {"source_labels": ["__name__"], "regex": KEPT, "action": "keep"},
                            ],
                        }],
                    },
                },
            },
            "service": {"pipelines": {RECEIVER: {"receivers": [RECEIVER]}}},
        },
    }
    header = ("# Written by the GCE startup script of a CircularNet stack (cnctl/cloud/ops_agent.py), again at a boot "
              "that finds it changed.\n# The agent's built-in logging and host metrics apply as well; GPU metrics "
              "come from NVML on their own.\n")
    return header + yaml.safe_dump(config, sort_keys=False, default_flow_style=False)
