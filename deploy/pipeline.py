"""The pipeline layer: from the belt camera to the stack's bucket, as three hardened services of one user.

1. Refused before anything changes when the host cannot run the stack's pipeline (deploy/checks.py
   `pipeline_problem`: no pinned client archive or requirements, a Python the pinned wheels do not fit, a
   credentials file missing or readable by others on the deploying machine);
2. the service user `circularnet-pipeline` (system, no login) and its data directory: frame spool, batches at
   work, upload queue (0750, the user's) and state (0755: the health report reads it);
3. the layer's scripts (cnhost/capture.py, pipeline_run.py, uploader.py: one copy for both engines), the
   client archive and, for a replay camera, the footage archive, each fetched once and checked against its
   sha256 before use; the client unpacked into a directory named by its sha256;
4. the venv: the uploader's wheels (google-cloud-storage, boto3, every dependency) and the client's, with
   `pip --require-hashes` from the stack's Python index;
5. the storage credentials (storage.credentialsFile) as a 0600 file of the service user, else none;
   the settings file every script reads (templates/pipeline/pipeline.json.j2);
6. the units (templates/systemd/circularnet-{capture,pipeline,upload,worker}.*): capture on edge devices only,
   the pipeline's timer where frames come from a spool, the bucket worker (cnhost/bucket_worker.py, its wheels
   added to the venv) in its place where they come from the images bucket (`pipeline.input: bucket`), and the
   uploader, enabled and running; a service restarted only when something under it changed and it ran before.

roles/pipeline is the same layer for Ansible.
"""

from __future__ import annotations

import os
import shlex
import stat
from pathlib import Path
from typing import Any

from pyinfra import host
from pyinfra.api import deploy, operation
from pyinfra.facts.files import File, Sha256File
from pyinfra.facts.systemd import SystemdStatus
from pyinfra.operations import apt, files, server, systemd

from cnctl.paths import TEMPLATES_DIR
from cnhost import bucket_worker, capture, client_adapter, pipeline_run, triton_endpoint, uploader
from deploy import checks
from deploy.facts import HostPython, InterfaceAddress, VenvPackages
from deploy.inference import pip_install_command
from deploy.steps import after_change, index_refreshed, refused, role_data, template, wishes

SCRIPTS = {"capture.py": capture.__file__, "pipeline_run.py": pipeline_run.__file__, "uploader.py": uploader.__file__,
           "bucket_worker.py": bucket_worker.__file__, "client_adapter.py": client_adapter.__file__}
FETCH_TIMEOUT_DEFAULT = 600


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
            "batch_seconds": data["pipeline_worker_batch_seconds"]},
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
        # the bucket worker finishes the batch under way on SIGTERM: the client's time, and some to settle
        "stop_seconds": data["pipeline_client_timeout"] + 30,
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


# Fetched with the host's python3 (hosts have no curl or wget), verified before it takes the final name.
_FETCH = ("import hashlib, shutil, sys, urllib.request\n"
          "with urllib.request.urlopen(sys.argv[1], timeout=60) as r, open(sys.argv[2], 'wb') as f:\n"
          "    shutil.copyfileobj(r, f)\n"
          "digest = hashlib.sha256(open(sys.argv[2], 'rb').read()).hexdigest()\n"
          "sys.exit(0 if digest == sys.argv[3] else f'{sys.argv[1]}: sha256 {digest}, the stack pins {sys.argv[3]}')")


@operation(is_idempotent=True)
def archive_fetched(url: str, sha256: str, dest: str, timeout: int = FETCH_TIMEOUT_DEFAULT):
    """Ensure `dest` holds the archive pinned by `sha256` (fetched from `url` once, verified before it is
    renamed into place), root-owned 0644."""
    if host.get_fact(Sha256File, path=dest) == sha256:
        return
    partial = f"{dest}.cnctl-partial"
    yield (f"timeout {int(timeout)} python3 -c {shlex.quote(_FETCH)} {shlex.quote(url)} {shlex.quote(partial)} "
           f"{shlex.quote(sha256)} && install -m 644 -o root -g root {shlex.quote(partial)} {shlex.quote(dest)}; "
           f"status=$?; rm -f {shlex.quote(partial)}; exit $status")


def unpack_command(archive: str, dest: str) -> str:
    """The archive into `dest` through a temporary directory beside it (a crash leaves no half a client)."""
    tmp = shlex.quote(f"{dest}.cnctl-unpack")
    return (f"rm -rf {tmp} && python3 -m zipfile -e {shlex.quote(archive)} {tmp} && chmod -R u=rwX,go=rX {tmp} && "
            f"mv {tmp} {shlex.quote(dest)}")


