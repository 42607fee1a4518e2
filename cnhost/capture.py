#!/usr/bin/env python3
"""The belt camera's capture service: frames into the local spool, named as upstream's pipeline parses them.

Runs on edge devices with the host's python3 (standard library only; Python 3.10+), as the unprivileged
pipeline user, from systemd:

    capture.py run   --config /etc/circularnet/pipeline.json [--ffmpeg PATH]
    capture.py once  --config FILE --frames N [--timeout 30] [--ffmpeg PATH]
    capture.py check --config FILE [--ffmpeg PATH]

Settings (the `capture` section of the pipeline settings, plus `spool` and `state`): `source` is
- `replay`: the JPEG members (.jpg/.jpeg) of the zip `replay_archive`, in name order, once (or looped
  forever with `replay_loop`), one every 1/`fps` seconds (recorded footage; the sandbox's camera);
- `v4l2`: `device` through ffmpeg; `rtsp`: `url` through ffmpeg (TCP transport). ffmpeg writes an MJPEG
  stream to a pipe (`ffmpeg_argv`), which this script splits into JPEG frames (`MjpegSplitter`).

Each frame is written as `<spool>/.<name>.tmp` (mode 0640), then hard-linked to `<name>` and the temp file
removed (renamed, on a filesystem without links), where name is `<prefix>_<YYYYMMDD>_<HHMMSSxx>.jpg`, the
UTC time of its arrival (xx = hundredths of a second): the pipeline reads only names without a leading dot,
and names sort in capture order. A second frame within the same hundredth takes the next free hundredth; a
name is never overwritten, not even one another capture process (an operator's `once`) just wrote.

The spool holds at most `spool_budget_mib` of frames: before a frame is written, the oldest frames are
deleted until it fits, each counted as dropped. A frame that cannot be written (a full disk) is dropped,
counted and logged; the service keeps running. ffmpeg exiting, stalling or missing (a camera unplugged, a
stream gone) is logged in one line, recorded as the state's `error`, and ffmpeg is started again after 1 s,
doubling up to 30 s (back to 1 s after a run that lasted 30 s); `error` clears with the next frame written.

`<state>/capture.json` (0644, written atomically, at most about once a second, every 30 s as a heartbeat,
and on exit): {"updated", "source", "captured", "dropped", "last_frame", "last_frame_at", "error"}; the
counters continue from the previous file. SIGTERM (or SIGINT): the current frame is finished, the state
written, exit 0.

`check` and `once` print one JSON line {"result", "message"} on stdout. Exit codes (EXIT): 0 ok; 1 `once`
got fewer than N frames within --timeout; 2 bad settings (the message names the key); 3 the source is
missing (no such device, an unreadable archive or one without a JPEG, no ffmpeg for v4l2/rtsp).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime
import errno
import json
import os
import re
import select
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

from cnhost import stop

EXIT = {"ok": 0, "failed": 1, "settings": 2, "source": 3}

SOURCES = ("v4l2", "rtsp", "replay")
_PREFIX = re.compile(r"^[A-Za-z0-9-]{1,64}$")  # no "_": it separates the name's fields
FRAME = re.compile(r"^(?P<prefix>[A-Za-z0-9-]+)_(?P<when>\d{8}_\d{8})\.jpg$")
JPEG_SUFFIXES = (".jpg", ".jpeg")
STATE_FILE = "capture.json"

BACKOFF_MIN, BACKOFF_MAX = 1.0, 30.0  # seconds between ffmpeg (or archive) restarts
STALL_SECONDS = 10.0  # ffmpeg alive but silent this long: the camera is gone, restart it
STATE_EVERY, HEARTBEAT_EVERY = 1.0, 30.0  # seconds between state writes (when changed / regardless)
RESCAN_EVERY = 2.0  # seconds the spool's measured size is trusted before it is measured again
READ_CHUNK = 1 << 16
MAX_FRAME_BYTES = 64 << 20  # an MJPEG "frame" past this is garbage: dropped, the splitter resynchronises
# Inside entropy-coded data FF is followed by 00 (stuffing), D0-D7 (restart markers) or FF (fill): data all.
# Any other byte after FF is the marker that ends the scan.
_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
UTC = datetime.timezone.utc


class SettingsError(Exception):
    """The settings file or one of its keys is unusable: the message names the key."""


class SourceError(Exception):
    """The camera, stream, archive or ffmpeg failed or is missing: the message says which and why."""


def log(message: str) -> None:
    print(f"capture: {message}", file=sys.stderr, flush=True)


# --- settings ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Settings:
    source: str
    prefix: str
    fps: int
    spool: Path
    state: Path
    budget_bytes: int
    device: str | None = None
    url: str | None = None
    replay_archive: str | None = None
    replay_loop: bool = False


def _absolute(data: dict, key: str, label: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value.startswith("/"):
        raise SettingsError(f"{label}: {value!r} is not an absolute path")
    return value


def _integer(data: dict, key: str, label: str, low: int, high: int) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SettingsError(f"{label}: {value!r} is not a whole number from {low} to {high}")
    return value


def load_settings(path: str | Path) -> Settings:
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise SettingsError(f"{path}: cannot read the settings ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise SettingsError(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise SettingsError(f"{path}: not a JSON object")
    capture = data.get("capture")
    if not isinstance(capture, dict):
        raise SettingsError(f"capture: {capture!r}: this host has no camera section (a server captures nothing)")
    source = capture.get("source")
    if source not in SOURCES:
        raise SettingsError(f"capture.source: {source!r} is not one of {', '.join(SOURCES)}")
    prefix = capture.get("prefix")
    if not isinstance(prefix, str) or not _PREFIX.match(prefix):
        raise SettingsError(f"capture.prefix: {prefix!r} is not 1-64 letters, digits or '-'")
    settings = Settings(
        source=source, prefix=prefix,
        fps=_integer(capture, "fps", "capture.fps", 1, 240),
        budget_bytes=_integer(capture, "spool_budget_mib", "capture.spool_budget_mib", 1, 1 << 20) << 20,
        spool=Path(_absolute(data, "spool", "spool")), state=Path(_absolute(data, "state", "state")),
    )
    if source == "v4l2":
        return dataclasses.replace(settings, device=_absolute(capture, "device", "capture.device"))
    if source == "rtsp":
        url = capture.get("url")
        if not isinstance(url, str) or not url.startswith(("rtsp://", "rtsps://")) or any(c.isspace() for c in url):
            raise SettingsError(f"capture.url: {url!r} is not an rtsp:// or rtsps:// URL")
        return dataclasses.replace(settings, url=url)
    loop = capture.get("replay_loop", False)
    if not isinstance(loop, bool):
        raise SettingsError(f"capture.replay_loop: {loop!r} is not true or false")
    return dataclasses.replace(settings, replay_archive=_absolute(capture, "replay_archive", "capture.replay_archive"),
                               replay_loop=loop)


# --- names --------------------------------------------------------------------------------------------------


def frame_name(prefix: str, centiseconds: int) -> str:
    """`<prefix>_<YYYYMMDD>_<HHMMSSxx>.jpg` of a UTC time given in hundredths of a second since the epoch."""
    seconds, hundredths = divmod(centiseconds, 100)
    when = datetime.datetime.fromtimestamp(seconds, UTC)
    return f"{prefix}_{when:%Y%m%d}_{when:%H%M%S}{hundredths:02d}.jpg"


class Namer:
    """Names frames by their arrival time; a second frame in the same hundredth (or one whose name exists)
    takes the next free hundredth, so names never collide and keep their capture order. A clock stepped
    back by more than `STEP_BACK` seconds is believed (names follow the clock again)."""

    STEP_BACK = 2.0

    def __init__(self, prefix: str, exists: Callable[[str], bool]) -> None:
        self.prefix, self.exists = prefix, exists
        self.last: int | None = None

    def name(self, now: float) -> tuple[str, float]:
        """(name, the time it stands for)."""
        centi = int(now * 100)
        if self.last is not None and self.last - self.STEP_BACK * 100 <= centi <= self.last:
            centi = self.last + 1
        while self.exists(frame_name(self.prefix, centi)):
            centi += 1
        self.last = centi
        return frame_name(self.prefix, centi), centi / 100


# --- the MJPEG stream -----------------------------------------------------------------------------------------


class MjpegSplitter:
    """Splits a byte stream of concatenated JPEGs (ffmpeg's image2pipe/mjpeg) into whole JPEGs, whatever the
    chunk boundaries. It walks the markers: a segment's length is skipped (so FFD9 inside an APP segment
    ends nothing), and inside entropy-coded data FF00 (stuffing), FFD0-FFD7 (restarts) and FF fill bytes are
    data; the first other marker ends the scan, and EOI (FFD9) ends the frame. Bytes before a frame's SOI
    are skipped. A malformed frame (cut short by a dying ffmpeg, say) is discarded, counted in `discarded`,
    and the search for an SOI resumes right after its own, so a frame following it is still found."""

    def __init__(self, max_frame: int = MAX_FRAME_BYTES) -> None:
        self.buf = bytearray()
        self.max_frame = max_frame
        self.pos = 0  # where parsing stands in buf (buf[0:2] is the frame's SOI once started)
        self.started = False
        self.in_scan = False
        self.discarded = 0

    def feed(self, data: bytes) -> list[bytes]:
        self.buf += data
        frames = []
        while (frame := self._next()) is not None:
            frames.append(frame)
        if len(self.buf) > self.max_frame:  # no end in sight: drop it all
            self._resync(len(self.buf))
        return frames

    def _resync(self, upto: int = 2) -> None:
        """Discard the frame begun in buf (by default only its SOI: the search resumes right after it)."""
        if self.started:
            self.discarded += 1
        del self.buf[:upto]
        self.pos, self.started, self.in_scan = 0, False, False

    def _next(self) -> bytes | None:
        buf = self.buf
        if not self.started:
            start = buf.find(b"\xff\xd8")
            if start < 0:
                del buf[: len(buf) - 1 if buf.endswith(b"\xff") else len(buf)]  # an SOI may span chunks
                return None
            del buf[:start]
            self.pos, self.started, self.in_scan = 2, True, False
        while True:
            if self.in_scan:
                found = _SCAN_END.search(buf, self.pos)
                if found is None:  # keep a last FF: what follows it decides
                    self.pos = max(self.pos, len(buf) - 1) if buf.endswith(b"\xff") else len(buf)
                    return None
                self.pos, self.in_scan = found.start(), False
            pos = self.pos
            if pos + 2 > len(buf):
                return None
            if buf[pos] != 0xFF:  # not a marker where one must be
                self._resync()
                return self._next()
            marker = buf[pos + 1]
            if marker == 0xFF:
                self.pos += 1
            elif marker == 0xD9:  # EOI
                frame = bytes(buf[: pos + 2])
                del buf[: pos + 2]
                self.pos, self.started = 0, False
                return frame
            elif marker == 0xD8:  # a new SOI inside a frame: the one before was cut short
                self._resync()
                return self._next()
            elif 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
                self.pos += 2
            else:
                if pos + 4 > len(buf):
                    return None
                length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                if length < 2:
                    self._resync()
                    return self._next()
                if pos + 2 + length > len(buf):
                    return None
                self.pos = pos + 2 + length
                self.in_scan = marker == 0xDA  # SOS: entropy-coded data follows its header


# --- ffmpeg ---------------------------------------------------------------------------------------------------


def ffmpeg_argv(ffmpeg: str, settings: Settings) -> list[str]:
    """The ffmpeg command line of a v4l2 or rtsp source: its MJPEG frames on stdout at the settings' rate."""
    if settings.source == "v4l2":
        source = ["-f", "v4l2", "-framerate", str(settings.fps), "-i", str(settings.device)]
    elif settings.source == "rtsp":
        source = ["-rtsp_transport", "tcp", "-i", str(settings.url)]
    else:
        raise ValueError(f"source {settings.source!r} does not run ffmpeg")
    return [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", *source,
            "-an", "-f", "image2pipe", "-c:v", "mjpeg", "-q:v", "3", "-r", str(settings.fps), "-"]


