"""Real VNC servers with authentication for the security-proxy tests: certificates made
with openssl, QEMU with VeNCrypt (X509None; X509Vnc with a client certificate required and
a one-time password set over QMP), QEMU with VNC authentication (one-time password over
QMP), TigerVNC Xvnc with VncAuth and X509Vnc. Recipes: shared/notes/vnc-servers-with-security.md.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e.conftest import require
from tests.support import free_port, wait_tcp

XVNC_PASSWORD = "xv-pass1"  # Xvnc's -PasswordFile (at most 8 characters count)
XVNC_SIZE = (320, 200)
XVNC_NAME = "secure-xvnc"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca-key.pem",
             "-out", "ca-cert.pem", "-days", "2", "-subj", f"/CN={name}", cwd=folder)
    return folder / "ca-cert.pem"


def sign(ca_dir: Path, out_dir: Path, stem: str, cn: str) -> tuple[Path, Path]:
    """A key and a certificate for ``cn`` signed by the CA in ``ca_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    key, csr, cert = out_dir / f"{stem}-key.pem", out_dir / f"{stem}.csr", out_dir / f"{stem}-cert.pem"
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
             "-subj", f"/CN={cn}", cwd=out_dir)
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca_dir / "ca-cert.pem"),
             "-CAkey", str(ca_dir / "ca-key.pem"), "-CAcreateserial", "-out", str(cert),
             "-days", "2", cwd=out_dir)
    return cert, key


@dataclass
class Pki:
    ca: Path  # the CA that signs the servers (vencrypt_ca_certs)
    wrong_ca: Path  # a CA that signs nothing here
    client_cert: Path
    client_key: Path
    qemu_dir: Path  # ca-cert.pem, server-cert.pem, server-key.pem (QEMU's names)
    server_cert: Path
    server_key: Path


def make_pki(root: Path) -> Pki:
    ca_dir = root / "ca"
    ca = make_ca(ca_dir, "test-vnc-ca")
    wrong = make_ca(root / "wrong-ca", "some-other-ca")
    qemu_dir = root / "qemu-tls"
    server_cert, server_key = sign(ca_dir, qemu_dir, "server", "127.0.0.1")
    shutil.copy(ca, qemu_dir / "ca-cert.pem")
    client_cert, client_key = sign(ca_dir, root / "proxy", "client", "console-proxy")
    return Pki(ca, wrong, client_cert, client_key, qemu_dir, server_cert, server_key)


@dataclass
class Servers:
    """Where each server listens (and its QMP socket)."""

    qemu_x509none: int = 0
    qemu_x509vnc: int = 0
    qemu_x509vnc_qmp: str = ""
    qemu_vnc: int = 0
    qemu_vnc_qmp: str = ""
    xvnc: int = 0
    procs: list[subprocess.Popen] = field(default_factory=list)

    def instances(self) -> list[str]:
        """The fake compute host's ``--instances`` entries for these servers: q-x509none,
        q-x509vnc and q-vnc (one-time passwords over QMP), xv (Xvnc's password)."""
        return [f"q-x509none=vnc://127.0.0.1:{self.qemu_x509none}",
                f"q-x509vnc=vnc://127.0.0.1:{self.qemu_x509vnc};qmp={self.qemu_x509vnc_qmp}",
                f"q-vnc=vnc://127.0.0.1:{self.qemu_vnc};qmp={self.qemu_vnc_qmp}",
                f"xv=vnc://127.0.0.1:{self.xvnc};password={XVNC_PASSWORD}"]


def _free_display() -> int:
    for n in range(600, 700):
        if not Path(f"/tmp/.X{n}-lock").exists() and not Path(f"/tmp/.X11-unix/X{n}").exists():
            return n
    raise RuntimeError("no free X display")


def _qemu(display_port: int, vnc_options: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        ["qemu-system-x86_64", "-display", "none", "-machine", "accel=tcg", "-nodefaults",
         "-vga", "std", "-m", "32", *extra, "-vnc", f"127.0.0.1:{display_port - 5900}"
         + vnc_options], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)


