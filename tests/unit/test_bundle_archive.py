"""Pull mode's bundle (cnctl/bundle): reproducible bytes, a manifest listing exactly the bundle list, the
imports of the host side inside it, SSH signatures that verify only with the stack's signers, in the stack's
namespace, over the very bytes, and an unpack that refuses a tampered, missing, extra or escaping entry and
leaves nothing behind. The `bundle` section's schema and rules. No network: ssh-keygen and files only.
"""

from __future__ import annotations

import ast
import copy
import functools
import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
from pathlib import Path
from typing import Any

import pytest

from cnctl.bundle import MANIFEST, BundleRefused, contents, namespace
from cnctl.bundle.archive import Bundle, build, pack, unpack, version_of
from cnctl.bundle.signing import sign, verify
from cnctl.config import StackConfigError, load_stack
from cnctl.config.schema import BundleSigner
from cnctl.paths import REPO_ROOT
from tests.unit.bundle_helpers import bundle_stack, keypair
from tests.unit.stack_variants import stack_variant

STACK_FILE = REPO_ROOT / "stacks" / "Pulumi.local.yaml"


@pytest.fixture(scope="module")
def built() -> Bundle:
    return build(REPO_ROOT, "local", STACK_FILE)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    folder = tmp_path_factory.mktemp("keys")
    return {name: keypair(folder, name) for name in ("signer", "other")}


def _signers(keys: dict[str, tuple[Path, str]], name: str = "signer") -> list[BundleSigner]:
    return [BundleSigner(identity="release@plant", public_key=keys[name][1])]


def _members(archive: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        return tar.getmembers()


# --- bytes and manifest --------------------------------------------------------------------------------


def test_building_twice_gives_the_same_bytes(built: Bundle) -> None:
    again = build(REPO_ROOT, "local", STACK_FILE)
    assert again.archive == built.archive and again.version == built.version


def test_the_bytes_do_not_depend_on_mtimes_owners_or_where_the_tree_is(tmp_path: Path) -> None:
    archives = []
    for n, mtime in enumerate((1_000_000, 2_000_000_000)):
        root = tmp_path / f"tree{n}"
        for path in contents.files(REPO_ROOT):
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / path, root / path)
            (root / path).touch()
            os.utime(root / path, (mtime, mtime))
        archives.append(build(root, "local", STACK_FILE).archive)
    assert archives[0] == archives[1]
    header = gzip.GzipFile(fileobj=io.BytesIO(archives[0]))
    header.read(1)
    assert header.mtime == 0
    assert archives[0][3] & 0x08 == 0  # FNAME flag: no file name in the gzip header


def test_members_are_regular_files_owned_by_root_at_mtime_0_manifest_first(built: Bundle) -> None:
    members = _members(built.archive)
    assert members[0].name == MANIFEST
    assert [m.name for m in members[1:]] == sorted(m.name for m in members[1:])
    assert all(m.isreg() and m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.uname == "" == m.gname for m in members)
    assert {m.mode for m in members} <= {0o644, 0o755}


def test_the_manifest_lists_exactly_the_bundle_list_with_hashes_sizes_and_modes(built: Bundle) -> None:
    manifest = built.manifest
    paths = [f["path"] for f in manifest["files"]]
    assert paths == sorted([*contents.files(REPO_ROOT), "stacks/Pulumi.local.yaml"])
    assert [m.name for m in _members(built.archive)][1:] == paths
    for entry in manifest["files"]:
        source = STACK_FILE if entry["path"].startswith("stacks/") else REPO_ROOT / entry["path"]
        body = source.read_bytes()
        assert entry["sha256"] == hashlib.sha256(body).hexdigest() and entry["size"] == len(body)
    assert manifest["format"] == 1 and manifest["stack"] == "local" and manifest["namespace"] == namespace("local")
    assert manifest["version"] == version_of(manifest) and len(manifest["version"]) == 16
    assert manifest["createdFrom"] is None or len(manifest["createdFrom"]) == 40
    assert not any(p.endswith(".pyc") or "__pycache__" in p or p.startswith("tests/") for p in paths)
    roles = [p for p in paths if p.startswith("roles/")]  # the layers' settings travel, the roles' tasks do not
    assert roles and all(p.endswith(("/defaults/main.yml", "/vars/main.yml")) for p in roles), roles
    assert "deploy.py" in paths and "cnctl/catalog/platforms.yaml" in paths and "cnctl/config/schema.py" in paths


