"""The monitoring layer's pure builders (deploy/monitoring.py runs them; so do the collection's filters).

    gpu_tool("jetson")                         -> "tegrastats"
    gpu_tool("server")                         -> "nvidia-smi"
    listen_address("10.20.0.5", 9100)          -> "10.20.0.5:9100"
    listen_address("::1", 9100)                -> "[::1]:9100"
"""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path
from typing import Any

from cnhost import triton_endpoint  # the one `address:port` builder (the collection carries it)

from . import scripts

# The tool whose samples cnhost/gpu_metrics.py turns into metrics, by cn_platform: NVIDIA's own on each.
GPU_TOOLS = {"jetson": "tegrastats", "server": "nvidia-smi"}


def gpu_tool(platform: str) -> str:
    """The GPU tool a host of `platform` has (the driver's nvidia-smi, or L4T's tegrastats)."""
    if platform not in GPU_TOOLS:
        raise ValueError(f"cn_platform {platform!r} is neither jetson nor server")
    return GPU_TOOLS[platform]


def listen_address(address: str, port: int) -> str:
    """node-exporter's `--web.listen-address`: the address Triton binds (an IPv6 one in brackets) and the port."""
    return triton_endpoint.host_port(address, port)


def exporter_vars(wants: dict[str, Any], data: dict[str, Any], address: str) -> dict[str, Any]:
    """templates/systemd/prometheus-node-exporter.conf.j2's variables: what node-exporter runs with."""
    return {"exporter_binary": data["monitoring_exporter_binary"],
            "listen": listen_address(address, wants["cn_monitoring_exporter_port"]),
            "textfile_dir": data["monitoring_textfile_dir"]}


