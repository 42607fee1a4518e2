"""The verify layer's pure builders and verdict (deploy/verify.py runs them; so do the collection's filters)."""

from __future__ import annotations

import json
from typing import Any

from cnhost import answer  # the one reader of a host program's answer (the collection carries it: cnctl/collection.py)

from . import scripts


def record(wants: dict[str, Any]) -> dict[str, Any]:
    """The deploy record of this host: what the deploy put in place (no time: a no-op deploy rewrites nothing)."""
    runtime = wants["cn_inference_runtime"]
    return {
        "host": wants["cn_host"],
        "stack": wants["cn_stack"],
        "model": {"name": wants["cn_model_name"], "version": wants["cn_model_version"],
                  "action": wants.get("cn_model_action") or "pinned"},
        "runtime": runtime,
        "image": wants["cn_triton_image"] if runtime == "container" else None,
    }


def settings(wants: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """The script's settings on this host (health_report.DEFAULTS keys): the role's paths and thresholds, the
    host's model and Triton address."""
    return {
        "report": data["verify_report"],
        "platform_record": data["verify_platform_record"],
        "deploy_record": data["verify_deploy_record"],
        "model_serve": data["verify_model_serve"],
        "repository": data["verify_model_repository"],
        "model_name": wants["cn_model_name"],
        "bind_address": wants["cn_inference_bind_address"],
        "bind_interface": wants.get("cn_inference_bind_interface") or "",
        "http_port": wants["cn_inference_http_port"],
        "triton_unit": data["verify_triton_unit"],
        "min_free_percent": data["verify_min_free_percent"],
        "min_free_mib": data["verify_min_free_mib"],
        "timeout": data["verify_timeout"],
        "pipeline_settings": data["verify_pipeline_settings"],
        "pipeline_stale_seconds": data["verify_pipeline_stale_seconds"],
    }


def check_command(helper: str, config: str) -> str:
    """The read-only report as a command that never fails: its JSON line, or a report saying the script is
    not on the host yet (a fresh host in a dry run)."""
    absent = json.dumps({"healthy": False, "problems": [f"{helper} is not on the host yet: run the deploy"]})
    return scripts.unless_absent(helper, scripts.program(helper, "--config", config, "--read-only"), absent)


def report_of(lines: list[str]) -> dict[str, Any]:
    """The report in the script's output (its last JSON line with `healthy`), else an unhealthy one saying so."""
    found = answer(lines, "healthy")
    if found is not None:
        return found
    tail = " | ".join(line.strip() for line in lines[-3:]) or "no output"
    return {"healthy": False, "problems": [f"the health report printed no report ({tail})"]}


def verdict(report: dict[str, Any], name: str) -> str:
    """"" for a healthy report, else one line naming the host and every problem."""
    if report.get("healthy"):
        return ""
    return f"{name}: unhealthy: " + "; ".join(report.get("problems") or ["no problem named"])
