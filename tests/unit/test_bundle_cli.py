"""`cnctl bundle` as a user types it: one case per class of bad input exits 2 with one line naming the field or
file and the fix, no traceback, nothing uploaded; `verify` exits 1 naming what it refused; `build` writes the
archive, its signature and the manifest; `--dry-run` contacts no store at all.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from cnctl.cli.main import app
from cnctl.paths import REPO_ROOT
from cnctl.sandbox.relay import free_port
from tests.unit.bundle_helpers import bundle_stack, keypair


def run(*args: str) -> Result:
    result = CliRunner().invoke(app, ["bundle", *args])
    assert "Traceback" not in result.output, result.output
    return result


@pytest.fixture
def signer(tmp_path: Path) -> tuple[Path, str]:
    return keypair(tmp_path / "keys")


def _closed_store(tmp_path: Path, signer: tuple[Path, str], kind: str = "gcs") -> str:
    """A stack whose models bucket is at a loopback port where nothing listens."""
    return bundle_stack(tmp_path, signer[1], signer[0],
                        storage={"kind": kind, "endpoint": f"http://127.0.0.1:{free_port()}"})


def _group_readable(tmp_path: Path, signer: tuple[Path, str]) -> list[str]:
    os.chmod(signer[0], 0o640)
    return ["publish", "--stack", bundle_stack(tmp_path, signer[1], signer[0])]


def _key_in_repo(tmp_path: Path, signer: tuple[Path, str]) -> list[str]:
    return ["build", "--stack", bundle_stack(tmp_path, signer[1]), "--key", str(REPO_ROOT / "stacks" / "id_ed25519"),
            "--output", str(tmp_path / "out")]


def _foreign_key(tmp_path: Path, signer: tuple[Path, str]) -> list[str]:
    other, _ = keypair(tmp_path / "other", "other")
    return ["publish", "--stack", bundle_stack(tmp_path, signer[1]), "--key", str(other)]


def _secret_in_stack(tmp_path: Path, signer: tuple[Path, str]) -> list[str]:
    stack = bundle_stack(tmp_path, signer[1], signer[0])
    Path(stack).write_text(Path(stack).read_text() + "  circularnet-extra:token:\n    secure: AAABADxyz\n")
    return ["publish", "--stack", stack, "--dry-run"]


BAD_INPUT: dict[str, tuple[Callable[[Path, tuple[Path, str]], list[str]], str]] = {
    "a missing key file": (lambda t, s: ["publish", "--stack", bundle_stack(t, s[1], t / "nokey")],
                           "bundle.signingKey: .*nokey does not exist; create one with `ssh-keygen -t ed25519"),
    "a key readable by its group": (_group_readable, r"is readable by group or others \(mode 0640\); chmod 600"),
    "a key inside the repository": (_key_in_repo, "--key: .* is inside the repository"),
    "a key that is not a signer's": (_foreign_key, "does not verify with bundle.signers .*add its public key"),
    "no signing key anywhere": (lambda t, s: ["build", "--stack", bundle_stack(t, s[1])],
                                "bundle.signingKey is not set: .* or --key"),
    "a stack without bundle.signers": (lambda t, s: ["publish", "--stack", bundle_stack(t, None)],
                                       "stack local has no bundle section: add bundle.signers"),
    "an unknown channel": (lambda t, s: ["publish", "--stack", bundle_stack(t, s[1], s[0]), "--channel", "beta"],
                           "--channel beta: unknown channel; the channels are canary, stable"),
    "an unreachable GCS bucket": (lambda t, s: ["publish", "--stack", _closed_store(t, s)],
                                  r"storage.buckets.models \(gs://sandbox-models\): GCS http://127.0.0.1:\d+ unreachable"),
    "an unreachable S3 bucket": (lambda t, s: ["promote", "--stack", _closed_store(t, s, "s3")],
                                 r"storage.buckets.models \(s3://sandbox-models\): S3 http://127.0.0.1:\d+ unreachable"),
    "S3 without credentials on this machine": (lambda t, s: ["promote", "--stack", _closed_store(t, s, "s3")],
                                               "no credentials on this machine: set AWS_ACCESS_KEY_ID"),
    "a secret in the stack file": (_secret_in_stack, r"line \d+: holds a secret \(secure\)"),
    "an unknown stack": (lambda t, s: ["verify", str(t / "x.tar.gz"), "--stack", "nosuch"], "has no file Pulumi.nosuch.yaml in"),
    "a missing archive": (lambda t, s: ["verify", str(t / "x.tar.gz"), "--stack", bundle_stack(t, s[1])],
                          "x.tar.gz: no such file"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_exits_2_with_one_line_naming_the_fix(case: str, tmp_path: Path, signer: tuple[Path, str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    import boto3  # type: ignore[import-untyped, unused-ignore]

    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # it keeps the credentials it found first
    if case != "S3 without credentials on this machine":
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    make, message = BAD_INPUT[case]
    result = run(*make(tmp_path, signer))
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2, (result.exit_code, result.output)
    if case != "an unknown stack":  # the stack loader's own report: a title line and one problem line
        assert len(lines) == 1, lines
    assert re.search(message, result.stderr), result.stderr
    assert "created " not in result.stdout and "channel " not in result.stdout.replace("--channel", "")


def test_dry_run_builds_signs_and_verifies_but_contacts_no_store(tmp_path: Path, signer: tuple[Path, str]) -> None:
    result = run("publish", "--stack", _closed_store(tmp_path, signer), "--dry-run", "--channel", "stable")
    assert result.exit_code == 0, result.output
    assert result.stdout.count("would create gs://sandbox-models/bundles/local/") == 3
    assert "would point gs://sandbox-models/bundles/local/channels/stable.json at version" in result.stdout
    assert "signed by release@plant" in result.stdout and result.stdout.rstrip().endswith("dry run: nothing uploaded")


def test_build_writes_a_bundle_that_verify_accepts_and_a_tampered_one_it_refuses(tmp_path: Path,
                                                                                  signer: tuple[Path, str]) -> None:
    stack = bundle_stack(tmp_path, signer[1], signer[0])
    built = run("build", "--stack", stack, "--output", str(tmp_path / "out"))
    assert built.exit_code == 0, built.output
    [folder] = (tmp_path / "out" / "local").iterdir()
    assert sorted(p.name for p in folder.iterdir()) == ["bundle.tar.gz", "bundle.tar.gz.sig", "manifest.json"]
    archive = folder / "bundle.tar.gz"
    ok = run("verify", str(archive), "--stack", stack, "--into", str(tmp_path / "unpacked"))
    assert ok.exit_code == 0 and f"ok: bundle {folder.name} of stack local" in ok.stdout, ok.output
    assert (tmp_path / "unpacked" / "deploy.py").is_file()
    assert stat.S_IMODE((tmp_path / "unpacked" / "deploy.py").stat().st_mode) in (0o644, 0o755)

    body = bytearray(archive.read_bytes())
    body[len(body) // 2] ^= 0x01
    archive.write_bytes(bytes(body))
    refused = run("verify", str(archive), "--stack", stack, "--into", str(tmp_path / "again"))
    assert refused.exit_code == 1 and "refused:" in refused.stderr and "does not match" in refused.stderr, refused.output
    assert not (tmp_path / "again").exists()
    (folder / "bundle.tar.gz.sig").unlink()
    unsigned = run("verify", str(archive), "--stack", stack)
    assert unsigned.exit_code == 1 and "not signed" in unsigned.stderr, unsigned.output
