"""Record RFB fixtures from real VNC servers (TigerVNC Xvnc and QEMU) for the unit tests.

Starts each server on 127.0.0.1, connects with a small blocking socket client driven by
``RFBClientConnection``, asks for one full non-incremental update (Raw only, BGRX32) and
writes the raw bytes of each direction, up to the end of that first update, to
``tests/fixtures/rfb/<name>.server.bin`` / ``<name>.client.bin`` plus ``<name>.json``
(server, password, challenge, handshake sizes, expected ServerInit).

    uv run python tests/tools/record_rfb.py [--out tests/fixtures/rfb] [--only xvnc-none]

Needs Debian's tigervnc-standalone-server, tigervnc-tools and qemu-system-x86.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from console_common.proto.rfb import (
    BGRX32,
    ENCODING_RAW,
    NEED_DATA,
    SECURITY_VNC_AUTH,
    AuthResult,
    ConnectionClosed,
    FramebufferUpdate,
    FramebufferUpdateRequest,
    RFBClientConnection,
    SecurityTypes,
    ServerInit,
    SetEncodings,
    SetPixelFormat,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "rfb"
PASSWORD = b"fixture1"
DESKTOP = "rfb-fixture"
TIMEOUT = 15.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_display(start: int = 40) -> int:
    for n in range(start, start + 200):
        if not Path(f"/tmp/.X{n}-lock").exists() and not Path(f"/tmp/.X11-unix/X{n}").exists():
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", 5900 + n)) != 0:
                    return n
    raise RuntimeError("no free X display number")


def wait_for_port(port: int, proc: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port}")


@contextlib.contextmanager
def running(argv: list[str], port: int) -> Iterator[None]:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port(port, proc, time.monotonic() + TIMEOUT)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def record(port: int, password: bytes | None) -> dict:
    """Handshake, SetPixelFormat/SetEncodings/one full update request, first update."""
    conn = RFBClientConnection(password=password)
    sent, received = bytearray(), bytearray()
    meta: dict = {"password": password.decode() if password else None}
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:

        def send(data: bytes) -> None:
            if data:
                sock.sendall(data)
                sent.extend(data)

        update = None
        while update is None:
            data = sock.recv(65536)
            received += data
            conn.receive_data(data)
            while (event := conn.next_event()) is not NEED_DATA:
                if isinstance(event, SecurityTypes):
                    meta["security_types"] = list(event.types)
                elif isinstance(event, AuthResult) and not event.ok:
                    raise RuntimeError(f"authentication refused: {event.reason}")
                elif isinstance(event, ServerInit):
                    send(conn.data_to_send())
                    trailing = len(conn.trailing_data[0])
                    meta["handshake_server_bytes"] = len(received) - trailing
                    meta["handshake_client_bytes"] = len(sent)
                    meta["server_init"] = {
                        "width": event.width,
                        "height": event.height,
                        "name": event.name,
                        "bits_per_pixel": event.pixel_format.bits_per_pixel,
                    }
                    send(conn.send(SetPixelFormat(BGRX32)))
                    send(conn.send(SetEncodings((ENCODING_RAW,))))
                    request = FramebufferUpdateRequest(False, 0, 0, event.width, event.height)
                    send(conn.send(request))
                elif isinstance(event, FramebufferUpdate):
                    update = event
                    break
                elif isinstance(event, ConnectionClosed):
                    raise RuntimeError("server closed the connection")
            send(conn.data_to_send())
            if not data and update is None:
                raise RuntimeError("server closed the connection")
    trailing = len(conn.trailing_data[0])
    meta["version"] = list(conn.version or ())
    meta["security_type"] = conn.security_type
    meta["update_rects"] = [[r.x, r.y, r.width, r.height, r.encoding] for r in update.rects]
    return {"server": bytes(received[: len(received) - trailing]), "client": bytes(sent), **meta}


def challenge_of(server_bytes: bytes, meta: dict) -> str | None:
    if meta["security_type"] != SECURITY_VNC_AUTH:
        return None
    offset = 12 + (4 if meta["version"] == [3, 3] else 1 + len(meta["security_types"]))
    return server_bytes[offset : offset + 16].hex()


def save(name: str, out: Path, rec: dict, server: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    server_bytes, client_bytes = rec.pop("server"), rec.pop("client")
    (out / f"{name}.server.bin").write_bytes(server_bytes)
    (out / f"{name}.client.bin").write_bytes(client_bytes)
    rec["challenge"] = challenge_of(server_bytes, rec)
    rec["recorded_from"] = server
    (out / f"{name}.json").write_text(json.dumps(rec, indent=2, sort_keys=True) + "\n")
    print(f"{name}: {len(server_bytes)} server bytes, {len(client_bytes)} client bytes")


def tool_version(argv: list[str]) -> str:
    done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=10)
    text = (done.stdout + done.stderr).strip().splitlines()
    return next((line for line in text if line.strip()), "unknown")


def record_xvnc(name: str, out: Path, password: bytes | None) -> None:
    display, port = free_display(), free_port()
    argv = ["Xvnc", f":{display}", "-geometry", "320x240", "-depth", "24", "-rfbport", str(port)]
    argv += ["-localhost", "-desktop", DESKTOP, "-nolisten", "tcp"]
    with tempfile.TemporaryDirectory() as tmp:
        if password is None:
            argv += ["-SecurityTypes", "None"]
        else:
            passwd = Path(tmp) / "passwd"
            encoded = subprocess.run(
                ["vncpasswd", "-f"],
                input=password + b"\n" + password + b"\n",
                capture_output=True,
                check=True,
                timeout=10,
            ).stdout
            passwd.write_bytes(encoded)
            argv += ["-SecurityTypes", "VncAuth", "-PasswordFile", str(passwd)]
        with running(argv, port):
            rec = record(port, password)
    save(name, out, rec, tool_version(["Xvnc", "-version"]))


def record_qemu(name: str, out: Path) -> None:
    display = free_display(60)
    port = 5900 + display
    argv = ["qemu-system-x86_64", "-display", "none", "-vnc", f"127.0.0.1:{display}"]
    argv += ["-nodefaults", "-vga", "std", "-machine", "accel=tcg", "-name", DESKTOP, "-m", "64"]
    with running(argv, port):
        time.sleep(2.0)  # let SeaBIOS draw its screen
        rec = record(port, None)
    save(name, out, rec, tool_version(["qemu-system-x86_64", "--version"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=FIXTURES)
    parser.add_argument("--only", choices=["xvnc-none", "xvnc-vncauth", "qemu"])
    args = parser.parse_args()
    jobs = {
        "xvnc-none": lambda: record_xvnc("xvnc-none", args.out, None),
        "xvnc-vncauth": lambda: record_xvnc("xvnc-vncauth", args.out, PASSWORD),
        "qemu": lambda: record_qemu("qemu", args.out),
    }
    for name, job in jobs.items():
        if args.only in (None, name):
            job()


if __name__ == "__main__":
    main()
