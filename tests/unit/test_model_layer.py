"""The model layer's wiring: its host variables, its verdict (GOOD/BAD), the fact both engines read, and the
Ansible role run for real on this machine (local connection, directories under a temp dir) against the site's
artifact server on 127.0.0.1: it converges, a second run changes nothing and requests nothing, a wrong
sha256 fails the host naming both and changes nothing. The script's own logic: tests/unit/test_model_sync.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from cnctl.catalog import catalog
from cnctl.config import load_stack
from cnctl.hostvars import host_vars
from cnctl.sandbox.site.model import MODEL_NAME
from cnhost import model_sync
from deploy.facts import ModelRepository
from deploy.rules import checks, scripts
from deploy.rules.model import options
from deploy.steps import role_data
from tests.unit.collection_tree import ansible_env
from tests.unit.collection_tree import role as collection_role
from tests.unit.test_model_sync import Site, site, triton_archive  # noqa: F401 - `site` is a fixture

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _wishes() -> dict[str, Any]:
    cfg = load_stack("local")
    return host_vars(cfg, "servers", cfg.fleets.servers[0])


def test_the_hosts_get_the_stacks_pin_the_catalogs_name_and_keep_2_by_default() -> None:
    cfg = load_stack("local")
    wants = _wishes()
    assert {k: v for k, v in wants.items() if k.startswith("cn_model_")} == {
        "cn_model_key": "sandbox_standin", "cn_model_name": "circularnet", "cn_model_version": 1,
        "cn_model_url": cfg.model.url, "cn_model_sha256": cfg.model.sha256, "cn_model_format": "python",
        "cn_model_platform": "python", "cn_model_keep": 2, "cn_model_action": "pinned"}
    assert catalog().models.models["sandbox_standin"].served_name == MODEL_NAME  # the folder inside its archives


def test_without_a_stack_url_hosts_fetch_the_catalogs_upstream_archive() -> None:
    cfg = load_stack("local")
    cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"key": "CircularNet_model_v2", "url": None})})
    wants = host_vars(cfg, "servers", cfg.fleets.servers[0])
    assert wants["cn_model_url"] == catalog().models.models["CircularNet_model_v2"].url
    assert (wants["cn_model_format"], wants["cn_model_platform"]) == ("onnx", "onnxruntime_onnx")


GOOD = {"cn_stack": "local", "cn_model_key": "sandbox_standin", "cn_model_sha256": "a" * 64,
        "cn_model_url": "http://172.31.254.2:8080/artifacts/models/sandbox_standin.zip"}
BAD = [
    ({"cn_model_sha256": None}, "model sandbox_standin has no sha256 pin in stack local; run `cnctl model pin --stack local`"),
    ({"cn_model_sha256": ""}, "run `cnctl model pin --stack local`"),
    ({"cn_model_url": "gs://plant-models/cn.zip"}, "hosts fetch the archive over http(s), not gs://plant-models/cn.zip"),
    ({"cn_model_url": None}, "not no URL; set model.url in stack local"),
]


def test_a_pinned_http_archive_is_accepted() -> None:
    assert checks.model_problem(GOOD) == ""
    assert checks.model_problem({**GOOD, "cn_model_url": "https://mirror.plant.local/cn.zip"}) == ""


@pytest.mark.parametrize(("change", "says"), BAD)
def test_an_unpinned_or_unfetchable_archive_is_refused_with_the_fix(change: dict[str, Any], says: str) -> None:
    assert says in checks.model_problem({**GOOD, **change})


def test_the_engines_pass_every_option_the_script_takes() -> None:
    given = options(_wishes(), role_data("model"))
    assert set(given) == set(model_sync.OPTIONS)
    argv = scripts.model_command("/h/cnhost/model_sync.py", "sync", given).split()
    assert argv[:5] == ["env", "PYTHONPATH=/h", "python3", "-m", "cnhost.model_sync"]
    assert model_sync.parse(argv[5:]).sha256 == load_stack("local").model.sha256


def test_the_fact_reads_the_scripts_line_and_nothing_else() -> None:
    fact = ModelRepository()
    line = {"result": "ok", "changed": False, "reason": "ok", "message": "in place"}
    assert fact.process(["noise", json.dumps(line)]) == line
    assert fact.process([]) is None and fact.process(["Traceback ..."]) is None and fact.process(["[1]"]) is None


def test_the_check_command_reports_pending_before_the_script_is_on_the_host(tmp_path: Path) -> None:
    given = {**options(_wishes(), role_data("model")), "repository": str(tmp_path / "r")}
    absent = tmp_path / "cnhost" / "model_sync.py"
    for helper, message in ((absent, f"{absent} is not on the host yet"),
                            (Path(model_sync.__file__), "download and install circularnet version 1")):
        command = scripts.model_command(str(helper), "check", given)
        result = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=False, timeout=60)
        assert result.returncode == 0, result.stderr
        found = ModelRepository().process(result.stdout.splitlines())
        assert found is not None and found["result"] == "pending" and message in found["message"], found


# --- the role, run for real ---------------------------------------------------------------------------


def _play(tmp_path: Path, wants: dict[str, Any]) -> tuple[int, str]:
    """ansible-playbook of the model role on localhost, every path under tmp_path; (rc, output)."""
    paths = {"model_repository": str(tmp_path / "models"), "model_staging": str(tmp_path / "staging"),
             "model_helper": str(tmp_path / "lib" / "cnhost" / "model_sync.py"), "model_default_config": str(tmp_path / "etc" / "config.pbtxt")}
    play = [{"hosts": "localhost", "connection": "local", "gather_facts": False, "vars": {**wants, **paths},
             "roles": [{"role": collection_role("model")}]}]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play))
    env = ansible_env(tmp_path)
    result = subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", str(tmp_path / "play.yml"), "-e",
                             f"ansible_python_interpreter={sys.executable}"],
                            check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    return result.returncode, result.stdout + result.stderr


def _recap(output: str) -> tuple[int, int]:
    match = re.search(r"localhost\s+: ok=\d+\s+changed=(\d+)\s+unreachable=\d+\s+failed=(\d+)", output)
    assert match, output[-3000:]
    return int(match[1]), int(match[2])


@pytest.mark.skipif(os.geteuid() != 0 and os.environ.get("CI") != "true", reason="the role makes root-owned files")
def test_the_role_converges_then_changes_nothing_and_refuses_a_wrong_sha256(site: Site, tmp_path: Path) -> None:  # noqa: F811
    url, sha = site.publish("m1.zip", triton_archive(1))
    wants = {**_wishes(), "cn_model_url": url, "cn_model_sha256": sha}
    code, out = _play(tmp_path, wants)
    assert code == 0 and _recap(out)[0] > 0, out[-3000:]
    assert (tmp_path / "models" / "circularnet" / "1" / "model.py").is_file()
    assert (tmp_path / "staging").stat().st_mode & 0o777 == 0o700 and not any((tmp_path / "staging").iterdir())
    assert len(site.requests()) == 1

    code, out = _play(tmp_path, wants)
    assert code == 0 and _recap(out) == (0, 0), out[-3000:]
    assert len(site.requests()) == 1  # the marker proves the pin: not even a HEAD

    before = sorted((str(p), hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "")
                    for p in (tmp_path / "models").rglob("*"))
    url2, actual = site.publish("m2.zip", triton_archive(2))
    code, out = _play(tmp_path, {**wants, "cn_model_url": url2, "cn_model_version": 2, "cn_model_sha256": "b" * 64})
    assert code != 0 and _recap(out)[1] == 1
    assert f"{wants['cn_host']}: {url2}: sha256 is {actual}, the stack pins {'b' * 64}" in " ".join(out.split()), out[-3000:]
    assert sorted((str(p), hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "")
                  for p in (tmp_path / "models").rglob("*")) == before

    code, out = _play(tmp_path, {**wants, "cn_model_sha256": None})
    assert code != 0 and "has no sha256 pin in stack local; run `cnctl model pin --stack local`" in " ".join(out.split())
