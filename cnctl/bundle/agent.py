"""Pull mode's agent: a host configures itself from its stack's signed bundle (docs/pull-mode.md).

    python -m cnctl.bundle.agent --config /etc/circularnet/pull/agent.json          # what the timer runs
    python -m cnctl.bundle.agent --config ... --allow-rollback <version>           # a deliberate rollback

The pull layer installs this module and what it imports (cnctl.bundle.contents.AGENT_ENTRIES) in
/opt/circularnet/pull/agent, writes its config and starts it from circularnet-pull.timer every
bundle.pollSeconds. One run:

1. Read the pointer `bundles/<stack>/channels/<channel>.json` from the bundles bucket (the host's channel:
   canary hosts follow `canary`, the others `stable`). A pointer of another stack or format is refused.
2. The version it names is the one this host applied last: nothing to do ("up to date"). A version this host
   applied *before* the current one is refused (a pointer moved back: pointers are not signed, so whoever can
   write the bucket could replay an old signed bundle), unless `--allow-rollback <that version>`.
3. Download the archive and its signature; the archive's sha256 must be the pointer's.
4. `cnctl.bundle.archive.unpack`: the signature must be by one of the config's signers (installed by a trusted
   deploy, never taken from the bundle being checked) in the stack's namespace, then every file must match the
   manifest. Unpacked as `<state>/bundles/<version>`; nothing of a refused bundle is kept.
5. Apply it: `pyinfra -y hosts/pull.py deploy.py` in the unpacked tree, `@local`, with this host's fleet entry
   (CNCTL_STACK, CNCTL_PULL_HOST, CNCTL_PULL_GROUP, CNCTL_PULL_CREDENTIALS, and CNCTL_PULL_ZONE for a VM of the
   worker group). The same host layers a push applies.
6. Record the outcome in `<state>/applied.json` (the current version and the history the rollback check reads);
   keep the newest KEEP_BUNDLES unpacked bundles.
7. Report: `<state>/report.json` (with the verify layer's last health report), and, when the outcome, the version
   or the host's health changed or an hour passed, a create-only
   object `pull-reports/<stack>/<host>/<UTC time>.json` in the reports bucket (the identity that uploads
   results may create objects, never overwrite or delete), which `cnctl status` reads.

A channel with nothing published yet is `waiting` (exit 0: a host deployed before the first publish is not
failing). A refused or failed run leaves the host as it was before the run (a failed apply: as far as pyinfra got; the
next run retries the same version, and a run of pyinfra converges). Exit codes: 0 up to date, applied or waiting; 1
refused, failed, or the store unreachable (the unit fails, so `systemctl --failed` and the verify layer see it);
2 a bad config (the fix named).
"""

from __future__ import annotations

import argparse
import datetime
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnctl.bundle import ARCHIVE, CHANNELS, SIGNATURE, BundleRefused, prefix
from cnctl.bundle.archive import unpack
from cnctl.config.schema import BundleSigner
from cnctl.errors import EXIT_BAD_INPUT, UsageProblem
from cnctl.store import Store, StoreProblem

CONFIG_FORMAT = 1
KEEP_BUNDLES = 3
HISTORY = 50
APPLY_TIMEOUT_S = 3000  # below the unit's TimeoutStartSec (3600): the agent records a timeout, systemd never kills it
REPORT_HEARTBEAT_S = 3600
REPORTS_PREFIX = "pull-reports"
VERIFY_DEFAULTS = "roles/verify/defaults/main.yml"  # in a bundle: where the host's health report is written


def say(message: str) -> None:
    print(message, flush=True)  # journald keeps it, one line per step


# --- configuration --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """/etc/circularnet/pull/agent.json, rendered by the pull layer from the host's cn_* variables."""

    stack: str
    host: str
    group: str
    channel: str
    kind: str
    endpoint: str | None
    project: str | None
    bundles: str
    reports: str
    credentials: Path | None
    signers: tuple[BundleSigner, ...]
    state: Path
    pyinfra: Path
    zone: str | None = None  # a VM of the worker group (group cloud): its zone, for hosts/pull.py (CNCTL_PULL_ZONE)


