"""Fixtures for tests on the sandbox fleet (marker `fleet`).

- `fleet`: the session's fleet (`up` once per session, `down` at the end, also on failure, Ctrl-C and
  SIGTERM). It is its own sandbox: prefix `cnte`, subnet 172.31.252.0/24, state dir /run/cnctl/test-fleet,
  so a `make demo` sandbox on the same machine is left alone. Its hosts are the local stack's.
- `boot_fresh` / `fresh_host`: a host on a fresh overlay disk of the image, on the fleet's site network,
  torn down after the test; for tests that change a host or need a clean one.
- `fleet_env`: the environment that points `cnctl` / `pyinfra hosts/fleet.py` at the session fleet (its
  fleet file, CNCTL_FLEET_FILE).
- `sandbox_stack(subnet)`: a copy of stacks/Pulumi.local.yaml moved to another /24, for extra sandboxes.
- `view(hosts, extra=())`: the environment in which the stack's inventories are exactly `hosts` (fresh ones
  too): a fleet file of their own; the stack file is the module's `session_stack` fixture.

Prerequisites: root, and the tools of `cnctl.sandbox.prereqs`. Under CI=true a missing prerequisite is a
failure; elsewhere only a non-root run skips (with the reason).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from cnctl.config import StackConfig, load_stack
from cnctl.sandbox import fleet as sandbox
from cnctl.sandbox.flavours import l4t_for
from cnctl.sandbox.instance import Instance
from cnctl.sandbox.layout import HostSpec
from cnctl.sandbox.progress import Quiet
from cnctl.sandbox.state import FleetState, HostState
from tests.e2e.fleet_helpers import (
    SESSION_NET,
    SESSION_PREFIX,
    SESSION_STATE,
    Teardown,
    cache_dir,
    env_for,
    require_fleet_prerequisites,
    view_of,
    write_stack,
)


@pytest.fixture(scope="session")
def sandbox_stack(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """`sandbox_stack("172.31.251.")` -> a stack file for a sandbox on that /24."""

    def make(net: str) -> Path:
        return write_stack(tmp_path_factory.mktemp("stack"), net)

    return make


@pytest.fixture(scope="session")
def fleet_instance() -> Instance:
    return Instance(prefix=SESSION_PREFIX, state_dir=SESSION_STATE, cache=cache_dir())


@pytest.fixture(scope="session")
def fleet_stack(sandbox_stack: Callable[[str], Path]) -> StackConfig:
    return load_stack(str(sandbox_stack(SESSION_NET)))


@pytest.fixture(scope="session")
def fleet(fleet_instance: Instance, fleet_stack: StackConfig) -> Iterator[FleetState]:
    """The session's sandbox fleet, up once; always taken down."""
    require_fleet_prerequisites()
    teardown = Teardown(fleet_instance)
    teardown.install()
    try:
        yield sandbox.up(fleet_instance, fleet_stack, stack="local", progress=Quiet())
    finally:
        try:
            teardown()
        finally:
            teardown.uninstall()


@pytest.fixture(scope="session")
def fleet_env(fleet: FleetState, fleet_instance: Instance) -> dict[str, str]:
    return env_for(fleet_instance)


@pytest.fixture
def boot_fresh(fleet: FleetState, fleet_instance: Instance) -> Iterator[Callable[..., sandbox.FreshHost]]:
    """`boot_fresh(flavour="server", jetpack="6.0")` -> a freshly booted host, removed after the test."""
    booted: list[sandbox.FreshHost] = []

    def boot(flavour: str = "server", jetpack: str = "6.0") -> sandbox.FreshHost:
        n = len(booted) + 1
        spec = HostSpec(
            name=f"fresh-{n}",
            group="edge" if flavour == "jetson" else "servers",
            flavour=flavour,  # type: ignore[arg-type]
            address=f"{SESSION_NET}{200 + n}",
            jetpack=jetpack if flavour == "jetson" else None,
            l4t=l4t_for(jetpack) if flavour == "jetson" else None,
            driver_branch="550" if flavour == "server" else None,
        )
        host = sandbox.boot_fresh_host(fleet_instance, fleet, spec)
        booted.append(host)
        return host

    try:
        yield boot
    finally:
        for host in booted:
            sandbox.remove_fresh_host(fleet_instance, host.state)


@pytest.fixture
def fresh_host(boot_fresh: Callable[..., sandbox.FreshHost]) -> sandbox.FreshHost:
    """A server-flavour host on a fresh disk (nothing deployed), removed after the test."""
    return boot_fresh()


@pytest.fixture
def view(fleet: FleetState, fleet_instance: Instance, fleet_env: dict[str, str], session_stack: Path,
         tmp_path_factory: pytest.TempPathFactory) -> Callable[..., dict[str, str]]:
    """`view(hosts, extra=())` -> the environment in which the session stack's inventories are exactly `hosts`
    (and `extra` host states, e.g. one that does not answer): a state directory (with its fleet file) and user
    cache of their own. `session_stack` is the module's: the local stack on the session's subnet."""

    def make(hosts: Sequence[sandbox.FreshHost], extra: Sequence[HostState] = ()) -> dict[str, str]:
        return view_of(fleet, fleet_instance, fleet_env, session_stack, tmp_path_factory.mktemp("view"), hosts, extra)

    return make


# The site's monitoring scenario (tests/e2e/test_monitoring.py) starts first and is judged last: its faults (about
# 20 minutes, mostly waiting on alert windows and a cut link) run in the background beside the rest of the tier.
MONITORING_FIRST = "tests/e2e/test_monitoring.py::test_the_site_collects_the_fleet_behind_its_password_in_both_engines"
MONITORING_LAST = "tests/e2e/test_monitoring.py::test_alerts_fire_and_resolve_the_fleet_serves_and_a_cut_link_loses_nothing"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    first = [item for item in items if item.nodeid == MONITORING_FIRST]
    last = [item for item in items if item.nodeid == MONITORING_LAST]
    items[:] = first + [item for item in items if item not in first and item not in last] + last
