"""Readiness checks and bucket creation against the site services, runnable inside the site's namespace.

Stdlib only, so `ip netns exec <ns> python -m cnctl.sandbox.site.probe ...` works from the site namespace
without relying on the machine's own namespace being able to reach the site address.

  probe wait --timeout 10 URL...             exit 0 once every URL answers HTTP (any status), else 1
  probe buckets --gcs URL --s3 URL NAME...   create the buckets on both emulators (existing ones are fine)
"""

from __future__ import annotations

import argparse
import ssl
import sys
import time
import urllib.error
import urllib.request


def answers(url: str) -> bool:
    """True when something speaks HTTP at `url` (an HTTP error status still counts as an answer).

    A readiness check, not a trust decision: an https URL may present the site's self-signed certificate.
    """
    context = ssl._create_unverified_context() if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(url, timeout=1, context=context):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def wait(urls: list[str], timeout: float) -> list[str]:
    """Poll until every URL answers or `timeout` passes; returns the ones that never answered."""
    deadline = time.monotonic() + timeout
    pending = list(urls)
    while pending and time.monotonic() < deadline:
        pending = [u for u in pending if not answers(u)]
        if pending:
            time.sleep(0.1)
    return pending


def _request(method: str, url: str, body: bytes | None = None, ctype: str | None = None) -> int:
    req = urllib.request.Request(url, data=body, method=method)
    if ctype:
        req.add_header("Content-Type", ctype)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def create_buckets(gcs_url: str, s3_url: str, names: list[str], project: str = "cnctl-sandbox") -> None:
    """Ensure each bucket exists on the GCS emulator (JSON API) and on moto (S3 REST); 409 = already there."""
    import json

    for name in names:
        status = _request("POST", f"{gcs_url.rstrip('/')}/storage/v1/b?project={project}",
                          json.dumps({"name": name}).encode(), "application/json")
        if status not in (200, 409):
            raise RuntimeError(f"GCS emulator refused bucket {name}: HTTP {status}")
        status = _request("PUT", f"{s3_url.rstrip('/')}/{name}")
        if status not in (200, 409):
            raise RuntimeError(f"moto refused bucket {name}: HTTP {status}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="probe")
    sub = parser.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("wait")
    w.add_argument("--timeout", type=float, default=10.0)
    w.add_argument("urls", nargs="+")
    b = sub.add_parser("buckets")
    b.add_argument("--gcs", required=True)
    b.add_argument("--s3", required=True)
    b.add_argument("names", nargs="+")
    args = parser.parse_args(argv)
    if args.cmd == "wait":
        missing = wait(args.urls, args.timeout)
        for url in missing:
            print(f"no answer from {url}", file=sys.stderr)
        return 1 if missing else 0
    create_buckets(args.gcs, args.s3, args.names)
    return 0


if __name__ == "__main__":
    sys.exit(main())
