"""ZeroMQ CURVE on the bus: encrypted, authenticated sockets, and the role of each key.

Keys are ZeroMQ certificate files (``consolectl keys generate``): ``NAME.key`` (public) and
``NAME.key_secret`` (secret, mode 0600). A server (consoleauth, a compute host's control
endpoint) has its own pair (``bus_secret_key_file``) and grants each client the role of
the folder its public key is in, ``bus_authorized_keys_dir/<role>/*.key``. A key in no
folder gets no answer at all (the ZAP handler refuses the handshake): the client's call
times out with an error that says authentication may have been refused. The folder is read
again as handshakes come (at most once a second), so a key added for rotation is
accepted without a restart; a removed one stops working at its next connection.
(Connections already made keep working: the handshake is where a key is checked.)

    keys = CurveServer.load(secret_file, authorized_dir)          # servers
    keys.start_zap(context)                                       # once per zmq context
    keys.apply(socket, domain="bus")                              # before bind
    CurveClient.load(secret_file, server_public_file).apply(sock) # clients, before connect
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gevent
import structlog
import zmq
import zmq.auth
import zmq.green
from zmq.utils import z85

from console_common.net.throttle import Throttle

log = structlog.get_logger("bus")

ROLES = ("server", "proxy", "compute", "admin")
ZAP_ENDPOINT = "inproc://zeromq.zap.01"
RESCAN_S = 1.0


class KeyError_(ValueError):
    """A key file or folder that cannot be used (missing, unreadable, not a certificate);
    ``path`` names it, so config errors can name the option that gave it."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path


def _load(path: str, secret: bool) -> tuple[bytes, bytes | None]:
    try:
        public, secret_key = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise KeyError_(path, f"not a ZeroMQ certificate ({exc})") from exc
    if secret and secret_key is None:
        raise KeyError_(path, "holds no secret key (give the .key_secret file)")
    return public, secret_key


@dataclass(frozen=True)
class CurveClient:
    public: bytes
    secret: bytes
    server_public: bytes

    @classmethod
    def load(cls, secret_file: str, server_public_file: str) -> CurveClient:
        public, secret = _load(secret_file, secret=True)
        server, _ = _load(server_public_file, secret=False)
        return cls(public, secret, server)  # type: ignore[arg-type]

    def apply(self, sock: Any) -> None:
        sock.curve_publickey = self.public
        sock.curve_secretkey = self.secret
        sock.curve_serverkey = self.server_public


class KeyRing:
    """Public key (z85) -> role, read from ``<dir>/<role>/*.key``."""

    def __init__(self, directory: str) -> None:
        self.directory = Path(directory)
        self._roles: dict[bytes, str] = {}
        self._scanned = 0.0
        self.scan()

    def scan(self) -> None:
        roles: dict[bytes, str] = {}
        for role in ROLES:
            folder = self.directory / role
            if folder.is_dir():
                for public in zmq.auth.load_certificates(str(folder)):
                    roles[public] = role
        self._roles, self._scanned = roles, time.monotonic()

    def role_of(self, public_z85: bytes) -> str | None:
        # The folder is read again at most once a second, as handshakes come: a key added
        # for rotation works and a removed one stops, without a restart.
        if time.monotonic() - self._scanned >= RESCAN_S:
            self.scan()
        return self._roles.get(public_z85)

    def __len__(self) -> int:
        return len(self._roles)


@dataclass
class CurveServer:
    public: bytes
    secret: bytes
    keyring: KeyRing

    @classmethod
    def load(cls, secret_file: str, authorized_dir: str) -> CurveServer:
        public, secret = _load(secret_file, secret=True)
        if not os.path.isdir(authorized_dir):
            raise KeyError_(authorized_dir, "not a directory of <role>/ folders")
        return cls(public, secret, KeyRing(authorized_dir))  # type: ignore[arg-type]

    def __post_init__(self) -> None:
        self._throttle = Throttle(10.0)  # refusals logged at most once per 10 s

    def apply(self, sock: Any, domain: str) -> None:
        sock.curve_server = True
        sock.curve_publickey = self.public
        sock.curve_secretkey = self.secret
        sock.zap_domain = domain.encode()

    def start_zap(self, context: zmq.Context, allowed: dict[str, frozenset[str]]) -> Any:
        """Answer ZAP requests for sockets of ``context``: ``allowed`` maps a ZAP domain
        to the roles it admits (the bus admits every known role; the events socket only
        proxies and admins). Returns the handler's greenlet."""
        green = zmq.green.Context.shadow(context.underlying)
        sock = green.socket(zmq.REP)
        sock.linger = 0
        sock.bind(ZAP_ENDPOINT)
        return gevent.spawn(self._zap_loop, sock, allowed)

    def _zap_loop(self, sock: Any, allowed: dict[str, frozenset[str]]) -> None:
        while True:
            frames = sock.recv_multipart()
            version, request_id, domain, address = frames[0], frames[1], frames[2], frames[3]
            mechanism, credentials = frames[5], frames[6:]
            role = None
            if mechanism == b"CURVE" and credentials:
                role = self.keyring.role_of(z85.encode(credentials[0]))
            admitted = role is not None and role in allowed.get(domain.decode(), frozenset())
            if admitted:
                sock.send_multipart([version, request_id, b"200", b"OK", role.encode(), b""])
            else:
                if (held := self._throttle.allow("bus.key_refused")) is not None:
                    log.warning("bus.key_refused", domain=domain.decode(errors="replace"),
                                peer=address.decode(errors="replace"), role=role,
                                key=z85.encode(credentials[0]).decode()[:8]
                                if credentials else None, suppressed=held)
                sock.send_multipart([version, request_id, b"400", b"unknown key", b"", b""])
