"""The facts the pyinfra layers read (`host.get_fact`): each of deploy/rules/facts.py made a pyinfra fact.

The command and `process()` of each are deploy/rules/facts.py's (one copy: the roles run the same through
deploy/rules/probe.py); here each becomes a pyinfra FactBase, so the layers import every fact from one place.
`KernelModules` is pyinfra's own (/proc/modules with sizes and states; the roles read `LoadedModules`).
`BY_NAME`: the pyinfra fact of each name a role's probes may use (deploy/steps.py `read`).
"""

from __future__ import annotations

from pyinfra.api import FactBase
from pyinfra.facts.server import KernelModules

from deploy.rules import facts

# pyinfra's own KernelModules, and each of deploy/rules/facts.py as a pyinfra fact (defined below)
__all__ = ["KernelModules"]
__all__ += facts.__all__


class DebArch(facts.DebArch, FactBase):
    """deploy/rules/facts.py `DebArch`, as a pyinfra fact."""


class TegraRelease(facts.TegraRelease, FactBase):
    """deploy/rules/facts.py `TegraRelease`, as a pyinfra fact."""


class OsIdentity(facts.OsIdentity, FactBase):
    """deploy/rules/facts.py `OsIdentity`, as a pyinfra fact."""


class NvidiaGpus(facts.NvidiaGpus, FactBase):
    """deploy/rules/facts.py `NvidiaGpus`, as a pyinfra fact."""


class NvccRelease(facts.NvccRelease, FactBase):
    """deploy/rules/facts.py `NvccRelease`, as a pyinfra fact."""


class AptHolds(facts.AptHolds, FactBase):
    """deploy/rules/facts.py `AptHolds`, as a pyinfra fact."""


class DpkgVersions(facts.DpkgVersions, FactBase):
    """deploy/rules/facts.py `DpkgVersions`, as a pyinfra fact."""


class NvpmodelMode(facts.NvpmodelMode, FactBase):
    """deploy/rules/facts.py `NvpmodelMode`, as a pyinfra fact."""


class DockerRuntimes(facts.DockerRuntimes, FactBase):
    """deploy/rules/facts.py `DockerRuntimes`, as a pyinfra fact."""


class ModelRepository(facts.ModelRepository, FactBase):
    """deploy/rules/facts.py `ModelRepository`, as a pyinfra fact."""


class HostPython(facts.HostPython, FactBase):
    """deploy/rules/facts.py `HostPython`, as a pyinfra fact."""


class DockerImage(facts.DockerImage, FactBase):
    """deploy/rules/facts.py `DockerImage`, as a pyinfra fact."""


class InterfaceAddress(facts.InterfaceAddress, FactBase):
    """deploy/rules/facts.py `InterfaceAddress`, as a pyinfra fact."""


class TritonServing(facts.TritonServing, FactBase):
    """deploy/rules/facts.py `TritonServing`, as a pyinfra fact."""


class VenvPackages(facts.VenvPackages, FactBase):
    """deploy/rules/facts.py `VenvPackages`, as a pyinfra fact."""


class UnitsActive(facts.UnitsActive, FactBase):
    """deploy/rules/facts.py `UnitsActive`, as a pyinfra fact."""


class LoadedModules(facts.LoadedModules, FactBase):
    """deploy/rules/facts.py `LoadedModules`, as a pyinfra fact."""


class NvidiaCtkDaemonJson(facts.NvidiaCtkDaemonJson, FactBase):
    """deploy/rules/facts.py `NvidiaCtkDaemonJson`, as a pyinfra fact."""


class SecureBoot(facts.SecureBoot, FactBase):
    """deploy/rules/facts.py `SecureBoot`, as a pyinfra fact."""


BY_NAME: dict[str, type[FactBase]] = {name: globals()[name] for name in facts.__all__}
