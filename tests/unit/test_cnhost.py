"""cnhost, the programs that run on hosts: standard library only (a fresh interpreter without site-packages imports
every one of them), and the one reader of their contract (one JSON line, the last, of their output)."""

from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import cnhost
from cnctl.paths import REPO_ROOT

PROGRAMS = sorted(m.name for m in pkgutil.iter_modules(cnhost.__path__))


def test_the_package_holds_the_host_programs() -> None:
    assert {"model_sync", "model_serve", "triton_endpoint", "capture", "pipeline_run", "client_adapter", "uploader",
            "bucket_worker", "health_report"} <= set(PROGRAMS)
    assert (REPO_ROOT / "cnhost" / "py.typed").is_file()


def test_every_program_imports_with_the_standard_library_alone() -> None:
    """As on a host: `-I -S` (no PYTHONPATH, no user or system site-packages: nothing installed is importable);
    every module loaded is the standard library's or cnhost's. The cloud clients the uploader and the bucket worker
    use are imported inside the functions that need them (the pipeline's venv has them)."""
    code = (f"import sys; sys.path.insert(0, {str(REPO_ROOT)!r}); import importlib; "
            f"[importlib.import_module('cnhost.' + n) for n in {PROGRAMS!r}]; "
            "print(sorted({m.split('.')[0] for m in sys.modules} - set(sys.stdlib_module_names) - {'cnhost', '__main__'}))")
    run = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, timeout=120,
                         check=False, cwd="/")
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]", run.stdout


@pytest.mark.parametrize(("output", "key", "answer"), [
    ('{"result": "ok"}\n', None, {"result": "ok"}),
    ('progress\n{"result": "ok", "n": 1}\n', "result", {"result": "ok", "n": 1}),
    (["{\"result\": \"old\"}", "{\"result\": \"new\"}", "Traceback (most recent call last):", ""], "result",
     {"result": "new"}),
    (['{"healthy": true}', '{"other": 1}'], "healthy", {"healthy": True}),
    (['{"other": 1}'], "healthy", None),
    (["[1, 2]", "not json", "{broken"], None, None),
    ("", None, None),
    ([], "result", None),
])
def test_the_answer_is_the_last_json_object_line(output: str | list[str], key: str | None,
                                                 answer: dict | None) -> None:
    assert cnhost.answer(output, key) == answer


def test_the_answer_of_a_real_program_run(tmp_path: Path) -> None:
    """model_sync's usage refusal, run the way hosts run it, read with the controller's reader."""
    argv = ["check", "--url", "http://127.0.0.1:9/m.zip", "--sha256", "a" * 64, "--name", "../x", "--version", "1",
            "--repository", str(tmp_path / "m"), "--staging", str(tmp_path / "s"), "--default-config", str(tmp_path / "c")]
    run = subprocess.run([sys.executable, "-m", "cnhost.model_sync", *argv], capture_output=True, text=True,
                         timeout=60, check=False, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    found = cnhost.answer(run.stdout, "result")
    assert found is not None and found["reason"] == "usage" and run.returncode == 2
    assert json.loads(run.stdout.splitlines()[-1]) == found
