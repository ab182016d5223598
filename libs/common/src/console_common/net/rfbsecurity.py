"""The RFB security proxy's I/O: authenticate to the VNC server, greet the client with None.

    policy = SecurityPolicy.build(("vencrypt", "vnc"), ca_certs="/etc/pki/vnc/ca.pem")
    done = negotiate(policy, client_stream, target_stream, password="s3cret")
    relay(client_stream, done.target)            # ClientInit, ServerInit and the rest

The protocol is the sans-I/O RFB cores': ``RFBClientConnection(schemes=...,
client_init=False)`` towards the server (VeNCrypt 0.2 X509None/X509Vnc, VNC
authentication, None; RFB 3.3, 3.7, 3.8) and ``RFBServerConnection`` towards the client,
which offers RFB 3.8 with security type None only. This module moves their bytes, runs TLS
when the server's VeNCrypt asks for it (verified against ``vencrypt_ca_certs``, with the
client certificate when one is set), and bounds the whole exchange in time.

The server is met first: only once it accepted us does the client see a version line, so a
failure can still be told to it as the proxy likes (novncproxy: WebSocket close 1011;
xvpvncproxy: ``refuse_client``, an RFB failure reason). Every failure raises
``SecurityFailed`` with a cause that is safe to log (it never holds the password).

TLS hostnames are not checked, as in Nova: compute hosts' certificates often name the host
by a name the proxy does not use; the chain must be signed by ``vencrypt_ca_certs``.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass, field

import gevent
from gevent import socket as gsocket
from gevent import ssl as gssl  # cooperative TLS whether or not ssl is monkey-patched

from console_common.net.relay import Stream, TcpStream
from console_common.proto.rfb import (
    NEED_DATA,
    AuthResult,
    ConnectionClosed,
    RFBClientConnection,
    RFBProtocolError,
    RFBServerConnection,
    StartTLS,
    security_type_name,
    vencrypt_subtype_name,
)
from console_common.proto.rfb.client import SCHEMES

READ = 4096
FAILED_REASON = "console security negotiation failed"  # what a client is told


class _Expired(Exception):
    """The handshake's deadline passed (not an OSError: socket errors are wrapped apart)."""


class SecurityFailed(Exception):
    """The security proxy could not complete; ``cause`` is short and safe to log.
    ``close_reason``: ``security_failed``, or ``client_closed`` when the client left."""

    def __init__(self, cause: str, close_reason: str = "security_failed") -> None:
        super().__init__(cause)
        self.cause, self.close_reason = cause, close_reason


@dataclass(frozen=True)
class SecurityPolicy:
    """The proxy's ``auth_schemes`` and the TLS context VeNCrypt uses (None without it)."""

    schemes: tuple[str, ...]
    tls: ssl.SSLContext | None = None
    timeout: float = 10.0
    client_cert: bool = False  # the TLS context shows VNC servers a client certificate

    @property
    def active(self) -> bool:
        """``none`` alone: the server's handshake is relayed untouched (no security proxy)."""
        return self.schemes != ("none",)

    @classmethod
    def build(cls, schemes: tuple[str, ...], ca_certs: str = "", client_cert: str = "",
              client_key: str = "", timeout: float = 10.0) -> SecurityPolicy:
        """Raises ValueError (with the option it is about in ``args[1]``) on bad settings."""
        unknown = [s for s in schemes if s not in SCHEMES]
        if unknown or not schemes:
            raise ValueError("expected a comma list of vencrypt, vnc, none", "auth_schemes")
        tls = None
        if "vencrypt" in schemes:
            tls = tls_context(ca_certs, client_cert, client_key)
        elif bool(client_cert) != bool(client_key):
            raise ValueError("vencrypt_client_cert and vencrypt_client_key go together",
                             "vencrypt_client_key" if client_cert else "vencrypt_client_cert")
        return cls(tuple(dict.fromkeys(schemes)), tls, timeout,
                   client_cert=tls is not None and bool(client_cert))


def tls_context(ca_certs: str, client_cert: str = "", client_key: str = "") -> ssl.SSLContext:
    if not ca_certs:
        raise ValueError("needed when auth_schemes has vencrypt (the CA that signs the "
                         "VNC servers' certificates)", "vencrypt_ca_certs")
    if bool(client_cert) != bool(client_key):
        raise ValueError("vencrypt_client_cert and vencrypt_client_key go together",
                         "vencrypt_client_key" if client_cert else "vencrypt_client_cert")
    context = gssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.check_hostname = False  # as Nova: the chain is verified, not the name
    context.verify_mode = ssl.CERT_REQUIRED
    try:
        context.load_verify_locations(cafile=ca_certs)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot load {ca_certs}: {_ssl_reason(exc)}",
                         "vencrypt_ca_certs") from exc
    if client_cert:
        try:
            context.load_cert_chain(client_cert, client_key)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"cannot load {client_cert} with {client_key}: "
                             f"{_ssl_reason(exc)}", "vencrypt_client_cert") from exc
    return context


