"""What a deploy did on each host, the same for both engines."""

from __future__ import annotations

from dataclasses import dataclass, field


class EngineFailure(RuntimeError):
    """The engine could not run or gave no readable result (not: a host failed). The message says why;
    `reasons` holds what its log said about each host that failed, where it said anything. (A pyinfra run
    that failed without a report is not one: its result is read from its log.)"""

    def __init__(self, message: str, reasons: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.reasons = dict(reasons or {})


@dataclass(frozen=True)
class HostResult:
    """One host's outcome, counted as Ansible's recap counts: `ok` includes `changed`.

    `ok` is None when the engine cannot tell (pyinfra's dry run lists only the operations that would
    change). `failed` counts failed operations/tasks; an unreachable host, or one the engine reported
    nothing for, counts as one failure. `reason` is what the engine said about a failed host's first failure
    (the failing command's output, the task's message), "" when it said nothing or the host did not fail.
    """

    host: str
    ok: int | None
    changed: int
    failed: int
    reason: str = ""


@dataclass
class DeployResult:
    """A whole run: which engine, dry or not, and the result of every targeted host."""

    engine: str
    dry: bool
    hosts: list[HostResult] = field(default_factory=list)
    returncode: int = 0
    seconds: float = 0.0

    @property
    def failed_hosts(self) -> list[str]:
        return [h.host for h in self.hosts if h.failed]

    def reason(self, host: str) -> str:
        """Why `host` failed, as the engine said it ("" when it said nothing)."""
        return next((h.reason for h in self.hosts if h.host == host), "")

    @property
    def ok(self) -> bool:
        """True when every host succeeded and the engine itself exited 0."""
        return not self.failed_hosts and self.returncode == 0
