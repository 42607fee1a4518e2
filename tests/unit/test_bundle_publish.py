"""`cnctl bundle publish|promote` against real stores on loopback: the GCS emulator and moto's S3, started by
test_uploader's `endpoints` fixture. Publishing creates exactly the version's three objects and the channel
pointer; publishing again changes nothing and says so; another object at the version's name is refused; the
pointer is the only object overwritten, and promote moves stable to canary's version after verifying it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from cnctl.bundle import publish as publishing
from cnctl.bundle.signing import verify
from cnctl.config import load_stack
from cnctl.errors import UsageProblem
from tests.unit.bundle_helpers import bundle_stack, keypair
from tests.unit.test_uploader import KINDS, Store, endpoints  # the emulators' fixture

__all__ = ["endpoints"]


@pytest.fixture(autouse=True)
def _s3_default_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")


@pytest.fixture(params=KINDS)
def site(request: pytest.FixtureRequest, endpoints: dict[str, str], tmp_path: Path) -> tuple[str, Store, str, Path]:
    """(stack path, the test's store, the models bucket, the signing key) of a fresh bucket of one kind."""
    kind = request.param
    bucket = f"cn-models-{uuid.uuid4().hex[:10]}"
    store = Store(kind, endpoints[kind])
    store.make_bucket(bucket)
    key, public = keypair(tmp_path / "keys")
    buckets = {"images": "sandbox-images", "results": "sandbox-results", "models": bucket}
    stack = bundle_stack(tmp_path, public, key, storage={"kind": kind, "endpoint": endpoints[kind], "buckets": buckets})
    return stack, store, bucket, key


def test_publish_creates_the_versions_objects_and_the_canary_pointer_then_is_a_no_op(site: tuple[str, Store, str, Path]) -> None:
    stack, store, bucket, _ = site
    lines: list[str] = []
    signed = publishing.publish(stack, say=lines.append)
    version = signed.bundle.version
    base = f"bundles/local/{version}"
    objects = store.objects(bucket)
    assert sorted(objects) == sorted([f"{base}/bundle.tar.gz", f"{base}/bundle.tar.gz.sig", f"{base}/manifest.json",
                                      "bundles/local/channels/canary.json"])
    assert objects[f"{base}/bundle.tar.gz"] == signed.bundle.archive
    assert json.loads(objects[f"{base}/manifest.json"]) == signed.bundle.manifest
    cfg = load_stack(stack)
    assert cfg.bundle is not None
    assert verify(objects[f"{base}/bundle.tar.gz"], objects[f"{base}/bundle.tar.gz.sig"], list(cfg.bundle.signers),
                  "circularnet-bundle:local") == "release@plant"
    pointer = json.loads(objects["bundles/local/channels/canary.json"])
    assert pointer["version"] == version and pointer["sha256"] == hashlib.sha256(signed.bundle.archive).hexdigest()
    assert pointer["channel"] == "canary" and pointer["stack"] == "local" and pointer["published"].endswith("Z")
    assert sum(line.startswith("created ") for line in lines) == 3

    again: list[str] = []
    publishing.publish(stack, say=again.append)
    assert store.objects(bucket) == objects  # not even the pointer's timestamp moved
    assert sum(line.startswith("already published") for line in again) == 3
    assert any("canary already at version" in line for line in again)


def test_another_object_at_the_versions_name_is_refused_and_the_pointer_stays(site: tuple[str, Store, str, Path]) -> None:
    stack, store, bucket, _ = site
    lines: list[str] = []
    signed = publishing.publish(stack, dry_run=True, say=lines.append)
    assert store.objects(bucket) == {} and lines[-1] == "dry run: nothing uploaded"
    name = f"bundles/local/{signed.bundle.version}/bundle.tar.gz.sig"
    store.put(bucket, name, b"-----BEGIN SSH SIGNATURE-----\nforged\n")
    with pytest.raises(UsageProblem, match=f"{name} exists with other bytes"):
        publishing.publish(stack, say=lines.append)
    assert "bundles/local/channels/canary.json" not in store.objects(bucket)
    assert store.objects(bucket)[name].endswith(b"forged\n")


def test_promote_moves_stable_to_canarys_version_after_verifying_it(site: tuple[str, Store, str, Path]) -> None:
    stack, store, bucket, _ = site
    with pytest.raises(UsageProblem, match="channel canary of stack local points at nothing yet"):
        publishing.promote(stack, say=lambda line: None)
    signed = publishing.publish(stack, say=lambda line: None)
    canary = store.objects(bucket)["bundles/local/channels/canary.json"]
    assert publishing.promote(stack, say=lambda line: None) == signed.bundle.version
    objects = store.objects(bucket)
    assert json.loads(objects["bundles/local/channels/stable.json"])["version"] == signed.bundle.version
    assert objects["bundles/local/channels/canary.json"] == canary
    with pytest.raises(UsageProblem, match="--version 0000000000000000: no bundle"):
        publishing.promote(stack, version="0000000000000000", say=lambda line: None)


def test_the_pointer_moves_to_a_new_version_and_old_versions_stay(site: tuple[str, Store, str, Path]) -> None:
    stack, store, bucket, _ = site
    first = publishing.publish(stack, say=lambda line: None)
    # another stack file (a changed value) is another bundle: a new version beside the first
    Path(stack).write_text(Path(stack).read_text().replace("scoreThreshold: 0.4", "scoreThreshold: 0.5"))
    second = publishing.publish(stack, say=lambda line: None)
    assert second.bundle.version != first.bundle.version
    objects = store.objects(bucket)
    assert f"bundles/local/{first.bundle.version}/bundle.tar.gz" in objects
    assert f"bundles/local/{second.bundle.version}/bundle.tar.gz" in objects
    assert json.loads(objects["bundles/local/channels/canary.json"])["version"] == second.bundle.version


def test_the_console_script_publishes_from_any_directory(site: tuple[str, Store, str, Path], tmp_path: Path) -> None:
    """`cnctl bundle publish` as users run it: the installed console script, from outside the repository (its
    store client is cnhost/uploader.py, which is not importable from there by name)."""
    stack, store, bucket, _ = site
    cnctl = Path(sys.executable).with_name("cnctl")
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
    env.pop("PYTHONPATH", None)
    done = subprocess.run([str(cnctl), "bundle", "publish", "--stack", stack], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "bundles/local/channels/canary.json" in store.objects(bucket)
