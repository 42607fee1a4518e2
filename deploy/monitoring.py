"""The monitoring layer: every host's metrics for Prometheus, on the address Triton binds only; on the host
`monitoring.server` names, the site's Prometheus and Alertmanager; on hosts the site cannot scrape, an agent.

1. node-exporter's systemd drop-in (templates/systemd/prometheus-node-exporter.conf.j2): the listen address
   (the address Triton binds, the stack's `monitoring.nodeExporterPort`), the textfile collector's directory, and
   hardening over the package's unit. Written BEFORE the package is installed: the package's postinst reloads
   systemd and starts the exporter, which then listens on that address from its first start, never on all;
2. Debian's (Ubuntu's) prometheus-node-exporter, without its recommended collectors; restarted when the
   drop-in changed, enabled and running;
3. the textfile collector's directory, where the verify layer's health report writes its metrics and
4. the GPU collector (cnhost/gpu_metrics.py, shipped with the other host programs) writes the GPU's: a hardened
   service (templates/systemd/circularnet-gpu-metrics.service.j2) that runs nvidia-smi (servers, cloud VMs) or
   tegrastats (Jetsons) in their own loops; restarted when its unit changed, enabled and running;
5. by the host's cn_monitoring_collection (cnctl.hostvars.collection):
   - `site`: Debian's Prometheus and Alertmanager on the address of `monitoring.interface`, behind the site's
     password (basic auth, bcrypt): the host's own exporters, the scraped hosts, the agents' remote writes
     (`--web.enable-remote-write-receiver`), the alert rules (monitoring/rules/), the dashboards
     (templates/prometheus/consoles/), and the stack's receivers (e-mail through its relay, webhooks); and the
     results loader (cnhost/results_db.py, circularnet-results.timer): the plant's results bucket into a SQLite
     database every few minutes, their counts for the results dashboard;
   - `agent`: Debian's Prometheus in agent mode on loopback, scraping the host's exporters and remote-writing
     to the site with the site's password; its WAL keeps the samples while the link is down.
   Both drop-ins are written before the packages, and hold the postinst's start until the config exists.

Triton's own metrics (its metrics port, bound to the same address) are the inference layer's. A host whose
named bind interface has no address, a password file missing or readable by others on the deploying machine, a
site interface without an address: refused before anything changes. Names, paths and settings are
roles/monitoring/defaults/main.yml; roles/monitoring is the same layer for Ansible.
"""

from __future__ import annotations

import io
import shlex
from pathlib import Path
from typing import Any

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import apt, files, systemd

from cnctl.paths import REPO_ROOT, TEMPLATES_DIR
from deploy.facts import InterfaceAddress
from deploy.rules import checks, scripts
from deploy.rules.monitoring import (
    agent_config,
    alertmanager_config,
    controller_secrets,
    exporter_vars,
    gpu_unit_vars,
    listen_address,
    results_unit_vars,
    site_config,
    site_problem,
    textfile_access,
    web_config,
    webhook_token_path,
)
from deploy.steps import (
    after_change,
    directory,
    host_settings,
    index_refreshed,
    programs_shipped,
    refused,
    role_data,
    template,
    wishes,
)


