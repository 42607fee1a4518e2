"""Site services of the sandbox fleet: what a GPU site's network offers its hosts, as stand-ins.

`build_site_content()` builds (once, cached outside the repository) the signed apt repository of STAND-IN
NVIDIA/Docker packages, the wheelhouse with a real CPU Triton and the pipeline uploader's wheels (x86_64 and
aarch64), the STAND-IN CircularNet model archives, and the STAND-IN pipeline client archive and replay footage
(`pipeline.py`). Given the hosts' images (`host_images`, as `cnctl sandbox up` does) it also adds Debian's REAL
Docker engine packages for both architectures to the apt repository (`debian.py`) and builds the site
registry's STAND-IN Triton images (`tritonimage.py`).
`start_site_services()` serves them (artifact server: /apt/ and /artifacts/, with switchable faults; the
container registry over TLS, when built) next to a GCS emulator and an S3 emulator (moto), inside the site's
network namespace; `stop_site_services()` stops exactly the processes it started.

Cache layout (`<cache>/site/`): gnupg/ (throwaway signing key, 0700), apt/ (flat repo, served at /apt/),
debian/ (the real .debs), registry/ (registry storage, served read-only), artifacts/models/,
artifacts/wheelhouse/, artifacts/clients/ and artifacts/footage/ (served at /artifacts/), stamps/ (recipe
hashes), .lock.
State layout (`<state_dir>/site/`): <service>.pid, <service>.log, artifacts-requests.log (JSON lines),
endpoints.json, gcs/ (the GCS emulator's objects), registry.yml and tls/ (the registry's certificate).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cnctl.catalog import catalog
from cnctl.paths import REPO_ROOT
from cnctl.sandbox import instance
from cnctl.sandbox.site import (
    aptrepo,
    artifacts,
    debian,
    emulators,
    model,
    pipeline,
    probe,
    processes,
    recipe,
    registry,
    standins,
    tritonimage,
    wheelhouse,
)
from cnctl.sandbox.site.model import ModelArchive
from cnctl.sandbox.site.pipeline import Artifact
from cnctl.sandbox.site.standins import STANDIN_MARK, nv_tegra_release

__all__ = [
    "DEFAULT_CACHE", "STANDIN_MARK", "Artifact", "ModelArchive", "SiteContent", "SiteEndpoints",
    "build_site_content", "nv_tegra_release", "prefetch_site_content", "start_site_services", "stop_site_services",
]

DEFAULT_CACHE = Path(os.environ.get("CNCTL_CACHE") or instance.DEFAULT_CACHE)
HTTP_PORT, GCS_PORT, S3_PORT, REGISTRY_PORT = 8080, 9023, 5000, registry.PORT
SERVICES = ("artifacts", "gcs", "s3")  # plus "registry" where the content has one


@dataclass(frozen=True)
class SiteEndpoints:
    """Where a running site serves what; hosts reach these addresses over the site bridge."""

    apt_url: str  # flat repo: `deb [signed-by=/etc/apt/keyrings/cnctl-sandbox.gpg] <apt_url> ./`
    apt_keyring: Path  # binary keyring for /etc/apt/keyrings/cnctl-sandbox.gpg
    artifacts_url: str  # {models,clients,footage}/<archive>.zip, wheelhouse/ (flat), wheelhouse/simple/ (PEP 503)
    gcs_url: str  # GCS emulator (STORAGE_EMULATOR_HOST)
    s3_url: str  # moto server (S3 endpoint_url)
    faults_url: str  # artifact server fault control: POST/GET/DELETE JSON
    registry: str | None = None  # host:port of the container registry (TLS), where the site has one
    registry_ca: Path | None = None  # the certificate hosts trust for it (/etc/docker/certs.d/<registry>/ca.crt)

    def to_json(self) -> dict:
        return {"apt_url": self.apt_url, "apt_keyring": str(self.apt_keyring), "artifacts_url": self.artifacts_url,
                "gcs_url": self.gcs_url, "s3_url": self.s3_url, "faults_url": self.faults_url,
                "registry": self.registry, "registry_ca": str(self.registry_ca) if self.registry_ca else None}

    @classmethod
    def from_json(cls, data: dict) -> SiteEndpoints:
        ca = data.get("registry_ca")
        return cls(apt_url=data["apt_url"], apt_keyring=Path(data["apt_keyring"]),
                   artifacts_url=data["artifacts_url"], gcs_url=data["gcs_url"], s3_url=data["s3_url"],
                   faults_url=data["faults_url"], registry=data.get("registry"), registry_ca=Path(ca) if ca else None)


@dataclass(frozen=True)
class SiteContent:
    """The built site content: paths in the cache, the stand-in packages, the model archives and their sha256."""

    site_dir: Path
    apt_dir: Path
    apt_keyring: Path
    artifacts_dir: Path
    wheelhouse_dir: Path
    models: dict[str, ModelArchive]  # by variant: "" (the one to pin), "v2", "broken"
    packages: tuple[tuple[str, str, str], ...] = field(default=())  # (name, version, .deb file name)
    registry_dir: Path | None = None  # registry storage, where the site serves container images
    images: dict[str, list[str]] = field(default_factory=dict)  # repository:tag served, per architecture
    client: Artifact | None = None  # the STAND-IN client archive (clients/sandbox_standin_client.zip)
    footage: Artifact | None = None  # the replay footage (footage/belt-replay.zip)

    @property
    def model_archive(self) -> Path:
        return self.models[""].path

    @property
    def model_sha256(self) -> str:
        return self.models[""].sha256

    @property
    def model_url_path(self) -> str:
        """The primary archive's path below `SiteEndpoints.artifacts_url`."""
        return self.models[""].url_path

    def to_json(self) -> dict:
        return {"site_dir": str(self.site_dir), "apt_dir": str(self.apt_dir), "apt_keyring": str(self.apt_keyring),
                "artifacts_dir": str(self.artifacts_dir), "wheelhouse_dir": str(self.wheelhouse_dir),
                "models": {k: v.to_json() for k, v in self.models.items()},
                "packages": [list(p) for p in self.packages],
                "registry_dir": str(self.registry_dir) if self.registry_dir else None, "images": self.images,
                "client": self.client.to_json() if self.client else None,
                "footage": self.footage.to_json() if self.footage else None}


