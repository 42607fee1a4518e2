"""Where one sandbox lives on this machine: the names it owns and the directories it writes.

Everything a sandbox creates carries its prefix (network namespaces `<prefix>-...`, the machine-side
veth `<prefix>-up`) or lives under its state directory (overlay mounts, PIDs, keys). That is what lets
`down` and the leftover scan remove exactly what a sandbox made, and lets several sandboxes (the demo,
the test session, a benchmark) run side by side with different prefixes, state dirs and subnets.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cnctl.fleet import FLEET_FILE_ENV
from cnctl.sandbox.errors import SandboxProblem

PREFIX_ENV = "CNCTL_SANDBOX_PREFIX"
STATE_ENV = "CNCTL_STATE"
CACHE_ENV = "CNCTL_CACHE"
DEFAULT_PREFIX = "cnsb"
DEFAULT_STATE = Path("/run/cnctl/sandbox")
DEFAULT_CACHE = Path("/var/cache/cnctl")

# `<prefix>-up` is an interface name (at most 15 characters); 10 leaves room for other suffixes.
_PREFIX = re.compile(r"^[a-z][a-z0-9]{1,9}$")


@dataclass(frozen=True)
class Instance:
    """One sandbox's identity on the machine: name prefix, state directory, artifact cache."""

    prefix: str = DEFAULT_PREFIX
    state_dir: Path = DEFAULT_STATE
    cache: Path = DEFAULT_CACHE

    def __post_init__(self) -> None:
        if not _PREFIX.fullmatch(self.prefix):
            raise SandboxProblem(
                f"sandbox prefix {self.prefix!r} must be 2-10 of a-z 0-9, starting with a letter (CNCTL_SANDBOX_PREFIX)"
            )
        for what, path in (("state dir (CNCTL_STATE)", self.state_dir), ("cache (CNCTL_CACHE)", self.cache)):
            if not path.is_absolute() or path == Path("/"):
                raise SandboxProblem(f"the sandbox {what} must be an absolute path below /, not {str(path)!r}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Instance:
        """The instance the environment names: CNCTL_SANDBOX_PREFIX, CNCTL_STATE, CNCTL_CACHE."""
        return cls(
            prefix=env.get(PREFIX_ENV) or DEFAULT_PREFIX,
            state_dir=Path(env.get(STATE_ENV) or DEFAULT_STATE),
            cache=Path(env.get(CACHE_ENV) or DEFAULT_CACHE),
        )

    def environment(self) -> dict[str, str]:
        """The variables under which `cnctl sandbox ...` acts on this sandbox and the product's commands
        (`cnctl deploy`, `pyinfra hosts/fleet.py`, `status`, `infer`) reach its fleet, through its fleet file."""
        return {PREFIX_ENV: self.prefix, STATE_ENV: str(self.state_dir), CACHE_ENV: str(self.cache),
                FLEET_FILE_ENV: str(self.fleet_file)}

    # --- names on the machine ----------------------------------------------------------------

    @property
    def site_netns(self) -> str:
        return f"{self.prefix}-site"

    @property
    def uplink(self) -> str:
        """The one veth end in the machine's own namespace."""
        return f"{self.prefix}-up"

    def host_netns(self, host: str) -> str:
        return f"{self.prefix}-h-{host}"

    @staticmethod
    def site_port(host: str) -> str:
        """The bridge-side veth of a host, inside the site namespace (15-character limit: a hash)."""
        return "vh" + hashlib.sha256(host.encode()).hexdigest()[:10]

    # --- files -------------------------------------------------------------------------------

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def hosts_dir(self) -> Path:
        return self.state_dir / "hosts"

    def host_dir(self, host: str) -> Path:
        return self.hosts_dir / host

    @property
    def site_state_dir(self) -> Path:
        """Where the site services record their PIDs and logs (their API takes the state dir itself)."""
        return self.state_dir / "site"

    @property
    def ssh_dir(self) -> Path:
        return self.state_dir / "ssh"

    @property
    def ansible_inventory(self) -> Path:
        return self.state_dir / "inventory.yml"

    @property
    def fleet_file(self) -> Path:
        """The fleet file `up` writes: the product reads the fleet from it (the local stack's fleets.file names
        the default instance's; CNCTL_FLEET_FILE another's)."""
        return self.state_dir / "fleet.json"

    @property
    def lock_path(self) -> Path:
        """What `up` and `down` lock: the state dir's parent directory (`down` removes the state dir while
        holding the lock; a directory lock leaves no file behind)."""
        return self.state_dir.parent

    @property
    def image_cache(self) -> Path:
        return self.cache / "sandbox" / "images"
