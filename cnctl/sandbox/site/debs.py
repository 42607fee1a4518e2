"""Turn stand-in package recipes into .deb files with `dpkg-deb --build`."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cnctl.sandbox.site.standins import StandinPackage

# Maintainer scripts dpkg runs, by the recipe attribute that holds them.
_SCRIPTS = ("postinst", "prerm", "postrm")


def stage(pkg: StandinPackage, root: Path) -> Path:
    """Lay out the package tree (files + DEBIAN/) under `root/<name>_<version>`; returns that directory."""
    tree = root / pkg.filename.removesuffix(".deb")
    for f in pkg.all_files():
        dest = tree / f.path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(f.content)
        dest.chmod(f.mode)
    debian = tree / "DEBIAN"
    debian.mkdir(parents=True, exist_ok=True)
    (debian / "control").write_text(pkg.control(), encoding="utf-8")
    for script in _SCRIPTS:
        body = getattr(pkg, script)
        if body:
            (debian / script).write_text(body, encoding="utf-8")
            (debian / script).chmod(0o755)
    return tree


def build_deb(pkg: StandinPackage, work: Path, out_dir: Path) -> Path:
    """Build one .deb into `out_dir` (gzip level 1: the contents are tiny, speed matters more)."""
    tree = stage(pkg, work)
    out = out_dir / pkg.filename
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-Zgzip", "-z1", "--build", str(tree), str(out)],
        check=True, capture_output=True, text=True,
    )
    return out


def build_debs(packages: list[StandinPackage], work: Path, out_dir: Path) -> list[Path]:
    """Build every package into `out_dir`, a few dpkg-deb processes at a time."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda p: build_deb(p, work, out_dir), packages))