# --- building --------------------------------------------------------------------------------------


def _site_dir(cache: Path) -> Path:
    cache = cache.resolve()
    if cache == REPO_ROOT or REPO_ROOT in cache.parents:
        raise ValueError(f"the site cache must live outside the repository, not in {cache}")
    return cache / "site"


def _signing_key(site: Path) -> str:
    """The throwaway key's fingerprint, generating the key on first use (recorded to spare gpg calls later)."""
    gnupg, record = site / "gnupg", site / "gnupg" / "cnctl-fingerprint"
    if record.is_file() and (gnupg / "pubring.kbx").is_file():
        return record.read_text().strip()
    with aptrepo.gpg_session(gnupg):
        fpr = aptrepo.ensure_signing_key(gnupg)
    record.write_text(fpr + "\n")
    return fpr


def _ensure_debian(site: Path, host_images: Mapping[str, Path], mirror: str,
                   progress: Callable[[str], None]) -> list[Path]:
    """Debian's real Docker engine packages, as each architecture's host image lacks them; returns the .debs."""
    target = site / "debian"
    digest = recipe.digest([repr(debian.PACKAGES), "no-recommends", mirror, Path(debian.__file__),
                            *(f"{arch}={debian.image_status(root).read_text()}" for arch, root in sorted(host_images.items()))])

    def build(out: Path) -> None:
        for arch, root in sorted(host_images.items()):
            progress(f"site: downloading Debian's {', '.join(debian.PACKAGES)} and dependencies for {arch}")
            with tempfile.TemporaryDirectory(dir=site, prefix=".apt-") as work:
                debian.download(debian.image_status(root), arch, mirror, tritonimage.SUITE, out, Path(work),
                                recommends=False)

    if not recipe.build_part(site, "debian", target, digest, build):
        progress("site: Debian packages up to date")
    return sorted(target.glob("*.deb"))


