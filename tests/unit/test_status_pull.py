"""`cnctl status` for pull-mode hosts: their status is their agent's newest report in the results bucket, read
from real stores on loopback (the GCS emulator and moto's S3, test_uploader's `endpoints` fixture), written by
the real agent's `Agent.report` (cnctl/bundle/agent.py). Push hosts still go over SSH (the fan-out replaced by
test_status's FakeRemote, as there); a pull host is never asked over SSH.
"""

from __future__ import annotations

import datetime
import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from cnctl import status
from cnctl.bundle import agent as pull
from cnctl.cli.main import app
from cnctl.config.schema import BundleSigner
from cnctl.sandbox.relay import free_port
from cnctl.status import HostStatus, collect
from tests.unit.bundle_helpers import keypair
from tests.unit.stack_variants import stack_variant
from tests.unit.test_status import GOOD, FakeRemote
from tests.unit.test_uploader import KINDS, Store, endpoints  # the emulators' fixture

__all__ = ["endpoints"]
PUSH, CANARY, STABLE = "plant-gpu-1", "plant-gpu-2", "plant-gpu-3"
VERSION = "0123456789abcdef"
POLL = 120


@pytest.fixture(autouse=True)
def _s3_default_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")


def _stack(tmp_path: Path, kind: str, endpoint: str, results: str, public: str | None = None) -> str:
    """The onprem stack (no cloud VMs) with plant-gpu-1 (push) and two pull-mode servers, storage at `endpoint`."""
    public = public or keypair(tmp_path / "keys")[1]

    def change(config: dict[str, Any]) -> None:
        config["circularnet:bundle"] = {"signers": [{"identity": "release@plant", "publicKey": public}],
                                        "pollSeconds": POLL}
        storage = config["circularnet:storage"]
        storage.update(kind=kind, endpoint=endpoint, buckets={**storage["buckets"], "results": results})
        storage.pop("credentialsFile", None)
        first = config["circularnet:fleets"]["servers"][0]
        config["circularnet:fleets"]["servers"] += [
            {**first, "name": CANARY, "address": "10.60.1.11", "mode": "pull", "channel": "canary"},
            {**first, "name": STABLE, "address": "10.60.1.12", "mode": "pull"}]

    return stack_variant(tmp_path, change, base="onprem")


class Site:
    """One store with a fresh results bucket, the stack above, and the real agent's report for any host."""

    def __init__(self, kind: str, endpoint: str, tmp_path: Path) -> None:
        self.kind, self.endpoint, self.tmp = kind, endpoint, tmp_path
        self.store = Store(kind, endpoint)
        self.results = f"cn-results-{uuid.uuid4().hex[:10]}"
        self.store.make_bucket(self.results)
        _, self.public = keypair(tmp_path / "keys")
        self.stack = _stack(tmp_path, kind, endpoint, self.results, self.public)
        self.scheme = "gs" if kind == "gcs" else "s3"

    def report(self, host: str, outcome: str, message: str, version: str | None = VERSION,
               at: datetime.datetime | None = None, health: dict[str, Any] | None = None) -> None:
        """What the host's agent sends after a run with `outcome` (at `at`, else now), through Agent.report; with
        `health`, the verify layer's report it finds where the applied bundle's verify role says."""
        cfg = pull.Config(stack="onprem", host=host, group="servers", channel="canary", kind=self.kind,
                          endpoint=self.endpoint, project=None, bundles="unused", reports=self.results,
                          credentials=None, signers=(BundleSigner(identity="release@plant", public_key=self.public),),
                          state=self.tmp / host / "state", pyinfra=Path("/nonexistent"))
        agent = pull.Agent(cfg)
        if outcome == "applied":
            agent._remember(pull.Applied.load(agent.applied_path), pull.Outcome(outcome, version, message))
        if health is not None and version is not None:
            written = self.tmp / host / "health.json"
            written.write_text(json.dumps(health))
            defaults = cfg.state / "bundles" / version / pull.VERIFY_DEFAULTS
            defaults.parent.mkdir(parents=True, exist_ok=True)
            defaults.write_text(f"verify_report: {written}\n")
        with pytest.MonkeyPatch.context() as clock:
            if at is not None:
                clock.setattr(pull, "_now", lambda: at)
            agent.report(pull.Outcome(outcome, version, message, 1.5))

    def collect(self, now: datetime.datetime | None = None, **answers: Any) -> tuple[dict[str, HostStatus], FakeRemote]:
        remote = FakeRemote(answers)
        fleet = collect(self.stack, run=remote, now=now)
        return {h.name: h for h in fleet.hosts}, remote


@pytest.fixture(params=KINDS)
def site(request: pytest.FixtureRequest, endpoints: dict[str, str], tmp_path: Path) -> Site:
    return Site(request.param, endpoints[request.param], tmp_path)


