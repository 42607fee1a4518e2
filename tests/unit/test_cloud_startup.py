"""The GCE startup script, the cloud VMs' bootstrap: rendered from templates/gce-startup.sh.j2, valid bash,
records the stack, makes sure Python is there, waits a bounded time for the NVIDIA driver and records it."""

from __future__ import annotations

import base64
import json
import os
import platform
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from jinja2 import nodes

from cnctl.catalog import catalog
from cnctl.cloud import startup
from cnctl.cloud.startup import (
    NVIDIA_ATTEMPTS,
    NVIDIA_WAIT_SECONDS,
    STACK_DIR,
    TEMPLATES,
    render_startup_script,
    stack_record,
)
from cnctl.config import StackConfig, load_stack
from tests.unit.bundle_helpers import keypair
from tests.unit.stack_variants import stack_variant

BASH = shutil.which("bash") or "/bin/bash"


@pytest.fixture(scope="module")
def dev() -> StackConfig:
    return load_stack("dev")


def script_values(script: str) -> dict[str, Any]:
    """The values the script assigns at the start of a line (`name=word`, `name=(words)`; a quoted word may span
    lines), as the shell reads them; `<name>_b64=...` decoded, under `<name>`. Assignments of expansions
    (`name="$x..."`) are skipped."""
    values: dict[str, Any] = {}
    for match in re.finditer(r"^([a-z_][a-z0-9_]*)=(?=[^\"$\s])", script, re.MULTILINE):
        lexer = shlex.shlex(script[match.end():], posix=True, punctuation_chars="()")
        lexer.whitespace_split = True
        first = lexer.get_token()
        if first == "(":
            words = []
            while (word := lexer.get_token()) != ")":
                words.append(word)
            values[match[1]] = words
            continue
        name, value = match[1], first
        if name.endswith("_b64"):
            name, value = name.removesuffix("_b64"), base64.b64decode(value, validate=True).decode()
        values[name] = value
    return values