def _ensure_apt(site: Path, real_debs: list[Path], progress: Callable[[str], None]) -> None:
    fpr = _signing_key(site)
    here = Path(__file__).parent
    digest = recipe.digest([catalog().platforms.model_dump_json(), standins.STANDIN_FILES,
                            here / "standins.py", here / "debs.py", here / "aptrepo.py", fpr,
                            *(deb.name for deb in real_debs)])
    packages = standins.all_packages()

    def build(repo: Path) -> None:
        progress(f"site: building the signed apt repository ({len(packages)} stand-in packages, "
                 f"{len(real_debs)} Debian packages)")
        for deb in real_debs:
            os.link(deb, repo / deb.name)  # same filesystem (the site cache): no copy
        with tempfile.TemporaryDirectory(dir=site, prefix=".debs-") as work, aptrepo.gpg_session(site / "gnupg"):
            aptrepo.build_repo(repo, packages, site / "gnupg", fpr, Path(work))

    if not recipe.build_part(site, "apt", site / "apt", digest, build):
        progress("site: apt repository up to date")


def _ensure_registry(site: Path, mirror: str, progress: Callable[[str], None]) -> dict[str, list[str]]:
    """Registry storage with the STAND-IN Triton images under the platform matrix's tags."""
    here = Path(__file__).parent
    cat = catalog()
    digest = recipe.digest([repr(tritonimage.tags(cat)), mirror, here / "tritonimage.py", here / "registry.py",
                            here / "triton.py", recipe.digest(wheelhouse.triton_recipe_inputs())])

    def build(out: Path) -> None:
        progress("site: building the STAND-IN Triton images (amd64, arm64) for the site registry")
        with tempfile.TemporaryDirectory(dir=site, prefix=".images-") as work:
            tritonimage.build(out, cat, mirror, site / "artifacts" / "wheelhouse", Path(work))

    if not recipe.build_part(site, "registry", site / "registry", digest, build):
        progress("site: registry images up to date")
    return tritonimage.tags(cat)


def _ensure_models(site: Path, progress: Callable[[str], None]) -> None:
    def build(out: Path) -> None:
        progress("site: building the stand-in model archives")
        model.build_models(out)

    if not recipe.build_part(site, "models", site / "artifacts" / "models", recipe.digest(model.recipe_inputs()),
                             build):
        progress("site: model archives up to date")


def _ensure_pipeline(site: Path, progress: Callable[[str], None]) -> None:
    """The STAND-IN client archive and the replay footage, each its own part (the footage takes ~10 s)."""
    parts = (("clients", pipeline.client_recipe_inputs(), pipeline.build_clients, "the stand-in client archive"),
             ("footage", pipeline.footage_recipe_inputs(), pipeline.build_footage, "the replay footage"))
    for part, inputs, builder, what in parts:

        def build(out: Path, builder: Callable[[Path], None] = builder, what: str = what) -> None:
            progress(f"site: building {what}")
            builder(out)

        if not recipe.build_part(site, part, site / "artifacts" / part, recipe.digest(inputs), build):
            progress(f"site: {what} up to date")


def _ensure_wheelhouse(site: Path, progress: Callable[[str], None]) -> None:
    def build(out: Path) -> None:
        pins = wheelhouse.requirements()
        progress(f"site: downloading the wheelhouse ({len(pins)} pinned wheels: {', '.join(pins[:2])}, ...; "
                 "and the Triton wheels' dependencies)")
        wheelhouse.build_wheelhouse(out)

    target = site / "artifacts" / "wheelhouse"
    if not recipe.build_part(site, "wheelhouse", target, recipe.digest(wheelhouse.recipe_inputs()), build):
        progress("site: wheelhouse up to date")


def _ensure_image_free(site: Path, mirror: str | None, progress: Callable[[str], None]) -> dict[str, list[str]]:
    """The parts no host image decides: model archives, client and footage, wheelhouse and, given the Debian
    mirror, the registry images (their tags by architecture; none without a mirror)."""
    _ensure_models(site, progress)
    _ensure_pipeline(site, progress)
    _ensure_wheelhouse(site, progress)
    return _ensure_registry(site, mirror, progress) if mirror else {}


def prefetch_site_content(cache: Path = DEFAULT_CACHE, *, progress: Callable[[str], None] = print,
                          mirror: str) -> None:
    """Build the parts of the site content no host image decides (`_ensure_image_free`), so that they can be
    built while the host images are: native work and downloads beside the arm64 image's emulated dpkg.
    `build_site_content` then finds them current. Same lock, same recipes."""
    site = _site_dir(Path(cache))
    with recipe.locked(site):
        _ensure_image_free(site, mirror, progress)


