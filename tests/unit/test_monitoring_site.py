"""The site's Prometheus and Alertmanager and the agents (the monitoring layer's part 5, both engines): who
collects whose metrics (cnctl.hostvars.collection), the configurations checked by Prometheus' and
Alertmanager's own tools (promtool, amtool), the drop-ins merged over Debian's own units (verified, hardened,
never on the packages' defaults), the site's password read on the deploying machine and refused at the field,
and the engines rendering the same bytes."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import yaml

from cnctl.config import StackConfigError, parse
from cnctl.hostvars import collection, host_vars, scrape_targets
from deploy.rules import monitoring as rules
from deploy.steps import role_data
from tests.unit import collection_tree
from tests.unit.render_parity import by_ansible, by_pyinfra, render
from tests.unit.sinks import CLOUD, SITE
from tests.unit.test_monitoring_layer import _bare, _exposure, _verify

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "roles" / "monitoring"
MAX_EXPOSURE = 3.0
# Debian bookworm's prometheus 2.42.0+ds-5+deb12u1 and prometheus-alertmanager 0.25.0-1+b4: their units as the
# packages ship them (/lib/systemd/system/), which the layer's drop-ins are merged over.
PROMETHEUS_UNIT = """[Unit]
Description=Monitoring system and time series database
Documentation=https://prometheus.io/docs/introduction/overview/ man:prometheus(1)
After=time-sync.target

[Service]
Restart=on-failure
User=prometheus
EnvironmentFile=/etc/default/prometheus
ExecStart=/usr/bin/prometheus $ARGS
ExecReload=/bin/kill -HUP $MAINPID
TimeoutStopSec=20s
SendSIGKILL=no
AmbientCapabilities=
CapabilityBoundingSet=
DeviceAllow=/dev/null rw
DevicePolicy=strict
LimitMEMLOCK=0
LimitNOFILE=32768
LockPersonality=true
MemoryDenyWriteExecute=true
NoNewPrivileges=true
PrivateDevices=true
PrivateTmp=true
PrivateUsers=true
ProtectControlGroups=true
ProtectHome=true
ProtectKernelModules=true
ProtectKernelTunables=true
ProtectSystem=full
RemoveIPC=true
RestrictNamespaces=true
RestrictRealtime=true
SystemCallArchitectures=native

[Install]
WantedBy=multi-user.target
"""
ALERTMANAGER_UNIT = """[Unit]
Description=Alertmanager for prometheus
Documentation=https://prometheus.io/docs/alerting/alertmanager/

[Service]
Restart=on-failure
User=prometheus
EnvironmentFile=/etc/default/prometheus-alertmanager
ExecStart=/usr/bin/prometheus-alertmanager $ARGS
ExecReload=/bin/kill -HUP $MAINPID
TimeoutStopSec=20s
SendSIGKILL=no

