"""Recipes of the sandbox's STAND-IN packages: NVIDIA's and Docker's package names and versions, fake contents.

Every name and version comes from `cnctl.catalog.catalog()` (the one copy of them); this module only decides
what each stand-in installs and how the packages depend on each other, following the real packages where
the reference notes know them (shared/reference/nvidia-platform.md). Nothing here is NVIDIA or Docker
software: every package says so in its Description and in /usr/share/doc/<package>/README.cnctl-standin.
The tools they install are the scripts in `standin_files/`, with catalog facts written into them.
"""

from __future__ import annotations

import pprint
from dataclasses import dataclass, field
from pathlib import Path

from cnctl.catalog import Catalog, JetsonRelease, catalog

STANDIN_FILES = Path(__file__).parent / "standin_files"
MAINTAINER = "cnctl sandbox <noreply@invalid>"
# Every stand-in Description starts with this, so a guard can refuse stand-ins outside the sandbox.
STANDIN_MARK = "STAND-IN for tests"



@dataclass(frozen=True)
class JetsonBoard:
    """The Jetson board the stand-ins pretend to be (not in the catalog: only the sandbox needs it).

    AGX Orin 64GB: power modes as in the reference notes; clock ceilings are plausible round figures. What its
    tegrastats prints (RAM and swap in MiB, idle clocks in MHz, the INA3221 rails with an idle draw in mW, NC twice)
    follows a real AGX Orin 64GB's line (GDWR/jetson_exporter issue 14).
    """

    conf: str = "nvpmodel_p3701_0000.conf"
    machine: str = "NVIDIA Jetson AGX Orin Developer Kit"
    modes: tuple[tuple[int, str], ...] = ((0, "MAXN"), (1, "MODE_15W"), (2, "MODE_30W"), (3, "MODE_50W"))
    default_mode: int = 0
    cpus: int = 12
    cpu_max_khz: int = 2201600
    gpu_max_hz: int = 1300500000
    emc_max_hz: int = 3199000000
    ram_mib: int = 62801
    ram_used_mib: int = 4321
    swap_mib: int = 31400
    cpu_idle_mhz: int = 729
    gpu_mhz: int = 306
    gpcs: int = 2
    emc_idle_mhz: int = 2133
    rails: tuple[tuple[str, int], ...] = (("VDD_GPU_SOC", 2340), ("VDD_CPU_CV", 390), ("VIN_SYS_5V0", 4025),
                                          ("NC", 0), ("VDDQ_VDD2_1V8AO", 301), ("NC", 0))


JETSON_BOARD = JetsonBoard()


@dataclass(frozen=True)
class StandinFile:
    """One file a stand-in package installs, at its absolute path on the host."""

    path: str
    content: bytes
    mode: int = 0o644


