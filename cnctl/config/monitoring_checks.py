"""Rules for the site's monitoring (`monitoring.server` and what goes with it).

Each yields a `Problem` at the field the user must change. GOOD / BAD:

| rule                           | GOOD                                              | BAD (field named)                              |
|--------------------------------|---------------------------------------------------|------------------------------------------------|
| monitoring_server_is_a_server  | server: gpu-server-1, a fleets.servers entry (or not in a fleet file's fleet) | server: belt-1-orin, an edge device (monitoring.server) |
| monitoring_server_pushed       | server: a push host                               | server: a pull-mode host (monitoring.server)   |
| monitoring_server_complete     | server + interface + passwordFile                 | server without interface (monitoring.interface) |
| site_settings_need_a_server    | no server, no interface/smtp/webhooks             | webhooks without server (monitoring.webhooks)   |
| emails_have_a_relay            | server + emails + smtp; emails without server     | server + emails, no smtp (monitoring.smtp)      |
| smtp_login_complete            | smtp with username and passwordFile, or neither   | username without passwordFile (monitoring.smtp.passwordFile) |

The ports of Prometheus and Alertmanager join the port-collision check (checks.ports_distinct).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from cnctl.catalog import Catalog
from cnctl.config.errors import Problem
from cnctl.config.schema import StackConfig

Rule = Callable[[StackConfig, Catalog], Iterator[Problem]]


def monitoring_server_is_a_server(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    """The site's Prometheus runs on a server of the stack's fleet, never on an edge device or an unknown host.
    A stack whose fleet is a fleet file (fleets.file) may boot fewer hosts than it lists: a fleet without the
    monitoring server has no site monitoring (cnctl.hostvars.collection), which is not an error."""
    name = cfg.monitoring.server
    servers = [server.name for server in cfg.fleets.servers]
    if name is not None and name not in servers and cfg.fleets.file is None:
        choices = ", ".join(servers) or "none: add one under fleets.servers"
        yield Problem("monitoring.server", name, f"is not a fleets.servers entry; name one of them ({choices})")


def monitoring_server_pushed(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    """The site takes its password and its receivers' secrets from the deploying machine at every deploy: a
    pull-mode host (which configures itself from a bundle that never carries secrets) cannot be the site."""
    server = next((s for s in cfg.fleets.servers if s.name == cfg.monitoring.server), None)
    if server is not None and server.mode == "pull":
        yield Problem("monitoring.server", server.name, "is a pull-mode host, whose bundles never carry the site's "
                      "secrets: name a push host (its fleet entry's mode: push)")


def monitoring_server_complete(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    """A site Prometheus listens on one named interface, behind a password: both are needed, neither guessed."""
    mon = cfg.monitoring
    if mon.server is None:
        return
    if mon.interface is None:
        yield Problem("monitoring.interface", None, f"must name the interface of {mon.server} that the fleet reaches "
                      "it by (e.g. eth0): Prometheus and Alertmanager listen on its address only")
    if mon.password_file is None:
        yield Problem("monitoring.passwordFile", None, "must name a file on this machine holding the password of user "
                      "circularnet for Prometheus and Alertmanager (e.g. `openssl rand -hex 24 > FILE`)")


def site_settings_need_a_server(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    """The site's settings without a site to carry them are a mistake, not a silent no-op."""
    mon = cfg.monitoring
    if mon.server is not None:
        return
    for path, value in (("interface", mon.interface), ("passwordFile", mon.password_file), ("smtp", mon.smtp),
                        ("webhooks", mon.webhooks)):
        if value:
            yield Problem(f"monitoring.{path}", "…", "is a setting of the site's monitoring; name its host in "
                          "monitoring.server, or remove it")


def emails_have_a_relay(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    """The site's Alertmanager sends `emails` through the plant's relay: without one they would never arrive."""
    mon = cfg.monitoring
    if mon.server is not None and mon.emails and mon.smtp is None:
        yield Problem("monitoring.smtp", None, "must name the mail relay (smarthost, sender) the site's Alertmanager "
                      "sends monitoring.emails through")


def smtp_login_complete(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    """A relay login is a user and a password, both or neither."""
    smtp = cfg.monitoring.smtp
    if smtp is None or (smtp.username is None) == (smtp.password_file is None):
        return
    missing = "passwordFile" if smtp.password_file is None else "username"
    yield Problem(f"monitoring.smtp.{missing}", None, "must be given with the other half of the relay's login")


RULES: tuple[Rule, ...] = (monitoring_server_is_a_server, monitoring_server_pushed, monitoring_server_complete,
                           site_settings_need_a_server, emails_have_a_relay, smtp_login_complete)
