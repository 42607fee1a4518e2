"""deploy/'s host scripts that the controller side also runs in this process (the uploader's store clients for
`cnctl bundle`, `cnctl status` and pull mode's agent; the Triton endpoint builder for the rollout's gate), loaded
by path.

`import deploy.uploader` would work only where the repository is on sys.path (not from the `cnctl` console
script) and would run deploy/__init__.py, which takes the layer list from the engines: the agent's tree has
neither. Loading the one file by path needs nothing else; it is registered in sys.modules before it runs, as
import does (its dataclasses look their module up).
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

from cnctl.paths import REPO_ROOT


def load(name: str) -> Any:
    """deploy/<name>.py of this tree (the repository, an unpacked bundle, or the pull agent's), loaded once."""
    module_name = f"_cnctl_host_{name}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, REPO_ROOT / "deploy" / f"{name}.py")
        if spec is None or spec.loader is None:
            raise ImportError(f"deploy/{name}.py is missing from {REPO_ROOT}", name=name)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[module_name]
            raise
    return sys.modules[module_name]