def find_ffmpeg(ffmpeg: str) -> str | None:
    return shutil.which(ffmpeg)


# --- spool and state ------------------------------------------------------------------------------------------


def _write_file(path: Path, data: bytes) -> None:
    """Create `path` (mode 0640 whatever the umask) holding `data`."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
    try:
        os.fchmod(fd, 0o640)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


class Spool:
    """The frame directory: atomic writes under the byte budget, oldest frames dropped first.

    Its size is measured (a directory scan) when the estimate says a frame does not fit and the last
    measurement is older than RESCAN_EVERY; in between, the frames written since are added to it. The
    pipeline only takes frames away, so the estimate errs high, never low."""

    def __init__(self, path: Path, budget: int) -> None:
        self.path, self.budget = path, budget
        self.frames: collections.deque[tuple[str, int]] = collections.deque()  # oldest first
        self.total = 0
        self.scanned = float("-inf")
        self.over = False  # within a run of budget drops (logged once)

    @staticmethod
    def _key(name: str) -> tuple[str, str]:
        match = FRAME.match(name)
        return (match["when"] if match else "", name)

    def scan(self) -> None:
        found = []
        with os.scandir(self.path) as entries:
            for entry in entries:
                if entry.name.startswith(".") or not FRAME.match(entry.name):
                    continue
                try:
                    if entry.is_file(follow_symlinks=False):
                        found.append((entry.name, entry.stat(follow_symlinks=False).st_size))
                except FileNotFoundError:  # taken by the pipeline meanwhile
                    continue
        found.sort(key=lambda item: self._key(item[0]))
        self.frames = collections.deque(found)
        self.total = sum(size for _, size in found)
        self.scanned = time.monotonic()

    def make_room(self, size: int) -> int:
        """Delete the oldest frames until `size` more bytes fit the budget; the number deleted."""
        if self.scanned == float("-inf"):  # the frames there before this process started
            self.scan()
        if self.total + size <= self.budget:
            if self.over:
                log("spool back within its budget")
                self.over = False
            return 0
        if time.monotonic() - self.scanned > RESCAN_EVERY:
            self.scan()
        dropped = 0
        while self.frames and self.total + size > self.budget:
            name, frame_size = self.frames.popleft()
            self.total -= frame_size
            try:
                os.unlink(self.path / name)
            except FileNotFoundError:  # the pipeline claimed it: not a drop
                continue
            dropped += 1
        if dropped and not self.over:
            log(f"spool {self.path} over its budget of {self.budget >> 20} MiB: dropping the oldest frames "
                "(is the pipeline running?)")
            self.over = True
        return dropped

    def exists(self, name: str) -> bool:
        return os.path.lexists(self.path / name)

    def write(self, data: bytes, names: Iterator[tuple[str, float]]) -> tuple[str, float]:
        """`data` as `.<name>.tmp`, then linked under the first of `names` not taken (a link never replaces a
        file, so even another capture process writing the same spool cannot be overwritten) and the temp
        file removed; on a filesystem without hard links, renamed after a look. Nothing is left behind when
        it fails. Returns the (name, time) taken."""
        name, when = next(names)
        temp = self.path / f".{name}.tmp"
        try:
            _write_file(temp, data)
            while True:
                try:
                    os.link(temp, self.path / name)
                    break
                except FileExistsError:
                    name, when = next(names)
                except OSError as exc:
                    if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                        raise
                    while os.path.lexists(self.path / name):
                        name, when = next(names)
                    os.replace(temp, self.path / name)
                    break
        finally:
            try:
                os.unlink(temp)
            except FileNotFoundError:
                pass
        self.frames.append((name, len(data)))
        self.total += len(data)
        return name, when


class State:
    """<state>/capture.json: counters carried over from the previous file, written at most every
    STATE_EVERY seconds when changed (every HEARTBEAT_EVERY regardless) and on `flush(force=True)`."""

    def __init__(self, directory: Path, source: str) -> None:
        self.path = directory / STATE_FILE
        old = self._read(self.path)
        self.data: dict[str, Any] = {  # the JSON record as written
            "updated": None, "source": source,
            "captured": _count(old.get("captured")), "dropped": _count(old.get("dropped")),
            "last_frame": old.get("last_frame") if isinstance(old.get("last_frame"), str) else None,
            "last_frame_at": old.get("last_frame_at") if isinstance(old.get("last_frame_at"), (int, float)) else None,
            "error": None,
            # the archive a one-pass replay has played to its end: a restart does not play it again
            "replayed": old.get("replayed") if isinstance(old.get("replayed"), str) else None,
        }
        self.dirty = True
        self.written = float("-inf")
        self.failed = False

    @staticmethod
    def _read(path: Path) -> dict:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def update(self, **changes: object) -> None:
        for key, value in changes.items():
            if self.data[key] != value:
                self.data[key] = value
                self.dirty = True

    def add(self, key: str, count: int = 1) -> None:
        if count:
            self.data[key] += count
            self.dirty = True

    def flush(self, force: bool = False) -> None:
        since = time.monotonic() - self.written
        if not force and not (self.dirty and since >= STATE_EVERY) and since < HEARTBEAT_EVERY:
            return
        self.data["updated"] = round(time.time(), 3)
        temp = self.path.with_name(f".{STATE_FILE}.tmp")
        try:
            temp.write_text(json.dumps(self.data, sort_keys=True) + "\n")
            os.chmod(temp, 0o644)
            os.replace(temp, self.path)
        except OSError as exc:
            if not self.failed:
                log(f"cannot write {self.path}: {exc.strerror or exc}")
            self.failed = True
        else:
            self.failed = False
            self.dirty = False
        self.written = time.monotonic()


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


class Backoff:
    """Delays between restarts: BACKOFF_MIN doubling to BACKOFF_MAX; a run that lasted BACKOFF_MAX resets it."""

    def __init__(self, low: float = BACKOFF_MIN, high: float = BACKOFF_MAX) -> None:
        self.low, self.high = low, high
        self.current = low

    def next(self, ran_for: float) -> float:
        if ran_for >= self.high:
            self.current = self.low
        delay = self.current
        self.current = min(self.current * 2, self.high)
        return delay


# --- sources ----------------------------------------------------------------------------------------------------


def replay_members(archive: str) -> list[str]:
    """The archive's JPEG members in name order (SourceError when unreadable or without one)."""
    try:
        with zipfile.ZipFile(archive) as zf:
            names = sorted(i.filename for i in zf.infolist()
                           if not i.is_dir() and i.filename.lower().endswith(JPEG_SUFFIXES))
    except (OSError, zipfile.BadZipFile) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise SourceError(f"replay archive {archive}: cannot read it ({reason})") from None
    if not names:
        raise SourceError(f"replay archive {archive}: holds no .jpg/.jpeg member")
    return names