def gpu_unit_vars(wants: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """templates/systemd/circularnet-gpu-metrics.service.j2's variables: the collector, its tool and its file."""
    return {"gpu_programs": scripts.program_home(data["monitoring_gpu_helper"]),
            "gpu_tool": gpu_tool(wants["cn_platform"]),
            "gpu_textfile": f"{data['monitoring_textfile_dir']}/{data['monitoring_gpu_textfile']}",
            "textfile_dir": data["monitoring_textfile_dir"],
            "gpu_interval": data["monitoring_gpu_interval"]}


def textfile_access(wants: dict[str, Any], pipeline: dict[str, Any]) -> dict[str, str]:
    """The textfile directory's owner, group and mode: root's, 0755, on every host; on the site, where the results
    loader (the pipeline's user) writes its file there too, group the pipeline's user and 1775: sticky, so that
    user may replace its own files only, never the health report's or the GPU collector's (root's)."""
    if wants["cn_monitoring_collection"] == "site":
        return {"owner": "root", "group": pipeline["pipeline_user"], "mode": "1775"}
    return {"owner": "root", "group": "root", "mode": "755"}


def results_unit_vars(wants: dict[str, Any], data: dict[str, Any], pipeline: dict[str, Any]) -> dict[str, Any]:
    """templates/systemd/circularnet-results.{service,timer}.j2's variables: the site's results loader
    (cnhost/results_db.py) in the pipeline's venv, as its user, with its settings (`pipeline`: the pipeline role's
    settings), its database and its metrics file, and every fleet host's site (`--site HOST=SITE`, by name)."""
    site = wants["cn_monitoring_site"]
    return {"results_programs": scripts.program_home(data["monitoring_results_helper"]),
            "results_python": f"{pipeline['pipeline_venv']}/bin/python",
            "results_user": pipeline["pipeline_user"],
            "results_settings": pipeline["pipeline_settings"],
            "results_db": data["monitoring_results_db"],
            "results_db_dir": data["monitoring_results_db"].rsplit("/", 1)[0],
            "results_textfile": f"{data['monitoring_textfile_dir']}/{data['monitoring_results_textfile']}",
            "textfile_dir": data["monitoring_textfile_dir"],
            "results_sites": [f"{host}={where}" for host, where in sorted(site["sites"].items())],
            "results_timeout": data["monitoring_results_timeout"],
            "results_interval": data["monitoring_results_interval"]}


# --- the site's Prometheus and Alertmanager, and the agents ---------------------------------------------------
# Every series the site holds carries these labels, whichever way it came (scraped, or an agent's remote write):
# `instance` the fleet host's name, its `site`, `group` (edge, servers) and `platform` (jetson, server). The alert
# rules (monitoring/rules/), the dashboards and `cnctl status --source prometheus` read them.
NODE_JOB, TRITON_JOB = "circularnet-node", "circularnet-triton"
SITE_USER = "circularnet"  # the one user of the site's basic auth (monitoring.passwordFile holds its password)
# bcrypt's own base64 alphabet, for a salt derived from the password and the host (see web_config).
_BCRYPT_ALPHABET = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def target_labels(host: str, site: str, group: str, platform: str) -> dict[str, str]:
    """The labels of one host's series at the site."""
    return {"instance": host, "site": site, "group": group, "platform": platform}


def scrapes(hosts: list[tuple[dict[str, str], str]], exporter_port: int, triton_port: int) -> list[dict[str, Any]]:
    """Prometheus scrape_configs for `hosts` ([(labels, address)]): one job for node-exporter, one for Triton's
    metrics, a static config per host at its address."""
    return [{"job_name": job,
             "static_configs": [{"targets": [listen_address(address, port)], "labels": labels}
                                for labels, address in hosts]}
            for job, port in ((NODE_JOB, exporter_port), (TRITON_JOB, triton_port))]


def _labels(wants: dict[str, Any]) -> dict[str, str]:
    return target_labels(wants["cn_host"], wants["cn_site"], wants["cn_group"], wants["cn_platform"])


def site_config(wants: dict[str, Any], data: dict[str, Any], address: str, site_address: str) -> dict[str, Any]:
    """The site's prometheus.yml: its own exporters on `address` (Triton's), the scraped hosts, the alert rules,
    and its Alertmanager on `site_address` behind the site's password (the file on the host)."""
    site = wants["cn_monitoring_site"]
    exporter, triton = wants["cn_monitoring_exporter_port"], wants["cn_inference_metrics_port"]
    return {
        "global": {"scrape_interval": data["monitoring_scrape_interval"],
                   "evaluation_interval": data["monitoring_scrape_interval"]},
        "rule_files": [f"{data['monitoring_prometheus_dir']}/rules/*.yml"],
        "alerting": {"alertmanagers": [{
            "static_configs": [{"targets": [listen_address(site_address, site["alertmanager_port"])]}],
            "basic_auth": {"username": SITE_USER, "password_file": data["monitoring_password_path"]},
        }]},
        "scrape_configs": scrapes([(_labels(wants), address), *(
            (target_labels(t["host"], t["site"], t["group"], t["platform"]), t["address"]) for t in site["targets"])],
            exporter, triton),
    }


def agent_config(wants: dict[str, Any], data: dict[str, Any], address: str) -> dict[str, Any]:
    """An agent's prometheus.yml: its own exporters on `address`, every sample remote-written to the site (the
    WAL keeps them while the link is down) behind the site's password (the file on the host)."""
    return {
        "global": {"scrape_interval": data["monitoring_scrape_interval"]},
        "scrape_configs": scrapes([(_labels(wants), address)], wants["cn_monitoring_exporter_port"],
                                  wants["cn_inference_metrics_port"]),
        "remote_write": [{"url": f"{wants['cn_monitoring_site_url']}/api/v1/write",
                          "basic_auth": {"username": SITE_USER, "password_file": data["monitoring_password_path"]}}],
    }


def alertmanager_config(wants: dict[str, Any], data: dict[str, Any], smtp_password: str | None) -> dict[str, Any]:
    """The site's alertmanager.yml: one route to one receiver holding the stack's e-mails (through its relay)
    and webhooks (each with its token file on the host, webhook_token_path). `smtp_password`: the relay's
    password, read from the stack's file on the deploying machine (Alertmanager 0.25 has no file for it)."""
    site = wants["cn_monitoring_site"]
    receiver: dict[str, Any] = {"name": "circularnet"}
    if site["emails"]:
        receiver["email_configs"] = [{"to": email, "send_resolved": True} for email in site["emails"]]
    if site["webhooks"]:
        receiver["webhook_configs"] = [
            {"url": hook["url"], "send_resolved": True,
             **({"http_config": {"authorization": {"credentials_file": webhook_token_path(data, i)}}}
                if hook["token_file"] else {})}
            for i, hook in enumerate(site["webhooks"])]
    config: dict[str, Any] = {
        "route": {"receiver": "circularnet", "group_by": ["alertname", "instance"], "group_wait": "30s",
                  "group_interval": "5m", "repeat_interval": "4h"},
        "receivers": [receiver],
    }
    smtp = site["smtp"]
    if smtp:
        config["global"] = {"smtp_smarthost": listen_address(smtp["smarthost"], smtp["port"]),
                            "smtp_from": smtp["sender"], "smtp_require_tls": smtp["require_tls"],
                            **({"smtp_auth_username": smtp["username"], "smtp_auth_password": smtp_password}
                               if smtp["username"] else {})}
    return config


def webhook_token_path(data: dict[str, Any], index: int) -> str:
    """Where the site host keeps webhook `index`'s bearer token (0640 root, the packages' group)."""
    return f"{data['monitoring_alertmanager_dir']}/webhook-{index}.token"


def web_config(password: str, host: str) -> dict[str, Any]:
    """The site's web config (Prometheus' and Alertmanager's --web.config.file): basic auth for SITE_USER, its
    password as a bcrypt hash. The salt is derived from the password and the host, so the same password gives
    the same file (a re-run changes nothing) and no two hosts or passwords share a hash."""
    import bcrypt  # the controller's (both engines run this on the deploying machine)

    digest = hashlib.sha256(f"{host}\0{password}".encode()).digest()
    bits = int.from_bytes(digest[:17], "big") >> 4  # 132 bits: 22 characters of 6, the last 4 bits zero
    chars = "".join(_BCRYPT_ALPHABET[(bits >> (6 * i)) & 63] for i in reversed(range(22)))
    salt = f"$2b$12${chars[:21]}{_BCRYPT_ALPHABET[_BCRYPT_ALPHABET.index(chars[21]) & 0x30]}".encode()
    hashed = bcrypt.hashpw(password.encode(), salt).decode()
    return {"basic_auth_users": {SITE_USER: hashed}}


def password_of(text: str, path: str) -> str:
    """The password in a password file's text: its first line, which must not be empty."""
    line = text.splitlines()[0].strip() if text.strip() else ""
    if not line:
        raise ValueError(f"{path} is empty: write the password on its first line")
    return line


def controller_secrets(wants: dict[str, Any]) -> dict[str, Any]:
    """What the site or an agent needs from files on the deploying machine, read there: {problem, password,
    smtp_password, tokens: [webhook token or None]}. `problem` names the first file that is missing, readable
    by others or empty, and the fix; "" when all are fine (then nothing else is None that is needed)."""
    site = wants.get("cn_monitoring_site") or {}
    smtp = site.get("smtp") or {}
    wanted = [("monitoring.passwordFile", wants.get("cn_monitoring_password_file")),
              ("monitoring.smtp.passwordFile", smtp.get("password_file")),
              *((f"monitoring.webhooks[{i}].tokenFile", hook["token_file"]) for i, hook in enumerate(site.get("webhooks", [])))]
    values: list[str | None] = []
    for field, path in wanted:
        value, problem = _secret(field, path)
        if problem:
            return {"problem": f"{wants['cn_host']}: {problem}", "password": None, "smtp_password": None, "tokens": []}
        values.append(value)
    return {"problem": "", "password": values[0], "smtp_password": values[1], "tokens": values[2:]}


def _secret(field: str, path: str | None) -> tuple[str | None, str]:
    """(the first line of the file `path`, "") or (None, the problem naming `field`); (None, "") without a path."""
    if not path:
        return None, ""
    file = Path(path).expanduser()
    try:
        mode, text = stat.S_IMODE(file.stat().st_mode), file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"{field} {path} cannot be read on the deploying machine ({exc.__class__.__name__}): create it (mode 0600)"
    if mode & 0o077:
        return None, f"{field} {path} is readable by others (mode {mode:04o}): chmod 600 {path}"
    try:
        return password_of(text, f"{field} {path}"), ""
    except ValueError as exc:
        return None, str(exc)


def site_problem(wants: dict[str, Any], site_address: str | None) -> str:
    """Why the site's Prometheus cannot listen where the stack says ("" when it can): its interface has no address."""
    if wants["cn_monitoring_collection"] != "site" or site_address:
        return ""
    interface = wants["cn_monitoring_site"]["interface"]
    return (f"{wants['cn_host']}: monitoring.interface {interface} has no IPv4 address on this host: name the "
            "interface the fleet reaches it by (`ip -brief address` lists them)")
