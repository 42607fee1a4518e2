"""The capture service (cnhost/capture.py): frame names (UTC, hundredths, no collisions), the MJPEG splitter on
real JPEG bytes in odd chunks, replay from a zip at its rate and looping, the spool budget, a full disk, the
state file and its cumulative counters, ffmpeg's command line, ffmpeg stand-ins that die or stall (frames
kept, restarts with backoff, the error in the state), `check` exit codes and SIGTERM."""

from __future__ import annotations

import errno
import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from cnhost import capture

SCRIPT = Path(capture.__file__)


# --- real JPEGs, made with the standard library ---------------------------------------------------------
# Baseline, 8 bits, one grey component, one 8x8 block per DC value, every AC coefficient zero. The spec's
# luminance DC Huffman table; an AC table holding only EOB. Large DC steps make runs of 1 bits, so the
# entropy-coded data holds FF bytes, stuffed as FF00. (Checked when written: libjpeg, through Pillow,
# decodes these to the expected grey levels.)


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def _codes(counts: tuple[int, ...], symbols: list[int]) -> dict[int, tuple[int, int]]:
    """Canonical Huffman codes (JPEG Annex C): symbol -> (code, length)."""
    codes, code, k = {}, 0, 0
    for length in range(1, 17):
        for _ in range(counts[length - 1]):
            codes[symbols[k]] = (code, length)
            code, k = code + 1, k + 1
        code <<= 1
    return codes


DC_COUNTS = (0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0)
AC_COUNTS = (1,) + (0,) * 15
DC, AC = _codes(DC_COUNTS, list(range(12))), _codes(AC_COUNTS, [0x00])


def jpeg(dcs: list[int], app: bytes = b"") -> bytes:
    bits: list[int] = []

    def put(code: int, length: int) -> None:
        bits.extend((code >> (length - 1 - i)) & 1 for i in range(length))

    previous = 0
    for dc in dcs:
        diff, previous = dc - previous, dc
        size = abs(diff).bit_length()
        put(*DC[size])
        if size:
            put(diff if diff > 0 else diff + (1 << size) - 1, size)
        put(*AC[0x00])
    bits.extend([1] * (-len(bits) % 8))
    raw = bytes(int("".join(map(str, bits[i:i + 8])), 2) for i in range(0, len(bits), 8))
    return (b"\xff\xd8" + _segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
            + (_segment(0xE1, app) if app else b"")
            + _segment(0xDB, b"\x00" + b"\x01" * 64)
            + _segment(0xC0, struct.pack(">BHHB", 8, 8, 8 * len(dcs), 1) + b"\x01\x11\x00")
            + _segment(0xC4, b"\x00" + bytes(DC_COUNTS) + bytes(range(12)))
            + _segment(0xC4, b"\x10" + bytes(AC_COUNTS) + b"\x00")
            + _segment(0xDA, b"\x01\x01\x00\x00\x3f\x00")
            + raw.replace(b"\xff", b"\xff\x00") + b"\xff\xd9")


STUFFED = jpeg([-1000, 1000, -1000, 1000, 0, 400])  # entropy data with FF00
TRICKY_APP = jpeg([1016, -1024, 1016], app=b"Exif\x00\x00\xff\xd9\xff\xd8 markers inside an APP1 segment")
PLAIN = jpeg([0])
FRAMES = [STUFFED, TRICKY_APP, PLAIN]


def test_the_test_jpegs_exercise_stuffing_and_markers_inside_an_app_segment() -> None:
    scan = STUFFED[STUFFED.index(b"\xff\xda"):]
    assert b"\xff\x00" in scan[:-2]
    assert TRICKY_APP.index(b"\xff\xd9") < TRICKY_APP.index(b"\xff\xda")  # an FFD9 well before the real EOI
    assert all(f.startswith(b"\xff\xd8\xff\xe0") and f.endswith(b"\xff\xd9") for f in FRAMES)


# --- helpers ---------------------------------------------------------------------------------------------