def check_source(settings: Settings, ffmpeg: str) -> str:
    """What the source is, in words; SourceError when it is missing."""
    if settings.source == "replay":
        archive = str(settings.replay_archive)
        return f"replay archive {archive}: {len(replay_members(archive))} JPEG frames, replayed at {settings.fps} fps"
    binary = find_ffmpeg(ffmpeg)
    if binary is None:
        raise SourceError(f"ffmpeg ({ffmpeg}) is not installed or not on PATH: the {settings.source} source needs it")
    if settings.source == "v4l2":
        device = str(settings.device)
        try:
            mode = os.stat(device).st_mode
        except OSError as exc:
            raise SourceError(f"camera {device}: {exc.strerror} (unplugged?)") from None
        if not stat.S_ISCHR(mode):
            raise SourceError(f"camera {device}: not a character device")
        if not os.access(device, os.R_OK):
            raise SourceError(f"camera {device}: not readable by this user (add it to the video group)")
        return f"camera {device} through {binary} at {settings.fps} fps"
    return f"stream {settings.url} through {binary} at {settings.fps} fps"


def _usable_dir(path: Path) -> bool:
    """A writable directory, or one that can be created in a writable existing parent."""
    while not path.exists():
        if path.parent == path:
            return False
        path = path.parent
    return path.is_dir() and os.access(path, os.W_OK | os.X_OK)