@deploy("Monitoring")
def monitoring() -> None:
    """node-exporter on Triton's address with its textfile directory, the GPU collector, and the host's part in
    the site's monitoring (the site, or an agent); refused when the host cannot bind that address, when a secret
    on the deploying machine is missing or open, or when the site's interface has no address."""
    wants, data = wishes(), host_settings("monitoring")
    interface = wants.get("cn_inference_bind_interface")
    found = {"address": host.get_fact(InterfaceAddress, interface=interface) if interface else None}
    problem = checks.bind_interface_problem(found, wants)
    if problem:
        refused(name="Monitoring: the host can bind the exporter's address", message=problem)
        return
    how, secrets = wants["cn_monitoring_collection"], controller_secrets(wants)
    site = wants["cn_monitoring_site"]
    site_address = host.get_fact(InterfaceAddress, interface=site["interface"]) if how == "site" else None
    problem = secrets["problem"] or site_problem(wants, site_address)
    if problem:
        refused(name="Monitoring: the site's password and address", message=problem)
        return
    address = checks.inference_address(found, wants)
    exporter, dropin = data["monitoring_exporter_unit"], data["monitoring_exporter_dropin"]
    directory("Monitoring: node-exporter's drop-in directory", dropin.rsplit("/", 1)[0])
    configured = template("Monitoring: node-exporter's address, textfile directory and hardening (before it starts)",
                          "systemd/prometheus-node-exporter.conf.j2", dropin, **exporter_vars(wants, data, address))
    packages = list(data["monitoring_packages"])
    index_refreshed(name="Monitoring: package index fresh for its packages", changed=[], packages=packages,
                    timeout=data["monitoring_apt_update_timeout"])
    apt.packages(name="Monitoring: prometheus-node-exporter", packages=packages, no_recommends=True)
    after_change(name="Monitoring: systemd reloaded and node-exporter restarted (its drop-in changed)",
                 changed=[configured], commands=["systemctl daemon-reload", shlex.join(["systemctl", "restart", exporter])])
    systemd.service(name="Monitoring: node-exporter enabled and running", service=exporter, running=True, enabled=True)

    access = textfile_access(wants, role_data("pipeline"))
    directory("Monitoring: the textfile collector's directory", data["monitoring_textfile_dir"], access["mode"],
              access["owner"], access["group"])
    programs_shipped("Monitoring", scripts.program_home(data["monitoring_gpu_helper"]))
    unit = data["monitoring_gpu_unit"]
    collector = template("Monitoring: the GPU collector's unit", "systemd/circularnet-gpu-metrics.service.j2",
                         f"/etc/systemd/system/{unit}.service", **gpu_unit_vars(wants, data))
    after_change(name="Monitoring: systemd reloaded and the GPU collector restarted (its unit changed)",
                 changed=[collector], commands=["systemctl daemon-reload", shlex.join(["systemctl", "restart", f"{unit}.service"])])
    systemd.service(name="Monitoring: the GPU collector enabled and running", service=f"{unit}.service", running=True,
                    enabled=True)
    if how == "site" and site_address:
        site_prometheus(wants, data, secrets, address, site_address)
    elif how == "agent":
        agent_prometheus(wants, data, secrets, address)


