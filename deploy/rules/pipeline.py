"""The pipeline layer's pure builders (deploy/pipeline.py runs them; so do the collection's filters)."""

from __future__ import annotations

import os
import shlex
import stat
from pathlib import Path
from typing import Any

from cnhost import triton_endpoint  # a host program: the collection carries it (cnctl/collection.py)

from .inference import pip_install_command


def short(sha256: str) -> str:
    """The first 16 hex digits of a pin: names a client directory or a footage file (one per pin)."""
    return sha256[:16]


def client_dir(data: dict[str, Any], wants: dict[str, Any]) -> str:
    return f"{data['pipeline_root']}/client/{short(wants['cn_pipeline_client_sha256'])}"


def client_archive(data: dict[str, Any], wants: dict[str, Any]) -> str:
    return f"{data['pipeline_root']}/archives/client-{short(wants['cn_pipeline_client_sha256'])}.zip"


def replay_archive(data: dict[str, Any], camera: dict[str, Any] | None) -> str | None:
    if not camera or camera.get("source") != "replay":
        return None
    return f"{data['pipeline_root']}/archives/replay-{short(camera['replay_sha256'])}.zip"


def input_of(wants: dict[str, Any]) -> str:
    """camera (edge), spool or bucket: where this host's frames come from."""
    return wants.get("cn_pipeline_input") or ("camera" if wants.get("cn_camera") else "spool")


def wheels(wants: dict[str, Any]) -> list[dict[str, Any]]:
    """Every wheel of the venv: the uploader's, the bucket worker's where the input is the bucket, then the
    client's (each pinned by sha256)."""
    worker = (wants.get("cn_worker_wheels") or []) if input_of(wants) == "bucket" else []
    return [*wants["cn_uploader_wheels"], *worker, *(wants.get("cn_pipeline_client_wheels") or [])]


def prebuilt(wants: dict[str, Any]) -> list[dict[str, Any]]:
    """The venv's wheels (the requirements file): every pin but the source archives."""
    return [w for w in wheels(wants) if not w.get("sdist")]


def sources(wants: dict[str, Any]) -> list[dict[str, Any]]:
    """The pinned source archives (pure-Python packages PyPI has no usable wheel of: trackpy), built after."""
    return [w for w in wheels(wants) if w.get("sdist")]


def install_command(venv: str, data: dict[str, Any], wants: dict[str, Any]) -> str:
    """The venv's pins installed: the wheels, then (when the client pins any) the source archives, built with
    the setuptools and wheel the first step installed."""
    first = pip_install_command(venv, data["pipeline_requirements"], wants["cn_python_index_url"])
    if not sources(wants):
        return first
    then = pip_install_command(venv, data["pipeline_sources_requirements"], wants["cn_python_index_url"], build=True)
    return f"{first} && {then}"


def apt_packages(camera: dict[str, Any] | None) -> list[str]:
    """python3-venv for the venv; ffmpeg where a live camera (v4l2, rtsp) is read through it."""
    return ["python3-venv"] + (["ffmpeg"] if camera and camera["source"] in ("v4l2", "rtsp") else [])


def units(data: dict[str, Any], camera: dict[str, Any] | None, pipeline_input: str | None = None) -> list[str]:
    """The layer's units that run: capture on edge devices only, the bucket worker in place of the pipeline's
    timer where the input is the bucket, the uploader everywhere."""
    runner = (f"{data['pipeline_worker_unit']}.service" if pipeline_input == "bucket"
              else f"{data['pipeline_run_unit']}.timer")
    return ([f"{data['pipeline_capture_unit']}.service"] if camera else []) + [runner, f"{data['pipeline_upload_unit']}.service"]


def settings(wants: dict[str, Any], data: dict[str, Any], address: str) -> dict[str, Any]:
    """/etc/circularnet/pipeline.json for this host: what capture.py, pipeline_run.py and uploader.py read."""
    camera, root = wants.get("cn_camera"), data["pipeline_data"]
    bucket = input_of(wants) == "bucket"
    return {
        "host": wants["cn_host"],
        "generation": wants["cn_pipeline_generation"],
        "input": input_of(wants),
        "worker": None if not bucket else {
            "subscription": wants["cn_pipeline_subscription"], "max_messages": wants["cn_pipeline_max_messages"],
            "max_lease_seconds": data["pipeline_worker_max_lease_seconds"],
            "lease_extension_seconds": data["pipeline_worker_lease_extension_seconds"],
            "batch_seconds": data["pipeline_worker_batch_seconds"],
            "stop_seconds": data["pipeline_worker_stop_seconds"]},
        "spool": camera["spool"] if camera else f"{root}/frames",
        "work": f"{root}/work",
        "queue": f"{root}/queue",
        "state": f"{root}/state",
        "capture": None if not camera else {
            "source": camera["source"], "device": camera["device"], "url": camera["url"],
            "replay_archive": replay_archive(data, camera), "replay_loop": camera["replay_loop"], "fps": camera["fps"],
            "prefix": camera["prefix"],
            "spool_budget_mib": camera["spool_budget_mib"]},
        "client": {"python": f"{data['pipeline_venv']}/bin/python", "dir": client_dir(data, wants),
                   "entry": wants["cn_pipeline_client_entry"], "flags": list(wants["cn_pipeline_flags"]),
                   "contract": wants["cn_pipeline_client_contract"], "columns": wants["cn_pipeline_columns"]},
        "triton_url": triton_endpoint.http_url(address, wants["cn_inference_http_port"]),
        "triton_grpc": triton_endpoint.grpc_target(address, wants["cn_inference_grpc_port"]),  # upstream's client
        "batch_frames": wants["cn_pipeline_batch_frames"],
        "upload_images": wants["cn_pipeline_upload_images"],
        "max_attempts": data["pipeline_max_attempts"],
        "client_timeout": data["pipeline_client_timeout"],
        "storage": {"kind": wants["cn_storage_kind"], "endpoint": wants["cn_storage_endpoint"],
                    "project": wants["cn_storage_project"],
                    "buckets": {"results": wants["cn_storage_results_bucket"], "images": wants["cn_storage_images_bucket"]},
                    "credentials": data["pipeline_credentials"] if wants.get("cn_storage_credentials_file") else None},
        "queue_budget_mib": wants["cn_pipeline_queue_budget_mib"],
        "retry": {"min_seconds": data["pipeline_retry_min_seconds"], "max_seconds": data["pipeline_retry_max_seconds"]},
        "poll_seconds": data["pipeline_poll_seconds"],
    }