@operation(is_idempotent=True)
def archive_unpacked(archive: str, dest: str):
    """Ensure `dest` holds the unpacked archive (a directory per pin: unpacked once)."""
    if host.get_fact(File, path=f"{dest}/.cnctl-unpacked") is None:
        yield f"rm -rf {shlex.quote(dest)} && {unpack_command(archive, dest)} && touch {shlex.quote(dest)}/.cnctl-unpacked"


@operation(is_idempotent=True)
def wheels_installed(venv: str, install: str, wanted: list[dict[str, Any]]):
    """Ensure the venv holds each pin at its version (pip checks every file against its sha256)."""
    if host.get_fact(File, path=f"{venv}/bin/pip") is None:
        yield f"python3 -m venv {shlex.quote(venv)}"
    if checks.missing_wheels(host.get_fact(VenvPackages, venv=venv), wanted):
        yield install


def _directory(name: str, path: str, mode: str, user: str = "root", group: str = "root") -> Any:
    return files.directory(name=name, path=path, present=True, mode=mode, user=user, group=group)


def _running(name: str, unit: str, changed: list[Any]) -> None:
    """`unit` enabled and running; restarted when one of `changed` changed under it while it ran."""
    ran = host.get_fact(SystemdStatus, user_mode=False, machine=None, user_name=None, services=[unit]).get(unit, False)
    systemd.service(name=f"{name} enabled and running", service=unit, running=True, enabled=True)
    after_change(name=f"{name} restarted after a change under it", changed=changed if ran else [],
                 commands=[shlex.join(["systemctl", "restart", unit])])


def role_settings() -> dict[str, Any]:
    """roles/pipeline's defaults, with the host's own pipeline_* values over them (its inventory, or `--data`):
    the precedence Ansible gives the role, so a path set for one host holds in both engines."""
    data = dict(role_data("pipeline"))
    data.update({key: value for key, value in host.data.dict().items() if key in data})
    return {key: value for key, value in data.items() if not key.endswith("_scripts_src")}


