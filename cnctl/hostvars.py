"""One host's variables, from the validated stack and the host's fleet entry: the same names for both engines.

pyinfra reads them as host data (`host.data.cn_driver_branch`), Ansible as host vars in the inventory and
`stack_vars()` as extra vars (`{{ cn_driver_branch }}`). Every value is JSON (str, int, bool, None, lists,
dicts), flat and prefixed `cn_`, so a template renders the same bytes through either engine. Nothing here
looks at a host: these are the stack's *wishes*; the layers compare them with what they detect.

Every download URL is a variable: the platform matrix (cnctl/catalog/platforms.yaml) gives the upstream
URL and the stack's `mirrors` section replaces its base for air-gapped plants (NVIDIA/deepops #191 #1108).

| variable | hosts | meaning |
|---|---|---|
| cn_stack | all | the stack (environment) name |
| cn_host | all | the host's name in its fleet (cloud: the VM name) |
| cn_group | all | `edge`, `servers` or `cloud`: the inventory group |
| cn_site | all | the fleet entry's site (cloud: the VM's zone) |
| cn_platform | all | `jetson` (edge) or `server` (servers, cloud VMs) |
| cn_arch | all | dpkg architecture the matrix expects: `arm64` (Jetson) or `amd64` |
| cn_supported_os | all | OS releases the matrix supports on this platform: [{id, version, codename, repo_distro}] |
| cn_os_substitution | all | {id, version, codename} of an OS the stack declares in place of the matrix's (sandbox.jetsonOs), else None |
| cn_reboot | all | `allowed` or `never`: may a first driver install reboot the host (fleet entry `reboot`) |
| cn_cuda | all | CUDA release the host's stack is built for (`12.6`) |
| cn_triton_image | all | the Triton image: `inference.images.<jetson or server>`, else the matrix's |
| cn_inference_runtime | all | `container` or `native`: the fleet entry's `inferenceRuntime`, else `inference.runtime` |
| cn_inference_bind_address | all | address Triton binds (loopback by default) |
| cn_inference_bind_interface | all | a named private interface whose IPv4 address Triton binds instead (`inference.bindInterface`), else None |
| cn_inference_http_port | all | Triton's HTTP port (`inference.ports.http`) |
| cn_inference_grpc_port | all | Triton's gRPC port (`inference.ports.grpc`) |
| cn_inference_metrics_port | all | Triton's metrics port (`inference.ports.metrics`) |
| cn_monitoring_exporter_port | all | node-exporter's port, on Triton's address (`monitoring.nodeExporterPort`) |
| cn_monitoring_collection | all | how the site's Prometheus gets the host's metrics: `none` (no `monitoring.server`; cloud VMs), `site` (the host runs it), `scraped` (over the network) or `agent` (Prometheus in agent mode, remote-writing) |
| cn_monitoring_site_url | all | the site's Prometheus (`http://<monitoring.server's address>:<monitoring.prometheusPort>`), None without one |
| cn_monitoring_password_file | all | site and agents: its password on the deploying machine (`monitoring.passwordFile`), else None |
| cn_monitoring_site | all | the site only: {interface, prometheus_port, alertmanager_port, retention_days, targets: [{host, site, group, platform, address}], sites: {host: site} (every edge device and server), emails, smtp, webhooks}; None elsewhere |
| cn_model_action | all | `pinned`: serve the stack's pinned version; `previous` (a rollback run's override): the version served before it |
| cn_python_index_url | all | PEP 503 index the native runtime installs its wheels from (mirrors.pythonIndex, else PyPI) |
| cn_triton_wheels | all | [{name, version, sha256: [...]}]: the native runtime's wheels, each pinned by hash (matrix `native_triton`) |
| cn_triton_pythons | all | host Pythons (X.Y) the pinned wheels and the python backend stub support |
| cn_docker_source | all | where the Docker engine comes from (`container.engine`): `docker-ce` (Docker's repo) or `docker.io` (the distribution's) |
| cn_docker_packages | all | the engine's packages (matrix `container.docker.packages` or `container.docker_io.packages`) |
| cn_docker_pins | all | {OS codename or `*`: [{packages, version}]}: apt pins of the engine's packages (docker.io: per release) |
| cn_docker_data_root | all | daemon.json `data-root` (`container.dataRoot`) |
| cn_docker_log_max_size | all | daemon.json json-file `max-size` (`container.logMaxSize`) |
| cn_docker_log_max_files | all | daemon.json json-file `max-file` (`container.logMaxFiles`) |
| cn_docker_version | all | Docker CE upstream version (`27.5.1`); the apt version adds `-1~<os id>.<version>~<codename>` |
| cn_containerd_version | all | containerd.io apt version |
| cn_docker_apt_url | all | Docker's apt base (`.../linux`); the repo is `<url>/<os id>`, the key `<url>/<os id>/gpg` |
| cn_docker_registry_mirrors | all | daemon.json `registry-mirrors` (mirrors.registry), [] when none |
| cn_nvidia_ctk_version | all | NVIDIA Container Toolkit apt version (`1.17.8-1`) |
| cn_nvidia_ctk_packages | all | its packages, all pinned to cn_nvidia_ctk_version |
| cn_nvidia_ctk_key_url | all | the toolkit repository's signing key |
| cn_nvidia_ctk_repo_url | all | the toolkit's apt repo (`.../stable/deb/$(ARCH)`, `$(ARCH)` literal for apt) |
| cn_site_apt_url | all | a flat, signed site repository carrying every package the layers install (mirrors.siteApt): it replaces the upstream repositories; None: the upstream ones (or their mirrors) |
| cn_site_apt_key_url | all | its signing key (mirrors.siteAptKey) |
| cn_model_key | all | the model's catalog key (`model.key`) |
| cn_model_name | all | the name Triton serves it under (catalog `served_name`): the repository folder `<repo>/<name>/` |
| cn_model_version | all | the version directory it lands in (`model.version`) |
| cn_model_url | all | where hosts fetch the archive: the stack's `model.url` (a site mirror), else the catalog's upstream URL |
| cn_model_sha256 | all | the archive's pinned sha256 (`model.sha256`, written by `cnctl model pin`); None: the model layer refuses |
| cn_model_format | all | `tf_savedmodel`, `onnx` or `python`: where a bare archive's model goes in its version directory |
| cn_model_platform | all | the Triton platform of the config.pbtxt rendered for archives that bring none |
| cn_model_keep | all | versions each host keeps in its model repository (`model.keep`) |
| cn_pipeline_client | all | the client's catalog key (`pipeline.client`, else the model's generation) |
| cn_pipeline_client_url | all | where hosts fetch the client archive (`pipeline.clientUrl`, else the catalog's) |
| cn_pipeline_client_sha256 | all | its pinned sha256 (`pipeline.clientSha256`, else the catalog's); None: the pipeline layer refuses |
| cn_pipeline_client_entry | all | the client's script inside the archive (`inference_pipeline.py`) |
| cn_pipeline_client_wheels | all | [{name, version, sha256}] the client needs in the venv; None: not pinned yet (the layer refuses) |
| cn_pipeline_client_contract | all | how the runner talks to the client: `ndjson` (it writes the rows) or `upstream` (upstream's client through cnhost/client_adapter.py) |
| cn_pipeline_columns | all | [{name, type}] the detections table's columns for the generation (catalog `generations.<g>.bigquery_schema`) |
| cn_pipeline_generation | all | the model's client generation (`tf`, `detr`): the flags and the detections table |
| cn_pipeline_flags | all | the client's flags, `--flag=value`, rendered for the generation from `pipeline` |
| cn_pipeline_interval | all | seconds between the end of one pipeline run and the next (`pipeline.intervalSeconds`) |
| cn_pipeline_batch_frames | all | frames one run takes at most (`pipeline.batchFrames`) |
| cn_pipeline_upload_images | all | whether frames are uploaded too (`pipeline.uploadImages`) |
| cn_pipeline_queue_budget_mib | all | disk the upload queue may use (`pipeline.queueBudgetMib`) |
| cn_pipeline_input | all | where the pipeline takes frames: `camera` (edge), `spool` or `bucket` (a server's `pipelineInput`, else `pipeline.input`, else bucket for compute.mode group's workers) |
| cn_pipeline_subscription | all | bucket input's subscription, a full path (`pipeline.subscription`, else the group's queue), None |
| cn_pipeline_max_messages | all | images one bucket worker holds at once (`pipeline.maxMessages`: Pub/Sub flow control) |
| cn_worker_wheels | all | [{name, version, sha256}] the bucket worker adds to the venv (google-cloud-pubsub, grpc, ...): bucket input only |
| cn_uploader_wheels | all | [{name, version, sha256}] of the uploader (google-cloud-storage, boto3, every dependency) |
| cn_agent_wheels | all | [{name, version, sha256}] the pull agent adds to its venv beside the uploader's (pyinfra, pydantic, PyYAML, every dependency): pull-mode hosts only |
| cn_pipeline_pythons | all | host Pythons (X.Y) the uploader's pinned wheels support |
| cn_storage_kind | all | `gcs` or `s3` (`storage.kind`) |
| cn_storage_endpoint | all | an emulator or on-site S3 URL (`storage.endpoint`), None: the provider's own |
| cn_storage_project | all | the GCP project (`gcp.project`), None without a cloud layer |
| cn_storage_results_bucket | all | where results go (`storage.buckets.results`) |
| cn_storage_images_bucket | all | where frames go when uploaded (`storage.buckets.images`) |
| cn_storage_credentials_file | all | the uploader's credentials on the deploying machine (`storage.credentialsFile`), None: the host's identity |
| cn_storage_models_bucket | all | the models bucket (`storage.buckets.models`): pull-mode hosts read their bundles from it |
| cn_bundle_signers | all | [{identity, public_key}] a pull-mode host accepts bundles from (`bundle.signers`), [] without a bundle section |
| cn_pull_interval | all | seconds between a pull-mode host's looks for a new bundle (`bundle.pollSeconds`), None without a bundle section |
| cn_deploy_mode | all | `push` (configured over SSH) or `pull` (configures itself from the signed bundle): the fleet entry's `mode`; a cloud VM of `compute.mode: group` with a `bundle` section: `pull` |
| cn_pull_channel | all | the bundle channel a pull-mode host follows (`canary` or `stable`, the entry's `channel`; a group VM: `stable`), None for push hosts |
| cn_camera | all | edge: {source, device, url, replay_url, replay_sha256, replay_loop, prefix, spool, fps, spool_budget_mib} (fleet entry `camera`); None elsewhere |
| cn_jetpack | jetson | JetPack release of the fleet entry (`6.2`) |
| cn_l4t | jetson | L4T release it implies (`36.4.3`): must equal /etc/nv_tegra_release |
| cn_l4t_gcid | jetson | GCID on the first line of /etc/nv_tegra_release |
| cn_jetson_soc | jetson | SoC the JetPack supports (`t234`) |
| cn_jetson_apt_release | jetson | suite of the L4T apt repo (`r36.4`: major.minor only) |
| cn_jetson_apt_url | jetson | L4T apt base; components are `<url>/<component> <release> main` |
| cn_jetson_apt_components | jetson | repo components (`common`, `t234`) |
| cn_jetson_apt_key_url | jetson | the L4T repo's signing key (jetson-ota-public.asc) |
| cn_nvpmodel | jetson | nvpmodel power mode id to set (fleet entry `nvpmodel`), None: keep the board's |
| cn_jetson_clocks | jetson | whether the jetson_clocks unit pins clocks at boot (fleet entry `jetsonClocks`) |
| cn_jetson_packages | jetson | {package: apt version} pinned and held (nvidia-jetpack, nvidia-l4t-core) |
| cn_nvcc_version | all | `nvcc --version` release the host must report (`12.6.68`), None on a DLVM image |
| cn_cudnn | jetson | cuDNN version of the JetPack |
| cn_tensorrt | jetson | TensorRT version of the JetPack |
| cn_driver_branch | all | driver branch (Jetson: the L4T driver's major, e.g. `540`) |
| cn_driver_version | all | driver version `nvidia-smi` must report; None on a DLVM image (the image's own) |
| cn_driver_source | all | `l4t` (Jetson), `cuda-repo` (servers) or `image` (cloud VM on a Deep Learning VM image: detect and verify, never reinstall) |
| cn_driver_packages | server | driver packages of the branch, pinned and held ([] when cn_driver_source is not cuda-repo) |
| cn_cuda_repo_url | server | CUDA apt base; the repo is `<url>/<repo_distro>/x86_64/` |
| cn_cuda_keyring_package | server | `cuda-keyring` |
| cn_cuda_keyring_version | server | its version (`1.1-1`); fetched from the repo as `<pkg>_<ver>_all.deb` |
| cn_cuda_keyring_file | server | the key file it installs (sources say `signed-by=` it) |
| cn_cuda_toolkit_package | server | toolkit meta package (`cuda-toolkit-12-4`), None when the image brings CUDA |
| cn_cuda_toolkit_version | server | its apt version (`12.4.1-1`), None likewise |
| cn_gcp_project | cloud | the VM's project (IAP tunnel, OS Login) |
| cn_gcp_zone | cloud | the VM's zone |
| cn_image_family | cloud | the VM's Deep Learning VM image family |
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Literal

from cnctl.catalog import Catalog, OsRelease, catalog
from cnctl.config.schema import EdgeDevice, OsName, Server, StackConfig
from cnhost.triton_endpoint import host_port

Group = Literal["edge", "servers", "cloud"]
Collection = Literal["none", "site", "scraped", "agent"]
PYPI_SIMPLE = "https://pypi.org/simple"
GROUPS: tuple[Group, ...] = ("edge", "servers", "cloud")


@dataclass(frozen=True)
class CloudVm:
    """One GPU VM of the cloud layer, as the stack outputs name it (cnctl/cloud `vms` output)."""

    name: str
    zone: str
    project: str
    internal_ip: str
    ssh_user: str
    fallback_zones: tuple[str, ...] = field(default_factory=tuple)


Entry = EdgeDevice | Server | CloudVm


def stack_vars(cfg: StackConfig, cat: Catalog | None = None) -> dict[str, Any]:
    """The variables every host of `cfg` shares (Ansible extra vars; part of every host's host_vars)."""
    cat = cat or catalog()
    docker = cat.platforms.container.docker
    ctk = cat.platforms.container.nvidia_container_toolkit
    mirrors = cfg.mirrors
    ctk_base = _common_base(ctk.key_url, ctk.repo_url)
    engine = cfg.container.engine
    native = cat.platforms.native_triton
    model = cat.models.models[cfg.model.key]  # the stack checks refused keys the catalog lacks
    return {
        "cn_stack": cfg.environment,
        "cn_model_key": cfg.model.key,
        "cn_model_name": model.served_name,
        "cn_model_version": cfg.model.version,
        "cn_model_url": cfg.model.url or model.url,
        "cn_model_sha256": cfg.model.sha256,
        "cn_model_format": model.format,
        "cn_model_platform": model.triton_platform,
        "cn_model_keep": cfg.model.keep,
        "cn_inference_bind_address": cfg.inference.bind_address,
        "cn_inference_bind_interface": cfg.inference.bind_interface,
        "cn_inference_http_port": cfg.inference.ports.http,
        "cn_inference_grpc_port": cfg.inference.ports.grpc,
        "cn_inference_metrics_port": cfg.inference.ports.metrics,
        "cn_monitoring_exporter_port": cfg.monitoring.node_exporter_port,
        "cn_model_action": "pinned",
        "cn_python_index_url": mirrors.python_index or PYPI_SIMPLE,
        "cn_triton_wheels": [w.model_dump() for w in native.packages],
        "cn_triton_pythons": list(native.pythons),
        "cn_agent_wheels": [w.model_dump() for w in cat.pipeline.agent.packages],
        "cn_docker_source": engine,
        "cn_docker_packages": list(docker.packages if engine == "docker-ce" else cat.platforms.container.docker_io.packages),
        "cn_docker_pins": _docker_pins(engine, cat),
        "cn_docker_data_root": cfg.container.data_root,
        "cn_docker_log_max_size": cfg.container.log_max_size,
        "cn_docker_log_max_files": cfg.container.log_max_files,
        "cn_docker_version": docker.upstream_version,
        "cn_containerd_version": docker.containerd_version,
        "cn_docker_apt_url": mirrored(docker.base_url, docker.base_url, mirrors.docker_apt),
        "cn_docker_registry_mirrors": [mirrors.registry] if mirrors.registry else [],
        "cn_nvidia_ctk_version": ctk.version,
        "cn_nvidia_ctk_packages": list(ctk.packages),
        "cn_nvidia_ctk_key_url": mirrored(ctk.key_url, ctk_base, mirrors.container_toolkit_apt),
        "cn_nvidia_ctk_repo_url": mirrored(ctk.repo_url, ctk_base, mirrors.container_toolkit_apt),
        "cn_site_apt_url": mirrors.site_apt,
        "cn_site_apt_key_url": mirrors.site_apt_key,
        **_pipeline_vars(cfg, cat),
    }


def pulls_from_startup(cfg: StackConfig) -> bool:
    """Do the stack's cloud VMs configure themselves (pull mode)? Those of an autoscaled group (`compute.mode:
    group`) do when the stack has a `bundle` section: their startup script applies the stable channel's bundle
    at boot, then the pull layer's timer keeps them converging. A group has no canaries (every VM of it runs the
    same version), so they follow `stable`. Fixed VMs (`compute.mode: vms`) are configured by push."""
    return cfg.compute is not None and cfg.compute.mode == "group" and cfg.bundle is not None


def host_vars(cfg: StackConfig, group: Group, entry: Entry, cat: Catalog | None = None) -> dict[str, Any]:
    """Every variable of one host: the stack's common ones, then its platform's (see the module table)."""
    cat = cat or catalog()
    common = {**stack_vars(cfg, cat), "cn_host": entry.name, "cn_group": group, "cn_os_substitution": None,
              "cn_reboot": entry.reboot if isinstance(entry, EdgeDevice | Server) else "never", "cn_camera": None}
    # per host, so not an extra var (extra vars beat host vars in Ansible): a fleet entry may override it
    own = entry.inference_runtime if isinstance(entry, EdgeDevice | Server) else None
    common["cn_inference_runtime"] = own or cfg.inference.runtime
    common["cn_pipeline_input"] = cfg.pipeline_input(entry if isinstance(entry, EdgeDevice | Server) else None)
    mode = entry.mode if isinstance(entry, EdgeDevice | Server) else "pull" if pulls_from_startup(cfg) else "push"
    common["cn_deploy_mode"] = mode
    common["cn_pull_channel"] = ((entry.channel if isinstance(entry, EdgeDevice | Server) else None) or "stable"
                                 if mode == "pull" else None)
    common.update(_monitoring_vars(cfg, group, entry, mode))
    if group == "edge" and isinstance(entry, EdgeDevice):
        return {**common, **_jetson_vars(cfg, entry, cat), "cn_camera": _camera(entry)}
    if group == "servers" and isinstance(entry, Server):
        return {**common, **_server_vars(cfg, entry, cat)}
    if group == "cloud" and isinstance(entry, CloudVm):
        if mode == "pull":
            # A worker configures itself from a fresh boot: nothing pushed a device key to it, and it uploads and
            # reads its bundles as the VM's own service account (cnctl/cloud/identity.py GROUP_WORKER).
            common["cn_storage_credentials_file"] = None
        return {**common, **_cloud_vars(cfg, entry, cat)}
    raise TypeError(f"host {entry.name}: a {type(entry).__name__} is not an entry of group {group!r}")


def collection(cfg: StackConfig, group: Group, entry: Entry, mode: str) -> Collection:
    """How the site's Prometheus gets this host's metrics (cn_monitoring_collection):

    - `none`: the stack names no monitoring server (or its fleet file lacks it), or the host is a cloud VM (Cloud
      Monitoring watches those);
    - `site`: the host IS the monitoring server: it scrapes its own exporters on their address;
    - `scraped`: a push host whose exporters listen on a reachable address (Triton's bind is not loopback): the
      site scrapes it at its fleet address;
    - `agent`: every other host (loopback-bound, pull mode, behind NAT): it runs Prometheus in agent mode and
      remote-writes to the site, buffering in its WAL while the link is down.
    """
    if site_url(cfg) is None or group == "cloud":
        return "none"
    if group == "servers" and entry.name == cfg.monitoring.server:
        return "site"
    inference = cfg.inference
    reachable = inference.bind_interface is not None or not ipaddress.ip_address(inference.bind_address).is_loopback
    return "scraped" if mode == "push" and reachable else "agent"


def _monitoring_vars(cfg: StackConfig, group: Group, entry: Entry, mode: str) -> dict[str, Any]:
    """The host's part in the site's monitoring (see `collection`); the site's own settings on the site only."""
    mon = cfg.monitoring
    how = collection(cfg, group, entry, mode)
    own: dict[str, Any] = {"cn_monitoring_collection": how,
           "cn_monitoring_site_url": site_url(cfg),
           "cn_monitoring_password_file": mon.password_file if how in ("site", "agent") else None,
           "cn_monitoring_site": None}
    if how == "site":
        own["cn_monitoring_site"] = {
            "interface": mon.interface, "prometheus_port": mon.prometheus_port,
            "alertmanager_port": mon.alertmanager_port, "retention_days": mon.retention_days,
            "targets": scrape_targets(cfg), "sites": fleet_sites(cfg), "emails": list(mon.emails),
            "smtp": mon.smtp.model_dump() if mon.smtp else None,
            "webhooks": [hook.model_dump() for hook in mon.webhooks],
        }
    return own


def site_url(cfg: StackConfig) -> str | None:
    """The site's Prometheus as the fleet and the deploying machine reach it: `http://<address of the servers
    entry monitoring.server names>:<monitoring.prometheusPort>`; None without site monitoring."""
    server = next((s for s in cfg.fleets.servers if s.name == cfg.monitoring.server), None)
    return f"http://{host_port(server.address, cfg.monitoring.prometheus_port)}" if server else None


def fleet_sites(cfg: StackConfig) -> dict[str, str]:
    """{host: site} of every edge device and server: the site's results loader labels a host's results with it."""
    return {entry.name: entry.site for entry in [*cfg.fleets.edge, *cfg.fleets.servers]}


def scrape_targets(cfg: StackConfig) -> list[dict[str, Any]]:
    """The hosts the site's Prometheus scrapes over the network: [{host, site, group, platform, address}], each
    at its fleet address, on the stack's exporter and Triton metrics ports."""
    entries: list[tuple[Group, EdgeDevice | Server]] = [("edge", dev) for dev in cfg.fleets.edge]
    entries += [("servers", srv) for srv in cfg.fleets.servers]
    return [{"host": entry.name, "site": entry.site, "group": group,
             "platform": "jetson" if group == "edge" else "server", "address": entry.address}
            for group, entry in entries if collection(cfg, group, entry, entry.mode) == "scraped"]


def _jetson_vars(cfg: StackConfig, dev: EdgeDevice, cat: Catalog) -> dict[str, Any]:
    """A Jetson's wishes: its JetPack release row of the matrix, with the L4T repo (mirrored)."""
    jetson = cat.platforms.jetson
    rel = jetson.release(dev.jetpack)  # the stack checks already refused a JetPack the matrix lacks
    apt = jetson.apt
    mirror = cfg.mirrors.jetson_apt
    sub = cfg.sandbox.jetson_os if cfg.sandbox else None
    return {
        "cn_site": dev.site,
        "cn_platform": "jetson",
        "cn_arch": "arm64",
        "cn_supported_os": [_os(jetson.os)] + ([_substitute(sub)] if sub else []),
        "cn_os_substitution": _substitute(sub) if sub else None,
        "cn_jetpack": rel.jetpack,
        "cn_l4t": rel.l4t,
        "cn_l4t_gcid": rel.gcid,
        "cn_jetson_soc": jetson.soc,
        "cn_jetson_apt_release": rel.apt_release,
        "cn_jetson_apt_url": mirrored(apt.base_url, apt.base_url, mirror),
        "cn_jetson_apt_components": list(apt.components),
        "cn_jetson_apt_key_url": mirrored(apt.key_url, apt.base_url, mirror),
        "cn_jetson_packages": dict(rel.packages),
        "cn_nvpmodel": dev.nvpmodel,
        "cn_jetson_clocks": dev.jetson_clocks,
        "cn_cuda": rel.cuda,
        "cn_nvcc_version": rel.nvcc,
        "cn_cudnn": rel.cudnn,
        "cn_tensorrt": rel.tensorrt,
        "cn_driver_branch": rel.driver.split(".", 1)[0],
        "cn_driver_version": rel.driver,
        "cn_driver_source": "l4t",
        "cn_triton_image": cfg.inference.images.get("jetson", rel.triton_image),
    }


def _server_vars(cfg: StackConfig, srv: Server, cat: Catalog) -> dict[str, Any]:
    """A GPU server's wishes: the driver branch of its entry, the newest toolkit and image that branch runs."""
    servers = cat.platforms.servers
    driver = servers.driver(srv.driver_branch)
    toolkit = _toolkit_for(driver.max_cuda, cat)
    return {
        "cn_site": srv.site,
        "cn_platform": "server",
        "cn_arch": "amd64",
        "cn_supported_os": [_os(os) for os in servers.os],
        "cn_cuda": toolkit["cuda"],
        "cn_nvcc_version": toolkit["nvcc"],
        "cn_driver_branch": driver.branch,
        "cn_driver_version": driver.version,
        "cn_driver_source": "cuda-repo",
        "cn_driver_packages": list(driver.packages),
        **_cuda_repo_vars(cfg, cat),
        "cn_cuda_toolkit_package": toolkit["package"],
        "cn_cuda_toolkit_version": toolkit["version"],
        "cn_triton_image": _server_image(cfg, driver.max_cuda, cat),
    }


def _cloud_vars(cfg: StackConfig, vm: CloudVm, cat: Catalog) -> dict[str, Any]:
    """A cloud GPU VM's wishes: the Deep Learning VM image brings driver and CUDA; cnctl only verifies them."""
    if cfg.compute is None:
        raise ValueError(f"host {vm.name}: stack {cfg.environment} has no `compute` section, so no cloud VMs")
    family = cat.gcp.images.families[cfg.compute.image_family]  # the stack checks refused unknown families
    return {
        "cn_site": vm.zone,
        "cn_platform": "server",
        "cn_arch": "amd64",
        "cn_supported_os": [_os(os) for os in cat.platforms.servers.os if os.id == "ubuntu"],
        "cn_cuda": family.cuda,
        "cn_nvcc_version": None,
        "cn_driver_branch": family.driver_branch,
        "cn_driver_version": None,
        "cn_driver_source": "image",
        "cn_driver_packages": [],
        **_cuda_repo_vars(cfg, cat),
        "cn_cuda_toolkit_package": None,
        "cn_cuda_toolkit_version": None,
        "cn_triton_image": _server_image(cfg, family.cuda, cat),
        "cn_gcp_project": vm.project,
        "cn_gcp_zone": vm.zone,
        "cn_image_family": cfg.compute.image_family,
    }


def _pipeline_vars(cfg: StackConfig, cat: Catalog) -> dict[str, Any]:
    """The pipeline layer's wishes: the client archive and its flags, the uploader's wheels and the storage."""
    model = cat.models.models[cfg.model.key]
    key = cfg.pipeline.client or model.generation
    client = cat.pipeline.clients.get(key)  # the stack checks refused keys the catalog lacks
    buckets = cfg.storage.buckets
    return {
        "cn_pipeline_client": key,
        "cn_pipeline_client_url": cfg.pipeline.client_url or (client.url if client else None),
        "cn_pipeline_client_sha256": cfg.pipeline.client_sha256 or (client.sha256 if client else None),
        "cn_pipeline_client_entry": client.entry if client else None,
        "cn_pipeline_client_wheels": None if (wheels := cat.pipeline.client_wheels(key)) is None
        else [w.model_dump() for w in wheels],
        "cn_pipeline_client_contract": client.contract if client else "ndjson",
        "cn_pipeline_columns": [{"name": f.name, "type": f.type}
                                for f in cat.models.generations[model.generation].bigquery_schema],
        "cn_pipeline_generation": model.generation,
        "cn_pipeline_flags": pipeline_flags(cfg, cat),
        "cn_pipeline_interval": cfg.pipeline.interval_seconds,
        "cn_pipeline_batch_frames": cfg.pipeline.batch_frames,
        "cn_pipeline_upload_images": cfg.pipeline.upload_images,
        "cn_pipeline_queue_budget_mib": cfg.pipeline.queue_budget_mib,
        "cn_pipeline_subscription": _subscription_path(cfg),
        "cn_pipeline_max_messages": cfg.pipeline.max_messages,
        "cn_worker_wheels": [w.model_dump() for w in cat.pipeline.worker.packages],
        "cn_uploader_wheels": [w.model_dump() for w in cat.pipeline.uploader.packages],
        "cn_pipeline_pythons": list(cat.pipeline.uploader.pythons),
        "cn_storage_kind": cfg.storage.kind,
        "cn_storage_endpoint": cfg.storage.endpoint,
        "cn_storage_project": cfg.gcp.project if cfg.gcp else None,
        "cn_storage_results_bucket": buckets.results,
        "cn_storage_images_bucket": buckets.images,
        "cn_storage_credentials_file": cfg.storage.credentials_file,
        "cn_storage_models_bucket": buckets.models,
        "cn_bundle_signers": [] if cfg.bundle is None
        else [{"identity": s.identity, "public_key": s.public_key} for s in cfg.bundle.signers],
        "cn_pull_interval": cfg.bundle.poll_seconds if cfg.bundle is not None else None,
    }


def _subscription_path(cfg: StackConfig) -> str | None:
    """projects/<project>/subscriptions/<id> of bucket input (an id is in gcp.project), None without one."""
    sub = cfg.work_subscription
    if sub is None or sub.startswith("projects/"):
        return sub
    return f"projects/{cfg.gcp.project}/subscriptions/{sub}" if cfg.gcp is not None else None


def pipeline_flags(cfg: StackConfig, cat: Catalog) -> list[str]:
    """The client's flags for the model's generation (catalog `generations.<g>.flags` names the two that
    differ), `--flag=value` so that absl and argparse clients read them alike; input and output directories
    are the runner's, per batch."""
    model = cat.models.models[cfg.model.key]
    names = cat.models.generations[model.generation].flags
    pipe = cfg.pipeline
    height, width = _image_size(model.input.shape)
    values: list[tuple[str, Any]] = [
        (names["model"], model.served_name), (names["score"], pipe.score_threshold),
        ("--height", height), ("--width", width), ("--search_range_x", pipe.search_range_x),
        ("--search_range_y", pipe.search_range_y), ("--memory", pipe.memory),
        ("--tracking_visualization", str(pipe.tracking_visualization).lower()),
        ("--cropped_objects", str(pipe.cropped_objects).lower()),
    ]
    return [f"{flag}={value}" for flag, value in values]


def _image_size(shape: list[int]) -> tuple[int, int]:
    """(height, width) of an image input tensor, NHWC ([1, 1024, 1024, 3]) or NCHW ([1, 3, 432, 432])."""
    if len(shape) == 4 and shape[-1] in (1, 3):
        return shape[1], shape[2]
    if len(shape) == 4 and shape[1] in (1, 3):
        return shape[2], shape[3]
    raise ValueError(f"model input shape {shape} is not an image tensor (NHWC or NCHW)")


def _camera(dev: EdgeDevice) -> dict[str, Any]:
    """A device's camera, as the capture service's settings take it."""
    cam = dev.camera
    return {"source": cam.source, "device": cam.device, "url": cam.url, "replay_url": cam.replay_url,
            "replay_sha256": cam.replay_sha256, "replay_loop": cam.replay_loop, "prefix": cam.frame_prefix, "spool": cam.capture_dir,
            "fps": cam.fps, "spool_budget_mib": cam.spool_budget_mib}


def _cuda_repo_vars(cfg: StackConfig, cat: Catalog) -> dict[str, Any]:
    repo = cat.platforms.servers.cuda_repo
    return {
        "cn_cuda_repo_url": mirrored(repo.base_url, repo.base_url, cfg.mirrors.cuda_apt),
        "cn_cuda_keyring_package": repo.keyring_package,
        "cn_cuda_keyring_version": repo.keyring_version,
        "cn_cuda_keyring_file": repo.keyring_file,
    }


def _toolkit_for(max_cuda: str, cat: Catalog) -> dict[str, str]:
    """The newest CUDA toolkit of the matrix that a driver supporting up to `max_cuda` runs."""
    fitting = [t for t in cat.platforms.servers.cuda_toolkits if _version(t.cuda) <= _version(max_cuda)]
    if not fitting:
        raise ValueError(f"the platform matrix has no CUDA toolkit for a driver that supports CUDA ≤ {max_cuda}")
    best = max(fitting, key=lambda t: _version(t.cuda))
    return {"cuda": best.cuda, "package": best.package, "version": best.version, "nvcc": best.nvcc}


def _server_image(cfg: StackConfig, max_cuda: str, cat: Catalog) -> str:
    """`inference.images.server`, else the newest matrix image the driver runs that serves the model's format."""
    chosen = cfg.inference.images.get("server")
    if chosen:
        return chosen
    model = cat.models.models.get(cfg.model.key)
    needs_tf = model is not None and model.requires_backend == "tensorflow"
    fitting = [
        t for t in cat.platforms.servers.triton_images
        if _version(t.cuda) <= _version(max_cuda) and (t.tensorflow_backend or not needs_tf)
    ]
    if not fitting:
        raise ValueError(f"the platform matrix has no Triton image for CUDA ≤ {max_cuda}; set inference.images.server")
    return max(fitting, key=lambda t: _version(t.cuda)).image


def mirrored(url: str, base: str, mirror: str | None) -> str:
    """`url` with its upstream `base` replaced by the site's mirror (unchanged without one)."""
    if mirror is None:
        return url
    if not url.startswith(base):
        raise ValueError(f"{url} does not start with its source's base {base}")
    return mirror.rstrip("/") + url[len(base.rstrip("/")) :]


def _common_base(*urls: str) -> str:
    """The longest common prefix of `urls` that ends at a path separator (a source's base URL)."""
    prefix = urls[0]
    for url in urls[1:]:
        while not url.startswith(prefix):
            prefix = prefix[:-1]
    return prefix[: prefix.rfind("/")]


def _docker_pins(engine: str, cat: Catalog) -> dict[str, list[dict[str, Any]]]:
    """The engine's apt pins by OS codename (`*`: any): Docker CE's version holds for every OS it builds for."""
    if engine == "docker-ce":
        docker = cat.platforms.container.docker
        cli = [p for p in docker.packages if p != "containerd.io"]
        return {"*": [{"packages": cli, "version": f"5:{docker.upstream_version}-1~*"},
                      {"packages": ["containerd.io"], "version": docker.containerd_version}]}
    releases = cat.platforms.container.docker_io.releases
    return {codename: [{"packages": [pkg], "version": version} for pkg, version in pins.items()]
            for codename, pins in releases.items()}


def _substitute(os: OsName) -> dict[str, Any]:
    """A declared stand-in OS, shaped like a matrix OS entry (no CUDA repo of its own)."""
    return {"id": os.id, "version": os.version, "codename": os.codename, "repo_distro": None}


def _os(os: OsRelease) -> dict[str, Any]:
    return {"id": os.id, "version": os.version, "codename": os.codename, "repo_distro": os.repo_distro}


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))