[Install]
WantedBy=multi-user.target
"""


def _stack(**monitoring: Any) -> Any:
    raw = copy.deepcopy(SITE)
    raw["monitoring"] = {**raw["monitoring"], **monitoring}
    return parse(raw, environment="onprem", source="test")


def _wants(cfg: Any = None, name: str = "plant-c-gpu-1") -> dict[str, Any]:
    cfg = cfg or _stack()
    for entry in cfg.fleets.edge:
        if entry.name == name:
            return host_vars(cfg, "edge", entry)
    return host_vars(cfg, "servers", next(entry for entry in cfg.fleets.servers if entry.name == name))


def _loopback_site() -> Any:
    """SITE with Triton on loopback: the edge device becomes an agent."""
    raw = copy.deepcopy(SITE)
    raw["inference"] = {"bindAddress": "127.0.0.1"}
    return parse(raw, environment="onprem", source="test")


DATA = role_data("monitoring")
BASES_KEY = CLOUD["bundle"]["signers"][0]["publicKey"]


# --- who collects whose metrics ---------------------------------------------------------------------------------


def test_each_host_has_one_part_in_the_sites_monitoring() -> None:
    reachable, loopback = _stack(), _loopback_site()
    # the named server runs the site; a push host on a reachable address is scraped; on loopback, an agent
    assert _wants(reachable)["cn_monitoring_collection"] == "site"
    assert _wants(reachable, "belt-3-orin")["cn_monitoring_collection"] == "scraped"
    assert _wants(loopback, "belt-3-orin")["cn_monitoring_collection"] == "agent"
    assert [t["host"] for t in scrape_targets(reachable)] == ["belt-3-orin"] and scrape_targets(loopback) == []
    # a pull-mode host is never scraped, even on a reachable address (its inbound may be closed)
    assert collection(reachable, "edge", reachable.fleets.edge[0], "pull") == "agent"
    # no monitoring server: nobody takes part; and only the site holds the site's settings and the password path
    none = parse({k: v for k, v in SITE.items() if k != "monitoring"}, environment="onprem", source="test")
    assert {_wants(none, n)["cn_monitoring_collection"] for n in ("plant-c-gpu-1", "belt-3-orin")} == {"none"}
    assert _wants(reachable, "belt-3-orin")["cn_monitoring_site"] is None
    assert _wants(reachable, "belt-3-orin")["cn_monitoring_password_file"] is None
    assert _wants(loopback, "belt-3-orin")["cn_monitoring_password_file"] == "/etc/cnctl/onprem-monitoring.pw"
    assert _wants(reachable)["cn_monitoring_site_url"] == "http://[fd00:60::10]:9090"


@pytest.mark.parametrize(("change", "path", "says"), [
    ({"server": "belt-3-orin"}, "monitoring.server", "is not a fleets.servers entry"),
    ({"server": "plant-z"}, "monitoring.server", "plant-c-gpu-1"),
    ({"interface": None}, "monitoring.interface", "the interface of plant-c-gpu-1"),
    ({"passwordFile": None}, "monitoring.passwordFile", "openssl rand"),
    ({"smtp": None}, "monitoring.smtp", "mail relay"),
    ({"smtp": {"smarthost": "mail.plant.example", "sender": "a@plant.example", "username": "alerts"}},
     "monitoring.smtp.passwordFile", "other half"),
    ({"prometheusPort": 8002}, "monitoring.prometheusPort", "inference.ports.metrics"),
    ({"alertmanagerPort": 9100}, "monitoring.alertmanagerPort", "monitoring.nodeExporterPort"),
])
def test_a_bad_site_setting_is_refused_at_its_field(change: dict[str, Any], path: str, says: str) -> None:
    with pytest.raises(StackConfigError) as caught:
        _stack(**change)
    assert any(p.path == path and says in str(p) for p in caught.value.problems), caught.value.problems


def test_a_pull_mode_site_is_refused_and_a_pull_run_keeps_the_agents_password_in_place() -> None:
    from cnctl.inventory import pull_host

    raw = copy.deepcopy(SITE)
    raw["fleets"]["servers"][0]["mode"] = "pull"
    raw["bundle"] = {"signers": [{"identity": "release@plant", "publicKey": BASES_KEY}], "signingKey": "~/.ssh/k"}
    with pytest.raises(StackConfigError) as caught:
        parse(raw, environment="onprem", source="test")
    assert any(p.path == "monitoring.server" and "pull-mode" in str(p) for p in caught.value.problems)
    raw = copy.deepcopy(SITE)
    raw["fleets"]["edge"][0]["mode"] = "pull"
    raw["bundle"] = {"signers": [{"identity": "release@plant", "publicKey": BASES_KEY}], "signingKey": "~/.ssh/k"}
    pulled = pull_host(parse(raw, environment="onprem", source="test"), "belt-3-orin", "edge")
    assert pulled.vars["cn_monitoring_collection"] == "agent" and pulled.vars["cn_monitoring_password_file"] is None


def test_site_settings_without_a_site_are_refused() -> None:
    raw = copy.deepcopy(SITE)
    del raw["monitoring"]["server"]
    with pytest.raises(StackConfigError) as caught:
        parse(raw, environment="onprem", source="test")
    assert {p.path for p in caught.value.problems} >= {"monitoring.interface", "monitoring.webhooks"}


# --- the configurations, checked by Prometheus' and Alertmanager's own tools -----------------------------------------


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:  # a system package of the one list: missing is a failure, never a skip
        pytest.fail(f"{name} is missing: `sudo python3 cnctl/sandbox/prereqs.py ensure` installs it")
    return found


def _on_disk(tmp_path: Path) -> dict[str, Any]:
    """The role's paths moved under tmp_path, the password and the rules there, as on a site host."""
    data = {**DATA, "monitoring_prometheus_dir": str(tmp_path / "prometheus"),
            "monitoring_alertmanager_dir": str(tmp_path / "alertmanager"),
            "monitoring_password_path": str(tmp_path / "prometheus" / "site.password")}
    (tmp_path / "prometheus" / "rules").mkdir(parents=True)
    (tmp_path / "alertmanager").mkdir()
    (tmp_path / "prometheus" / "site.password").write_text("s3cret")
    for rule in (REPO / "monitoring" / "rules").glob("*.yml"):
        shutil.copy(rule, tmp_path / "prometheus" / "rules" / rule.name)
    return data


