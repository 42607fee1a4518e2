"""cnctl: deploy CircularNet to Google Cloud GPU VMs, Jetson edge devices and GPU servers."""

from __future__ import annotations


def version() -> str:
    """cnctl's version: an installed wheel's metadata; in a checkout, what its pyproject.toml declares now (an
    editable install's metadata keeps the version it was installed with)."""
    from cnctl import paths  # only here: a bare `import cnctl` (the pull agent's tree) stays free of it

    if paths.INSTALLED:
        from importlib.metadata import version as installed

        return installed("cnctl")
    import tomllib

    return str(tomllib.loads((paths.REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"])