@dataclass(frozen=True)
class StandinPackage:
    """What `dpkg-deb --build` needs for one stand-in package."""

    name: str
    version: str
    architecture: str
    vendor: str  # whose software the real package is: "NVIDIA" or "Docker"
    summary: str
    details: str
    section: str = "utils"
    depends: tuple[str, ...] = ()
    provides: tuple[str, ...] = ()
    conflicts: tuple[str, ...] = ()
    replaces: tuple[str, ...] = ()
    files: tuple[StandinFile, ...] = ()
    postinst: str | None = None
    prerm: str | None = None
    postrm: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def filename(self) -> str:
        """The pool file name apt expects: name_version-without-epoch_arch.deb."""
        return f"{self.name}_{self.version.split(':', 1)[-1]}_{self.architecture}.deb"

    @property
    def description(self) -> str:
        return f"{STANDIN_MARK}, not {self.vendor} software: {self.summary}"

    def all_files(self) -> tuple[StandinFile, ...]:
        """The package's files plus the README every stand-in carries."""
        readme = (
            f"{self.description}\n\n{self.details}\n\n"
            f"Built by cnctl (cnctl/sandbox/site/standins.py) for the sandbox fleet only. It imitates the\n"
            f"real package's name, version and command-line formats; it contains no {self.vendor} code.\n"
        )
        return self.files + (StandinFile(f"/usr/share/doc/{self.name}/README.cnctl-standin", readme.encode()),)

    def control(self) -> str:
        """The DEBIAN/control text."""
        size_kib = max(1, sum(len(f.content) for f in self.all_files()) // 1024)
        fields = {
            "Package": self.name,
            "Version": self.version,
            "Architecture": self.architecture,
            "Maintainer": MAINTAINER,
            "Installed-Size": str(size_kib),
            "Depends": ", ".join(self.depends),
            "Provides": ", ".join(self.provides),
            "Conflicts": ", ".join(self.conflicts),
            "Replaces": ", ".join(self.replaces),
            "Section": self.section,
            "Priority": "optional",
            **self.extra,
        }
        lines = [f"{key}: {value}" for key, value in fields.items() if value]
        long = [f" {ln}" if ln.strip() else " ." for ln in self.details.splitlines()]
        return "\n".join([*lines, f"Description: {self.description}", *long]) + "\n"


def render_tool(script: str, facts: dict) -> bytes:
    """A stand-in tool from `standin_files/` with its `FACTS = {}  # @FACTS@` line filled in."""
    text = (STANDIN_FILES / script).read_text(encoding="utf-8")
    marker = "FACTS = {}  # @FACTS@"
    if facts:
        if marker not in text:
            raise ValueError(f"{script} has no FACTS marker")
        text = text.replace(marker, "FACTS = " + pprint.pformat(facts, width=100, sort_dicts=True))
    return text.encode()


def tool(path: str, script: str, facts: dict) -> StandinFile:
    return StandinFile(path, render_tool(script, facts), 0o755)


def shell_tool(path: str, script: str, version: str) -> StandinFile:
    """A stand-in shell script from `standin_files/` with its @VERSION@ filled in (no Python: it runs per call)."""
    text = (STANDIN_FILES / script).read_text(encoding="utf-8").replace("@VERSION@", version)
    return StandinFile(path, text.encode(), 0o755)


# Servers and cloud VMs are x86_64; Jetsons are arm64. Packages for both are built once per architecture.
SERVER_ARCH = "amd64"
JETSON_ARCH = "arm64"


# --- servers: drivers and CUDA -------------------------------------------------------------------


def driver_packages(cat: Catalog) -> list[StandinPackage]:
    """Per driver branch: cuda-drivers-<b> -> nvidia-driver-<b> -> nvidia-utils-<b> + libnvidia-compute-<b>."""
    servers = cat.platforms.servers
    gpus = {gpu.name: gpu.memory_mib for gpu in servers.gpus}
    out = []
    for branch in servers.driver_branches:
        b, v = branch.branch, branch.version
        ubuntu_v = f"{v}-0ubuntu1"  # NVIDIA's repo versions the components like Ubuntu does
        smi_facts = {"driver": v, "cuda": branch.max_cuda, "gpus": gpus, "default_gpu": servers.gpus[0].name}
        for name in branch.packages:
            if name.startswith("cuda-drivers"):
                pkg = StandinPackage(
                    name, f"{v}-1", "amd64", "NVIDIA", f"CUDA driver meta package, branch {b}",
                    f"Real package: pulls the R{b} driver from NVIDIA's CUDA repository.",
                    section="multiverse/metapackages", depends=(f"nvidia-driver-{b} (>= {v})",))
            elif name.startswith("nvidia-driver"):
                pkg = StandinPackage(
                    name, ubuntu_v, "amd64", "NVIDIA", f"NVIDIA driver metapackage, branch {b}",
                    f"Real package: the R{b} kernel module and user-space driver. Only one branch installs.",
                    section="restricted/libs",
                    depends=(f"nvidia-utils-{b} (= {ubuntu_v})", f"libnvidia-compute-{b} (= {ubuntu_v})"),
                    provides=("nvidia-driver-binary",), conflicts=("nvidia-driver-binary",),
                    replaces=("nvidia-driver-binary",))
            elif name.startswith("nvidia-utils"):
                pkg = StandinPackage(
                    name, ubuntu_v, "amd64", "NVIDIA", f"NVIDIA driver support binaries, branch {b}",
                    "Installs a stand-in /usr/bin/nvidia-smi printing the real tool's formats; the GPU it\n"
                    "reports is read from /etc/cnctl-standin/gpu (catalog GPU names, one per line).",
                    section="restricted/utils", depends=("python3",),
                    provides=("nvidia-utils",), conflicts=("nvidia-utils",), replaces=("nvidia-utils",),
                    files=(tool("/usr/bin/nvidia-smi", "nvidia-smi", smi_facts),))
            else:
                pkg = StandinPackage(
                    name, ubuntu_v, "amd64", "NVIDIA", f"{name} (branch {b}), contents omitted",
                    "Real package: part of the NVIDIA driver. This stand-in installs only its README.",
                    section="restricted/libs")
            out.append(pkg)
    return out


def cuda_packages(cat: Catalog) -> list[StandinPackage]:
    """cuda-keyring (README only) and each cuda-toolkit-X-Y with /usr/local/cuda-X.Y/bin/nvcc."""
    servers = cat.platforms.servers
    repo = servers.cuda_repo
    out = [StandinPackage(
        repo.keyring_package, repo.keyring_version, "all", "NVIDIA", "CUDA repository keyring",
        f"Real package: installs {repo.keyring_file} and the CUDA apt source.\n"
        "This stand-in installs nothing but its README: the sandbox repository is signed by a\n"
        "throwaway key the sandbox installs itself.", section="misc")]
    for kit in servers.cuda_toolkits:
        prefix = f"/usr/local/cuda-{kit.cuda}"
        priority = kit.cuda.replace(".", "")
        version_json = (
            '{\n   "cuda" : {\n      "name" : "CUDA SDK",\n'
            f'      "version" : "{kit.version.split("-")[0]}"\n   }},\n'
            '   "cuda_nvcc" : {\n      "name" : "CUDA NVCC",\n'
            f'      "version" : "{kit.nvcc}"\n   }}\n}}\n'
        )
        # The real toolkit points /usr/local/cuda and /usr/local/cuda-12 at itself through alternatives.
        postinst = (
            "#!/bin/sh\nset -e\nif [ \"$1\" = configure ]; then\n"
            f"  update-alternatives --install /usr/local/cuda cuda {prefix} {priority}\n"
            f"  update-alternatives --install /usr/local/cuda-{kit.cuda.split('.')[0]} "
            f"cuda-{kit.cuda.split('.')[0]} {prefix} {priority}\nfi\n"
        )
        prerm = (
            "#!/bin/sh\nset -e\nif [ \"$1\" = remove ] || [ \"$1\" = deconfigure ]; then\n"
            f"  update-alternatives --remove cuda {prefix}\n"
            f"  update-alternatives --remove cuda-{kit.cuda.split('.')[0]} {prefix}\nfi\n"
        )
        out.append(StandinPackage(
            kit.package, kit.version, "amd64", "NVIDIA", f"CUDA Toolkit {kit.cuda} meta-package",
            f"Installs a stand-in {prefix}/bin/nvcc that answers --version like nvcc {kit.nvcc},\n"
            f"{prefix}/version.json, and the /usr/local/cuda alternatives the real toolkit sets.",
            section="multiverse/devel", depends=("python3",),
            files=(tool(f"{prefix}/bin/nvcc", "nvcc", {"cuda": kit.cuda, "nvcc": kit.nvcc}),
                   StandinFile(f"{prefix}/version.json", version_json.encode())),
            postinst=postinst, prerm=prerm))
    return out


# --- container: NVIDIA Container Toolkit and Docker CE ----------------------------------------------


def container_toolkit_packages(cat: Catalog) -> list[StandinPackage]:
    """The four toolkit packages with the real dependency chain, for servers (amd64) and Jetsons (arm64).

    nvidia-ctk configures docker's daemon.json for real; nvidia-container-runtime runs containers through runc.
    """
    ctk = cat.platforms.container.nvidia_container_toolkit
    v = ctk.version
    upstream = v.split("-")[0]
    facts = {"version": upstream}
    recipes = {
        "libnvidia-container1": ((), (), "NVIDIA container runtime library (contents omitted)"),
        "libnvidia-container-tools": (
            (f"libnvidia-container1 (>= {v})", "libnvidia-container1 (<< 2.0.0)"),
            (tool("/usr/bin/nvidia-container-cli", "no-engine", facts),),
            "NVIDIA container runtime library (command-line tools)"),
        "nvidia-container-toolkit-base": (
            (),
            (tool("/usr/bin/nvidia-ctk", "nvidia-ctk", facts),
             shell_tool("/usr/bin/nvidia-container-runtime", "nvidia-container-runtime", upstream)),
            "NVIDIA Container Toolkit Base (nvidia-ctk configures docker's daemon.json like the real one)"),
        "nvidia-container-toolkit": (
            (f"libnvidia-container-tools (>= {v})", "libnvidia-container-tools (<< 2.0.0)",
             f"nvidia-container-toolkit-base (= {v})"),
            (tool("/usr/bin/nvidia-container-runtime-hook", "no-engine", facts),),
            "NVIDIA Container toolkit"),
    }
    out = []
    for arch in (SERVER_ARCH, JETSON_ARCH):
        for name in ctk.packages:
            depends, files, summary = recipes[name]
            out.append(StandinPackage(
                name, v, arch, "NVIDIA", summary,
                "Real package: NVIDIA Container Toolkit. nvidia-container-runtime hands every call to runc\n"
                "(no GPU to inject); the hook and nvidia-container-cli only answer --version.",
                depends=(*depends, "python3") if files else depends, files=files))
    return out


def docker_packages(cat: Catalog) -> list[StandinPackage]:
    """docker-ce, docker-ce-cli, containerd.io for the sandbox hosts' OS (Debian bookworm)."""
    docker = cat.platforms.container.docker
    bookworm = next(os for os in cat.platforms.servers.os if os.codename == "bookworm")
    v = docker.apt_version(bookworm)
    facts = {"version": docker.upstream_version}
    unit = (
        "# STAND-IN for tests (cnctl sandbox), not Docker software: no engine runs here.\n"
        "[Unit]\nDescription=Docker Application Container Engine (cnctl sandbox STAND-IN, no engine)\n"
        "After=network-online.target\n\n[Service]\nType=simple\nExecStart=/usr/bin/dockerd\n"
        "Restart=on-failure\n\n[Install]\nWantedBy=multi-user.target\n"
    )
    recipes = {
        "containerd.io": (docker.containerd_version, (), (), "An open and reliable container runtime"),
        "docker-ce-cli": (v, ("python3",), (tool("/usr/bin/docker", "docker", facts),),
                          "Docker CLI: the open-source application container engine"),
        "docker-ce": (v, ("containerd.io (>= 1.6.24)", "docker-ce-cli", "python3"),
                      (tool("/usr/bin/dockerd", "docker", facts),
                       StandinFile("/lib/systemd/system/docker.service", unit.encode())),
                      "Docker: the open-source application container engine"),
    }
    out = []
    for name in docker.packages:
        version, depends, files, summary = recipes[name]
        out.append(StandinPackage(
            name, version, "amd64", "Docker", summary,
            "A Docker engine cannot run inside the sandbox hosts: `docker --version` answers, anything\n"
            "else exits non-zero with \"stand-in: no engine\". docker.service runs an idle stand-in dockerd.",
            section="admin", depends=depends, files=files))
    return out


# --- Jetson: L4T and JetPack ------------------------------------------------------------------------


def nv_tegra_release(release: JetsonRelease) -> str:
    """/etc/nv_tegra_release as nvidia-l4t-core of `release` ships it (the platform matrix renders it)."""
    return release.nv_tegra_release()


def nvpmodel_conf() -> str:
    """The stand-in board's power model file in the real `< POWER_MODEL ID=n NAME=X >` format."""
    lines = ["# STAND-IN for tests (cnctl sandbox), not NVIDIA software: AGX Orin 64GB power models."]
    for mode_id, name in JETSON_BOARD.modes:
        lines += [f"< POWER_MODEL ID={mode_id} NAME={name} >", "CPU_ONLINE CORE_0 1", "GPU MAX_FREQ -1",
                  "EMC MAX_FREQ -1", ""]
    lines.append(f"< PM_CONFIG DEFAULT={JETSON_BOARD.default_mode} >")
    return "\n".join(lines) + "\n"


ARM64_NOTE = "Architecture: arm64, as the real package (sandbox Jetson hosts are arm64 under qemu-user)."


def jetson_packages(cat: Catalog) -> list[StandinPackage]:
    """Per JetPack release: nvidia-l4t-core, nvidia-l4t-tools, nvidia-jetpack, nvidia-container."""
    jetson = cat.platforms.jetson
    conf_path = f"/etc/nvpmodel/{JETSON_BOARD.conf}"
    board = JETSON_BOARD
    clocks_facts = {"soc": jetson.soc.replace("t", "tegra", 1), "machine": board.machine, "cpus": board.cpus,
                    "cpu_max_khz": board.cpu_max_khz, "gpu_max_hz": board.gpu_max_hz, "emc_max_hz": board.emc_max_hz}
    stats_facts = {"cpus": board.cpus, "ram_mib": board.ram_mib, "ram_used_mib": board.ram_used_mib,
                   "swap_mib": board.swap_mib, "cpu_mhz": board.cpu_idle_mhz, "gpu_mhz": board.gpu_mhz,
                   "gpcs": board.gpcs, "emc_mhz": board.emc_idle_mhz, "rails": [list(rail) for rail in board.rails]}
    # Like the real package, a postinst points /etc/nvpmodel.conf at the board's file.
    postinst = ("#!/bin/sh\nset -e\nif [ \"$1\" = configure ] && [ ! -e /etc/nvpmodel.conf ]; then\n"
                f"  ln -s {conf_path} /etc/nvpmodel.conf\nfi\n")
    postrm = ("#!/bin/sh\nset -e\nif [ \"$1\" = remove ] || [ \"$1\" = purge ]; then\n"
              f"  if [ \"$(readlink /etc/nvpmodel.conf)\" = {conf_path} ]; then rm -f /etc/nvpmodel.conf; fi\nfi\n")
    out = []
    for rel in jetson.releases:
        l4t_v, jp_v = rel.packages["nvidia-l4t-core"], rel.packages["nvidia-jetpack"]
        out += [
            StandinPackage(
                "nvidia-l4t-core", l4t_v, JETSON_ARCH, "NVIDIA", f"NVIDIA Core Package (L4T {rel.l4t})",
                f"Installs /etc/nv_tegra_release for L4T {rel.l4t}.\n{ARM64_NOTE}",
                section="admin", files=(StandinFile("/etc/nv_tegra_release", nv_tegra_release(rel).encode()),)),
            StandinPackage(
                "nvidia-l4t-tools", l4t_v, JETSON_ARCH, "NVIDIA", f"NVIDIA Public Test Tools Package (L4T {rel.l4t})",
                "Installs stand-in /usr/sbin/nvpmodel, /usr/bin/jetson_clocks and /usr/bin/tegrastats (the\n"
                "real line format, every --interval ms; the GPU zone's temperature from\n"
                "/etc/cnctl-standin/gpu-temperature), and the board's power model file\n"
                f"{conf_path} (symlinked to /etc/nvpmodel.conf by the postinst).\n{ARM64_NOTE}",
                section="admin", depends=(f"nvidia-l4t-core (= {l4t_v})", "python3"),
                files=(tool("/usr/sbin/nvpmodel", "nvpmodel", {}),
                       tool("/usr/bin/jetson_clocks", "jetson_clocks", clocks_facts),
                       tool("/usr/bin/tegrastats", "tegrastats", stats_facts),
                       StandinFile(conf_path, nvpmodel_conf().encode())),
                postinst=postinst, postrm=postrm),
            StandinPackage(
                "nvidia-jetpack", jp_v, JETSON_ARCH, "NVIDIA", f"NVIDIA Jetpack Meta Package (JetPack {rel.jetpack})",
                f"Real package: the JetPack {rel.jetpack} SDK (CUDA {rel.cuda}, TensorRT {rel.tensorrt}).\n"
                + ARM64_NOTE,
                section="metapackages", depends=(f"nvidia-l4t-core (= {l4t_v})",)),
            StandinPackage(
                "nvidia-container", jp_v, JETSON_ARCH, "NVIDIA", f"NVIDIA Container Meta Package (JetPack {rel.jetpack})",
                f"Real package: the Jetson container runtime stack.\n{ARM64_NOTE}",
                section="metapackages", depends=("nvidia-container-toolkit",)),
        ]
    return out


def all_packages(cat: Catalog | None = None) -> list[StandinPackage]:
    """Every stand-in package the sandbox apt repository carries."""
    cat = cat or catalog()
    return [*driver_packages(cat), *cuda_packages(cat), *container_toolkit_packages(cat),
            *docker_packages(cat), *jetson_packages(cat)]