def load_config(path: Path) -> Config:
    """The agent's config, checked: UsageProblem naming the key and the fix otherwise."""
    try:
        data: Any = json.loads(path.read_text())
    except OSError as exc:
        raise UsageProblem(f"cannot read the agent's config {path}: {exc.strerror or exc} (deploy the pull layer)")
    except ValueError as exc:
        raise UsageProblem(f"{path} is not JSON ({exc}): deploy the pull layer again") from None
    if not isinstance(data, dict) or data.get("format") != CONFIG_FORMAT:
        raise UsageProblem(f"{path}: format {data.get('format') if isinstance(data, dict) else None!r} is not "
                           f"{CONFIG_FORMAT}: deploy the pull layer of this agent's release")
    store: dict[str, Any] = data["store"] if isinstance(data.get("store"), dict) else {}
    missing = [key for key in ("stack", "host", "group", "channel", "state", "pyinfra") if not data.get(key)]
    missing += [f"store.{key}" for key in ("kind", "bundles", "reports") if not store.get(key)]
    if missing:
        raise UsageProblem(f"{path}: {', '.join(missing)} missing: deploy the pull layer again")
    if data["channel"] not in CHANNELS:
        raise UsageProblem(f"{path}: channel {data['channel']!r} is not one of {', '.join(CHANNELS)}: set the fleet "
                           "entry's channel and deploy again")
    if data["group"] == "cloud" and not data.get("zone"):
        raise UsageProblem(f"{path}: zone missing: a VM of the worker group (group cloud) names its zone")
    if store["kind"] not in ("gcs", "s3"):
        raise UsageProblem(f"{path}: store.kind {store['kind']!r} is not gcs or s3")
    try:
        signers = tuple(BundleSigner.model_validate(s) for s in data.get("signers") or [])
    except ValueError as exc:
        raise UsageProblem(f"{path}: signers: {' '.join(str(exc).split())[:300]}: fix bundle.signers in the stack "
                           "and deploy again") from None
    if not signers:
        raise UsageProblem(f"{path}: no signers: a pull-mode host trusts no bundle without bundle.signers in its stack")
    return Config(
        stack=str(data["stack"]), host=str(data["host"]), group=str(data["group"]), channel=str(data["channel"]),
        kind=str(store["kind"]), endpoint=store.get("endpoint") or None, project=store.get("project") or None,
        bundles=str(store["bundles"]), reports=str(store["reports"]),
        credentials=Path(data["credentials"]) if data.get("credentials") else None,
        signers=signers, state=Path(data["state"]), pyinfra=Path(data["pyinfra"]),
        zone=str(data["zone"]) if data.get("zone") else None,
    )


class NothingPublished(Exception):
    """The host's channel has no pointer yet: a new site, or a stable channel before the first promote."""


# --- state ----------------------------------------------------------------------------------------------


@dataclass
class Applied:
    """<state>/applied.json: the version applied last and every outcome before it, newest last."""

    current: str | None
    history: list[dict[str, Any]]

    @classmethod
    def load(cls, path: Path) -> Applied:
        try:
            data = json.loads(path.read_text())
            return cls(data.get("current"), list(data.get("history") or []))
        except FileNotFoundError:
            return cls(None, [])
        except (OSError, ValueError, AttributeError) as exc:
            raise UsageProblem(f"{path} is unreadable ({exc}): move it aside; the next run applies the channel's "
                               "bundle again (and forgets the versions applied before)") from None

    def applied_before(self, version: str) -> dict[str, Any] | None:
        """The last successful application of `version`, when it is not the current one (a rollback)."""
        if version == self.current:
            return None
        return next((h for h in reversed(self.history) if h["version"] == version and h["outcome"] == "applied"), None)

    def record(self, entry: dict[str, Any]) -> None:
        self.history = [*self.history, entry][-HISTORY:]
        if entry["outcome"] == "applied":
            self.current = entry["version"]

    def save(self, path: Path) -> None:
        _write_atomic(path, json.dumps({"current": self.current, "history": self.history}, indent=2) + "\n")


