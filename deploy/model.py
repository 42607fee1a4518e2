"""The model layer: the stack's pinned model version in a versioned Triton model repository.

1. Refused before anything changes when the stack gives no sha256 pin (the `cnctl model pin` hint) or no
   http(s) URL a host can fetch (deploy/rules/checks.py `model_problem`);
2. the layer's script (cnhost/model_sync.py, stdlib only, one copy for both engines) shipped to the host,
   the staging directory (0700) and the repository in place, and the config.pbtxt for archives that bring
   none rendered from templates/triton/config.pbtxt.j2 (name, Triton platform, no batching dimension);
3. the script's `check` read as a fact (files only: a converged host downloads nothing, not even a HEAD),
   and `sync` run only when it reports something pending: download into staging with resume, sha256
   verified before anything else changes, unpacked beside `<repository>/<name>/<version>/` and renamed
   into place with its pin marker, config.pbtxt replaced atomically, the last N versions kept, staging
   emptied. A failure fails the host with the script's one-line message (a wrong sha256 names both).

roles/model is the same layer for Ansible: same script, same options, same files.
"""

from __future__ import annotations

from typing import Any

from pyinfra import host
from pyinfra.api import deploy, operation

from deploy.facts import ModelRepository
from deploy.rules import checks, scripts
from deploy.rules.model import options
from deploy.steps import directory, programs_shipped, refused, role_data, template, wishes


@operation(is_idempotent=True)
def model_synced(helper: str, options: dict[str, Any]):
    """Ensure the pinned version is served from the repository, as the script's `check` judges it."""
    found = host.get_fact(ModelRepository, helper=helper, options=options)
    if not found or found.get("result") != "ok":
        yield scripts.model_command(helper, "sync", options)


@deploy("Model")
def model() -> None:
    """The pinned model version in the Triton repository, fetched once and verified; refused when unpinned."""
    wants, data = wishes(), role_data("model")
    problem = checks.model_problem(wants)
    if problem:
        refused(name="Model: the stack pins the archive", message=f"{wants['cn_host']}: {problem}")
        return
    helper = data["model_helper"]
    programs_shipped("Model", scripts.program_home(helper))
    directory("Model: staging directory", data["model_staging"], mode="700")
    directory("Model: repository parent", data["model_repository"].rsplit("/", 1)[0])
    directory("Model: Triton model repository", data["model_repository"])
    directory("Model: default configuration directory", data["model_default_config"].rsplit("/", 1)[0])
    template("Model: config.pbtxt for archives that bring none", "triton/config.pbtxt.j2", data["model_default_config"],
             model_name=wants["cn_model_name"], platform=wants["cn_model_platform"], max_batch_size=0)
    model_synced(name="Model: pinned version in the repository (staged, verified, renamed into place, keep N)",
                 helper=helper, options=options(wants, data))