def _ssl_reason(exc: BaseException) -> str:
    return getattr(exc, "verify_message", None) or getattr(exc, "reason", None) \
        or getattr(exc, "strerror", None) or str(exc)


class TlsStream:
    """A TLS socket (VeNCrypt, after its handshake) as a relay Stream. No ``splice_fd``:
    its bytes must pass through OpenSSL, never spliced."""

    __slots__ = ("sock", "recv", "sendall")

    def __init__(self, sock: ssl.SSLSocket) -> None:
        self.sock = sock
        self.recv = sock.recv
        self.sendall = sock.sendall

    def shutdown_write(self) -> None:
        # A TCP half-close under the TLS layer: SSLSocket.shutdown() would drop the TLS
        # state and break the other direction, which may still be reading.
        try:
            gsocket.socket.shutdown(self.sock, socket.SHUT_WR)
        except OSError:
            pass  # peer already gone

    def close(self) -> None:
        self.sock.close()


@dataclass
class Negotiated:
    """The target stream to relay with (TLS or not), and what the client side exchanged
    (``to_client``: the bytes the proxy sent it, ``from_client``: what it sent, ClientInit
    included), so the session's observer (or recorder) sees the handshake the client saw.
    ``client_early`` (already passed on) are the client's bytes after its handshake."""

    target: Stream
    scheme: str
    to_client: bytes = b""
    from_client: bytes = b""
    client_early: bytes = b""
    target_early: bytes = field(default=b"", repr=False)


def negotiate(policy: SecurityPolicy, client: Stream, target: TcpStream,
              password: str | None, refuse_client: bool = False) -> Negotiated:
    """Authenticate to the VNC server, then give the client RFB 3.8 with None; both within
    ``policy.timeout``. On failure raise SecurityFailed (the target is closed; with
    ``refuse_client`` the client was sent an RFB failure reason first)."""
    try:
        with gevent.Timeout(policy.timeout, _Expired):
            try:
                stream, scheme, early = _meet_server(policy, target, password)
            except _Expired:
                raise SecurityFailed(f"the VNC server did not complete its handshake in "
                                     f"{policy.timeout:g}s") from None
    except SecurityFailed as exc:
        target.close()
        if refuse_client and exc.close_reason == "security_failed":
            _refuse(client, policy.timeout)
        raise
    try:
        with gevent.Timeout(policy.timeout, _Expired):
            to_client, from_client, client_early = _greet_client(client)
            if client_early:
                _send(stream, client_early)  # ClientInit, maybe more: the server's now
            if early:
                client.sendall(early)
    except _Expired:
        stream.close()
        raise SecurityFailed(f"the client did not complete its RFB handshake in "
                             f"{policy.timeout:g}s") from None
    except OSError as exc:
        stream.close()
        raise SecurityFailed(f"connection lost during the handshake: {exc.strerror or exc}",
                             "client_closed") from exc
    except SecurityFailed:
        stream.close()
        raise
    return Negotiated(stream, scheme, to_client, from_client + client_early, client_early,
                      early)


def _meet_server(policy: SecurityPolicy, target: TcpStream, password: str | None
                 ) -> tuple[Stream, str, bytes]:
    secret = password.encode("utf-8") if password is not None else None
    conn = RFBClientConnection(password=secret, schemes=policy.schemes, client_init=False)
    tls: list[TlsStream] = []
    try:
        return _authenticate(policy, conn, target, tls)
    except BaseException:
        for stream in tls:  # the TLS socket owns the descriptor now: close it
            stream.close()
        raise


