"""Time the sandbox site: cold and warm content builds, service start (cold and idempotent) and stop.

    .venv/bin/python bench/site.py            # cold build into a throwaway cache under /var/tmp (downloads
                                              # the wheelhouse from PyPI), warm rebuild, start/stop on loopback

Prints one JSON object of seconds. The throwaway cache is removed afterwards; nothing is written to the repo.
"""

from __future__ import annotations

import functools
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cnctl.sandbox.relay import free_port
from cnctl.sandbox.site import build_site_content, start_site_services, stop_site_services


def timed(fn):
    began = time.monotonic()
    result = fn()
    return round(time.monotonic() - began, 3), result


def main() -> None:
    out: dict[str, float] = {}
    work = Path(tempfile.mkdtemp(prefix="cnctl-bench-site-", dir="/var/tmp"))
    try:
        cache, state = work / "cache", work / "state"
        quiet = lambda _: None
        out["build_cold_s"], _ = timed(lambda: build_site_content(cache, progress=quiet))
        out["build_warm_s"], _ = timed(lambda: build_site_content(cache, progress=quiet))
        start = functools.partial(start_site_services, None, "127.0.0.1", state, cache,
                                  http_port=free_port(), gcs_port=free_port(), s3_port=free_port())
        out["start_s"], _ = timed(start)
        out["start_again_s"], _ = timed(start)
        out["stop_s"], _ = timed(lambda: stop_site_services(state))
    finally:
        stop_site_services(work / "state")
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