def write_config(tmp_path: Path, capture_section: dict[str, Any] | None = None, **top: Any) -> Path:
    section: dict[str, Any] | None = {
        "source": "replay", "device": "/dev/video0", "url": None, "replay_archive": str(tmp_path / "replay.zip"),
        "fps": 20, "prefix": "belt1", "spool_budget_mib": 64, "replay_loop": True, **(capture_section or {}),
    }
    if capture_section is not None and capture_section.get("__none__"):
        section = None
    data = {"host": "belt-1-orin", "generation": "tf", "spool": str(tmp_path / "frames"),
            "work": str(tmp_path / "work"), "queue": str(tmp_path / "queue"), "state": str(tmp_path / "state"),
            "capture": section, **top}
    for key in ("spool", "state"):
        Path(data[key]).mkdir(parents=True, exist_ok=True)
    path = tmp_path / "pipeline.json"
    path.write_text(json.dumps(data))
    return path


def replay_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def script(*argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *argv], capture_output=True, text=True, timeout=timeout,
                          check=False)


def call(capsys: pytest.CaptureFixture[str], *argv: str) -> subprocess.CompletedProcess[str]:
    """`check`, or a mode refused before it captures anything, run in this process (faster than a child)."""
    capsys.readouterr()
    code = capture.main(list(argv))
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(argv, code, out, err)