def _free_vnc_port() -> int:
    for _ in range(100):
        port = free_port()
        if 5900 < port < 5900 + 65000:
            return port
    raise RuntimeError("no free port above 5900")


ALL = ("x509none", "x509vnc", "vnc", "xvnc")


@contextmanager
def start_servers(root: Path, pki: Pki, kinds: tuple[str, ...] = ALL) -> Iterator[Servers]:
    for tool in ("qemu-system-x86_64", "Xvnc", "vncpasswd", "xterm", "openssl"):
        require(shutil.which(tool) is not None, f"{tool} is missing: run scripts/install-system.sh")
    s = Servers()
    try:
        if "x509none" in kinds:
            s.qemu_x509none = _free_vnc_port()
            s.procs.append(_qemu(s.qemu_x509none, ",tls-creds=tls0", "-object",
                                 f"tls-creds-x509,id=tls0,dir={pki.qemu_dir},endpoint=server,"
                                 "verify-peer=no"))
        if "x509vnc" in kinds:
            # X509Vnc: a one-time password, and the proxy must show a client certificate
            s.qemu_x509vnc = _free_vnc_port()
            s.qemu_x509vnc_qmp = str(root / "x509vnc.qmp")
            s.procs.append(_qemu(s.qemu_x509vnc, ",tls-creds=tls1,password=on",
                                 "-object", f"tls-creds-x509,id=tls1,dir={pki.qemu_dir},"
                                 "endpoint=server,verify-peer=yes",
                                 "-qmp", f"unix:{s.qemu_x509vnc_qmp},server=on,wait=off"))
        if "vnc" in kinds:
            s.qemu_vnc = _free_vnc_port()
            s.qemu_vnc_qmp = str(root / "vnc.qmp")
            s.procs.append(_qemu(s.qemu_vnc, ",password=on",
                                 "-qmp", f"unix:{s.qemu_vnc_qmp},server=on,wait=off"))
        if "xvnc" in kinds:
            _start_xvnc(root, pki, s)
        for port in (s.qemu_x509none, s.qemu_x509vnc, s.qemu_vnc, s.xvnc):
            if port:
                wait_tcp("127.0.0.1", port)
        for path in (s.qemu_x509vnc_qmp, s.qemu_vnc_qmp):
            if path:
                _wait_path(path)
        yield s
    finally:
        for proc in s.procs:
            proc.kill()
        for proc in s.procs:
            proc.wait(10)


def _start_xvnc(root: Path, pki: Pki, s: Servers) -> None:
    password_file = root / "xvnc.passwd"
    password_file.write_bytes(subprocess.run(
        ["vncpasswd", "-f"], input=XVNC_PASSWORD.encode(), capture_output=True,
        check=True, timeout=10).stdout)
    os.chmod(password_file, 0o600)
    display = _free_display()
    s.xvnc = free_port()
    s.procs.append(subprocess.Popen(
        ["Xvnc", f":{display}", "-geometry", f"{XVNC_SIZE[0]}x{XVNC_SIZE[1]}", "-depth",
         "24", "-rfbport", str(s.xvnc), "-localhost", "-AlwaysShared",
         "-desktop", XVNC_NAME, "-SecurityTypes", "X509Vnc,VncAuth",
         "-PasswordFile", str(password_file), "-X509Cert", str(pki.server_cert),
         "-X509Key", str(pki.server_key)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
    wait_tcp("127.0.0.1", s.xvnc)
    # a white xterm filling the screen: pixels the tests can tell from Xvnc's black root
    s.procs.append(subprocess.Popen(
        ["xterm", "-geometry", "200x100+0+0", "-bg", "white", "-fg", "white"],
        env={**os.environ, "DISPLAY": f":{display}"}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True))


def _wait_path(path: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.05)
