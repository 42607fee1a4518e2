"""The monitoring layer's pure builders (deploy/monitoring.py runs them; so do the collection's filters).

    gpu_tool("jetson")                         -> "tegrastats"
    gpu_tool("server")                         -> "nvidia-smi"
    listen_address("10.20.0.5", 9100)          -> "10.20.0.5:9100"
    listen_address("::1", 9100)                -> "[::1]:9100"
"""

from __future__ import annotations

from typing import Any

from cnhost import triton_endpoint  # the one `address:port` builder (the collection carries it)

from . import scripts

# The tool whose samples cnhost/gpu_metrics.py turns into metrics, by cn_platform: NVIDIA's own on each.
GPU_TOOLS = {"jetson": "tegrastats", "server": "nvidia-smi"}


def gpu_tool(platform: str) -> str:
    """The GPU tool a host of `platform` has (the driver's nvidia-smi, or L4T's tegrastats)."""
    if platform not in GPU_TOOLS:
        raise ValueError(f"cn_platform {platform!r} is neither jetson nor server")
    return GPU_TOOLS[platform]


def listen_address(address: str, port: int) -> str:
    """node-exporter's `--web.listen-address`: the address Triton binds (an IPv6 one in brackets) and the port."""
    return triton_endpoint.host_port(address, port)


def exporter_vars(wants: dict[str, Any], data: dict[str, Any], address: str) -> dict[str, Any]:
    """templates/systemd/prometheus-node-exporter.conf.j2's variables: what node-exporter runs with."""
    return {"exporter_binary": data["monitoring_exporter_binary"],
            "listen": listen_address(address, wants["cn_monitoring_exporter_port"]),
            "textfile_dir": data["monitoring_textfile_dir"]}


def gpu_unit_vars(wants: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """templates/systemd/circularnet-gpu-metrics.service.j2's variables: the collector, its tool and its file."""
    return {"gpu_programs": scripts.program_home(data["monitoring_gpu_helper"]),
            "gpu_tool": gpu_tool(wants["cn_platform"]),
            "gpu_textfile": f"{data['monitoring_textfile_dir']}/{data['monitoring_gpu_textfile']}",
            "textfile_dir": data["monitoring_textfile_dir"],
            "gpu_interval": data["monitoring_gpu_interval"]}