def _authenticate(policy: SecurityPolicy, conn: RFBClientConnection, target: TcpStream,
                  tls: list[TlsStream]) -> tuple[Stream, str, bytes]:
    stream: Stream = target
    phase = conn.state.value
    while True:
        try:
            event = conn.next_event()
        except RFBProtocolError as exc:  # no common scheme, bad bytes...
            raise SecurityFailed(str(exc)) from exc
        if event is NEED_DATA:
            if out := conn.data_to_send():
                _send(stream, out)
            phase = conn.state.value
            conn.receive_data(_recv(stream))
            continue
        if isinstance(event, ConnectionClosed):
            hint = " (does it want a client certificate? vencrypt_client_cert)" \
                if isinstance(stream, TlsStream) and not policy.client_cert else ""
            raise SecurityFailed(f"the VNC server closed the connection in the {phase} "
                                 f"phase{hint}")
        if isinstance(event, StartTLS):
            _send(stream, conn.data_to_send())
            stream = _start_tls(policy, target)
            tls.append(stream)
            conn.tls_started()
        elif isinstance(event, AuthResult):
            if event.ok:
                left, _eof = conn.trailing_data
                return stream, _scheme_name(conn), left
            if conn.security_type is None:  # refused before any security type
                raise SecurityFailed(f"the VNC server refused the connection: {event.reason}")
            raise SecurityFailed(f"the VNC server refused authentication "
                                 f"({_scheme_name(conn)}): {event.reason}")


def _scheme_name(conn: RFBClientConnection) -> str:
    name = security_type_name(conn.security_type or 0)
    if conn.vencrypt_subtype is not None:
        return f"{name}/{vencrypt_subtype_name(conn.vencrypt_subtype)}"
    return name


def _recv(stream: Stream) -> bytes:
    try:
        return stream.recv(READ)
    except ssl.SSLError as exc:
        raise SecurityFailed(f"TLS error from the VNC server: {_ssl_reason(exc)}") from exc
    except OSError as exc:
        raise SecurityFailed(f"VNC server connection lost: {exc.strerror or exc}") from exc


def _send(stream: Stream, data: bytes) -> None:
    if not data:
        return
    try:
        stream.sendall(data)
    except OSError as exc:
        raise SecurityFailed(f"VNC server connection lost: {exc.strerror or exc}") from exc


def _start_tls(policy: SecurityPolicy, target: TcpStream) -> TlsStream:
    if policy.tls is None:  # the core chose VeNCrypt only when auth_schemes has it
        raise SecurityFailed("VeNCrypt chosen without a TLS context")
    try:
        sock = policy.tls.wrap_socket(target.sock, server_side=False)
    except ssl.SSLCertVerificationError as exc:
        raise SecurityFailed(f"TLS verification of the VNC server failed: "
                             f"{_ssl_reason(exc)}") from exc
    except ssl.SSLError as exc:
        raise SecurityFailed(f"TLS handshake with the VNC server failed: "
                             f"{_ssl_reason(exc)}") from exc
    except OSError as exc:
        raise SecurityFailed(f"VNC server connection lost during TLS: "
                             f"{exc.strerror or exc}") from exc
    return TlsStream(sock)


def _greet_client(client: Stream) -> tuple[bytes, bytes, bytes]:
    """RFB 3.8 with security type None; (bytes sent, bytes consumed, bytes after)."""
    conn = RFBServerConnection("", 0, 0)  # stops after the security phase: no ServerInit
    sent, got = bytearray(), bytearray()
    while True:
        if out := conn.data_to_send():
            client.sendall(out)
            sent += out
        try:
            event = conn.next_event()
        except RFBProtocolError as exc:
            if out := conn.data_to_send():  # e.g. "security type not offered"
                client.sendall(out)
            raise SecurityFailed(f"client RFB handshake: {exc}") from exc
        if event is NEED_DATA:
            data = client.recv(READ)
            if not data:
                raise SecurityFailed("the client left during the RFB handshake",
                                     "client_closed")
            got += data
            conn.receive_data(data)
        elif isinstance(event, AuthResult) and event.ok:
            if out := conn.data_to_send():
                client.sendall(out)
                sent += out
            early, _eof = conn.trailing_data
            consumed = bytes(got[:len(got) - len(early)])
            return bytes(sent), consumed, early


def _refuse(client: Stream, timeout: float) -> None:
    """Best effort: an RFB failure reason the viewer can show, then the caller closes."""
    conn = RFBServerConnection("", 0, 0, refuse=FAILED_REASON)
    try:
        with gevent.Timeout(min(timeout, 5.0), _Expired):
            client.sendall(conn.data_to_send())
            while True:
                data = client.recv(READ)
                if not data:
                    return
                conn.receive_data(data)
                if conn.next_event() is not NEED_DATA:
                    client.sendall(conn.data_to_send())
                    return
    except (OSError, _Expired, RFBProtocolError):
        return  # the viewer left or spoke garbage: it is being closed anyway