def site_prometheus(wants: dict[str, Any], data: dict[str, Any], secrets: dict[str, Any], address: str,
                    site_address: str) -> None:
    """The site's Prometheus (its exporters, the scraped hosts, the agents' remote writes, the alert rules and
    the dashboards) and Alertmanager (the stack's receivers), both on `site_address` behind the site's password."""
    site = wants["cn_monitoring_site"]
    prometheus_listen = listen_address(site_address, site["prometheus_port"])
    alertmanager_listen = listen_address(site_address, site["alertmanager_port"])
    prometheus_conf, prometheus_yml = data["monitoring_prometheus_dir"], f"{data['monitoring_prometheus_dir']}/prometheus.yml"
    alertmanager_conf = data["monitoring_alertmanager_dir"]
    web_yml = f"{prometheus_conf}/web.yml"
    dropins = [
        _dropin("Prometheus: the site's address, storage, auth and hardening (before it starts)",
                "systemd/prometheus.conf.j2", data["monitoring_prometheus_dropin"],
                prometheus_binary=data["monitoring_prometheus_binary"], agent=False, config_file=prometheus_yml,
                listen=prometheus_listen, web_config=web_yml,
                external_url=f"http://{prometheus_listen}/", consoles=f"{prometheus_conf}/consoles",
                console_libraries=f"{prometheus_conf}/console_libraries", data_dir=data["monitoring_prometheus_data"],
                retention=f"{site['retention_days']}d"),
        _dropin("Alertmanager: the site's address, storage, auth and hardening (before it starts)",
                "systemd/prometheus-alertmanager.conf.j2", data["monitoring_alertmanager_dropin"],
                alertmanager_binary=data["monitoring_alertmanager_binary"],
                config_file=f"{alertmanager_conf}/alertmanager.yml", listen=alertmanager_listen,
                web_config=f"{alertmanager_conf}/web.yml", external_url=f"http://{alertmanager_listen}/",
                data_dir=data["monitoring_alertmanager_data"]),
    ]
    _installed(data, [*data["monitoring_prometheus_packages"], *data["monitoring_alertmanager_packages"]])
    group = data["monitoring_service_group"]
    for path in (prometheus_conf, f"{prometheus_conf}/rules", f"{prometheus_conf}/consoles",
                 f"{prometheus_conf}/console_libraries", alertmanager_conf):
        directory(f"Monitoring: {path}", path, "750", "root", group)
    for path in (data["monitoring_prometheus_data"], data["monitoring_alertmanager_data"]):
        directory(f"Monitoring: {path} (the service's data)", path, "750", group, group)
    web = web_config(secrets["password"], wants["cn_host"])
    prometheus_files = [
        _secret_file("Prometheus: the site's password (to reach Alertmanager)", secrets["password"],
                     data["monitoring_password_path"], group),
        template("Monitoring: Prometheus: the site's configuration (scrapes, rules, Alertmanager)", "prometheus/prometheus.yml.j2",
                 prometheus_yml, mode="640", group=group,
                 prometheus_config=site_config(wants, data, address, site_address)),
        template("Monitoring: Prometheus: the site's basic auth", "prometheus/web.yml.j2", web_yml, mode="640", group=group,
                 web_config=web),
        *_copied("Prometheus: the alert rules", REPO_ROOT / "monitoring/rules", "*.yml", f"{prometheus_conf}/rules", group),
        *_copied("Prometheus: the dashboards", TEMPLATES_DIR / "prometheus/consoles", "*.html",
                 f"{prometheus_conf}/consoles", group),
        *_copied("Prometheus: the dashboards' library", TEMPLATES_DIR / "prometheus/console_libraries", "*.lib",
                 f"{prometheus_conf}/console_libraries", group),
    ]
    tokens = [
        _secret_file(f"Alertmanager: webhook {i}'s token", token, webhook_token_path(data, i), group)
        for i, token in enumerate(secrets["tokens"]) if token is not None
    ]
    alertmanager_files = [
        template("Monitoring: Alertmanager: the site's receivers", "alertmanager/alertmanager.yml.j2",
                 f"{alertmanager_conf}/alertmanager.yml", mode="640", group=group,
                 alertmanager_config=alertmanager_config(wants, data, secrets["smtp_password"])),
        template("Monitoring: Alertmanager: the site's basic auth", "prometheus/web.yml.j2", f"{alertmanager_conf}/web.yml",
                 mode="640", group=group, web_config=web),
        *tokens,
    ]
    _running(data["monitoring_prometheus_unit"], [dropins[0], *prometheus_files], "Prometheus")
    _running(data["monitoring_alertmanager_unit"], [dropins[1], *alertmanager_files], "Alertmanager")
    site_results(wants, data)


def site_results(wants: dict[str, Any], data: dict[str, Any]) -> None:
    """The site's results loader: every few minutes, the plant's results bucket into the site's SQLite database
    (its directory the pipeline user's) and their counts into the textfile directory, for the results dashboard."""
    pipeline = role_data("pipeline")
    variables = results_unit_vars(wants, data, pipeline)
    user, unit = pipeline["pipeline_user"], data["monitoring_results_unit"]
    directory("Monitoring: the results database's directory", variables["results_db_dir"], "750", user, user)
    changed = [template("Monitoring: the results loader's unit", "systemd/circularnet-results.service.j2",
                        f"/etc/systemd/system/{unit}.service", **variables),
               template("Monitoring: the results loader's timer", "systemd/circularnet-results.timer.j2",
                        f"/etc/systemd/system/{unit}.timer", **variables)]
    after_change(name="Monitoring: systemd reloaded and the results timer restarted (its units changed)",
                 changed=changed, commands=["systemctl daemon-reload", shlex.join(["systemctl", "restart", f"{unit}.timer"])])
    systemd.service(name="Monitoring: the results timer enabled and running", service=f"{unit}.timer", running=True,
                    enabled=True)