def build_site_content(cache: Path = DEFAULT_CACHE, *, progress: Callable[[str], None] = print,
                       host_images: Mapping[str, Path] | None = None, mirror: str | None = None) -> SiteContent:
    """Ensure the cache holds the current site content (apt repo, models, client, footage, wheelhouse); returns
    where it is.

    With `host_images` ({dpkg architecture: image rootfs}) and the Debian `mirror` they were built from, the
    apt repository also carries Debian's real Docker engine packages for those architectures, and the site
    gets its registry of STAND-IN Triton images: what a fleet with a container engine needs.
    Idempotent: each part is rebuilt only when the hash of its recipe (catalog data, stand-in sources, builder
    code) changed. Safe to call from several processes at once (a file lock serialises builds).
    """
    site = _site_dir(Path(cache))
    images: dict[str, list[str]] = {}
    with recipe.locked(site):
        # Without host images, whatever Debian packages an earlier fleet build cached stay in the repository:
        # the repository only ever grows with them, never flips between callers.
        real_debs = (_ensure_debian(site, host_images, mirror, progress) if host_images and mirror
                     else sorted((site / "debian").glob("*.deb")) if recipe.is_current_any(site, "debian", site / "debian")
                     else [])
        _ensure_apt(site, real_debs, progress)
        images = _ensure_image_free(site, mirror if host_images else None, progress)
    apt_dir = site / "apt"
    return SiteContent(
        site_dir=site, apt_dir=apt_dir, apt_keyring=apt_dir / aptrepo.KEYRING_NAME,
        artifacts_dir=site / "artifacts", wheelhouse_dir=site / "artifacts" / "wheelhouse",
        models=model.read_archives(site / "artifacts" / "models"),
        packages=tuple((p.name, p.version, p.filename) for p in standins.all_packages()),
        registry_dir=site / "registry" if images else None, images=images,
        client=pipeline.read_artifact(site / "artifacts", pipeline.CLIENT_ARCHIVE),
        footage=pipeline.read_artifact(site / "artifacts", pipeline.FOOTAGE_ARCHIVE),
    )


# --- serving ---------------------------------------------------------------------------------------


def _url(address: str, port: int, path: str = "") -> str:
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}:{port}{path}"


def _endpoints(address: str, site: Path, records: Path, http_port: int, gcs_port: int, s3_port: int,
               registry_port: int | None) -> SiteEndpoints:
    with_registry = registry_port is not None
    host = f"[{address}]" if ":" in address else address
    return SiteEndpoints(
        apt_url=_url(address, http_port, "/apt/"), apt_keyring=site / "apt" / aptrepo.KEYRING_NAME,
        artifacts_url=_url(address, http_port, "/artifacts/"), gcs_url=_url(address, gcs_port),
        s3_url=_url(address, s3_port), faults_url=_url(address, http_port, "/_faults"),
        registry=f"{host}:{registry_port}" if with_registry else None,
        registry_ca=records / "tls" / "registry.crt" if with_registry else None,
    )


# Stdlib-only modules run as scripts by path: no package import (fast start, no dependency on the venv's
# installed copy of cnctl).
ARTIFACTS_SCRIPT = Path(artifacts.__file__)
PROBE_SCRIPT = Path(probe.__file__)


def _spawn_all(netns: str | None, address: str, site: Path, records: Path, ports: tuple[int, int, int],
               wanted: SiteEndpoints) -> None:
    http_port, gcs_port, s3_port = ports
    artifacts_argv = [sys.executable, str(ARTIFACTS_SCRIPT), "--bind", address,
                      "--port", str(http_port), "--mount", f"/apt/={site / 'apt'}",
                      "--mount", f"/artifacts/={site / 'artifacts'}", "--log", str(records / "artifacts-requests.log")]
    processes.spawn("artifacts", artifacts_argv, netns, records)
    processes.spawn("gcs", emulators.gcs_argv(address, gcs_port), netns, records,
                    env=emulators.gcs_env(records / "gcs"), cwd=records)
    processes.spawn("s3", emulators.moto_argv(address, s3_port), netns, records, cwd=records)
    if wanted.registry:
        tls = registry.make_certificate(address, records / "tls")
        conf = records / "registry.yml"
        port = int(wanted.registry.rsplit(":", 1)[1])
        conf.write_text(registry.config(site / "registry", address, port, tls, read_only=True))
        processes.spawn("registry", registry.argv(conf), netns, records, cwd=records)


