"""The sandbox's pipeline artifacts: the STAND-IN client archive and the replay footage, served under /artifacts/.

* `clients/sandbox_standin_client.zip`: the STAND-IN client (`standin_client/`, catalog pipeline.yaml
  `clients.sandbox_standin`), what a stack pins as `pipeline.clientUrl` + `pipeline.clientSha256`.
* `footage/belt-replay.zip`: FRAMES real JPEG frames (FRAME_SIZE, coloured shapes riding a belt from left to
  right, written by `jpeg.py`) named as upstream's camera names them, `belt_<YYYYMMDD>_<HHMMSSxx>.jpg`, FPS
  apart: what an edge device's `camera: {source: replay}` replays (the capture service renames each frame to
  the device's own prefix and time; the names here only order them).

Both zips are byte-for-byte reproducible (fixed timestamps, permissions and entry order; the frames from
integer arithmetic only), so their sha256 in stacks/Pulumi.local.yaml stays valid until their recipe changes.
Each `<archive>.sha256` beside it is in sha256sum format.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnctl.sandbox.site import jpeg

CLIENT_KEY = "sandbox_standin"
CLIENT_SOURCE = Path(__file__).parent / "standin_client"
CLIENT_ARCHIVE = f"clients/{CLIENT_KEY}_client.zip"
FOOTAGE_ARCHIVE = "footage/belt-replay.zip"
FRAMES = 40
FPS = 2
FRAME_SIZE = (320, 240)
FRAME_PREFIX = "belt"
FIRST_FRAME = (2026, 1, 5, 8, 0, 0)  # the recording's start: 2026-01-05 08:00:00.00
QUALITY = 85
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class Artifact:
    """One built archive: where it is, its path below the artifacts URL, and its sha256."""

    path: Path
    url_path: str
    sha256: str

    def to_json(self) -> dict:
        return {"path": str(self.path), "url_path": self.url_path, "sha256": self.sha256}


def _zip(members: dict[str, bytes], compress: int) -> bytes:
    """A zip of `members` in name order with fixed timestamps and permissions (0644 files)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name in sorted(members):
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.external_attr = 0o100644 << 16
            info.compress_type = compress
            info.create_system = 3  # Unix, whatever the building machine is
            zf.writestr(info, members[name])
    return buf.getvalue()


# --- the STAND-IN client --------------------------------------------------------------------------


def client_files() -> dict[str, bytes]:
    """The client's files by archive path (the directory's *.py files, flat, as upstream's client/)."""
    return {p.name: p.read_bytes() for p in sorted(CLIENT_SOURCE.glob("*.py"))}


def client_archive_bytes() -> bytes:
    return _zip(client_files(), zipfile.ZIP_DEFLATED)


# --- the replay footage ---------------------------------------------------------------------------

_BELT = (74, 78, 84)
_STRIPE = (60, 63, 68)
# (colour, shape, size, lane y, speed in px/frame, start x): bottles, cans and cartons on the belt.
_OBJECTS = (
    ((214, 48, 42), "disc", 44, 70, 9, -30),
    ((40, 170, 220), "box", 52, 160, 7, 60),
    ((232, 200, 40), "disc", 30, 185, 11, 250),
    ((46, 180, 80), "box", 36, 60, 8, 190),
)


def frame_pixels(n: int) -> bytes:
    """Frame `n` as RGB bytes: a striped belt moving right at 8 px/frame, with _OBJECTS riding it."""
    width, height = FRAME_SIZE
    shift = 8 * n  # whole 8x8 blocks: the stripes' edges stay on block borders (flat blocks encode fast)
    rows = []
    for y in range(height):
        row = [(_STRIPE if (x - shift) // 32 % 2 else _BELT) if y in range(16, height - 16) else (30, 30, 34)
               for x in range(width)]
        for colour, shape, size, lane, speed, start in _OBJECTS:
            cx = (start + speed * n) % (width + 2 * size) - size
            half = size // 2
            if not lane - half <= y < lane + half:
                continue
            for x in range(max(0, cx - half), min(width, cx + half)):
                if shape == "box" or (x - cx) ** 2 + (y - lane) ** 2 < half * half:
                    row[x] = colour
        rows.append(bytes(v for px in row for v in px))
    return b"".join(rows)


def frame_name(n: int) -> str:
    """`belt_<YYYYMMDD>_<HHMMSSxx>.jpg` of frame `n`, FPS frames a second after FIRST_FRAME."""
    year, month, day, hour, minute, second = FIRST_FRAME
    hundredths = n * 100 // FPS
    total = (hour * 3600 + minute * 60 + second) * 100 + hundredths
    secs, xx = divmod(total, 100)
    return (f"{FRAME_PREFIX}_{year:04d}{month:02d}{day:02d}_"
            f"{secs // 3600:02d}{secs // 60 % 60:02d}{secs % 60:02d}{xx:02d}.jpg")


def footage_frames() -> Iterator[tuple[str, bytes]]:
    width, height = FRAME_SIZE
    for n in range(FRAMES):
        yield frame_name(n), jpeg.encode(width, height, frame_pixels(n), QUALITY)


def footage_archive_bytes() -> bytes:
    return _zip(dict(footage_frames()), zipfile.ZIP_STORED)  # JPEG does not deflate


# --- building and reading -------------------------------------------------------------------------


def _write(out: Path, rel: str, data: bytes) -> None:
    target = out / rel.split("/", 1)[1]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    target.with_name(target.name + ".sha256").write_text(f"{hashlib.sha256(data).hexdigest()}  {target.name}\n")


def build_clients(out: Path) -> None:
    """Fill `out` (served as /artifacts/clients/) with the client archive and its .sha256."""
    _write(out, CLIENT_ARCHIVE, client_archive_bytes())


def build_footage(out: Path) -> None:
    """Fill `out` (served as /artifacts/footage/) with the footage archive and its .sha256."""
    _write(out, FOOTAGE_ARCHIVE, footage_archive_bytes())


def read_artifact(artifacts_dir: Path, rel: str) -> Artifact:
    path = artifacts_dir / rel
    sha = path.with_name(path.name + ".sha256").read_text().split()[0]
    return Artifact(path, rel, sha)


def client_recipe_inputs() -> list:
    return [CLIENT_SOURCE, Path(__file__)]


def footage_recipe_inputs() -> list:
    return [Path(jpeg.__file__), Path(__file__)]


# --- the stack's pins -----------------------------------------------------------------------------


def stack_drift(cfg: Any, artifacts_url: str, client: Artifact | None, footage: Artifact | None) -> list[str]:
    """Where a stack's client and replay pins disagree with the archives the site serves (as for the model)."""
    problems = []
    pipe = cfg.pipeline
    if client and pipe.client == CLIENT_KEY:
        url = artifacts_url + client.url_path
        if pipe.client_url != url:
            problems.append(f"pipeline.clientUrl is {pipe.client_url}, the site serves the stand-in client at {url}")
        if pipe.client_sha256 != client.sha256:
            problems.append(f"pipeline.clientSha256 is {pipe.client_sha256}, the stand-in client's is {client.sha256}")
    if footage:
        url = artifacts_url + footage.url_path
        for dev in cfg.fleets.edge if cfg.fleets else []:
            cam = dev.camera
            if cam.source != "replay" or cam.replay_url != url:
                continue
            if cam.replay_sha256 != footage.sha256:
                problems.append(f"{dev.name}: camera.replaySha256 is {cam.replay_sha256}, the site's footage "
                                f"({url}) is {footage.sha256}")
    return problems