def agent_prometheus(wants: dict[str, Any], data: dict[str, Any], secrets: dict[str, Any], address: str) -> None:
    """Prometheus in agent mode: the host's own exporters, remote-written to the site; its WAL keeps every
    sample while the site cannot be reached."""
    config = f"{data['monitoring_prometheus_dir']}/prometheus.yml"
    dropin = _dropin("Prometheus: agent mode on loopback, its WAL and hardening (before it starts)",
                     "systemd/prometheus.conf.j2", data["monitoring_prometheus_dropin"],
                     prometheus_binary=data["monitoring_prometheus_binary"], agent=True, config_file=config,
                     listen=listen_address("127.0.0.1", data["monitoring_agent_port"]),
                     data_dir=data["monitoring_agent_data"])
    _installed(data, data["monitoring_prometheus_packages"])
    group = data["monitoring_service_group"]
    directory(f"Monitoring: {data['monitoring_prometheus_dir']}", data["monitoring_prometheus_dir"], "750", "root", group)
    directory("Monitoring: the agent's WAL directory", data["monitoring_agent_data"], "750", group, group)
    # A pull run names no password file (a bundle never carries it): the copy the first push made stays.
    kept = secrets["password"] is None
    changed = [
        dropin,
        *([] if kept else [_secret_file("Prometheus: the site's password (to remote-write)", secrets["password"],
                                        data["monitoring_password_path"], group)]),
        template("Monitoring: Prometheus: the agent's configuration (its exporters, the site)", "prometheus/prometheus.yml.j2",
                 config, mode="640", group=group, prometheus_config=agent_config(wants, data, address)),
    ]
    _running(data["monitoring_prometheus_unit"], changed, "Prometheus (agent)")


def _dropin(name: str, src: str, dest: str, **variables: Any) -> OperationMeta:
    directory(f"Monitoring: {dest.rsplit('/', 1)[0]}", dest.rsplit("/", 1)[0])
    return template(f"Monitoring: {name}", src, dest, **variables)


def _installed(data: dict[str, Any], packages: list[str]) -> None:
    index_refreshed(name="Monitoring: package index fresh for Prometheus", changed=[], packages=packages,
                    timeout=data["monitoring_apt_update_timeout"])
    apt.packages(name=f"Monitoring: {', '.join(packages)}", packages=packages, no_recommends=True)


def _secret_file(name: str, value: str, dest: str, group: str) -> OperationMeta:
    """A secret from the deploying machine on the host, 0640 root:<group>; its value never printed."""
    return files.put(name=f"Monitoring: {name}", src=io.StringIO(value), dest=dest, mode="640", user="root", group=group)


def _copied(name: str, source: Path, pattern: str, dest: str, group: str) -> list[OperationMeta]:
    """Every `pattern` file of the repository's `source` directory in `dest`, verbatim (not rendered)."""
    return [files.put(name=f"Monitoring: {name} ({path.name})", src=str(path), dest=f"{dest}/{path.name}", mode="640",
                      user="root", group=group) for path in sorted(source.glob(pattern))]


def _running(unit: str, changed: list[OperationMeta], label: str) -> None:
    after_change(name=f"Monitoring: systemd reloaded and {label} restarted (its unit or files changed)",
                 changed=changed, commands=["systemctl daemon-reload", shlex.join(["systemctl", "restart", unit])])
    systemd.service(name=f"Monitoring: {label} enabled and running", service=unit, running=True, enabled=True)