# --- the service ------------------------------------------------------------------------------------------------


class Capture:
    def __init__(self, settings: Settings, ffmpeg: str = "ffmpeg", *, stall: float = STALL_SECONDS,
                 backoff: Backoff | None = None, clock: Callable[[], float] = time.time) -> None:
        self.settings, self.ffmpeg, self.stall, self.clock = settings, ffmpeg, stall, clock
        self.backoff = backoff or Backoff()
        self.spool = Spool(settings.spool, settings.budget_bytes)
        self.namer = Namer(settings.prefix, self.spool.exists)
        self.state = State(settings.state, settings.source)
        self.stopping = False
        self.deadline: float | None = None
        self.written = 0
        self.disk_full = False

    def stop(self, *_: object) -> None:
        self.stopping = True

    def done(self) -> bool:
        return self.stopping or (self.deadline is not None and time.monotonic() >= self.deadline)

    def sleep(self, seconds: float) -> None:
        """Sleep, waking for a stop and keeping the state's heartbeat."""
        end = time.monotonic() + seconds
        while not self.done() and (left := end - time.monotonic()) > 0:
            time.sleep(min(left, 0.1))
            self.state.flush()

    # one frame

    def store(self, data: bytes) -> bool:
        """Name and write one frame under the budget; False when it was dropped."""
        names = iter(lambda: self.namer.name(self.clock()), None)
        try:
            self.state.add("dropped", self.spool.make_room(len(data)))
            name, when = self.spool.write(data, names)
        except OSError as exc:
            self.state.add("dropped")
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
            problem = f"{'disk full: ' if full else ''}a frame was dropped ({exc.strerror or exc})"
            if not self.disk_full:
                log(f"{problem}; dropping frames until it can be written")
            self.disk_full = True
            self.state.update(error=problem)
            return False
        if self.disk_full:
            log("frames are written again")
            self.disk_full = False
        self.written += 1
        self.state.add("captured")
        self.state.update(last_frame=name, last_frame_at=when, error=None)
        return True

    # sources: each yields frames until done() or raises SourceError

    def replay(self) -> Generator[bytes, None, None]:
        """The archive's frames at fps: looped forever (replay_loop), else once, then idle until stopped (also
        across restarts: the state names the archive played)."""
        archive = str(self.settings.replay_archive)
        names = replay_members(archive)
        interval = 1.0 / self.settings.fps
        due = time.monotonic()
        try:
            with zipfile.ZipFile(archive) as zf:
                while True:
                    if not self.settings.replay_loop and self.state.data["replayed"] == archive:
                        while not self.done():
                            self.sleep(1.0)
                        return
                    for member in names:
                        data = zf.read(member)
                        self.sleep(due - time.monotonic())
                        if self.done():
                            return
                        yield data
                        due += interval
                        if time.monotonic() - due > 1.0:  # fell behind (slow disk): no burst to catch up
                            due = time.monotonic()
                    if not self.settings.replay_loop:
                        self.state.update(replayed=archive)
                        self.state.flush(force=True)
        except (OSError, zipfile.BadZipFile, KeyError) as exc:
            raise SourceError(f"replay archive {archive}: {getattr(exc, 'strerror', None) or exc}") from None

    def camera(self) -> Generator[bytes, None, None]:
        binary = find_ffmpeg(self.ffmpeg)
        if binary is None:
            raise SourceError(f"ffmpeg ({self.ffmpeg}) is not installed or not on PATH")
        argv = ffmpeg_argv(binary, self.settings)
        try:
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError as exc:
            raise SourceError(f"cannot start {binary}: {exc.strerror or exc}") from None
        said: collections.deque[str] = collections.deque(maxlen=5)
        reader = threading.Thread(target=_collect, args=(process.stderr, said), daemon=True)
        reader.start()
        splitter = MjpegSplitter()
        fd = process.stdout.fileno()  # type: ignore[union-attr]
        heard = time.monotonic()
        try:
            while not self.done():
                ready, _, _ = select.select([fd], [], [], 0.2)
                self.state.flush()
                if not ready:
                    if time.monotonic() - heard > self.stall:
                        raise SourceError(f"ffmpeg sent nothing for {self.stall:g} s ({_where(self.settings)})")
                    continue
                chunk = os.read(fd, READ_CHUNK)
                if not chunk:
                    break
                heard = time.monotonic()
                yield from splitter.feed(chunk)
            else:
                return
            status = process.wait()
            reader.join(2)
            last = said[-1] if said else "no message"
            raise SourceError(f"ffmpeg exited with status {status} ({_where(self.settings)}): {last}")
        finally:
            stop(process)
            reader.join(2)
            for stream in (process.stdout, process.stderr):
                if stream is not None:
                    stream.close()

    # the loop

    def run(self, frames: int | None = None, timeout: float | None = None) -> int:
        """Capture until stopped (or `frames` written, or `timeout` seconds passed); frames written."""
        self.deadline = None if timeout is None else time.monotonic() + timeout
        for directory in (self.settings.spool, self.settings.state):
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                log(f"cannot create {directory}: {exc.strerror or exc}")
        source = self.replay if self.settings.source == "replay" else self.camera
        log(f"capturing from {_where(self.settings)} at {self.settings.fps} fps into {self.settings.spool}")
        try:
            while not self.done():
                started = time.monotonic()
                stream = source()
                try:
                    for data in stream:
                        self.store(data)
                        self.state.flush()
                        if frames is not None and self.written >= frames:
                            return self.written
                    if self.done():
                        break
                    raise SourceError(f"{_where(self.settings)} ended")
                except SourceError as exc:
                    if self.done():  # ffmpeg got the same SIGTERM from systemd: not a failure
                        break
                    delay = self.backoff.next(time.monotonic() - started)
                    log(f"{exc}; restarting in {delay:g} s")
                    self.state.update(error=str(exc))
                    self.state.flush()
                    self.sleep(delay)
                finally:
                    stream.close()  # ends ffmpeg
            return self.written
        finally:
            self.state.flush(force=True)