@pytest.fixture
def gcs_site(endpoints: dict[str, str], tmp_path: Path) -> Site:
    return Site("gcs", endpoints["gcs"], tmp_path)


def test_a_fresh_applied_report_is_healthy_and_only_push_hosts_go_over_ssh(site: Site) -> None:
    site.report(CANARY, "applied", f"version {VERSION} applied in 12.0 s (signed by release@plant)")
    site.report(STABLE, "up-to-date", f"version {VERSION} (channel stable) is applied")
    hosts, remote = site.collect()
    [(asked, _, _)] = remote.calls
    assert [h.name for h in asked] == [PUSH]  # a pull host's SSH may be closed: never asked
    assert hosts[PUSH] == HostStatus(PUSH, "servers", True, True, (), "fresh", GOOD)
    for name, outcome in ((CANARY, "applied"), (STABLE, "up-to-date")):
        host = hosts[name]
        assert (host.healthy, host.reachable, host.problems, host.source) == (True, True, (), "bucket")
        assert host.report is not None and host.report["outcome"] == outcome and host.report["host"] == name
        assert host.origin is not None and host.origin.startswith(
            f"{site.scheme}://{site.results}/pull-reports/onprem/{name}/") and host.origin.endswith("Z.json")
    assert (hosts[CANARY].report or {})["current"] == VERSION


@pytest.mark.parametrize("outcome", ["refused", "failed", "unreachable", "waiting"])
def test_a_newest_report_that_is_not_applied_or_up_to_date_is_unhealthy_with_its_message(
        gcs_site: Site, outcome: str) -> None:
    an_hour_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)
    gcs_site.report(CANARY, "applied", "applied", at=an_hour_ago)
    message = {"refused": "version fedcba9876543210 refused: the signature is not by a signer; the host stays as it was",
               "failed": "version fedcba9876543210: pyinfra exited 1 (see this unit's journal); the next run retries it",
               "unreachable": "gs://bundles/bundles/onprem/channels/canary.json: GCS unreachable (timed out)",
               "waiting": "channel canary of stack onprem points at nothing yet: `cnctl bundle publish --stack onprem`"
               }[outcome]
    gcs_site.report(CANARY, outcome, message, version=None if outcome == "waiting" else "fedcba9876543210")
    hosts, _ = gcs_site.collect()
    host = hosts[CANARY]
    assert (host.healthy, host.reachable, host.source) == (False, True, "bucket")  # heard from, not healthy
    assert host.problems == (f"pull agent {outcome}: {message}",)
    assert host.report is not None and host.report["outcome"] == outcome  # the newest one, not the applied one
    if outcome != "waiting":
        assert host.report["current"] == VERSION  # still running what it applied before


def test_a_stale_report_is_unhealthy_and_names_its_age(site: Site) -> None:
    site.report(CANARY, "applied", "applied")
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=3)
    hosts, _ = site.collect(now=later)
    host = hosts[CANARY]
    assert (host.healthy, host.reachable) == (False, False)
    [problem] = host.problems
    bound = 2 * pull.REPORT_HEARTBEAT_S + POLL
    assert problem.startswith("pull mode: its newest report is 3 h 0 min old (of ")
    assert f"over {bound // 3600} h {bound % 3600 // 60} min (2 hourly heartbeats + bundle.pollSeconds)" in problem
    assert "circularnet-pull.timer" in problem
    fresh, _ = site.collect(now=later - datetime.timedelta(seconds=3 * 3600 - bound + 5))
    assert fresh[CANARY].healthy  # just inside the bound


def test_a_pull_host_that_never_reported_is_unhealthy(site: Site) -> None:
    site.store.put(site.results, f"pull-reports/onprem/{CANARY}-other/20260101T000000000000Z.json", b"{}")  # a prefix
    hosts, _ = site.collect()
    host = hosts[STABLE]
    assert (host.healthy, host.reachable, host.report, host.source) == (False, False, None, "bucket")
    assert host.origin == f"{site.scheme}://{site.results}/pull-reports/onprem/{STABLE}/"
    never = (f"pull mode: no report in {host.origin}: its agent has never reported; deploy it once with SSH open "
             f"(`cnctl deploy --limit {STABLE}`: the pull layer installs the agent), then check "
             "`systemctl status circularnet-pull.service` on it")
    assert host.problems == (never,)
    assert not hosts[CANARY].healthy and hosts[CANARY].report is None  # plant-gpu-2-other's report is not its


def test_a_report_of_another_host_under_its_name_is_not_believed(gcs_site: Site) -> None:
    body = json.dumps({"format": 1, "host": "intruder", "outcome": "applied", "current": VERSION}).encode()
    gcs_site.store.put(gcs_site.results, f"pull-reports/onprem/{CANARY}/29990101T000000000000Z.json", body)
    hosts, _ = gcs_site.collect()
    assert not hosts[CANARY].healthy
    assert hosts[CANARY].problems[0].endswith(f"is not a pull report of {CANARY}: only its agent writes under "
                                              f"pull-reports/onprem/{CANARY}/; find out which identity wrote it")