def test_a_bundle_carries_the_whole_tree_the_pull_layer_installs_its_agent_from(built: Bundle) -> None:
    """On a pull host the pull layer copies the agent's files out of the verified bundle (deploy/pull.py): each
    must be in it, or every apply fails naming the missing file (cnctl/store.py once did)."""
    paths = {f["path"] for f in built.manifest["files"]}
    assert sorted(set(contents.files(REPO_ROOT, contents.AGENT_ENTRIES)) - paths) == []


def imported(roots: list[Path]) -> set[Path]:
    """`roots` and every file of cnctl/, cnhost/ and deploy/ their imports reach, transitively."""
    todo, seen = list(roots), set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else [])
            for name in names:
                parts = name.split(".")
                if parts[0] not in ("cnctl", "cnhost", "deploy"):
                    continue
                for i in range(1, len(parts) + 1):
                    base = REPO_ROOT.joinpath(*parts[:i])
                    for candidate in (base / "__init__.py", base.with_suffix(".py")):
                        if candidate.is_file():
                            todo.append(candidate)
    return seen


@pytest.mark.parametrize(("entries", "roots"), [
    # the bundle: pyinfra's entry point, the layers and pull mode's inventory
    (contents.ENTRIES, ["deploy.py", *sorted(p.relative_to(REPO_ROOT).as_posix() for p in (REPO_ROOT / "deploy").rglob("*.py")),
                        "hosts/pull.py"]),
    # the agent the pull layer installs: itself and the uploader whose store client it reads the bucket with
    (contents.AGENT_ENTRIES, ["cnctl/bundle/agent.py", "cnhost/uploader.py"]),
], ids=["bundle", "agent"])
def test_the_bundle_and_the_agent_hold_every_module_they_import(entries: Any, roots: list[str]) -> None:
    listed = set(contents.files(REPO_ROOT, entries))
    seen = imported([REPO_ROOT / root for root in roots])
    missing = sorted(p.relative_to(REPO_ROOT).as_posix() for p in seen if p.relative_to(REPO_ROOT).as_posix() not in listed)
    assert missing == [], f"add to cnctl/bundle/contents.py: {missing}"


def test_no_sandbox_file_is_in_a_built_bundle_nor_reached_by_its_imports(built: Bundle) -> None:
    """Production never stands on test infrastructure: a bundle (and the agent it installs) holds nothing of
    cnctl/sandbox, and nothing the host side imports leads there."""
    members = [m.name for m in _members(built.archive)]
    assert [name for name in members if name.startswith(("cnctl/sandbox/", "tests/"))] == []
    assert [path for path in contents.files(REPO_ROOT, contents.AGENT_ENTRIES) if path.startswith("cnctl/sandbox/")] == []
    roots = [REPO_ROOT / "deploy.py", REPO_ROOT / "hosts" / "pull.py", REPO_ROOT / "cnctl" / "bundle" / "agent.py",
             *sorted((REPO_ROOT / "deploy").glob("*.py"))]
    reached = sorted(p.relative_to(REPO_ROOT).as_posix() for p in imported(roots))
    assert [path for path in reached if path.startswith("cnctl/sandbox/")] == [], reached


# --- signatures ----------------------------------------------------------------------------------------


def test_a_signature_verifies_with_the_stacks_signers_and_only_then(built: Bundle, keys: dict[str, tuple[Path, str]]) -> None:
    signature = sign(built.archive, keys["signer"][0], namespace("local"))
    assert signature == sign(built.archive, keys["signer"][0], namespace("local"))  # ed25519: deterministic
    assert verify(built.archive, signature, _signers(keys), namespace("local")) == "release@plant"
    other = sign(built.archive, keys["other"][0], namespace("local"))
    cases = {
        "another key": (built.archive, other, namespace("local")),
        "no signature": (built.archive, None, namespace("local")),
        "an empty signature": (built.archive, b"", namespace("local")),
        "a tampered byte": (built.archive[:100] + bytes([built.archive[100] ^ 1]) + built.archive[101:], signature,
                            namespace("local")),
        "another namespace (stack)": (built.archive, signature, namespace("prod")),
    }
    for case, (data, sig, ns) in cases.items():
        with pytest.raises(BundleRefused):
            verify(data, sig, _signers(keys), ns)
            pytest.fail(f"{case} verified")
    wrong_namespace = sign(built.archive, keys["signer"][0], "file")
    with pytest.raises(BundleRefused, match="not for this stack|does not match"):
        verify(built.archive, wrong_namespace, _signers(keys), namespace("local"))


# --- unpack --------------------------------------------------------------------------------------------


