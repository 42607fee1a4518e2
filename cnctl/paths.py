"""Where the repository is: the one place that computes it (code, templates, stacks and tests read it)."""

from __future__ import annotations

from pathlib import Path

# cnctl/paths.py -> cnctl -> the repository root (an editable install keeps the package in the repo).
REPO_ROOT = Path(__file__).resolve().parent.parent
HOSTS_DIR = REPO_ROOT / "hosts"
TEMPLATES_DIR = REPO_ROOT / "templates"
STACKS_DIR = REPO_ROOT / "stacks"