def answer(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout + result.stderr
    return json.loads(lines[0])


def frames_in(spool: Path) -> list[Path]:
    return sorted(p for p in spool.iterdir() if not p.name.startswith("."))


def state_of(tmp_path: Path) -> dict[str, Any]:
    return json.loads((tmp_path / "state" / "capture.json").read_text())


def stem_centis(name: str) -> int:
    """Hundredths since midnight in a frame name (the tests' frames are seconds apart, never days)."""
    hhmmssxx = name.rsplit("_", 1)[1].split(".")[0]
    h, m, s, xx = (int(hhmmssxx[i:i + 2]) for i in range(0, 8, 2))
    return ((h * 60 + m) * 60 + s) * 100 + xx


# --- names -----------------------------------------------------------------------------------------------


def test_a_frame_is_named_by_its_utc_time_to_the_hundredth_whatever_the_local_zone(monkeypatch) -> None:
    monkeypatch.setenv("TZ", "America/Los_Angeles")
    time.tzset()
    try:
        at = 1772600767.89  # 2026-03-04 05:06:07.89 UTC (the day before, in Los Angeles)
        assert capture.frame_name("belt1", int(at * 100)) == "belt1_20260304_05060789.jpg"
        name, when = capture.Namer("belt1", lambda _: False).name(at)
        assert (name, when) == ("belt1_20260304_05060789.jpg", 1772600767.89)
        assert capture.FRAME.match(name)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_frames_in_the_same_hundredth_take_the_next_free_one_and_never_an_existing_name() -> None:
    existing = {"belt1_20260304_05060791.jpg"}
    namer = capture.Namer("belt1", existing.__contains__)
    at = 1772600767.899
    names = [namer.name(at)[0] for _ in range(4)]
    assert names == ["belt1_20260304_05060789.jpg", "belt1_20260304_05060790.jpg",  # 91 exists on disk
                     "belt1_20260304_05060792.jpg", "belt1_20260304_05060793.jpg"]
    # across a second and a day: 23:59:59.99 twice
    namer = capture.Namer("belt1", lambda _: False)
    midnight = 1772668800  # 2026-03-05 00:00:00 UTC
    assert [namer.name(midnight - 0.001)[0] for _ in range(2)] == ["belt1_20260304_23595999.jpg",
                                                                   "belt1_20260305_00000000.jpg"]
    # a clock a little behind keeps the order; one stepped back for real (NTP) is believed
    assert namer.name(midnight - 1.5)[0] == "belt1_20260305_00000001.jpg"
    assert namer.name(midnight - 60)[0] == "belt1_20260304_23590000.jpg"


def test_a_name_another_process_took_meanwhile_is_not_overwritten(tmp_path: Path) -> None:
    at = 1772600767.89
    service = capture.Capture(capture.load_settings(write_config(tmp_path)), clock=lambda: at)
    service.namer.exists = lambda _: False  # the look found it free; another `once` wrote it just after
    theirs = tmp_path / "frames" / "belt1_20260304_05060789.jpg"
    theirs.write_bytes(STUFFED)
    assert service.store(PLAIN) and service.store(TRICKY_APP)
    assert theirs.read_bytes() == STUFFED
    assert [(p.name, p.read_bytes()) for p in frames_in(tmp_path / "frames")] == [
        ("belt1_20260304_05060789.jpg", STUFFED), ("belt1_20260304_05060790.jpg", PLAIN),
        ("belt1_20260304_05060791.jpg", TRICKY_APP)]
    assert service.state.data["last_frame"] == "belt1_20260304_05060791.jpg"
    assert service.state.data["last_frame_at"] == 1772600767.91


def test_on_a_filesystem_without_hard_links_frames_are_renamed_into_place(tmp_path: Path, monkeypatch) -> None:
    def no_links(*_: Any) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(capture.os, "link", no_links)  # vfat/exFAT spool media
    service = capture.Capture(capture.load_settings(write_config(tmp_path)), clock=lambda: 1772600767.89)
    service.namer.exists = lambda _: False
    (tmp_path / "frames" / "belt1_20260304_05060789.jpg").write_bytes(STUFFED)
    assert service.store(PLAIN)
    assert [(p.name, p.read_bytes()) for p in (tmp_path / "frames").iterdir() if p.name.endswith("90.jpg")] == [
        ("belt1_20260304_05060790.jpg", PLAIN)]
    assert len(list((tmp_path / "frames").iterdir())) == 2 and not service.state.data["error"]


# --- the MJPEG stream ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 13, 64, 4096, 1 << 20])
def test_the_splitter_returns_whole_jpegs_whatever_the_chunk_boundaries(chunk: int) -> None:
    stream = b"\x00\xff\x12noise before the first frame" + b"".join(FRAMES * 3)
    splitter = capture.MjpegSplitter()
    got = []
    for i in range(0, len(stream), chunk):
        got += splitter.feed(stream[i:i + chunk])
    assert got == FRAMES * 3
    assert splitter.discarded == 0 and bytes(splitter.buf) == b""


@pytest.mark.parametrize("where", ["entropy-coded data", "a header segment"])
def test_a_frame_cut_short_is_discarded_and_the_next_one_found(where: str) -> None:
    scan = STUFFED.index(b"\xff\xda") + 10
    cut = STUFFED[: scan + 5] if where == "entropy-coded data" else STUFFED[:40]  # 40: inside the DQT
    splitter = capture.MjpegSplitter()
    got = []
    for piece in (cut, TRICKY_APP[:5], TRICKY_APP[5:], PLAIN, PLAIN):
        got += splitter.feed(piece)
    assert got == [TRICKY_APP, PLAIN, PLAIN]
    assert splitter.discarded >= 1


def test_a_stream_without_an_end_is_dropped_at_the_size_limit_and_the_splitter_recovers() -> None:
    splitter = capture.MjpegSplitter(max_frame=1000)
    assert splitter.feed(STUFFED[:-2] + b"\x00" * 2000) == []  # an SOS that never ends
    assert splitter.discarded == 1 and len(splitter.buf) == 0
    assert splitter.feed(PLAIN) == [PLAIN]


# --- ffmpeg's command line --------------------------------------------------------------------------------------


def test_ffmpeg_reads_a_v4l2_camera_at_the_fleet_rate_and_writes_mjpeg_to_stdout(tmp_path: Path) -> None:
    settings = capture.load_settings(write_config(tmp_path, {"source": "v4l2", "device": "/dev/video2", "fps": 25}))
    assert capture.ffmpeg_argv("/usr/bin/ffmpeg", settings) == [
        "/usr/bin/ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error",
        "-f", "v4l2", "-framerate", "25", "-i", "/dev/video2",
        "-an", "-f", "image2pipe", "-c:v", "mjpeg", "-q:v", "3", "-r", "25", "-"]


def test_ffmpeg_reads_an_rtsp_stream_over_tcp(tmp_path: Path) -> None:
    settings = capture.load_settings(write_config(tmp_path, {"source": "rtsp", "url": "rtsp://10.0.0.7:554/belt"}))
    assert capture.ffmpeg_argv("ffmpeg", settings) == [
        "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error",
        "-rtsp_transport", "tcp", "-i", "rtsp://10.0.0.7:554/belt",
        "-an", "-f", "image2pipe", "-c:v", "mjpeg", "-q:v", "3", "-r", "20", "-"]


# --- replay, state, spool -----------------------------------------------------------------------------------------


def test_replay_writes_the_archives_jpegs_in_name_order_at_the_rate_and_loops(tmp_path: Path) -> None:
    replay_zip(tmp_path / "replay.zip", {"frame-002.jpeg": PLAIN, "notes.txt": b"not a frame",
                                         "frame-000.jpg": STUFFED, "frame-001.JPG": TRICKY_APP})
    config = write_config(tmp_path, {"fps": 20, "replay_loop": True})
    started = time.monotonic()
    result = script("once", "--config", str(config), "--frames", "7")
    elapsed = time.monotonic() - started
    assert (result.returncode, answer(result)["result"]) == (0, "ok"), result.stderr
    frames = frames_in(tmp_path / "frames")
    assert [f.read_bytes() for f in frames] == [STUFFED, TRICKY_APP, PLAIN] * 2 + [STUFFED]
    assert all(capture.FRAME.match(f.name) and f.name.startswith("belt1_") for f in frames)
    assert {f.stat().st_mode & 0o777 for f in frames} == {0o640}
    span = stem_centis(frames[-1].name) - stem_centis(frames[0].name)
    assert 25 <= span <= 100, [f.name for f in frames]  # 6 intervals of 1/20 s: 30 hundredths
    assert elapsed < 10
    assert not [p for p in (tmp_path / "frames").iterdir() if p.name.startswith(".")]


def test_a_replay_without_loop_plays_the_archive_once_even_across_restarts(tmp_path: Path) -> None:
    replay_zip(tmp_path / "replay.zip", {"a.jpg": PLAIN, "b.jpg": STUFFED})
    config = write_config(tmp_path, {"fps": 50, "replay_loop": False})
    first = script("once", "--config", str(config), "--frames", "5", "--timeout", "2")
    assert first.returncode == 1  # two frames, then the replay idles: fewer than asked for
    assert [f.read_bytes() for f in frames_in(tmp_path / "frames")] == [PLAIN, STUFFED]
    assert state_of(tmp_path)["replayed"] == str(tmp_path / "replay.zip")
    again = script("once", "--config", str(config), "--frames", "1", "--timeout", "1")
    assert again.returncode == 1 and len(frames_in(tmp_path / "frames")) == 2  # a restart does not play it again


def test_the_state_file_carries_the_counters_over_from_the_last_run(tmp_path: Path) -> None:
    replay_zip(tmp_path / "replay.zip", {"a.jpg": PLAIN})
    config = write_config(tmp_path, {"fps": 50})
    (tmp_path / "state" / "capture.json").write_text(json.dumps(
        {"updated": 1, "source": "v4l2", "captured": 5, "dropped": 2, "last_frame": "x", "last_frame_at": 1,
         "error": "old error"}))
    before = time.time()
    assert script("once", "--config", str(config), "--frames", "3").returncode == 0
    state = state_of(tmp_path)
    newest = frames_in(tmp_path / "frames")[-1]
    assert state["captured"] == 8 and state["dropped"] == 2
    assert (state["source"], state["error"], state["last_frame"]) == ("replay", None, newest.name)
    assert before - 1 <= state["last_frame_at"] <= state["updated"] <= time.time() + 1
    assert set(state) == {"updated", "source", "captured", "dropped", "last_frame", "last_frame_at", "error", "replayed"}
    assert (tmp_path / "state" / "capture.json").stat().st_mode & 0o777 == 0o644
    assert [p.name for p in (tmp_path / "state").iterdir()] == ["capture.json"]


def _service(tmp_path: Path, **capture_section: Any) -> capture.Capture:
    return capture.Capture(capture.load_settings(write_config(tmp_path, capture_section)))


def test_over_budget_the_oldest_frames_are_deleted_first_and_counted(tmp_path: Path) -> None:
    service = _service(tmp_path, spool_budget_mib=1)
    spool = tmp_path / "frames"
    kib = 1024
    for name in ("belt1_20260304_05060700.jpg", "belt1_20260304_05060600.jpg", "belt1_20260304_05060800.jpg"):
        (spool / name).write_bytes(b"\xff" * 400 * kib)  # 1200 KiB: over the 1 MiB budget
    (spool / "README").write_text("not a frame: never deleted")
    (spool / ".belt1_20260304_05060500.jpg.tmp").write_bytes(b"someone's temp file")
    assert service.store(b"\xff\xd8" + b"\x00" * 100 * kib)  # needs 100 KiB: 1300 > 1024, one frame goes
    names = sorted(p.name for p in spool.iterdir())
    assert "belt1_20260304_05060600.jpg" not in names  # the oldest by its name, not by listing order
    assert {"belt1_20260304_05060700.jpg", "belt1_20260304_05060800.jpg", "README"} <= set(names)
    service.state.flush(force=True)
    assert (state_of(tmp_path)["dropped"], state_of(tmp_path)["captured"]) == (1, 1)
    # the pipeline took the frames meanwhile: nothing more is dropped
    for name in ("belt1_20260304_05060700.jpg", "belt1_20260304_05060800.jpg"):
        (spool / name).unlink()
    for _ in range(5):
        assert service.store(b"\xff\xd8" + b"\x00" * 150 * kib)
    assert service.state.data["dropped"] == 1
    total = sum(p.stat().st_size for p in spool.iterdir() if capture.FRAME.match(p.name))
    assert total <= 1 << 20


def test_a_full_disk_drops_the_frame_counts_it_and_capture_goes_on(tmp_path: Path, monkeypatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    service = _service(tmp_path)
    real = capture._write_file
    calls = {"n": 0}

    def full_once(path: Path, data: bytes) -> None:
        calls["n"] += 1
        if calls["n"] <= 2:
            path.write_bytes(data[:10])  # a partial temp file, as a real ENOSPC leaves
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, data)

    monkeypatch.setattr(capture, "_write_file", full_once)
    assert not service.store(PLAIN) and not service.store(PLAIN)
    assert list((tmp_path / "frames").iterdir()) == []  # no temp file left behind
    assert service.state.data["dropped"] == 2 and "disk full" in service.state.data["error"]
    assert capsys.readouterr().err.count("disk full") == 1  # logged once, not per frame
    assert service.store(PLAIN)
    assert (service.state.data["captured"], service.state.data["error"]) == (1, None)
    assert len(frames_in(tmp_path / "frames")) == 1


def test_sigterm_during_a_run_finishes_writes_the_state_and_exits_0(tmp_path: Path) -> None:
    replay_zip(tmp_path / "replay.zip", {"a.jpg": STUFFED, "b.jpg": PLAIN})
    config = write_config(tmp_path, {"fps": 50})
    process = subprocess.Popen([sys.executable, str(SCRIPT), "run", "--config", str(config)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while len(frames_in(tmp_path / "frames")) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=10)
    finally:
        process.kill()
    assert process.returncode == 0, err
    frames = frames_in(tmp_path / "frames")
    state = state_of(tmp_path)
    assert state["captured"] == len(frames) >= 5
    assert state["last_frame"] == frames[-1].name and state["error"] is None
    assert not [p for p in (tmp_path / "frames").iterdir() if p.name.startswith(".")]
    assert "stopped after" in err


# --- ffmpeg stand-ins ----------------------------------------------------------------------------------------------


def stand_in(tmp_path: Path, frames: list[bytes], message: str, status: int = 1, linger: float = 0) -> Path:
    """An 'ffmpeg' that records its argv, writes `frames` to stdout in odd chunks, says `message` on stderr,
    waits `linger` seconds and exits with `status`."""
    (tmp_path / "stream.mjpeg").write_bytes(b"".join(frames))
    path = tmp_path / "ffmpeg"
    path.write_text(f"""#!{sys.executable}
import json, sys, time
with open({str(tmp_path / "argv.jsonl")!r}, "a") as log:
    log.write(json.dumps(sys.argv) + "\\n")
data = open({str(tmp_path / "stream.mjpeg")!r}, "rb").read()
for i in range(0, len(data), 777):
    sys.stdout.buffer.write(data[i:i + 777])
    sys.stdout.buffer.flush()
print({message!r}, file=sys.stderr, flush=True)
time.sleep({linger})
sys.exit({status})
""")
    path.chmod(0o755)
    return path


def test_frames_from_ffmpeg_are_written_and_ffmpeg_is_restarted_after_it_dies(tmp_path: Path) -> None:
    ffmpeg = stand_in(tmp_path, [STUFFED, TRICKY_APP], "[video4linux2] /dev/video0: No such device")
    config = write_config(tmp_path, {"source": "v4l2", "device": "/dev/null", "fps": 15})
    started = time.monotonic()
    result = script("once", "--config", str(config), "--frames", "4", "--ffmpeg", str(ffmpeg))
    assert (result.returncode, answer(result)["result"]) == (0, "ok"), result.stderr
    assert time.monotonic() - started >= 1.0  # the restart waited its backoff
    assert [f.read_bytes() for f in frames_in(tmp_path / "frames")] == [STUFFED, TRICKY_APP] * 2
    runs = [json.loads(line) for line in (tmp_path / "argv.jsonl").read_text().splitlines()]
    settings = capture.load_settings(config)
    assert runs == [capture.ffmpeg_argv(str(ffmpeg), settings)] * 2
    assert ("ffmpeg exited with status 1 (camera /dev/null): [video4linux2] /dev/video0: No such device; "
            "restarting in 1 s") in result.stderr
    assert state_of(tmp_path)["error"] is None  # frames flow again


def test_an_ffmpeg_that_keeps_failing_is_retried_with_growing_delays_and_the_error_is_in_the_state(
        tmp_path: Path) -> None:
    ffmpeg = stand_in(tmp_path, [], "rtsp://10.0.0.7:554/belt: Connection refused")
    config = write_config(tmp_path, {"source": "rtsp", "url": "rtsp://10.0.0.7:554/belt"})
    process = subprocess.Popen([sys.executable, str(SCRIPT), "run", "--config", str(config), "--ffmpeg", str(ffmpeg)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            argv = tmp_path / "argv.jsonl"
            if argv.exists() and len(argv.read_text().splitlines()) >= 2:
                break
            time.sleep(0.05)
        time.sleep(0.3)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=10)
    finally:
        process.kill()
    assert process.returncode == 0, err
    delays = [line.rsplit("restarting in ", 1)[1] for line in err.splitlines() if "restarting in" in line]
    assert delays == ["1 s", "2 s"], err
    assert "Connection refused" in state_of(tmp_path)["error"]
    assert state_of(tmp_path)["captured"] == 0


def test_an_ffmpeg_that_goes_silent_is_ended_and_started_again(tmp_path: Path) -> None:
    ffmpeg = stand_in(tmp_path, [PLAIN], "", status=0, linger=60)
    settings = capture.load_settings(write_config(tmp_path, {"source": "v4l2", "device": "/dev/null"}))
    service = capture.Capture(settings, str(ffmpeg), stall=0.5, backoff=capture.Backoff(0.1, 0.4))
    started = time.monotonic()
    assert service.run(frames=2, timeout=10) == 2
    assert time.monotonic() - started < 5  # the lingering stand-in was ended, not waited for
    assert len((tmp_path / "argv.jsonl").read_text().splitlines()) == 2


def test_backoff_doubles_to_its_ceiling_and_starts_over_after_a_long_run() -> None:
    backoff = capture.Backoff()
    assert [backoff.next(0.1) for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert backoff.next(45) == 1 and backoff.next(0) == 2


# --- check and bad settings -----------------------------------------------------------------------------------------


def test_check_accepts_a_readable_archive_with_a_jpeg(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    replay_zip(tmp_path / "replay.zip", {"a.jpg": PLAIN, "b.txt": b""})
    result = call(capsys, "check", "--config", str(write_config(tmp_path)))
    assert result.returncode == 0
    assert answer(result) == {"result": "ok", "message": f"replay archive {tmp_path / 'replay.zip'}: 1 JPEG frames, "
                                                         "replayed at 20 fps"}
    assert list((tmp_path / "frames").iterdir()) == []  # check changes nothing


@pytest.mark.parametrize(("section", "ffmpeg", "expected"), [
    ({}, None, "cannot read it"),  # no archive
    ({"__archive__": {"notes.txt": b"x"}}, None, "holds no .jpg/.jpeg member"),
    ({"__archive__": b"not a zip"}, None, "cannot read it"),
    ({"source": "v4l2", "device": "/dev/video-nonexistent"}, "stand-in", "No such file or directory"),
    ({"source": "v4l2", "device": "/dev/null"}, "/nonexistent/ffmpeg", "is not installed"),
    ({"source": "rtsp", "url": "rtsp://cam/belt"}, "no-such-ffmpeg-binary", "is not installed"),
])
def test_check_exits_3_when_the_source_is_missing(tmp_path: Path, section: dict[str, Any], ffmpeg: str | None,
                                                   expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    archive = section.pop("__archive__", None)
    if isinstance(archive, dict):
        replay_zip(tmp_path / "replay.zip", archive)
    elif archive is not None:
        (tmp_path / "replay.zip").write_bytes(archive)
    if ffmpeg == "stand-in":
        ffmpeg = str(stand_in(tmp_path, [], ""))
    extra = ["--ffmpeg", ffmpeg] if ffmpeg else []
    result = call(capsys, "check", "--config", str(write_config(tmp_path, section)), *extra)
    out = answer(result)
    assert (result.returncode, out["result"]) == (3, "failed")
    assert expected in out["message"], out


def test_check_of_a_camera_source_needs_the_device_and_ffmpeg(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    ffmpeg = stand_in(tmp_path, [], "")
    for section in ({"source": "v4l2", "device": "/dev/null"}, {"source": "rtsp", "url": "rtsp://cam/belt"}):
        result = call(capsys, "check", "--config", str(write_config(tmp_path, section)), "--ffmpeg", str(ffmpeg))
        assert (result.returncode, answer(result)["result"]) == (0, "ok"), result.stdout
    assert not (tmp_path / "argv.jsonl").exists()  # check never starts ffmpeg


@pytest.mark.parametrize(("section", "top", "key"), [
    ({"fps": 0}, {}, "capture.fps"),
    ({"fps": "30"}, {}, "capture.fps"),
    ({"fps": True}, {}, "capture.fps"),
    ({"source": "usb"}, {}, "capture.source"),
    ({"prefix": "belt_1"}, {}, "capture.prefix"),
    ({"spool_budget_mib": 0}, {}, "capture.spool_budget_mib"),
    ({"replay_archive": "relative.zip"}, {}, "capture.replay_archive"),
    ({"source": "v4l2", "device": None}, {}, "capture.device"),
    ({"source": "rtsp", "url": "http://cam/belt"}, {}, "capture.url"),
    ({"__none__": True}, {}, "capture"),
    ({}, {"spool": "frames"}, "spool"),
    ({}, {"state": None}, "state"),
])
def test_bad_settings_exit_2_naming_the_key(tmp_path: Path, section: dict[str, Any], top: dict[str, Any],
                                            key: str, capsys: pytest.CaptureFixture[str]) -> None:
    replay_zip(tmp_path / "replay.zip", {"a.jpg": PLAIN})
    config = tmp_path / "pipeline.json"
    write_config(tmp_path, section)
    data = json.loads(config.read_text())
    data.update(top)
    config.write_text(json.dumps(data))
    for mode in ("check", "once"):
        result = call(capsys, mode, "--config", str(config), "--frames", "1")
        out = answer(result)
        assert (result.returncode, out["result"]) == (2, "failed")
        assert out["message"].startswith(f"bad settings: {key}: "), out
    result = call(capsys, "run", "--config", str(config))  # a service: its journal says it
    assert result.returncode == 2 and f"bad settings: {key}: " in result.stderr and result.stdout == ""


def test_the_service_refuses_bad_settings_with_exit_2_before_it_starts(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"fps": 0})
    result = script("run", "--config", str(config))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == "capture: bad settings: capture.fps: 0 is not a whole number from 1 to 240\n"
    assert list((tmp_path / "frames").iterdir()) == [] and list((tmp_path / "state").iterdir()) == []


def test_an_unreadable_or_broken_settings_file_exits_2_naming_the_file(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.json"
    result = call(capsys, "check", "--config", str(missing))
    assert result.returncode == 2 and str(missing) in answer(result)["message"]
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    result = call(capsys, "check", "--config", str(broken))
    assert result.returncode == 2 and "not JSON" in answer(result)["message"]


def test_once_that_gets_too_few_frames_in_time_exits_1_with_the_error(tmp_path: Path) -> None:
    ffmpeg = stand_in(tmp_path, [], "cannot open /dev/null: Inappropriate ioctl for device")
    config = write_config(tmp_path, {"source": "v4l2", "device": "/dev/null"})
    result = script("once", "--config", str(config), "--frames", "1", "--timeout", "0.5", "--ffmpeg", str(ffmpeg))
    out = answer(result)
    assert (result.returncode, out["result"]) == (1, "failed")
    assert out["message"].startswith("0 of 1 frames in 0.5 s: ffmpeg exited with status 1") and "ioctl" in out["message"]


def test_the_script_is_standard_library_only() -> None:
    tree = io.StringIO(SCRIPT.read_text())
    imports = {line.split()[1].split(".")[0] for line in tree if line.startswith(("import ", "from "))}
    # and the host programs' own package, itself standard library only
    assert imports <= set(sys.stdlib_module_names) | {"__future__", "cnhost"}, imports
    assert os.access(SCRIPT, os.X_OK)
