"""The deploy's closing table: seconds per layer and host, so a slow run says where its time went."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

from pyinfra.api.state import BaseStateCallback

from deploy.timing import OTHER, LayerTimes, layer_of

REPO = Path(__file__).resolve().parents[2]


class FakeState:
    def __init__(self, names: dict[str, set[str]]) -> None:
        self._names = names

    def get_op_meta(self, op_hash: str) -> SimpleNamespace:
        return SimpleNamespace(names=self._names[op_hash])


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def host(name: str) -> SimpleNamespace:
    return SimpleNamespace(name=name)


def test_an_operation_belongs_to_the_layer_its_name_starts_with() -> None:
    assert layer_of({"Inference | Inference: the venv"}) == "Inference"
    assert layer_of({"Jetson: JetPack, power mode, clocks | JetPack components: packages"}) == "Jetson"
    assert layer_of({"NVIDIA driver and CUDA | NVIDIA: nouveau blacklisted"}) == "NVIDIA driver and CUDA"
    assert layer_of({"Inference: the venv"}) == "Inference"  # an operation outside a deploy: its own title
    assert layer_of({"Pipeline: uploader enabled and running"}) == "Pipeline"
    assert layer_of({"a name without a title"}) == OTHER


def test_a_layer_takes_each_hosts_own_time_and_the_slowest_host_per_operation_for_the_run() -> None:
    state = FakeState({"venv": {"Inference: the venv"}, "wheels": {"Inference: the wheels"}, "key": {"Platform: key"}})
    clock = Clock()
    times = LayerTimes(clock)
    assert isinstance(times, BaseStateCallback)  # what pyinfra's add_callback_handler accepts
    jetson, server = host("belt-1-orin"), host("gpu-server-1")
    for op, took in (("key", {"belt-1-orin": 1.0, "gpu-server-1": 2.0}),
                     ("venv", {"belt-1-orin": 30.0, "gpu-server-1": 3.0}),
                     ("wheels", {"belt-1-orin": 100.0, "gpu-server-1": 10.0})):
        start = clock.now
        for h in (jetson, server):
            times.operation_host_start(state, h, op)
        for h in (server, jetson) if took["gpu-server-1"] < took["belt-1-orin"] else (jetson, server):
            clock.now = start + took[h.name]
            (times.operation_host_error if op == "key" and h is jetson else times.operation_host_success)(state, h, op)
        times.operation_end(state, op)
    assert times.per_host == {("Platform", "belt-1-orin"): 1.0, ("Platform", "gpu-server-1"): 2.0,
                              ("Inference", "belt-1-orin"): 130.0, ("Inference", "gpu-server-1"): 13.0}
    assert times.wall == {"Platform": 2.0, "Inference": 130.0}
    lines = times.table()
    assert lines[1].split() == ["layer", "wall", "s", "belt-1-orin", "gpu-server-1"]
    assert lines[2].split() == ["Platform", "2.0", "1.0", "2.0"]
    assert lines[3].split() == ["Inference", "130.0", "130.0", "13.0"]
    assert lines[4].split() == ["total", "132.0"]


def test_a_layer_a_host_never_ran_shows_a_dash_and_a_run_without_operations_prints_nothing() -> None:
    state = FakeState({"jetson": {"Jetson: nvpmodel"}})
    times = LayerTimes(Clock())
    assert times.table() == []  # a dry run executes nothing
    times.operation_host_start(state, host("belt-1-orin"), "jetson")
    times.operation_host_success(state, host("belt-1-orin"), "jetson")
    times.operation_end(state, "jetson")
    times.hosts.append("gpu-server-1")
    assert times.table()[2].split() == ["Jetson", "0.0", "0.0", "-"]


def test_a_real_pyinfra_run_ends_with_the_table_on_stderr_and_keeps_its_json_on_stdout(tmp_path) -> None:
    deploy = tmp_path / "deploy_two_layers.py"
    deploy.write_text(
        "from pyinfra import state\nfrom pyinfra.api import deploy\nfrom pyinfra.operations import server\n"
        "from deploy.timing import install\n"
        "install(state)\n"
        "server.shell(name='Model: a pause', commands=['sleep 0.3'])\n"
        "@deploy('Verify')\ndef verify():\n    server.shell(name='Verify: true', commands=['true'])\n"
        "verify()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([str(REPO / ".venv" / "bin" / "pyinfra"), "--json", "-y", "@local", str(deploy)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    json.loads(done.stdout)
    tail = done.stderr.strip().splitlines()[-5:]
    assert tail[0].startswith("Time per layer"), done.stderr[-1500:]
    model = tail[2].split()  # tail[1] is the header
    assert model[0] == "Model" and 0.3 <= float(model[1]) < 10 and model[1] == model[2], tail
    assert tail[3].split()[0] == "Verify" and tail[4].split()[0] == "total"