def _tampered(built: Bundle, change: Any) -> bytes:
    """The bundle's files and manifest, changed by change(manifest, data, extra_members), re-packed by hand."""
    with tarfile.open(fileobj=io.BytesIO(built.archive), mode="r:gz") as tar:
        data = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.name != MANIFEST}  # type: ignore[union-attr]
    manifest = copy.deepcopy(built.manifest)
    extra: list[tuple[tarfile.TarInfo, bytes]] = []
    change(manifest, data, extra)
    manifest["version"] = version_of(manifest)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        body = json.dumps(manifest).encode()
        info = tarfile.TarInfo(MANIFEST)
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
        for entry in manifest["files"]:
            if entry["path"] in data:
                info = tarfile.TarInfo(entry["path"])
                info.size, info.mode = len(data[entry["path"]]), entry["mode"]
                tar.addfile(info, io.BytesIO(data[entry["path"]]))
        for info, body in extra:
            tar.addfile(info, io.BytesIO(body) if info.isreg() else None)
    return gzip.compress(raw.getvalue())


def _file(name: str, body: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(body), 0o644
    return info, body


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, b""


def _change_file(manifest: dict, data: dict, extra: list) -> None:
    body = data["deploy.py"]
    data["deploy.py"] = body[:-2] + bytes([body[-2] ^ 1]) + body[-1:]  # one bit, same size


def _drop_file(manifest: dict, data: dict, extra: list) -> None:
    del data["deploy/model.py"]


def _wrong_mode(manifest: dict, data: dict, extra: list) -> None:
    info, body = _file("deploy/extra_mode.py")
    info.mode = 0o4755
    manifest["files"].append({"path": "deploy/extra_mode.py", "sha256": hashlib.sha256(body).hexdigest(),
                              "size": len(body), "mode": 0o644})
    extra.append((info, body))


REFUSALS = {
    "a changed file": (_change_file, "deploy.py: sha256"),
    "a missing file": (_drop_file, "deploy/model.py: in the manifest but missing"),
    "an extra file": (lambda m, d, e: e.append(_file("deploy/backdoor.py")), "deploy/backdoor.py: in the archive but not in"),
    "a parent path": (lambda m, d, e: e.append(_file("../escape.py")), "'../escape.py': a path outside"),
    "an inner parent path": (lambda m, d, e: e.append(_file("deploy/../../escape.py")), "a path outside"),
    "an absolute path": (lambda m, d, e: e.append(_file("/etc/cron.d/x")), "'/etc/cron.d/x': a path outside"),
    "a symlink": (lambda m, d, e: e.append(_link("deploy/link.py", "/etc/shadow")), "deploy/link.py: a symlink"),
    "a hard link": (lambda m, d, e: e.append(_link("deploy/hard.py", "deploy.py", tarfile.LNKTYPE)), "deploy/hard.py: a hard link"),
    "a mode the manifest does not say": (_wrong_mode, "deploy/extra_mode.py: mode 4755"),
    "a manifest of another stack": (lambda m, d, e: m.update(stack="prod"), "a bundle of stack 'prod'"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_unpack_refuses_naming_the_entry_and_leaves_nothing(case: str, built: Bundle, keys: dict[str, tuple[Path, str]],
                                                             tmp_path: Path) -> None:
    change, message = REFUSALS[case]
    archive = tmp_path / "bundle.tar.gz"
    archive.write_bytes(_tampered(built, change))
    signature = sign(archive.read_bytes(), keys["signer"][0], namespace("local"))  # signed: the file checks must hold alone
    with pytest.raises(BundleRefused, match=message.replace("(", r"\(").replace(".", r"\.")):
        unpack(archive, signature, _signers(keys), "local", tmp_path / "out" / "bundle")
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
    assert not (tmp_path.parent / "escape.py").exists() and not (tmp_path / "escape.py").exists()


def test_unpack_refuses_an_unsigned_or_foreign_signed_bundle_before_reading_it(built: Bundle, keys: dict[str, tuple[Path, str]],
                                                                                tmp_path: Path) -> None:
    archive = tmp_path / "bundle.tar.gz"
    archive.write_bytes(built.archive)
    (tmp_path / "out").mkdir()
    for signature in (None, sign(built.archive, keys["other"][0], namespace("local"))):
        with pytest.raises(BundleRefused):
            unpack(archive, signature, _signers(keys), "local", tmp_path / "out" / "bundle")
    assert list((tmp_path / "out").iterdir()) == []


def test_a_good_bundle_unpacks_into_place_with_its_modes(built: Bundle, keys: dict[str, tuple[Path, str]], tmp_path: Path) -> None:
    archive = tmp_path / "bundle.tar.gz"
    archive.write_bytes(built.archive)
    manifest, signer = unpack(archive, sign(built.archive, keys["signer"][0], namespace("local")), _signers(keys),
                              "local", tmp_path / "bundle")
    assert signer == "release@plant" and manifest == built.manifest
    for entry in manifest["files"]:
        path = tmp_path / "bundle" / entry["path"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
        assert path.stat().st_mode & 0o7777 == entry["mode"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "bundle.tar.gz"]  # no scratch left


def test_pack_is_the_archive_of_its_manifest(built: Bundle) -> None:
    with tarfile.open(fileobj=io.BytesIO(built.archive), mode="r:gz") as tar:
        data = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    assert pack(built.manifest, data) == built.archive


# --- the stack's bundle section ------------------------------------------------------------------------


def _set_bundle(section: dict[str, Any], config: dict[str, Any]) -> None:
    config["circularnet:bundle"] = section


def test_the_bundle_section_is_typed_and_its_rules_name_the_field(tmp_path: Path, keys: dict[str, tuple[Path, str]]) -> None:
    cfg = load_stack(bundle_stack(tmp_path, keys["signer"][1], keys["signer"][0]))
    assert cfg.bundle is not None and cfg.bundle.signers[0].identity == "release@plant"
    bad: dict[str, dict[str, Any]] = {
        "bundle.signers[0].publicKey": {"signers": [{"identity": "a", "publicKey": "ssh-ed25519 AAAA"}]},
        "bundle.signers[0].identity": {"signers": [{"identity": "ops*", "publicKey": keys["signer"][1]}]},
        "bundle.signers[1].identity": {"signers": [{"identity": "a", "publicKey": keys["signer"][1]},
                                                   {"identity": "a", "publicKey": keys["other"][1]}]},
        "bundle.signers[1].publicKey": {"signers": [{"identity": "a", "publicKey": keys["signer"][1]},
                                                    {"identity": "b", "publicKey": keys["signer"][1]}]},
        "bundle.signers": {"signers": []},
        "bundle.signingKey": {"signers": [{"identity": "a", "publicKey": keys["signer"][1]}], "signingKey": "key"},
    }
    for n, (field, section) in enumerate(bad.items()):
        (tmp_path / str(n)).mkdir()
        path = stack_variant(tmp_path / str(n), functools.partial(_set_bundle, section), base="local")
        with pytest.raises(StackConfigError) as caught:
            load_stack(path)
        assert [p.path for p in caught.value.problems] == [field], (field, caught.value.render())


@pytest.mark.parametrize(("change", "field", "says"), [
    (lambda c: c["circularnet:fleets"]["edge"][0].update(mode="pull"), "fleets.edge[0].mode", "needs the stack's bundle"),
    (lambda c: c["circularnet:fleets"]["servers"][0].update(channel="canary"), "fleets.servers[0].channel",
     "only a pull-mode host follows a bundle channel"),
    (lambda c: c["circularnet:fleets"]["servers"][0].update(mode="pulled"), "fleets.servers[0].mode", "push"),
    (lambda c: c["circularnet:fleets"]["edge"][1].update(mode="pull", channel="beta"), "fleets.edge[1].channel",
     "canary"),
])
def test_a_pull_host_needs_signers_and_a_channel_needs_a_pull_host(tmp_path: Path, change: Any, field: str,
                                                                   says: str) -> None:
    with pytest.raises(StackConfigError) as caught:
        load_stack(stack_variant(tmp_path, change, base="local"))
    problems = caught.value.problems
    assert [p.path for p in problems] == [field] and says in str(problems[0]), caught.value.render()


def test_a_pull_host_with_signers_is_valid_and_polls_as_the_stack_says(tmp_path: Path,
                                                                         keys: dict[str, tuple[Path, str]]) -> None:
    def change(config: dict[str, Any]) -> None:
        config["circularnet:bundle"] = {"signers": [{"identity": "a", "publicKey": keys["signer"][1]}],
                                        "pollSeconds": 60}
        config["circularnet:fleets"]["edge"][0].update(mode="pull", channel="canary")

    cfg = load_stack(stack_variant(tmp_path, change, base="local"))
    assert (cfg.fleets.edge[0].mode, cfg.fleets.edge[0].channel, cfg.fleets.servers[0].mode) == ("pull", "canary", "push")
    assert cfg.bundle is not None and cfg.bundle.poll_seconds == 60
