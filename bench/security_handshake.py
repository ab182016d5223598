"""What the RFB security proxy adds when a console opens: connect + the proxy's handshake
with a real VNC server + the client's greeting, per scheme.

Run from the repository root: ``uv run python bench/security_handshake.py [-n 20]``.
Starts QEMU (VeNCrypt X509None; X509Vnc with a client certificate and a QMP one-time
password; VNC authentication) and TigerVNC Xvnc (X509Vnc, VncAuth) with the tests'
recipes (tests/integration/_secure_servers.py), then times ``net.rfbsecurity.negotiate``
against each with an in-process viewer. Prints the median and worst in ms.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' server recipes

from console_common.net.relay import TcpStream  # noqa: E402
from console_common.net.rfbsecurity import SecurityPolicy, negotiate  # noqa: E402
from console_common.net.target import connect_target  # noqa: E402
from fakecompute.qmp import set_vnc_password  # noqa: E402

from tests.integration._secure_servers import XVNC_PASSWORD, make_pki, start_servers  # noqa: E402


def viewer(sock: socket.socket) -> None:
    sock.recv(12)
    sock.sendall(b"RFB 003.008\n\x01")  # version and security None at once
    sock.recv(6)  # the types and SecurityResult


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20, help="handshakes per scheme")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pki = make_pki(root / "pki")
        with start_servers(root, pki) as s:
            time.sleep(1.0)  # let the guests' firmware settle
            set_vnc_password(s.qemu_x509vnc_qmp, "otp-x509")
            set_vnc_password(s.qemu_vnc_qmp, "otp-vnc1")
            both = SecurityPolicy.build(("vencrypt", "vnc"), str(pki.ca), str(pki.client_cert),
                                        str(pki.client_key))
            vnc = SecurityPolicy.build(("vnc",))
            for name, port, password, policy in [
                    ("QEMU VeNCrypt X509None", s.qemu_x509none, None, both),
                    ("QEMU VeNCrypt X509Vnc + client cert", s.qemu_x509vnc, "otp-x509", both),
                    ("QEMU VncAuth", s.qemu_vnc, "otp-vnc1", both),
                    ("Xvnc VeNCrypt X509Vnc", s.xvnc, XVNC_PASSWORD, both),
                    ("Xvnc VncAuth", s.xvnc, XVNC_PASSWORD, vnc)]:
                times = []
                for _ in range(args.n):
                    ours, theirs = socket.socketpair()
                    greeter = gevent.spawn(viewer, theirs)
                    started = time.perf_counter()
                    target = connect_target("127.0.0.1", port, 5)
                    done = negotiate(policy, TcpStream(ours), target, password)
                    times.append((time.perf_counter() - started) * 1000)
                    greeter.join(2)
                    done.target.close()
                    ours.close()
                    theirs.close()
                print(f"{name}: median {statistics.median(times):.1f} ms, "
                      f"max {max(times):.1f} ms (n={args.n})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
