"""`cnctl bundle ...`: pull mode's signed bundle (cnctl/bundle, docs/pull-mode.md): build it, verify one,
publish it to the stack's models bucket, promote a published version to the stable channel.

Exit codes: 0 done; 1 `verify` refused the bundle (the line says which file or check); 2 bad input (a missing
or group-readable key, a stack without bundle.signers, an unknown channel, an unreachable bucket, a version
published with other bytes): one line naming the field or file and the fix, nothing uploaded.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import typer
from rich.markup import escape

from cnctl.bundle import ARCHIVE, CHANNELS, DEFAULT_CHANNEL, BundleRefused
from cnctl.bundle import publish as publishing
from cnctl.bundle.archive import unpack
from cnctl.cli.errors import UsageProblem, say_error, user_errors
from cnctl.cli.options import STACK_HELP, stack_option
from cnctl.config import load_stack
from cnctl.console import console

app = typer.Typer(help="Pull mode's signed bundle: build, verify, publish, promote.", no_args_is_help=True)
out = console()
EXIT_REFUSED = 1

KEY_HELP = "the OpenSSH private key that signs (default: bundle.signingKey of the stack)"
CHANNEL_HELP = f"the channel to point at the new version: {' or '.join(CHANNELS)}"


def _say(line: str) -> None:
    out.print(escape(line), soft_wrap=True)


@app.callback()
def bundle() -> None:
    """Pull mode's signed bundle: build, verify, publish, promote."""


@app.command()
def build(
    stack: str = stack_option(),
    output: Path = typer.Option(Path("build/bundle"), "--output", "-o", help="directory for the archive, its "
                                "signature and manifest.json (in <output>/<stack>/<version>/)"),
    key: str | None = typer.Option(None, "--key", help=KEY_HELP),
) -> None:
    """Build the stack's bundle from this tree, sign it and verify it, and write it to a directory.

    The same tree (and commit) always gives the same bytes and version.
    """
    with user_errors():
        cfg, signed = publishing.build_signed(stack, key, _say)
        folder = output / cfg.environment / signed.bundle.version
        for path in publishing.write_files(signed, folder):
            _say(f"wrote {path}")


@app.command()
def verify(
    archive: Path = typer.Argument(..., help="the bundle.tar.gz to verify"),
    stack: str = stack_option(STACK_HELP + "; its bundle.signers verify"),
    signature: Path | None = typer.Option(None, "--signature", help="default: <archive>.sig"),
    into: Path | None = typer.Option(None, "--into", help="unpack into this new directory once verified "
                                     "(default: unpack into a scratch directory and remove it)"),
) -> None:
    """Verify a bundle as a host would: its signature with the stack's signers, then every file against the
    manifest (a tampered, missing, extra or escaping file is refused, naming it). Exit 1 when refused."""
    with user_errors():
        cfg = load_stack(stack)
        section = publishing.bundle_section(cfg)
        sig_path = signature or archive.with_name(archive.name + ".sig")
        if not archive.is_file():
            raise UsageProblem(f"{archive}: no such file; give the path of a {ARCHIVE}")
        sig = sig_path.read_bytes() if sig_path.is_file() else None
        try:
            if into is not None:
                manifest, signer = unpack(archive, sig, list(section.signers), cfg.environment, into)
            else:
                with tempfile.TemporaryDirectory(prefix="cnctl-verify-") as folder:
                    manifest, signer = unpack(archive, sig, list(section.signers), cfg.environment,
                                              Path(folder) / "bundle")
        except BundleRefused as exc:
            where = sig_path if sig is None else archive
            say_error("refused:", f" {where}: {exc}")
            raise typer.Exit(EXIT_REFUSED) from None
    _say(f"ok: bundle {manifest['version']} of stack {cfg.environment}, {len(manifest['files'])} files, "
         f"signed by {signer}" + (f", unpacked into {into}" if into is not None else ""))


@app.command()
def publish(
    stack: str = stack_option(),
    channel: str = typer.Option(DEFAULT_CHANNEL, "--channel", help=CHANNEL_HELP),
    key: str | None = typer.Option(None, "--key", help=KEY_HELP),
    dry_run: bool = typer.Option(False, "--dry-run", help="build, sign and verify; say what would be uploaded, "
                                 "upload nothing"),
) -> None:
    """Build, sign and verify the stack's bundle, upload it to storage.buckets.models under
    bundles/<stack>/<version>/ (create-only: the same version again is a no-op), then point the channel at it."""
    with user_errors():
        publishing.publish(stack, channel, key, dry_run, _say)


@app.command()
def promote(
    stack: str = stack_option(),
    version: str | None = typer.Option(None, "--version", help="default: the version canary points at"),
    dry_run: bool = typer.Option(False, "--dry-run", help="verify, say what would move, write nothing"),
) -> None:
    """Point the stable channel at a published version (default: canary's), after verifying its signature."""
    with user_errors():
        publishing.promote(stack, version, dry_run=dry_run, say=_say)