def _write_atomic(path: Path, text: str) -> None:
    scratch = path.with_name(f".{path.name}.new")
    with open(os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(scratch, path)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _stamp(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# --- one run --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What a run did: `up-to-date`, `applied`, `waiting` (nothing published on the channel yet), `refused`,
    `failed` or `unreachable`, and why."""

    outcome: str
    version: str | None
    message: str
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        return 0 if self.outcome in ("up-to-date", "applied", "waiting") else 1


class Agent:
    def __init__(self, cfg: Config, allow_rollback: str | None = None) -> None:
        self.cfg = cfg
        # the bundles bucket (read) and the reports bucket (create-only), with the host's upload identity
        self.bundle_store = Store(cfg.kind, cfg.bundles, "models", endpoint=cfg.endpoint, project=cfg.project,
                                  credentials=cfg.credentials, host=cfg.host)
        self.report_store = Store(cfg.kind, cfg.reports, "results", endpoint=cfg.endpoint, project=cfg.project,
                                  credentials=cfg.credentials, host=cfg.host)
        self.allow_rollback = allow_rollback
        self.bundles = cfg.state / "bundles"
        self.applied_path = cfg.state / "applied.json"
        cfg.state.mkdir(parents=True, exist_ok=True, mode=0o700)

    # The pointer and what it names.

    def pointer(self) -> dict[str, Any]:
        key = f"{prefix(self.cfg.stack)}/channels/{self.cfg.channel}.json"
        body = self.bundle_store.read(key)
        if body is None:
            raise NothingPublished(f"channel {self.cfg.channel} of stack {self.cfg.stack} points at nothing yet "
                                   f"({key} is absent): `cnctl bundle publish --stack {self.cfg.stack}`"
                                   + (" then `cnctl bundle promote`" if self.cfg.channel == "stable" else ""))
        try:
            data = json.loads(body)
        except ValueError:
            raise BundleRefused(f"{key} is not JSON") from None
        if not isinstance(data, dict) or data.get("stack") != self.cfg.stack or data.get("format") != 1:
            raise BundleRefused(f"{key} is not a format-1 pointer of stack {self.cfg.stack}")
        version, sha256 = str(data.get("version") or ""), str(data.get("sha256") or "")
        if len(version) != 16 or len(sha256) != 64 or not all(c in "0123456789abcdef" for c in version + sha256):
            raise BundleRefused(f"{key} names no version and sha256 (got {version!r}, {sha256!r})")
        return data

    def fetch(self, version: str, sha256: str) -> tuple[bytes, bytes | None]:
        """The archive (its sha256 checked against the pointer's) and its signature."""
        base = f"{prefix(self.cfg.stack)}/{version}"
        archive = self.bundle_store.read(f"{base}/{ARCHIVE}")
        if archive is None:
            raise BundleRefused(f"{base}/{ARCHIVE} is absent though channel {self.cfg.channel} points at it")
        found = hashlib.sha256(archive).hexdigest()
        if found != sha256:
            raise BundleRefused(f"{base}/{ARCHIVE} has sha256 {found[:16]}…, the pointer says {sha256[:16]}…: "
                                "the archive was replaced or cut short")
        return archive, self.bundle_store.read(f"{base}/{SIGNATURE}")

    def unpacked(self, version: str, archive: bytes, signature: bytes | None) -> tuple[Path, str]:
        """The verified bundle as <state>/bundles/<version> (unpacked again if an earlier run left a partial one)."""
        destination = self.bundles / version
        if destination.exists():
            shutil.rmtree(destination)  # made by an earlier run whose apply failed: the archive is checked again
        self.bundles.mkdir(parents=True, exist_ok=True, mode=0o700)
        download = self.bundles / f".{version}.tar.gz"
        download.write_bytes(archive)
        try:
            manifest, signer = unpack(download, signature, list(self.cfg.signers), self.cfg.stack, destination)
        finally:
            download.unlink(missing_ok=True)
        if manifest["version"] != version:
            shutil.rmtree(destination)
            raise BundleRefused(f"the archive under version {version} is version {manifest['version']}")
        return destination, signer

    def apply(self, tree: Path) -> subprocess.CompletedProcess[str]:
        """pyinfra @local over the unpacked tree: the host layers, as its fleet entry asks."""
        env = {**os.environ, "CNCTL_STACK": str(tree / "stacks" / f"Pulumi.{self.cfg.stack}.yaml"),
               "CNCTL_PULL_HOST": self.cfg.host, "CNCTL_PULL_GROUP": self.cfg.group,
               "CNCTL_PULL_CREDENTIALS": str(self.cfg.credentials or ""), "CNCTL_PULL_ZONE": self.cfg.zone or "",
               "PATH": f"{self.cfg.pyinfra.parent}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
               "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
        env.pop("CNCTL_LAYERS", None)
        return subprocess.run([str(self.cfg.pyinfra), "-y", "hosts/pull.py", "deploy.py"], cwd=tree, env=env,
                              text=True, stdout=sys.stdout, stderr=subprocess.STDOUT, timeout=APPLY_TIMEOUT_S,
                              check=False)

    def run(self) -> Outcome:
        started = time.monotonic()
        applied = Applied.load(self.applied_path)
        try:
            pointer = self.pointer()
        except StoreProblem as exc:
            return Outcome("unreachable", None, str(exc))
        except NothingPublished as exc:
            return Outcome("waiting", None, str(exc))
        except BundleRefused as exc:
            return Outcome("refused", None, str(exc))
        version, sha256 = pointer["version"], pointer["sha256"]
        if version == applied.current:
            return Outcome("up-to-date", version, f"version {version} (channel {self.cfg.channel}) is applied")
        earlier = applied.applied_before(version)
        if earlier is not None and version != self.allow_rollback:
            return Outcome("refused", version, f"channel {self.cfg.channel} points back at version {version}, "
                           f"applied here at {earlier['at']} before {applied.current}: a pointer moved back is refused "
                           "(rollback protection); publish the rollback as a new commit, or run the agent once with "
                           f"--allow-rollback {version}")
        say(f"channel {self.cfg.channel}: version {version} (applied here: {applied.current or 'none'})")
        try:
            archive, signature = self.fetch(version, sha256)
            tree, signer = self.unpacked(version, archive, signature)
        except StoreProblem as exc:
            return Outcome("unreachable", version, str(exc))
        except BundleRefused as exc:
            outcome = Outcome("refused", version, f"version {version} refused: {exc}; the host stays as it was")
            self._remember(applied, outcome)
            return outcome
        say(f"version {version}: signed by {signer}, every file as its manifest says; applying with pyinfra @local")
        try:
            done = self.apply(tree)
            failed = f"pyinfra exited {done.returncode}" if done.returncode else ""
        except subprocess.TimeoutExpired:
            failed = f"pyinfra ran past {APPLY_TIMEOUT_S} s and was stopped"
        seconds = round(time.monotonic() - started, 1)
        if failed:
            outcome = Outcome("failed", version, f"version {version}: {failed} (see this unit's journal); the next "
                              "run retries it", seconds)
        else:
            outcome = Outcome("applied", version, f"version {version} applied in {seconds} s (signed by {signer})",
                              seconds)
        self._remember(applied, outcome)
        self._prune(applied)
        return outcome

    def _remember(self, applied: Applied, outcome: Outcome) -> None:
        applied.record({"version": outcome.version, "outcome": outcome.outcome, "at": _stamp(_now()),
                        "message": outcome.message})
        applied.save(self.applied_path)

    def _prune(self, applied: Applied) -> None:
        """Keep the current bundle and the newest others, KEEP_BUNDLES in all."""
        if not self.bundles.is_dir():
            return
        trees = sorted((p for p in self.bundles.iterdir() if p.is_dir() and not p.name.startswith(".")),
                       key=lambda p: (p.name == applied.current, p.stat().st_mtime), reverse=True)
        for old in trees[KEEP_BUNDLES:]:
            shutil.rmtree(old, ignore_errors=True)

    # Reports.

    def health(self, current: str | None) -> dict[str, Any] | None:
        """The verify layer's last health report on this host (what `cnctl status` shows of a pushed host), found
        where the applied bundle's verify role says it is; None before a bundle was applied or the report exists."""
        if current is None:
            return None
        try:
            import yaml  # the agent's venv has it (the agent wheels); only read once a bundle was applied

            defaults = yaml.safe_load((self.bundles / current / VERIFY_DEFAULTS).read_text())
            report = json.loads(Path(defaults["verify_report"]).read_text())
        except (OSError, ValueError, KeyError, TypeError, ImportError):
            return None
        return report if isinstance(report, dict) else None

    def report(self, outcome: Outcome) -> None:
        """<state>/report.json always; the bucket when something changed or an hour passed (a heartbeat)."""
        moment = _now()
        applied = Applied.load(self.applied_path)
        body = {"format": 1, "stack": self.cfg.stack, "host": self.cfg.host, "channel": self.cfg.channel,
                "outcome": outcome.outcome, "version": outcome.version, "current": applied.current,
                "message": outcome.message, "seconds": outcome.seconds, "at": _stamp(moment),
                "health": self.health(applied.current)}
        local = self.cfg.state / "report.json"
        _write_atomic(local, json.dumps(body, indent=2, sort_keys=True) + "\n")
        sent = _read_json(self.cfg.state / "report-sent.json")
        recent = sent is not None and moment.timestamp() - float(sent.get("epoch", 0)) < REPORT_HEARTBEAT_S
        if recent and sent is not None and _gist(sent) == _gist(body):
            return
        key = f"{REPORTS_PREFIX}/{self.cfg.stack}/{self.cfg.host}/{moment.strftime('%Y%m%dT%H%M%S%fZ')}.json"
        try:
            self.report_store.create(key, (json.dumps(body, indent=2, sort_keys=True) + "\n").encode(), True)
        except StoreProblem as exc:
            say(f"report not sent ({exc}); kept in {local}")
            return
        _write_atomic(self.cfg.state / "report-sent.json", json.dumps({**body, "epoch": moment.timestamp()}) + "\n")


def _gist(report: dict[str, Any]) -> tuple[Any, ...]:
    """What a report says that the bucket must hear at once: the version applied, what is wrong if anything, and
    the host's health verdict and problems (`applied` then `up-to-date` is one healthy state; the heartbeat says it
    again every hour)."""
    healthy = report.get("outcome") in ("applied", "up-to-date")
    carried = report.get("health")
    health: dict[str, Any] = carried if isinstance(carried, dict) else {}
    return (report.get("current"), healthy, None if healthy else (report.get("outcome"), report.get("message")),
            health.get("healthy"), tuple(health.get("problems") or ()))


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# --- entry point ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cnctl.bundle.agent", description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=Path("/etc/circularnet/pull/agent.json"))
    parser.add_argument("--allow-rollback", metavar="VERSION",
                        help="apply VERSION even though this host applied it before the current one")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config)
        cfg.state.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(cfg.state / "lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                say("another run of the agent is applying a bundle: this one stops")
                return 0
            agent = Agent(cfg, allow_rollback=args.allow_rollback)
            outcome = agent.run()
            say(f"{outcome.outcome}: {outcome.message}")
            agent.report(outcome)
            return outcome.exit_code
    except UsageProblem as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    raise SystemExit(main())
