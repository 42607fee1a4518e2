"""The site's monitoring as a person opens it: the pages of its Prometheus and Alertmanager, and whether each
answers (`cnctl monitoring urls`, the end of `make demo`).

    for page in pages(cfg): print(page.name, page.url)        # the stack's monitoring.server, its ports
    answer(page.url, read_password(cfg))                       # "" when it answers, else why not

Every page asks for the site's password (user `circularnet`, monitoring.passwordFile's first line): a browser
asks for it once per site.
"""

from __future__ import annotations

import base64
import urllib.error
import urllib.request
from dataclasses import dataclass

from cnctl.config.schema import StackConfig
from cnctl.hostvars import site_url
from cnctl.status_prometheus import USER

TIMEOUT_S = 10.0
# The dashboards (templates/prometheus/consoles/), by what they show.
DASHBOARDS = (("fleet dashboard", "consoles/circularnet-fleet.html"),
              ("results dashboard", "consoles/circularnet-results.html"))
# Prometheus' own pages: Debian's build serves its classic UI only, under /classic/.
CLASSIC = (("alerts (rules and their state)", "alerts"), ("targets (who is collected)", "targets"),
           ("Prometheus (queries)", "graph"))


@dataclass(frozen=True)
class Page:
    name: str
    url: str


def pages(cfg: StackConfig) -> list[Page]:
    """The site's pages, in the order a person looks at them; [] without a monitoring server."""
    prometheus = site_url(cfg)
    if prometheus is None:
        return []
    host = prometheus.removeprefix("http://").rsplit(":", 1)[0]
    return [*(Page(name, f"{prometheus}/{path}") for name, path in DASHBOARDS),
            *(Page(name, f"{prometheus}/classic/{path}") for name, path in CLASSIC),
            Page("Alertmanager", f"http://{host}:{cfg.monitoring.alertmanager_port}/")]


def answer(url: str, password: str, timeout: float = TIMEOUT_S) -> str:
    """"" when `url` answers 200 with the site's password, else what went wrong, in a few words."""
    token = base64.b64encode(f"{USER}:{password}".encode()).decode()
    request = urllib.request.Request(url, headers={"Authorization": f"Basic {token}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return "" if response.status == 200 else f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code} {exc.reason}"
    except (urllib.error.URLError, OSError) as exc:
        return str(exc.reason if isinstance(exc, urllib.error.URLError) else exc)
