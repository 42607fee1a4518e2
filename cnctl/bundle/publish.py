"""Build, sign and publish a stack's bundle to its models bucket; move a channel to a published version.

Objects, in `storage.buckets.models` (GCS, or the site's S3 store for `storage.kind: s3`, at `storage.endpoint`):
    bundles/<stack>/<version>/bundle.tar.gz        the archive
    bundles/<stack>/<version>/bundle.tar.gz.sig    its SSH signature
    bundles/<stack>/<version>/manifest.json        the manifest inside it, for a reader that wants it first
    bundles/<stack>/channels/<channel>.json        {"format", "stack", "channel", "version", "sha256", "published"}
The three version objects are created only if absent (a create-only write after a look-up: the GCS emulator
ignores create-only preconditions, so the look-up is what protects there); one already there with the same
size and MD5 is left as it is and said so; one with other bytes is refused, naming it. The channel pointer is
the only object ever overwritten, and it is written last, so a host that follows it finds every object.

Channels: `canary` (what `publish` moves by default) and `stable` (`promote`, or `publish --channel stable`).
`promote` reads the version's archive and signature back from the bucket and verifies them against the stack's
signers before moving `stable`, so stable never points at something a host would refuse.

The store is cnctl.store.Store (the uploader's clients, create-only writes, its errors in one line with the fix),
with the publishing machine's own identity: Application Default Credentials for GCS (anonymous for an emulator
at storage.endpoint), boto3's default chain for S3. The devices' upload credentials (storage.credentialsFile)
are never used: devices must not be able to write bundles.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cnctl.bundle import ARCHIVE, CHANNELS, MANIFEST, SIGNATURE, BundleRefused, namespace, prefix
from cnctl.bundle.archive import Bundle, build, unpack
from cnctl.bundle.signing import check_key, sign, verify
from cnctl.config import StackConfig, load_stack, stack_path
from cnctl.config.schema import Bundle as BundleSection
from cnctl.errors import UsageProblem
from cnctl.paths import REPO_ROOT
from cnctl.store import Store

Say = Callable[[str], None]
POINTER_FORMAT = 1


@dataclass(frozen=True)
class Signed:
    """A built bundle, its signature and the identity that verified it."""

    bundle: Bundle
    signature: bytes
    signer: str


def bundle_section(cfg: StackConfig) -> BundleSection:
    if cfg.bundle is None:
        raise UsageProblem(f"stack {cfg.environment} has no bundle section: add bundle.signers (identity and the "
                           "`ssh-keygen -y -f <key>` line of each key allowed to sign) to its stack file")
    return cfg.bundle


def channel_name(channel: str) -> str:
    if channel not in CHANNELS:
        raise UsageProblem(f"--channel {channel}: unknown channel; the channels are {', '.join(CHANNELS)}")
    return channel


def signing_key(cfg: StackConfig, key: str | None) -> Path:
    section = bundle_section(cfg)
    if key is not None:
        return check_key(Path(key), "--key")
    if section.signing_key is None:
        raise UsageProblem("bundle.signingKey is not set: give the path of the signing key on this machine in the "
                           "stack, or --key")
    return check_key(Path(section.signing_key), "bundle.signingKey")


def build_signed(stack: str, key: str | None = None, say: Say = print) -> tuple[StackConfig, Signed]:
    """Load the stack, build its bundle from this repository, sign it and verify the result as a host would
    (signature with the stack's signers, then every file unpacked into a scratch directory)."""
    cfg = load_stack(stack)
    section = bundle_section(cfg)
    key_path = signing_key(cfg, key)
    source = stack_path(stack)
    refuse_secrets(source)
    say(f"building the bundle of stack {cfg.environment} from {REPO_ROOT}")
    built = build(REPO_ROOT, cfg.environment, source)
    say(f"version {built.version}: {len(built.manifest['files'])} files, {len(built.archive)} bytes, "
        f"sha256 {built.sha256[:16]}…")
    signature = sign(built.archive, key_path, namespace(cfg.environment))
    try:
        with tempfile.TemporaryDirectory(prefix="cnctl-bundle-") as folder:
            (Path(folder) / ARCHIVE).write_bytes(built.archive)
            _, signer = unpack(Path(folder) / ARCHIVE, signature, list(section.signers), cfg.environment,
                               Path(folder) / "unpacked")
    except BundleRefused as exc:
        raise UsageProblem(f"bundle.signingKey: the bundle signed with {key_path} does not verify with "
                           f"bundle.signers ({exc}); add its public key (`ssh-keygen -y -f {key_path}`) to "
                           "bundle.signers") from None
    say(f"signed by {signer} (verified with the stack's bundle.signers)")
    return cfg, Signed(built, signature, signer)


SECRET_MARKERS = ("PRIVATE KEY-----", "secure:", "encryptedkey")


def refuse_secrets(stack_file: Path) -> None:
    """The stack file goes to every host and into a bucket devices read: refuse one that carries a secret, even
    Pulumi-encrypted (the repository keeps secrets in files on the deploying machine, named by path)."""
    text = stack_file.read_text(errors="replace")
    for number, line in enumerate(text.splitlines(), 1):
        for marker in SECRET_MARKERS:
            if marker in line and not line.lstrip().startswith("#"):
                raise UsageProblem(f"{stack_file} line {number}: holds a secret ({marker.strip('-:')}); a bundle ships "
                                   "the stack file to every host: keep secrets in files on the deploying machine "
                                   "and name them by path (like storage.credentialsFile)")


def write_files(signed: Signed, output: Path) -> list[Path]:
    """The archive, its signature and the manifest into `output` (created); their paths."""
    output.mkdir(parents=True, exist_ok=True)
    files = {ARCHIVE: signed.bundle.archive, SIGNATURE: signed.signature, MANIFEST: signed.bundle.manifest_bytes()}
    for name, body in files.items():
        (output / name).write_bytes(body)
    return [output / name for name in files]


# --- the objects (the store is cnctl/store.py, shared with `cnctl status`) ----------------------------------


def _same(remote: tuple[int, bytes | None], body: bytes) -> bool:
    size, md5 = remote
    return size == len(body) and (md5 is None or md5 == hashlib.md5(body, usedforsecurity=False).digest())


def objects(stack: str, signed: Signed) -> list[tuple[str, bytes]]:
    base = f"{prefix(stack)}/{signed.bundle.version}"
    return [(f"{base}/{ARCHIVE}", signed.bundle.archive), (f"{base}/{SIGNATURE}", signed.signature),
            (f"{base}/{MANIFEST}", signed.bundle.manifest_bytes())]


def pointer_key(stack: str, channel: str) -> str:
    return f"{prefix(stack)}/channels/{channel}.json"


def pointer(stack: str, channel: str, version: str, sha256: str, now: datetime.datetime | None = None) -> bytes:
    published = (now or datetime.datetime.now(datetime.UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = {"format": POINTER_FORMAT, "stack": stack, "channel": channel, "version": version, "sha256": sha256,
            "published": published}
    return (json.dumps(body, sort_keys=True, indent=2) + "\n").encode()


def publish(stack: str, channel: str = "canary", key: str | None = None, dry_run: bool = False,
            say: Say = print) -> Signed:
    """Build, sign, verify and upload the stack's bundle, then point `channel` at it (see the module doc)."""
    channel_name(channel)
    cfg, signed = build_signed(stack, key, say)
    env = cfg.environment
    uploads = objects(env, signed)
    store_url = f"{'gs' if cfg.storage.kind == 'gcs' else 's3'}://{cfg.storage.buckets.models}"
    if dry_run:
        for name, body in uploads:
            say(f"would create {store_url}/{name} ({len(body)} bytes) unless it is there with the same bytes")
        say(f"would point {store_url}/{pointer_key(env, channel)} at version {signed.bundle.version}")
        say("dry run: nothing uploaded")
        return signed
    store = Store.of_stack(cfg)
    for name, body in uploads:
        _create_once(store, name, body, say)
    move_channel(store, env, channel, signed.bundle.version, signed.bundle.sha256, say)
    return signed


def _create_once(store: Store, name: str, body: bytes, say: Say) -> None:
    remote = store.stat(name)
    if remote is None and store.create(name, body, conditional=True):
        say(f"created {store.url}/{name} ({len(body)} bytes)")
        return
    remote = remote or store.stat(name)
    if remote is not None and _same(remote, body):
        say(f"already published {store.url}/{name} (same bytes): left as it is")
        return
    raise UsageProblem(f"{store.url}/{name} exists with other bytes: a published version is never replaced; "
                       "find out who wrote it (a bundle built from another tree under the same version would be a bug)")


def move_channel(store: Store, stack: str, channel: str, version: str, sha256: str, say: Say) -> None:
    key = pointer_key(stack, channel)
    current = store.read(key)
    if current is not None:
        try:
            now = json.loads(current)
        except ValueError:
            now = {}
        if isinstance(now, dict) and now.get("version") == version and now.get("sha256") == sha256:
            say(f"channel {channel} already at version {version}: nothing to move")
            return
    store.create(key, pointer(stack, channel, version, sha256), conditional=False)
    say(f"channel {channel} -> version {version} ({store.url}/{key})")


def promote(stack: str, version: str | None = None, channel: str = "stable", source: str = "canary",
            dry_run: bool = False, say: Say = print) -> str:
    """Point `channel` at `version` (default: the version `source` points at), after verifying that version's
    archive and signature in the bucket with the stack's signers. Returns the version."""
    channel_name(channel)
    channel_name(source)
    cfg = load_stack(stack)
    section = bundle_section(cfg)
    env = cfg.environment
    store = Store.of_stack(cfg)
    if version is None:
        body = store.read(pointer_key(env, source))
        if body is None:
            raise UsageProblem(f"channel {source} of stack {env} points at nothing yet: publish first, or give --version")
        version = str(json.loads(body).get("version"))
    base = f"{prefix(env)}/{version}"
    archive, signature = store.read(f"{base}/{ARCHIVE}"), store.read(f"{base}/{SIGNATURE}")
    if archive is None:
        raise UsageProblem(f"--version {version}: no bundle at {store.url}/{base}/{ARCHIVE}; publish it first")
    try:
        signer = verify(archive, signature, list(section.signers), namespace(env))
    except BundleRefused as exc:
        raise UsageProblem(f"--version {version}: {store.url}/{base} does not verify ({exc}); not promoted") from None
    sha256 = hashlib.sha256(archive).hexdigest()
    say(f"version {version}: signed by {signer}, sha256 {sha256[:16]}…")
    if dry_run:
        say(f"would point {store.url}/{pointer_key(env, channel)} at version {version}; dry run: nothing written")
        return version
    move_channel(store, env, channel, version, sha256, say)
    return version