def run(script: str, etc: Path, path: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the script as GCE would, writing under `etc`, never sleeping between nvidia-smi tries."""
    env = {**os.environ, "CNCTL_ETC_DIR": str(etc), "CNCTL_NVIDIA_WAIT_SECONDS": "0"}
    if path is not None:
        env["PATH"] = path
    return subprocess.run([BASH, "-c", script], env=env, capture_output=True, text=True, check=True, timeout=60)


def test_template_says_it_is_the_bootstrap_for_the_host_layers() -> None:
    template = (TEMPLATES / "gce-startup.sh.j2").read_text()
    assert "leaves the VM ready for the host layers" in template
    assert "pyinfra hosts/cloud.py deploy.py" in template


def test_script_is_valid_bash(dev: StackConfig) -> None:
    subprocess.run(["bash", "-n"], input=render_startup_script(dev), text=True, check=True)


def test_script_records_the_stack_privately_and_idempotently(dev: StackConfig, tmp_path: Path) -> None:
    etc = tmp_path / "etc" / "circularnet"
    script = render_startup_script(dev)
    first = run(script, etc)
    run(script, etc)  # every boot runs it again
    assert "host layers configure the rest" in first.stdout
    assert sorted(p.name for p in etc.iterdir()) == ["bootstrap.json", "stack.json"]  # no temp file left behind
    assert stat.S_IMODE((etc / "stack.json").stat().st_mode) == 0o640
    assert stat.S_IMODE((etc / "bootstrap.json").stat().st_mode) == 0o640
    assert stat.S_IMODE(etc.stat().st_mode) == 0o750
    assert json.loads((etc / "stack.json").read_text()) == stack_record(dev)


def test_stack_record_carries_model_pin_ports_and_data_locations(dev: StackConfig) -> None:
    record = stack_record(dev)
    assert record["model"] == {
        "key": "Jan2025_ver2_merged_1024_1024",
        "version": 1,
        "sha256": "0" * 64,
        "url": catalog().models.models["Jan2025_ver2_merged_1024_1024"].url,
        "generation": "tf",
    }
    assert record["inference"] == {"bindAddress": "127.0.0.1", "ports": {"http": 8000, "grpc": 8001, "metrics": 8002}}
    assert record["buckets"] == {
        "images": "my-circularnet-dev-images",
        "results": "my-circularnet-dev-results",
        "models": "my-circularnet-dev-models",
    }
    assert record["bigquery"] == {"dataset": "circularnet_dev", "table": "detections_tf"}
    assert STACK_DIR == "/etc/circularnet" and STACK_DIR in render_startup_script(dev)


def test_mirror_url_wins_over_the_catalog() -> None:
    assert stack_record(load_stack("prod"))["model"]["url"] == (
        "gs://my-circularnet-prod-models/archives/Jan2025_ver2_merged_1024_1024.zip"
    )


# --- the bootstrap: Python for the host layers, a bounded wait for the NVIDIA driver ------------------

TOOLS = ("install", "mktemp", "cat", "chmod", "mv", "grep", "head", "cut", "tr", "sed", "paste", "sleep", "rm", "dirname",
         "base64")


def bin_dir(tmp_path: Path, scripts: dict[str, str], python: bool = True) -> str:
    """A PATH of the tools the script uses, plus `scripts` (name -> bash body); python3 only if asked."""
    folder = tmp_path / "bin"
    folder.mkdir(parents=True)
    for tool in TOOLS:
        found = shutil.which(tool)
        assert found, tool
        (folder / tool).symlink_to(Path(found).resolve())
    if python:  # this interpreter itself: a pyenv or venv shim would need more than this PATH
        (folder / "python3").symlink_to(Path(sys.executable).resolve())
    for name, body in scripts.items():
        (folder / name).write_text("#!/bin/bash\n" + body)
        (folder / name).chmod(0o755)
    return str(folder)


def bootstrap(etc: Path) -> dict[str, object]:
    return json.loads((etc / "bootstrap.json").read_text())


def test_waits_for_the_driver_and_records_it(dev: StackConfig, tmp_path: Path) -> None:
    # The driver appears on the third try, as after a Deep Learning VM's first-boot install.
    count = tmp_path / "tries"
    smi = f'n=$(( $(cat {count} 2>/dev/null || echo 0) + 1 )); echo $n > {count}\n[ $n -ge 3 ] || exit 9\n'
    smi += 'printf "570.124.06, NVIDIA L4\\n570.124.06, NVIDIA L4\\n"\n'
    etc = tmp_path / "etc"
    result = run(render_startup_script(dev), etc, bin_dir(tmp_path, {"nvidia-smi": smi}))
    record = bootstrap(etc)
    assert record["gpuStatus"] == "ready" and record["attempts"] == 3
    assert record["driver"] == "570.124.06" and record["gpus"] == "NVIDIA L4;NVIDIA L4"
    assert "nvidia-smi: ready after 3 attempt(s), driver 570.124.06" in result.stdout


def test_the_wait_is_bounded_and_never_fails_the_boot(dev: StackConfig, tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    run(render_startup_script(dev), etc, bin_dir(tmp_path, {"nvidia-smi": "echo 'NVIDIA-SMI has failed' >&2; exit 9\n"}))
    assert bootstrap(etc)["gpuStatus"] == "timeout" and bootstrap(etc)["attempts"] == NVIDIA_ATTEMPTS
    run(render_startup_script(dev), etc, bin_dir(tmp_path / "none", {}))  # no driver tools at all
    assert bootstrap(etc)["gpuStatus"] == "absent" and bootstrap(etc)["attempts"] == NVIDIA_ATTEMPTS
    assert NVIDIA_ATTEMPTS * NVIDIA_WAIT_SECONDS <= 15 * 60  # a VM never waits longer than this


def test_installs_python_when_the_image_lacks_it(dev: StackConfig, tmp_path: Path) -> None:
    calls = tmp_path / "apt-calls"
    # apt-get "installs" python3 by dropping a stand-in into the PATH it was found on.
    apt = f'echo "$*" >> {calls}\nprintf "#!/bin/bash\\necho 3.10.12\\n" > "$(dirname "$0")/python3"\n'
    apt += 'chmod 755 "$(dirname "$0")/python3"\n'
    etc = tmp_path / "etc"
    run(render_startup_script(dev), etc, bin_dir(tmp_path, {"apt-get": apt, "nvidia-smi": "exit 9\n"}, python=False))
    assert "install -y --no-install-recommends python3" in calls.read_text()
    assert len(calls.read_text().splitlines()) == 1 and bootstrap(etc)["python"] == "3.10.12"


def test_present_python_is_recorded_and_apt_untouched(dev: StackConfig, tmp_path: Path) -> None:
    calls = tmp_path / "apt-calls"
    etc = tmp_path / "etc"
    path = bin_dir(tmp_path, {"apt-get": f'echo "$*" >> {calls}\n', "nvidia-smi": "exit 9\n"})
    run(render_startup_script(dev), etc, path)
    assert not calls.exists() and bootstrap(etc)["python"] == platform.python_version()
    assert bootstrap(etc)["osLogin"] in ("on", "off")


# --- every stack value is data in the script (issue 20) --------------------------------------------------------

# Heredoc terminators the script used, `$(...)`, backticks, quotes, globs, a comment, newlines, a NUL-free control.
HOSTILE = ("x'\"$(touch pwned)`touch pwned`\nCNCTL_ALLOWED_SIGNERS\nCNCTL_STACK_JSON\nCNCTL_AGENT_JSON\n; touch pwned #"
           "\\ \t*?[a]{b,c}~!$HOME%%\x1b[0m")
FILTERS = {"sh", "sh_words", "b64"}
NUMBERS = {"nvidia_attempts", "nvidia_wait_seconds"}


def test_every_value_of_the_template_goes_in_quoted_or_as_base64() -> None:
    """Read from the template itself: each `{{ }}` is `| sh`, `| sh_words` or `| b64` of a value, or a number."""
    env = startup._script_environment()
    assert env.loader is not None
    source = env.loader.get_source(env, startup.STARTUP_TEMPLATE)[0]
    outputs = [expr for output in env.parse(source).find_all(nodes.Output) for expr in output.nodes
               if not isinstance(expr, nodes.TemplateData)]
    assert len(outputs) > 30
    for expr in outputs:
        ok = (isinstance(expr, nodes.Filter) and expr.name in FILTERS) or (isinstance(expr, nodes.Name) and expr.name in NUMBERS)
        assert ok, f"line {expr.lineno}: a value goes into the script unquoted"


@pytest.mark.parametrize("value", ["text", True, 1.5, None, ["a"]])
def test_a_value_left_unquoted_is_refused_when_rendering(value: object) -> None:
    env = startup._script_environment()
    with pytest.raises(TypeError, match=r"pass it through \| sh, \| sh_words or \| b64"):
        env.from_string("x={{ v }}").render(v=value)
    assert env.from_string("x={{ v | sh }} n={{ n }}").render(v="a b", n=3) == "x='a b' n=3"


def _group_values(tmp_path: Path) -> dict[str, Any]:
    """The template values of the worker group's script of a dev-group stack with a `bundle` section."""
    _, public = keypair(tmp_path / "keys")

    def change(config: dict[str, Any]) -> None:
        config["circularnet:bundle"] = {"signers": [{"identity": "release@plant", "publicKey": public}]}

    return startup.template_values(load_stack(stack_variant(tmp_path, change, base="dev-group")), workers=True)


def _each_string(values: Any, make: Any, path: str = "") -> Any:
    """`values` with every string (and list of strings) replaced by make(path) (one per list item)."""
    if isinstance(values, dict):
        return {k: _each_string(v, make, f"{path}.{k}") for k, v in values.items()}
    if isinstance(values, list):
        return [make(f"{path}[{i}]") for i in range(len(values))]
    return make(path) if isinstance(values, str) else values


class Recorded:
    """The texts the quoting filters put into a script, in order (a test's stand-in for startup.sh etc.)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.texts: list[str] = []
        for name in FILTERS:
            real = getattr(startup, name)
            monkeypatch.setattr(startup, name, lambda value, real=real: self.keep(real(value)))

    def keep(self, text: startup.ShellText) -> startup.ShellText:
        self.texts.append(str(text))
        return text


def bash_structure(script: str, inserted: list[str]) -> str:
    """`script` as bash's own parser reads it (`declare -f` prints a function holding it, normalized: comments
    gone, one command a line), each inserted text masked where it stands. A value that left its word would be
    reprinted otherwise, and not be found whole."""
    printed = subprocess.run([BASH, "-c", f"cnctl_script() {{\n{script}\n}}\ndeclare -f cnctl_script"], capture_output=True,
                             text=True, check=True, timeout=60).stdout
    at = 0
    for k, text in enumerate(inserted):
        at = printed.index(text, at)  # ValueError: the value is not one word where the template put it
        printed = f"{printed[:at]}@value{k}@{printed[at + len(text):]}"
    return printed


@pytest.mark.parametrize("workers", [True, False], ids=["group template", "fixed VMs"])
def test_hostile_values_leave_the_scripts_structure_as_it_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             workers: bool) -> None:
    """Every string value replaced by unique benign words, then by hostile text: bash parses both scripts to the
    same commands and heredocs, `bash -n` and shellcheck pass, and each value reads back byte for byte."""
    values = _group_values(tmp_path) if workers else startup.template_values(load_stack("dev"))
    benign = _each_string(values, lambda path: "v" + path.replace(".", "_").replace("[", "_").rstrip("]"))
    hostile = _each_string(values, lambda path: f"{HOSTILE}{path}")
    structures = []
    for case in (benign, hostile):
        recorded = Recorded(monkeypatch)
        script = startup.render_script(case)
        subprocess.run([BASH, "-n"], input=script, text=True, check=True)
        structures.append(bash_structure(script, recorded.texts))
        monkeypatch.undo()
    assert structures[0] == structures[1]
    assert "CNCTL_ALLOWED_SIGNERS" not in structures[0] and "<<'" not in structures[0]  # no quoted heredoc left
    if shutil.which("shellcheck") is None:
        pytest.fail("shellcheck is missing: `sudo python3 cnctl/sandbox/prereqs.py ensure` installs it", pytrace=False)
    (tmp_path / "hostile.sh").write_text(script)
    # SC2016 notes `$(...)` inside single quotes "will not expand": what a quoted value must do; nothing else may fire.
    done = subprocess.run(["shellcheck", "--exclude=SC2016", str(tmp_path / "hostile.sh")], capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stdout
    read = script_values(script)
    assert (read["environment"], read["stack_json"], read["os_login"]) == (
        hostile["environment"], hostile["stack_json"], hostile["os_login"])
    if workers:
        pull = hostile["pull"]
        for name, key in (("allowed_signers", "allowed_signers"), ("agent_config", "agent_config"),
                          ("requirements", "requirements"), ("pull_stack", "stack"), ("namespace", "namespace"),
                          ("pull_apt_packages", "apt_packages"), ("pip_args", "pip_args"), ("bucket_path", "bucket_path"),
                          ("pointer_object", "pointer_object"), ("metadata_server", "metadata")):
            assert read[name] == pull[key], name


def test_hostile_values_reach_the_vm_byte_for_byte_and_nothing_runs(dev: StackConfig, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The fixed VMs' script run with a stack record and a name holding shell and heredoc syntax: stack.json is
    exactly the record, and nothing in it ran (run from tmp_path, where `touch pwned` would land)."""
    monkeypatch.chdir(tmp_path)
    values = {**startup.template_values(dev), "environment": HOSTILE, "stack_json": HOSTILE + "\n{}\nCNCTL_STACK_JSON\n"}
    etc = tmp_path / "etc"
    done = run(startup.render_script(values), etc, bin_dir(tmp_path, {"nvidia-smi": "exit 9\n"}))
    assert (etc / "stack.json").read_bytes() == values["stack_json"].encode()
    assert f"recorded stack {HOSTILE} in" in done.stdout and not (tmp_path / "pwned").exists()


def test_object_names_are_url_encoded_whole() -> None:
    assert startup.object_path("bundles/dev", "channels", "stable.json") == "bundles%2Fdev%2Fchannels%2Fstable.json"
    assert startup.object_path("a b?#%", "") == "a%20b%3F%23%25%2F"
    assert isinstance(startup.sh("x"), startup.ShellText)
