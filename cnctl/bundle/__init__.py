"""Pull mode's bundle: what a host needs to apply the host layers to itself with pyinfra's `@local` connector,
as one versioned, checksummed, signed archive, and its publication to the stack's models bucket.

    build(cfg, key) -> Built             contents.py (what goes in) + archive.py (reproducible bytes, manifest)
    sign / verify_signature              signing.py  (OpenSSH's `ssh-keygen -Y sign|verify`)
    unpack(archive, sig, signers, ...)   archive.py  (signature, then every file against the manifest)
    publish / promote                    publish.py  (create-only objects + one channel pointer per channel)

The format, byte for byte, is in docs/pull-mode.md; the constants it names live here. The package reads the
stack through cnctl.config and never imports the CLI (layers point one way): its errors are
cnctl.errors.UsageProblem (the user must fix something, exit 2) or BundleRefused (a bundle failed
verification: nothing of it was kept).
"""

from __future__ import annotations

from cnctl.errors import UsageProblem

FORMAT = 1  # manifest.json "format": bumped when a reader of the old format would misread the new one
MANIFEST = "manifest.json"
ARCHIVE = "bundle.tar.gz"
SIGNATURE = "bundle.tar.gz.sig"
CHANNELS = ("canary", "stable")
DEFAULT_CHANNEL = "canary"


def namespace(stack: str) -> str:
    """The `ssh-keygen -Y` namespace a bundle of `stack` is signed in: a signature made for one stack (or for
    anything else the same key signs) does not verify as another stack's bundle."""
    return f"circularnet-bundle:{stack}"


def prefix(stack: str) -> str:
    """Where a stack's bundles live in its models bucket."""
    return f"bundles/{stack}"


class BundleRefused(Exception):
    """A bundle that failed verification; the message names the file or the check, and nothing of it was kept."""


__all__ = ["ARCHIVE", "CHANNELS", "DEFAULT_CHANNEL", "FORMAT", "MANIFEST", "SIGNATURE", "BundleRefused",
           "UsageProblem", "namespace", "prefix"]
