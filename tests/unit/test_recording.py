"""The recording format (proto/recording.py), fed whole, byte by byte and truncated; the
playback stream a viewer replays; and the recorder writing a real file (mode, bounds)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from types import SimpleNamespace

import gevent
import pytest
from console_common.proto.recording import (CLIENT, NOTE, PLAYBACK_FRAME, SERVER, Decoder,
                                            PlaybackError, RecordingError, decode,
                                            encode_frame, encode_header, encode_note,
                                            playback_stream, split_handshake)
from console_common.proto.rfb.observer import RFBObserver
from console_common.sessions.recorder import Recorder, RecordingPolicy

PIXEL_FORMAT = bytes([32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0])
SERVER_INIT = b"\x02\x80\x01\xe0" + PIXEL_FORMAT + (4).to_bytes(4, "big") + b"vm-1"
HANDSHAKE_NONE = b"RFB 003.008\n" + b"\x01\x01" + b"\0\0\0\0" + SERVER_INIT
HANDSHAKE_VNCAUTH = b"RFB 003.008\n" + b"\x01\x02" + bytes(range(16)) + b"\0\0\0\0" + SERVER_INIT
UPDATE = b"\x00\x00\x00\x01" + bytes(12) + b"pixels"


def _file(handshake: bytes = HANDSHAKE_NONE, security: str = "None") -> bytes:
    header = encode_header({"session_id": "s1", "instance_uuid": "i-1", "rfb_version": "3.8",
                            "security_type": security, "width": 640, "height": 480})
    # the handshake's last bytes share a chunk with the first update, as on a real socket
    split = len(handshake) - 3
    return (header + encode_frame(SERVER, 0.0, handshake[:split])
            + encode_frame(CLIENT, 0.01, b"RFB 003.008\n")
            + encode_frame(SERVER, 0.02, handshake[split:] + UPDATE)
            + encode_frame(SERVER, 1.5, UPDATE)
            + encode_note(1.6, {"note": "end", "close_reason": "client_closed"}))


def test_whole_and_byte_by_byte_agree() -> None:
    data = _file()
    whole = decode(data)
    decoder = Decoder()
    frames = [f for i in range(len(data)) for f in decoder.feed(data[i:i + 1])]
    assert decoder.finish() is None and whole.damage is None
    assert frames == whole.frames
    assert [f.kind for f in frames] == [SERVER, CLIENT, SERVER, SERVER, NOTE]
    assert whole.header["format"] == "console-recording" and whole.header["version"] == 1
    assert whole.header["session_id"] == "s1"
    assert whole.notes == [{"note": "end", "close_reason": "client_closed"}]
    assert whole.duration == pytest.approx(1.6)


def test_truncated_file_decodes_to_its_last_whole_frame() -> None:
    data = _file()
    cut = len(data) - 20  # inside the end note
    rec = decode(data[:cut])
    assert [f.kind for f in rec.frames] == [SERVER, CLIENT, SERVER, SERVER]
    assert rec.damage is not None and rec.damage.startswith(f"truncated at byte {cut}")
    header_only = decode(data[:data.index(b"\n") + 1 + 5])
    assert header_only.frames == [] and "truncated" in (header_only.damage or "")


def test_garbage_frames_are_damage_and_bad_headers_are_refused() -> None:
    data = _file()
    first = data.index(b"\n") + 1
    broken = data[:first] + b"\x07" + data[first + 1:]
    rec = decode(broken)
    assert rec.frames == [] and rec.damage == f"bad frame at byte {first}"
    with pytest.raises(RecordingError):
        decode(b"")
    with pytest.raises(RecordingError):
        decode(b"not json\n")
    with pytest.raises(RecordingError):
        decode(json.dumps({"format": "console-recording", "version": 99}).encode() + b"\n")
    with pytest.raises(RecordingError):
        decode(b"x" * (70 * 1024))


def _playback_frames(stream: bytes) -> list[tuple[float, bytes]]:
    out, pos = [], 0
    while pos < len(stream):
        offset, size = PLAYBACK_FRAME.unpack_from(stream, pos)
        pos += PLAYBACK_FRAME.size
        out.append((offset, stream[pos:pos + size]))
        pos += size
    return out


@pytest.mark.parametrize(("handshake", "security"), [(HANDSHAKE_NONE, "None"),
                                                     (HANDSHAKE_VNCAUTH, "VncAuth")])
def test_playback_replaces_the_handshake_with_none(handshake: bytes, security: str) -> None:
    stream, duration = playback_stream(decode(_file(handshake, security)))
    frames = _playback_frames(stream)
    assert frames[0] == (0.0, HANDSHAKE_NONE)  # never a password challenge
    assert frames[1:] == [(0.02, UPDATE), (1.5, UPDATE)]
    assert duration == pytest.approx(1.6)


def test_playback_of_a_stream_recorded_after_the_handshake() -> None:
    header = encode_header({"session_id": "s", "width": 640, "height": 480,
                            "desktop_name": "vm-1", "rfb_version": "3.8"})
    data = header + encode_frame(SERVER, 0.5, UPDATE) + encode_frame(SERVER, 0.7, UPDATE)
    frames = _playback_frames(playback_stream(decode(data))[0])
    handshake = frames[0][1]
    assert handshake.startswith(HANDSHAKE_NONE[:18])  # version, None, OK
    assert handshake[18:22] == b"\x02\x80\x01\xe0" and handshake.endswith(b"vm-1")
    assert frames[1:] == [(0.5, UPDATE), (0.7, UPDATE)]


def test_playback_of_a_stream_recorded_from_the_server_init() -> None:
    header = encode_header({"session_id": "s", "width": 640, "height": 480,
                            "desktop_name": "vm-1", "rfb_version": "3.8"})
    data = (header + encode_frame(SERVER, 0.1, SERVER_INIT[:10])
            + encode_frame(SERVER, 0.2, SERVER_INIT[10:] + UPDATE))
    frames = _playback_frames(playback_stream(decode(data))[0])
    assert frames == [(0.0, HANDSHAKE_NONE), (0.2, UPDATE)]


def test_playback_refuses_what_it_cannot_follow() -> None:
    with pytest.raises(PlaybackError, match="security type"):
        split_handshake(HANDSHAKE_NONE, "3.8", "VeNCrypt")
    with pytest.raises(PlaybackError, match="before the desktop"):
        split_handshake(HANDSHAKE_NONE[:-3], "3.8", "None")
    assert split_handshake(b"RFB 003.003\n\0\0\0\x01" + SERVER_INIT, "3.3", "None") == \
        (SERVER_INIT, 16 + len(SERVER_INIT))


# --- the recorder, writing real files -------------------------------------------------

def _session(observer: RFBObserver | None = None) -> SimpleNamespace:
    return SimpleNamespace(started_at=1_700_000_000.0, instance_uuid="inst/../1",
                           session_id="abcd", observer=observer, kind="novnc",
                           client="127.0.0.1", token_id="t1",
                           context={"target": "127.0.0.1:5900"}, age=lambda: 0.25)


def test_recorder_writes_a_0600_file_with_header_frames_and_end(tmp_path) -> None:
    observer = RFBObserver()
    policy = RecordingPolicy(str(tmp_path / "rec"), record_input=False)
    policy.check()
    recorder = policy.open(_session(observer))
    assert recorder is not None
    assert os.path.basename(recorder.path) == "20231114T221320Z-inst_.._1-abcd.rec"
    for data, up in ((HANDSHAKE_NONE[:12], False), (b"RFB 003.008\n", True),
                     (HANDSHAKE_NONE[12:14], False), (b"\x01", True), (b"\0\0\0\0", False),
                     (b"\x01", True), (SERVER_INIT + UPDATE, False), (b"\x04\x01keys", True)):
        if up:
            observer.client_data(data)
            assert recorder.client_data(data) is False  # record_input off
        else:
            observer.server_data(data)
            assert recorder.server_data(data) is True
    recorder.close({"close_reason": "client_closed"})
    assert stat.S_IMODE(os.stat(recorder.path).st_mode) == 0o600
    rec = decode(Path(recorder.path).read_bytes())
    assert rec.damage is None
    assert rec.header["desktop_name"] == "vm-1" and rec.header["width"] == 640
    assert rec.header["rfb_version"] == "3.8" and rec.header["record_input"] is False
    assert {f.kind for f in rec.frames} == {SERVER, NOTE}
    assert rec.notes[-1] == {"note": "end", "close_reason": "client_closed"}
    assert _playback_frames(playback_stream(rec)[0])[1][1] == UPDATE


def test_recorder_stops_at_max_bytes_and_records_input_when_asked(tmp_path) -> None:
    policy = RecordingPolicy(str(tmp_path), record_input=True, max_bytes=1000)
    recorder = policy.open(_session())
    assert recorder is not None
    assert recorder.client_data(b"\x04\x01\0\0\0\0\0\x61") is True
    sent = 0
    while recorder.server_data(b"x" * 100):
        sent += 1
        gevent.sleep(0)
    assert sent == 8 and recorder.stopped == "limit"
    assert recorder.server_data(b"more") is False
    recorder.close({"close_reason": "client_closed"})
    rec = decode(Path(recorder.path).read_bytes())
    assert [n["note"] for n in rec.notes] == ["limit", "end"]
    assert sum(len(f.data) + 13 for f in rec.frames if f.kind != NOTE) <= 1000
    assert [f.data for f in rec.frames if f.kind == CLIENT] == [b"\x04\x01\0\0\0\0\0\x61"]


def test_recorder_batches_writes(tmp_path, monkeypatch) -> None:
    from console_common.sessions import recorder as module
    writes: list[int] = []
    real = module._write_all
    monkeypatch.setattr(module, "_write_all", lambda fd, chunks: (writes.append(len(chunks)),
                                                                   real(fd, chunks)))
    rec = RecordingPolicy(str(tmp_path)).open(_session())
    assert isinstance(rec, Recorder)
    for _ in range(2000):
        rec.server_data(b"y" * 64)
    rec.close({})
    assert len(writes) <= 2  # thousands of frames, one or two writes
    assert len(decode(Path(rec.path).read_bytes()).frames) == 2001


def test_unwritable_record_dir_is_one_log_line_not_a_crash(tmp_path) -> None:
    target = tmp_path / "file"
    target.write_text("")
    assert RecordingPolicy(str(target)).open(_session()) is None
    with pytest.raises(OSError):
        RecordingPolicy(str(target / "sub")).check()


def test_recorder_reuses_its_buffers_and_keeps_big_frames_whole(tmp_path) -> None:
    from console_common.sessions import recorder as module
    rec = RecordingPolicy(str(tmp_path)).open(_session())
    assert isinstance(rec, Recorder)
    chunks = [bytes([i]) * (256 * 1024) for i in range(40)]  # 10 MiB, more than BUFFERS hold
    for chunk in chunks:
        assert rec.server_data(chunk)
    big = b"B" * (module.BUFFER_BYTES + 5)
    assert rec.server_data(big)
    rec.close({})
    assert rec._buffers <= module.BUFFERS  # memory stayed bounded
    decoded = decode(Path(rec.path).read_bytes())
    assert decoded.damage is None
    assert [f.data for f in decoded.frames if f.kind == SERVER] == [*chunks, big]


# --- options and consolectl (no network) ----------------------------------------------

def test_record_options_and_novas_old_name(tmp_path) -> None:
    from console_common.runtime.config import RECORDING, load, parse, select
    ini = tmp_path / "nova.conf"
    ini.write_text("[DEFAULT]\nrecord = /var/lib/rec\nrecord_input = true\n")
    flags = tmp_path / "flags.conf"
    flags.write_text("--record=/srv/rec\n--record_max_bytes=1000\n")
    c = load(select(RECORDING), [str(ini)], environ={})
    assert (c.record_dir, c.record_input, c.record_max_bytes) == ("/var/lib/rec", True,
                                                                  512 * 1024 * 1024)
    c = load(select(RECORDING), [str(flags)], environ={})
    assert (c.record_dir, c.record_input, c.record_max_bytes) == ("/srv/rec", False, 1000)
    c, _ = parse("x", "x", RECORDING, ["--record", "/a"])
    assert c.record_dir == "/a"
    assert load(select(RECORDING), environ={"CONSOLE_RECORD_DIR": "/b"}).record_dir == "/b"
    assert load(select(RECORDING), environ={}).record_dir == ""  # off by default
    with pytest.raises(SystemExit):
        parse("x", "x", RECORDING, ["--record-max-bytes", "0"])


def _ctl(capsys, *argv: str) -> tuple[int, str, str]:
    from consoleauth.ctl.main import main
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_consolectl_recordings_refusals_are_one_line(tmp_path, capsys) -> None:
    code, _, err = _ctl(capsys, "recordings", "list")
    assert code == 2 and err.count("\n") == 1 and "record_dir is not set" in err
    code, out, _ = _ctl(capsys, "recordings", "list", "--record-dir", str(tmp_path), "--json")
    assert code == 0 and json.loads(out) == []
    code, _, err = _ctl(capsys, "recordings", "play", "nope", "--record-dir", str(tmp_path))
    assert code == 1 and "no recording 'nope'" in err
    junk = tmp_path / "junk.rec"
    junk.write_bytes(b"\x00garbage")
    code, _, err = _ctl(capsys, "recordings", "play", str(junk))
    assert code == 1 and "cannot play" in err and err.count("\n") == 1
    with pytest.raises(SystemExit) as usage:  # argparse's usage error, as every subcommand
        _ctl(capsys, "recordings", "list", "--since", "yesterday-ish")
    assert usage.value.code == 2 and "an age like 30m" in capsys.readouterr().err


def test_consolectl_lists_a_damaged_file_as_damaged(tmp_path, capsys) -> None:
    (tmp_path / "20260101T000000Z-i-1-s1.rec").write_bytes(_file()[:-20])
    (tmp_path / "20260101T000001Z-i-2-s2.rec").write_bytes(_file())
    (tmp_path / "not-a-recording.rec").write_bytes(b"hello\n")
    code, out, _ = _ctl(capsys, "recordings", "list", "--record-dir", str(tmp_path), "--json")
    rows = json.loads(out)
    assert code == 0 and [r["status"] for r in rows] == [
        f"damaged: truncated at byte {len(_file()) - 20}", "complete"]
    assert rows[1]["close_reason"] == "client_closed" and rows[1]["duration_s"] == 1.6


def test_a_full_disk_stops_the_recording_not_the_session() -> None:
    from structlog.testing import capture_logs
    fd = os.open("/dev/full", os.O_WRONLY)  # every write fails with ENOSPC
    rec = Recorder(fd, "/dev/full", lambda: {}, 1 << 40, record_input=False)
    with capture_logs() as logs:
        accepted = 0
        for _ in range(200):  # 50 MiB offered: far more than the buffers hold
            if not rec.server_data(b"z" * (256 * 1024)):
                break
            accepted += 1
            gevent.sleep(0)
        assert accepted < 200 and rec.active is False
        rec.close({"close_reason": "client_closed"})  # returns at once, nothing to wait for
    failed = [e for e in logs if e["event"] == "recording.failed"]
    assert len(failed) == 1 and "space" in failed[0]["error"].lower()


def test_a_disk_that_falls_behind_stops_the_recording_in_bounded_time(tmp_path,
                                                                      monkeypatch) -> None:
    import time as real_time

    from console_common.sessions import recorder as module
    from structlog.testing import capture_logs
    monkeypatch.setattr(module, "STALL_TIMEOUT", 0.2)
    monkeypatch.setattr(module, "CLOSE_TIMEOUT", 0.3)
    monkeypatch.setattr(module, "_write_all", lambda fd, data: real_time.sleep(0.5))
    rec = RecordingPolicy(str(tmp_path)).open(_session())
    assert rec is not None
    started = real_time.monotonic()
    with capture_logs() as logs:
        while rec.server_data(b"s" * (256 * 1024)):
            pass
        assert rec.stopped == "stalled"
        rec.close({})
    assert real_time.monotonic() - started < 3
    events = [e["event"] for e in logs]
    assert events.count("recording.stopped") == 1 and "recording.close_timeout" in events


# --- the session seam: SessionRegistry.run records what the relay hands over ----------

def test_a_registry_with_recording_records_each_session(tmp_path) -> None:
    from structlog.testing import capture_logs

    from console_common.sessions.runner import Session, SessionRegistry
    from tests.unit.test_relay import FakeStream
    registry = SessionRegistry()
    registry.recording = RecordingPolicy(str(tmp_path), record_input=True)
    session = Session(client="10.0.0.5", token="t" * 40, instance_uuid="inst-1",
                      target="127.0.0.1:5900", kind="novnc")
    client, target = FakeStream("client"), FakeStream("target")
    target.feed(HANDSHAKE_NONE[:14], b"\0\0\0\0", SERVER_INIT, UPDATE, b"")
    client.feed(b"RFB 003.008\n", b"\x01", b"\x01", KEY_A := b"\x04\x01\0\0\0\0\0\x61")
    gevent.spawn_later(0.2, client.feed, b"")
    with capture_logs() as logs:
        registry.run(session, client, target, drain=0.5)
    end = next(e for e in logs if e["event"] == "session.end")
    rec = decode(Path(end["recording"]).read_bytes())
    assert rec.header["session_id"] == session.session_id
    assert rec.header["desktop_name"] == "vm-1" and rec.header["client"] == "10.0.0.5"
    assert b"".join(f.data for f in rec.frames if f.kind == SERVER) == \
        HANDSHAKE_NONE[:14] + b"\0\0\0\0" + SERVER_INIT + UPDATE
    assert KEY_A in b"".join(f.data for f in rec.frames if f.kind == CLIENT)
    assert rec.notes[-1]["close_reason"] == end["close_reason"]
    assert session.recorder is not None and session.recorder._writer.dead


def test_a_stalled_handshake_still_gets_its_header_written(tmp_path, monkeypatch) -> None:
    from console_common.sessions import recorder as module
    monkeypatch.setattr(module, "HEADER_WAIT", 0.2)
    observer = RFBObserver()
    rec = RecordingPolicy(str(tmp_path)).open(_session(observer))
    assert rec is not None
    observer.server_data(HANDSHAKE_NONE[:12])  # the client never answers the version
    rec.server_data(HANDSHAKE_NONE[:12])
    gevent.sleep(1.0)
    partial = decode(Path(rec.path).read_bytes())  # written while the session is open
    assert partial.header["desktop_name"] is None and partial.damage is None
    assert [f.data for f in partial.frames] == [HANDSHAKE_NONE[:12]]
    rec.close({})


def test_files_are_served_only_from_under_their_folder(tmp_path) -> None:
    from console_common.runtime.novnc import file_under, find_novnc_dir
    root = tmp_path / "web"
    (root / "core").mkdir(parents=True)
    (root / "core" / "rfb.js").write_text("//")
    (root / ".hidden").write_text("x")
    (tmp_path / "secret").write_text("x")
    (root / "link").symlink_to(tmp_path / "secret")
    assert file_under(root, "core/rfb.js") == (root / "core" / "rfb.js").resolve()
    for bad in ("", "../secret", "core/../../secret", ".hidden", "core//rfb.js", "link",
                "core\\rfb.js", "core/rfb.js\x00", "core", "/etc/passwd"):
        assert file_under(root, bad) is None, bad
    assert find_novnc_dir(str(root)) == root.resolve()
    assert find_novnc_dir(str(tmp_path)) is None
