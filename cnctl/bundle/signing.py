"""Signatures with OpenSSH's own signing (ssh-keygen(1) `-Y sign`, `-Y find-principals`, `-Y verify`; OpenSSH
8.2+): every host with OpenSSH can verify, and nothing new is installed anywhere.

- sign: `ssh-keygen -Y sign -f <private key> -n <namespace>` over the archive bytes on stdin -> the armored
  signature on stdout (`-----BEGIN SSH SIGNATURE-----`). Ed25519 signatures are deterministic, so the
  signature of a reproducible archive is reproducible too.
- verify: an allowed_signers file is written from the stack's `bundle.signers`, one line per signer,
  `<identity> namespaces="<namespace>" <public key>`; `-Y find-principals` names the identity of the key that
  signed, then `-Y verify -I <identity> -n <namespace>` checks the signature over the bytes. A signature by
  another key, in another namespace (another stack), over other bytes, or no signature at all is refused.

The private key is a file on the machine that publishes, never in the repository: refused when missing, not a
regular file, readable by group or others (ssh-keygen would refuse it too, less clearly), or inside the
repository tree.
"""

from __future__ import annotations

import os
import stat
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from cnctl.bundle import BundleRefused
from cnctl.config.schema import BundleSigner
from cnctl.errors import UsageProblem
from cnctl.paths import REPO_ROOT

SSH_KEYGEN = "ssh-keygen"
TIMEOUT = 120  # a passphrase typed at the prompt counts too


def _run(argv: list[str], data: bytes | None, what: str) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(argv, input=data, capture_output=True, timeout=TIMEOUT, check=False)
    except FileNotFoundError:
        raise UsageProblem(f"{SSH_KEYGEN} is not installed: {what} needs OpenSSH 8.2+ (apt-get install openssh-client)") from None
    except subprocess.TimeoutExpired:
        raise UsageProblem(f"{SSH_KEYGEN} did not finish {what} within {TIMEOUT} s (waiting for a passphrase?)") from None


def check_key(key: Path, field: str) -> Path:
    """`key` as a usable private key path, or UsageProblem naming `field` and the fix."""
    path = key.expanduser()
    if not path.is_absolute():
        path = Path.cwd() / path
    if path.resolve().is_relative_to(REPO_ROOT):
        raise UsageProblem(f"{field}: {key} is inside the repository; keep the signing key outside it (e.g. ~/.ssh/) "
                           "so it is never committed")
    try:
        info = path.stat()
    except FileNotFoundError:
        raise UsageProblem(f"{field}: {key} does not exist; create one with `ssh-keygen -t ed25519 -f {key}` and add "
                           "its public key to bundle.signers") from None
    except OSError as exc:
        raise UsageProblem(f"{field}: {key} cannot be read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(info.st_mode):
        raise UsageProblem(f"{field}: {key} is not a file; give the path of an OpenSSH private key")
    if info.st_mode & 0o077:
        raise UsageProblem(f"{field}: {key} is readable by group or others (mode {stat.S_IMODE(info.st_mode):04o}); "
                           f"chmod 600 {key}")
    return path


def sign(data: bytes, key: Path, namespace: str) -> bytes:
    """The armored SSH signature of `data` by `key` (already checked) in `namespace`."""
    done = _run([SSH_KEYGEN, "-q", "-Y", "sign", "-f", str(key), "-n", namespace], data, "signing")
    if done.returncode != 0 or b"BEGIN SSH SIGNATURE" not in done.stdout:
        reason = " ".join(done.stderr.decode(errors="replace").split()) or f"exit {done.returncode}"
        raise UsageProblem(f"bundle.signingKey: {key} could not sign ({reason}); is it an OpenSSH private key?")
    return done.stdout


def allowed_signers(signers: Sequence[BundleSigner], namespace: str) -> str:
    """The allowed_signers file of `signers`, each restricted to `namespace`."""
    return "".join(f'{s.identity} namespaces="{namespace}" {s.public_key}\n' for s in signers)


def verify(data: bytes, signature: bytes | None, signers: Sequence[BundleSigner], namespace: str) -> str:
    """The identity that signed `data` in `namespace`; BundleRefused naming why otherwise."""
    if not signers:
        raise BundleRefused("no signer to verify against: the stack has no bundle.signers")
    if not signature or b"BEGIN SSH SIGNATURE" not in signature:
        raise BundleRefused("the bundle is not signed (no SSH signature beside it)")
    with tempfile.TemporaryDirectory(prefix="cnctl-verify-") as folder:
        allowed, sig = Path(folder) / "allowed_signers", Path(folder) / "bundle.sig"
        allowed.write_text(allowed_signers(signers, namespace))
        sig.write_bytes(signature)
        os.chmod(sig, 0o600)
        found = _run([SSH_KEYGEN, "-Y", "find-principals", "-s", str(sig), "-f", str(allowed)], None, "verification")
        principals = [line for line in found.stdout.decode(errors="replace").split() if line]
        if found.returncode != 0 or not principals:
            raise BundleRefused(f"the signature is not by any key of bundle.signers "
                                f"({', '.join(s.identity for s in signers)}), or not for this stack ({namespace})")
        reasons = []
        for principal in principals:
            done = _run([SSH_KEYGEN, "-Y", "verify", "-f", str(allowed), "-I", principal, "-n", namespace,
                         "-s", str(sig)], data, "verification")
            if done.returncode == 0:
                return principal
            reasons.append(" ".join(done.stderr.decode(errors="replace").split()) or f"exit {done.returncode}")
    raise BundleRefused(f"the signature of {', '.join(principals)} does not match the archive's bytes or namespace "
                        f"{namespace} ({'; '.join(reasons)})")
