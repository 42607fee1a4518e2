"""The private network the GPU VMs live in."""

from __future__ import annotations

from collections.abc import Sequence

import pulumi
from pulumi_gcp import compute

from cnctl.cloud.base import Component, Naming
from cnctl.config.schema import InferencePorts
from cnctl.config.schema import Network as NetworkConfig


class Network(Component):
    """Ensures a custom VPC with one regional subnet, egress through Cloud NAT, and a closed firewall.

    VMs get no public address (see compute), so they reach package mirrors, NGC and Google APIs
    through Cloud NAT and Private Google Access. Ingress is two rules on the VMs' network tag:
    SSH from Identity-Aware Proxy's range only, and the inference ports from the stack's explicit
    allow-list only (no rule at all when the list is empty). Everything else hits the VPC's
    implied deny-all ingress.
    """

    def __init__(
        self,
        names: Naming,
        region: str,
        network: NetworkConfig,
        ports: InferencePorts,
        iap_range: str,
        opts: pulumi.ResourceOptions | None = None,
        requires: Sequence[pulumi.Resource] = (),
    ) -> None:
        super().__init__("Network", names("network"), opts, requires)
        # The tag the firewall rules target: only VMs that carry it are reachable at all.
        self.vm_tag = names("gpu-vm")

        self.vpc = compute.Network(
            names("vpc"),
            compute.NetworkArgs(
                name=names("vpc"),
                auto_create_subnetworks=False,  # one subnet, in our region, with our range
                description=f"CircularNet {names.environment}: GPU inference VMs",
            ),
            opts=self.child(),
        )
        self.subnet = compute.Subnetwork(
            names("subnet"),
            compute.SubnetworkArgs(
                name=names("subnet"),
                network=self.vpc.id,
                region=region,
                ip_cidr_range=network.subnet_cidr,
                # VMs without external IPs still reach Cloud Storage and BigQuery.
                private_ip_google_access=True,
                # VPC flow logs: who talked to the VMs is recorded (guardrail production-logs-traffic).
                log_config=compute.SubnetworkLogConfigArgs(
                    aggregation_interval="INTERVAL_5_SEC", flow_sampling=0.5, metadata="INCLUDE_ALL_METADATA"
                ),
            ),
            opts=self.child(),
        )
        router = compute.Router(
            names("router"),
            compute.RouterArgs(name=names("router"), network=self.vpc.id, region=region),
            opts=self.child(),
        )
        compute.RouterNat(
            names("nat"),
            compute.RouterNatArgs(
                name=names("nat"),
                router=router.name,
                region=region,
                nat_ip_allocate_option="AUTO_ONLY",
                source_subnetwork_ip_ranges_to_nat="LIST_OF_SUBNETWORKS",
                subnetworks=[
                    compute.RouterNatSubnetworkArgs(name=self.subnet.id, source_ip_ranges_to_nats=["ALL_IP_RANGES"])
                ],
                log_config=compute.RouterNatLogConfigArgs(enable=True, filter="ERRORS_ONLY"),
            ),
            opts=self.child(),
        )

        self.firewalls = [self._ingress(names("allow-iap-ssh"), ["22"], [iap_range], "SSH through IAP only")]
        if network.inference_allowed_cidrs:
            inference_ports = [str(port) for port in (ports.http, ports.grpc, ports.metrics)]
            self.firewalls.append(
                self._ingress(
                    names("allow-inference"),
                    inference_ports,
                    list(network.inference_allowed_cidrs),
                    "Triton HTTP, gRPC and metrics from the stack's allow-list",
                )
            )

        self.register_outputs(
            {"vpc": self.vpc.name, "subnet": self.subnet.name, "firewalls": [fw.name for fw in self.firewalls]}
        )

    def _ingress(self, name: str, ports: list[str], sources: list[str], why: str) -> compute.Firewall:
        return compute.Firewall(
            name,
            compute.FirewallArgs(
                name=name,
                network=self.vpc.id,
                direction="INGRESS",
                allows=[compute.FirewallAllowArgs(protocol="tcp", ports=ports)],
                source_ranges=sources,
                target_tags=[self.vm_tag],
                description=why,
                # Every allowed connection is logged (guardrail production-logs-traffic).
                log_config=compute.FirewallLogConfigArgs(metadata="INCLUDE_ALL_METADATA"),
            ),
            opts=self.child(),
        )
