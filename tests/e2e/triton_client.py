"""The tests' client of a sandbox host's Triton: tritonclient over HTTP, from inside the host's network namespace.

Triton binds the host's loopback (the stack's default), so a client must stand where the host does: each
call runs `ip netns exec <host's namespace>` with this venv's Python and tritonclient. `infer_loop` keeps
one client process sending requests until told to stop, and reports every answer's model version or error.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from cnctl.sandbox import fleet as sandbox

# One inference of the stand-in model through tritonclient: a grey image with one red patch, so the stand-in
# answers with one detection whose class depends on the archive's revision.
CLIENT = r"""
import json, sys, time
import numpy as np
import tritonclient.http as http

url, model, mode = sys.argv[1], sys.argv[2], sys.argv[3]
client = http.InferenceServerClient(url, connection_timeout=10, network_timeout=30)
image = np.full((1, 1024, 1024, 3), 40, np.uint8)
image[0, 300:500, 600:800] = (200, 30, 30)

def once():
    tensor = http.InferInput("inputs", list(image.shape), "UINT8")
    tensor.set_data_from_numpy(image, binary_data=True)
    outputs = [http.InferRequestedOutput(n) for n in ("num_detections", "detection_classes", "detection_boxes")]
    result = client.infer(model, [tensor], outputs=outputs)
    answer = result.get_response()
    return {"version": answer["model_version"], "num_detections": result.as_numpy("num_detections").tolist(),
            "class": int(result.as_numpy("detection_classes")[0][0]),
            "box": [round(float(v)) for v in result.as_numpy("detection_boxes")[0][0]]}

if mode == "once":
    print(json.dumps(once()), flush=True)
else:
    deadline = time.monotonic() + float(mode)  # a bound, should the parent never stop it
    while time.monotonic() < deadline:
        try:
            print(json.dumps(once()), flush=True)
        except Exception as exc:  # every failed request is a finding, reported and counted
            print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
            time.sleep(0.2)
"""

URL = "127.0.0.1:8000"
MODEL = "circularnet"


def _command(host: sandbox.FreshHost, mode: str) -> list[str]:
    return ["ip", "netns", "exec", host.state.netns, sys.executable, "-c", CLIENT, URL, MODEL, mode]


def infer(host: sandbox.FreshHost) -> dict:
    """One inference on `host`'s Triton: {"version", "num_detections", "class", "box"}."""
    result = subprocess.run(_command(host, "once"), capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


@dataclass
class Loop:
    """A client process sending requests in a loop; `stop()` ends it and counts the answers. Its answers go to a
    file, not a pipe: a pipe nobody reads fills after ~800 answers and then blocks the client silently."""

    proc: subprocess.Popen[bytes]
    log: Path
    versions: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    order: list[str] = field(default_factory=list)
    outlived: bool = False  # still sending when stopped: the answers cover the whole time

    def stop(self) -> Loop:
        self.outlived = self.proc.poll() is None
        if self.outlived:
            os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=60)
        lines = self.log.read_text().splitlines()
        self.log.unlink()
        for line in lines:
            answer = json.loads(line)
            if "error" in answer:
                self.errors.append(answer["error"])
            else:
                self.versions[answer["version"]] += 1
                self.order.append(answer["version"])
        return self


def infer_loop(host: sandbox.FreshHost, bound_s: float = 3600) -> Loop:
    """Start sending requests to `host`'s Triton, one after the other, until `Loop.stop()` (or `bound_s`)."""
    fd, name = tempfile.mkstemp(prefix="infer-loop-", suffix=".jsonl")
    try:
        proc = subprocess.Popen(_command(host, str(bound_s)), stdout=fd, stderr=subprocess.DEVNULL, start_new_session=True)
    finally:
        os.close(fd)
    return Loop(proc, Path(name))