def test_a_bucket_that_does_not_exist_is_a_problem_of_each_pull_host_naming_it_and_the_fix(site: Site) -> None:
    Path(site.stack).write_text(Path(site.stack).read_text().replace(site.results, "cn-results-missing"))
    hosts, _ = site.collect()
    assert hosts[PUSH].healthy
    url = f"{site.scheme}://cn-results-missing"
    for name in (CANARY, STABLE):
        [problem] = hosts[name].problems
        assert problem.startswith(f"pull mode: its reports cannot be read: storage.buckets.results ({url}): bucket "
                                  "cn-results-missing does not exist at "), problem
        assert "fix storage.buckets.results in the stack" in problem


@pytest.mark.parametrize("kind", KINDS)
def test_a_store_that_does_not_answer_is_a_problem_not_a_traceback(tmp_path: Path, kind: str) -> None:
    stack = _stack(tmp_path, kind, f"http://127.0.0.1:{free_port()}", "cn-results")
    fleet = collect(stack, run=FakeRemote())
    pulled = [h for h in fleet.hosts if h.source == "bucket"]
    assert [h.name for h in pulled] == [CANARY, STABLE] and fleet.unhealthy == [CANARY, STABLE]
    scheme = "gs" if kind == "gcs" else "s3"
    for host in pulled:
        [problem] = host.problems
        assert problem.startswith(f"pull mode: its reports cannot be read: storage.buckets.results ({scheme}://cn-results): "
                                  f"{kind.upper()} http://127.0.0.1:"), problem
        assert problem.endswith("unreachable (Connection refused): check storage.endpoint in the stack and this "
                                "machine's network"), problem


# --- the command line ------------------------------------------------------------------------------------------


def run(*args: str) -> Result:
    result = CliRunner().invoke(app, list(args))
    assert "Traceback" not in result.output, result.output
    return result


def test_the_cli_shows_where_a_pull_hosts_status_came_from_and_its_version(site: Site,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(status, "run_on_hosts", FakeRemote())
    site.report(CANARY, "applied", "applied")
    result = run("status", "--stack", site.stack)
    assert result.exit_code == 1  # STABLE never reported
    lines = result.stdout.splitlines()
    [row] = [line for line in lines if f"│ {CANARY}" in line]
    assert "servers · pull" in row and f"│ {VERSION} " in row and "none" in row
    [push_row] = [line for line in lines if f"│ {PUSH}" in line]
    assert "servers · pull" not in push_row and "circularnet@2" in push_row and "40.0 GiB (40%)" in push_row
    [where] = [line for line in lines if line.startswith(f"{CANARY}: pull report ")]
    assert re.fullmatch(rf"{CANARY}: pull report {site.scheme}://{site.results}/pull-reports/onprem/{CANARY}/"
                        rf"\d{{8}}T\d{{12}}Z\.json: applied, bundle {VERSION} \(channel canary\), of "
                        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", where), where
    assert any(line.startswith(f"{STABLE}: pull mode: no report in ") for line in lines)
    assert "not healthy: plant-gpu-3 (no recent pull report)" in " ".join(result.stderr.split())

    data = json.loads(run("status", "--stack", site.stack, "--json").stdout)
    by_name = {h["name"]: h for h in data["hosts"]}
    canary = by_name[CANARY]
    assert (canary["source"], canary["healthy"], canary["report"]["current"]) == ("bucket", True, VERSION)
    assert canary["origin"].startswith(f"{site.scheme}://{site.results}/pull-reports/onprem/{CANARY}/")
    assert by_name[PUSH]["source"] == "fresh" and by_name[PUSH]["origin"] is None
    assert data["unhealthy"] == [STABLE]


def test_the_verify_layers_health_travels_with_the_pull_report_and_counts(gcs_site: Site,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A pull host's agent sends the verify layer's last report along: the table fills the host's cells from it,
    and an unhealthy one makes the host unhealthy with its problems, though the agent applied its bundle."""
    monkeypatch.setattr(status, "run_on_hosts", FakeRemote())
    gcs_site.report(CANARY, "applied", "applied", health=GOOD)
    gcs_site.report(STABLE, "applied", "applied", health={**GOOD, "healthy": False, "problems": ["Triton is down"]})
    hosts, _ = gcs_site.collect()
    assert hosts[CANARY].healthy and hosts[CANARY].report["health"] == GOOD  # type: ignore[index]
    assert not hosts[STABLE].healthy and hosts[STABLE].problems == ("health report: Triton is down",)
    [row] = [line for line in run("status", "--stack", gcs_site.stack).stdout.splitlines() if f"│ {CANARY}" in line]
    assert "servers · pull" in row and "circularnet@2" in row and "40.0 GiB (40%)" in row