def _written(path: Path, src: str, **variables: Any) -> Path:
    path.write_text(render(src, **variables))
    return path


def test_the_sites_configuration_passes_promtool_with_its_rules(tmp_path: Path) -> None:
    data, wants = _on_disk(tmp_path), _wants()
    config = rules.site_config(wants, data, "fd00:50::7", "10.50.2.10")
    written = _written(tmp_path / "prometheus" / "prometheus.yml", "prometheus/prometheus.yml.j2", prometheus_config=config)
    checked = subprocess.run([_tool("promtool"), "check", "config", str(written)], capture_output=True, text=True,
                             timeout=120, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert re.search(r"SUCCESS: \d+ rules found", checked.stdout), checked.stdout
    loaded = yaml.safe_load(written.read_text())
    jobs = {job["job_name"]: job for job in loaded["scrape_configs"]}
    own, fleet = (jobs["circularnet-node"]["static_configs"][i] for i in (0, 1))
    assert own == {"targets": ["[fd00:50::7]:9100"], "labels": {"instance": "plant-c-gpu-1", "site": "default",
                                                                  "group": "servers", "platform": "server"}}
    assert fleet["targets"] == ["belt-3.plant.example:9100"] and fleet["labels"]["instance"] == "belt-3-orin"
    assert jobs["circularnet-triton"]["static_configs"][0]["targets"] == ["[fd00:50::7]:8002"]
    alerting = loaded["alerting"]["alertmanagers"][0]
    assert alerting["static_configs"][0]["targets"] == ["10.50.2.10:9093"]
    assert alerting["basic_auth"] == {"username": "circularnet", "password_file": data["monitoring_password_path"]}


def test_an_agents_configuration_passes_promtool_in_agent_mode(tmp_path: Path) -> None:
    data, wants = _on_disk(tmp_path), _wants(_loopback_site(), "belt-3-orin")
    config = rules.agent_config(wants, data, "127.0.0.1")
    written = _written(tmp_path / "prometheus" / "prometheus.yml", "prometheus/prometheus.yml.j2", prometheus_config=config)
    checked = subprocess.run([_tool("promtool"), "check", "config", "--agent", str(written)], capture_output=True,
                             text=True, timeout=120, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    write = yaml.safe_load(written.read_text())["remote_write"][0]
    assert write["url"] == "http://[fd00:60::10]:9090/api/v1/write"
    assert write["basic_auth"]["password_file"] == data["monitoring_password_path"]


def test_the_web_config_passes_promtool_and_holds_only_a_hash_of_the_password(tmp_path: Path) -> None:
    web = rules.web_config("s3cret pass", "plant-c-gpu-1")
    written = _written(tmp_path / "web.yml", "prometheus/web.yml.j2", web_config=web)
    checked = subprocess.run([_tool("promtool"), "check", "web-config", str(written)], capture_output=True, text=True,
                             timeout=120, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    hashed = yaml.safe_load(written.read_text())["basic_auth_users"]["circularnet"]
    assert "s3cret" not in written.read_text() and bcrypt.checkpw(b"s3cret pass", hashed.encode())
    # the same password on the same host: the same file (a re-run changes nothing); anywhere else: another salt
    assert rules.web_config("s3cret pass", "plant-c-gpu-1") == web
    assert rules.web_config("s3cret pass", "plant-d-gpu-1") != web


def test_the_alertmanager_configuration_passes_amtool(tmp_path: Path) -> None:
    data = _on_disk(tmp_path)
    config = rules.alertmanager_config(_wants(), data, "relay pass")
    written = _written(tmp_path / "alertmanager" / "alertmanager.yml", "alertmanager/alertmanager.yml.j2",
                       alertmanager_config=config)
    checked = subprocess.run([_tool("amtool"), "check-config", str(written)], capture_output=True, text=True,
                             timeout=120, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    loaded = yaml.safe_load(written.read_text())
    receiver = loaded["receivers"][0]
    assert receiver["email_configs"] == [{"to": "ops@plant.example", "send_resolved": True}]
    assert receiver["webhook_configs"][0]["url"] == "https://hooks.plant.example/alerts"
    assert receiver["webhook_configs"][0]["http_config"]["authorization"]["credentials_file"] == \
        rules.webhook_token_path(data, 0)
    assert loaded["global"]["smtp_smarthost"] == "mail.plant.example:587"
    assert loaded["global"]["smtp_auth_password"] == "relay pass"


@pytest.mark.parametrize("hostile", ['a"b', "x\ny: 1", "{{ 7*7 }}", "- z\n  - q", "#c", "&anchor *ref", "'"])
def test_a_hostile_receiver_value_stays_one_string(tmp_path: Path, hostile: str) -> None:
    wants = _wants()
    wants["cn_monitoring_site"] = {**wants["cn_monitoring_site"],
                                   "webhooks": [{"url": f"https://h.example/{hostile}", "token_file": None}]}
    text = render("alertmanager/alertmanager.yml.j2",
                  alertmanager_config=rules.alertmanager_config(wants, DATA, hostile))
    loaded = yaml.safe_load(text)
    assert loaded["receivers"][0]["webhook_configs"][0]["url"] == f"https://h.example/{hostile}"
    assert loaded["global"]["smtp_auth_password"] == hostile


# --- the secrets on the deploying machine -----------------------------------------------------------------------


def _secret_file(tmp_path: Path, name: str, text: str, mode: int = 0o600) -> str:
    path = tmp_path / name
    path.write_text(text)
    os.chmod(path, mode)
    return str(path)


def test_the_sites_secrets_are_read_from_their_files(tmp_path: Path) -> None:
    wants = _wants()
    wants["cn_monitoring_password_file"] = _secret_file(tmp_path, "pw", "s3cret\nignored\n")
    site = wants["cn_monitoring_site"]
    site["smtp"]["password_file"] = _secret_file(tmp_path, "smtp", "relay\n")
    site["webhooks"][0]["token_file"] = _secret_file(tmp_path, "hook", "tok")
    assert rules.controller_secrets(wants) == {"problem": "", "password": "s3cret", "smtp_password": "relay",
                                               "tokens": ["tok"]}


@pytest.mark.parametrize(("field", "text", "mode", "says"), [
    ("password", None, 0o600, "monitoring.passwordFile {path} cannot be read on the deploying machine"),
    ("password", "s3cret", 0o644, "monitoring.passwordFile {path} is readable by others (mode 0644): chmod 600"),
    ("password", "\n\n", 0o600, "monitoring.passwordFile {path} is empty"),
    ("smtp", None, 0o600, "monitoring.smtp.passwordFile {path} cannot be read"),
    ("hook", "tok", 0o640, "monitoring.webhooks[0].tokenFile {path} is readable by others"),
])
def test_a_missing_open_or_empty_secret_is_refused_naming_its_field(tmp_path: Path, field: str, text: str | None,
                                                                     mode: int, says: str) -> None:
    wants = _wants()
    files = {name: _secret_file(tmp_path, name, "fine") for name in ("password", "smtp", "hook")}
    files[field] = _secret_file(tmp_path, f"{field}-bad", text, mode) if text is not None else str(tmp_path / "absent")
    wants["cn_monitoring_password_file"] = files["password"]
    wants["cn_monitoring_site"]["smtp"]["password_file"] = files["smtp"]
    wants["cn_monitoring_site"]["webhooks"][0]["token_file"] = files["hook"]
    found = rules.controller_secrets(wants)
    assert found["problem"].startswith("plant-c-gpu-1: ") and says.format(path=files[field]) in found["problem"]
    assert found["password"] is None


def test_a_site_interface_without_an_address_is_refused() -> None:
    assert "monitoring.interface enp3s0 has no IPv4 address" in rules.site_problem(_wants(), None)
    assert rules.site_problem(_wants(), "10.50.2.10") == ""
    assert rules.site_problem(_wants(_stack(), "belt-3-orin"), None) == ""  # not the site: nothing to listen on


# --- the drop-ins over Debian's units ---------------------------------------------------------------------------


def _site_dropin(**overrides: Any) -> dict[str, Any]:
    return {"prometheus_binary": "/bin/true", "agent": False, "config_file": "/etc/circularnet/prometheus/prometheus.yml",
            "listen": "10.50.2.10:9090", "web_config": "/etc/circularnet/prometheus/web.yml",
            "external_url": "http://10.50.2.10:9090/", "consoles": "/etc/circularnet/prometheus/consoles",
            "console_libraries": "/etc/circularnet/prometheus/console_libraries",
            "data_dir": "/var/lib/prometheus/metrics2", "retention": "30d", **overrides}


def _agent_dropin(**overrides: Any) -> dict[str, Any]:
    return {"prometheus_binary": "/bin/true", "agent": True, "config_file": "/etc/circularnet/prometheus/prometheus.yml",
            "listen": "127.0.0.1:9090", "data_dir": "/var/lib/prometheus/agent", **overrides}


def _alertmanager_dropin(**overrides: Any) -> dict[str, Any]:
    return {"alertmanager_binary": "/bin/true", "config_file": "/etc/circularnet/alertmanager/alertmanager.yml",
            "listen": "10.50.2.10:9093", "web_config": "/etc/circularnet/alertmanager/web.yml",
            "external_url": "http://10.50.2.10:9093/", "data_dir": "/var/lib/prometheus/alertmanager", **overrides}


def _results() -> dict[str, Any]:
    """The results loader's units' variables, as the site's deploy gives them."""
    return rules.results_unit_vars(_wants(), DATA, role_data("pipeline"))


RENDERINGS: list[tuple[str, dict[str, Any]]] = [
    ("systemd/prometheus.conf.j2", _site_dropin()),
    ("systemd/prometheus.conf.j2", _agent_dropin()),
    ("systemd/prometheus-alertmanager.conf.j2", _alertmanager_dropin()),
    ("prometheus/prometheus.yml.j2", {"prometheus_config": rules.site_config(_wants(), DATA, "fd00:50::7", "10.50.2.10")}),
    ("prometheus/web.yml.j2", {"web_config": {"basic_auth_users": {"circularnet": "$2b$12$x"}}}),
    ("alertmanager/alertmanager.yml.j2", {"alertmanager_config": rules.alertmanager_config(_wants(), DATA, "pw")}),
    ("systemd/circularnet-results.service.j2", _results()),
    ("systemd/circularnet-results.timer.j2", _results()),
]


def _merged(tmp_path: Path, package: str, name: str, src: str, variables: dict[str, Any]) -> Path:
    unit = tmp_path / name
    unit.write_text(package.replace("EnvironmentFile=", "EnvironmentFile=-") + render(src, **variables))
    return unit


@pytest.mark.parametrize(("package", "name", "src", "variables"), [
    (PROMETHEUS_UNIT, "prometheus.service", "systemd/prometheus.conf.j2", _site_dropin()),
    (PROMETHEUS_UNIT, "prometheus.service", "systemd/prometheus.conf.j2", _agent_dropin()),
    (ALERTMANAGER_UNIT, "prometheus-alertmanager.service", "systemd/prometheus-alertmanager.conf.j2",
     _alertmanager_dropin()),
], ids=["site", "agent", "alertmanager"])
def test_each_drop_in_verifies_is_hardened_and_waits_for_its_configuration(
        tmp_path: Path, package: str, name: str, src: str, variables: dict[str, Any]) -> None:
    unit = _merged(tmp_path, package, name, src, variables)
    result = _verify(unit)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    text = unit.read_text()
    # the package's postinst starts it before the layer has written its configuration: that start waits
    assert f"ConditionPathExists={variables['config_file']}\n" in text
    assert "\nExecStart=\nExecStart=/bin/true " in text and "$ARGS" not in text.split("ExecStart=\n")[1]
    assert f"--web.listen-address={variables['listen']} " in text
    assert _exposure(unit) <= MAX_EXPOSURE
    assert _exposure(_bare(unit)) > MAX_EXPOSURE


def test_the_site_asks_for_the_password_and_takes_remote_writes_and_an_agent_stays_on_loopback(tmp_path: Path) -> None:
    site = render("systemd/prometheus.conf.j2", **_site_dropin())
    agent = render("systemd/prometheus.conf.j2", **_agent_dropin())
    assert "--web.config.file=/etc/circularnet/prometheus/web.yml" in site and "--web.enable-remote-write-receiver" in site
    assert "--enable-feature=agent" in agent and "--web.listen-address=127.0.0.1:9090 " in agent
    assert "remote-write-receiver" not in agent
    alertmanager = render("systemd/prometheus-alertmanager.conf.j2", **_alertmanager_dropin())
    assert alertmanager.rstrip().split("\n")[alertmanager.rstrip().split("\n").index("ExecStart=") + 1].endswith(
        "--cluster.listen-address=")  # no gossip port on every address


# --- the site's results loader -----------------------------------------------------------------------------------


def test_the_results_loader_runs_as_the_pipelines_user_writes_two_directories_and_verifies(tmp_path: Path) -> None:
    variables = _results()
    unit, timer = tmp_path / "circularnet-results.service", tmp_path / "circularnet-results.timer"
    text = render("systemd/circularnet-results.service.j2", **variables)
    # verified with an interpreter this machine has (the venv is the host's)
    unit.write_text(text.replace(f"ExecStart={variables['results_python']} ", "ExecStart=/usr/bin/python3 "))
    timer.write_text(render("systemd/circularnet-results.timer.j2", **variables))
    for path in (unit, timer):
        result = _verify(path)
        assert (result.returncode, result.stderr) == (0, ""), result.stderr
    pipeline = role_data("pipeline")
    sites = " ".join(f"--site {host}={site}" for host, site in sorted(_wants()["cn_monitoring_site"]["sites"].items()))
    assert (f"ExecStart={pipeline['pipeline_venv']}/bin/python -m cnhost.results_db load --config "
            f"{pipeline['pipeline_settings']} --db /var/lib/circularnet/results/results.db "
            f"--metrics /var/lib/prometheus/node-exporter/results.prom {sites}\n") in text
    assert f"User={pipeline['pipeline_user']}\n" in text and "Type=oneshot\n" in text
    assert "ReadWritePaths=/var/lib/circularnet/results /var/lib/prometheus/node-exporter\n" in text
    assert "CapabilityBoundingSet=\n" in text and "ProtectSystem=strict\n" in text
    assert "OnUnitActiveSec=5min\n" in timer.read_text()
    assert _exposure(unit) <= MAX_EXPOSURE
    assert _exposure(_bare(unit)) > MAX_EXPOSURE


def test_every_fleet_host_has_its_site_for_the_results_and_the_site_shares_its_textfile_directory() -> None:
    cfg = _stack()
    sites = _wants(cfg)["cn_monitoring_site"]["sites"]
    assert sites == {e.name: e.site for e in [*cfg.fleets.edge, *cfg.fleets.servers]}
    pipeline = role_data("pipeline")
    assert rules.textfile_access(_wants(cfg), pipeline) == {"owner": "root", "group": pipeline["pipeline_user"],
                                                             "mode": "1775"}
    edge = next(e.name for e in cfg.fleets.edge)
    assert rules.textfile_access(_wants(cfg, edge), pipeline) == {"owner": "root", "group": "root", "mode": "755"}


# --- both engines -------------------------------------------------------------------------------------------------


def test_pyinfra_and_ansible_render_the_sites_templates_to_the_same_bytes(tmp_path: Path) -> None:
    assert by_pyinfra(RENDERINGS) == by_ansible(RENDERINGS, tmp_path)


def test_both_engines_render_the_same_templates_and_each_has_a_rendering_here() -> None:
    from tests.unit import test_monitoring_layer

    source = (REPO / "deploy" / "monitoring.py").read_text()
    by_pyinfra = set(re.findall(r'"([a-z]+/[a-z.-]+\.j2)"', source))
    tasks = "".join(path.read_text() for path in sorted((ROLE / "tasks").glob("*.yml")))
    by_ansible = set(re.findall(r'_templates_dir \}\}/([a-z]+/[a-z.-]+\.j2)"', tasks))
    assert by_pyinfra == by_ansible == {src for src, _ in (*RENDERINGS, *test_monitoring_layer.RENDERINGS)}


def test_the_roles_site_filters_are_the_deploys_functions() -> None:
    filters = collection_tree.filters()
    for name in ("secrets", "site_problem", "listen_address", "site_config", "agent_config", "alertmanager_config",
                 "web_config", "webhook_token_path", "textfile_access", "results_unit_vars"):
        function = getattr(rules, {"secrets": "controller_secrets"}.get(name, name))
        assert collection_tree.same_function(filters[f"cnctl_monitoring_{name}"], function), name


def test_the_site_settings_are_json_for_the_inventory() -> None:
    assert json.loads(json.dumps(_wants()["cn_monitoring_site"])) == _wants()["cn_monitoring_site"]