def _in_netns(netns: str | None, args: list[str], timeout: float) -> tuple[bool, str]:
    """Run the probe CLI inside `netns` (or here when None); (success, what it said on stderr)."""
    if netns is None:
        said = io.StringIO()
        with contextlib.redirect_stderr(said):
            try:
                ok = probe.main(args) == 0
            except Exception as exc:  # noqa: BLE001 - the probe CLI reports failures by raising; so does the subprocess
                print(exc, file=said)
                ok = False
        return ok, said.getvalue()
    cmd = ["ip", "netns", "exec", netns, sys.executable, str(PROBE_SCRIPT), *args]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 10, check=False)
    return res.returncode == 0, res.stderr


def _wait_ready(netns: str | None, urls: list[str], records: Path, timeout: float) -> None:
    """Block until every URL answers; fail fast (with the service's log) if a service dies meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        dead = [r for r in processes.records(records) if not processes.is_running(r)]
        if dead:
            name = dead[0].name
            tail = (records / f"{name}.log").read_text(errors="replace")[-1500:]
            raise RuntimeError(f"site service {name} exited during start-up; its log ends:\n{tail}")
        if _in_netns(netns, ["wait", "--timeout", "0.5", *urls], 0.5)[0]:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"site services did not answer within {timeout:.0f} s: {urls} (logs in {records})")


def _services(wanted: SiteEndpoints) -> set[str]:
    return set(SERVICES) | ({"registry"} if wanted.registry else set())


def _running(records: Path, wanted: SiteEndpoints) -> bool:
    """True when the recorded services are all alive and serve exactly the wanted endpoints."""
    saved = records / "endpoints.json"
    recs = processes.records(records)
    if not saved.is_file() or {r.name for r in recs} != _services(wanted):
        return False
    try:
        same = SiteEndpoints.from_json(json.loads(saved.read_text())) == wanted
    except (ValueError, KeyError):
        return False
    return same and all(processes.is_running(r) for r in recs)


def start_site_services(netns: str | None, address: str, state_dir: Path, cache: Path = DEFAULT_CACHE, *,
                        http_port: int = HTTP_PORT, gcs_port: int = GCS_PORT, s3_port: int = S3_PORT,
                        registry_port: int | None = None, buckets: Sequence[str] = (),
                        timeout: float = 10.0) -> SiteEndpoints:
    """Ensure the artifact server, the GCS emulator and moto run on `address` (in `netns`); returns endpoints.

    Idempotent: services already running with the same endpoints are kept; a partial or different set is
    stopped and started afresh. `buckets` are created on both emulators. With `registry_port`, the container
    registry serves the registry images too. Needs build_site_content() first (with host images, for them).
    """
    site = _site_dir(Path(cache))
    records = Path(state_dir) / "site"
    wanted = _endpoints(address, site, records, http_port, gcs_port, s3_port, registry_port)
    fresh = not _running(records, wanted)
    if fresh:
        if not (site / "apt" / "InRelease").is_file() or not (site / "artifacts" / "models").is_dir():
            raise RuntimeError(f"no site content in {site}: run build_site_content() first")
        if wanted.registry and not recipe.is_current_any(site, "registry", site / "registry"):
            raise RuntimeError(f"no registry images in {site}: run build_site_content() with the host images first")
        processes.stop_all(records)
        _spawn_all(netns, address, site, records, (http_port, gcs_port, s3_port), wanted)
    try:
        if fresh:
            registry_url = [f"https://{wanted.registry}/v2/"] if wanted.registry else []
            _wait_ready(netns, [wanted.faults_url, *emulators.health_urls(wanted.gcs_url, wanted.s3_url),
                                *registry_url], records, timeout)
        if buckets:
            ok, said = _in_netns(netns, ["buckets", "--gcs", wanted.gcs_url, "--s3", wanted.s3_url, *buckets],
                                 timeout)
            if not ok:
                raise RuntimeError(f"could not create buckets {list(buckets)} on the emulators: {said.strip()[-500:]}")
    except BaseException:
        if fresh:  # leave nothing half-started behind
            processes.stop_all(records)
        raise
    (records / "endpoints.json").write_text(json.dumps(wanted.to_json(), indent=2) + "\n")
    return wanted


def stop_site_services(state_dir: Path) -> None:
    """Stop the services recorded in `state_dir` (by PID and start time: nothing else), remove their records."""
    records = Path(state_dir) / "site"
    processes.stop_all(records)
    (records / "endpoints.json").unlink(missing_ok=True)