def _where(settings: Settings) -> str:
    return {"v4l2": f"camera {settings.device}", "rtsp": f"stream {settings.url}",
            "replay": f"replay archive {settings.replay_archive}"}[settings.source]


def _collect(stream: object, lines: collections.deque[str]) -> None:
    """Keep ffmpeg's last stderr lines (for the one log line when it dies)."""
    for raw in iter(stream.readline, b""):  # type: ignore[attr-defined]
        text = raw.decode(errors="replace").strip()
        if text:
            lines.append(text)


# --- command line -----------------------------------------------------------------------------------------------


def report(result: str, message: str, code: int) -> int:
    print(json.dumps({"result": result, "message": message}), flush=True)
    if code:
        print(message, file=sys.stderr, flush=True)
    return code


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="capture.py", description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("run", "once", "check"))
    parser.add_argument("--config", default="/etc/circularnet/pipeline.json")
    parser.add_argument("--frames", type=int, help="once: how many frames to capture")
    parser.add_argument("--timeout", type=float, default=30.0, help="once: seconds to get them in")
    parser.add_argument("--ffmpeg", default="ffmpeg", help="the ffmpeg binary (a name on PATH or a path)")
    args = parser.parse_args(argv)
    if args.mode == "once" and (args.frames is None or args.frames < 1):
        parser.error("once needs --frames N (N at least 1)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    quiet = args.mode == "run"  # a service logs; check and once answer with a JSON line
    try:
        settings = load_settings(args.config)
        if args.mode != "run":
            for key, path in (("spool", settings.spool), ("state", settings.state)):
                if not _usable_dir(path):
                    raise SettingsError(f"{key}: {path} is not a directory this user can write")
    except SettingsError as exc:
        if quiet:
            log(f"bad settings: {exc}")
            return EXIT["settings"]
        return report("failed", f"bad settings: {exc}", EXIT["settings"])
    if args.mode != "run":
        try:
            what = check_source(settings, args.ffmpeg)
        except SourceError as exc:
            return report("failed", str(exc), EXIT["source"])
        if args.mode == "check":
            return report("ok", what, EXIT["ok"])
    capture = Capture(settings, args.ffmpeg)
    signal.signal(signal.SIGTERM, capture.stop)
    signal.signal(signal.SIGINT, capture.stop)
    if args.mode == "run":
        capture.run()
        log(f"stopped after {capture.written} frames")
        return EXIT["ok"]
    written = capture.run(frames=args.frames, timeout=args.timeout)
    if written >= args.frames:
        return report("ok", f"{written} frames written to {settings.spool} (last {capture.state.data['last_frame']})",
                      EXIT["ok"])
    problem = capture.state.data["error"] or "no error seen"
    return report("failed", f"{written} of {args.frames} frames in {args.timeout:g} s: {problem}", EXIT["failed"])


if __name__ == "__main__":
    sys.exit(main())