# The sandboxing every pipeline unit shares (each unit adds what it may write and reach). Its exposure under
# `systemd-analyze security` stays at or under 3.0; the e2e test measures it on a host.
HARDENING = (
    "NoNewPrivileges=yes", "CapabilityBoundingSet=", "AmbientCapabilities=", "ProtectSystem=strict", "ProtectHome=yes",
    "PrivateTmp=yes", "PrivateMounts=yes", "PrivateUsers=yes", "ProtectKernelTunables=yes", "ProtectKernelModules=yes",
    "ProtectKernelLogs=yes", "ProtectControlGroups=yes", "ProtectClock=yes", "ProtectHostname=yes",
    "ProtectProc=invisible", "ProcSubset=pid", "RestrictNamespaces=yes", "RestrictRealtime=yes",
    "RestrictSUIDSGID=yes", "RemoveIPC=yes", "KeyringMode=private", "LockPersonality=yes", "MemoryDenyWriteExecute=yes",
    "SystemCallArchitectures=native", "SystemCallFilter=@system-service", "SystemCallFilter=~@privileged @resources",
    "SystemCallErrorNumber=EPERM",
)


# After its stop budget the bucket worker gives back what it holds and exits: within this, else systemd kills it.
WORKER_EXIT_SECONDS = 5


def write_paths(data_dir: str, spool: str) -> list[str]:
    """The directories the services may write: the data directory, and the spool when the camera puts it elsewhere."""
    inside = spool == data_dir or spool.startswith(f"{data_dir}/")
    return [data_dir] if inside else [data_dir, spool]


def unit_variables(wants: dict[str, Any], data: dict[str, Any], address: str) -> dict[str, Any]:
    """What templates/systemd/circularnet-{capture,pipeline,upload}.* take, for this host."""
    config = settings(wants, data, address)
    camera = config["capture"]
    return {
        "user": data["pipeline_user"], "helper_dir": data["pipeline_helper_dir"], "settings": data["pipeline_settings"],
        "python": f"{data['pipeline_venv']}/bin/python", "write_paths": write_paths(data["pipeline_data"], config["spool"]),
        "source": camera["source"] if camera else None, "device": camera["device"] if camera else None,
        "triton_unit": "circularnet-triton.service", "bind_address": address,
        "interval": wants["cn_pipeline_interval"], "client_timeout": data["pipeline_client_timeout"],
        "run_unit": data["pipeline_run_unit"],
        # the bucket worker's TimeoutStopSec: its stop budget for the batch in hand, and a margin to exit
        "stop_timeout": data["pipeline_worker_stop_seconds"] + WORKER_EXIT_SECONDS,
        # A V4L2 camera is reached through the host's `video` group, which a private user namespace would not map.
        "hardening": [line for line in HARDENING if not (camera and camera["source"] == "v4l2" and line == "PrivateUsers=yes")],
    }


def credentials_found(path: str | None) -> dict[str, Any] | None:
    """The deploying machine's credentials file as checks.pipeline_problem reads it (never its content)."""
    if not path:
        return None
    try:
        mode = os.stat(Path(path).expanduser()).st_mode
    except OSError:
        return {"exists": False, "mode": 0}
    return {"exists": stat.S_ISREG(mode), "mode": stat.S_IMODE(mode)}


def unpack_command(archive: str, dest: str) -> str:
    """The archive into `dest` through a temporary directory beside it (a crash leaves no half a client)."""
    tmp = shlex.quote(f"{dest}.cnctl-unpack")
    return (f"rm -rf {tmp} && python3 -m zipfile -e {shlex.quote(archive)} {tmp} && chmod -R u=rwX,go=rX {tmp} && "
            f"mv {tmp} {shlex.quote(dest)}")
