"""The pull layer's pure builders and verdict (deploy/pull.py runs them; so do the collection's filters).

The agent's file list itself is cnctl.bundle.contents AGENT_ENTRIES (deploy/pull.py `agent_files`); the collection
carries it as data (`agent_files.json` beside this module, written by cnctl/collection.py), read by `listed`.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

AGENT_FILES = Path(__file__).resolve().parent / "agent_files.json"


def listed(root: str) -> list[str]:
    """The agent's files (relative paths) as the collection lists them, each a file under `root`."""
    paths = json.loads(AGENT_FILES.read_text(encoding="utf-8"))
    missing = [p for p in paths if not (Path(root) / p).is_file()]
    if missing:
        raise ValueError(f"{root} lacks the pull agent's {', '.join(missing)}: point pull_agent_src at a tree that holds them")
    return paths


CONFIG_FORMAT = 1


def problem(wants: dict[str, Any]) -> str:
    """"" when the stack gives a pull host what its agent needs, else one line naming the field and the fix."""
    missing = []
    if not wants.get("cn_bundle_signers"):
        missing.append("no bundle signer (cn_bundle_signers is empty: the agent would accept no bundle)")
    if wants.get("cn_pull_interval") is None:
        missing.append("no poll interval (cn_pull_interval is None: the timer would have no period)")
    if not missing:
        return ""
    return (f"{wants.get('cn_host')}: mode: pull, but the stack gives {' and '.join(missing)}: add the stack's "
            "`circularnet:bundle` section with `signers` (and `pollSeconds`, default 300; docs/pull-mode.md), "
            "or set the fleet entry's mode to push")


def wheels(wants: dict[str, Any]) -> list[dict[str, Any]]:
    """Every wheel of the agent's venv: the uploader's, then the agent's (the two lists together are closed)."""
    return [*wants["cn_uploader_wheels"], *(wants.get("cn_agent_wheels") or [])]


def agent_dirs(paths: list[str]) -> list[str]:
    """Every directory (relative, parents first) the agent's files need under the agent directory."""
    found = {str(parent) for path in paths for parent in Path(path).parents if str(parent) != "."}
    return sorted(found, key=lambda d: (d.count("/"), d))


def extras(found: list[str], paths: list[str]) -> list[str]:
    """What the agent tree holds (relative paths, as TreePaths gives them) that the list does not: each to be
    removed, a directory with whatever is under it (so only the topmost is named)."""
    wanted = set(paths) | set(agent_dirs(paths))
    unwanted = sorted(p for p in found if p not in wanted)
    return [p for p in unwanted if not any(p.startswith(f"{other}/") for other in unwanted)]


def extras_under(found: list[str], root: str, paths: list[str]) -> list[str]:
    """`extras` of absolute paths under `root` (what Ansible's find gives), as absolute paths."""
    relative = [p[len(root) + 1:] for p in found if p.startswith(f"{root}/")]
    return [f"{root}/{p}" for p in extras(relative, paths)]


def agent_config(wants: dict[str, Any], data: dict[str, Any], credentials: str) -> dict[str, Any]:
    """/etc/circularnet/pull/agent.json for this host: what cnctl.bundle.agent reads. `credentials` is the
    pipeline layer's credentials file on the host (roles/pipeline pipeline_credentials), named only when the
    stack gives the host one. A VM of the worker group (group cloud) also names its zone."""
    venv = data["pull_venv"]
    return {
        "format": CONFIG_FORMAT,
        "stack": wants["cn_stack"],
        "host": wants["cn_host"],
        "group": wants["cn_group"],
        "channel": wants["cn_pull_channel"],
        "store": {"kind": wants["cn_storage_kind"], "endpoint": wants["cn_storage_endpoint"],
                  "project": wants["cn_storage_project"], "bundles": wants["cn_storage_models_bucket"],
                  "reports": wants["cn_storage_results_bucket"]},
        "credentials": credentials if wants.get("cn_storage_credentials_file") else None,
        "signers": [{"identity": s["identity"], "public_key": s["public_key"]} for s in wants["cn_bundle_signers"]],
        "state": data["pull_state"],
        "pyinfra": f"{venv}/bin/pyinfra",
        "python": f"{venv}/bin/python",
        "agent": data["pull_agent_dir"],
        # a VM of the worker group is in no fleet: the agent hands hosts/pull.py its zone (CNCTL_PULL_ZONE)
        **({"zone": wants["cn_gcp_zone"]} if wants["cn_group"] == "cloud" else {}),
    }


def unit_variables(wants: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """What templates/systemd/circularnet-pull.{service,timer}.j2 take, for this host."""
    interval = int(wants["cn_pull_interval"])
    return {"python": f"{data['pull_venv']}/bin/python", "agent_dir": data["pull_agent_dir"],
            "config": data["pull_config"], "state": data["pull_state"], "timeout": data["pull_run_timeout"],
            "boot_seconds": data["pull_boot_seconds"], "interval": interval, "random_delay": interval // 5,
            "unit": data["pull_unit"]}


def installed_paths(data: dict[str, Any]) -> list[str]:
    """What a pull host has and a push host must not: the units, the settings' directory, the agent tree."""
    return [f"/etc/systemd/system/{data['pull_unit']}.timer", f"/etc/systemd/system/{data['pull_unit']}.service",
            data["pull_config"].rsplit("/", 1)[0], data["pull_agent_dir"]]


def present_command(paths: list[str]) -> str:
    """Prints each of `paths` that exists (one round trip for all of them; never fails)."""
    return f"for p in {' '.join(shlex.quote(p) for p in paths)}; do [ -e \"$p\" ] && echo \"$p\"; done; true"


def present(lines: list[str]) -> list[str]:
    return [line.strip() for line in lines if line.strip()]
