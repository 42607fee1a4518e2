"""The sandbox's STAND-IN packages: catalog names and versions, and tools that print the real formats.

Each tool runs straight from its extracted .deb with CNCTL_STANDIN_ROOT pointing into a temp dir, so nothing
on this machine is read or written.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from cnctl.catalog import catalog
from cnctl.sandbox.site import STANDIN_MARK, nv_tegra_release
from cnhost.gpu_metrics import QUERY, parse_nvidia_smi, parse_tegrastats, samples
from tests.unit.test_gpu_metrics import promtool_check
from tests.unit.test_metrics import samples as series

CAT = catalog().platforms
REPO = Path(__file__).resolve().parents[2]


def field(deb: Path, name: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), name], check=True, capture_output=True,
                          text=True).stdout.strip()


def run(root: Path, exe: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(root / exe.lstrip("/")), *args], capture_output=True, text=True, timeout=20, check=False,
                          env={**os.environ, "CNCTL_STANDIN_ROOT": str(root), **(env or {})})


def first_lines(root: Path, exe: str, *args: str, count: int, prefix: tuple[str, ...] = ()) -> list[str]:
    """The first `count` lines a looping stand-in prints; then it is killed (by its Popen, after 20 s at most)."""
    process = subprocess.Popen([*prefix, str(root / exe.lstrip("/")), *args], stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "CNCTL_STANDIN_ROOT": str(root)})
    guard = threading.Timer(20, process.kill)
    guard.start()
    try:
        assert process.stdout is not None
        return [process.stdout.readline().rstrip("\n") for _ in range(count)]
    finally:
        guard.cancel()
        process.kill()
        process.communicate()


def collector(root: Path, tool: str, textfile: Path) -> subprocess.CompletedProcess:
    """cnhost/gpu_metrics.py --once against the stand-in `tool` of `root`, as the monitoring layer runs it."""
    env = {**os.environ, "CNCTL_STANDIN_ROOT": str(root), "PYTHONPATH": str(REPO),
           "PATH": f"{root / 'usr/bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    return subprocess.run([sys.executable, "-m", "cnhost.gpu_metrics", "--tool", tool, "--textfile", str(textfile),
                           "--interval", "1", "--once"], env=env, capture_output=True, text=True, timeout=60,
                          check=False)


def expected_packages() -> list[tuple[str, str]]:
    """(name, version) of every package the catalog says the sandbox must imitate."""
    out = []
    for b in CAT.servers.driver_branches:
        out += [(p, f"{b.version}-1" if p.startswith("cuda-drivers") else f"{b.version}-0ubuntu1") for p in b.packages]
    out.append((CAT.servers.cuda_repo.keyring_package, CAT.servers.cuda_repo.keyring_version))
    out += [(k.package, k.version) for k in CAT.servers.cuda_toolkits]
    ctk = CAT.container.nvidia_container_toolkit
    out += [(p, ctk.version) for p in ctk.packages]
    docker = CAT.container.docker
    bookworm = next(o for o in CAT.servers.os if o.codename == "bookworm")
    out += [(p, docker.containerd_version if p == "containerd.io" else docker.apt_version(bookworm))
            for p in docker.packages]
    for rel in CAT.jetson.releases:
        core, jp = rel.packages["nvidia-l4t-core"], rel.packages["nvidia-jetpack"]
        out += [("nvidia-l4t-core", core), ("nvidia-l4t-tools", core), ("nvidia-jetpack", jp), ("nvidia-container", jp)]
    return out


@pytest.mark.parametrize("name,version", expected_packages())
def test_deb_carries_catalog_name_and_version_and_says_standin(deb_of, name, version):
    deb = deb_of(name, version)
    assert field(deb, "Package") == name
    assert field(deb, "Version") == version
    assert field(deb, "Description").startswith(f"{STANDIN_MARK}, not ")
    assert " software: " in field(deb, "Description").splitlines()[0]
    assert field(deb, "Maintainer") == "cnctl sandbox <noreply@invalid>"


def test_real_dependency_chains(deb_of):
    v = CAT.container.nvidia_container_toolkit.version
    assert f"nvidia-container-toolkit-base (= {v})" in field(deb_of("nvidia-container-toolkit", v), "Depends")
    assert f"libnvidia-container1 (>= {v})" in field(deb_of("libnvidia-container-tools", v), "Depends")
    rel = CAT.jetson.releases[0]
    core = rel.packages["nvidia-l4t-core"]
    assert field(deb_of("nvidia-jetpack", rel.packages["nvidia-jetpack"]), "Depends") == f"nvidia-l4t-core (= {core})"
    assert "arm64" in field(deb_of("nvidia-l4t-core", core), "Description")


def test_maintainer_scripts_are_valid_sh(site_content, tmp_path):
    for _, _, filename in site_content.packages:
        ctl = tmp_path / filename
        subprocess.run(["dpkg-deb", "-e", str(site_content.apt_dir / filename), str(ctl)], check=True)
        for script in ("postinst", "prerm", "postrm"):
            if (ctl / script).exists():
                subprocess.run(["sh", "-n", str(ctl / script)], check=True)


# --- nvidia-smi ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def smi_root(deb_of, extract_deb):
    branch = CAT.servers.driver_branches[0]
    return extract_deb(deb_of(f"nvidia-utils-{branch.branch}")), branch


@pytest.fixture
def smi(smi_root, tmp_path):
    """A fresh stand-in root holding the extracted nvidia-smi (knob files start empty)."""
    root, branch = smi_root
    (tmp_path / "usr/bin").mkdir(parents=True)
    shutil.copy2(root / "usr/bin/nvidia-smi", tmp_path / "usr/bin/nvidia-smi")
    return tmp_path, branch


def test_nvidia_smi_query_csv_matches_real_format(smi):
    root, branch = smi
    gpu = CAT.servers.gpus[0]
    q = "--query-gpu=name,driver_version,memory.total,pci.bus_id"
    res = run(root, "/usr/bin/nvidia-smi", q, "--format=csv")
    assert res.returncode == 0, res.stderr
    assert res.stdout == ("name, driver_version, memory.total [MiB], pci.bus_id\n"
                          f"{gpu.name}, {branch.version}, {gpu.memory_mib} MiB, 00000000:00:04.0\n")
    res = run(root, "/usr/bin/nvidia-smi", q, "--format=csv,noheader,nounits")
    assert res.stdout == f"{gpu.name}, {branch.version}, {gpu.memory_mib}, 00000000:00:04.0\n"


def test_nvidia_smi_gpu_comes_from_knob_file(smi):
    root, _ = smi
    l4 = next(g for g in CAT.servers.gpus if g.accelerator == "nvidia-l4")
    (root / "etc/cnctl-standin").mkdir(parents=True)
    (root / "etc/cnctl-standin/gpu").write_text(f"{l4.name}\n{l4.name}\n")
    res = run(root, "/usr/bin/nvidia-smi", "--query-gpu=index,name,memory.total", "--format=csv,noheader")
    assert res.stdout.splitlines() == [f"0, {l4.name}, {l4.memory_mib} MiB", f"1, {l4.name}, {l4.memory_mib} MiB"]
    listing = run(root, "/usr/bin/nvidia-smi", "-L").stdout.splitlines()
    assert len(listing) == 2
    uuid = r"GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    assert re.fullmatch(rf"GPU 0: {l4.name} \(UUID: {uuid}\)", listing[0])
    (root / "etc/cnctl-standin/gpu").write_text("NVIDIA GeForce Nonexistent\n")
    res = run(root, "/usr/bin/nvidia-smi", "-L")
    assert res.returncode == 6 and "unknown GPU" in res.stderr


def test_nvidia_smi_table_header_and_errors(smi):
    root, branch = smi
    res = run(root, "/usr/bin/nvidia-smi")
    assert res.returncode == 0
    lines = res.stdout.splitlines()
    assert re.search(rf"NVIDIA-SMI {re.escape(branch.version)}\s+Driver Version: {re.escape(branch.version)}\s+"
                     rf"CUDA Version: {re.escape(branch.max_cuda)}", res.stdout)
    assert {len(ln) for ln in lines[1:] if ln.startswith(("|", "+"))} == {91}  # the real table's width
    assert CAT.servers.gpus[0].name in res.stdout
    bad = run(root, "/usr/bin/nvidia-smi", "--bogus")
    assert bad.returncode == 2 and "Invalid combination of input arguments" in bad.stderr and not bad.stdout
    bad = run(root, "/usr/bin/nvidia-smi", "--query-gpu=bogus", "--format=csv")
    assert bad.returncode == 2 and 'Field "bogus" is not a valid field to query.' in bad.stderr
    (root / "etc/cnctl-standin").mkdir(parents=True)
    (root / "etc/cnctl-standin/driver-unloaded").touch()
    res = run(root, "/usr/bin/nvidia-smi")
    assert res.returncode == 9 and "couldn't communicate with the NVIDIA driver" in res.stdout


def test_nvidia_smi_loop_repeats_the_query_and_the_collectors_parser_reads_it(smi):
    """`--loop=SEC` prints a row per GPU each interval, nothing between the blocks: read by cnhost/gpu_metrics.py's
    parser, grouped by GPU index, like the real tool's. The temperature knob heats both GPUs; a field in the
    [N/A] knob is [N/A], which the parser leaves out."""
    root, _ = smi
    l4 = next(g for g in CAT.servers.gpus if g.accelerator == "nvidia-l4")
    (root / "etc/cnctl-standin").mkdir(parents=True)
    (root / "etc/cnctl-standin/gpu").write_text(f"{l4.name}\n{l4.name}\n")
    (root / "etc/cnctl-standin/gpu-temperature").write_text("91\n")
    (root / "etc/cnctl-standin/gpu-fields-na").write_text("power.draw\n")
    lines = first_lines(root, "/usr/bin/nvidia-smi", f"--query-gpu={','.join(QUERY)}", "--format=csv,noheader,nounits",
                        "--loop=1", count=4)
    blocks = samples(parse_nvidia_smi(lines))
    assert [[gpu["index"] for gpu in block] for block in blocks] == [[0, 1], [0, 1]]
    for gpu in (gpu for block in blocks for gpu in block):
        assert gpu["name"] == l4.name and gpu["temperature.gpu"] == 91 and "power.draw" not in gpu
        assert gpu["memory.used"] + gpu["memory.free"] == l4.memory_mib
        assert 0 <= gpu["utilization.gpu"] <= 100 and 0 <= gpu["utilization.memory"] <= 100
    assert [gpu["utilization.gpu"] for gpu in blocks[0]] == [0, 3]  # the first block is always the same
    assert run(root, "/usr/bin/nvidia-smi", "--query-gpu=index", "--format=csv", "--loop=0").returncode == 2


def test_nvidia_smi_power_and_memory_fields_keep_the_real_formats(smi):
    root, _ = smi
    q = "--query-gpu=power.draw,utilization.memory,memory.used,temperature.gpu"
    res = run(root, "/usr/bin/nvidia-smi", q, "--format=csv")
    assert res.stdout == ("power.draw [W], utilization.memory [%], memory.used [MiB], temperature.gpu\n"
                          "35.12 W, 0 %, 1 MiB, 34\n")
    (root / "etc/cnctl-standin").mkdir(parents=True)
    (root / "etc/cnctl-standin/gpu-fields-na").write_text("power.draw\nmemory.used\n")
    assert run(root, "/usr/bin/nvidia-smi", q, "--format=csv,noheader").stdout == "[N/A], 0 %, [N/A], 34\n"


def test_the_collector_writes_the_stand_in_nvidia_smis_sample(smi):
    root, _ = smi
    (root / "etc/cnctl-standin").mkdir(parents=True)
    (root / "etc/cnctl-standin/gpu-temperature").write_text("91\n")
    textfile = root / "node-exporter" / "gpu.prom"
    textfile.parent.mkdir()
    ran = collector(root, "nvidia-smi", textfile)
    assert ran.returncode == 0, ran.stderr
    text = textfile.read_text()
    temperature = next(line for line in text.splitlines() if line.startswith("DCGM_FI_DEV_GPU_TEMP{"))
    assert re.fullmatch(rf'DCGM_FI_DEV_GPU_TEMP{{gpu="0",UUID="GPU-[0-9a-f-]+",device="nvidia0",'
                        rf'modelName="{re.escape(CAT.servers.gpus[0].name)}"}} 91', temperature)
    assert series(text)['cnctl_gpu_collector_info{tool="nvidia-smi"}'] == "1"
    assert promtool_check(text) == []


# --- nvcc ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kit", CAT.servers.cuda_toolkits, ids=lambda k: k.package)
def test_nvcc_version_format(deb_of, extract_deb, kit):
    root = extract_deb(deb_of(kit.package, kit.version))
    res = run(root, f"/usr/local/cuda-{kit.cuda}/bin/nvcc", "--version")
    assert res.returncode == 0
    lines = res.stdout.splitlines()
    assert lines[0] == "nvcc: NVIDIA (R) Cuda compiler driver"
    assert re.fullmatch(r"Built on \w{3}_\w{3}_[_\d]{2}_\d\d:\d\d:\d\d_\w+_\d{4}", lines[2])
    assert lines[3] == f"Cuda compilation tools, release {kit.cuda}, V{kit.nvcc}"
    assert lines[4].startswith(f"Build cuda_{kit.cuda}.r{kit.cuda}/compiler.")
    version_json = json.loads((root / f"usr/local/cuda-{kit.cuda}/version.json").read_text())
    assert version_json["cuda_nvcc"]["version"] == kit.nvcc
    assert run(root, f"/usr/local/cuda-{kit.cuda}/bin/nvcc", "x.cu").returncode != 0


# --- Jetson: nvpmodel, jetson_clocks, nv_tegra_release ---------------------------------------------

@pytest.fixture
def l4t_tools(deb_of, extract_deb):
    rel = CAT.jetson.releases[0]
    root = extract_deb(deb_of("nvidia-l4t-tools", rel.packages["nvidia-l4t-core"]))
    # What the package's postinst does on a host: point /etc/nvpmodel.conf at the board's file.
    (root / "etc/nvpmodel.conf").symlink_to("nvpmodel/nvpmodel_p3701_0000.conf")
    return root


def test_nvpmodel_query_and_set(l4t_tools):
    root = l4t_tools
    conf = (root / "etc/nvpmodel.conf").read_text()
    for mode_id, name in [(0, "MAXN"), (1, "MODE_15W"), (2, "MODE_30W"), (3, "MODE_50W")]:
        assert f"< POWER_MODEL ID={mode_id} NAME={name} >" in conf
    assert run(root, "/usr/sbin/nvpmodel", "-q").stdout == "NV Power Mode: MAXN\n0\n"
    assert run(root, "/usr/sbin/nvpmodel", "-m", "2").returncode == 0
    assert (root / "var/lib/nvpmodel/status").read_text().startswith("pmode:0002")
    assert run(root, "/usr/sbin/nvpmodel", "-q").stdout == "NV Power Mode: MODE_30W\n2\n"
    bad = run(root, "/usr/sbin/nvpmodel", "-m", "9")
    assert bad.returncode != 0 and "NVPM ERROR" in bad.stderr


def test_jetson_clocks_show_store_restore(l4t_tools):
    root = l4t_tools
    show = run(root, "/usr/bin/jetson_clocks", "--show").stdout
    assert show.startswith("SOC family:tegra234  Machine:") and show.rstrip().endswith("NV Power Mode: MAXN")
    assert "FreqOverride=0" in show
    store = str(root / "dfs.conf")
    assert run(root, "/usr/bin/jetson_clocks", "--store", store).returncode == 0
    assert run(root, "/usr/bin/jetson_clocks").returncode == 0
    assert "FreqOverride=1" in run(root, "/usr/bin/jetson_clocks", "--show").stdout
    assert run(root, "/usr/bin/jetson_clocks", "--restore", store).returncode == 0
    assert "FreqOverride=0" in run(root, "/usr/bin/jetson_clocks", "--show").stdout
    assert run(root, "/usr/bin/jetson_clocks", "--restore", str(root / "missing.conf")).returncode == 1


def test_tegrastats_prints_the_r36_line_every_interval_for_the_collectors_parser(l4t_tools):
    """The same parser as for the real tool's lines; as root the line has what only root's tegrastats prints (EMC,
    the GPCs' frequencies), as another user not (run as nobody, from a copy it can read, when the test is root)."""
    root = l4t_tools
    (root / "etc/cnctl-standin").mkdir(parents=True)
    (root / "etc/cnctl-standin/gpu-temperature").write_text("93\n")
    runs: list[tuple[Path, tuple[str, ...], bool]] = [(root, (), os.geteuid() == 0)]
    readable = Path(tempfile.mkdtemp(prefix="tegrastats-"))
    try:
        if os.geteuid() == 0:
            readable.chmod(0o755)
            (readable / "usr/bin").mkdir(parents=True)
            shutil.copy2(root / "usr/bin/tegrastats", readable / "usr/bin/tegrastats")
            runs.append((readable, ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"), False))
        for where, prefix, as_root in runs:
            lines = first_lines(where, "/usr/bin/tegrastats", "--interval", "100", count=3, prefix=prefix)
            for line in lines:
                assert re.match(r"\d\d-\d\d-\d{4} \d\d:\d\d:\d\d RAM ", line), line
                sample = parse_tegrastats(line)
                assert sample["ram"]["total"] == 62801 << 20 and len(sample["cpus"]) == 12
                assert set(sample["power"]) == {"VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0", "VDDQ_VDD2_1V8AO"}
                assert "cv0" not in sample["temperatures"]  # -256C: no reading
                assert ("emc" in sample) == ("mhz" in sample["gpu"]) == as_root, line
            knob = 93.0 if where == root else 41.25
            assert {parse_tegrastats(line)["temperatures"]["gpu"] for line in lines} == {knob}
    finally:
        shutil.rmtree(readable)


def test_tegrastats_refuses_what_it_does_not_imitate(l4t_tools):
    for args in (["--logfile", "x"], ["--interval"], ["--interval", "soon"], ["--stop"]):
        res = run(l4t_tools, "/usr/bin/tegrastats", *args)
        assert res.returncode == 1 and "Usage: tegrastats" in res.stderr and res.stdout == ""


def test_the_collector_writes_the_stand_in_tegrastats_sample(l4t_tools):
    root = l4t_tools
    (root / "etc/cnctl-standin").mkdir(parents=True)
    (root / "etc/cnctl-standin/gpu-temperature").write_text("93\n")
    textfile = root / "node-exporter" / "gpu.prom"
    textfile.parent.mkdir()
    ran = collector(root, "tegrastats", textfile)
    assert ran.returncode == 0, ran.stderr
    text = textfile.read_text()
    assert re.search(r'^DCGM_FI_DEV_GPU_TEMP\{gpu="0",device="gr3d",modelName="[^"]*"\} 93\.0$', text, re.MULTILINE)
    assert series(text)['cnctl_tegra_power_watts{rail="VIN_SYS_5V0"}'] == "4.025"
    assert promtool_check(text) == []


def test_l4t_core_ships_nv_tegra_release(deb_of, extract_deb):
    for rel in CAT.jetson.releases:
        root = extract_deb(deb_of("nvidia-l4t-core", rel.packages["nvidia-l4t-core"]))
        text = (root / "etc/nv_tegra_release").read_text()
        assert text == nv_tegra_release(rel)
        first = text.splitlines()[0]
        # How jetson-containers parses it: "# R36 (release), REVISION: 3.0, ..." -> 36.3.0
        parts = first.split(", ")
        l4t = parts[0].removeprefix("# R").removesuffix(" (release)") + "." + parts[1].removeprefix("REVISION: ")
        assert l4t == rel.l4t
        assert len(text.splitlines()) == 4


# --- nvidia-ctk, docker ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ctk_root(deb_of, extract_deb):
    return extract_deb(deb_of("nvidia-container-toolkit-base"))


def test_nvidia_ctk_writes_daemon_json_like_the_real_tool(ctk_root, tmp_path):
    shutil.copytree(ctk_root / "usr", tmp_path / "usr")
    res = run(tmp_path, "/usr/bin/nvidia-ctk", "runtime", "configure", "--runtime=docker")
    assert res.returncode == 0, res.stderr
    assert "Wrote updated config to /etc/docker/daemon.json" in res.stderr
    written = (tmp_path / "etc/docker/daemon.json").read_text()
    assert written == ('{\n    "runtimes": {\n        "nvidia": {\n            "args": [],\n'
                       '            "path": "nvidia-container-runtime"\n        }\n    }\n}')


def test_nvidia_ctk_keeps_other_keys_and_sets_default(ctk_root, tmp_path):
    cfg = tmp_path / "custom" / "daemon.json"
    cfg.parent.mkdir()
    cfg.write_text(json.dumps({"log-driver": "journald", "runtimes": {"runc2": {"path": "/x"}}}))
    res = run(ctk_root, "/usr/bin/nvidia-ctk", "runtime", "configure", "--runtime=docker", "--set-as-default",
              "--config", str(cfg), env={"CNCTL_STANDIN_ROOT": "/"})
    assert res.returncode == 0, res.stderr
    data = json.loads(cfg.read_text())
    assert data == {"default-runtime": "nvidia", "log-driver": "journald",
                    "runtimes": {"nvidia": {"args": [], "path": "nvidia-container-runtime"}, "runc2": {"path": "/x"}}}
    assert cfg.read_text() == json.dumps(data, indent=4, sort_keys=True)  # Go's MarshalIndent layout


def test_nvidia_ctk_dry_run_and_refusals(ctk_root):
    res = run(ctk_root, "/usr/bin/nvidia-ctk", "runtime", "configure", "--runtime=docker", "--dry-run")
    assert res.returncode == 0 and json.loads(res.stdout)["runtimes"]["nvidia"]["path"] == "nvidia-container-runtime"
    assert not (ctk_root / "etc").exists()
    version = CAT.container.nvidia_container_toolkit.version.split("-")[0]
    assert run(ctk_root, "/usr/bin/nvidia-ctk", "--version").stdout.startswith(
        f"NVIDIA Container Toolkit CLI version {version}\n")
    assert run(ctk_root, "/usr/bin/nvidia-ctk", "runtime", "configure", "--runtime=podman").returncode == 1


def test_docker_standin_has_version_but_no_engine(deb_of, extract_deb):
    root = extract_deb(deb_of("docker-ce-cli"))
    res = run(root, "/usr/bin/docker", "--version")
    assert res.stdout.startswith(f"Docker version {CAT.container.docker.upstream_version}, build ")
    res = run(root, "/usr/bin/docker", "ps")
    assert res.returncode != 0 and "stand-in: no engine" in res.stderr
