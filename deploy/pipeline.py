"""The pipeline layer: from the belt camera to the stack's bucket, as three hardened services of one user.

1. Refused before anything changes when the host cannot run the stack's pipeline (deploy/rules/checks.py
   `pipeline_problem`: no pinned client archive or requirements, a Python the pinned wheels do not fit, a
   credentials file missing or readable by others on the deploying machine);
2. the service user `circularnet-pipeline` (system, no login) and its data directory: frame spool, batches at
   work, upload queue (0750, the user's) and state (0755: the health report reads it, through the data directory,
   0751);
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

import shlex
from pathlib import Path
from typing import Any

from pyinfra import host
from pyinfra.api import deploy, operation
from pyinfra.facts.files import File, Sha256File
from pyinfra.facts.systemd import SystemdStatus
from pyinfra.operations import apt, files, server, systemd

from cnctl.paths import TEMPLATES_DIR
from deploy.facts import HostPython, InterfaceAddress, VenvPackages
from deploy.rules import checks
from deploy.rules.pipeline import (
    apt_packages,
    client_archive,
    client_dir,
    credentials_found,
    input_of,
    install_command,
    prebuilt,
    replay_archive,
    settings,
    sources,
    unit_variables,
    unpack_command,
    wheels,
)
from deploy.steps import (
    after_change,
    directory,
    host_settings,
    index_refreshed,
    programs_shipped,
    refused,
    template,
    wishes,
)

FETCH_TIMEOUT_DEFAULT = 600


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


def _running(name: str, unit: str, changed: list[Any]) -> None:
    """`unit` enabled and running; restarted when one of `changed` changed under it while it ran."""
    ran = host.get_fact(SystemdStatus, user_mode=False, machine=None, user_name=None, services=[unit]).get(unit, False)
    systemd.service(name=f"{name} enabled and running", service=unit, running=True, enabled=True)
    after_change(name=f"{name} restarted after a change under it", changed=changed if ran else [],
                 commands=[shlex.join(["systemctl", "restart", unit])])


def role_settings() -> dict[str, Any]:
    """roles/pipeline's defaults, with the host's own pipeline_* values over them (its inventory, or `--data`):
    the precedence Ansible gives the role, so a path set for one host holds in both engines."""
    return {key: value for key, value in host_settings("pipeline").items() if not key.endswith("_scripts_src")}


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

    scripts = programs_shipped("Pipeline", data["pipeline_helper_dir"])
    for path in (data["pipeline_root"], f"{data['pipeline_root']}/archives", f"{data['pipeline_root']}/client"):
        directory(f"Pipeline: {path}", path, "755")
    # 0751: others may pass through (the health report, root without capabilities, to the state directory), never list
    directory("Pipeline: data directory", data["pipeline_data"], "751", user, user)
    for key in ("work", "queue"):
        directory(f"Pipeline: {key} directory", config[key], "750", user, user)
    directory("Pipeline: frame spool", config["spool"], "750", user, user)
    directory("Pipeline: state directory (read by the health report)", config["state"], "755", user, user)

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

    directory("Pipeline: credentials directory", data["pipeline_credentials"].rsplit("/", 1)[0], "750", "root", user)
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