@deploy("Pipeline")
def pipeline() -> None:
    """Capture (edge), the client over the spool, the store-and-forward uploader; refused when the host cannot."""
    wants, data = wishes(), role_settings()
    interface = wants.get("cn_inference_bind_interface")
    found = {"python": host.get_fact(HostPython),
             "address": host.get_fact(InterfaceAddress, interface=interface) if interface else None,
             "credentials": credentials_found(wants.get("cn_storage_credentials_file"))}
    problem = checks.pipeline_problem(found, wants)
    if problem:
        refused(name="Pipeline: the host can run the stack's pipeline", message=problem)
        return
    address = checks.inference_address(found, wants)
    user, camera = data["pipeline_user"], wants.get("cn_camera")
    config = settings(wants, data, address)

    packages = apt_packages(camera)
    index_refreshed(name="Pipeline: package index fresh for its packages", changed=[], packages=packages,
                    timeout=data["pipeline_apt_update_timeout"])
    apt.packages(name="Pipeline: python3-venv (and ffmpeg for a live camera)", packages=packages, no_recommends=True)
    server.user(name=f"Pipeline: the service user {user}", user=user, system=True, shell="/usr/sbin/nologin",
                home=data["pipeline_data"], create_home=False, ensure_home=False, present=True)

    _directory("Pipeline: script directory", data["pipeline_helper_dir"], "755")
    scripts = [files.put(name=f"Pipeline: the layer's script (deploy/{name})", src=src,
                         dest=f"{data['pipeline_helper_dir']}/{name}", mode="755", user="root", group="root")
               for name, src in SCRIPTS.items()]
    for path in (data["pipeline_root"], f"{data['pipeline_root']}/archives", f"{data['pipeline_root']}/client"):
        _directory(f"Pipeline: {path}", path, "755")
    _directory("Pipeline: data directory", data["pipeline_data"], "750", user, user)
    for key in ("work", "queue"):
        _directory(f"Pipeline: {key} directory", config[key], "750", user, user)
    _directory("Pipeline: frame spool", config["spool"], "750", user, user)
    _directory("Pipeline: state directory (read by the health report)", config["state"], "755", user, user)

    archive_fetched(name="Pipeline: the client archive (sha256 verified)", url=wants["cn_pipeline_client_url"],
                    sha256=wants["cn_pipeline_client_sha256"], dest=client_archive(data, wants),
                    timeout=data["pipeline_fetch_timeout"])
    archive_unpacked(name="Pipeline: the client unpacked", archive=client_archive(data, wants), dest=client_dir(data, wants))
    replay = replay_archive(data, camera)
    fetched = []
    if replay and camera:
        fetched.append(archive_fetched(name="Pipeline: the replay footage (sha256 verified)", url=camera["replay_url"],
                                       sha256=camera["replay_sha256"], dest=replay, timeout=data["pipeline_fetch_timeout"]))

    requirements = template("Pipeline: the pinned wheels, with their sha256 (requirements)", "triton/requirements.txt.j2",
                            data["pipeline_requirements"], wheels=prebuilt(wants))
    built = template("Pipeline: the pinned source archives, with their sha256 (requirements)",
                     "triton/requirements.txt.j2", data["pipeline_sources_requirements"], wheels=sources(wants))
    venv = wheels_installed(name="Pipeline: the venv holds the uploader's and the client's pins (hashes required)",
                            venv=data["pipeline_venv"], install=install_command(data["pipeline_venv"], data, wants),
                            wanted=wheels(wants))

    _directory("Pipeline: credentials directory", data["pipeline_credentials"].rsplit("/", 1)[0], "750", "root", user)
    source = wants.get("cn_storage_credentials_file")
    if source:
        credentials = files.put(name="Pipeline: the uploader's credentials (0600, the service user's)",
                                src=str(Path(source).expanduser()), dest=data["pipeline_credentials"], mode="600",
                                user=user, group=user)
    else:
        credentials = files.file(name="Pipeline: no credentials file (the host's own identity)",
                                 path=data["pipeline_credentials"], present=False)
    config_file = files.template(name="Pipeline: the settings (capture, runner, uploader), the service user's to read",
                                 src=str(TEMPLATES_DIR / "pipeline/pipeline.json.j2"), dest=data["pipeline_settings"],
                                 mode="640", user="root", group=user, pipeline_config=config)

    unit_vars = unit_variables(wants, data, address)
    units = []
    if camera:
        units.append(template("Pipeline: the capture unit", "systemd/circularnet-capture.service.j2",
                              f"/etc/systemd/system/{data['pipeline_capture_unit']}.service", unit=unit_vars))
    run_service = template("Pipeline: the pipeline's service unit", "systemd/circularnet-pipeline.service.j2",
                           f"/etc/systemd/system/{data['pipeline_run_unit']}.service", unit=unit_vars)
    run_timer = template("Pipeline: the pipeline's timer unit", "systemd/circularnet-pipeline.timer.j2",
                         f"/etc/systemd/system/{data['pipeline_run_unit']}.timer", unit=unit_vars)
    upload = template("Pipeline: the uploader unit", "systemd/circularnet-upload.service.j2",
                      f"/etc/systemd/system/{data['pipeline_upload_unit']}.service", unit=unit_vars)
    bucket = input_of(wants) == "bucket"
    worker_path = f"/etc/systemd/system/{data['pipeline_worker_unit']}.service"
    if bucket:
        worker = template("Pipeline: the bucket worker's unit (input: the images bucket)",
                          "systemd/circularnet-worker.service.j2", worker_path, unit=unit_vars)
    else:
        if host.get_fact(File, path=worker_path) is not None:  # the input was the bucket before: stop its worker
            systemd.service(name="Pipeline: the bucket worker stopped and disabled (input: spool)",
                            service=f"{data['pipeline_worker_unit']}.service", running=False, enabled=False)
        worker = files.file(name="Pipeline: no bucket worker unit (input: spool)", path=worker_path, present=False)
    after_change(name="Pipeline: systemd reloaded after a unit change",
                 changed=[*units, run_service, run_timer, upload, worker], commands=["systemctl daemon-reload"])
    common = [config_file, credentials, venv, requirements, built, *scripts]
    if camera:
        _running("Pipeline: capture", f"{data['pipeline_capture_unit']}.service", [units[0], *fetched, *common])
    if bucket:
        systemd.service(name="Pipeline: the pipeline's timer stopped and disabled (the bucket worker runs the client)",
                        service=f"{data['pipeline_run_unit']}.timer", running=False, enabled=False)
        _running("Pipeline: the bucket worker", f"{data['pipeline_worker_unit']}.service", [worker, *common])
    else:
        _running("Pipeline: the pipeline's timer", f"{data['pipeline_run_unit']}.timer", [run_timer])
    _running("Pipeline: the uploader", f"{data['pipeline_upload_unit']}.service", [upload, *common])
